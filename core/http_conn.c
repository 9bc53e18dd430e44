/* berth's own HTTP/1.1 client for plain http:// (TCP or a unix socket), on libuv and
 * http_parser: what libcurl spent per call on a reused connection (URL parsing, header lists,
 * its connection cache, two poll() checks, timer storms) was a third of a proxied call.
 *
 * A pool per host:port (or socket path) keeps idle keep-alive connections, most recently
 * used first, each still read so a peer's close is seen at once; at most POOL_IDLE per pool
 * and ALL_IDLE in all, closed after IDLE_MS unused. A pooled connection that turns out dead
 * (EOF or reset before any byte of the answer) is retried once on a fresh one, and only then:
 * never once answer bytes came, nor when read_body was already pulled.
 *
 * Ownership: a call owns its request head, its answer's head and buffered body, and bytes
 * read while paused; it borrows o->body until cb. A connection belongs to its pool while
 * idle and to its call while busy; memory goes when libuv has closed the handle. One shared
 * read buffer serves every connection: a read is parsed and handed on before the next. */
#include "http_call.h"

#include <http_parser.h>
#include <stdlib.h>
#include <sys/un.h>
#include <string.h>
#include <strings.h>

#define POOL_IDLE 128           /* idle connections kept per pool */
#define ALL_IDLE 512            /* and in all */
#define IDLE_MS 60000
#define HEAD_MAX (64 * 1024)    /* an answer's head, names and values */
#define BODY_MAX (64u << 20)    /* a buffered answer: a runaway peer */
#define DNS_TTL_MS 60000
#define PULL_MAX 16384          /* read_body's piece */
#define NADDR 4

struct pool {
    struct list link;
    char *name;                 /* the URL's host; with port (or path) the pool's key */
    char *host, *path;          /* host to resolve (NULL: a literal or unix); socket path */
    int port;
    struct list idle;           /* struct conn, most recently used first */
    size_t nidle, refs;         /* refs: calls and connections that point here */
    struct sockaddr_storage addr[NADDR];
    int naddr;
    int64_t addr_at;            /* when resolved (a literal: never stale) */
};

struct conn {
    union { uv_handle_t h; uv_stream_t s; uv_tcp_t tcp; uv_pipe_t pipe; } u;
    struct list link;           /* in pool->idle while idle */
    struct pool *pool;
    struct hcall *call;         /* the call it serves; NULL while idle or closing */
    uv_connect_t creq;
    uv_write_t wreq;
    http_parser parser;
    int64_t idle_at;
    bool used;                  /* an answer came over it: it may have gone stale idle */
    bool idle, reading;
};

struct resolve {                /* a name lookup; outlives a canceled call */
    uv_getaddrinfo_t req;
    struct hcall *call;
};

enum { ST_START, ST_CONNECT, ST_SEND, ST_RECV };

struct hcall {
    struct berth_call base;     /* first */
    uv_timer_t timer;           /* deadlines, and failures reported on a later turn */
    struct list kick;           /* in `kicks` while a resume waits for the next turn */
    struct pool *pool;
    struct conn *conn;
    struct resolve *rq;
    berth_http_done cb;
    void *arg;
    bool (*on_data)(const char *data, size_t len, void *arg);
    bool (*on_head)(int status, const struct berth_header *h, size_t n, void *arg);
    int64_t (*read_body)(char *buf, size_t cap, void *arg);
    const char *body;           /* borrowed */
    size_t body_len, sent;      /* read_body: SIZE_MAX when chunked; bytes pulled */
    struct buf req;             /* the request head, kept for a retry */
    struct buf hdr;             /* the answer's head: name\0value\0... */
    size_t (*hoff)[2];          /* offsets of each name and value in hdr */
    size_t nh, hcap;
    struct buf body_in;         /* a buffered answer */
    char *content_type;
    char *pend;                 /* read but not parsed, while paused */
    size_t npend;
    char *piece;                /* read_body's piece with its chunk framing */
    size_t rsize;
    int64_t connect_at, deadline;   /* uv_now() ms; 0: none */
    int64_t connect_ms, timeout_ms;
    int state, naddr_tried, err, status;
    bool head_req, no_reuse, chunked, pulled, body_done, writing;
    bool got_byte, head_done, complete, retried;
    bool paused, send_paused, in_cb, in_parse, canceled, starting;
    char msg[192];
};

