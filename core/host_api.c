/* The host API table (struct berth_host): what a plugin may ask of berthd. Each wrapper
 * checks its arguments, records the resource it hands out on the calling instance (so an
 * unload can cancel it) and calls the subsystem that does the work. */
#include "plugin_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>


static const char *h_name(berth_instance *self) { return self->name; }
static const char *h_state_dir(berth_instance *self) { (void)self; return C.state_dir; }
static int64_t h_now(berth_instance *self) { (void)self; return wall_ms(); }

static void h_log(berth_instance *self, enum berth_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    blogv(lvl, self->comp, fmt, ap);
    va_end(ap);
}

static void h_drained(berth_instance *self)
{
    self->drained = true;
    plugin_schedule_reap();
}

static void timer_fire(uv_timer_t *h)
{
    struct berth_timer *t = h->data;
    t->cb(t, t->arg);
}

static berth_timer *h_timer_start(berth_instance *self, uint64_t timeout, uint64_t repeat,
                                  berth_timer_cb cb, void *arg)
{
    if (!cb || self->st == I_DESTROYED) return NULL;
    struct berth_timer *t = xcalloc(1, sizeof *t);
    uv_timer_init(C.loop, &t->t);
    t->t.data = t;
    t->cb = cb;
    t->arg = arg;
    res_attach(self, &t->res, RES_TIMER);
    plugin_handle_track(self, &t->hr, (uv_handle_t *)&t->t);
    uv_timer_start(&t->t, timer_fire, timeout, repeat);
    return t;
}

static void h_timer_stop(berth_timer *t)
{
    if (t && t->res.owner && !uv_is_closing((uv_handle_t *)&t->t)) plugin_timer_release(t);
}

static void watch_fire(uv_poll_t *p, int status, int events)
{
    struct berth_watch *w = p->data;
    int ev = status < 0 ? BERTH_WATCH_READABLE | BERTH_WATCH_WRITABLE
                        : ((events & UV_READABLE) ? BERTH_WATCH_READABLE : 0) |
                              ((events & UV_WRITABLE) ? BERTH_WATCH_WRITABLE : 0);
    w->cb(w, ev, w->arg);
}

static berth_watch *h_watch_fd(berth_instance *self, int fd, int events, berth_watch_cb cb,
                               void *arg)
{
    struct berth_watch *w = xcalloc(1, sizeof *w);
    if (!cb || uv_poll_init(C.loop, &w->p, fd) < 0) {
        free(w);
        return NULL;
    }
    w->p.data = w;
    w->cb = cb;
    w->arg = arg;
    res_attach(self, &w->res, RES_WATCH);
    plugin_handle_track(self, &w->hr, (uv_handle_t *)&w->p);
    uv_poll_start(&w->p, ((events & BERTH_WATCH_READABLE) ? UV_READABLE : 0) |
                  ((events & BERTH_WATCH_WRITABLE) ? UV_WRITABLE : 0), watch_fire);
    return w;
}

static void h_watch_stop(berth_watch *w)
{
    if (w && !uv_is_closing((uv_handle_t *)&w->p)) plugin_watch_release(w);
}

static void sub_fire(const struct berth_event *ev, void *arg)
{
    struct berth_sub *s = arg;
    if (s->res.owner && s->res.owner->st <= I_DRAINING) s->cb(ev, s->arg);
}

static berth_sub *h_subscribe(berth_instance *self, uint32_t type, berth_event_cb cb, void *arg)
{
    if (!cb) return NULL;
    struct berth_sub *s = xcalloc(1, sizeof *s);
    s->cb = cb;
    s->arg = arg;
    s->s = bus_subscribe(type, sub_fire, s);
    if (!s->s) {
        free(s);
        return NULL;
    }
    res_attach(self, &s->res, RES_SUB);
    return s;
}

static void h_unsubscribe(berth_sub *s)
{
    if (!s) return;
    res_detach(&s->res);
    bus_unsubscribe(s->s);
    free(s);
}

/* Subscribers trust an event's type: the core's events come from the core, and a custom
 * type from the module that registered it (any instance of it, before or after a reload). */
