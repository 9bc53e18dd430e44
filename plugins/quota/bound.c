/* The reservation's bound: the most input and output tokens a call can be billed, read from
 * its body before it is forwarded, and what happens when an upstream reports more.
 *
 * Input. Text is bounded by its bytes: both APIs' tokenizers are byte-level BPE, each token
 * covering at least one byte, and the body's JSON (keys, quotes, escapes) is never shorter
 * than the text it carries, which also covers the few tokens each message's framing costs.
 * Tool definitions are counted twice, as each API renders them into a prompt of its own
 * layout; Anthropic's tool-use system prompt (346 tokens in its reference) and OpenAI's
 * reply priming are in the fixed overhead. Images are not text: their base64 bytes are left
 * out and each image counts at the most the API bills for one, whatever its source, as both
 * APIs scale an image down to a maximum before counting it:
 *   - Anthropic: a long edge above 1568 px or more than ~1,600 tokens is scaled down
 *     (tokens = width * height / 750); newer models accept larger images, so 5,000.
 *   - OpenAI: gpt-4o-mini bills 2,833 + 5,667 per 512 px tile, at most 8 tiles after its
 *     2048/768 px scaling: 48,169 at `detail: high` (2,833 at `low`), the highest of the
 *     documented models (tile models 85-170 per tile, patch models 1,536 patches times at
 *     most 2.46); so 50,000, or 3,000 at `low`.
 * What the body cannot bound is refused: PDFs and files (their pages' text is unknown
 * until the upstream extracts it), audio, server-side tools (web search, code execution,
 * MCP: each adds input of its own, over several turns), and OpenAI Responses state kept
 * upstream (previous_response_id, conversation, stored prompts, item references).
 *
 * Output: the request's own limit (max_tokens, max_completion_tokens, max_output_tokens),
 * or the one the proxy set; chat's `n` choices each have it; a chat `prediction` can add
 * its rejected tokens, bounded by its bytes. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_OVERHEAD 1000         /* tool-use system prompt, reply priming */
#define ANTHROPIC_IMAGE 5000
#define OPENAI_IMAGE 50000
#define OPENAI_IMAGE_LOW 3000
#define ANTHROPIC_CLIENT_TOOL 1500  /* computer use: 735 + a 499-token system prompt */

struct walk {
    enum api api;
    int64_t images, excluded;       /* image tokens; base64 bytes not counted as text */
    const char *bad;                /* why the call cannot be bounded */
};

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool prefix(const char *s, const char *p)
{
    return s && !strncmp(s, p, strlen(p));
}

/* a data: URL or base64 payload is an image's bytes, not text */
static void exclude_data(struct walk *w, const char *s, bool always)
{
    if (s && (always || prefix(s, "data:"))) w->excluded += (int64_t)strlen(s);
}

static void image(struct walk *w, const cJSON *o)
{
    if (w->api == API_ANTHROPIC || w->api == API_COUNT_TOKENS) {
        w->images += ANTHROPIC_IMAGE;
        const cJSON *src = cJSON_GetObjectItemCaseSensitive(o, "source");
        if (prefix(str(src, "type"), "base64")) exclude_data(w, str(src, "data"), true);
        return;
    }
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(o, "image_url");
    const char *detail = cJSON_IsObject(iu) ? str(iu, "detail") : str(o, "detail");
    w->images += detail && !strcmp(detail, "low") ? OPENAI_IMAGE_LOW : OPENAI_IMAGE;
    exclude_data(w, cJSON_IsObject(iu) ? str(iu, "url") : str(o, "image_url"), false);
}

/* one typed content part, anywhere in the body */
static void part(struct walk *w, const cJSON *o, const char *type)
{
    if (!strcmp(type, "image") || !strcmp(type, "image_url") || !strcmp(type, "input_image") ||
        !strcmp(type, "computer_screenshot")) {
        image(w, o);
    } else if (!strcmp(type, "document")) {
        const char *st = str(cJSON_GetObjectItemCaseSensitive(o, "source"), "type");
        if (!st || (strcmp(st, "text") && strcmp(st, "content")))
            w->bad = "a PDF or file document's cost cannot be bounded before the call";
    } else if (!strcmp(type, "file") || !strcmp(type, "input_file") ||
               !strcmp(type, "container_upload")) {
        w->bad = "a file's cost cannot be bounded before the call";
    } else if (!strcmp(type, "input_audio")) {
        w->bad = "audio input's cost cannot be bounded before the call";
    } else if (!strcmp(type, "item_reference")) {
        w->bad = "an item stored upstream cannot be bounded before the call";
    }
}

/* An Anthropic tool call's input is JSON the model wrote, tokenized as text whatever it
 * holds: an image-like object in it must not take its bytes out of the count, nor a
 * {"type": "file"} argument refuse the call. (OpenAI's arguments are strings already.) */
