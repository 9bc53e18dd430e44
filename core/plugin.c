/* Plugin loader. A module is a .so loaded once per file identity from a private memfd copy
 * (dlopen caches by path, so a replaced file must get a new path to run its new code); an
 * instance is one configured use of a module. Every resource an instance takes through the
 * host table (host_api.c) is linked into it, so unloading can cancel what is left and wait
 * until no callback into the module can be pending before dlclose. */
#include "core.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugin_int.h"

static struct list modules = {&modules, &modules};
static struct list instances = {&instances, &instances};
static struct list handles_all = {&handles_all, &handles_all};
static uv_timer_t reap_timer;
static bool reap_init;
static void (*all_stopped)(void);

const char *inst_name(const berth_instance *i) { return i->name; }
const char *inst_comp(const berth_instance *i) { return i->comp; }
bool inst_running(const berth_instance *i) { return i->st == I_RUNNING; }

void res_attach(berth_instance *owner, struct res *r, int kind)
{
    r->owner = owner;
    r->kind = kind;
    list_add_tail(&owner->res, &r->link);
}

void res_detach(struct res *r)
{
    if (r->owner) list_del(&r->link);
}


void inst_pending(berth_instance *i, int delta)
{
    i->reqs += delta;
    if (i->st >= I_DRAINING) plugin_schedule_reap();
}

/* ---- modules ---- */

static bool same_file(const struct module *m, const struct stat *st)
{
    return m->dev == st->st_dev && m->ino == st->st_ino && m->size == st->st_size &&
           m->mtime.tv_sec == st->st_mtim.tv_sec && m->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static void module_unref(struct module *m)
{
    if (--m->refs) return;
    list_del(&m->link);
    dlclose(m->dl);
    close(m->memfd);
    free(m->path);
    free(m);
}

/* Like sshd's StrictModes: code that runs as berthd must not be replaceable by others. */
static bool perms_ok(const char *path, const struct stat *st, struct errs *e,
                     const struct cnode *at)
{
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        errs_add(e, at, "refusing to load %s: it is writable by group or others (chmod go-w)",
                 path);
        return false;
    }
    if (st->st_uid != 0 && st->st_uid != geteuid()) {
        errs_add(e, at, "refusing to load %s: owned by uid %u, neither root nor berthd's user",
                 path, (unsigned)st->st_uid);
        return false;
    }
    char *dup = xstrdup(path);
    const char *dir = dirname(dup);
    struct stat ds;
    bool ok = true;
    if (stat(dir, &ds) == 0 && (ds.st_mode & (S_IWGRP | S_IWOTH)) && !(ds.st_mode & S_ISVTX)) {
        errs_add(e, at, "refusing to load %s: its directory %s is writable by group or others",
                 path, dir);
        ok = false;
    }
    free(dup);
    return ok;
}

static int copy_fd(int from, int to)
{
    char b[65536];
    ssize_t n;
    while ((n = read(from, b, sizeof b)) > 0)
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(to, b + off, (size_t)(n - off));
            if (w < 0) return -1;
            off += w;
        }
    return n < 0 ? -1 : 0;
}

/* The copy is what dlopen maps, so the copy is what gets checked; a file rewritten while it
 * was read may be a mix of two versions, and is refused rather than trusted. The copy is
 * sealed so nothing can change it between the check and dlopen. */
static int copy_checked(int fd, const struct stat *st, const char *path, struct errs *e,
                        const struct cnode *at)
{
    int mfd = memfd_create("berth-plugin", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0 || copy_fd(fd, mfd) < 0) {
        errs_add(e, at, "cannot copy plugin %s: %s", path, strerror(errno));
        if (mfd >= 0) close(mfd);
        return -1;
    }
    struct stat after;
    char why[256];
    if (fstat(fd, &after) < 0 || after.st_size != st->st_size ||
        after.st_mtim.tv_sec != st->st_mtim.tv_sec ||
        after.st_mtim.tv_nsec != st->st_mtim.tv_nsec) {
        errs_add(e, at, "refusing to load %s: it changed while it was being read; reload "
                 "again once it is completely written", path);
        close(mfd);
        return -1;
    }
    if (elf_check_fd(mfd, why, sizeof why)) {
        errs_add(e, at, "refusing to load %s: %s", path, why);
        close(mfd);
        return -1;
    }
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    return mfd;
}

