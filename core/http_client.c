/* Outgoing HTTP through libcurl's multi-socket API driven by libuv: curl tells us which
 * sockets to watch and when to wake it; the loop never blocks on the network. */
#include "core.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

struct berth_call {
    struct res res;             /* linked into its instance when a plugin made it */
    CURL *easy;
    struct curl_slist *headers;
    struct buf body;
    char *url, *req_body, *content_type;
    berth_http_done cb;
    void *arg;
    bool (*on_data)(const char *data, size_t len, void *arg);
    char err[CURL_ERROR_SIZE];
};

struct sock_ctx { struct list link; uv_poll_t poll; curl_socket_t fd; };

static struct list socks = {&socks, &socks};

static CURLM *multi;
static uv_timer_t timer;
static bool up;

static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        berth_call *c;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        CURLcode cc = m->data.result;
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c->easy, CURLINFO_CONTENT_TYPE, &ct);
        struct berth_http_result r = {
            .status = cc == CURLE_OK ? (int)status : 0,
            .error = cc == CURLE_OK ? 0
                     : cc == CURLE_OPERATION_TIMEDOUT ? BERTH_ETIMEDOUT
                     : cc == CURLE_COULDNT_CONNECT ? BERTH_ECONNREFUSED
                     : cc == CURLE_ABORTED_BY_CALLBACK || cc == CURLE_WRITE_ERROR
                         ? BERTH_ECANCELED : BERTH_EIO,
            .message = cc == CURLE_OK ? "" : (c->err[0] ? c->err : curl_easy_strerror(cc)),
            .body = c->body.p ? c->body.p : "",
            .body_len = c->body.len,
            .content_type = ct,
        };
        berth_http_done cb = c->cb;
        void *arg = c->arg;
        /* detach before the callback so it may start new calls or cancel nothing twice */
        curl_multi_remove_handle(multi, c->easy);
        if (c->res.owner) {
            res_detach(&c->res);
            inst_pending(c->res.owner, -1);
        }
        cb(&r, arg);
        curl_easy_cleanup(c->easy);
        curl_slist_free_all(c->headers);
        buf_free(&c->body);
        free(c->url);
        free(c->req_body);
        free(c);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock_ctx *s = p->data;
    int flags = status < 0 ? CURL_CSELECT_ERR
                           : ((events & UV_READABLE) ? CURL_CSELECT_IN : 0) |
                                 ((events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(multi, s->fd, flags, &running);
    check_done();
}

static void on_timer(uv_timer_t *t)
{
    (void)t;
    int running;
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

static void poll_closed(uv_handle_t *h)
{
    struct sock_ctx *s = h->data;
    list_del(&s->link);
    free(s);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e; (void)userp;
    struct sock_ctx *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, poll_closed);
            curl_multi_assign(multi, fd, NULL);
        }
        return 0;
    }
    if (!s) {
        s = xcalloc(1, sizeof *s);
        s->fd = fd;
        if (uv_poll_init_socket(C.loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        list_add_tail(&socks, &s->link);
        curl_multi_assign(multi, fd, s);
    }
    int ev = (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0);
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    (void)m; (void)userp;
    if (ms < 0) uv_timer_stop(&timer);
    else uv_timer_start(&timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    berth_call *c = arg;
    size_t len = size * n;
    if (c->on_data) return c->on_data(data, len, c->arg) ? len : 0;
    if (c->body.len + len > (64u << 20)) return 0;     /* a runaway peer */
    buf_add(&c->body, data, len);
    return len;
}

berth_call *http_call(berth_instance *owner, const struct berth_http_opts *o,
                      berth_http_done cb, void *arg)
{
    if (!up || !o || !o->url || !cb || o->size < offsetof(struct berth_http_opts, on_data))
        return NULL;
    berth_call *c = xcalloc(1, sizeof *c);
    c->easy = curl_easy_init();
    c->cb = cb;
    c->arg = arg;
    c->url = xstrdup(o->url);
    if (o->size >= offsetof(struct berth_http_opts, tls_ca)) c->on_data = o->on_data;
    if (o->size >= sizeof *o) {
        if (o->tls_ca) curl_easy_setopt(c->easy, CURLOPT_CAINFO, o->tls_ca);
        if (o->tls_cert) curl_easy_setopt(c->easy, CURLOPT_SSLCERT, o->tls_cert);
        if (o->tls_key) curl_easy_setopt(c->easy, CURLOPT_SSLKEY, o->tls_key);
    }
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->err);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000));
    if (o->timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->unix_socket) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
    const char *method = o->method ? o->method : "GET";
    if (o->body) {
        c->req_body = xmalloc(o->body_len + 1);
        memcpy(c->req_body, o->body, o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req_body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    }
    if (strcmp(method, "GET") || o->body) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    c->headers = curl_slist_append(NULL, "Expect:");
    for (const struct berth_header *h = o->headers; h && h->name; h++) {
        char *line = xasprintf("%s: %s", h->name, h->value);
        c->headers = curl_slist_append(c->headers, line);
        free(line);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    if (owner) {
        res_attach(owner, &c->res, RES_CALL);
        inst_pending(owner, 1);
    }
    curl_multi_add_handle(multi, e);
    return c;
}

void http_call_cancel(berth_call *c)
{
    if (!c) return;
    curl_multi_remove_handle(multi, c->easy);
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    if (c->res.owner) {
        res_detach(&c->res);
        inst_pending(c->res.owner, -1);
    }
    buf_free(&c->body);
    free(c->url);
    free(c->req_body);
    free(c);
}

int http_client_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return BERTH_EIO;
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    uv_timer_init(C.loop, &timer);
    up = true;
    return 0;
}

void http_client_shutdown(void)
{
    if (!up) return;
    up = false;
    curl_multi_cleanup(multi);  /* closes the sockets; sock_cb is not called any more */
    list_each(it, &socks) {
        struct sock_ctx *s = container_of(it, struct sock_ctx, link);
        if (!uv_is_closing((uv_handle_t *)&s->poll)) uv_close((uv_handle_t *)&s->poll, poll_closed);
    }
    uv_close((uv_handle_t *)&timer, NULL);
    curl_global_cleanup();
}
