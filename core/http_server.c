/* HTTP/1.1 server on libuv streams, parsed by http-parser (Node's C parser as packaged by
 * Debian: callback based, zero-copy, battle-tested on hostile input, and it decodes chunked
 * request bodies). One request per connection at a time; pipelined bytes wait in the input
 * buffer. Keep-alive, chunked streaming with write-queue backpressure, and hard limits on
 * header size, body size and the time a client may take to send a request.
 *
 * What a client can make berthd hold is bounded per listener: a request is authorized when its
 * headers are complete, before any body byte is buffered; connections beyond max_connections
 * are closed at once; and the bytes held for requests not yet dispatched (bodies and
 * pipelined input) are capped by max_buffered. */
#include "http_int.h"

#include <http_parser.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct http_limits http_limits = {
    .header_timeout_ms = 10000, .idle_timeout_ms = 60000, .send_timeout_ms = 60000,
    .max_header = 16384, .max_body = 1 << 20,
};

#define DRAIN_LOW 65536
/* per-listener defaults when neither the listener nor berth.http sets one */
#define DEFAULT_MAX_CONNECTIONS 1024
#define DEFAULT_MAX_BUFFERED (64u << 20)
/* freed connection buffers worth a malloc_trim(): a flood's memory goes back to the system */
#define TRIM_AFTER (32u << 20)
/* how long a refused client may go on sending after our answer before the connection goes */
#define LINGER_MS 2000

struct list http_listeners = {&http_listeners, &http_listeners};
struct list http_conns = {&http_conns, &http_conns};
static uint64_t n_requests, n_open;
static size_t trim_debt;
static uv_timer_t trim_timer;
static bool trim_ready, trim_closed;
static http_parser_settings settings;

static uint64_t lim_body(const struct listener *l)
{
    return l->max_body ? l->max_body : http_limits.max_body;
}

static uint64_t lim_conns(const struct listener *l)
{
    if (l->max_connections) return l->max_connections;
    return http_limits.max_connections ? http_limits.max_connections : DEFAULT_MAX_CONNECTIONS;
}

static uint64_t lim_buffered(const struct listener *l)
{
    if (l->max_buffered) return l->max_buffered;
    return http_limits.max_buffered ? http_limits.max_buffered : DEFAULT_MAX_BUFFERED;
}

uint64_t http_requests_total(void) { return n_requests; }
uint64_t http_connections_open(void) { return n_open; }