static struct module *module_load(const char *path, struct errs *e, const struct cnode *at)
{
    struct stat st;
    int fd = open_regular(path, &st);
    if (fd == -2) {
        errs_add(e, at, "refusing to load %s: it is not a regular file", path);
        return NULL;
    }
    if (fd < 0) {
        errs_add(e, at, "cannot open plugin %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!perms_ok(path, &st, e, at)) {
        close(fd);
        return NULL;
    }
    list_each(it, &modules) {
        struct module *m = container_of(it, struct module, link);
        if (!strcmp(m->path, path) && same_file(m, &st)) {
            close(fd);
            m->refs++;
            return m;
        }
    }
    int mfd = copy_checked(fd, &st, path, e, at);
    close(fd);
    if (mfd < 0) return NULL;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", mfd);
    void *dl = dlopen(proc, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        errs_add(e, at, "cannot load plugin %s: %s", path, dlerror());
        close(mfd);
        return NULL;
    }
    const struct berth_plugin *d = dlsym(dl, BERTH_PLUGIN_SYMBOL);
    const char *why = NULL;
    char msg[256];
    if (!d) {
        why = "it exports no " BERTH_PLUGIN_SYMBOL " descriptor; is it a berth plugin built "
              "with BERTH_PLUGIN()?";
    } else if (d->abi_major != BERTH_ABI_MAJOR) {
        snprintf(msg, sizeof msg, "it was built for plugin ABI %u.%u and this berthd speaks "
                 "%d.%d; rebuild it against the installed SDK", d->abi_major, d->abi_minor,
                 BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
        why = msg;
    } else if (d->abi_minor > BERTH_ABI_MINOR) {
        snprintf(msg, sizeof msg, "it needs plugin ABI %u.%u, newer than this berthd's %d.%d",
                 d->abi_major, d->abi_minor, BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
        why = msg;
    } else if (d->struct_size < offsetof(struct berth_plugin, destroy) + sizeof(void *)) {
        why = "its descriptor is truncated (struct_size too small)";
    } else if (!d->name || !d->init) {
        why = "its descriptor has no name or no init function";
    }
    if (why) {
        errs_add(e, at, "refusing to load %s: %s", path, why);
        dlclose(dl);
        close(mfd);
        return NULL;
    }
    struct module *m = xcalloc(1, sizeof *m);
    m->path = xstrdup(path);
    m->dev = st.st_dev;
    m->ino = st.st_ino;
    m->size = st.st_size;
    m->mtime = st.st_mtim;
    m->memfd = mfd;
    m->dl = dl;
    m->d = d;
    m->refs = 1;
    list_add_tail(&modules, &m->link);
    return m;
}

/* ---- staging a generation's instances ---- */

struct inst_meta { const char *module, *path; };
static const struct berth_cfg_item inst_schema[] = {
    {"module", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct inst_meta, module),
     "module to load, <plugin_dir>/<module>.so (default: the instance name)", 0, NULL, NULL},
    {"path", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct inst_meta, path),
     "explicit path of the .so (overrides module)", 0, NULL, NULL},
    {0},
};

static berth_instance *find_running(const struct gen *g, const char *name)
{
    for (size_t i = 0; g && i < g->ninst; i++)
        if (!strcmp(g->inst[i]->name, name)) return g->inst[i];
    return NULL;
}

static char *resolve(const char *base, const char *p)
{
    return p[0] == '/' ? xstrdup(p) : xasprintf("%s/%s", base, p);
}

static void unstage(berth_instance *i)
{
    arena_free(&i->new_arena);
    i->new_cfg = NULL;
    i->new_node = NULL;
}

static void inst_free(berth_instance *i)
{
    arena_free(&i->arena);
    unstage(i);
    if (i->mod) module_unref(i->mod);
    free(i->error);
    free(i->name);
    free(i);
}

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_';
}

