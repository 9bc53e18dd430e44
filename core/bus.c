/* The typed event bus. publish() copies the payload, gives it the next journal sequence and
 * queues it; delivery runs from an idle handle on the loop thread, FIFO, to subscribers of the
 * type and then to subscribers of all types. Events are journaled in batches, one transaction
 * per delivery round, before they are delivered. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

enum ftype { F_STR, F_I64, F_BOOL };
struct field { const char *name; enum ftype t; size_t off; };
struct evtype { const char *name; size_t size; const struct field *f; size_t nf; };

#define FS(T, m) {#m, F_STR, offsetof(T, m)}
#define FI(T, m) {#m, F_I64, offsetof(T, m)}
#define FB(T, m) {#m, F_BOOL, offsetof(T, m)}
#define EV(id, nm, T, ...) [id] = {nm, sizeof(T), (const struct field[]){__VA_ARGS__},      \
                                   sizeof((const struct field[]){__VA_ARGS__}) /              \
                                       sizeof(struct field)}
#define EV0(id, nm, T) [id] = {nm, sizeof(T), NULL, 0}

static const struct evtype builtin[BERTH_EV_BUILTIN_MAX_] = {
    EV(BERTH_EV_TENANT_CREATED, "tenant.created", struct berth_ev_tenant_created,
       FS(struct berth_ev_tenant_created, kind),
       FS(struct berth_ev_tenant_created, template_name)),
    EV0(BERTH_EV_TENANT_DELETED, "tenant.deleted", struct berth_ev_tenant_deleted),
    EV(BERTH_EV_TENANT_ACTIVITY, "tenant.activity", struct berth_ev_tenant_activity,
       FS(struct berth_ev_tenant_activity, source)),
    EV(BERTH_EV_TENANT_WAKE_REQUESTED, "tenant.wake_requested",
       struct berth_ev_tenant_wake_requested, FS(struct berth_ev_tenant_wake_requested, source)),
    EV(BERTH_EV_TENANT_SLEEP_REQUESTED, "tenant.sleep_requested",
       struct berth_ev_tenant_sleep_requested,
       FS(struct berth_ev_tenant_sleep_requested, source)),
    EV(BERTH_EV_TENANT_READY, "tenant.ready", struct berth_ev_tenant_ready,
       FS(struct berth_ev_tenant_ready, address)),
    EV0(BERTH_EV_TENANT_DELETING, "tenant.deleting", struct berth_ev_tenant_deleting),
    EV(BERTH_EV_TENANT_FAILED, "tenant.failed", struct berth_ev_tenant_failed,
       FS(struct berth_ev_tenant_failed, reason), FI(struct berth_ev_tenant_failed, attempts),
       FI(struct berth_ev_tenant_failed, retry_in_ms)),
    EV(BERTH_EV_TENANT_CHANGED, "tenant.changed", struct berth_ev_tenant_changed,
       FS(struct berth_ev_tenant_changed, desired),
       FS(struct berth_ev_tenant_changed, observed)),
    EV(BERTH_EV_CONTAINER_CREATED, "container.created", struct berth_ev_container_created,
       FS(struct berth_ev_container_created, id)),
    EV(BERTH_EV_CONTAINER_STARTED, "container.started", struct berth_ev_container_started,
       FS(struct berth_ev_container_started, id),
       FS(struct berth_ev_container_started, address)),
    EV(BERTH_EV_CONTAINER_STOPPED, "container.stopped", struct berth_ev_container_stopped,
       FS(struct berth_ev_container_stopped, id),
       FI(struct berth_ev_container_stopped, exit_code),
       FB(struct berth_ev_container_stopped, oom),
       FB(struct berth_ev_container_stopped, expected),
       FS(struct berth_ev_container_stopped, message)),
    EV(BERTH_EV_CONTAINER_REMOVED, "container.removed", struct berth_ev_container_removed,
       FS(struct berth_ev_container_removed, id)),
    EV(BERTH_EV_CONTAINER_HEALTH, "container.health", struct berth_ev_container_health,
       FB(struct berth_ev_container_health, healthy),
       FS(struct berth_ev_container_health, message)),
    EV(BERTH_EV_CONFIG_RELOADED, "config.reloaded", struct berth_ev_config_reloaded,
       FB(struct berth_ev_config_reloaded, ok), FI(struct berth_ev_config_reloaded, generation),
       FI(struct berth_ev_config_reloaded, errors),
       FS(struct berth_ev_config_reloaded, message)),
    EV(BERTH_EV_PLUGIN_LOADED, "plugin.loaded", struct berth_ev_plugin_loaded,
       FS(struct berth_ev_plugin_loaded, name), FS(struct berth_ev_plugin_loaded, module),
       FS(struct berth_ev_plugin_loaded, version)),
    EV(BERTH_EV_PLUGIN_UNLOADED, "plugin.unloaded", struct berth_ev_plugin_unloaded,
       FS(struct berth_ev_plugin_unloaded, name), FI(struct berth_ev_plugin_unloaded, leaks)),
    EV(BERTH_EV_TENANT_PROVISIONED, "tenant.provisioned", struct berth_ev_tenant_provisioned,
       FS(struct berth_ev_tenant_provisioned, provisioner)),
    EV(BERTH_EV_TENANT_PROVISION_FAILED, "tenant.provision_failed",
       struct berth_ev_tenant_provision_failed,
       FS(struct berth_ev_tenant_provision_failed, provisioner),
       FS(struct berth_ev_tenant_provision_failed, reason),
       FI(struct berth_ev_tenant_provision_failed, attempts),
       FI(struct berth_ev_tenant_provision_failed, retry_in_ms)),
    EV(BERTH_EV_TENANT_DEPROVISIONED, "tenant.deprovisioned",
       struct berth_ev_tenant_deprovisioned,
       FS(struct berth_ev_tenant_deprovisioned, provisioner)),
    EV(BERTH_EV_TENANT_DEPROVISION_FAILED, "tenant.deprovision_failed",
       struct berth_ev_tenant_deprovision_failed,
       FS(struct berth_ev_tenant_deprovision_failed, provisioner),
       FS(struct berth_ev_tenant_deprovision_failed, reason),
       FI(struct berth_ev_tenant_deprovision_failed, attempts),
       FI(struct berth_ev_tenant_deprovision_failed, retry_in_ms)),
    EV(BERTH_EV_TENANT_ABANDONED, "tenant.abandoned", struct berth_ev_tenant_abandoned,
       FS(struct berth_ev_tenant_abandoned, provisioner),
       FS(struct berth_ev_tenant_abandoned, state)),
};

struct bus_sub {
    struct list link;
    uint32_t type;
    berth_event_cb cb;
    void *arg;
    bool dead;
};

struct qev {
    struct list link;
    struct berth_event ev;
    void *payload;              /* deep copy */
    bool journaled;
    bool in_tx;                 /* journaled in a plugin's transaction not committed yet */
};

