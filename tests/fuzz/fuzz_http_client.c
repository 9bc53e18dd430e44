/* Fuzz target for berth's own HTTP client (core/http_conn.c): each input after its first
 * byte is what an upstream answers, served on a unix socket in pieces, then the upstream
 * hangs up. The first byte picks the call: buffered, streamed (on_head + on_data), streamed
 * with a pause and a resume around every piece, or a HEAD.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_http_client
 *          corpus/http_client
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "http_call.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[108];
static int lfd = -1;
static uv_timer_t resumer;
static berth_call *call;
static bool done, pausing;
static uint64_t answered;      /* calls that got an HTTP status */

static void on_resume(uv_timer_t *t)
{
    (void)t;
    if (call) hconn_resume(call);
}

static bool on_head(int status, const struct berth_header *h, size_t n, void *arg)
{
    (void)arg;
    for (size_t i = 0; i < n; i++)       /* every name and value is a whole string */
        if (strlen(h[i].name) + strlen(h[i].value) > 1 << 20) abort();
    return status > 0 && !h[n].name;
}

static bool on_data(const char *d, size_t len, void *arg)
{
    (void)arg;
    if (len && (d[0] == '!' || d[len - 1] == '!')) return false;    /* an abort, sometimes */
    if (pausing) {
        hconn_pause(call);
        uv_timer_start(&resumer, on_resume, 0, 0);
    }
    return true;
}

static void on_done(const struct berth_http_result *r, void *arg)
{
    (void)arg;
    if (r->status) answered++;
    if (!r->status && (!r->error || !r->message[0])) abort();   /* a failure says why */
    if (r->body[r->body_len]) abort();                          /* NUL-terminated */
    call = NULL;
    done = true;
}

static void setup(void)
{
    C.loop = uv_default_loop();
    log_configure(BERTH_LOG_ERROR, false);
    signal(SIGPIPE, SIG_IGN);       /* as berthd: a write to a closed peer is an error */
    hconn_init();
    uv_timer_init(C.loop, &resumer);
    snprintf(path, sizeof path, "/tmp/berth-fuzz-hc-%d.sock", (int)getpid());
    unlink(path);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, path, strlen(path) + 1);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 16)) abort();
}

/* one connection of the upstream: the answer in pieces, then a hang-up */
static void serve(int fd, const uint8_t *data, size_t size)
{
    char sink[4096];
    size_t off = 0, piece = size / 3 + 1;
    while (off < size && !done) {
        size_t n = size - off < piece ? size - off : piece;
        ssize_t w = write(fd, data + off, n);
        if (w < 0 && errno != EAGAIN) break;
        if (w > 0) off += (size_t)w;
        while (read(fd, sink, sizeof sink) > 0) {}
        uv_run(C.loop, UV_RUN_NOWAIT);
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lfd < 0) setup();
    if (!size) return 0;
    int mode = data[0] % 4;
    pausing = mode == 2;
    done = false;
    struct berth_http_opts o = {.size = sizeof o, .url = "http://fuzz/x", .unix_socket = path,
                                .method = mode == 3 ? "HEAD" : "GET", .timeout_ms = 5000};
    if (mode == 1 || mode == 2) {
        o.on_head = on_head;
        o.on_data = on_data;
        o.recv_buffer = 1024;
    }
    call = hconn_call(NULL, &o, on_done, NULL);
    if (!call) abort();
    while (!done) {     /* every connection the call makes gets the same answer */
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) serve(fd, data + 1, size - 1);
        else uv_run(C.loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < 4; i++) uv_run(C.loop, UV_RUN_NOWAIT);   /* pooled ones see the EOF */
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_http_client: %d input(s) ran clean, %" PRIu64 " answered\n", argc - 1,
           answered);
    if (lfd >= 0) {
        hconn_shutdown();
        uv_close((uv_handle_t *)&resumer, NULL);
        uv_run(C.loop, UV_RUN_DEFAULT);
        close(lfd);
        unlink(path);
    }
    return answered > 0 || argc == 1 ? 0 : 1;
}
#endif
