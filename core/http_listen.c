/* Listeners of berthd's HTTP server: the control socket, the TCP control listener and
 * plugins' listeners, each with its own limits (http_listener_set_opts). A listener is freed
 * with its last reference: its handle, each connection accepted on it, and a plugin's record. */
#include "http_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void http_listener_unref(struct listener *l)
{
    if (--l->refs) return;
    owner_table_free(&l->owners);
    free(l->addr);
    free(l->path);
    free(l->token);
    free(l);
}

static int parse_host_port(const char *addr, struct sockaddr_storage *ss)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (host[l - 1] != ']') return -1;
        host[l - 1] = 0;
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss) ? -1 : 0;
    }
    if (!strcmp(host, "localhost")) strcpy(host, "127.0.0.1");
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) ? -1 : 0;
}

static void listener_closed(uv_handle_t *h)
{
    http_listener_unref(h->data);
}

int http_listen(const char *addr, int mode, berth_http_handler h, void *arg, const char *token,
                berth_instance *owner, struct listener **out, char *err, size_t errlen)
{
    struct listener *l = xcalloc(1, sizeof *l);
    int rc;
    if (!strncmp(addr, "unix:", 5)) {
        l->path = xstrdup(addr + 5);
        struct stat st;
        if (!lstat(l->path, &st) && S_ISSOCK(st.st_mode)) unlink(l->path); /* stale */
        uv_pipe_init(C.loop, &l->u.pipe, 0);
        mode_t old = umask(0777 & ~(mode_t)mode);
        rc = uv_pipe_bind(&l->u.pipe, l->path);
        umask(old);
        if (!rc) rc = chmod(l->path, (mode_t)mode) ? uv_translate_sys_error(errno) : 0;
    } else {
        struct sockaddr_storage ss;
        if (parse_host_port(addr, &ss) < 0) {
            snprintf(err, errlen, "'%s' is not host:port or unix:PATH", addr);
            free(l);
            return BERTH_EINVAL;
        }
        uv_tcp_init(C.loop, &l->u.tcp);
        rc = uv_tcp_bind(&l->u.tcp, (struct sockaddr *)&ss, 0);
    }
    l->u.h.data = l;
    l->refs = 1;
    if (!rc) rc = uv_listen(&l->u.s, 511, http_on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, uv_strerror(rc));
        free(l->path);
        l->path = NULL;
        uv_close(&l->u.h, listener_closed);
        return BERTH_EIO;
    }
    l->addr = xstrdup(addr);
    l->handler = h;
    l->arg = arg;
    l->owner = owner;
    l->token = xstrdup(token);
    list_add_tail(&http_listeners, &l->link);
    *out = l;
    return 0;
}

/* Limits and the authorization hook of a plugin's listener; zero fields take berth.http's
 * values. Applied again when a reloaded instance takes the listener over. */
void http_listener_set_opts(struct listener *l, const struct berth_listen_opts *o)
{
    l->max_body = o ? o->max_body : 0;
    l->max_connections = o ? o->max_connections : 0;
    l->max_buffered = o ? o->max_buffered : 0;
    l->authorize = o ? o->authorize : NULL;
}

void http_listener_hold(struct listener *l)
{
    l->refs++;
}

/* Closes the listener unless it was closed already, and drops the holder's reference. */
void http_listener_release(struct listener *l)
{
    if (!l->closed) http_listener_close(l);
    http_listener_unref(l);
}

void http_listener_retarget(struct listener *l, berth_http_handler h, void *arg,
                            berth_instance *owner)
{
    l->handler = h;
    l->arg = arg;
    l->owner = owner;
}

const char *http_listener_addr(struct listener *l) { return l->addr; }
berth_instance *http_listener_owner(struct listener *l) { return l->owner; }

void http_listener_close(struct listener *l)
{
    if (l->closed) return;
    l->closed = true;
    list_del(&l->link);
    if (l->path) unlink(l->path);
    /* idle keep-alive connections on it go now; busy ones close after their answer */
    list_each(it, &http_conns) {
        struct conn *c = container_of(it, struct conn, link);
        if (c->l == l && !c->req) http_conn_close(c);
    }
    uv_close(&l->u.h, listener_closed);
}

/* An unloaded plugin cannot answer any more: whatever it left open is answered for it. */
void http_abort_owner(berth_instance *owner)
{
    list_each(it, &http_conns) {
        struct conn *c = container_of(it, struct conn, link);
        berth_req *r = c->req;
        if (!r || r->owner != owner) continue;
        if (r->state == REQ_DISPATCHED)
            req_respond_error(r, 503, "unavailable", "the plugin serving this was unloaded");
        else if (r->state == REQ_STREAMING) req_abort(r);    /* never a clean end */
    }
}

void http_close_all(void)
{
    http_trim_close();
    list_each(it, &http_listeners) http_listener_close(container_of(it, struct listener, link));
    list_each(it, &http_conns) {
        struct conn *c = container_of(it, struct conn, link);
        if (!c->req || c->req->state == REQ_PARSING) http_conn_close(c);
        else c->close_after = true;
    }
}
