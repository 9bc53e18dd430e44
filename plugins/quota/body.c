/* What a request body must be before anything is read from it for billing.
 *
 * The proxy reads a body with cJSON, which keeps the FIRST of two equal keys, and forwards the
 * body's bytes, whose reader upstream may keep the LAST: `{"model":"cheap",...,
 * "model":"dear"}` would be priced as one model and served as the other, and a repeated
 * `max_tokens` would bound the reservation by a value the upstream ignores. So an object that
 * repeats a key, at any depth, is refused; RFC 8259 leaves its meaning to the reader, which is
 * exactly the trouble. Objects are checked in O(k log k), so a hostile body of one object with
 * many keys costs no more than sorting them. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 1 when the object's own keys repeat, 0 when not, -1 out of memory */
static int repeats(const cJSON *o)
{
    size_t n = 0, i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, o) n++;
    if (n < 2) return 0;
    const char *small[16], **names = n <= 16 ? small : malloc(n * sizeof *names);
    if (!names) return -1;
    cJSON_ArrayForEach(c, o) names[i++] = c->string ? c->string : "";
    qsort(names, n, sizeof *names, by_name);
    int rc = 0;
    for (i = 1; i < n && !rc; i++) rc = !strcmp(names[i - 1], names[i]);
    if (names != small) free(names);
    return rc;
}

/* recursion is bounded by cJSON's own nesting limit (CJSON_NESTING_LIMIT, 1000 levels) */
const char *body_check(const cJSON *j)
{
    if (cJSON_IsObject(j)) {
        int r = repeats(j);
        if (r < 0) return "out of memory";
        if (r) return "an object repeats a key; send each key once";
    }
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return NULL;
    const cJSON *c;
    cJSON_ArrayForEach(c, j) {
        const char *bad = body_check(c);
        if (bad) return bad;
    }
    return NULL;
}

/* A model name goes into the ledger, events, metrics' labels and log lines: the characters
 * of real model names only (`claude-sonnet-4-5-20250929`, `ft:gpt-4o-mini:org::id`,
 * `us.anthropic.claude-...`), so none of those needs escaping to stay what it is. */
bool body_model_ok(const char *m, size_t max)
{
    size_t n = strlen(m);
    if (!n || n >= max) return false;
    for (const char *p = m; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr("-._:/@+", *p)))
            return false;
    return true;
}
