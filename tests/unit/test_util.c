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

int main(void)
{
    durations();
    sizes();
    handles();
    secrets();
    return unit_report("util");
}