static http_parser_settings settings;
static struct list pools = {&pools, &pools};
static struct list kicks = {&kicks, &kicks};
static uv_timer_t kick_timer, sweep_timer;
static size_t all_idle;
static bool up, disabled;
static char rbuf[524288];

static void conn_read_start(struct conn *k);
static void connect_next(struct hcall *c);
static void send_request(struct hcall *c);
static void pump(struct hcall *c);

static int64_t now_ms(void) { return (int64_t)uv_now(C.loop); }

static void on_kick(uv_timer_t *t);

/* the call goes on at the next turn (on_kick) */
static void kick(struct hcall *c)
{
    list_del(&c->kick);
    list_add_tail(&kicks, &c->kick);
    uv_timer_start(&kick_timer, on_kick, 0, 0);
}

/* ---- pools ---- */

static void pool_unref(struct pool *p)
{
    if (--p->refs || p->nidle) return;
    list_del(&p->link);
    free(p->name);
    free(p->host);
    free(p->path);
    free(p);
}

static bool addr_literal(const char *host, int port, struct sockaddr_storage *ss)
{
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ||
           uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0;
}

static struct pool *pool_get(const char *host, int port, const char *path)
{
    list_each(it, &pools) {
        struct pool *p = container_of(it, struct pool, link);
        if (path ? p->path && !strcmp(p->path, path)
                 : !p->path && p->port == port && !strcmp(p->name, host)) {
            p->refs++;
            return p;
        }
    }
    struct pool *p = xcalloc(1, sizeof *p);
    p->name = xstrdup(path ? "" : host);
    p->port = port;
    list_init(&p->idle);
    if (path) p->path = xstrdup(path);
    else if (addr_literal(host, port, &p->addr[0])) p->naddr = 1;
    else p->host = xstrdup(host);
    list_add_tail(&pools, &p->link);
    p->refs = 1;
    return p;
}

/* ---- connections ---- */

static void conn_closed(uv_handle_t *h)
{
    struct conn *k = h->data;
    pool_unref(k->pool);
    free(k);
}

static void conn_close(struct conn *k)
{
    if (k->idle) {
        list_del(&k->link);
        k->idle = false;
        k->pool->nidle--;
        all_idle--;
    }
    k->call = NULL;
    if (!uv_is_closing(&k->u.h)) uv_close(&k->u.h, conn_closed);
}

static void sweep(uv_timer_t *t)
{
    int64_t now = now_ms();
    list_each(it, &pools) {
        struct pool *p = container_of(it, struct pool, link);
        p->refs++;      /* the pool stays while its connections close */
        while (!list_empty(&p->idle)) {
            struct conn *k = container_of(p->idle.prev, struct conn, link);
            if (now - k->idle_at < IDLE_MS) break;
            conn_close(k);
        }
        pool_unref(p);
    }
    if (!all_idle) uv_timer_stop(t);
}

static void pool_put(struct conn *k)
{
    struct pool *p = k->pool;
    k->call = NULL;
    if (p->nidle >= POOL_IDLE || all_idle >= ALL_IDLE || !up) {
        conn_close(k);
        return;
    }
    k->used = true;
    k->idle = true;
    k->idle_at = now_ms();
    list_add_tail(p->idle.next, &k->link);   /* at the front */
    p->nidle++;
    if (!all_idle++ && !uv_is_active((uv_handle_t *)&sweep_timer))
        uv_timer_start(&sweep_timer, sweep, IDLE_MS / 4, IDLE_MS / 4);
    conn_read_start(k);     /* a peer's close is seen while idle */
}

static struct conn *pool_take(struct pool *p)
{
    if (list_empty(&p->idle)) return NULL;
    struct conn *k = container_of(p->idle.next, struct conn, link);
    list_del(&k->link);
    k->idle = false;
    p->nidle--;
    all_idle--;
    return k;
}

/* ---- ending a call ---- */

static void call_mem_free(uv_handle_t *h)
{
    free(h->data);
}

static void call_free(struct hcall *c)
{
    list_del(&c->kick);
    if (c->rq) c->rq->call = NULL;
    if (c->conn) conn_close(c->conn);
    if (c->pool) pool_unref(c->pool);
    buf_free(&c->req);
    buf_free(&c->hdr);
    buf_free(&c->body_in);
    free(c->hoff);
    free(c->content_type);
    free(c->pend);
    free(c->piece);
    uv_close((uv_handle_t *)&c->timer, call_mem_free);
}

