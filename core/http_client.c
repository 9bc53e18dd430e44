/* Outgoing HTTP. Plain http:// goes to berth's own keep-alive client (http_conn.c); https,
 * TLS options and whatever that one does not take go through libcurl's multi-socket API
 * driven by libuv: curl tells us which sockets to watch and when to wake it; the loop never
 * blocks on the network.
 *
 * For proxies: the response head is handed over before the first body byte (on_head), a
 * streaming body can be paused both ways (curl_easy_pause; curl buffers at most what it had
 * already read), and a request body is either the caller's memory, sent without a copy, or
 * pulled through read_body as the connection takes it. */
#include "http_call.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct ccall {
    struct berth_call base;     /* first: res, linked into its instance when a plugin made it */
    CURL *easy;
    struct curl_slist *headers;
    struct buf body;
    char *url, *content_type;
    berth_http_done cb;
    void *arg;
    bool (*on_data)(const char *data, size_t len, void *arg);
    bool (*on_head)(int status, const struct berth_header *h, size_t n, void *arg);
    int64_t (*read_body)(char *buf, size_t cap, void *arg);
    struct berth_header *head; /* the response head being collected for on_head */
    size_t nhead;
    bool head_sent, paused;
    char err[CURL_ERROR_SIZE];
};

/* does the caller's struct (of o->size bytes) reach field f? */
#define OPT_HAS(o, f) \
    ((o)->size >= offsetof(struct berth_http_opts, f) + sizeof((o)->f))

/* A socket's watch. curl drops it (CURL_POLL_REMOVE) whenever a transfer ends and its
 * connection goes back to the cache, and asks for it again when the next transfer takes that
 * connection: a uv_poll closed and made anew each time cost an ioctl and two or three
 * epoll_ctl per call, and even a uv_poll_start with unchanged events registers again. So a
 * watch is kept per fd (by_fd) and only changed when its events change. A connection's
 * socket, which curl opened through open_cb and closes through close_cb, even stays watched
 * for reading while idle in the cache: close_cb ends the watch before the fd can be reused,
 * and an event while idle (the peer closing) just stops it. Other sockets curl watches (its
 * resolver's socketpair) are closed without close_cb, so their watch stops on REMOVE. */
struct sock_ctx {
    struct list link;
    uv_poll_t poll;
    curl_socket_t fd;
    int events;                 /* what the poll is started with, 0 when stopped */
    bool watched;               /* curl wants it (between its ADD and its REMOVE) */
};

static struct list socks = {&socks, &socks};
static struct sock_ctx **by_fd;    /* curl's sockets' watches, by fd */
static bool *conn_fd;              /* opened by open_cb: close_cb will be told of its close */
static size_t nfd;

static CURLM *multi;
static uv_timer_t timer;
static bool up;

static void head_clear(struct ccall *c)
{
    for (size_t i = 0; i < c->nhead; i++) {
        free((char *)c->head[i].name);
        free((char *)c->head[i].value);
    }
    free(c->head);
    c->head = NULL;
    c->nhead = 0;
}

/* Easy handles of ended calls, reset, for the next calls: a new handle per call was a
 * malloc-heavy init and cleanup each time. A reset keeps nothing of the call's options. */
#define EASY_POOL 64
static CURL *easy_pool[EASY_POOL];
static size_t easy_pooled;

static CURL *easy_get(void)
{
    return easy_pooled ? easy_pool[--easy_pooled] : curl_easy_init();
}

static void easy_put(CURL *e)
{
    if (!e) return;
    if (easy_pooled == EASY_POOL || !up) {
        curl_easy_cleanup(e);
        return;
    }
    curl_easy_reset(e);
    easy_pool[easy_pooled++] = e;
}

static void call_free(struct ccall *c)
{
    easy_put(c->easy);
    curl_slist_free_all(c->headers);
    head_clear(c);
    buf_free(&c->body);
    free(c->url);
    free(c);
}

