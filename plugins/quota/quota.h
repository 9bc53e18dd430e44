/* quota: the LLM proxy. Shared declarations of the plugin's files:
 *   quota.c   descriptor, configuration, keys (the provisioner), limits, control routes
 *   proxy.c   the listener: authorization, forwarding, streaming relay
 *   meter.c   usage parsing (Anthropic and OpenAI, whole bodies and SSE) and pricing
 *   ledger.c  the durable ledger: reservations, settlement, usage reports
 *   bound.c   the reservation's bound: the most a call can cost, from its body
 *   body.c    what a body must be before it is billed: no repeated keys, a sane model name
 *   hide.c    the streamed usage chunk a client did not ask for, taken out
 * Everything runs on the loop thread. */
#ifndef QUOTA_H
#define QUOTA_H

#include <berth/berth.h>
#include <stdbool.h>
#include <stdint.h>

struct cJSON;

#define QUOTA_HASH_LEN 32           /* SHA-256 */

struct upstream { const char *url, *key, *ca; };
/* USD per million tokens; cache_write is the 5-minute write, cache_write_1h the 1-hour one */
struct price { double input, output, cache_read, cache_write, cache_write_1h; };

struct cfg {
    const char *listen, *public_url;
    struct { struct upstream anthropic, openai; } up;
    struct berth_structmap prices;
    struct price default_price;     /* used for an unpriced model when `output` > 0 */
    int64_t max_output_tokens;      /* the output bound when a request names none */
    uint64_t max_connections, max_body;
    int64_t max_conns_per_tenant;   /* connections one tenant's key holds at once; 0: no cap */
    int64_t timeout_ms;
};

/* a template's block: `quota: {budget: 5.00, concurrency: 5, requests_per_minute: 60}` */
struct blk { double budget; int64_t concurrency, rpm; bool inject_budget; const char *period; };

enum api { API_ANTHROPIC, API_OPENAI_CHAT, API_OPENAI_RESPONSES, API_COUNT_TOKENS };

/* the per-tenant rate bucket, in memory (slots are counted in the ledger) */
struct tstate {
    struct tstate *next;
    char handle[BERTH_HANDLE_MAX + 1];
    double tokens;                  /* rate bucket, refilled at rpm per minute */
    int64_t refill_ms;
    int64_t activity_ms;            /* the last tenant.activity published */
};

struct key {
    struct key *next;
    unsigned char hash[QUOTA_HASH_LEN];
    char handle[BERTH_HANDLE_MAX + 1];
};

struct quota {
    berth_instance *self;
    struct cfg cfg;
    struct key *keys;               /* live keys' hashes */
    unsigned char master[32];       /* keys are derived from it and a per-key random nonce */
    struct evp_md_st *sha;          /* SHA-256, fetched once (keys.c); owned, freed by keys_free */
    struct evp_md_ctx_st *sha_ctx;
    struct tstate *ts;
    struct call *calls;             /* in flight */
    struct settle *settles;         /* queued for the next batch */
    struct reservation *reserves, **reserves_tail;
    berth_timer *flush;             /* the next batch's commit, when scheduled */
    berth_timer *retry;             /* settlements' next try after a failed batch */
    berth_timer *lag;               /* settlements' commit when no reservation takes them */
    int64_t retry_ms;               /* its delay, doubled per failure up to 5 s */
    struct tot *tots;               /* per-tenant totals in memory (ledger.c) */
    int64_t gen;                    /* quota_meta's generation after our last batch */
    uint32_t ev_call, ev_refused, ev_key;
    berth_metric *m_calls, *m_refused, *m_spend, *m_tokens, *m_inflight;
    berth_metric *m_overrun;        /* calls billed above their reservation */
    bool stopping, drained_sent, destroying;
};

extern const struct berth_host *H;

/* tokens counted from the upstream's usage fields */
struct usage {
    int64_t input, output, cache_read, cache_write;
    int64_t cache_write_1h;         /* the part of cache_write written for an hour */
    bool seen_input, seen_output;
    unsigned reports;               /* usage reports with an output count absorbed */
};

/* ---- meter.c ---- */
/* absorbs one JSON document (a whole body or one SSE event's data) into u; returns the
 * length of streamed text it carried, an upper bound of its tokens */
size_t meter_absorb(struct usage *u, const struct cJSON *doc);
/* price of model in micro-dollars per million tokens; false when unpriced */
bool meter_price(const struct quota *q, const char *model, struct price *out);
/* the model's label in metrics: a listed model's name; the models a default price admits
 * share one, so a tenant naming models at random cannot grow /metrics without bound */
const char *meter_label(const struct quota *q, const char *model);
int64_t meter_cost(const struct price *p, const struct usage *u);
/* the highest price an input token of p can cost: input, cache read, 5-minute cache write,
 * and the hour's cache write when the call asks for one */
double meter_max_input_price(const struct price *p, bool hour);

/* an incremental SSE parser: data lines joined per event, handed to meter_absorb */
struct sse {
    char *buf;
    size_t len, cap;
    size_t scanned;                 /* bytes of buf known to hold no event's end */
    size_t text_after;              /* streamed text bytes since the last usage report */
    bool overflow;
};
void sse_feed(struct sse *s, struct usage *u, const char *data, size_t len);
void sse_free(struct sse *s);

