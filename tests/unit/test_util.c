/* Unit tests for the parsers every config value and handle goes through. */
#include "core.h"
#include "unit.h"

#include <string.h>

static void durations(void)
{
    int64_t ms;
    CHECK(parse_duration("500ms", &ms) == 0 && ms == 500);
    CHECK(parse_duration("10s", &ms) == 0 && ms == 10000);
    CHECK(parse_duration("5m", &ms) == 0 && ms == 300000);
    CHECK(parse_duration("2h", &ms) == 0 && ms == 7200000);
    CHECK(parse_duration("1d", &ms) == 0 && ms == 86400000);
    CHECK(parse_duration("0", &ms) == 0 && ms == 0);
    CHECK(parse_duration("10", &ms) < 0);           /* a unit is required */
    CHECK(parse_duration("s", &ms) < 0);
    CHECK(parse_duration("-1s", &ms) < 0);
    CHECK(parse_duration("1.5s", &ms) < 0);
    CHECK(parse_duration("99999999999999999999h", &ms) < 0);
    CHECK(parse_duration("106751991167301d", &ms) < 0);   /* overflows int64 ms */
    char out[32];
    fmt_duration(300000, out, sizeof out);
    CHECK(!strcmp(out, "5m"));
    fmt_duration(1500, out, sizeof out);
    CHECK(!strcmp(out, "1500ms"));
}

static void sizes(void)
{
    uint64_t b;
    CHECK(parse_size("512", &b) == 0 && b == 512);
    CHECK(parse_size("64k", &b) == 0 && b == 65536);
    CHECK(parse_size("256m", &b) == 0 && b == 256ull << 20);
    CHECK(parse_size("2G", &b) == 0 && b == 2ull << 30);
    CHECK(parse_size("1gb", &b) == 0 && b == 1ull << 30);
    CHECK(parse_size("1x", &b) < 0);
    CHECK(parse_size("", &b) < 0);
    CHECK(parse_size("99999999999t", &b) < 0);
}

static void handles(void)
{
    const char *good[] = {"ab", "alice", "a1", "a-b", "x0-9", "abcdefghijklmnopqrstuvwxyz012345"};
    const char *bad[] = {"", "a", "A", "1a", "-a", "a-", "a_b", "a.b", "a b", "ab\n",
                         "abcdefghijklmnopqrstuvwxyz0123456", "é1", NULL};
    for (size_t i = 0; i < ARRAY_LEN(good); i++) CHECK(handle_valid(good[i]));
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) CHECK(!handle_valid(bad[i]));
}

static void secrets(void)
{
    CHECK(ct_equal("token", "token"));
    CHECK(!ct_equal("token", "tokem"));
    CHECK(!ct_equal("tok", "token"));
    CHECK(!ct_equal("tokenx", "token"));
    CHECK(!ct_equal("", ""));
    CHECK(levenshtein("levl", "level") == 1);
    CHECK(levenshtein("memmory", "memory") == 1);
}

static void utf8(void)
{
    CHECK(utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 16));
    CHECK(!utf8_valid("\xff", 1));
    CHECK(!utf8_valid("\xc3", 1));                  /* cut short */
    CHECK(!utf8_valid("\xc0\xaf", 2));              /* overlong '/' */
    CHECK(!utf8_valid("\xe0\x80\xaf", 3));          /* overlong */
    CHECK(!utf8_valid("\xed\xa0\x80", 3));          /* a surrogate */
    CHECK(!utf8_valid("\xf4\x90\x80\x80", 4));      /* above U+10FFFF */
    CHECK(utf8_valid("\xf4\x8f\xbf\xbf", 4));
    struct buf b = {0};
    buf_json_escape(&b, "a\"\\\x01\xff\xc3\xa9\x7f");
    buf_add(&b, "", 1);
    CHECK(!strcmp(b.p, "a\\\"\\\\\\u0001\xef\xbf\xbd\xc3\xa9\\u007f"));
    buf_free(&b);
    char err[128];
    const char *good = "{\"a\":\"\\u00e9\\ud83d\\ude00\\n\",\"b\":[\"x\\\"y\"]}";
    CHECK(json_text_check(good, strlen(good), err, sizeof err) == 0);
    CHECK(json_text_check("{\"a\":\"x\\u0000\"}", 14, err, sizeof err) == BERTH_EINVAL);
    CHECK(strstr(err, "\\u0000") != NULL);
    CHECK(json_text_check("{\"a\":\"\\ud800\"}", 14, err, sizeof err) == BERTH_EINVAL);
    CHECK(json_text_check("{\"a\":\"\\udc00\\ud800\"}", 20, err, sizeof err) == BERTH_EINVAL);
    CHECK(json_text_check("{\"a\":\"\x01\"}", 9, err, sizeof err) == BERTH_EINVAL);
    CHECK(json_text_check("{\"a\":\"\xff\"}", 9, err, sizeof err) == BERTH_EINVAL);
    CHECK(json_text_check("{\"a\":1}\0", 8, err, sizeof err) == BERTH_EINVAL);
    CHECK(json_text_check("{\"a\\\\\":\"\\\\u0000\"}", 17, err, sizeof err) == 0);
    CHECK(pct_text_valid("a=%C3%A9&b=c", 12));
    CHECK(!pct_text_valid("a=%00", 5));
    CHECK(!pct_text_valid("a=%ff", 5));
    CHECK(!pct_text_valid("a=\xff", 3));
    CHECK(pct_text_valid("a=%", 3));                /* a bad escape is the parser's to drop */
}

/* the bus's shortcut: what it accepts as a flat object, cJSON parses as an object */
static void flat_objects(void)
{
    static const char *const yes[] = {
        "{}", " { } ", "{\"a\":1}", "{\"id\":12,\"api\":\"messages\",\"ok\":true,\"n\":null}",
        "{\"a\":-0.5e+10,\"b\":false,\"c\":\"\xc3\xa9\"}\n", "{ \"a\" : 0 , \"b\" : 1E3 }"};
    static const char *const no[] = {
        "", "[]", "{", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\":01}", "{\"a\":1.}",
        "{\"a\":1e}", "{\"a\":-}", "{\"a\":tru}", "{\"a\":{}}", "{\"a\":[1]}",
        "{\"a\":\"x\\n\"}", "{\"a\":1} x", "{\"a\":1}{}", "{a:1}", "{\"a\":\"\x01\"}",
        "{\"a\":.5}", "{\"a\":+1}", "{\"a\":1 2}"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++) {
        CHECK(json_flat_object(yes[i]));
        cJSON *j = cJSON_Parse(yes[i]);
        CHECK(cJSON_IsObject(j));
        cJSON_Delete(j);
    }
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) CHECK(!json_flat_object(no[i]));
}

int main(void)
{
    durations();
    sizes();
    handles();
    secrets();
    utf8();
    flat_objects();
    return unit_report("util");
}