static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct ccall *c;
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
        if (c->base.res.owner) {
            res_detach(&c->base.res);
            inst_pending(c->base.res.owner, -1);
        }
        c->base.ending = true;
        cb(&r, arg);
        call_free(c);
    }
}

static void sock_set(struct sock_ctx *s, int events);

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct sock_ctx *s = p->data;
    if (status < 0) s->events = 0;     /* libuv stopped the poll */
    if (!s->watched) {                  /* an idle connection: curl checks it when reused */
        sock_set(s, 0);
        return;
    }
    /* libuv reports POLLERR as a status (and stops the poll): the socket may still hold
     * bytes that say why (a peer's TLS alert before its reset), so curl is also told it may
     * read and write, and finds the reason instead of a bare "select/poll returned error" */
    int flags = status < 0 ? CURL_CSELECT_ERR | CURL_CSELECT_IN | CURL_CSELECT_OUT
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

static void sock_set(struct sock_ctx *s, int events)
{
    if (events == s->events) return;
    if (events) uv_poll_start(&s->poll, events, on_poll);
    else uv_poll_stop(&s->poll);
    s->events = events;
}

static void fd_grow(curl_socket_t fd)
{
    if ((size_t)fd < nfd) return;
    size_t n = nfd ? nfd : 64;
    while (n <= (size_t)fd) n *= 2;
    by_fd = xrealloc(by_fd, n * sizeof *by_fd);
    conn_fd = xrealloc(conn_fd, n * sizeof *conn_fd);
    memset(by_fd + nfd, 0, (n - nfd) * sizeof *by_fd);
    memset(conn_fd + nfd, 0, (n - nfd) * sizeof *conn_fd);
    nfd = n;
}

/* the watch goes (its memory when libuv is done with the handle) before the fd can be reused */
static void sock_forget(curl_socket_t fd)
{
    if ((size_t)fd >= nfd) return;
    conn_fd[fd] = false;
    struct sock_ctx *s = by_fd[fd];
    if (!s) return;
    by_fd[fd] = NULL;
    uv_close((uv_handle_t *)&s->poll, poll_closed);
}

static struct sock_ctx *sock_new(curl_socket_t fd)
{
    struct sock_ctx *s = xcalloc(1, sizeof *s);
    s->fd = fd;
    if (uv_poll_init_socket(C.loop, &s->poll, fd) < 0) {
        free(s);
        return NULL;
    }
    s->poll.data = s;
    list_add_tail(&socks, &s->link);
    fd_grow(fd);
    by_fd[fd] = s;
    return s;
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)e; (void)userp; (void)sockp;
    if (fd < 0) return -1;
    struct sock_ctx *s = (size_t)fd < nfd ? by_fd[fd] : NULL;
    if (what == CURL_POLL_REMOVE) {
        if (!s) return 0;
        s->watched = false;
        if (!conn_fd[fd]) sock_forget(fd);     /* it may be closed without close_cb */
        else if (s->events != UV_READABLE) sock_set(s, 0);
        return 0;
    }
    if (!s && !(s = sock_new(fd))) return -1;
    s->watched = true;
    sock_set(s, (what & CURL_POLL_IN ? UV_READABLE : 0) | (what & CURL_POLL_OUT ? UV_WRITABLE : 0));
    return 0;
}

static curl_socket_t open_cb(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)arg; (void)purpose;
    /* close-on-exec: a spawned tenant must not inherit an upstream connection */
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd >= 0) {
        sock_forget(fd);    /* nothing is left of an earlier socket of that number */
        fd_grow(fd);
        conn_fd[fd] = true;
    }
    return fd;
}