/* validate() returns a message, not a position: blame the value of the block key the message
 * names (the longest such key), so a value from a later file is not blamed on the file that
 * opened the block; the block itself if it names none. A named key whose value is a mapping
 * is searched the same way ("schedule.cron: ..." blames the cron value). */
const struct cnode *validate_blame(const struct cnode *node, const char *msg)
{
    const struct cnode *best = node;
    size_t best_len = 0;
    for (size_t k = 0; node && node->kind == CN_MAP && k < node->n; k++) {
        const char *key = node->keys[k]->value;
        size_t l = strlen(key);
        for (const char *p = strstr(msg, key); p && l > best_len; p = strstr(p + 1, key)) {
            if ((p == msg || !ident_char(p[-1])) && !ident_char(p[l])) {
                best = node->vals[k];
                best_len = l;
            }
        }
    }
    return best != node && best->kind == CN_MAP ? validate_blame(best, msg) : best;
}

static berth_instance *stage_one(struct gen *g, const struct gen *old, const char *name,
                                 const struct cnode *key, const struct cnode *node,
                                 struct errs *e)
{
    if (!ident_valid(name)) {
        errs_add(e, key, "plugin instance name '%s' must be lower case letters, digits, '-' "
                 "or '_', starting with a letter", name);
        return NULL;
    }
    struct inst_meta meta = {0};
    const struct berth_cfg_item *ms = inst_schema;
    void *mo = &meta;
    struct arena tmp = {0};
    struct errs quiet = {0};
    /* first pass only for module/path; the full check runs with the plugin's schema below */
    for (size_t k = 0; node && node->kind == CN_MAP && k < node->n; k++) {
        if (!strcmp(node->keys[k]->value, "module") || !strcmp(node->keys[k]->value, "path")) {
            struct cnode one = *node;
            one.n = 1;
            one.keys = &node->keys[k];
            one.vals = &node->vals[k];
            cfg_fill(&ms, &mo, 1, &one, &tmp, &quiet, name);
        }
    }
    errs_free(&quiet);
    char *path = meta.path ? resolve(g->core.plugin_dir, meta.path)
                           : xasprintf("%s/%s.so", g->core.plugin_dir,
                                       meta.module ? meta.module : name);
    arena_free(&tmp);
    struct module *m = module_load(path, e, key);
    free(path);
    if (!m) return NULL;
    berth_instance *i = xcalloc(1, sizeof *i);
    i->name = xstrdup(name);
    i->mod = m;
    list_init(&i->res);
    snprintf(i->comp, sizeof i->comp, "plugin:%s", name);
    i->new_cfg = arena_alloc(&i->new_arena, m->d->config_size ? m->d->config_size : 1);
    const struct berth_cfg_item *schemas[] = {inst_schema, m->d->config};
    struct inst_meta ignored;
    void *outs[] = {&ignored, i->new_cfg};
    char what[96];
    snprintf(what, sizeof what, "plugin '%s'", name);
    int bad = cfg_fill(schemas, outs, 2, node && node->kind == CN_MAP ? node : NULL,
                       &i->new_arena, e, what);
    if (node && (node->kind == CN_SEQ || (node->kind == CN_SCALAR && node->value[0]))) {
        errs_add(e, node, "plugin '%s' takes a mapping (or nothing), not a %s", name,
                 node->kind == CN_SEQ ? "list" : "value");
        bad++;
    }
    if (!bad && m->d->validate) {
        char err[512] = "";
        if (m->d->validate(i->new_cfg, err, sizeof err) < 0) {
            errs_add(e, node ? validate_blame(node, err) : key, "plugin '%s': %s", name,
                     err[0] ? err : "invalid");
            bad++;
        }
    }
    if (bad) {      /* kept aside: its template keys are still checked */
        g->failed = xrealloc(g->failed, (g->nfailed + 1) * sizeof *g->failed);
        g->failed[g->nfailed++] = i;
        return NULL;
    }
    i->new_node = node;
    berth_instance *prev = find_running(old, name);
    if (!prev || prev->st == I_FAILED) {
        i->action = A_NEW;
        i->old = prev;
        return i;
    }
    const char *key_changed = NULL;
    if (prev->mod != m) {
        i->action = A_REPLACE;
    } else if (cnode_equal(prev->node, node)) {
        i->action = A_KEEP;
    } else if (prev->mod->d->configure &&
               cfg_reloadable_change(m->d->config, prev->node, node, &key_changed)) {
        i->action = A_RECONF;
    } else {
        i->action = A_REPLACE;
        (void)key_changed;
    }
    if (i->action == A_REPLACE) {
        i->old = prev;
        return i;
    }
    /* keep the running instance: move the staged config onto it */
    unstage(prev);
    prev->new_arena = i->new_arena;
    prev->new_cfg = i->new_cfg;
    prev->new_node = node;
    prev->action = i->action;
    i->new_arena.head = NULL;
    inst_free(i);
    return prev;
}

