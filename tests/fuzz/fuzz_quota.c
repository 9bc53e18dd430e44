/* Fuzz target for the quota proxy's parsers of outside input (plugins/quota): a tenant's
 * request body (body.c's checks, bound.c's reservation bound) and an upstream's answer
 * (meter.c's usage, whole and as SSE; hide.c's event-by-event relay). The first byte picks
 * the chunk size the answer is cut into. Besides the sanitizers, it checks the relay's
 * promise: with nothing to hide, what comes out (and the flush) is exactly what went in,
 * each piece ending on an event's end.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_quota corpus/quota
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "../../plugins/quota/quota.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const struct berth_host *H;     /* unused by the parsers; bound_overrun is never reached */
static size_t bodies;

static void request(const char *text, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) return;
    bodies++;
    if (!body_check(j)) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
        if (cJSON_IsString(m)) (void)body_model_ok(m->valuestring, 128);
        for (int api = API_ANTHROPIC; api <= API_OPENAI_RESPONSES; api++) {
            int64_t in = 0, out = 0;
            if (!bound_call((enum api)api, j, len, 1000, &in, &out) && (in < 0 || out < 0))
                abort();                /* a bound is never negative */
        }
        (void)bound_hour_cache(j);
    }
    struct usage u = {0};
    (void)meter_absorb(&u, j);
    cJSON_Delete(j);
}

static void relay(const char *text, size_t len, size_t chunk)
{
    struct sse s = {0};
    struct usage u = {0};
    struct hide whole = {0}, drop = {0};
    char *got = malloc(len + 1);
    size_t n = 0, k;
    const char *o;
    for (size_t off = 0; off < len; off += chunk) {
        size_t c = len - off < chunk ? len - off : chunk;
        sse_feed(&s, &u, text + off, c);
        (void)hide_usage(&drop, text + off, c, &o, true);
        k = hide_usage(&whole, text + off, c, &o, false);
        if (k && (k < 2 || o[k - 1] != '\n') && !whole.passthrough) abort();
        memcpy(got + n, o, k);
        n += k;
    }
    k = hide_flush(&whole, &o);
    memcpy(got + n, o, k);
    n += k;
    if (n != len || memcmp(got, text, len)) abort();   /* nothing lost, added or reordered */
    free(got);
    sse_free(&s);
    hide_free(&whole);
    hide_free(&drop);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    request((const char *)data + 1, size - 1);
    relay((const char *)data + 1, size - 1, chunk);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_quota: %d input(s) ran clean, %zu JSON bodies\n", argc - 1, bodies);
    return bodies > 0 || argc == 1 ? 0 : 1;
}
#endif