static void call_detach(struct hcall *c)
{
    berth_instance *owner = c->base.res.owner;
    if (owner) {
        res_detach(&c->base.res);
        c->base.res.owner = NULL;
        inst_pending(owner, -1);
    }
}

/* The one way a call ends with cb: the connection goes back to its pool first (when the
 * answer ended cleanly on a keep-alive connection), so cb may start the next call on it. */
static void finish(struct hcall *c, bool reuse)
{
    struct conn *k = c->conn;
    c->conn = NULL;
    if (k) {
        if (reuse && !c->err) pool_put(k);
        else conn_close(k);
    }
    struct berth_http_result r = {
        .status = c->err ? 0 : c->status,
        .error = c->err,
        .message = c->err ? c->msg : "",
        .body = c->body_in.p ? c->body_in.p : "",
        .body_len = c->body_in.len,
        .content_type = c->content_type,
    };
    call_detach(c);
    c->base.ending = true;
    c->cb(&r, c->arg);
    call_free(c);
}

static void on_timer(uv_timer_t *t);
static void arm_timer(struct hcall *c);

/* Ends the call with an error; one found before http_request returned is reported on a
 * later turn (the timer, which runs before any read of that turn). */
static void fail(struct hcall *c, int err, const char *fmt, ...) BERTH_PRINTF(3, 4);
static void fail(struct hcall *c, int err, const char *fmt, ...)
{
    if (!c->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->msg, sizeof c->msg, fmt, ap);
        va_end(ap);
        c->err = err;
    }
    if (c->starting) uv_timer_start(&c->timer, on_timer, 0, 0);
    else finish(c, false);
}

static void on_timer(uv_timer_t *t)
{
    struct hcall *c = t->data;
    int64_t now = now_ms();
    if (c->err) fail(c, c->err, "%s", c->msg);
    else if (c->deadline && now >= c->deadline)
        fail(c, BERTH_ETIMEDOUT, "timed out after %" PRId64 " ms (%s)", c->timeout_ms,
             c->got_byte ? "the answer was incomplete" : "no answer");
    else if (c->connect_at && now >= c->connect_at)
        fail(c, BERTH_ETIMEDOUT, "connecting timed out after %" PRId64 " ms", c->connect_ms);
    else arm_timer(c);
}

/* the nearest deadline: the connect deadline counts until connected */
static void arm_timer(struct hcall *c)
{
    int64_t at = c->deadline;
    if (c->connect_at && (!at || c->connect_at < at)) at = c->connect_at;
    if (!at) {
        uv_timer_stop(&c->timer);
        return;
    }
    int64_t now = now_ms();
    uv_timer_start(&c->timer, on_timer, at > now ? (uint64_t)(at - now) : 0, 0);
}

/* ---- the answer ---- */

static struct hcall *call_of(http_parser *p)
{
    return ((struct conn *)p->data)->call;
}

static int head_bytes(struct hcall *c, const char *at, size_t n)
{
    if (c->hdr.len + n > HEAD_MAX) {
        c->err = BERTH_EIO;
        snprintf(c->msg, sizeof c->msg, "the answer's head is over %d KiB", HEAD_MAX / 1024);
        return -1;
    }
    buf_add(&c->hdr, at, n);
    return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
    struct hcall *c = call_of(p);
    if (c->head_done) return 0;             /* trailers are not kept */
    bool fresh = !c->nh || c->hoff[c->nh - 1][1] != SIZE_MAX;
    if (fresh) {
        if (c->nh && head_bytes(c, "", 1)) return -1;   /* ends the value before */
        if (c->nh + 1 >= c->hcap) {
            c->hcap = c->hcap ? c->hcap * 2 : 16;
            c->hoff = xrealloc(c->hoff, c->hcap * sizeof *c->hoff);
        }
        c->hoff[c->nh][0] = c->hdr.len;
        c->hoff[c->nh++][1] = SIZE_MAX;     /* the value has not begun */
    }
    return head_bytes(c, at, n);
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
    struct hcall *c = call_of(p);
    if (c->head_done || !c->nh) return 0;
    if (c->hoff[c->nh - 1][1] == SIZE_MAX) {
        if (head_bytes(c, "", 1)) return -1;            /* ends the name */
        c->hoff[c->nh - 1][1] = c->hdr.len;
    }
    return head_bytes(c, at, n);
}

