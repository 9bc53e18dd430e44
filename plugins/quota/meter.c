/* Metering: tokens from the upstream's own usage fields, and their price.
 *
 * Anthropic reports usage in a message's `usage` (input_tokens, output_tokens,
 * cache_creation_input_tokens, cache_read_input_tokens), streamed in message_start and
 * message_delta (output_tokens there is cumulative). OpenAI Chat Completions reports
 * prompt_tokens (which includes prompt_tokens_details.cached_tokens) and completion_tokens,
 * streamed in a final chunk; Responses reports input_tokens (including
 * input_tokens_details.cached_tokens) and output_tokens, streamed in response.completed.
 * Cached input is split out so each part is priced once. Anthropic's cache writes are split
 * by lifetime in `cache_creation` (ephemeral_5m/1h_input_tokens): an hour's write costs 2x
 * the input price, five minutes' 1.25x. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t num(const cJSON *o, const char *k, bool *seen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0) return 0;
    if (seen) *seen = true;
    return (int64_t)v->valuedouble;
}

static void absorb_usage(struct usage *u, const cJSON *us)
{
    if (!cJSON_IsObject(us)) return;
    bool in = false, out = false;
    if (cJSON_GetObjectItemCaseSensitive(us, "prompt_tokens")) {           /* chat */
        int64_t cached = num(cJSON_GetObjectItemCaseSensitive(us, "prompt_tokens_details"),
                             "cached_tokens", NULL);
        int64_t p = num(us, "prompt_tokens", &in);
        u->cache_read = cached;
        u->input = p > cached ? p - cached : 0;
        u->output = num(us, "completion_tokens", &out);
    } else if (cJSON_GetObjectItemCaseSensitive(us, "input_tokens_details")) { /* responses */
        int64_t cached = num(cJSON_GetObjectItemCaseSensitive(us, "input_tokens_details"),
                             "cached_tokens", NULL);
        int64_t p = num(us, "input_tokens", &in);
        u->cache_read = cached;
        u->input = p > cached ? p - cached : 0;
        u->output = num(us, "output_tokens", &out);
    } else {                                                                 /* anthropic */
        bool s = false;
        int64_t v = num(us, "input_tokens", &s);
        if (s) { u->input = v; in = true; }
        s = false;
        v = num(us, "cache_creation_input_tokens", &s);
        if (s) u->cache_write = v;
        s = false;
        v = num(cJSON_GetObjectItemCaseSensitive(us, "cache_creation"),
                "ephemeral_1h_input_tokens", &s);
        if (s) u->cache_write_1h = v;
        s = false;
        v = num(us, "cache_read_input_tokens", &s);
        if (s) u->cache_read = v;
        s = false;
        v = num(us, "output_tokens", &s);
        if (s && v >= u->output) { u->output = v; out = true; }
    }
    u->seen_input |= in;
    u->seen_output |= out;
    if (out) u->reports++;
}

/* bytes of generated text in a streamed delta: each token is at least one byte of it */
static size_t text_len(const cJSON *n)
{
    static const char *const keys[] = {"text", "partial_json", "thinking", "content",
                                       "arguments", "delta", "refusal", NULL};
    size_t sum = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, n) {
        if (cJSON_IsString(c) && c->string) {
            for (const char *const *k = keys; *k; k++)
                if (!strcmp(c->string, *k)) sum += strlen(c->valuestring);
        } else if (cJSON_IsObject(c) || cJSON_IsArray(c)) {
            sum += text_len(c);
        }
    }
    return sum;
}

size_t meter_absorb(struct usage *u, const cJSON *doc)
{
    if (!cJSON_IsObject(doc)) return 0;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (!strcmp(t, "message_start"))
        absorb_usage(u, cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(doc, "message"), "usage"));
    else if (!strncmp(t, "response.", 9))
        absorb_usage(u, cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(doc, "response"), "usage"));
    else
        absorb_usage(u, cJSON_GetObjectItemCaseSensitive(doc, "usage"));
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(doc, "delta");
    size_t n = cJSON_IsString(delta) ? strlen(delta->valuestring) : 0;
    if (cJSON_IsObject(delta)) n += text_len(delta);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(doc, "choices");
    if (cJSON_IsArray(choices)) n += text_len(choices);
    return n;
}

static const struct price *listed(const struct quota *q, const char *model)
{
    const struct berth_structmap *m = &q->cfg.prices;
    for (size_t i = 0; model && i < m->n; i++)
        if (!strcmp(m->keys[i], model)) return &((const struct price *)m->vals)[i];
    return NULL;
}

const char *meter_label(const struct quota *q, const char *model)
{
    return listed(q, model) ? model : "(default price)";
}