static const char *status_text(int s)
{
    switch (s) {
    case 200: return "OK"; case 201: return "Created"; case 202: return "Accepted";
    case 204: return "No Content"; case 400: return "Bad Request";
    case 401: return "Unauthorized"; case 403: return "Forbidden"; case 404: return "Not Found";
    case 405: return "Method Not Allowed"; case 408: return "Request Timeout";
    case 409: return "Conflict"; case 413: return "Content Too Large";
    case 422: return "Unprocessable Content"; case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error"; case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable"; case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static const char *http_date(void)
{
    static char s[40];
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(s, sizeof s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return s;
}

/* ---- connection teardown ---- */

/* Memory a burst of connections took goes back to the system once it is freed: glibc keeps
 * freed heap otherwise, and a flood would leave berthd large for good. */
static void trim_now(uv_timer_t *t)
{
    (void)t;
    trim_debt = 0;
    malloc_trim(0);
}

/* Trims at once after a lot was freed, and otherwise soon after the last of a smaller burst. */
static void trim_owed(size_t bytes)
{
    trim_debt += bytes;
    if (trim_debt >= TRIM_AFTER) {
        trim_now(NULL);
        return;
    }
    if (trim_closed) return;
    if (!trim_ready) {
        uv_timer_init(C.loop, &trim_timer);
        uv_unref((uv_handle_t *)&trim_timer);   /* it never keeps berthd running */
        trim_ready = true;
    }
    if (!uv_is_active((uv_handle_t *)&trim_timer)) uv_timer_start(&trim_timer, trim_now, 500, 0);
}

void http_trim_close(void)
{
    if (trim_ready && !trim_closed) uv_close((uv_handle_t *)&trim_timer, NULL);
    trim_closed = true;
}

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles) return;
    size_t cap = c->in.cap;
    buf_free(&c->in);
    c->l->nconns--;
    http_listener_unref(c->l);
    free(c);
    trim_owed(cap + sizeof *c);
}

static void req_free(berth_req *r)
{
    if (r->body.cap > 65536) trim_owed(r->body.cap);
    buf_free(&r->url);
    buf_free(&r->body);
    buf_free(&r->hfield);
    buf_free(&r->hvalue);
    free(r->path);
    free(r->query_raw);
    for (size_t i = 0; i < r->nhdr; i++) free(r->hdr[i].k);     /* the value shares it */
    for (size_t i = 0; i < r->nparam; i++) free(r->param[i].k), free(r->param[i].v);
    for (size_t i = 0; i < r->nquery; i++) free(r->query[i].k), free(r->query[i].v);
    free(r->hdr);
    free(r->param);
    free(r->query);
    free(r);
}

void http_conn_close(struct conn *c)
{
    if (c->closing) return;
    c->closing = true;
    n_open--;
    list_del(&c->link);
    owner_release(&c->l->owners, &c->claim);
    c->l->buffered -= c->held;
    c->held = 0;
    berth_req *r = c->req;
    c->req = NULL;
    if (r) {
        r->conn = NULL;
        if (r->state == REQ_PARSING) {
            req_free(r);
        } else if (r->close_cb) {
            berth_req_cb cb = r->close_cb;
            r->close_cb = NULL;
            cb(r, r->close_arg);    /* the handler still ends the request itself */
        }
    }
    uv_close(&c->u.h, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void linger_timeout(uv_timer_t *t)
{
    http_conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *s, int status)
{
    struct conn *c = container_of(s, struct conn, shut);
    if (!c->closing && status < 0) http_conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void on_timeout(uv_timer_t *t);

/* Bytes of this connection's output the kernel has taken so far (libuv's queue shrinks with
 * every partial write, so this moves while a large answer trickles out). */
static uint64_t bytes_out(struct conn *c)
{
    return c->queued - uv_stream_get_write_queue_size(&c->u.s);
}

/* The connection's one timer follows its state: with output pending it is send_timeout,
 * checked for progress when it fires (re-armed per interval, not per write); otherwise the
 * request's header deadline, nothing while a request is being answered, or idle_timeout.
 * Called where the state changes; a lingering connection keeps its linger timer. */
static void conn_timer(struct conn *c)
{
    if (c->closing || c->lingering) return;
    uint64_t now = uv_now(C.loop), due;
    if (c->writes) {
        if (c->sending) return;
        c->sending = true;
        c->sent_mark = bytes_out(c);
        due = now + (uint64_t)http_limits.send_timeout_ms;
    } else {
        c->sending = false;
        if (c->req && c->req->state != REQ_PARSING) {
            uv_timer_stop(&c->timer);
            return;
        }
        due = c->deadline ? c->header_due : now + (uint64_t)http_limits.idle_timeout_ms;
    }
    uv_timer_start(&c->timer, on_timeout, due > now ? due - now : 0, 0);
}

/* Ends a connection once its answer is written. One refused with its request unread first
 * half-closes and drops what still arrives, for a while: closing with unread bytes makes the
 * kernel send a reset, which can destroy the answer before the client has read it. */
static void conn_done(struct conn *c)
{
    /* an answer still being written holds the connection open for its owner: the claim
     * goes with the last write (on_write calls again) */
    if (c->closing || c->writes || c->lingering) return;
    /* it serves no other request: its owner may open another in its place */
    owner_release(&c->l->owners, &c->claim);
    if (!c->linger || c->eof) {
        http_conn_close(c);
        return;
    }
    c->lingering = true;
    uv_timer_start(&c->timer, linger_timeout, LINGER_MS, 0);
    if (!c->reading) uv_read_start(&c->u.s, on_alloc, on_read);
    c->reading = true;
    if (uv_shutdown(&c->shut, &c->u.s, on_shutdown) < 0) http_conn_close(c);
}

/* ---- writing ---- */

struct wreq { uv_write_t w; struct conn *c; char data[]; };

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = container_of(w, struct wreq, w);
    struct conn *c = wr->c;
    free(wr);
    c->writes--;
    if (c->closing) return;
    if (status < 0) {
        http_conn_close(c);
        return;
    }
    if (!c->writes) {
        c->sending = false;
        if (c->close_after) {
            conn_done(c);
            return;
        }
        conn_timer(c);          /* the timer the state asks for once nothing is pending */
    }
    berth_req *r = c->req;
    if (r && r->drain_cb && uv_stream_get_write_queue_size(&c->u.s) < DRAIN_LOW) {
        berth_req_cb cb = r->drain_cb;
        r->drain_cb = NULL;
        cb(r, r->drain_arg);
    }
}

/* Most answers fit the socket buffer: they are written at once and nothing is queued. That
 * matters beyond a copy: a queued uv_write makes libuv re-arm the descriptor (one epoll_ctl per
 * response). What the socket does not take, or anything behind queued data, goes through
 * uv_write; errors surface there too, in on_write. */
static void conn_write(struct conn *c, const char *a, size_t na, const char *b, size_t nb)
{
    if (!c || c->closing) return;
    uv_buf_t now[2] = {uv_buf_init((char *)a, (unsigned)na), uv_buf_init((char *)b, (unsigned)nb)};
    int n = c->writes ? UV_EAGAIN : uv_try_write(&c->u.s, now, nb ? 2 : 1);
    size_t done = n > 0 ? (size_t)n : 0;
    if (done == na + nb) return;
    size_t skip_a = done < na ? done : na, skip_b = done - skip_a;
    na -= skip_a;
    nb -= skip_b;
    struct wreq *wr = xmalloc(sizeof *wr + na + nb);
    memcpy(wr->data, a + skip_a, na);
    if (nb) memcpy(wr->data + na, b + skip_b, nb);
    wr->c = c;
    uv_buf_t ub = uv_buf_init(wr->data, (unsigned)(na + nb));
    if (uv_write(&wr->w, &c->u.s, &ub, 1, on_write) < 0) {
        free(wr);
        http_conn_close(c);
        return;
    }
    c->queued += na + nb;
    if (c->writes++ == 0) conn_timer(c);
}

/* ---- parsing ---- */

static void process(struct conn *c);

static void send_simple(struct conn *c, int status, const char *code, const char *msg)
{
    struct buf b = {0};
    char body[512];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}\n",
                     code, msg);
    buf_printf(&b, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n%s", status, status_text(status), n, body);
    conn_write(c, b.p, b.len, NULL, 0);
    buf_free(&b);
    c->close_after = true;
    c->linger = true;           /* the rest of the request is read and dropped */
    conn_done(c);
}

/* Output pending and not a byte of it taken for a whole send_timeout: the client does not
 * read. Closing tells the handler of a streamed answer (on_close). */
static bool send_stalled(struct conn *c)
{
    uint64_t out = bytes_out(c);
    if (out != c->sent_mark) {
        c->sent_mark = out;
        uv_timer_start(&c->timer, on_timeout, (uint64_t)http_limits.send_timeout_ms, 0);
        return false;
    }
    log_info("http: %s read nothing of its answer for %lld ms: closed", c->peer,
             (long long)http_limits.send_timeout_ms);
    return true;
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->writes) {
        if (send_stalled(c)) http_conn_close(c);
    } else if (c->req && c->req->state == REQ_PARSING)
        send_simple(c, 408, "request_timeout", "the request took too long to arrive");
    else if (!c->req)
        http_conn_close(c);          /* idle keep-alive connection */
}

/* The time a client has to send a request counts from its first byte (or the connection's
 * start) and is never extended by what it sends meanwhile: bytes the parser skips before a
 * request line (empty lines) would otherwise hold a connection open forever. */
static void header_deadline(struct conn *c)
{
    if (c->deadline) return;
    c->deadline = true;
    c->header_due = uv_now(C.loop) + (uint64_t)http_limits.header_timeout_ms;
    conn_timer(c);
}

/* Recomputes what this connection holds for requests not yet dispatched: unparsed input and
 * the body of the request being read. */
static void account(struct conn *c)
{
    size_t held = 0;
    if (!c->closing) {
        held = c->in.len - c->in_off;
        if (c->req && c->req->state == REQ_PARSING) held += c->req->body.len;
    }
    c->l->buffered = c->l->buffered - c->held + held;
    c->held = held;
}

static int on_begin(http_parser *p)
{
    struct conn *c = p->data;
    berth_req *r = xcalloc(1, sizeof *r);
    r->conn = c;
    memcpy(r->peer, c->peer, sizeof r->peer);
    c->req = r;
    header_deadline(c);
    return 0;
}

static int count_header(berth_req *r, size_t n)
{
    r->header_bytes += n;
    if (r->header_bytes > http_limits.max_header) {
        r->reject = 431;
        return -1;
    }
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    berth_req *r = ((struct conn *)p->data)->req;
    if (count_header(r, n)) return -1;
    buf_add(&r->url, at, n);
    return 0;
}

static void push_header(berth_req *r)
{
    if (!r->hfield.len) return;
    /* the array grows by doubling from 8 (a request has a handful), and a header's name and
     * value share one allocation: two allocations per request here, not three per header */
    if (!r->nhdr || (r->nhdr >= 8 && !(r->nhdr & (r->nhdr - 1))))
        r->hdr = xrealloc(r->hdr, (r->nhdr ? 2 * r->nhdr : 8) * sizeof *r->hdr);
    size_t kn = r->hfield.len, vn = r->hvalue.p ? r->hvalue.len : 0;
    char *k = xmalloc(kn + vn + 2);
    memcpy(k, r->hfield.p, kn);
    k[kn] = 0;
    if (vn) memcpy(k + kn + 1, r->hvalue.p, vn);
    k[kn + 1 + vn] = 0;
    r->hdr[r->nhdr++] = (struct kv){k, k + kn + 1};
    r->hfield.len = r->hvalue.len = 0;
    if (r->hvalue.p) r->hvalue.p[0] = 0;
}

/* Trailers of a chunked body arrive after authorization has seen the headers: they are
 * counted against max_header but never become headers a handler (or an upstream) sees. */
static int on_hfield(http_parser *p, const char *at, size_t n)
{
    berth_req *r = ((struct conn *)p->data)->req;
    if (count_header(r, n) || r->nhdr >= 100) {
        r->reject = 431;
        return -1;
    }
    if (r->head_done) return 0;
    if (r->in_value) {
        push_header(r);
        r->in_value = false;
    }
    buf_add(&r->hfield, at, n);
    return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
    berth_req *r = ((struct conn *)p->data)->req;
    if (count_header(r, n)) return -1;
    if (r->head_done) return 0;
    r->in_value = true;
    buf_add(&r->hvalue, at, n);
    return 0;
}

/* Method, path and query as soon as the head is complete, so authorization can see them. */
static bool parse_head(berth_req *r, http_parser *p)
{
    r->method = http_method_str((enum http_method)p->method);
    r->keep_alive = http_should_keep_alive(p);
    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->head = p->method == HTTP_HEAD;
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = r->url.p ? r->url.p : "";
    if (http_parser_parse_url(url, strlen(url), 0, &u) || !(u.field_set & (1 << UF_PATH)) ||
        !(r->path = http_pct_decode(url + u.field_data[UF_PATH].off,
                                    u.field_data[UF_PATH].len, false)))
        return false;
    if (u.field_set & (1 << UF_QUERY))
        r->query_raw = xstrndup(url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len);
    return true;
}

/* How many times a Transfer-Encoding names chunked, or -1 if it names anything else:
 * http-parser requires chunked last and decodes only that, so "gzip, chunked" would hand a
 * handler (and an upstream it relays to) a body still encoded as nobody will decode. */
static int chunked_count(const char *v)
{
    int k = 0;
    while (*v) {
        v += strspn(v, " \t,");
        size_t n = strcspn(v, " \t,");
        if (n && (n != 7 || strncasecmp(v, "chunked", 7))) return -1;
        k += n > 0;
        v += n;
    }
    return k;
}

/* What the head says that the parser lets through but no handler can serve safely: a
 * coding other than chunked (501), chunked twice in separate fields, two Host fields
 * (which site is meant?). */
static bool head_sane(berth_req *r)
{
    int hosts = 0, chunked = 0;
    for (size_t i = 0; i < r->nhdr; i++) {
        if (!strcasecmp(r->hdr[i].k, "host")) hosts++;
        if (strcasecmp(r->hdr[i].k, "transfer-encoding")) continue;
        int k = chunked_count(r->hdr[i].v);
        if (k < 0) {
            r->reject = 501;
            return false;
        }
        chunked += k;
    }
    if (chunked > 1) r->reject_msg = "chunked is applied more than once";
    else if (hosts > 1) r->reject_msg = "more than one Host header";
    return chunked <= 1 && hosts <= 1;
}

static bool token_ok(const struct listener *l, berth_req *r)
{
    const char *auth = req_header(r, "authorization");
    return auth && !strncasecmp(auth, "Bearer ", 7) && ct_equal(auth + 7, l->token);
}

/* Runs the listener's checks with the body still unread. A refused request is answered with
 * Connection: close and its body never buffered; returns false then (r is freed). */
static bool authorize(struct conn *c, berth_req *r)
{
    struct listener *l = c->l;
    if (!l->token && !l->authorize) return true;
    bool keep = r->keep_alive;
    r->keep_alive = false;      /* answered now, the unread body ends the connection */
    r->state = REQ_DISPATCHED;  /* so the checks may answer with the usual calls */
    c->linger = true;           /* if they do, the connection ends without reading the body */
    bool ok = true;
    if (l->token && !token_ok(l, r)) {
        req_respond_error(r, 401, "unauthorized", "a valid bearer token is required");
        ok = false;
    } else if (l->authorize) {
        ok = l->authorize(r, l->arg) && c->req == r;
        if (c->req == r && r->state == REQ_STREAMING) req_abort(r);    /* not an answer here */
        else if (c->req == r && !ok)
            req_respond_error(r, 403, "forbidden", "the listener refused this request");
        ok = ok && c->req == r;
    }
    if (!ok) {
        c->refused = true;      /* on_read drops the body from now on */
        conn_done(c);
        return false;
    }
    c->linger = false;
    r->state = REQ_PARSING;
    r->keep_alive = keep;
    return true;
}

static int on_headers_done(http_parser *p)
{
    struct conn *c = p->data;
    berth_req *r = c->req;
    push_header(r);
    r->head_done = true;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > lim_body(c->l)) {
        r->reject = 413;
        return -1;
    }
    if (!parse_head(r, p)) {
        r->reject_msg = "malformed request target";
        return -1;
    }
    if (!head_sane(r)) return -1;
    return authorize(c, r) ? 0 : -1;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    berth_req *r = c->req;
    if (r->body.len + n > lim_body(c->l)) {
        r->reject = 413;
        return -1;
    }
    buf_add(&r->body, at, n);
    c->held += n;
    c->l->buffered += n;
    return 0;
}