/* ---- bound.c ---- */
/* the most input and output tokens a call with this body (as forwarded, body_len bytes) can
 * be billed, its own output limit being out_limit; NULL, or why it cannot be bounded (the
 * call is then refused) */
const char *bound_call(enum api api, const struct cJSON *j, size_t body_len, int64_t out_limit,
                       int64_t *in, int64_t *out);
/* does the body ask for an hour's cache write (`cache_control: {ttl: "1h"}`)? */
bool bound_hour_cache(const struct cJSON *j);
/* an upstream reported more than the reservation: warns and counts it (the cost is billed) */
void bound_overrun(struct quota *q, const char *handle, int64_t id, const char *api,
                   const char *model, int64_t reserved, int64_t cost);

/* ---- body.c ---- */
/* NULL, or why the body cannot be billed as it will be read upstream (a repeated key) */
const char *body_check(const struct cJSON *j);
/* is m a model name of the characters real ones use, shorter than max? */
bool body_model_ok(const char *m, size_t max);

/* ---- hide.c ---- */
struct hide {
    char *buf, *out;                /* a partial event; what the last call returns */
    size_t len, cap, out_len, out_cap;
    size_t scanned;                 /* bytes of buf known to hold no event's end */
    bool passthrough;               /* an event too large to be the usage chunk came */
};
/* the bytes of whole events in data (and before it) to relay, minus the usage chunk when
 * drop_usage; *out is
 * h's (valid until the next call) or data itself */
size_t hide_usage(struct hide *h, const char *data, size_t len, const char **out,
                  bool drop_usage);
/* what is left at the stream's end */
size_t hide_flush(struct hide *h, const char **out);
void hide_free(struct hide *h);

/* ---- ledger.c ---- */
int ledger_migrate(struct quota *q);
/* A reservation of `bound` micro-dollars and one of `slots` for one call. Its owner keeps it
 * (and the strings it points at) until done() is called, on a later loop turn once the
 * batch is on disk, with id: the new call's id (> 0), 0 when the budget cannot pay for it,
 * BERTH_EBUSY when the tenant's slots are taken, or another BERTH_E* code. */
struct reservation {
    struct reservation *next;
    const char *handle, *api, *model;
    int64_t budget, bound, slots, id;   /* budget: the template's (an override wins) */
    char period[16];                /* the month it was reserved in, once reserved */
    bool monthly;                   /* the budget is per calendar month (UTC) */
    void (*done)(struct reservation *r, void *arg);
    void *arg;
};
void ledger_reserve(struct quota *q, struct reservation *r);
/* queues the settlement of r's call (its reservation replaced by cost, its tokens recorded);
 * committed with the next reservation's batch, or within a few ms. event (malloc'd, taken):
 * the quota.call payload, published inside that batch's transaction (so journaled in its
 * commit), or NULL */
void ledger_settle(struct quota *q, const struct reservation *r, int64_t cost,
                   const struct usage *u, int status, const char *outcome, char *event);
/* commits what is queued now (the instance is going away); ledger_drop frees what is left */
void ledger_flush(struct quota *q);
void ledger_drop(struct quota *q);
/* settles what a killed berthd left open, each at its reservation */
int ledger_recover(struct quota *q);
/* {"tenant":..,"budget":..,"spent":..,...} as malloc'd JSON; NULL on error */
char *ledger_usage_json(struct quota *q, const char *handle, int64_t budget, bool monthly);
int ledger_set_budget(struct quota *q, const char *handle, int64_t micro);
/* the budget override set by PUT .../budget, or -1 */
int64_t ledger_budget_override(struct quota *q, const char *handle);
/* spent (this month's, when monthly) and reserved */
int ledger_spent(struct quota *q, const char *handle, bool monthly, int64_t *spent,
                 int64_t *reserved);

/* ---- keys.c ---- */
/* the tenant whose key this is, or NULL; constant-time over the stored hashes */
const char *quota_key_owner(struct quota *q, const char *key);
extern const struct berth_provisioner quota_provisioner;
int keys_load(struct quota *q);         /* the master secret, and the stored keys' hashes */
int keys_rotate(struct quota *q, const char *handle);  /* the next provision mints anew */
void keys_free(struct quota *q);

/* ---- quota.c ---- */
const struct blk *quota_block(struct quota *q, const char *handle);
int64_t quota_budget(struct quota *q, const char *handle);   /* micro-dollars */
bool quota_monthly(struct quota *q, const char *handle);
/* "Budget: $X.XX remaining" for handle, into out */
void quota_budget_line(struct quota *q, const char *handle, char *out, size_t n);
struct tstate *quota_tstate(struct quota *q, const char *handle);
/* takes a rate token; 0 or the seconds to wait */
int64_t quota_rate_take(struct quota *q, struct tstate *t, const struct blk *b);
void quota_event(struct quota *q, uint32_t type, const char *handle, const char *json);
/* tells the host the instance drained, once stopping with no call and no batch left */
void quota_idle(struct quota *q);

/* ---- proxy.c ---- */
int proxy_start(struct quota *q);
void proxy_cancel_all(struct quota *q);
void proxy_usage(struct quota *q, berth_req *r, const char *handle);

#endif
