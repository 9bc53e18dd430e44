/* relay: a plugin for tests that proxies its listener to an upstream, the way the quota proxy
 * will: the upstream's head reaches the client before any body byte (on_head), a slow client
 * pauses the upstream (respond_write's queue, http_pause, on_drain, http_resume), the
 * client's body is forwarded without a copy, and a failed upstream cuts the client's stream
 * short (respond_abort). Its listener has its own limits and an authorize hook.
 *
 * GET /_headers answers with the request's headers (req_header_at) and peer, itself. With
 * "X-Relay-Pull: sized" or "chunked" (or a length to declare) the client's body goes
 * upstream through read_body in 4000-byte pieces, every other pull answered BERTH_EAGAIN and
 * resumed by a timer. "X-Relay-Cancel: head", "data" or "pull" cancels the call inside that
 * callback, "cb" inside the done callback (a no-op there). */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfg {
    const char *listen, *upstream, *token, *tag;
    uint64_t max_body, max_connections, max_buffered, high_water;
    int64_t unix_mode;
};

static const struct berth_cfg_item schema[] = {
    {"listen", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, listen),
     "host:port or unix:PATH to serve on", BERTH_CFG_REQUIRED, NULL, NULL},
    {"upstream", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, upstream),
     "base URL the request path is appended to", BERTH_CFG_REQUIRED, NULL, NULL},
    {"token", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, token),
     "when set, requests need X-Relay-Token with it", 0, NULL, NULL},
    {"tag", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, tag),
     "changing it replaces the instance (a reload that drains the old one)", 0, NULL, NULL},
    {"max_body", BERTH_CFG_SIZE, "0", 0, 0, offsetof(struct cfg, max_body),
     "the listener's body limit (0: berth.http's)", 0, NULL, NULL},
    {"max_connections", BERTH_CFG_SIZE, "0", 0, 0, offsetof(struct cfg, max_connections),
     "the listener's connection cap (0: the default)", 0, NULL, NULL},
    {"max_buffered", BERTH_CFG_SIZE, "0", 0, 0, offsetof(struct cfg, max_buffered),
     "bytes held for requests not yet dispatched (0: berth.http's)", 0, NULL, NULL},
    {"unix_mode", BERTH_CFG_INT, "0", 0, 0777, offsetof(struct cfg, unix_mode),
     "mode of a unix: listener's socket (0: 0660)", 0, NULL, NULL},
    {"high_water", BERTH_CFG_SIZE, "256k", 1, 1 << 30, offsetof(struct cfg, high_water),
     "bytes queued for the client above which the upstream is paused", 0, NULL, NULL},
    {0},
};

static const struct berth_host *H;

struct relay {
    berth_instance *self;
    struct cfg cfg;
    struct stream *streams;     /* open relays, canceled in destroy */
};

/* One relayed request. `r` is answered exactly once; `call` is NULL once finished. */
struct stream {
    struct stream *next, **pprev;
    struct relay *rl;
    berth_req *r;
    berth_call *call;
    struct berth_header *hdr;   /* forwarded request headers (borrowed strings) */
    char *url;
    bool head_sent, paused, gone, in_cb;
    char cancel_in;             /* X-Relay-Cancel: 'h'ead, 'd'ata or 'p'ull, else 0 */
    const char *body;           /* the client's body (req_body), for read_body pulls */
    size_t body_len, body_off;
    unsigned pulls;
    berth_timer *pull_timer;
    size_t largest;             /* the largest piece on_data was given */
};

static void stream_free(struct stream *s)
{
    if (s->pull_timer) H->timer_stop(s->pull_timer);
    if (s->pprev) *s->pprev = s->next;
    if (s->next) s->next->pprev = s->pprev;
    free(s->hdr);
    free(s->url);
    free(s);
}

/* The call canceled inside its own callback (the own client takes it when the callback
 * returns, and cb never comes): the client gets a 502, or a cut stream once the head went. */
static bool cancel_here(struct stream *s, char where)
{
    if (s->cancel_in != where) return false;
    H->http_cancel(s->call);
    s->call = NULL;
    if (s->head_sent) H->respond_abort(s->r);
    else H->respond_error(s->r, 502, "bad_gateway", "canceled inside a callback (%c)", where);
    stream_free(s);
    return true;
}