static int on_complete(http_parser *p)
{
    http_parser_pause(p, 1);    /* one request at a time: the rest waits in the buffer */
    return 0;
}

static void dispatch(struct conn *c)
{
    berth_req *r = c->req;
    if (!c->writes) uv_timer_stop(&c->timer);  /* a previous answer still going out keeps it */
    n_requests++;
    r->state = REQ_DISPATCHED;
    account(c);
    r->owner = c->l->owner;
    if (r->owner) inst_pending(r->owner, 1);
    c->l->handler(r, c->l->arg);
}

static void send_reject(struct conn *c, enum http_errno err)
{
    berth_req *r = c->req;
    int st = r && r->reject ? r->reject : 400;
    if (st == 413) send_simple(c, 413, "too_large", "the request body is too large");
    else if (st == 431)
        send_simple(c, 431, "headers_too_large", "the request headers are too large");
    else if (st == 501)
        send_simple(c, 501, "not_implemented", "only the chunked transfer coding is supported");
    else
        send_simple(c, 400, "bad_request",
                    r && r->reject_msg ? r->reject_msg : http_errno_description(err));
}

/* A client that shut its side gets every answer to what it sent, then the connection ends. */
static void eof_check(struct conn *c)
{
    if (!c->eof || c->closing || c->close_after) return;
    if (c->req && c->req->state != REQ_PARSING) return;     /* an answer is still to come */
    if (c->in_off < c->in.len) return;
    c->close_after = true;
    conn_done(c);
}

