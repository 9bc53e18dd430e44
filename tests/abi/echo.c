/* echo: a plugin for tests that uses most of the host table: a core-owned listener that
 * survives reloads, control-API routes, bus subscriptions and a custom event type, timers,
 * the HTTP client, finalizers and a spec contribution, and config lists and maps of structs
 * with secrets inside (GET /v1/echo/lists shows them, secrets by length only). ECHO_VERSION
 * is set at build time so a test can swap the .so and see the new code answer. */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ECHO_VERSION
#define ECHO_VERSION 1
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
#define ECHO_VERSION_STR STR(ECHO_VERSION)

struct peer { const char *name; int64_t port; const char *token; };
struct zone { int64_t weight; const char *key; };

struct cfg {
    const char *listen, *greeting;
    bool finalize;
    int64_t finalize_delay, drain_delay;
    const char *secret;
    struct berth_structlist peers;      /* of struct peer */
    struct berth_structmap zones;       /* of struct zone */
};

static const struct berth_cfg_item peer_schema[] = {
    {"name", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct peer, name), "the peer's name",
     BERTH_CFG_REQUIRED, NULL, NULL},
    {"port", BERTH_CFG_INT, "80", 1, 65535, offsetof(struct peer, port), "its port", 0, NULL,
     NULL},
    {"token", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct peer, token),
     "its token (only its length is ever shown)", 0, NULL, NULL},
    BERTH_CFG_ELEM_END(struct peer),
};
static const struct berth_cfg_item zone_schema[] = {
    {"weight", BERTH_CFG_INT, "1", 0, 100, offsetof(struct zone, weight), "its weight", 0,
     NULL, NULL},
    {"key", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct zone, key),
     "its key (only its length is ever shown)", 0, NULL, NULL},
    BERTH_CFG_ELEM_END(struct zone),
};

static const struct berth_cfg_item schema[] = {
    {"listen", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, listen),
     "host:port or unix:PATH to serve on", 0, NULL, NULL},
    {"greeting", BERTH_CFG_STR, "hello", 0, 0, offsetof(struct cfg, greeting),
     "what GET / answers", BERTH_CFG_RELOAD, NULL, NULL},
    {"finalize", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, finalize),
     "hold a finalizer on each tenant", BERTH_CFG_RELOAD, NULL, NULL},
    {"finalize_delay", BERTH_CFG_DURATION, "0", 0, 600000,
     offsetof(struct cfg, finalize_delay), "wait this long before releasing it",
     BERTH_CFG_RELOAD, NULL, NULL},
    {"drain_delay", BERTH_CFG_DURATION, "0", 0, 600000, offsetof(struct cfg, drain_delay),
     "stop() takes this long", BERTH_CFG_RELOAD, NULL, NULL},
    {"secret", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct cfg, secret),
     "a secret (only its length is ever shown)", BERTH_CFG_RELOAD, NULL, NULL},
    {"peers", BERTH_CFG_STRUCT_LIST, NULL, 0, 0, offsetof(struct cfg, peers),
     "a list of peers", 0, NULL, peer_schema},
    {"zones", BERTH_CFG_STRUCT_MAP, NULL, 0, 0, offsetof(struct cfg, zones),
     "zone name -> zone", 0, NULL, zone_schema},
    {0},
};

static const struct berth_host *H;

struct echo {
    berth_instance *self;
    struct cfg cfg;
    uint32_t pinged;
    long events, configured;
    berth_timer *tick;
    long ticks;
};

struct release { struct echo *e; char handle[40]; };

static int validate(const void *cfg, char *err, size_t n)
{
    const struct cfg *c = cfg;
    if (!strcmp(c->greeting, "forbidden")) {
        snprintf(err, n, "greeting must not be 'forbidden'");
        return BERTH_EINVAL;
    }
    return 0;
}

static void serve(berth_req *r, void *arg)
{
    struct echo *e = arg;
    char body[256];
    int n = snprintf(body, sizeof body, "echo v%d %s\n", ECHO_VERSION, e->cfg.greeting);
    H->respond(r, 200, "text/plain", body, (size_t)n);
}

