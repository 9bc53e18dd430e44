/* Fuzz target for the docker plugin's reading of dockerd's event stream: the input is cut
 * into chunks (the first byte sets their size, as the network would) and fed through the
 * plugin's own line splitter and event reader (plugins/docker/docker_events.c).
 *   clang: meson setup build-fuzz -Dfuzz=true &&
 *          build-fuzz/tests/fuzz/fuzz_docker_events corpus/docker_events
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"
#include "docker_events.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t events_seen;

static void line(const char *l, size_t len, void *arg)
{
    (void)arg;
    cJSON *m = cJSON_ParseWithLength(l, len);
    struct dk_event ev;
    if (m && dk_event_parse(m, &ev)) {
        events_seen++;
        if (!strcmp(ev.action, "die") && ev.exit_code) (void)atoi(ev.exit_code);
    }
    cJSON_Delete(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    struct dk_lines l = {0};
    for (size_t off = 1; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (!dk_lines_feed(&l, (const char *)data + off, n, line, NULL)) break;
    }
    dk_lines_reset(&l);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_docker_events: %d input(s) ran clean, %zu berth event(s) read\n", argc - 1,
           events_seen);
    return events_seen > 0 || argc == 1 ? 0 : 1;
}
#endif