/* Parses data until it runs out, a dispatched request is answered later, or the connection
 * ends; returns how much was consumed. */
static size_t parse(struct conn *c, const char *data, size_t len)
{
    size_t off = 0;
    while (!c->closing && !c->refused && off < len && (!c->req || c->req->state == REQ_PARSING)) {
        size_t avail = len - off;
        size_t n = http_parser_execute(&c->parser, &settings, data + off, avail);
        off += n;
        enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
        if (err == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            dispatch(c);
            continue;
        }
        if (c->refused) break;  /* answered at header time */
        if (err != HPE_OK) {
            send_reject(c, err);
            break;
        }
        if (n < avail) break;   /* the parser wants no more (upgrade): refuse it */
    }
    return off;
}

/* After parsing: drops what will never be read, gives back a burst's buffer, and closes a
 * half-closed connection with nothing left to answer. */
static void settle(struct conn *c)
{
    if (c->refused || c->close_after) {
        buf_free(&c->in);       /* what follows a refused or failed request is never read */
        c->in_off = 0;
    }
    if (c->in_off == c->in.len) {
        c->in_off = c->in.len = 0;
        /* a large pipelined burst does not pin its buffer for the connection's life */
        if (c->in.cap > 65536 * 2) {
            trim_owed(c->in.cap);
            buf_free(&c->in);
        }
    }
    account(c);
    c->in_process = false;
    eof_check(c);
}