static void info(berth_req *r, void *arg)
{
    struct echo *e = arg;
    char body[512];
    int n = snprintf(body, sizeof body, "{\"version\":%d,\"greeting\":\"%s\",\"instance\":\"%s\","
                     "\"events\":%ld,\"configured\":%ld,\"ticks\":%ld,\"secret_len\":%zu}\n",
                     ECHO_VERSION, e->cfg.greeting, H->name(e->self), e->events, e->configured,
                     e->ticks, e->cfg.secret ? strlen(e->cfg.secret) : 0);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

/* GET /v1/echo/lists: the lists and maps of structs as the host filled them */
static void lists(berth_req *r, void *arg)
{
    const struct cfg *c = &((struct echo *)arg)->cfg;
    char body[2048];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"peers\":[");
    const struct peer *p = c->peers.v;
    for (size_t i = 0; i < c->peers.n && n < sizeof body; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "%s{\"name\":\"%s\",\"port\":%lld,\"token_len\":%zu}",
                              i ? "," : "", p[i].name, (long long)p[i].port,
                              p[i].token ? strlen(p[i].token) : 0);
    if (n < sizeof body) n += (size_t)snprintf(body + n, sizeof body - n, "],\"zones\":{");
    const struct zone *z = c->zones.vals;
    for (size_t i = 0; i < c->zones.n && n < sizeof body; i++)
        n += (size_t)snprintf(body + n, sizeof body - n,
                              "%s\"%s\":{\"weight\":%lld,\"key_len\":%zu}", i ? "," : "",
                              c->zones.keys[i], (long long)z[i].weight,
                              z[i].key ? strlen(z[i].key) : 0);
    if (n < sizeof body) n += (size_t)snprintf(body + n, sizeof body - n, "}}\n");
    if (n >= sizeof body) H->respond_error(r, 500, "too_long", "the lists do not fit");
    else H->respond(r, 200, "application/json", body, n);
}

static void ping(berth_req *r, void *arg)
{
    struct echo *e = arg;
    struct berth_ev_custom ev = {sizeof ev, "{\"from\":\"echo\"}"};
    int rc = H->publish(e->self, e->pinged, NULL, &ev);
    H->respond(r, rc ? 500 : 202, "application/json", "{}\n", 3);
}

/* GET /v1/echo/fetch?url=...[&unix=PATH][&method=M][&timeout=MS]: a buffered call through the
 * host's HTTP client; answers its result: status, error, message, content type, length and
 * the body's first 4000 bytes (JSON-escaped) */
static void json_str(char *out, size_t cap, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 8 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') k += (size_t)snprintf(out + k, cap - k, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f) k += (size_t)snprintf(out + k, cap - k, "\\u%04x", ch);
        else out[k++] = (char)ch;
    }
    out[k] = 0;
}

