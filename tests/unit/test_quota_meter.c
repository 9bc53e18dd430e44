/* The quota plugin's meter (plugins/quota/meter.c): usage from whole bodies and from SSE
 * streams cut at every byte, cost rounding, and the bound kept for a cut stream. */
#include "../../plugins/quota/quota.h"
#include "unit.h"

#include <cjson/cJSON.h>
#include <string.h>

const struct berth_host *H;

static const char anthropic_sse[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,"
    "\"cache_creation_input_tokens\":7,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\r\n"
    "\r\n"
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
    "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
    "\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n"
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

static void feed_split(const char *s, size_t cut, struct usage *u, struct sse *p)
{
    size_t n = strlen(s);
    if (cut > n) cut = n;
    sse_feed(p, u, s, cut);
    sse_feed(p, u, s + cut, n - cut);
}

static void anthropic_stream(void)
{
    for (size_t cut = 0; cut <= sizeof anthropic_sse - 1; cut++) {
        struct usage u = {0};
        struct sse p = {0};
        feed_split(anthropic_sse, cut, &u, &p);
        CHECK(u.input == 25 && u.cache_write == 7 && u.cache_read == 5 && u.output == 1);
        /* the final report covers the text before it, even with an unchanged count */
        CHECK(p.text_after == 0);
        sse_free(&p);
    }
}

static void cut_stream_counts_text(void)
{
    struct usage u = {0};
    struct sse p = {0};
    const char *s = "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,"
                    "\"output_tokens\":1}}}\n\n"
                    "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\","
                    "\"text\":\"hello\"}}\n\n"
                    "data: {\"type\":\"content_block_delta\",\"delta\":{\"type\":"
                    "\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n";
    sse_feed(&p, &u, s, strlen(s));
    CHECK(u.output == 1 && p.text_after == 5 + 5);
    sse_free(&p);
}

static void openai(void)
{
    struct usage u = {0};
    struct sse p = {0};
    const char *s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abc\"}}],"
                    "\"usage\":null}\n\n"
                    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":"
                    "3,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
                    "data: [DONE]\n\n";
    sse_feed(&p, &u, s, strlen(s));
    CHECK(u.input == 9 && u.cache_read == 4 && u.output == 3 && p.text_after == 0);
    sse_free(&p);
    struct usage r = {0};
    cJSON *doc = cJSON_Parse("{\"type\":\"response.completed\",\"response\":{\"usage\":{"
                             "\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":2},"
                             "\"output_tokens\":7}}}");
    meter_absorb(&r, doc);
    cJSON_Delete(doc);
    CHECK(r.input == 8 && r.cache_read == 2 && r.output == 7 && r.seen_input && r.seen_output);
}

static void cost(void)
{
    struct price p = {3, 15, 0.30, 3.75};
    struct usage u = {.input = 1000, .output = 1000, .cache_read = 1000, .cache_write = 1000};
    CHECK(meter_cost(&p, &u) == 3000 + 15000 + 300 + 3750);
    struct usage one = {.cache_read = 1};
    CHECK(meter_cost(&p, &one) == 1);       /* 0.3 micro-dollars, rounded up */
    /* an hour's cache write: its own price, or Anthropic's 2x input when unset */
    struct usage w = {.cache_write = 10, .cache_write_1h = 4};
    CHECK(meter_cost(&p, &w) == (6 * 3750 + 4 * 6000 + 999) / 1000);
    struct price p1h = {3, 15, 0.30, 3.75, 7};
    CHECK(meter_cost(&p1h, &w) == (6 * 3750 + 4 * 7000 + 999) / 1000);
    CHECK(meter_max_input_price(&p, true) == 6 && meter_max_input_price(&p, false) == 3.75);
    struct usage a = {0};
    cJSON *doc = cJSON_Parse("{\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":9,"
                             "\"cache_creation\":{\"ephemeral_5m_input_tokens\":4,"
                             "\"ephemeral_1h_input_tokens\":5}}}");
    meter_absorb(&a, doc);
    cJSON_Delete(doc);
    CHECK(a.cache_write == 9 && a.cache_write_1h == 5);
    struct price q = {0.40, 1.60, 0, 0};
    struct usage c = {.input = 3, .cache_read = 3};
    CHECK(meter_cost(&q, &c) == 3);         /* cache read without a price: the input's */
}

int main(void)
{
    anthropic_stream();
    cut_stream_counts_text();
    openai();
    cost();
    return unit_report("test_quota_meter");
}