static struct {
    uv_idle_t idle;
    struct list subs, queue;
    char **custom, **owner; size_t ncustom;     /* owner: the registering module */
    uint64_t seq, published, unjournaled, since_trim;
    uint64_t retention;
    int depth;
    bool dead_subs, up, inited, journal_down;
} B = {.subs = {&B.subs, &B.subs}, .queue = {&B.queue, &B.queue}};

static const struct evtype *type_of(uint32_t t)
{
    if (t > 0 && t < BERTH_EV_BUILTIN_MAX_) return builtin[t].name ? &builtin[t] : NULL;
    return NULL;
}

const char *bus_name(uint32_t type)
{
    const struct evtype *e = type_of(type);
    if (e) return e->name;
    if (type >= BERTH_EV_CUSTOM_BASE && type - BERTH_EV_CUSTOM_BASE < B.ncustom)
        return B.custom[type - BERTH_EV_CUSTOM_BASE];
    return NULL;
}

uint32_t bus_lookup(const char *name)
{
    for (uint32_t t = 1; t < BERTH_EV_BUILTIN_MAX_; t++)
        if (builtin[t].name && !strcmp(builtin[t].name, name)) return t;
    for (size_t i = 0; i < B.ncustom; i++)
        if (!strcmp(B.custom[i], name)) return (uint32_t)(BERTH_EV_CUSTOM_BASE + i);
    return 0;
}