static bool hop_by_hop(const char *name)
{
    static const char *const skip[] = {"host", "content-length", "connection",
                                       "transfer-encoding", "x-relay-token", "x-relay-pull",
                                       NULL};
    for (const char *const *p = skip; *p; p++)
        if (!strcasecmp(name, *p)) return true;
    return false;
}

static bool on_head(int status, const struct berth_header *h, size_t n, void *arg)
{
    struct stream *s = arg;
    (void)n;
    if (s->gone || cancel_here(s, 'h')) return false;
    s->head_sent = true;
    s->in_cb = true;
    int rc = H->respond_start(s->r, status, h);
    s->in_cb = false;
    return rc == 0 && !s->gone;
}

static void resume(berth_req *r, void *arg)
{
    struct stream *s = arg;
    (void)r;
    if (!s->paused || !s->call) return;
    s->paused = false;
    H->http_resume(s->call);
}

static bool on_data(const char *data, size_t len, void *arg)
{
    struct stream *s = arg;
    if (s->gone || cancel_here(s, 'd')) return false;
    if (len > s->largest) s->largest = len;
    s->in_cb = true;
    size_t queued = H->respond_write(s->r, data, len);
    s->in_cb = false;
    if (s->gone) return false;
    if (queued > s->rl->cfg.high_water && !s->paused) {
        s->paused = true;
        H->http_pause(s->call);
        H->on_drain(s->r, resume, s);
    }
    return true;
}

static void done(const struct berth_http_result *res, void *arg)
{
    struct stream *s = arg;
    if (s->cancel_in == 'c') H->http_cancel(s->call);  /* inside its own cb: a no-op */
    s->call = NULL;
    H->log(s->rl->self, BERTH_LOG_INFO, "relayed %s, largest piece %zu bytes",
           H->req_path(s->r), s->largest);
    if (s->gone) H->respond_abort(s->r);
    else if (res->error && s->head_sent) H->respond_abort(s->r);     /* cut short upstream */
    else if (res->error)
        H->respond_error(s->r, 502, "bad_gateway", "upstream: %s", res->message);
    else if (!s->head_sent) H->respond(s->r, res->status, NULL, NULL, 0);
    else H->respond_end(s->r);
    stream_free(s);
}

static void pull_resume(berth_timer *t, void *arg)
{
    struct stream *s = arg;
    H->timer_stop(t);
    s->pull_timer = NULL;
    if (s->call) H->http_resume(s->call);
}

static int64_t pull(char *buf, size_t cap, void *arg)
{
    struct stream *s = arg;
    if (cancel_here(s, 'p')) return BERTH_ECANCELED;
    if (s->body_off < s->body_len && ++s->pulls % 2 == 0) {
        s->pull_timer = H->timer_start(s->rl->self, 5, 0, pull_resume, s);
        return BERTH_EAGAIN;
    }
    size_t n = s->body_len - s->body_off;
    if (n > cap) n = cap;
    if (n > 4000) n = 4000;
    memcpy(buf, s->body + s->body_off, n);
    s->body_off += n;
    return (int64_t)n;
}

static void gone(berth_req *r, void *arg)
{
    struct stream *s = arg;
    s->gone = true;
    if (s->in_cb) return;   /* inside on_head/on_data: they return false, done() ends it */
    H->http_cancel(s->call);
    s->call = NULL;
    H->respond_abort(r);
    stream_free(s);
}

static void show_headers(berth_req *r)
{
    char body[8192];
    size_t n = 0;
    const char *v;
    const char *k;
    for (size_t i = 0; (k = H->req_header_at(r, i, &v)) && n < sizeof body - 1; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "%s: %s\n", k, v);
    if (n >= sizeof body) n = sizeof body - 1;
    struct berth_header h[] = {{"X-Peer", H->req_peer(r)}, {"Content-Type", "text/plain"},
                               {"Content-Length", "999"}, {NULL, NULL}};
    H->respond_with(r, 200, h, body, n);
}