static void head_reset(struct hcall *c)
{
    c->hdr.len = 0;
    c->nh = 0;
}

/* the head, as on_head takes it; NULL names a header whose value never began */
static struct berth_header *head_array(struct hcall *c)
{
    if (c->nh && c->hoff[c->nh - 1][1] == SIZE_MAX) {
        buf_add(&c->hdr, "", 1);
        c->hoff[c->nh - 1][1] = c->hdr.len;
    }
    buf_add(&c->hdr, "", 1);
    struct berth_header *h = xmalloc((c->nh + 1) * sizeof *h);
    for (size_t i = 0; i < c->nh; i++) {
        h[i].name = c->hdr.p + c->hoff[i][0];
        h[i].value = c->hdr.p + c->hoff[i][1];
        if (!c->content_type && !strcasecmp(h[i].name, "content-type"))
            c->content_type = xstrdup(h[i].value);
    }
    h[c->nh] = (struct berth_header){NULL, NULL};
    return h;
}

static int on_head_done(http_parser *p)
{
    struct hcall *c = call_of(p);
    if (p->status_code < 100) {     /* status 0 would read as a transport failure */
        c->err = BERTH_EIO;
        snprintf(c->msg, sizeof c->msg, "malformed answer: status %u", p->status_code);
        return -1;
    }
    if (p->status_code < 200 && p->status_code != 101) {
        head_reset(c);              /* 100 Continue and friends: the real head follows */
        return 0;
    }
    c->head_done = true;
    c->status = p->status_code;
    struct berth_header *h = head_array(c);
    bool go = true;
    if (c->on_head) {
        c->in_cb = true;
        go = c->on_head(c->status, h, c->nh, c->arg);
        c->in_cb = false;
    }
    free(h);
    buf_free(&c->hdr);              /* what a held stream need not keep */
    free(c->hoff);
    c->hoff = NULL;
    c->hcap = c->nh = 0;
    if (c->canceled) return -1;
    if (!go) {
        c->err = BERTH_ECANCELED;
        snprintf(c->msg, sizeof c->msg, "aborted by the caller's on_head");
        return -1;
    }
    if (c->paused) http_parser_pause(p, 1);
    if (c->status == 101) c->no_reuse = true;  /* the connection speaks another protocol */
    /* 1: no body follows, whatever Content-Length says (a 304's is the entity's) */
    return c->head_req || c->status == 204 || c->status == 304 ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct hcall *c = call_of(p);
    if (!c->on_data) {
        if (c->body_in.len + n > BODY_MAX) {
            c->err = BERTH_EIO;
            snprintf(c->msg, sizeof c->msg, "the answer's body is over %u MiB", BODY_MAX >> 20);
            return -1;
        }
        buf_add(&c->body_in, at, n);
        return 0;
    }
    c->in_cb = true;
    bool go = c->on_data(at, n, c->arg);
    c->in_cb = false;
    if (c->canceled) return -1;
    if (!go) {
        c->err = BERTH_ECANCELED;
        snprintf(c->msg, sizeof c->msg, "aborted by the caller's on_data");
        return -1;
    }
    if (c->paused) http_parser_pause(p, 1);
    return 0;
}

static int on_complete(http_parser *p)
{
    struct hcall *c = call_of(p);
    if (!c->head_done) return 0;    /* the end of a 1xx */
    c->complete = true;
    http_parser_pause(p, 1);        /* nothing after it is this call's */
    return 0;
}

static void stop_reading(struct conn *k)
{
    if (k->reading) uv_read_stop(&k->u.s);
    k->reading = false;
}

/* Feeds bytes of the answer to the parser; ends the call when the answer ends or is bad,
 * or keeps the rest when the caller paused. True when the call reads on. */