/* noun.verb: lower case words joined by one dot */
static bool event_name_valid(const char *n)
{
    const char *dot = strchr(n, '.');
    if (!dot || dot == n || !dot[1] || strchr(dot + 1, '.') || strlen(n) > 64) return false;
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
            return false;
    return true;
}

/* Registering an existing name returns its type, so a reloaded plugin keeps its numbers;
 * a name registered by another owner is refused (0). owner NULL is the core. */
uint32_t bus_register_owned(const char *name, const char *owner)
{
    if (!name || !event_name_valid(name)) return 0;
    uint32_t t = bus_lookup(name);
    if (t) {
        const char *o = bus_owner(t);
        bool same = t >= BERTH_EV_CUSTOM_BASE && (o && owner ? !strcmp(o, owner) : o == owner);
        return same ? t : 0;
    }
    B.custom = xrealloc(B.custom, (B.ncustom + 1) * sizeof *B.custom);
    B.owner = xrealloc(B.owner, (B.ncustom + 1) * sizeof *B.owner);
    B.custom[B.ncustom] = xstrdup(name);
    B.owner[B.ncustom] = xstrdup(owner);
    return (uint32_t)(BERTH_EV_CUSTOM_BASE + B.ncustom++);
}

uint32_t bus_register(const char *name)
{
    return bus_register_owned(name, NULL);
}

const char *bus_owner(uint32_t type)
{
    if (type >= BERTH_EV_CUSTOM_BASE && type - BERTH_EV_CUSTOM_BASE < B.ncustom)
        return B.owner[type - BERTH_EV_CUSTOM_BASE];
    return NULL;
}

char *bus_payload_json(uint32_t type, const void *payload)
{
    const struct evtype *et = type_of(type);
    if (!et) return xstrdup(((const struct berth_ev_custom *)payload)->json);
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < et->nf; i++) {
        const struct field *f = &et->f[i];
        const char *p = (const char *)payload + f->off;
        if (f->t == F_STR) {
            const char *s = *(const char *const *)p;
            if (s) cJSON_AddStringToObject(o, f->name, s);
            else cJSON_AddNullToObject(o, f->name);
        } else if (f->t == F_I64) {
            cJSON_AddNumberToObject(o, f->name, (double)*(const int64_t *)p);
        } else {
            cJSON_AddBoolToObject(o, f->name, *(const bool *)p);
        }
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *r = utf8_repaired(s);     /* a driver's message may be an upstream's raw bytes */
    cJSON_free(s);
    return r;
}

/* A payload from an older plugin may be shorter: copy what it has, zero the rest. */
static void *copy_payload(const struct evtype *et, const void *src)
{
    size_t have = *(const size_t *)src;
    char *dst = xcalloc(1, et->size);
    memcpy(dst, src, have < et->size ? have : et->size);
    *(size_t *)dst = et->size;
    for (size_t i = 0; i < et->nf; i++) {
        if (et->f[i].t != F_STR) continue;
        char **s = (char **)(dst + et->f[i].off);
        if (et->f[i].off + sizeof(char *) > have) *s = NULL;
        else *s = xstrdup(*s);
    }
    return dst;
}