static void serve(berth_req *r, void *arg)
{
    struct relay *rl = arg;
    if (!strcmp(H->req_path(r), "/_headers")) {
        show_headers(r);
        return;
    }
    struct stream *s = calloc(1, sizeof *s);
    size_t nh = H->req_header_count(r), k = 0;
    if (!s || !(s->hdr = calloc(nh + 1, sizeof *s->hdr)) ||
        !(s->url = malloc(strlen(rl->cfg.upstream) + strlen(H->req_path(r)) + 1)))
        abort();
    strcpy(s->url, rl->cfg.upstream);
    strcat(s->url, H->req_path(r));
    for (size_t i = 0; i < nh; i++) {
        const char *v, *name = H->req_header_at(r, i, &v);
        if (!hop_by_hop(name)) s->hdr[k++] = (struct berth_header){name, v};
    }
    s->rl = rl;
    s->r = r;
    size_t blen;
    const char *body = H->req_body(r, &blen);
    struct berth_http_opts o = {.size = sizeof o, .method = H->req_method(r), .url = s->url,
                                .headers = s->hdr, .body = blen ? body : NULL,
                                .body_len = blen, .on_data = on_data, .on_head = on_head};
    const char *recv = H->req_header(r, "x-relay-recv");
    if (recv) o.recv_buffer = strtoul(recv, NULL, 10);
    const char *cancel = H->req_header(r, "x-relay-cancel");
    if (cancel) s->cancel_in = cancel[0];
    const char *mode = H->req_header(r, "x-relay-pull");
    if (mode) {
        s->body = body;
        s->body_len = blen;
        o.read_body = pull;
        /* a number: the length declared for it, whatever the body is (a plugin's mistake
         * the host must not turn into a second request) */
        o.body_len = !strcmp(mode, "chunked") ? SIZE_MAX
                     : strcmp(mode, "sized") ? (size_t)strtoull(mode, NULL, 10) : blen;
    }
    s->call = H->http_request(rl->self, &o, done, s);
    if (!s->call) {
        H->respond_error(r, 502, "bad_gateway", "cannot start the upstream call");
        stream_free(s);
        return;
    }
    s->next = rl->streams;
    if (s->next) s->next->pprev = &s->next;
    s->pprev = &rl->streams;
    rl->streams = s;
    H->on_close(r, gone, s);
}

static bool authorize(berth_req *r, void *arg)
{
    struct relay *rl = arg;
    const char *t = H->req_header(r, "x-relay-token");
    if (!rl->cfg.token || (t && !strcmp(t, rl->cfg.token))) return true;
    H->respond_error(r, 401, "unauthorized", "X-Relay-Token is required");
    return false;
}

/* POST /v1/relay/unlisten: gives the port back */
static void unlisten(berth_req *r, void *arg)
{
    struct relay *rl = arg;
    int rc = H->unlisten(rl->self, rl->cfg.listen);
    if (rc) H->respond_error(r, 404, "not_found", "%s", berth_strerror(rc));
    else H->respond(r, 200, "application/json", "{}\n", 3);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR || !BERTH_HOST_HAS(host, respond_abort))
        return BERTH_ENOTSUP;
    H = host;
    struct relay *rl = calloc(1, sizeof *rl);
    if (!rl) return BERTH_ENOMEM;
    rl->self = self;
    *state = rl;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    ((struct relay *)state)->cfg = *(const struct cfg *)cfg;
    return 0;
}

static int start(void *state)
{
    struct relay *rl = state;
    struct berth_listen_opts o = {.size = sizeof o, .addr = rl->cfg.listen,
                                  .max_body = rl->cfg.max_body,
                                  .max_connections = rl->cfg.max_connections,
                                  .max_buffered = rl->cfg.max_buffered,
                                  .unix_mode = (int)rl->cfg.unix_mode,
                                  .authorize = authorize};
    int rc = H->listen_opts(rl->self, &o, serve, rl);
    if (rc) return rc;
    return H->route(rl->self, "POST", "/v1/relay/unlisten", unlisten, rl);
}

/* Open streams are not waited for: a drain that outlasts berth.drain_timeout shows the host
 * cutting them short. */
static void stop(void *state)
{
    H->drained(((struct relay *)state)->self);
}

static void destroy(void *state)
{
    struct relay *rl = state;
    while (rl->streams) {
        struct stream *s = rl->streams;
        if (s->call) H->http_cancel(s->call);
        stream_free(s);     /* its request is left to the host, which aborts it */
    }
    free(rl);
}

BERTH_PLUGIN(.name = "relay", .version = "1.0",
             .description = "relays a listener to an upstream, for tests", .config = schema,
             .config_size = sizeof(struct cfg), .init = init, .configure = configure,
             .start = start, .stop = stop, .destroy = destroy);