static int h_publish(berth_instance *self, uint32_t type, const char *tenant, const void *p)
{
    const char *name = bus_name(type), *owner = bus_owner(type);
    /* tenant.activity is every plugin's to report: requests it served for a tenant */
    if (type == BERTH_EV_TENANT_ACTIVITY && tenant) return bus_publish(type, tenant, p);
    if (name && (type < BERTH_EV_CUSTOM_BASE || !owner || strcmp(owner, self->mod->d->name))) {
        blog(BERTH_LOG_ERROR, self->comp, "may not publish %s: it belongs to %s", name,
             owner ? owner : "the core");
        return BERTH_EPERM;
    }
    return bus_publish(type, tenant, p);
}

static uint32_t h_event_register(berth_instance *self, const char *name)
{
    uint32_t t = bus_register_owned(name, self->mod->d->name);
    if (!t && name && bus_lookup(name)) {
        const char *owner = bus_owner(bus_lookup(name));
        blog(BERTH_LOG_ERROR, self->comp, "may not register event %s: it belongs to %s", name,
             owner ? owner : "the core");
    }
    return t;
}

static uint32_t h_event_lookup(berth_instance *self, const char *name)
{
    (void)self;
    return bus_lookup(name);
}

static const char *h_event_name(berth_instance *self, uint32_t type)
{
    (void)self;
    return bus_name(type);
}

/* Store wrappers: a plugin's statements run as its module (tables <module>_*); every failure
 * is logged here, once, with the plugin's component. */
static int store_said(berth_instance *self, const char *what, int rc, char *err)
{
    if (rc) blog(BERTH_LOG_ERROR, self->comp, "store%s: %s", what, err ? err : berth_strerror(rc));
    free(err);
    return rc;
}

static int h_store_migrate(berth_instance *self, const char *const *steps, size_t n)
{
    char *err = NULL;
    int rc = store_migrate_owner(C.store, self->mod->d->name, steps, n, &err);
    return store_said(self, " migration failed", rc, err);
}

static int h_store_exec(berth_instance *self, const char *sql, const char *const *params,
                        size_t n, berth_row_cb cb, void *arg)
{
    char *err = NULL;
    if (!sql) return BERTH_EINVAL;
    int rc = store_plugin_exec(C.store, self->mod->d->name, sql, params, n, cb, arg, &err);
    return store_said(self, "", rc, err);
}

static int h_store_query(berth_instance *self, const char *sql, const struct berth_value *params,
                         size_t n, berth_value_row_cb cb, void *arg)
{
    char *err = NULL;
    if (!sql) return BERTH_EINVAL;
    int rc = store_plugin_query(C.store, self->mod->d->name, sql, params, n, cb, arg, &err);
    return store_said(self, "", rc, err);
}

static int h_store_tx_flags(berth_instance *self, berth_tx_fn fn, void *arg, unsigned flags)
{
    char *err = NULL;
    if (flags & ~BERTH_TX_NOSYNC) return BERTH_EINVAL;
    int rc = store_plugin_tx(C.store, self->mod->d->name, fn, arg, flags, &err);
    return store_said(self, " transaction", rc, err);
}

static int h_store_tx(berth_instance *self, berth_tx_fn fn, void *arg)
{
    return h_store_tx_flags(self, fn, arg, 0);
}

static berth_call *h_http_request(berth_instance *self, const struct berth_http_opts *o,
                                  berth_http_done cb, void *arg)
{
    return http_call(self, o, cb, arg);
}

static int h_route(berth_instance *self, const char *method, const char *pattern,
                   berth_http_handler h, void *arg)
{
    const char *core = method && pattern ? route_shadows_core(method, pattern) : NULL;
    if (core) {
        blog(BERTH_LOG_ERROR, self->comp, "may not route %s %s: it would shadow the core's "
             "%s %s", method, pattern, method, core);
        return BERTH_EPERM;
    }
    return route_add(self, method, pattern, h, arg, NULL);
}