int plugins_prepare(struct gen *g, const struct gen *old, struct errs *e)
{
    const struct cnode *pl = cnode_get(g->conf.root, "plugins");
    size_t before = e->n;
    if (pl && pl->kind == CN_SCALAR && !pl->value[0]) pl = NULL;
    if (pl && pl->kind != CN_MAP) {
        errs_add(e, pl, "'plugins' must be a mapping of instance names to their config");
        return -1;
    }
    g->inst = xcalloc(pl ? pl->n + 1 : 1, sizeof *g->inst);
    for (size_t k = 0; pl && k < pl->n; k++) {
        berth_instance *i = stage_one(g, old, pl->keys[k]->value, pl->keys[k], pl->vals[k], e);
        if (i) g->inst[g->ninst++] = i;
    }
    return e->n > before ? -1 : 0;
}

/* A failed reload leaves the running instances as they were. */
void plugins_discard(struct gen *g)
{
    for (size_t k = 0; k < g->ninst; k++) {
        berth_instance *i = g->inst[k];
        if (i->action == A_NEW || i->action == A_REPLACE) {
            if (i->st == I_STAGED) inst_free(i);
        } else {
            unstage(i);
        }
    }
    g->ninst = 0;
    for (size_t k = 0; k < g->nfailed; k++) inst_free(g->failed[k]);
    g->nfailed = 0;
}

const struct berth_plugin *plugin_desc(const berth_instance *i)
{
    return i->mod->d;
}

const void *plugin_staged_cfg(const berth_instance *i)
{
    return i->new_cfg ? i->new_cfg : i->cfg;
}

/* ---- lifecycle ---- */

static void publish_loaded(berth_instance *i)
{
    struct berth_ev_plugin_loaded ev = {sizeof ev, i->name, i->mod->d->name, i->mod->d->version};
    bus_publish(BERTH_EV_PLUGIN_LOADED, NULL, &ev);
}

static void inst_cleanup(berth_instance *i);

static int inst_start(berth_instance *i)
{
    const struct berth_plugin *d = i->mod->d;
    arena_free(&i->arena);
    i->arena = i->new_arena;
    i->cfg = i->new_cfg;
    i->node = i->new_node;
    i->new_arena.head = NULL;
    i->new_cfg = NULL;
    i->loaded_ms = wall_ms();
    list_add_tail(&instances, &i->link);
    int rc = d->init(&berth_host_api, i, &i->state);
    const char *step = "init";
    if (!rc && d->configure) rc = d->configure(i->state, i->cfg), step = "configure";
    if (!rc && d->start) rc = d->start(i->state), step = "start";
    if (rc) {
        i->error = xasprintf("%s failed: %s", step, berth_strerror(rc));
        blog(BERTH_LOG_ERROR, i->comp, "%s", i->error);
        if (step[0] != 'i' && d->destroy) d->destroy(i->state);
        i->st = I_FAILED;
        inst_cleanup(i);
        return rc;
    }
    i->st = I_RUNNING;
    blog(BERTH_LOG_INFO, i->comp, "loaded %s %s from %s", d->name, d->version ? d->version : "",
         i->mod->path);
    publish_loaded(i);
    return 0;
}

