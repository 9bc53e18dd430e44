/* Fuzz target for berthctl's reader of the event stream (berthctl/sse.c): the input is cut
 * into chunks (the first byte sets their size) and each "data: " payload is parsed as JSON,
 * as `berthctl events` and `berthctl wait` do.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_sse corpus/sse
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"
#include "sse.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t payloads;

static bool on_data(const char *d, void *arg)
{
    (void)arg;
    cJSON *e = cJSON_Parse(d);
    payloads++;
    bool go = !cJSON_IsString(cJSON_GetObjectItem(e, "stop"));
    (void)cJSON_GetStringValue(cJSON_GetObjectItem(e, "type"));
    cJSON_Delete(e);
    return go;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    static struct sse s;
    memset(&s, 0, sizeof s);
    s.fn = on_data;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    char *copy = xmalloc(size);         /* curl hands a writable buffer */
    memcpy(copy, data, size);
    for (size_t off = 1; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (sse_feed(copy + off, 1, n, &s) != n) break;
    }
    free(copy);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_sse: %d input(s) ran clean, %zu payload(s)\n", argc - 1, payloads);
    return payloads > 0 || argc == 1 ? 0 : 1;
}
#endif