static bool feed(struct conn *k, const char *data, size_t len)
{
    struct hcall *c = k->call;
    c->in_parse = true;
    size_t n = http_parser_execute(&k->parser, &settings, data, len);
    c->in_parse = false;
    enum http_errno e = HTTP_PARSER_ERRNO(&k->parser);
    if (c->canceled) {
        call_free(c);
    } else if (c->complete) {
        /* bytes after the answer, a request body not all sent, or the peer closing: the
         * connection is not reused */
        bool reuse = n == len && http_should_keep_alive(&k->parser) && !c->no_reuse &&
                     (c->body_done || (!c->body && !c->read_body)) && !c->writing;
        finish(c, reuse);
    } else if (c->err) {
        fail(c, c->err, "%s", c->msg);
    } else if (e == HPE_PAUSED) {
        char *rest = n < len ? xmalloc(len - n) : NULL;
        if (rest) memcpy(rest, data + n, len - n);
        free(c->pend);
        c->pend = rest;
        c->npend = len - n;
        stop_reading(k);
    } else if (e != HPE_OK) {
        fail(c, BERTH_EIO, "malformed answer: %s", http_errno_description(e));
    } else {
        return true;
    }
    return false;
}

static bool replayable(struct hcall *c)
{
    return !c->got_byte && !c->pulled && !c->retried && c->conn && c->conn->used;
}

static void retry(struct hcall *c)
{
    conn_close(c->conn);
    c->conn = NULL;
    c->retried = true;
    c->writing = false;
    connect_next(c);
}

/* the connection ended (EOF) or broke while this call had it */
static void conn_lost(struct hcall *c, ssize_t why)
{
    struct conn *k = c->conn;
    if (why == UV_EOF && c->got_byte) {
        k->parser.data = k;
        c->in_parse = true;
        http_parser_execute(&k->parser, &settings, NULL, 0);   /* a close-delimited end */
        c->in_parse = false;
        if (c->canceled) {
            call_free(c);
            return;
        }
        if (c->complete) {
            finish(c, false);
            return;
        }
        if (c->err) {
            fail(c, c->err, "%s", c->msg);
            return;
        }
    }
    if (replayable(c)) {
        retry(c);
        return;
    }
    if (why == UV_EOF)
        fail(c, BERTH_EIO, c->got_byte ? "the connection closed before the answer ended"
                                       : "the server closed the connection without answering");
    else
        fail(c, BERTH_EIO, "%s: %s", c->got_byte ? "the answer was cut short" : "no answer",
             uv_strerror((int)why));
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    struct conn *k = h->data;
    b->base = rbuf;
    b->len = k->call ? k->call->rsize : 1024;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *k = s->data;
    struct hcall *c = k->call;
    if (!nread) return;
    if (!c) {               /* idle: the peer closed it, or sent what nobody asked for */
        conn_close(k);
        return;
    }
    if (nread < 0) {
        conn_lost(c, nread);
        return;
    }
    if (c->state != ST_RECV && c->state != ST_SEND) return;
    c->got_byte = true;
    feed(k, b->base, (size_t)nread);
}

static void conn_read_start(struct conn *k)
{
    if (k->reading) return;
    if (k->call && k->call->paused) return;
    if (uv_read_start(&k->u.s, on_alloc, on_read) == 0) k->reading = true;
}

/* ---- the request ---- */

static void on_written(uv_write_t *w, int status)
{
    struct conn *k = w->data;
    struct hcall *c = k->call;
    if (!c) return;         /* canceled: the connection is closing */
    c->writing = false;
    if (status < 0) {
        if (c->got_byte) {      /* the answer came early (a refusal): it decides */
            c->body_done = true;
            c->no_reuse = true;
        } else if (replayable(c)) {
            retry(c);
        } else {
            fail(c, BERTH_EIO, "sending the request: %s", uv_strerror(status));
        }
        return;
    }
    if (c->read_body && !c->body_done) pump(c);
}

/* writes what uv_try_write leaves with uv_write; false when the call has ended */
static bool write_bufs(struct hcall *c, uv_buf_t *b, unsigned n)
{
    struct conn *k = c->conn;
    int w = uv_try_write(&k->u.s, b, n);
    if (w == UV_EAGAIN || w == UV_ENOSYS) w = 0;
    if (w < 0 && c->got_byte) {     /* the answer came early (a refusal): it decides */
        c->body_done = c->no_reuse = true;
        return false;
    }
    if (w < 0) {
        if (replayable(c)) retry(c);
        else fail(c, BERTH_EIO, "sending the request: %s", uv_strerror(w));
        return false;
    }
    size_t skip = (size_t)w;
    while (n && skip >= b->len) {
        skip -= b->len;
        b++;
        n--;
    }
    if (!n) return true;
    b->base += skip;
    b->len -= skip;
    k->wreq.data = k;
    int rc = uv_write(&k->wreq, &k->u.s, b, n, on_written);
    if (rc < 0) {
        fail(c, BERTH_EIO, "sending the request: %s", uv_strerror(rc));
        return false;
    }
    c->writing = true;
    return true;
}