/* The listener on addr held by another instance of self's name (the one a reload
 * replaces), or NULL: the new instance takes it over and no connection is refused. */
struct plisten *plugin_namesake_listener(const berth_instance *self, const char *addr)
{
    list_each(it, &instances) {
        berth_instance *o = container_of(it, berth_instance, link);
        if (o == self || strcmp(o->name, self->name)) continue;
        list_each(rt, &o->res) {
            struct res *r = container_of(rt, struct res, link);
            struct plisten *p = (struct plisten *)r;
            if (r->kind == RES_LISTEN && !strcmp(http_listener_addr(p->l), addr)) return p;
        }
    }
    return NULL;
}

void plugin_handle_track(berth_instance *owner, struct hrec *r, uv_handle_t *h)
{
    r->h = h;
    list_add_tail(&handles_all, &r->link);
    owner->handles++;
}

static void handle_closed(uv_handle_t *h)
{
    struct res *r = h->data;
    berth_instance *owner = r->owner;
    if (r->kind == RES_TIMER) {
        struct berth_timer *t = (struct berth_timer *)r;
        list_del(&t->hr.link);
        free(t);
    } else {
        struct berth_watch *w = (struct berth_watch *)r;
        list_del(&w->hr.link);
        free(w);
    }
    owner->handles--;
    if (owner->st >= I_DRAINING) plugin_schedule_reap();
}

void plugin_timer_release(struct berth_timer *t)
{
    res_detach(&t->res);
    uv_timer_stop(&t->t);
    uv_close((uv_handle_t *)&t->t, handle_closed);
}

void plugin_watch_release(struct berth_watch *w)
{
    res_detach(&w->res);
    uv_poll_stop(&w->p);
    uv_close((uv_handle_t *)&w->p, handle_closed);
}

/* Cancels everything the instance still holds; returns how many it should have released
 * itself (timers, watchers, calls in flight). */
static int release_all(berth_instance *i)
{
    int leaks = 0;
    list_each(it, &i->res) {
        struct res *r = container_of(it, struct res, link);
        switch (r->kind) {
        case RES_TIMER: leaks++; plugin_timer_release((struct berth_timer *)r); break;
        case RES_WATCH: leaks++; plugin_watch_release((struct berth_watch *)r); break;
        case RES_CALL: leaks++; http_call_cancel((berth_call *)r); break;
        case RES_SUB: {
            struct berth_sub *s = (struct berth_sub *)r;
            res_detach(r);
            bus_unsubscribe(s->s);
            free(s);
            break;
        }
        case RES_ROUTE: route_del((struct route *)r); break;
        case RES_BUSY: busy_drop(r); break;
        case RES_WAIT: waiter_drop(r); break;
        case RES_METRIC: metric_free((berth_metric *)r); break;
        case RES_DEP: dep_free((struct dep *)r); break;
        case RES_LISTEN: {
            struct plisten *p = (struct plisten *)r;
            res_detach(r);
            http_listener_release(p->l);
            free(p);
            break;
        }
        default: res_detach(r); list_init(&r->link); r->owner = NULL; break;
        }
    }
    return leaks;
}

static void inst_cleanup(berth_instance *i)
{
    tenants_drop_owner(i);      /* ops in flight complete as canceled; tenants retry */
    int leaks = release_all(i);
    http_abort_owner(i);
    store_plugin_forget(C.store, i->mod->d->name);  /* its successor prepares its own */
    if (leaks)
        blog(BERTH_LOG_WARN, i->comp, "left %d timer(s), watcher(s) or call(s) behind; "
             "the host released them", leaks);
    struct berth_ev_plugin_unloaded ev = {sizeof ev, i->name, leaks};
    if (i->st != I_FAILED) bus_publish(BERTH_EV_PLUGIN_UNLOADED, NULL, &ev);
    if (i->st != I_FAILED) i->st = I_DESTROYED;
    plugin_schedule_reap();
}

static void inst_destroy(berth_instance *i)
{
    if (i->mod->d->destroy) i->mod->d->destroy(i->state);
    i->state = NULL;
    inst_cleanup(i);
}