static int close_cb(void *arg, curl_socket_t fd)
{
    (void)arg;
    sock_forget(fd);
    return close(fd);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    (void)m; (void)userp;
    if (ms < 0) uv_timer_stop(&timer);
    else uv_timer_start(&timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

/* One header line; the blank line that ends a final (non-1xx) head hands it to on_head. */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct ccall *c = arg;
    size_t len = size * n, l = len;
    if (!c->on_head || c->head_sent) return len;
    while (l && (data[l - 1] == '\n' || data[l - 1] == '\r')) l--;
    if (!l) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 100 && status < 200) {
            head_clear(c);          /* 100 Continue and friends: the real head follows */
            return len;
        }
        c->head_sent = true;
        static const struct berth_header none[] = {{NULL, NULL}};
        bool go = c->on_head((int)status, c->head ? c->head : none, c->nhead, c->arg);
        head_clear(c);
        return go ? len : 0;
    }
    if (!strncmp(data, "HTTP/", 5)) {
        head_clear(c);
        return len;
    }
    const char *colon = memchr(data, ':', l);
    if (!colon || c->nhead >= 200) return len;  /* folded lines and floods are not kept */
    const char *v = colon + 1;
    while (v < data + l && (*v == ' ' || *v == '\t')) v++;
    c->head = xrealloc(c->head, (c->nhead + 2) * sizeof *c->head);
    c->head[c->nhead++] = (struct berth_header){xstrndup(data, (size_t)(colon - data)),
                                                xstrndup(v, (size_t)(data + l - v))};
    c->head[c->nhead] = (struct berth_header){NULL, NULL};  /* respond_start() takes it as is */
    return len;
}

static size_t on_read_body(char *buf, size_t size, size_t n, void *arg)
{
    struct ccall *c = arg;
    int64_t got = c->read_body(buf, size * n, c->arg);
    if (got == BERTH_EAGAIN) {
        c->paused = true;       /* until http_resume() */
        return CURL_READFUNC_PAUSE;
    }
    if (got < 0 || (size_t)got > size * n) return CURL_READFUNC_ABORT;
    return (size_t)got;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct ccall *c = arg;
    size_t len = size * n;
    if (c->on_data) return c->on_data(data, len, c->arg) ? len : 0;
    if (c->body.len + len > (64u << 20)) return 0;     /* a runaway peer */
    buf_add(&c->body, data, len);
    return len;
}

/* The request body: pulled through read_body, or o->body itself (POSTFIELDS, not
 * COPYPOSTFIELDS: a relayed body is not copied; the caller keeps it alive until cb). */
static bool set_body(struct ccall *c, const struct berth_http_opts *o)
{
    CURL *e = c->easy;
    if (c->read_body) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read_body);
        curl_easy_setopt(e, CURLOPT_READDATA, c);
        curl_off_t n = o->body_len == SIZE_MAX ? -1 : (curl_off_t)o->body_len; /* -1: chunked */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, n);
        return true;
    }
    if (!o->body) return false;
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body);
    return true;
}

/* curl decodes gzip and friends for a buffered or streamed body. Not for a proxy: a caller
 * that sees the head (on_head) or asks for an encoding itself gets the bytes its headers
 * describe, or a relayed Content-Encoding would lie about the body. */