static void pull_failed(struct hcall *c, int64_t got, size_t cap)
{
    if (got > (int64_t)cap) fail(c, BERTH_EIO, "read_body returned more than it was given");
    else fail(c, BERTH_ECANCELED, "aborted by the caller's read_body (%" PRId64 ")", got);
}

/* Pulls the request body through read_body while the connection takes it at once. */
static void pump(struct hcall *c)
{
    if (!c->piece) c->piece = xmalloc(PULL_MAX + 32);
    while (!c->writing && !c->body_done && !c->paused && !c->send_paused) {
        size_t cap = PULL_MAX;
        if (!c->chunked && c->body_len - c->sent < cap) cap = c->body_len - c->sent;
        int64_t got = 0;
        if (cap) {
            c->in_cb = true;
            got = c->read_body(c->piece + 16, cap, c->arg);
            c->in_cb = false;
            if (c->canceled) {
                call_free(c);
                return;
            }
            if (got == BERTH_EAGAIN) {
                c->send_paused = true;     /* until http_resume() */
                return;
            }
            c->pulled = true;
            if (got < 0 || got > (int64_t)cap) {
                pull_failed(c, got, cap);
                return;
            }
        }
        c->sent += (size_t)got;
        uv_buf_t b[3];
        unsigned nb = 0;
        if (!c->chunked && !got && c->sent < c->body_len) {
            fail(c, BERTH_EIO, "read_body ended %zu bytes short of the body's length",
                 c->body_len - c->sent);
            return;
        }
        if (c->chunked) {
            char *h = c->piece;
            int hl = got ? snprintf(h, 16, "%" PRIx64 "\r\n", (uint64_t)got)
                         : snprintf(h, 16, "0\r\n\r\n");
            b[nb++] = uv_buf_init(h, (unsigned)hl);
        }
        if (got) b[nb++] = uv_buf_init(c->piece + 16, (unsigned)got);
        if (c->chunked && got) b[nb++] = uv_buf_init("\r\n", 2);
        c->body_done = c->chunked ? !got : c->sent == c->body_len;
        if (!write_bufs(c, b, nb)) return;
    }
}

static void send_request(struct hcall *c)
{
    struct conn *k = c->conn;
    c->state = ST_SEND;
    c->connect_at = 0;
    arm_timer(c);
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
    c->got_byte = c->head_done = c->complete = false;
    c->body_done = !c->read_body;
    head_reset(c);
    conn_read_start(k);
    uv_buf_t b[2] = {{.base = c->req.p, .len = c->req.len}};
    unsigned nb = 1;
    if (c->body && c->body_len) b[nb++] = (uv_buf_t){.base = (char *)c->body, .len = c->body_len};
    if (!write_bufs(c, b, nb)) return;
    c->state = ST_RECV;
    if (!c->read_body || c->writing) return;
    if (!c->starting) pump(c);
    else kick(c);               /* read_body is the caller's: not inside http_request */
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *k = req->data;
    struct hcall *c = k->call;
    if (!c) return;         /* canceled; the handle is closing */
    if (status < 0) {
        conn_close(k);
        c->conn = NULL;
        struct pool *p = c->pool;
        if (!p->path && ++c->naddr_tried < p->naddr) {
            connect_next(c);
            return;
        }
        if (p->host) p->addr_at = 0;        /* resolved again next time */
        if (p->path) fail(c, BERTH_ECONNREFUSED, "connecting to %s: %s", p->path,
                          uv_strerror(status));
        else fail(c, BERTH_ECONNREFUSED, "connecting to %s port %d: %s", p->name, p->port,
                  uv_strerror(status));
        return;
    }
    send_request(c);
}