static void process(struct conn *c)
{
    if (c->in_process) return;
    c->in_process = true;
    if (c->in_off < c->in.len) c->in_off += parse(c, c->in.p + c->in_off, c->in.len - c->in_off);
    settle(c);
}

/* The usual case, nothing pending: parse straight from the read buffer and keep only what a
 * request answered later leaves over (a connection holds no 64 KiB copy per read). */
static void process_read(struct conn *c, const char *data, size_t n)
{
    c->in_process = true;
    size_t used = parse(c, data, n);
    c->in_off = c->in.len = 0;
    if (used < n && !c->closing && !c->refused && !c->close_after)
        buf_add(&c->in, data + used, n - used);
    settle(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h; (void)hint;
    static char slab[65536];
    *b = uv_buf_init(slab, sizeof slab);
}

static void stop_reading(struct conn *c)
{
    uv_read_stop(&c->u.s);
    c->reading = false;
}

/* Bytes beyond the listener's budget: a request still being read is refused with 503; input
 * pipelined behind a request being answered waits in the kernel (reading stops). */
static bool over_budget(struct conn *c, size_t n)
{
    struct listener *l = c->l;
    if (l->buffered + n <= lim_buffered(l)) return false;
    if (c->req && c->req->state != REQ_PARSING) {
        stop_reading(c);
        return false;           /* these bytes are already read: keep them */
    }
    send_simple(c, 503, "busy", "too many request bytes waiting on this listener");
    return true;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (c->lingering) {
        if (n < 0) http_conn_close(c);
        return;
    }
    if (n == UV_EOF) {
        /* EOF while an answer is pending (awaited or streaming) is the client gone, now, not
         * at the first write: its handler may hold resources (a busy tenant, an upstream
         * call waiting for its head) until on_close. A half-close cannot be told from a
         * close (nginx and Node's server read it so too). Pipelined input goes with it. */
        if (c->req && c->req->state != REQ_PARSING) {
            http_conn_close(c);
            return;
        }
        c->eof = true;
        c->reading = false;     /* libuv stops reading at EOF */
        process(c);
        return;
    }
    if (n < 0) {
        http_conn_close(c);
        return;
    }
    if (!n || c->close_after || c->refused) return;     /* an unread body is dropped */
    if (over_budget(c, (size_t)n)) return;
    if (!c->req) header_deadline(c);
    if (c->in_off == c->in.len && !c->in_process) {
        process_read(c, b->base, (size_t)n);
    } else {
        buf_add(&c->in, b->base, (size_t)n);
        process(c);
    }
    /* a client pipelining more than one full request's worth waits for us to catch up */
    if (!c->closing && c->in.len - c->in_off > http_limits.max_header + lim_body(c->l) + 65536)
        stop_reading(c);
}

static void set_peer(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "";
    snprintf(c->peer, sizeof c->peer, "unix");
    if (c->u.h.type != UV_TCP || uv_tcp_getpeername(&c->u.tcp, (struct sockaddr *)&ss, &len))
        return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "[%s]:%u", host, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "%s:%u", host, ntohs(a->sin_port));
    }
}

