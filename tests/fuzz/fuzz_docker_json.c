/* Fuzz target for the docker plugin's reading of dockerd's JSON answers (inspect, list, pull
 * progress; plugins/docker/docker_answers.c). The first byte picks the answer, the second
 * the chunk size a pull stream arrives in (through the plugin's own line splitter).
 * Checked beyond crashes: a published address is "host:port" with a port dockerd could
 * mean (1-65535), never longer than its buffer; a pull stream reads the same whole or cut
 * into chunks.
 *   clang: meson setup build-fuzz -Dfuzz=true &&
 *          build-fuzz/tests/fuzz/fuzz_docker_json corpus/docker_json
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"
#include "docker_answers.h"
#include "docker_events.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t read_ok;      /* answers that gave berth something, for the corpus run */

static void check_addr(const char *addr)
{
    size_t n = strnlen(addr, DK_ADDR_MAX);
    if (n == DK_ADDR_MAX) abort();
    if (!n) return;
    const char *colon = strrchr(addr, ':');
    long port = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (port < 1 || port > 65535) abort();
    read_ok++;
}

static void pull_line(const char *line, size_t len, void *arg)
{
    (void)arg;
    cJSON *m = cJSON_ParseWithLength(line, len);
    struct dk_pull p;
    dk_pull_read(m, &p);
    if (p.error || p.status) read_ok++;
    cJSON_Delete(m);
}

/* feeds a pull stream in chunks of n bytes; returns how many lines said something */
static size_t pulled(const char *s, size_t len, size_t n)
{
    size_t before = read_ok;
    struct dk_lines l = {0};
    for (size_t off = 0; off < len; off += n)
        if (!dk_lines_feed(&l, s + off, len - off < n ? len - off : n, pull_line, NULL))
            break;
    dk_lines_reset(&l);
    return read_ok - before;
}

static void answer(int kind, const char *json, size_t len)
{
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (kind == 0) {
        struct dk_inspect in;
        dk_inspect_read(c, 8080, &in);
        check_addr(in.addr);
        int bound = dk_bound_port(c, 8080);
        if (bound < 0 || bound > 65535) abort();
    } else {
        const cJSON *e;
        cJSON_ArrayForEach(e, c) {
            struct dk_listed l;
            if (dk_list_read(e, &l) && (!l.tenant || !l.state)) abort();
            check_addr(l.addr);
        }
    }
    cJSON_Delete(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int kind = data[0] % 3;
    const char *json = (const char *)data + 2;
    size_t len = size - 2;
    if (kind < 2) {
        answer(kind, json, len);
        return 0;
    }
    /* what a stream says does not depend on where the network cut it */
    size_t whole = pulled(json, len, len ? len : 1), before = read_ok;
    if (pulled(json, len, (size_t)(data[1] % 64) + 1) != whole) abort();
    read_ok = before;
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_docker_json: %d input(s) ran clean, %zu read\n", argc - 1, read_ok);
    return read_ok > 0 || argc == 1 ? 0 : 1;
}
#endif