static void conn_open(struct hcall *c)
{
    struct pool *p = c->pool;
    struct conn *k = xcalloc(1, sizeof *k);
    k->pool = p;
    p->refs++;
    k->call = c;
    c->conn = k;
    k->u.h.data = k;
    k->creq.data = k;
    int rc;
    if (p->path) {
        uv_pipe_init(C.loop, &k->u.pipe, 0);
        if (strlen(p->path) >= sizeof ((struct sockaddr_un *)0)->sun_path) {
            on_connected(&k->creq, UV_ENAMETOOLONG);    /* libuv would cut it short */
            return;
        }
        uv_pipe_connect(&k->creq, &k->u.pipe, p->path, on_connected);
        return;
    }
    uv_tcp_init(C.loop, &k->u.tcp);
    uv_tcp_nodelay(&k->u.tcp, 1);       /* applied when connect makes the socket (CLOEXEC) */
    rc = uv_tcp_connect(&k->creq, &k->u.tcp, (struct sockaddr *)&p->addr[c->naddr_tried],
                        on_connected);
    if (rc < 0) on_connected(&k->creq, rc);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct resolve *rq = container_of(req, struct resolve, req);
    struct hcall *c = rq->call;
    if (c) {
        c->rq = NULL;
        struct pool *p = c->pool;
        p->naddr = 0;
        for (struct addrinfo *a = res; a && p->naddr < NADDR; a = a->ai_next)
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                a->ai_addrlen <= sizeof p->addr[0]) {
                memcpy(&p->addr[p->naddr], a->ai_addr, a->ai_addrlen);
                ((struct sockaddr_in *)&p->addr[p->naddr++])->sin_port = htons((uint16_t)p->port);
            }
        p->addr_at = now_ms();
        if (status < 0 || !p->naddr) {
            p->addr_at = 0;
            fail(c, BERTH_EIO, "cannot resolve %s: %s", p->host,
                 status < 0 ? uv_strerror(status) : "no address");
        } else {
            connect_next(c);
        }
    }
    uv_freeaddrinfo(res);
    free(rq);
}

/* a fresh connection: a pooled one, when not retrying; else resolve (or the cache) and dial */
static void connect_next(struct hcall *c)
{
    struct pool *p = c->pool;
    if (!c->retried && !c->conn && (c->conn = pool_take(p))) {
        c->conn->call = c;
        send_request(c);
        return;
    }
    if (c->state != ST_CONNECT) {       /* the connect deadline counts the lookup too */
        c->state = ST_CONNECT;
        c->naddr_tried = 0;
        c->connect_at = now_ms() + c->connect_ms;
        arm_timer(c);
    }
    if (p->path || p->naddr) {
        if (!p->host || now_ms() - p->addr_at < DNS_TTL_MS || c->naddr_tried) {
            conn_open(c);
            return;
        }
    }
    struct resolve *rq = xcalloc(1, sizeof *rq);
    rq->call = c;
    c->rq = rq;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(C.loop, &rq->req, on_resolved, p->host, NULL, &hints);
    if (rc < 0) {
        c->rq = NULL;
        free(rq);
        fail(c, BERTH_EIO, "cannot resolve %s: %s", p->host, uv_strerror(rc));
    }
}

/* ---- starting a call ---- */

bool hconn_wants(const struct berth_http_opts *o)
{
    if (!up || disabled || strncasecmp(o->url, "http://", 7)) return false;
    if (o->size >= offsetof(struct berth_http_opts, tls_key) + sizeof o->tls_key &&
        (o->tls_ca || o->tls_cert || o->tls_key))
        return false;
    struct http_target u;
    return http_target_parse(o->url, &u);
}

#define OPT_HAS(o, f) ((o)->size >= offsetof(struct berth_http_opts, f) + sizeof((o)->f))

static void call_opts(struct hcall *c, const struct berth_http_opts *o)
{
    if (OPT_HAS(o, on_data)) c->on_data = o->on_data;
    if (OPT_HAS(o, on_head)) c->on_head = o->on_head;
    if (OPT_HAS(o, read_body)) c->read_body = o->read_body;
    size_t rb = OPT_HAS(o, recv_buffer) ? o->recv_buffer : 0;
    c->rsize = !c->on_data ? 65536 : !rb ? 16384 : rb < 1024 ? 1024
               : rb > sizeof rbuf ? sizeof rbuf : rb;
    if (c->read_body) {
        c->chunked = o->body_len == SIZE_MAX;
        c->body_len = c->chunked ? 0 : o->body_len;
    } else if (o->body) {
        c->body = o->body;
        c->body_len = o->body_len;
    }
    c->connect_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 0;
}