static void inst_drain(berth_instance *i)
{
    if (i->st == I_FAILED) {
        i->node = NULL;
        plugin_schedule_reap();
        return;
    }
    i->st = I_DRAINING;
    i->node = NULL;
    i->drain_deadline = (int64_t)uv_now(C.loop) + (C.gen ? C.gen->core.drain_timeout : 10000);
    blog(BERTH_LOG_INFO, i->comp, "draining");
    if (i->mod->d->stop) i->mod->d->stop(i->state);
    else i->drained = true;
    plugin_schedule_reap();
}

static void reap(uv_timer_t *t)
{
    (void)t;
    bool busy = false;
    int64_t now = (int64_t)uv_now(C.loop);
    list_each(it, &instances) {
        berth_instance *i = container_of(it, berth_instance, link);
        if (i->st == I_DRAINING) {
            bool late = now >= i->drain_deadline;
            if ((i->drained && i->reqs == 0) || late) {
                if (late)
                    blog(BERTH_LOG_WARN, i->comp, "drain deadline passed (%s, %d call(s) in "
                         "flight); unloading", i->drained ? "drained" : "drained() not called",
                         i->reqs);
                inst_destroy(i);
            } else {
                busy = true;
                continue;
            }
        }
        if (i->st == I_DESTROYED || (i->st == I_FAILED && !i->node)) {
            if (i->reqs || i->handles) {
                busy = true;
                continue;
            }
            /* nothing can call into the module any more: dlclose is safe */
            list_del(&i->link);
            blog(BERTH_LOG_DEBUG, i->comp, "unloaded");
            inst_free(i);
        }
    }
    if (!busy) {
        uv_timer_stop(&reap_timer);
        if (all_stopped && list_empty(&instances)) {
            void (*cb)(void) = all_stopped;
            all_stopped = NULL;
            cb();
        }
    }
}

void plugin_schedule_reap(void)
{
    if (!reap_init) {
        uv_timer_init(C.loop, &reap_timer);
        reap_init = true;
    }
    if (!uv_is_active((uv_handle_t *)&reap_timer)) uv_timer_start(&reap_timer, reap, 0, 20);
}

void plugins_activate(struct gen *g, struct gen *old)
{
    if (!reap_init) {
        uv_timer_init(C.loop, &reap_timer);
        reap_init = true;
    }
    for (size_t k = 0; k < g->ninst; k++) {
        berth_instance *i = g->inst[k];
        switch (i->action) {
        case A_NEW:
            inst_start(i);
            if (i->old) inst_drain(i->old);    /* a failed predecessor */
            break;
        case A_REPLACE:
            /* the new code starts first, so listeners pass straight to it */
            blog(BERTH_LOG_INFO, i->comp, "replacing the running instance (%s)",
                 i->mod != i->old->mod ? "new module file" : "config change needs a restart");
            inst_start(i);
            inst_drain(i->old);
            break;
        case A_RECONF: {
            struct arena prev = i->arena;
            void *prev_cfg = i->cfg;
            i->arena = i->new_arena;
            i->cfg = i->new_cfg;
            i->node = i->new_node;
            i->new_arena.head = NULL;
            i->new_cfg = NULL;
            int rc = i->mod->d->configure(i->state, i->cfg);
            if (rc) {
                blog(BERTH_LOG_ERROR, i->comp, "reconfigure failed (%s); keeping the old "
                     "config", berth_strerror(rc));
                arena_free(&i->arena);
                i->arena = prev;
                i->cfg = prev_cfg;
                i->mod->d->configure(i->state, i->cfg);
            } else {
                arena_free(&prev);
                blog(BERTH_LOG_INFO, i->comp, "reconfigured");
            }
            break;
        }
        case A_KEEP:
            i->node = i->new_node;
            unstage(i);
            break;
        }
    }
    for (size_t k = 0; old && k < old->ninst; k++) {
        berth_instance *o = old->inst[k];
        if (!find_running(g, o->name)) inst_drain(o);
    }
}