bool meter_price(const struct quota *q, const char *model, struct price *out)
{
    const struct price *p = listed(q, model);
    if (p) {
        *out = *p;
        return true;
    }
    if (q->cfg.default_price.output > 0) {
        *out = q->cfg.default_price;
        return true;
    }
    return false;
}

/* USD per million tokens is micro-dollars per token. Prices are taken in thousandths of that
 * (exact for the decimals price lists use) and the sum is rounded up: never under-billed.
 * Token counts come from clients (max_tokens) and upstreams: a product or sum that would
 * overflow saturates at COST_MAX, a cost no budget admits, instead of wrapping to a small or
 * negative one that any budget would. */
#define COST_MAX (INT64_MAX / 8)

static int64_t part(int64_t tokens, double usd_per_m)
{
    int64_t r;
    if (tokens < 0) tokens = 0;
    if (__builtin_mul_overflow(tokens, (int64_t)llround(usd_per_m * 1000), &r) || r > COST_MAX)
        return COST_MAX;
    return r;
}

static int64_t add_sat(int64_t a, int64_t b)
{
    return a > COST_MAX - b ? COST_MAX : a + b;
}

/* an hour's cache write unpriced: Anthropic's 2x input, or the 5-minute price if higher */
static double write_1h(const struct price *p)
{
    if (p->cache_write_1h) return p->cache_write_1h;
    return p->cache_write > 2 * p->input ? p->cache_write : 2 * p->input;
}

int64_t meter_cost(const struct price *p, const struct usage *u)
{
    int64_t hour = u->cache_write_1h < u->cache_write ? u->cache_write_1h : u->cache_write;
    int64_t nano = part(u->input, p->input);
    nano = add_sat(nano, part(u->output, p->output));
    nano = add_sat(nano, part(u->cache_read, p->cache_read ? p->cache_read : p->input));
    nano = add_sat(nano, part(u->cache_write - hour, p->cache_write ? p->cache_write
                                                                    : p->input));
    nano = add_sat(nano, part(hour, write_1h(p)));
    return (nano + 999) / 1000;
}

double meter_max_input_price(const struct price *p, bool hour)
{
    double m = p->input;
    if (p->cache_read > m) m = p->cache_read;
    if (p->cache_write > m) m = p->cache_write;
    return hour && write_1h(p) > m ? write_1h(p) : m;
}

/* ---- SSE ---- */

#define SSE_EVENT_MAX (4u << 20)

static void sse_event(struct sse *s, struct usage *u, char *ev, size_t len)
{
    char *data = malloc(len + 1);
    size_t dn = 0;
    if (!data) return;
    for (char *line = ev, *end; line < ev + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(ev + len - line));
        if (!end) end = ev + len;
        size_t ll = (size_t)(end - line);
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll >= 5 && !memcmp(line, "data:", 5)) {
            size_t off = ll > 5 && line[5] == ' ' ? 6 : 5;
            if (dn) data[dn++] = '\n';
            memcpy(data + dn, line + off, ll - off);
            dn += ll - off;
        }
    }
    data[dn] = 0;
    cJSON *doc = dn && strcmp(data, "[DONE]") ? cJSON_ParseWithLength(data, dn) : NULL;
    if (doc) {
        unsigned before = u->reports;
        size_t text = meter_absorb(u, doc);
        if (u->reports != before) s->text_after = 0;  /* the report covers what came before */
        s->text_after += text;
        cJSON_Delete(doc);
    }
    free(data);
}

/* the end of the first event in buf (after its blank line), or 0 */
static size_t event_end(const char *b, size_t n, size_t *body)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (b[i] != '\n') continue;
        if (b[i + 1] == '\n') { *body = i; return i + 2; }
        if (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n') { *body = i; return i + 3; }
    }
    return 0;
}

void sse_feed(struct sse *s, struct usage *u, const char *data, size_t len)
{
    if (s->len + len > s->cap) {
        if (s->len + len > SSE_EVENT_MAX) {     /* an event this large carries no usage */
            s->len = s->scanned = 0;
            s->overflow = true;
            return;
        }
        size_t cap = (s->len + len) * 2;
        char *p = realloc(s->buf, cap);
        if (!p) return;
        s->buf = p;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    /* the scan resumes where the last one stopped (less the 2 bytes an event's end may have
     * begun with): an event arriving in many small pieces costs linear time, not quadratic */
    size_t body, end, off = 0, from = s->scanned > 2 ? s->scanned - 2 : 0;
    while ((end = event_end(s->buf + from, s->len - from, &body))) {
        sse_event(s, u, s->buf + off, from - off + body);
        off = from + end;
        from = off;
    }
    memmove(s->buf, s->buf + off, s->len - off);
    s->len -= off;
    s->scanned = s->len;
}

void sse_free(struct sse *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = s->scanned = 0;
}
