/* Fuzz target for berthd's HTTP server: each input is written into one end of a socketpair
 * whose other end is served as a connection, then the writer hangs up; the loop runs until
 * the connection is gone. Limits are small so that 413/431 paths are reached.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_http corpus/http
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(berth_req *r, void *arg)
{
    (void)arg;
    size_t n;
    const char *body = req_body(r, &n);
    const char *q = req_query(r, "x");
    if (!strcmp(req_path(r), "/stream")) {
        static const struct berth_header h[] = {{"Content-Type", "text/plain"}, {NULL, NULL}};
        req_start(r, 200, h);
        req_write(r, body, n);
        req_write(r, q ? q : "", q ? strlen(q) : 0);
        req_end(r);
        return;
    }
    req_respond(r, 200, "text/plain", body, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        C.loop = uv_default_loop();
        log_configure(BERTH_LOG_ERROR, false);
        http_limits = (struct http_limits){200, 200, 1024, 2048, .send_timeout_ms = 200};
        init = true;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return 0;
    if (http_serve_fd(sv[0], handler, NULL) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    size_t off = 0;
    while (off < size) {        /* a socketpair buffer holds more than the limits allow */
        ssize_t w = write(sv[1], data + off, size - off);
        if (w <= 0) break;
        off += (size_t)w;
        uv_run(C.loop, UV_RUN_NOWAIT);
    }
    shutdown(sv[1], SHUT_WR);
    char sink[65536];
    while (http_connections_open()) {
        uv_run(C.loop, UV_RUN_ONCE);
        while (read(sv[1], sink, sizeof sink) > 0) {}
    }
    close(sv[1]);
    uv_run(C.loop, UV_RUN_NOWAIT);      /* close callbacks */
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_http: %d input(s) ran clean, %" PRIu64 " request(s) served\n", argc - 1,
           http_requests_total());
    return http_requests_total() > 0 || argc == 1 ? 0 : 1;
}
#endif
