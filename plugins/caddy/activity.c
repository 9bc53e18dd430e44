/* Requests through Caddy count as their tenant's activity.
 *
 * Requests in flight: every activity_interval berth asks Caddy how many requests each
 * upstream has open (GET /reverse_proxy/upstreams); a tenant with any is active. This is
 * what keeps a tenant with an open websocket or a long stream awake.
 *
 * Caddy's access log reaches berth through Caddy's `net` log writer: a TCP connection
 * carrying one JSON object per line, to `access_log` (a loopback host:port berth listens on
 * with a plain socket, as the writer speaks no HTTP). A line's request.host names the route
 * and thus the tenant; tenants seen are collected and published as one tenant.activity
 * (source "caddy") each per `activity_interval`, so a busy tenant costs one event per
 * interval, not one per request.
 *
 * Caddy logs a request when it ends, so the access log alone would count an open websocket
 * only once it closes. Lines longer than ACT_LINE_MAX are dropped, not buffered. */
#include "caddy.h"

#include <arpa/inet.h>
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACT_LINE_MAX 65536
#define ACT_CONNS_MAX 16

struct act_conn {
    struct act_conn *next;
    struct caddy *c;
    int fd;
    berth_watch *w;
    size_t len;
    bool skipping;                  /* inside a line that was too long */
    char buf[ACT_LINE_MAX];
};

static void conn_close(struct act_conn *k)
{
    struct caddy *c = k->c;
    for (struct act_conn **pp = &c->act_conns; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    c->act_nconns--;
    H->watch_stop(k->w);
    close(k->fd);
    free(k);
}

static void one_line(const char *line, size_t len, void *arg)
{
    struct caddy *c = arg;
    char host[CADDY_HOST_MAX];
    if (!caddy_log_host(line, len, host, sizeof host)) return;
    c->act_lines++;
    struct route *r = *host ? route_by_host(c, host) : NULL;
    if (r) r->active = true;
}

static void conn_readable(berth_watch *w, int events, void *arg)
{
    (void)w; (void)events;
    struct act_conn *k = arg;
    for (;;) {
        ssize_t n = read(k->fd, k->buf + k->len, sizeof k->buf - k->len);
        if (n > 0) {
            k->len += (size_t)n;
            caddy_lines_take(k->buf, &k->len, sizeof k->buf, &k->skipping, one_line, k->c);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        conn_close(k);              /* Caddy closed it (a reload reopens it) */
        return;
    }
}

static void accept_ready(berth_watch *w, int events, void *arg)
{
    (void)w; (void)events;
    struct caddy *c = arg;
    for (;;) {
        int fd = accept4(c->act_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        struct act_conn *k = c->act_nconns < ACT_CONNS_MAX ? malloc(sizeof *k) : NULL;
        if (!k) {
            close(fd);              /* Caddy opens one per log; more is not Caddy */
            continue;
        }
        k->c = c;
        k->fd = fd;
        k->len = 0;
        k->skipping = false;
        if (!(k->w = H->watch_fd(c->self, fd, BERTH_WATCH_READABLE, conn_readable, k))) {
            close(fd);
            free(k);
            continue;
        }
        k->next = c->act_conns;
        c->act_conns = k;
        c->act_nconns++;
    }
}

/* Requests in flight: Caddy counts them per upstream (GET /reverse_proxy/upstreams, no
 * config load). A tenant with any open request (a stream, a websocket) is active now, though
 * the access log will show the request only when it ends. */
static void busy(const char *addr, void *arg)
{
    struct caddy *c = arg;
    for (struct route *r = c->routes; r; r = r->next)
        if (*r->upstream && !strcmp(r->upstream, addr)) r->active = true;
}

static void upstreams_got(const struct berth_http_result *res, void *arg)
{
    struct caddy *c = arg;
    c->act_call = NULL;
    if (res->status != 200) return;     /* routes.c notices and reports a Caddy that is gone */
    caddy_busy_upstreams(res->body, res->body_len, busy, c);
}

static void poll_upstreams(struct caddy *c)
{
    if (c->act_call || !c->admin_url[0]) return;
    char url[300];
    snprintf(url, sizeof url, "%s/reverse_proxy/upstreams", c->admin_url);
    struct berth_header hdr[4];
    admin_headers(c, hdr, false);
    struct berth_http_opts o = {.size = sizeof o, .url = url, .unix_socket = c->admin_sock,
                                .headers = hdr, .timeout_ms = c->cfg.timeout,
                                .connect_timeout_ms = 2000};
    c->act_call = H->http_request(c->self, &o, upstreams_got, c);
}

static void publish_fire(berth_timer *t, void *arg)
{
    (void)t;
    struct caddy *c = arg;
    poll_upstreams(c);          /* what it finds is published on the next tick */
    struct berth_ev_tenant_activity ev = {sizeof ev, "caddy"};
    for (struct route *r = c->routes; r; r = r->next) {
        if (!r->active) continue;
        r->active = false;
        H->publish(c->self, BERTH_EV_TENANT_ACTIVITY, r->handle, &ev);
    }
}

static int parse_addr(const char *addr, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host) return BERTH_EINVAL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) return BERTH_EINVAL;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return BERTH_EINVAL;
    return 0;
}

int activity_start(struct caddy *c)
{
    c->act_fd = -1;
    c->act_timer = H->timer_start(c->self, (uint64_t)c->cfg.activity_interval,
                                  (uint64_t)c->cfg.activity_interval, publish_fire, c);
    if (!c->act_timer) return BERTH_ENOMEM;
    if (!c->cfg.access_log || !*c->cfg.access_log) return 0;
    struct sockaddr_in sa;
    if (parse_addr(c->cfg.access_log, &sa)) {
        H->log(c->self, BERTH_LOG_ERROR, "access_log '%s' is not IPv4 host:port",
               c->cfg.access_log);
        return BERTH_EINVAL;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    /* SO_REUSEPORT: during a reload the new instance binds while the old one still listens */
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 16)) {
        H->log(c->self, BERTH_LOG_ERROR, "cannot listen on %s for Caddy's access log: %s",
               c->cfg.access_log, strerror(errno));
        if (fd >= 0) close(fd);
        return BERTH_EIO;
    }
    c->act_fd = fd;
    c->act_watch = H->watch_fd(c->self, fd, BERTH_WATCH_READABLE, accept_ready, c);
    if (!c->act_watch) return BERTH_ENOMEM;
    return 0;
}

void activity_stop(struct caddy *c)
{
    if (c->act_call) H->http_cancel(c->act_call);
    c->act_call = NULL;
    while (c->act_conns) conn_close(c->act_conns);
    if (c->act_watch) H->watch_stop(c->act_watch);
    if (c->act_timer) H->timer_stop(c->act_timer);
    c->act_watch = NULL;
    c->act_timer = NULL;
    if (c->act_fd >= 0) close(c->act_fd);
    c->act_fd = -1;
}

/* logging.logs.<id>: Caddy's access logs, as JSON lines, to berth's socket */
cJSON *activity_logger(struct caddy *c)
{
    char addr[CADDY_ADDR_MAX];
    snprintf(addr, sizeof addr, "tcp/%s", c->cfg.access_log);
    cJSON *o = cJSON_CreateObject();
    cJSON *w = cJSON_AddObjectToObject(o, "writer");
    cJSON_AddStringToObject(w, "output", "net");
    cJSON_AddStringToObject(w, "address", addr);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "encoder"), "format", "json");
    cJSON *inc = cJSON_AddArrayToObject(o, "include");
    cJSON_AddItemToArray(inc, cJSON_CreateString("http.log.access"));
    return o;
}