static void free_payload(uint32_t type, void *p)
{
    const struct evtype *et = type_of(type);
    if (et) {
        for (size_t i = 0; i < et->nf; i++)
            if (et->f[i].t == F_STR) free(*(char **)((char *)p + et->f[i].off));
    } else {
        free((char *)((struct berth_ev_custom *)p)->json);
    }
    free(p);
}

/* Events are delivered even when their batch cannot be stored (a full disk, a database
 * deleted under berthd): subscribers still see them; the log says the journal has a gap. */
static void journal_pending(void)
{
    if (!B.unjournaled || !C.store) return;
    bool ok = store_begin(C.store) == 0, began = ok;
    uint64_t first = 0, last = 0;
    list_each(it, &B.queue) {
        struct qev *q = container_of(it, struct qev, link);
        if (q->journaled) continue;
        if (!first) first = q->ev.seq;
        last = q->ev.seq;
        if (ok && store_journal(C.store, q->ev.seq, q->ev.time_ms, q->ev.type_name,
                                q->ev.tenant, q->ev.json) < 0)
            ok = false;
        q->journaled = true;
        B.since_trim++;
    }
    if (began && store_commit(C.store) < 0) ok = false;
    B.unjournaled = 0;
    if (!ok && !B.journal_down)
        log_error("event journal: events %" PRIu64 "..%" PRIu64 " were delivered but not all "
                  "stored; the journal has gaps until the store accepts writes again",
                  first, last);
    if (ok && B.journal_down) log_info("event journal: storing events again");
    B.journal_down = !ok;
    if (ok && B.retention && B.since_trim >= 1024 && B.seq > B.retention) {
        store_journal_trim(C.store, B.seq - B.retention + 1);
        B.since_trim = 0;
    }
}

/* A plugin's transaction about to commit takes the pending events with it: one commit, not
 * two, for a plugin that publishes per write (the quota proxy's quota.call). An insert that
 * fails is undone alone (SQLite's statement rollback) and leaves it and those after it to the
 * bus's own batch; one that takes the whole transaction down fails its commit, and
 * journal_after hands them all back. They stay queued, delivered by the next round. */
static void journal_before(void)
{
    if (!B.unjournaled || !C.store) return;
    list_each(it, &B.queue) {
        struct qev *q = container_of(it, struct qev, link);
        if (q->journaled) continue;
        if (store_journal(C.store, q->ev.seq, q->ev.time_ms, q->ev.type_name, q->ev.tenant,
                          q->ev.json) < 0)
            return;
        q->journaled = q->in_tx = true;
    }
}

static void journal_after(bool committed)
{
    list_each(it, &B.queue) {
        struct qev *q = container_of(it, struct qev, link);
        if (!q->in_tx) continue;
        q->in_tx = false;
        if (committed) {
            B.unjournaled--;
            B.since_trim++;
        } else {
            q->journaled = false;       /* rolled back with it: the bus's batch writes it */
        }
    }
}

static void deliver(const struct berth_event *ev)
{
    B.depth++;
    for (int pass = 0; pass < 2; pass++) {
        list_each(it, &B.subs) {
            struct bus_sub *s = container_of(it, struct bus_sub, link);
            if (s->dead || s->type != (pass ? 0 : ev->type)) continue;
            s->cb(ev, s->arg);
        }
    }
    if (--B.depth == 0 && B.dead_subs) {
        list_each(it, &B.subs) {
            struct bus_sub *s = container_of(it, struct bus_sub, link);
            if (!s->dead) continue;
            list_del(&s->link);
            free(s);
        }
        B.dead_subs = false;
    }
}

void bus_flush(void)
{
    if (B.depth) return;        /* a handler publishing: the outer round delivers it */
    while (!list_empty(&B.queue)) {
        journal_pending();
        struct qev *q = container_of(B.queue.next, struct qev, link);
        list_del(&q->link);
        deliver(&q->ev);
        free_payload(q->ev.type, q->payload);
        free((char *)q->ev.tenant);
        free((char *)q->ev.json);
        free(q);
    }
    if (B.up) uv_idle_stop(&B.idle);
}