/* A connection of listener l, its handle initialised but not yet connected or reading. */
static struct conn *conn_new(struct listener *l)
{
    struct conn *c = xcalloc(1, sizeof *c);
    int rc = l->path ? uv_pipe_init(C.loop, &c->u.pipe, 0) : uv_tcp_init(C.loop, &c->u.tcp);
    if (rc < 0) {
        free(c);
        return NULL;
    }
    c->u.h.data = c;
    c->open_handles = 2;
    c->l = l;
    l->refs++;
    l->nconns++;
    uv_timer_init(C.loop, &c->timer);
    c->timer.data = c;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    list_add_tail(&http_conns, &c->link);
    n_open++;
    return c;
}

static void conn_begin(struct conn *c)
{
    set_peer(c);
    uv_read_start(&c->u.s, on_alloc, on_read);
    c->reading = true;
    header_deadline(c);
}

void http_on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status < 0 || l->closed) return;
    bool full = l->nconns >= lim_conns(l);
    struct conn *c = conn_new(l);
    if (!c) return;
    if (uv_accept(server, &c->u.s) < 0 || full) {
        http_conn_close(c);          /* accepted only to be closed: the backlog does not pile up */
        return;
    }
    if (!l->path) uv_tcp_nodelay(&c->u.tcp, 1);
    conn_begin(c);
}