berth_call *hconn_call(berth_instance *owner, const struct berth_http_opts *o,
                       berth_http_done cb, void *arg)
{
    struct http_target u;
    if (!http_target_parse(o->url, &u)) return NULL;
    struct hcall *c = xcalloc(1, sizeof *c);
    c->base.native = true;
    c->cb = cb;
    c->arg = arg;
    list_init(&c->kick);
    uv_timer_init(C.loop, &c->timer);
    c->timer.data = c;
    call_opts(c, o);
    const char *method = o->method ? o->method : "GET";
    c->head_req = !strcmp(method, "HEAD");
    int64_t framing = c->read_body && c->chunked ? HEAD_CHUNKED
                      : c->read_body || o->body ? (int64_t)c->body_len : HEAD_NO_BODY;
    /* a length past INT64_MAX would read as a negative framing: no Content-Length, and the
     * body would go out as the next request */
    bool ok = c->body_len <= INT64_MAX &&
              http_head_build(&c->req, method, &u, o->headers, framing, &c->no_reuse);
    c->pool = pool_get(u.host, u.port, o->unix_socket);
    if (c->timeout_ms) c->deadline = now_ms() + c->timeout_ms;
    if (owner) {
        res_attach(owner, &c->base.res, RES_CALL);
        inst_pending(owner, 1);
    }
    c->starting = true;     /* nothing of the caller's runs inside http_request */
    if (!ok) fail(c, BERTH_EINVAL, "a method, header or body length that cannot be sent");
    else {
        arm_timer(c);
        connect_next(c);
    }
    c->starting = false;
    return &c->base;
}

/* ---- pause, resume, cancel ---- */

/* a resumed call goes on at the next turn, never inside http_resume() */
static void on_kick(uv_timer_t *t)
{
    (void)t;
    while (!list_empty(&kicks)) {
        struct hcall *c = container_of(kicks.next, struct hcall, kick);
        list_del(&c->kick);
        struct conn *k = c->conn;
        if (c->paused || !k || c->state < ST_SEND) continue;
        if (c->npend) {
            char *p = c->pend;
            size_t n = c->npend;
            c->pend = NULL;
            c->npend = 0;
            http_parser_pause(&k->parser, 0);
            bool on = feed(k, p, n);    /* may end the call, or keep a rest again */
            free(p);
            if (!on) continue;
        }
        http_parser_pause(&k->parser, 0);
        conn_read_start(k);
        if (c->read_body && !c->body_done && !c->writing && !c->send_paused) pump(c);
    }
}

int hconn_pause(berth_call *bc)
{
    struct hcall *c = (struct hcall *)bc;
    c->paused = true;
    list_del(&c->kick);
    if (c->conn && !c->in_parse) stop_reading(c->conn);
    return 0;
}

int hconn_resume(berth_call *bc)
{
    struct hcall *c = (struct hcall *)bc;
    if (!c->paused && !c->send_paused) return 0;
    c->paused = c->send_paused = false;
    kick(c);
    return 0;
}

void hconn_cancel(berth_call *bc)
{
    struct hcall *c = (struct hcall *)bc;
    call_detach(c);
    if (c->in_cb) {
        c->canceled = true;     /* the callback's caller ends it, without cb */
        return;
    }
    call_free(c);
}

void hconn_init(void)
{
    settings = (http_parser_settings){.on_header_field = on_hfield,
                                      .on_header_value = on_hvalue,
                                      .on_headers_complete = on_head_done,
                                      .on_body = on_body,
                                      .on_message_complete = on_complete};
    uv_timer_init(C.loop, &kick_timer);
    uv_timer_init(C.loop, &sweep_timer);
    /* libcurl honours a proxy from the environment; this client does not, so leaves it
     * every request then. BERTH_HTTP_CLIENT=curl does the same (a comparison, a way out). */
    const char *v = getenv("BERTH_HTTP_CLIENT");
    disabled = (v && !strcmp(v, "curl")) || getenv("http_proxy") || getenv("all_proxy") ||
               getenv("ALL_PROXY");
    up = true;
}

void hconn_shutdown(void)
{
    if (!up) return;
    up = false;
    list_each(it, &pools) {
        struct pool *p = container_of(it, struct pool, link);
        p->refs++;
        while (!list_empty(&p->idle))
            conn_close(container_of(p->idle.next, struct conn, link));
        pool_unref(p);
    }
    uv_close((uv_handle_t *)&kick_timer, NULL);
    uv_close((uv_handle_t *)&sweep_timer, NULL);
}
