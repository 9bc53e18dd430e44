/* The quota plugin's reservation bound (plugins/quota/bound.c) and the hidden usage chunk
 * (plugins/quota/hide.c): image caps with base64 left out, refusals, chat's n, and a
 * stream cut at every byte relayed whole minus its usage chunk. */
#include "../../plugins/quota/quota.h"
#include "unit.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const struct berth_host *H;

static const char *bound(enum api api, const char *body, int64_t out_limit, int64_t *in,
                         int64_t *out)
{
    cJSON *j = cJSON_Parse(body);
    const char *bad = bound_call(api, j, strlen(body), out_limit, in, out);
    cJSON_Delete(j);
    return bad;
}

static void images(void)
{
    char *big = malloc(100100);
    memset(big, 'A', 100000);
    big[100000] = 0;
    char *body = malloc(100400);
    snprintf(body, 100400, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image\","
             "\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"%s\"}}]}]}",
             big);
    int64_t in = 0, out = 0;
    CHECK(!bound(API_ANTHROPIC, body, 10, &in, &out));
    /* the base64 bytes are not text; the image is capped */
    CHECK(in == (int64_t)strlen(body) - 100000 + 5000 + 1000 && out == 10);
    snprintf(body, 100400, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
             "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,%s\"}},{\"type\":"
             "\"image_url\",\"image_url\":{\"url\":\"https://x/a.png\",\"detail\":\"low\"}}]}]}",
             big);
    CHECK(!bound(API_OPENAI_CHAT, body, 10, &in, &out));
    CHECK(in == (int64_t)strlen(body) - (100000 + 22) + 50000 + 3000 + 1000);
    free(big);
    free(body);
}

static void refusals_and_output(void)
{
    int64_t in, out;
    CHECK(bound(API_ANTHROPIC, "{\"tools\":[{\"type\":\"web_search_20250305\"}]}", 1, &in,
                &out));
    CHECK(!bound(API_ANTHROPIC, "{\"tools\":[{\"type\":\"bash_20250124\",\"name\":\"bash\"}]}",
                 1, &in, &out));
    CHECK(in > 1500 + 1000);
    CHECK(bound(API_OPENAI_RESPONSES, "{\"previous_response_id\":\"r\"}", 1, &in, &out));
    CHECK(!bound(API_OPENAI_RESPONSES, "{\"previous_response_id\":null}", 1, &in, &out));
    CHECK(bound(API_OPENAI_CHAT, "{\"messages\":[{\"content\":[{\"type\":\"input_audio\"}]}]}",
                1, &in, &out));
    CHECK(!bound(API_OPENAI_CHAT, "{\"n\":4}", 100, &in, &out) && out == 400);
    CHECK(bound(API_OPENAI_CHAT, "{\"n\":129}", 100, &in, &out));
    /* a custom tool's definition counts twice: once in the body, once rendered */
    const char *t = "{\"tools\":[{\"name\":\"x\",\"input_schema\":{}}]}";
    CHECK(!bound(API_ANTHROPIC, t, 1, &in, &out));
    CHECK(in == (int64_t)strlen(t) + (int64_t)strlen("{\"name\":\"x\",\"input_schema\":{}}") +
                    1000);
}

static void hour_cache(void)
{
    cJSON *j = cJSON_Parse("{\"system\":[{\"type\":\"text\",\"text\":\"x\",\"cache_control\":"
                           "{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}]}");
    CHECK(bound_hour_cache(j));
    cJSON_Delete(j);
    j = cJSON_Parse("{\"system\":[{\"cache_control\":{\"type\":\"ephemeral\",\"ttl\":\"5m\"}},"
                    "{\"cache_control\":{\"type\":\"ephemeral\"}}]}");
    CHECK(!bound_hour_cache(j));
    cJSON_Delete(j);
}

static const char stream[] =
    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n"
    "data: [DONE]\n\n";

static void hidden_usage_chunk(void)
{
    const char *chunk = strstr(stream, "data: {\"choices\":[],");
    const char *after = strstr(stream, "data: [DONE]");
    size_t n = sizeof stream - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        struct hide h = {0};
        char got[sizeof stream] = "";
        size_t len = 0;
        const char *o;
        size_t k = hide_usage(&h, stream, cut, &o, true);
        memcpy(got + len, o, k);
        len += k;
        k = hide_usage(&h, stream + cut, n - cut, &o, true);
        memcpy(got + len, o, k);
        len += k;
        k = hide_flush(&h, &o);
        memcpy(got + len, o, k);
        len += k;
        size_t head = (size_t)(chunk - stream), tail = n - (size_t)(after - stream);
        CHECK(len == head + tail && !memcmp(got, stream, head) &&
              !memcmp(got + head, after, tail));
        hide_free(&h);
    }
}

/* With nothing to hide the relay still goes event by event: a stream cut at every byte, in
 * three reads, comes out whole, and every piece but the last (the flush) ends an event. */
static bool ends_event(const char *p, size_t k)
{
    return k == 0 || (k >= 2 && p[k - 1] == '\n' && (p[k - 2] == '\n' ||
                                                      (k >= 3 && p[k - 2] == '\r' &&
                                                       p[k - 3] == '\n')));
}

static void whole_events_only(void)
{
    size_t n = sizeof stream - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        size_t cut2 = cut + (n - cut) / 2;
        struct hide h = {0};
        char got[sizeof stream] = "";
        size_t len = 0, k;
        const char *o;
        const size_t at[] = {0, cut, cut2, n};
        for (int i = 0; i < 3; i++) {
            k = hide_usage(&h, stream + at[i], at[i + 1] - at[i], &o, false);
            CHECK(ends_event(o, k));
            memcpy(got + len, o, k);
            len += k;
        }
        k = hide_flush(&h, &o);
        memcpy(got + len, o, k);
        len += k;
        CHECK(len == n && !memcmp(got, stream, n));
        hide_free(&h);
    }
}

/* A tool call's input is JSON the model wrote, tokenized as text whatever shapes it holds:
 * an image-like object inside it is no image (its "data" is text, not left out) and a
 * {"type": "file"} argument is no file upload. */
static void tool_call_input(void)
{
    char *big = malloc(100100);
    memset(big, 'A', 100000);
    big[100000] = 0;
    char *body = malloc(100600);
    snprintf(body, 100600, "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":"
             "\"tool_use\",\"id\":\"t1\",\"name\":\"f\",\"input\":{\"type\":\"image\","
             "\"source\":{\"type\":\"base64\",\"data\":\"%s\"}}}]}]}", big);
    int64_t in = 0, out = 0;
    CHECK(!bound(API_ANTHROPIC, body, 10, &in, &out));
    CHECK(in >= (int64_t)strlen(body));
    CHECK(!bound(API_ANTHROPIC, "{\"messages\":[{\"role\":\"assistant\",\"content\":[{"
                 "\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"open\",\"input\":{\"type\":"
                 "\"file\",\"path\":\"a.c\"}}]}]}", 10, &in, &out));
    free(big);
    free(body);
}

int main(void)
{
    images();
    refusals_and_output();
    hidden_usage_chunk();
    whole_events_only();
    hour_cache();
    tool_call_input();
    return unit_report("test_quota_bound");
}