/* Serves an already connected stream socket (a socketpair end): the fuzzer feeds hostile
 * bytes through exactly the code a real connection runs. */
int http_serve_fd(int fd, berth_http_handler h, void *arg)
{
    struct listener *l = xcalloc(1, sizeof *l);
    l->handler = h;
    l->arg = arg;
    l->path = xstrdup("(fd)");      /* a stream, not TCP: no nodelay */
    struct conn *c = conn_new(l);   /* holds the only reference: freed with the connection */
    if (!c) {
        free(l->path);
        free(l);
        return BERTH_EIO;
    }
    if (uv_pipe_open(&c->u.pipe, fd) < 0) {
        http_conn_close(c);
        return BERTH_EIO;
    }
    conn_begin(c);
    return 0;
}

/* ---- answering ---- */

static void finish(berth_req *r)
{
    struct conn *c = r->conn;
    r->state = REQ_DONE;
    if (r->owner) inst_pending(r->owner, -1);
    if (c) {
        c->req = NULL;
        if (!r->keep_alive || c->l->closed || C.stopping) {
            c->close_after = true;
            conn_done(c);
        } else {
            c->deadline = false;        /* idle now: the next request's clock starts later */
            conn_timer(c);              /* idle_timeout, or send_timeout while it is written */
            if (!c->reading && !c->eof) {
                uv_read_start(&c->u.s, on_alloc, on_read);
                c->reading = true;
            }
            process(c);
        }
    }
    req_free(r);
}

static void head_common(struct buf *b, berth_req *r, int status)
{
    buf_printf(b, "HTTP/1.1 %d %s\r\nServer: berth\r\nDate: %s\r\n", status, status_text(status),
               http_date());
    if (!r->keep_alive || C.stopping) buf_adds(b, "Connection: close\r\n");
    else if (r->http10) buf_adds(b, "Connection: keep-alive\r\n");
}

/* The framing headers are the host's: a caller's copy would contradict them (a relayed
 * upstream's Content-Length, Transfer-Encoding, Connection). A header that could split the
 * head (CR or LF in it) is dropped rather than sent. */
static bool host_header(const char *name, size_t n)
{
    static const struct { const char *s; size_t n; } own[] = {
        {"content-length", 14}, {"transfer-encoding", 17}, {"connection", 10},
        {"keep-alive", 10}, {"date", 4}, {"server", 6}};
    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (n == own[i].n && !strcasecmp(name, own[i].s)) return true;
    return false;
}

/* copied, not formatted: a relayed answer has a handful of these per call */
static void add_headers(struct buf *b, const struct berth_header *h)
{
    for (; h && h->name; h++) {
        const char *v = h->value ? h->value : "";
        size_t n = strcspn(h->name, "\r\n: "), vn = strcspn(v, "\r\n");
        if (!n || h->name[n] || v[vn] || host_header(h->name, n)) continue;
        buf_add(b, h->name, n);
        buf_add(b, ": ", 2);
        buf_add(b, v, vn);
        buf_add(b, "\r\n", 2);
    }
}

