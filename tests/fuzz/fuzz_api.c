/* Fuzz target for the control API's JSON bodies through the real dispatch: the input, after
 * a first byte that picks the endpoint, is the body of a request written into one end of a
 * socketpair served by api_dispatch, as berthd serves its socket. No template is configured,
 * so no body may create a tenant. It checks the API's promises, not only crashes: every
 * answer is valid UTF-8 and parses as JSON, and nothing was created. A broken one aborts.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_api corpus/api
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const targets[] = {
    "POST /v1/tenants", "POST /v1/tenants/abc/wake", "DELETE /v1/tenants/abc",
    "PATCH /v1/tenants/abc",
};

static void must(bool ok, const char *what, const struct buf *b)
{
    if (ok) return;
    fprintf(stderr, "fuzz_api: broken promise: %s\n%.*s\n", what, (int)b->len, b->p);
    abort();
}

static char dir[] = "/tmp/berth-fuzz-api-XXXXXX";

static void remove_dir(void)
{
    static const char *const files[] = {"00-berth.yaml", "berth.db", "berth.db-wal",
                                        "berth.db-shm"};
    for (size_t i = 0; i < ARRAY_LEN(files); i++) {
        char *f = xasprintf("%s/%s", dir, files[i]);
        unlink(f);
        free(f);
    }
    rmdir(dir);
}

static void setup(void)
{
    C.loop = uv_default_loop();
    log_configure(BERTH_LOG_ERROR, false);
    http_limits = (struct http_limits){1000, 1000, 4096, 65536, .send_timeout_ms = 1000};
    if (!mkdtemp(dir)) abort();
    atexit(remove_dir);
    char *f = xasprintf("%s/00-berth.yaml", dir);
    FILE *fp = fopen(f, "w");
    if (!fp) abort();
    fprintf(fp, "berth:\n  plugin_dir: %s\n", dir);
    fclose(fp);
    free(f);
    struct errs e = {0};
    C.gen = gen_build(dir, dir, NULL, &e);
    for (size_t i = 0; i < e.n; i++) fprintf(stderr, "fuzz_api: setup: %s\n", e.v[i]);
    if (e.n) abort();
    C.state_dir = dir;
    C.conf_dir = dir;
    char err[256];
    char *db = xasprintf("%s/berth.db", dir);   /* the store watches a real file */
    if (store_open(db, &C.store, err, sizeof err)) abort();
    free(db);
    bus_init();
    if (tenants_init() < 0 || api_init() < 0) abort();
}

/* the status line's code and the body of one Content-Length answer */
static void check_answer(const struct buf *b)
{
    must(b->len > 12 && !memcmp(b->p, "HTTP/1.1 ", 9), "an HTTP answer", b);
    const char *end = memmem(b->p, b->len, "\r\n\r\n", 4);
    must(end != NULL, "a complete head", b);
    const char *body = end + 4;
    size_t n = b->len - (size_t)(body - b->p);
    must(utf8_valid(body, n), "the body is valid UTF-8", b);
    cJSON *j = cJSON_ParseWithLength(body, n);
    must(j != NULL, "the body parses as JSON", b);
    cJSON_Delete(j);
    size_t counts[9] = {0}, total = 0;
    tenants_count(counts);
    for (int i = 0; i < 9; i++) total += counts[i];
    must(total == 0, "nothing was created", b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) setup(), init = true;
    if (!size) return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return 0;
    if (http_serve_fd(sv[0], api_dispatch, NULL) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    struct buf req = {0};
    buf_printf(&req, "%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
               "application/json\r\nContent-Length: %zu\r\n\r\n",
               targets[data[0] % ARRAY_LEN(targets)], size - 1);
    buf_add(&req, data + 1, size - 1);
    for (size_t off = 0; off < req.len;) {
        ssize_t w = write(sv[1], req.p + off, req.len - off);
        if (w <= 0) break;
        off += (size_t)w;
        uv_run(C.loop, UV_RUN_NOWAIT);
    }
    buf_free(&req);
    struct buf out = {0};
    char chunk[65536];
    while (http_connections_open()) {
        uv_run(C.loop, UV_RUN_ONCE);
        ssize_t r;
        while ((r = read(sv[1], chunk, sizeof chunk)) > 0) buf_add(&out, chunk, (size_t)r);
    }
    ssize_t r;
    while ((r = read(sv[1], chunk, sizeof chunk)) > 0) buf_add(&out, chunk, (size_t)r);
    close(sv[1]);
    uv_run(C.loop, UV_RUN_NOWAIT);
    check_answer(&out);
    buf_free(&out);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_api: %d input(s) answered as JSON, %" PRIu64 " request(s) served\n", argc - 1,
           http_requests_total());
    return http_requests_total() > 0 || argc == 1 ? 0 : 1;
}
#endif