static void set_decoding(struct ccall *c, const struct berth_http_opts *o)
{
    bool raw = c->on_head != NULL;
    for (const struct berth_header *h = o->headers; h && h->name; h++)
        if (!strcasecmp(h->name, "accept-encoding")) raw = true;
    if (raw) curl_easy_setopt(c->easy, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    else curl_easy_setopt(c->easy, CURLOPT_ACCEPT_ENCODING, "");
}

berth_call *http_call(berth_instance *owner, const struct berth_http_opts *o,
                      berth_http_done cb, void *arg)
{
    if (!up || !o || !o->url || !cb || o->size < offsetof(struct berth_http_opts, on_data))
        return NULL;
    if (hconn_wants(o)) return hconn_call(owner, o, cb, arg);
    struct ccall *c = xcalloc(1, sizeof *c);
    c->easy = easy_get();
    c->cb = cb;
    c->arg = arg;
    c->url = xstrdup(o->url);
    if (OPT_HAS(o, on_data)) c->on_data = o->on_data;
    /* curl's receive buffer, 16 KiB by default, is much of what a held stream costs */
    if (c->on_data && OPT_HAS(o, recv_buffer) && o->recv_buffer)
        curl_easy_setopt(c->easy, CURLOPT_BUFFERSIZE,
                         (long)(o->recv_buffer < 1024       ? 1024
                                : o->recv_buffer > 524288 ? 524288
                                                          : o->recv_buffer));
    if (OPT_HAS(o, on_head)) c->on_head = o->on_head;
    if (OPT_HAS(o, read_body)) c->read_body = o->read_body;
    if (OPT_HAS(o, tls_key)) {
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
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_cb);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000));
    if (o->timeout_ms > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    if (o->unix_socket) curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
    const char *method = o->method ? o->method : "GET";
    bool has_body = set_body(c, o);
    if (strcmp(method, "GET") || has_body) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    c->headers = curl_slist_append(NULL, "Expect:");
    for (const struct berth_header *h = o->headers; h && h->name; h++) {
        /* "Name:" would make curl drop the header; "Name;" sends it empty (Caddy's admin
         * API on a unix socket accepts only an empty Host) */
        char *line = h->value && *h->value ? xasprintf("%s: %s", h->name, h->value)
                               : xasprintf("%s;", h->name);
        c->headers = curl_slist_append(c->headers, line);
        free(line);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    set_decoding(c, o);
    if (owner) {
        res_attach(owner, &c->base.res, RES_CALL);
        inst_pending(owner, 1);
    }
    curl_multi_add_handle(multi, e);
    return &c->base;
}

void http_call_cancel(berth_call *bc)
{
    if (!bc || bc->ending) return;  /* inside its own cb: freed when cb returns */
    if (bc->native) {
        hconn_cancel(bc);
        return;
    }
    struct ccall *c = (struct ccall *)bc;
    curl_multi_remove_handle(multi, c->easy);
    if (c->base.res.owner) {
        res_detach(&c->base.res);
        inst_pending(c->base.res.owner, -1);
    }
    call_free(c);
}

/* Paused, curl neither reads the response nor pulls the request body; it keeps at most what
 * it already read. Resuming may deliver that at once, inside this call. */
int http_call_pause(berth_call *bc)
{
    if (!bc) return BERTH_EINVAL;
    if (bc->native) return hconn_pause(bc);
    struct ccall *c = (struct ccall *)bc;
    if (curl_easy_pause(c->easy, CURLPAUSE_ALL) != CURLE_OK) return BERTH_EIO;
    c->paused = true;
    return 0;
}

int http_call_resume(berth_call *bc)
{
    if (!bc) return BERTH_EINVAL;
    if (bc->native) return hconn_resume(bc);
    struct ccall *c = (struct ccall *)bc;
    if (!c->paused) return 0;
    c->paused = false;
    /* curl arms its timer to go on at once (timer_cb), which wakes the transfer */
    return curl_easy_pause(c->easy, CURLPAUSE_CONT) == CURLE_OK ? 0 : BERTH_EIO;
}

int http_client_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return BERTH_EIO;
    multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    /* curl's default cache (4 per transfer in progress) shrinks as a burst ends and closes
     * the connections a proxy is about to need again */
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 256L);
    uv_timer_init(C.loop, &timer);
    hconn_init();
    up = true;
    return 0;
}

void http_client_shutdown(void)
{
    if (!up) return;
    up = false;
    hconn_shutdown();
    while (easy_pooled) curl_easy_cleanup(easy_pool[--easy_pooled]);
    curl_multi_cleanup(multi);  /* closes the sockets; sock_cb is not called any more */
    list_each(it, &socks) {
        struct sock_ctx *s = container_of(it, struct sock_ctx, link);
        if (!uv_is_closing((uv_handle_t *)&s->poll)) uv_close((uv_handle_t *)&s->poll, poll_closed);
    }
    free(by_fd);
    free(conn_fd);
    by_fd = NULL;
    conn_fd = NULL;
    nfd = 0;
    uv_close((uv_handle_t *)&timer, NULL);
    curl_global_cleanup();
}