static void fetched(const struct berth_http_result *res, void *arg)
{
    berth_req *r = arg;
    static char body[4000 * 6 + 1024], text[4000 * 6 + 16], msg[600], type[300];
    json_str(text, sizeof text, res->body, res->body_len < 4000 ? res->body_len : 4000);
    json_str(msg, sizeof msg, res->message, strlen(res->message));
    json_str(type, sizeof type, res->content_type ? res->content_type : "",
             res->content_type ? strlen(res->content_type) : 0);
    int n = snprintf(body, sizeof body,
                     "{\"status\":%d,\"error\":%d,\"length\":%zu,\"message\":\"%s\","
                     "\"type\":%s%s%s,\"body\":\"%s\"}\n",
                     res->status, res->error, res->body_len, msg,
                     res->content_type ? "\"" : "", res->content_type ? type : "null",
                     res->content_type ? "\"" : "", text);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

static void fetch(berth_req *r, void *arg)
{
    struct echo *e = arg;
    const char *url = H->req_query(r, "url");
    const char *sock = H->req_query(r, "unix");
    const char *timeout = H->req_query(r, "timeout");
    struct berth_http_opts o = {.size = sizeof o, .url = url, .unix_socket = sock,
                                .method = H->req_query(r, "method"),
                                .timeout_ms = timeout ? strtoll(timeout, NULL, 10) : 5000};
    if (!url || !H->http_request(e->self, &o, fetched, r))
        H->respond_error(r, 400, "bad_request", "url is required");
}

/* GET /v1/echo/stream?n=N[&pad=BYTES]: N chunks, one per 10ms, to test streaming through a
 * reload; each line padded with BYTES letters (a, b, c... by chunk) to outgrow socket buffers */
struct stream { struct echo *e; berth_req *r; int left, pad; bool gone; };

static void stream_tick(berth_timer *t, void *arg)
{
    struct stream *s = arg;
    if (s->gone || s->left-- <= 0) {
        H->timer_stop(t);
        H->respond_end(s->r);
        free(s);
        return;
    }
    char head[64];
    int n = snprintf(head, sizeof head, "chunk v%d %d ", ECHO_VERSION, s->left);
    char *line = malloc((size_t)n + (size_t)s->pad + 1);
    if (!line) return;
    memcpy(line, head, (size_t)n);
    memset(line + n, 'a' + s->left % 26, (size_t)s->pad);
    line[n + s->pad] = '\n';
    H->respond_write(s->r, line, (size_t)n + (size_t)s->pad + 1);
    free(line);
}

static void stream_gone(berth_req *r, void *arg)
{
    (void)r;
    ((struct stream *)arg)->gone = true;
}

static void stream(berth_req *r, void *arg)
{
    struct stream *s = calloc(1, sizeof *s);
    s->e = arg;
    s->r = r;
    const char *n = H->req_query(r, "n");
    s->left = n ? atoi(n) : 5;
    const char *pad = H->req_query(r, "pad");
    s->pad = pad ? atoi(pad) : 0;
    if (s->pad < 0 || s->pad > (16 << 20)) s->pad = 0;
    static const struct berth_header hdr[] = {{"Content-Type", "text/plain"}, {NULL, NULL}};
    H->respond_start(r, 200, hdr);
    H->on_close(r, stream_gone, s);
    H->timer_start(s->e->self, 10, 10, stream_tick, s);
}

/* POST/DELETE /v1/echo/busy/{handle}: hold a tenant busy, as an open stream would */
static void busy(berth_req *r, void *arg)
{
    struct echo *e = arg;
    const char *h = H->req_param(r, "handle");
    int rc = !strcmp(H->req_method(r), "POST") ? H->busy_hold(e->self, h)
                                                : H->busy_release(e->self, h);
    if (rc) H->respond_error(r, 404, "not_found", "%s", berth_strerror(rc));
    else H->respond(r, 200, "application/json", "{}\n", 3);
}

static void release_now(berth_timer *t, void *arg)
{
    struct release *rl = arg;
    H->timer_stop(t);
    H->finalizer_release(rl->e->self, rl->handle, "cleanup");
    free(rl);
}

static void on_event(const struct berth_event *ev, void *arg)
{
    struct echo *e = arg;
    e->events++;
    if (!ev->tenant) return;
    if (ev->type == BERTH_EV_TENANT_CREATED && e->cfg.finalize)
        H->finalizer_add(e->self, ev->tenant, "cleanup");
    if (ev->type == BERTH_EV_TENANT_DELETING && e->cfg.finalize) {
        struct release *rl = calloc(1, sizeof *rl);
        rl->e = e;
        snprintf(rl->handle, sizeof rl->handle, "%s", ev->tenant);
        H->timer_start(e->self, (uint64_t)e->cfg.finalize_delay, 0, release_now, rl);
    }
}

static void contribute(berth_spec *s, void *arg)
{
    struct echo *e = arg;
    H->spec_setenv(s, "ECHO_GREETING", e->cfg.greeting);
}

static void tick(berth_timer *t, void *arg)
{
    (void)t;
    ((struct echo *)arg)->ticks++;
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR) return BERTH_ENOTSUP;
    H = host;
    struct echo *e = calloc(1, sizeof *e);
    e->self = self;
    *state = e;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct echo *e = state;
    e->cfg = *(const struct cfg *)cfg;
    e->configured++;
    return 0;
}

static int start(void *state)
{
    struct echo *e = state;
    e->pinged = H->event_register(e->self, "echo.pinged");
    if (!e->pinged) return BERTH_EINVAL;
    H->subscribe(e->self, 0, on_event, e);
    H->route(e->self, "GET", "/v1/echo/info", info, e);
    H->route(e->self, "GET", "/v1/echo/lists", lists, e);
    H->route(e->self, "POST", "/v1/echo/ping", ping, e);
    H->route(e->self, "GET", "/v1/echo/fetch", fetch, e);
    H->route(e->self, "GET", "/v1/echo/stream", stream, e);
    H->route(e->self, "POST", "/v1/echo/busy/{handle}", busy, e);
    H->route(e->self, "DELETE", "/v1/echo/busy/{handle}", busy, e);
    H->spec_contributor(e->self, contribute, e);
    /* deliberately never stopped: the host must release it on unload */
    e->tick = H->timer_start(e->self, 1000, 1000, tick, e);
    if (e->cfg.listen) {
        int rc = H->listen(e->self, e->cfg.listen, serve, e);
        if (rc) return rc;
        H->route(e->self, "GET", "/v1/echo/stream2", stream, e);
    }
    return 0;
}

static void drain_done(berth_timer *t, void *arg)
{
    struct echo *e = arg;
    H->timer_stop(t);
    H->drained(e->self);
}

static void stop(void *state)
{
    struct echo *e = state;
    H->timer_start(e->self, (uint64_t)e->cfg.drain_delay, 0, drain_done, e);
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "echo", .version = "1." ECHO_VERSION_STR,
             .description = "exercises the host API in tests", .config = schema,
             .config_size = sizeof(struct cfg), .validate = validate, .init = init,
             .configure = configure, .start = start, .stop = stop, .destroy = destroy);