/* A listener passes to the new instance of the same name, so a reload refuses nothing. */
static int h_listen_opts(berth_instance *self, const struct berth_listen_opts *opts,
                         berth_http_handler h, void *arg)
{
    struct berth_listen_opts lo = {0};
    if (!opts || opts->size < offsetof(struct berth_listen_opts, addr) + sizeof lo.addr)
        return BERTH_EINVAL;
    memcpy(&lo, opts, opts->size < sizeof lo ? opts->size : sizeof lo);
    const char *addr = lo.addr;
    if (!addr || !h || lo.unix_mode < 0 || lo.unix_mode > 0777) return BERTH_EINVAL;
    struct plisten *p = plugin_namesake_listener(self, addr);
    if (p) {
        res_detach(&p->res);
        res_attach(self, &p->res, RES_LISTEN);
        http_listener_retarget(p->l, h, arg, self);
        http_listener_set_opts(p->l, &lo);
        blog(BERTH_LOG_INFO, self->comp, "took over listener %s", addr);
        return 0;
    }
    struct listener *l;
    char err[256];
    int rc = http_listen(addr, lo.unix_mode ? lo.unix_mode : 0660, h, arg, NULL, self, &l, err,
                         sizeof err);
    if (rc) {
        blog(BERTH_LOG_ERROR, self->comp, "%s", err);
        return rc;
    }
    http_listener_set_opts(l, &lo);
    p = xcalloc(1, sizeof *p);
    p->l = l;
    http_listener_hold(l);      /* the record outlives a close at shutdown */
    res_attach(self, &p->res, RES_LISTEN);
    return 0;
}

static int h_listen(berth_instance *self, const char *addr, berth_http_handler h, void *arg)
{
    struct berth_listen_opts o = {.size = sizeof o, .addr = addr};
    return h_listen_opts(self, &o, h, arg);
}

/* Closes the instance's listener now (the port is free when this returns); requests already
 * dispatched on it are still answered. */
static int h_unlisten(berth_instance *self, const char *addr)
{
    if (!addr) return BERTH_EINVAL;
    list_each(it, &self->res) {
        struct res *r = container_of(it, struct res, link);
        if (r->kind != RES_LISTEN) continue;
        struct plisten *p = (struct plisten *)r;
        if (strcmp(http_listener_addr(p->l), addr)) continue;
        res_detach(r);
        http_listener_release(p->l);
        free(p);
        return 0;
    }
    return BERTH_ENOENT;
}

static void h_respond_error(berth_req *r, int status, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    req_respond_error(r, status, code, "%s", msg);
}

static int h_spec_contributor(berth_instance *self, berth_spec_fn fn, void *arg)
{
    return spec_contrib_add(self, fn, arg);
}

/* The running generation's block: a plugin reads it when it needs it (and again after
 * config.reloaded), so it never holds a struct of a generation that is gone. */
static const void *h_template_config(berth_instance *self, const char *template_name)
{
    return template_name ? tmpl_block(tmpl_find(template_name), self->name) : NULL;
}

static int h_tenant_get(berth_instance *self, const char *handle, struct berth_tenant_info *out)
{
    (void)self;
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    /* the struct grows at the end: a plugin built against the first version still works */
    if (!out || out->size < offsetof(struct berth_tenant_info, idle_timeout_ms))
        return BERTH_EINVAL;
    tenant_fill_info(t, out);
    return 0;
}

static int h_tenant_each(berth_instance *self, berth_tenant_fn fn, void *arg)
{
    (void)self;
    return tenants_each(fn, arg);
}

static int h_set_desired(berth_instance *self, const char *handle, enum berth_desired d,
                         const char *reason)
{
    return tenant_desire(handle, d, reason ? reason : self->name);
}

static int h_finalizer(berth_instance *self, const char *handle, const char *name, bool add)
{
    if (!name || !*name || strlen(name) > 64) return BERTH_EINVAL;
    char full[160];
    snprintf(full, sizeof full, "%s/%s", self->name, name);
    return tenant_finalizer(handle, full, add);
}

static int h_finalizer_add(berth_instance *self, const char *handle, const char *name)
{
    return h_finalizer(self, handle, name, true);
}

static int h_finalizer_release(berth_instance *self, const char *handle, const char *name)
{
    return h_finalizer(self, handle, name, false);
}

static int h_busy_hold(berth_instance *self, const char *handle)
{
    return tenant_busy(self, handle, true);
}