void req_respond_with(berth_req *r, int status, const struct berth_header *h,
                      const char *body, size_t len)
{
    if (r->state != REQ_DISPATCHED) return;
    struct buf b = {0};
    head_common(&b, r, status);
    add_headers(&b, h);
    buf_printf(&b, "Content-Length: %zu\r\n\r\n", len);
    conn_write(r->conn, b.p, b.len, body, r->head ? 0 : len);
    buf_free(&b);
    finish(r);
}

void req_respond(berth_req *r, int status, const char *ct, const char *body, size_t len)
{
    struct berth_header h[] = {{"Content-Type", ct}, {NULL, NULL}};
    req_respond_with(r, status, ct ? h : NULL, body, len);
}

void req_respond_error(berth_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct buf b = {0};
    buf_adds(&b, "{\"error\":{\"code\":\"");
    buf_json_escape(&b, code);
    buf_adds(&b, "\",\"message\":\"");
    buf_json_escape(&b, msg);
    buf_adds(&b, "\"}}\n");
    req_respond(r, status, "application/json", b.p, b.len);
    buf_free(&b);
}

void req_respond_json(berth_req *r, int status, cJSON *json)
{
    char *p = cJSON_PrintUnformatted(json), *s = utf8_repaired(p);
    cJSON_free(p);
    struct buf b = {0};
    buf_adds(&b, s);
    buf_adds(&b, "\n");
    free(s);
    cJSON_Delete(json);
    req_respond(r, status, "application/json", b.p, b.len);
    buf_free(&b);
}

int req_start(berth_req *r, int status, const struct berth_header *h)
{
    if (r->state != REQ_DISPATCHED) return BERTH_EINVAL;
    struct buf b = {0};
    head_common(&b, r, status);
    add_headers(&b, h);
    /* HTTP/1.0 has no chunked coding: the end of the stream is the end of the connection */
    r->chunked = !r->http10;
    if (r->chunked) buf_adds(&b, "Transfer-Encoding: chunked\r\n");
    else r->keep_alive = false;
    buf_adds(&b, "\r\n");
    conn_write(r->conn, b.p, b.len, NULL, 0);
    buf_free(&b);
    r->state = REQ_STREAMING;
    return 0;
}

size_t req_write(berth_req *r, const char *data, size_t len)
{
    if (r->state != REQ_STREAMING || !r->conn) return 0;
    if (len && !r->head) {
        if (r->chunked) {
            char pre[24];
            int n = snprintf(pre, sizeof pre, "%zx\r\n", len);
            struct buf b = {0};
            buf_add(&b, pre, (size_t)n);
            buf_add(&b, data, len);
            buf_add(&b, "\r\n", 2);
            conn_write(r->conn, b.p, b.len, NULL, 0);
            buf_free(&b);
        } else {
            conn_write(r->conn, data, len, NULL, 0);
        }
    }
    return r->conn ? uv_stream_get_write_queue_size(&r->conn->u.s) : 0;
}

void req_end(berth_req *r)
{
    if (r->state == REQ_DISPATCHED) {
        req_respond(r, 204, NULL, NULL, 0);
        return;
    }
    if (r->state != REQ_STREAMING) return;
    if (r->chunked && r->conn && !r->head) conn_write(r->conn, "0\r\n\r\n", 5, NULL, 0);
    finish(r);
}

/* The client must not take a cut-short answer for a whole one: no terminating chunk, and the
 * connection closes once what was written has gone out. Before the head, the connection
 * just closes. (An HTTP/1.0 stream ends with the connection anyway: it cannot tell.) */
void req_abort(berth_req *r)
{
    if (r->state != REQ_DISPATCHED && r->state != REQ_STREAMING) return;
    r->keep_alive = false;
    finish(r);
}

void req_on_close(berth_req *r, berth_req_cb cb, void *arg)
{
    r->close_cb = cb;
    r->close_arg = arg;
}

void req_on_drain(berth_req *r, berth_req_cb cb, void *arg)
{
    r->drain_cb = cb;
    r->drain_arg = arg;
}

__attribute__((constructor)) static void init_settings(void)
{
    settings.on_message_begin = on_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_hfield;
    settings.on_header_value = on_hvalue;
    settings.on_headers_complete = on_headers_done;
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
}