void plugins_stop_all(struct gen *g, void (*done)(void))
{
    all_stopped = done;
    for (size_t k = g ? g->ninst : 0; k-- > 0;) {
        berth_instance *i = g->inst[k];
        if (i->st == I_RUNNING || i->st == I_FAILED) inst_drain(i);
    }
    plugin_schedule_reap();
}

void plugins_close(void)
{
    if (reap_init) uv_close((uv_handle_t *)&reap_timer, NULL);
    reap_init = false;
}

size_t plugins_count(void)
{
    size_t n = 0;
    list_each(it, &instances) n += container_of(it, berth_instance, link)->st == I_RUNNING;
    return n;
}

cJSON *plugins_json(void)
{
    static const char *const st_names[] = {"staged", "running", "failed", "draining",
                                           "unloading"};
    cJSON *arr = cJSON_CreateArray();
    list_each(it, &instances) {
        berth_instance *i = container_of(it, berth_instance, link);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", i->name);
        cJSON_AddStringToObject(o, "module", i->mod->d->name);
        cJSON_AddStringToObject(o, "version", i->mod->d->version ? i->mod->d->version : "");
        cJSON_AddStringToObject(o, "path", i->mod->path);
        cJSON_AddStringToObject(o, "state", st_names[i->st]);
        if (i->error) cJSON_AddStringToObject(o, "error", i->error);
        cJSON_AddNumberToObject(o, "loaded_ms", (double)i->loaded_ms);
        cJSON_AddNumberToObject(o, "requests_in_flight", i->reqs);
        cJSON_AddNumberToObject(o, "abi_minor", i->mod->d->abi_minor);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

struct walk { cJSON *o; int total; };

static void walk_cb(uv_handle_t *h, void *arg)
{
    struct walk *w = arg;
    if (uv_is_closing(h)) return;
    const char *who = "core";
    list_each(it, &handles_all) {
        struct hrec *hr = container_of(it, struct hrec, link);
        if (hr->h == h) {
            /* both wrappers start with res then hr */
            struct res *r = (struct res *)((char *)hr - offsetof(struct berth_timer, hr));
            who = r->owner ? r->owner->name : "(released)";
            break;
        }
    }
    cJSON *n = cJSON_GetObjectItem(w->o, who);
    if (n) cJSON_SetNumberValue(n, n->valuedouble + 1);
    else cJSON_AddNumberToObject(w->o, who, 1);
    w->total++;
}

/* What uv_walk finds on the loop, by owner: a test asserts an unloaded plugin has none. */
cJSON *loop_handles_json(void)
{
    struct walk w = {cJSON_CreateObject(), 0};
    uv_walk(C.loop, walk_cb, &w);
    cJSON_AddNumberToObject(w.o, "total", w.total);
    return w.o;
}

void plugins_schema_json(const char *plugin_dir, cJSON *out, struct errs *e)
{
    DIR *d = opendir(plugin_dir);
    if (!d && errno == ENOENT) {
        /* nothing installed there: the core's schema is still worth printing */
        log_warn("plugin_dir %s does not exist: no plugin schemas", plugin_dir);
        return;
    }
    if (!d) {
        errs_addf(e, "%s: %s", plugin_dir, strerror(errno));
        return;
    }
    struct dirent *de;
    char **names = NULL;
    size_t n = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 4 || strcmp(de->d_name + l - 3, ".so")) continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    for (size_t k = 0; k < n; k++) {
        char *path = xasprintf("%s/%s", plugin_dir, names[k]);
        struct module *m = module_load(path, e, NULL);
        if (m) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "module", m->d->name);
            cJSON_AddStringToObject(o, "version", m->d->version ? m->d->version : "");
            cJSON_AddStringToObject(o, "description",
                                    m->d->description ? m->d->description : "");
            cJSON_AddItemToObject(o, "config", cfg_schema_json(m->d->config));
            if (m->d->template_config)
                cJSON_AddItemToObject(o, "template", cfg_schema_json(m->d->template_config));
            cJSON_AddItemToArray(out, o);
            module_unref(m);
        }
        free(path);
        free(names[k]);
    }
    free(names);
}