static bool tool_call(const char *type)
{
    return !strcmp(type, "tool_use") || !strcmp(type, "server_tool_use") ||
           !strcmp(type, "mcp_tool_use");
}

static void walk(struct walk *w, const cJSON *n)
{
    const cJSON *c;
    if (cJSON_IsObject(n)) {
        const char *type = str(n, "type");
        if (type && tool_call(type)) return;
        if (type) part(w, n, type);
    }
    if (!cJSON_IsObject(n) && !cJSON_IsArray(n)) return;
    cJSON_ArrayForEach(c, n) {
        if (w->bad) return;
        walk(w, c);
    }
}

static int64_t json_len(const cJSON *n)
{
    char *s = cJSON_PrintUnformatted(n);
    int64_t len = s ? (int64_t)strlen(s) : 0;
    free(s);
    return len;
}

/* tools: client-side ones cost their definition (counted twice) or a documented prompt;
 * server-side ones cannot be bounded */
static const char *tools(struct walk *w, const cJSON *list, int64_t *extra)
{
    const cJSON *t;
    bool anthropic = w->api == API_ANTHROPIC || w->api == API_COUNT_TOKENS;
    cJSON_ArrayForEach(t, list) {
        const char *type = str(t, "type");
        if (!type || !strcmp(type, "custom") || (!anthropic && !strcmp(type, "function"))) {
            *extra += json_len(t);
        } else if (anthropic && (prefix(type, "bash_") || prefix(type, "text_editor_") ||
                                 prefix(type, "computer_") || prefix(type, "memory_"))) {
            *extra += ANTHROPIC_CLIENT_TOOL + json_len(t);
        } else {
            static char msg[160];
            snprintf(msg, sizeof msg, "tool type %.64s runs upstream: its cost cannot be "
                     "bounded before the call", type);
            return msg;
        }
    }
    return NULL;
}

static const char *top_level(struct walk *w, const cJSON *j, int64_t *extra)
{
    static const char *const anthropic[] = {"mcp_servers", NULL};
    static const char *const chat[] = {"web_search_options", NULL};
    static const char *const responses[] = {"previous_response_id", "conversation", "prompt",
                                            NULL};
    const char *const *refused = w->api == API_OPENAI_CHAT ? chat
                               : w->api == API_OPENAI_RESPONSES ? responses : anthropic;
    for (const char *const *k = refused; *k; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, *k);
        if (v && !cJSON_IsNull(v)) {
            static char msg[160];
            snprintf(msg, sizeof msg, "%s: state or tools upstream cannot be bounded before "
                     "the call", *k);
            return msg;
        }
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tools");
    return cJSON_IsArray(t) ? tools(w, t, extra) : NULL;
}

const char *bound_call(enum api api, const cJSON *j, size_t body_len, int64_t out_limit,
                       int64_t *in, int64_t *out)
{
    struct walk w = {.api = api};
    int64_t extra = 0;
    const char *bad = top_level(&w, j, &extra);
    if (bad) return bad;
    walk(&w, j);
    if (w.bad) return w.bad;
    int64_t text = (int64_t)body_len - w.excluded;
    *in = (text > 0 ? text : 0) + extra + w.images + INPUT_OVERHEAD;
    *out = out_limit;
    if (api == API_OPENAI_CHAT) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(j, "n");
        if (cJSON_IsNumber(n) && n->valuedouble > 1) {
            if (n->valuedouble > 128) return "n: at most 128 choices";
            *out *= (int64_t)n->valuedouble;
        }
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prediction");
        if (p && !cJSON_IsNull(p)) *out += json_len(p);
    }
    return NULL;
}

bool bound_hour_cache(const cJSON *j)
{
    const cJSON *c;
    if (cJSON_IsObject(j)) {
        const char *ttl = str(cJSON_GetObjectItemCaseSensitive(j, "cache_control"), "ttl");
        if (ttl && strcmp(ttl, "5m")) return true;      /* 1h, or one not known yet */
    }
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return false;
    cJSON_ArrayForEach(c, j)
        if (bound_hour_cache(c)) return true;
    return false;
}

void bound_overrun(struct quota *q, const char *handle, int64_t id, const char *api,
                   const char *model, int64_t reserved, int64_t cost)
{
    if (cost <= reserved) return;
    const char *lv[] = {api, NULL};
    H->metric_add(q->m_overrun, lv, 1);
    H->log(q->self, BERTH_LOG_WARN, "call %lld of %s (%s): the upstream reported usage "
           "costing %lld micro-dollars, above its reservation of %lld; billed in full",
           (long long)id, handle, model, (long long)cost, (long long)reserved);
}