static int h_busy_release(berth_instance *self, const char *handle)
{
    return tenant_busy(self, handle, false);
}

static int h_health_report(berth_instance *self, const char *handle, bool healthy,
                           const char *message)
{
    (void)self;
    return tenant_health(handle, healthy, message);
}

static int h_tenant_report_crash(berth_instance *self, const char *handle, const char *reason)
{
    (void)self;
    return tenant_restart_crash(handle, reason);
}

static int h_status_set(berth_instance *self, const char *handle, const char *json)
{
    return tenant_status_set(self, handle, json);
}

static int h_provisioner_register(berth_instance *self, const struct berth_provisioner *p,
                                  void *state)
{
    return provisioner_add(self, p, state);
}

static int h_tenant_reprovision(berth_instance *self, const char *handle)
{
    return tenant_reprovision(self, handle);
}

static int h_driver_register(berth_instance *self, const struct berth_driver *d, void *state)
{
    return driver_add(self, d, state);
}

const struct berth_host berth_host_api = {
    .size = sizeof(struct berth_host),
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .name = h_name,
    .state_dir = h_state_dir,
    .log = h_log,
    .now_ms = h_now,
    .drained = h_drained,
    .timer_start = h_timer_start,
    .timer_stop = h_timer_stop,
    .watch_fd = h_watch_fd,
    .watch_stop = h_watch_stop,
    .subscribe = h_subscribe,
    .unsubscribe = h_unsubscribe,
    .publish = h_publish,
    .event_register = h_event_register,
    .event_lookup = h_event_lookup,
    .event_name = h_event_name,
    .store_migrate = h_store_migrate,
    .store_exec = h_store_exec,
    .store_query = h_store_query,
    .store_tx = h_store_tx,
    .http_request = h_http_request,
    .http_cancel = http_call_cancel,
    .route = h_route,
    .listen = h_listen,
    .req_method = req_method,
    .req_path = req_path,
    .req_query = req_query,
    .req_param = req_param,
    .req_header = req_header,
    .req_body = req_body,
    .respond = req_respond,
    .respond_error = h_respond_error,
    .respond_start = req_start,
    .respond_write = req_write,
    .respond_end = req_end,
    .on_close = req_on_close,
    .on_drain = req_on_drain,
    .spec_contributor = h_spec_contributor,
    .spec_handle = spec_handle,
    .spec_template = spec_template,
    .spec_config = spec_config,
    .spec_port = spec_port,
    .spec_env_count = spec_env_count,
    .spec_env = spec_env,
    .spec_setenv = spec_setenv,
    .tenant_get = h_tenant_get,
    .tenant_each = h_tenant_each,
    .tenant_set_desired = h_set_desired,
    .finalizer_add = h_finalizer_add,
    .finalizer_release = h_finalizer_release,
    .driver_register = h_driver_register,
    .op_done = op_done,
    .op_list_add = op_list_add,
    .driver_report = driver_report,
    .driver_relist = driver_relist,
    .busy_hold = h_busy_hold,
    .busy_release = h_busy_release,
    .health_report = h_health_report,
    .tenant_report_crash = h_tenant_report_crash,
    .tenant_status_set = h_status_set,
    .tenant_wait_ready = tenant_wait_ready,
    .provisioner_register = h_provisioner_register,
    .op_setenv = op_setenv,
    .op_label = op_label,
    .tenant_reprovision = h_tenant_reprovision,
    .spec_label_count = spec_label_count,
    .spec_label = spec_label,
    .template_config = h_template_config,
    .metric_register = metric_register,
    .metric_add = metric_add,
    .metric_set = metric_set,
    .store_tx_flags = h_store_tx_flags,
    .http_pause = http_call_pause,
    .http_resume = http_call_resume,
    .req_header_count = req_header_count,
    .req_header_at = req_header_at,
    .req_peer = req_peer,
    .listen_opts = h_listen_opts,
    .unlisten = h_unlisten,
    .respond_with = req_respond_with,
    .respond_abort = req_abort,
    .dependency_report = dep_report,
    .req_conn_claim = req_conn_claim,
};