static void on_idle(uv_idle_t *h)
{
    (void)h;
    bus_flush();
}

int bus_publish(uint32_t type, const char *tenant, const void *payload)
{
    const char *name = bus_name(type);
    if (!name || !payload || *(const size_t *)payload < sizeof(size_t)) return BERTH_EINVAL;
    if (tenant && !handle_valid(tenant)) return BERTH_EINVAL;
    const struct evtype *et = type_of(type);
    void *copy;
    if (et) {
        copy = copy_payload(et, payload);
    } else {
        const char *json = ((const struct berth_ev_custom *)payload)->json;
        char err[160];
        if (!json || json_text_check(json, strlen(json), err, sizeof err)) return BERTH_EINVAL;
        if (!json_flat_object(json)) {      /* most events are flat: no tree for them */
            cJSON *parsed = cJSON_Parse(json);
            bool ok = cJSON_IsObject(parsed);
            cJSON_Delete(parsed);
            if (!ok) return BERTH_EINVAL;
        }
        struct berth_ev_custom *c = xcalloc(1, sizeof *c);
        c->size = sizeof *c;
        c->json = xstrdup(json);
        copy = c;
    }
    struct qev *q = xcalloc(1, sizeof *q);
    q->payload = copy;
    q->ev = (struct berth_event){
        .type = type, .type_name = name, .seq = ++B.seq, .time_ms = wall_ms(),
        .tenant = xstrdup(tenant), .payload = copy, .json = bus_payload_json(type, copy),
    };
    list_add_tail(&B.queue, &q->link);
    B.unjournaled++;
    B.published++;
    if (B.up && !uv_is_active((uv_handle_t *)&B.idle)) uv_idle_start(&B.idle, on_idle);
    return 0;
}

struct bus_sub *bus_subscribe(uint32_t type, berth_event_cb cb, void *arg)
{
    if (type && !bus_name(type)) return NULL;
    struct bus_sub *s = xcalloc(1, sizeof *s);
    s->type = type;
    s->cb = cb;
    s->arg = arg;
    list_add_tail(&B.subs, &s->link);
    return s;
}

/* Safe from inside a handler: the entry is unlinked once the current round ends. */
void bus_unsubscribe(struct bus_sub *s)
{
    if (!s) return;
    if (B.depth) {
        s->dead = true;
        B.dead_subs = true;
        return;
    }
    list_del(&s->link);
    free(s);
}

uint64_t bus_last_seq(void) { return B.seq; }
uint64_t bus_published(void) { return B.published; }
void bus_set_retention(uint64_t n) { B.retention = n; }

int bus_init(void)
{
    list_init(&B.subs);
    list_init(&B.queue);
    B.seq = C.store ? store_max_seq(C.store) : 0;
    if (C.store) store_set_tx_hook(C.store, journal_before, journal_after);
    if (C.loop) {
        uv_idle_init(C.loop, &B.idle);
        B.up = true;
    }
    B.inited = true;
    return 0;
}

void bus_shutdown(void)
{
    B.up = false;           /* the flush below must not restart the handle */
    bus_flush();
    if (C.store) store_set_tx_hook(C.store, NULL, NULL);
    /* berthd that failed to start (no store) never initialised the handle */
    if (C.loop && B.inited) {
        if (uv_is_active((uv_handle_t *)&B.idle)) uv_idle_stop(&B.idle);
        uv_close((uv_handle_t *)&B.idle, NULL);
    }
    B.inited = false;
    list_each(it, &B.subs) free(container_of(it, struct bus_sub, link));
    list_init(&B.subs);
    for (size_t i = 0; i < B.ncustom; i++) free(B.custom[i]), free(B.owner[i]);
    free(B.custom);
    free(B.owner);
    B.custom = B.owner = NULL;
    B.ncustom = 0;
}
