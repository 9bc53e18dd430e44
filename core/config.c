/* A generation: one validated conf.d tree with its core settings, templates and staged plugin
 * instances. A reload builds generation N+1 beside N; any error keeps N. */
#include "core.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifndef BERTH_PLUGIN_DIR
#define BERTH_PLUGIN_DIR "/usr/lib/berth/plugins"
#endif

/* the daemon's global state: one loop, one store, one running generation */
struct core C;

#define O(f) offsetof(struct core_cfg, f)
#define R BERTH_CFG_RELOAD

static const struct berth_cfg_item tcp_schema[] = {
    {"listen", BERTH_CFG_STR, NULL, 0, 0, 0, "host:port of an optional TCP control listener",
     0, NULL, NULL},
    {"token", BERTH_CFG_SECRET, NULL, 0, 0, sizeof(const char *),
     "bearer token the TCP listener requires ({file: PATH} or {env: NAME})", 0, NULL, NULL},
    {0},
};
static const struct berth_cfg_item log_schema[] = {
    {"level", BERTH_CFG_STR, "info", 0, 0, 0, "minimum level logged", R,
     "debug|info|warn|error", NULL},
    {"format", BERTH_CFG_STR, "text", 0, 0, sizeof(const char *), "line format", R,
     "text|json", NULL},
    {0},
};
static const struct berth_cfg_item events_schema[] = {
    {"retention", BERTH_CFG_INT, "100000", 100, 1e9, 0,
     "events kept in the journal (older ones are trimmed)", R, NULL, NULL},
    {0},
};
#define H(f) offsetof(struct core_cfg, http.f) - offsetof(struct core_cfg, http)
static const struct berth_cfg_item http_schema[] = {
    {"header_timeout", BERTH_CFG_DURATION, "10s", 100, 3600000, H(header_timeout),
     "time a client has to send a whole request", R, NULL, NULL},
    {"idle_timeout", BERTH_CFG_DURATION, "60s", 100, 86400000, H(idle_timeout),
     "keep-alive connections idle longer are closed", R, NULL, NULL},
    {"send_timeout", BERTH_CFG_DURATION, "60s", 100, 86400000, H(send_timeout),
     "a connection whose client reads none of a pending answer this long is closed", R, NULL,
     NULL},
    {"max_header", BERTH_CFG_SIZE, "16k", 1024, 1 << 20, H(max_header),
     "largest request line plus headers", R, NULL, NULL},
    {"max_body", BERTH_CFG_SIZE, "1m", 1024, 1 << 30, H(max_body), "largest request body", R,
     NULL, NULL},
    {"max_connections", BERTH_CFG_INT, "1024", 1, 1e6, H(max_connections),
     "open connections per listener; more are closed at once", R, NULL, NULL},
    {"max_buffered", BERTH_CFG_SIZE, "64m", 65536, 1ull << 40, H(max_buffered),
     "bytes per listener held for requests not yet dispatched (bodies, pipelined input); "
     "beyond it a request is refused with 503", R, NULL, NULL},
    {0},
};
#define RC(f) offsetof(struct core_cfg, reconcile.f) - offsetof(struct core_cfg, reconcile)
static const struct berth_cfg_item reconcile_schema[] = {
    {"resync_interval", BERTH_CFG_DURATION, "60s", 1000, 86400000, RC(resync_interval),
     "how often every driver re-lists what exists (level-triggered repair)", R, NULL, NULL},
    {"retry_base", BERTH_CFG_DURATION, "1s", 10, 3600000, RC(retry_base),
     "first retry delay after a failed step; doubles per attempt", R, NULL, NULL},
    {"retry_max", BERTH_CFG_DURATION, "5m", 10, 86400000, RC(retry_max),
     "longest retry delay", R, NULL, NULL},
    {"crash_backoff_base", BERTH_CFG_DURATION, "10s", 10, 3600000, RC(crash_backoff_base),
     "wait before the second restart of a crashing or unhealthy workload; doubles per crash",
     R, NULL, NULL},
    {"crash_backoff_max", BERTH_CFG_DURATION, "5m", 10, 86400000, RC(crash_backoff_max),
     "longest wait between restarts of a crash loop", R, NULL, NULL},
    {"crash_reset", BERTH_CFG_DURATION, "10m", 100, 86400000, RC(crash_reset),
     "a workload up this long has its crash count forgotten", R, NULL, NULL},
    {0},
};

const struct berth_cfg_item core_schema[] = {
    {"state_dir", BERTH_CFG_STR, "/var/lib/berth", 0, 0, O(state_dir),
     "SQLite state, control socket, tenant data (relative: to the config dir)", 0, NULL, NULL},
    {"socket", BERTH_CFG_STR, NULL, 0, 0, O(socket),
     "control API unix socket, mode 0660 (default <state_dir>/berth.sock)", 0, NULL, NULL},
    {"plugin_dir", BERTH_CFG_STR, BERTH_PLUGIN_DIR, 0, 0, O(plugin_dir),
     "where <module>.so files are found (relative: to the config dir)", R, NULL, NULL},
    {"tcp", BERTH_CFG_STRUCT, NULL, 0, 0, O(tcp), "optional TCP control listener", 0, NULL,
     tcp_schema},
    {"log", BERTH_CFG_STRUCT, NULL, 0, 0, O(log), "logging", R, NULL, log_schema},
    {"events", BERTH_CFG_STRUCT, NULL, 0, 0, O(events), "event journal", R, NULL,
     events_schema},
    {"http", BERTH_CFG_STRUCT, NULL, 0, 0, O(http), "limits of berthd's HTTP server", R, NULL,
     http_schema},
    {"reconcile", BERTH_CFG_STRUCT, NULL, 0, 0, O(reconcile), "the reconciler", R, NULL,
     reconcile_schema},
    {"drain_timeout", BERTH_CFG_DURATION, "10s", 0, 600000, O(drain_timeout),
     "how long an unloading plugin may take to finish its work", R, NULL, NULL},
    {0},
};

#define T(f) offsetof(struct tmpl_core, f)
const struct berth_cfg_item tmpl_core_schema[] = {
    {"driver", BERTH_CFG_STR, NULL, 0, 0, T(driver), "plugin instance that runs the tenants",
     BERTH_CFG_REQUIRED, NULL, NULL},
    {"port", BERTH_CFG_INT, "0", 0, 65535, T(port), "the tenant's HTTP port (0: none)", 0, NULL,
     NULL},
    {"env", BERTH_CFG_MAP, NULL, 0, 0, T(env), "environment of the tenant's workload", 0, NULL,
     NULL},
    {0},
};

static const char *const top_keys[] = {"berth", "plugins", "templates"};

/* Relative paths in config are relative to the config directory, as nginx's are to its
 * prefix: the same conf.d works from a checkout and from /etc. */
static const char *abspath(struct arena *a, const char *base, const char *p)
{
    if (!p || p[0] == '/') return p;
    char *joined = xasprintf("%s/%s", base, p);
    char real[PATH_MAX];
    const char *r = realpath(joined, real) ? real : joined;
    const char *out = arena_strdup(a, r);
    free(joined);
    return out;
}

static void check_top(const struct cnode *root, struct errs *e)
{
    for (size_t i = 0; root && i < root->n; i++) {
        const char *k = root->keys[i]->value;
        bool ok = false;
        for (size_t j = 0; j < ARRAY_LEN(top_keys); j++) ok |= !strcmp(k, top_keys[j]);
        if (ok) continue;
        const char *best = NULL;
        for (size_t j = 0; j < ARRAY_LEN(top_keys); j++)
            if (levenshtein(k, top_keys[j]) <= 2) best = top_keys[j];
        if (best) errs_add(e, root->keys[i], "unknown top-level key '%s'; did you mean '%s'?",
                           k, best);
        else errs_add(e, root->keys[i], "unknown top-level key '%s' (expected berth, plugins "
                      "or templates)", k);
    }
}

/* A loaded instance by name; *failed says its own config was invalid (it only lends its
 * module's schemas to the checks of templates). */
static berth_instance *gen_instance(const struct gen *g, const char *name, bool *failed)
{
    *failed = false;
    for (size_t i = 0; i < g->ninst; i++)
        if (!strcmp(inst_name(g->inst[i]), name)) return g->inst[i];
    *failed = true;
    for (size_t i = 0; i < g->nfailed; i++)
        if (!strcmp(inst_name(g->failed[i]), name)) return g->failed[i];
    return NULL;
}

static bool has_key(const struct berth_cfg_item *s, const char *k)
{
    for (; s && s->key; s++)
        if (!strcmp(s->key, k)) return true;
    return false;
}

static bool desc_has_gate(const struct berth_plugin *d)
{
    return d->struct_size >= offsetof(struct berth_plugin, template_gates_ready) +
                                 sizeof d->template_gates_ready &&
           d->template_gates_ready;
}

static bool desc_has_validate(const struct berth_plugin *d)
{
    return d->struct_size >= offsetof(struct berth_plugin, template_validate) +
                                 sizeof d->template_validate &&
           d->template_validate;
}

/* The closest name a mistyped template key may have meant: a core or driver key, or a loaded
 * instance that reads template keys. */
static const char *tmpl_suggest(const struct gen *g, const struct berth_plugin *d,
                                const char *k)
{
    const char *best = NULL;
    int bd = 3;
    for (int pass = 0; pass < 2; pass++)
        for (const struct berth_cfg_item *it = pass ? (d ? d->template_config : NULL)
                                                     : tmpl_core_schema; it && it->key; it++)
            if (levenshtein(k, it->key) < bd) bd = levenshtein(k, it->key), best = it->key;
    for (size_t i = 0; i < g->ninst; i++)
        if (plugin_desc(g->inst[i])->template_config &&
            levenshtein(k, inst_name(g->inst[i])) < bd)
            bd = levenshtein(k, inst_name(g->inst[i])), best = inst_name(g->inst[i]);
    return best;
}

/* Fills templates.<t>.<instance> from the instance's template_config. An empty value
 * (`quota:`) is an empty block: every key takes its default. */
static void fill_block(struct gen *g, struct tmpl *t, berth_instance *inst,
                       const struct cnode *node, struct errs *e)
{
    const struct berth_plugin *d = plugin_desc(inst);
    struct tmpl_blk *b = &t->blocks[t->nblocks];
    b->inst = inst_name(inst);
    b->node = node;
    b->cfg = arena_alloc(&g->arena, d->template_config_size + 1);
    struct cnode empty = {.kind = CN_MAP, .file = node->file, .line = node->line,
                          .col = node->col};
    if (node->kind == CN_SCALAR && node->plain && !node->value[0]) node = &empty;
    char what[160];
    snprintf(what, sizeof what, "templates.%s.%s", t->name, b->inst);
    const struct berth_cfg_item *schema = d->template_config;
    void *out = b->cfg;
    if (cfg_fill(&schema, &out, 1, node, &g->arena, e, what)) return;
    char err[512] = "";
    if (desc_has_validate(d) && d->template_validate(b->cfg, err, sizeof err) < 0) {
        errs_add(e, validate_blame(node, err), "%s: %s", what, err[0] ? err : "invalid");
        return;
    }
    if (desc_has_gate(d) && d->template_gates_ready(b->cfg)) t->gates_ready = true;
    t->nblocks++;
}

/* Keys that lived at a template's top level before SDK 1.1 and are now the lifecycle
 * plugin's: say where they go rather than "unknown key". */
static bool moved_key(const struct gen *g, const struct tmpl *t, const struct cnode *key,
                      struct errs *e)
{
    static const char *const moved[] = {"idle_timeout", "health"};
    for (size_t i = 0; i < ARRAY_LEN(moved); i++) {
        if (strcmp(key->value, moved[i])) continue;
        const char *lc = "lifecycle";   /* the instance that reads it, if one is loaded */
        for (size_t k = 0; k < g->ninst; k++)
            if (!strcmp(plugin_desc(g->inst[k])->name, "lifecycle")) lc = inst_name(g->inst[k]);
        errs_add(e, key, "%s moved: write it as templates.%s.%s.%s", moved[i], t->name, lc,
                 moved[i]);
        return true;
    }
    return false;
}

/* Sorts a template's keys: the core's and the driver's go to `top` (filled by the caller),
 * an instance's block is filled here, anything else is an error. driver_lost: the driver
 * instance failed validation, so its keys cannot be told from mistakes. */
static void split_template(struct gen *g, struct tmpl *t, const struct cnode *node,
                           const struct berth_plugin *d, bool driver_lost, struct cnode *top,
                           struct errs *e)
{
    const struct cnode *plugins = cnode_get(g->conf.root, "plugins");
    t->blocks = arena_alloc(&g->arena, (node->n + 1) * sizeof *t->blocks);
    for (size_t k = 0; k < node->n; k++) {
        const struct cnode *key = node->keys[k];
        const char *name = key->value;
        if (has_key(tmpl_core_schema, name) || (d && has_key(d->template_config, name))) {
            top->keys[top->n] = node->keys[k];
            top->vals[top->n++] = node->vals[k];
            continue;
        }
        if (moved_key(g, t, key, e)) continue;
        bool failed;
        berth_instance *inst = gen_instance(g, name, &failed);
        if (inst && t->core.driver && !strcmp(name, t->core.driver)) {
            errs_add(e, key, "'%s' is the driver of template '%s': write its keys at the "
                     "template's top level", name, t->name);
        } else if (inst && plugin_desc(inst)->template_config) {
            fill_block(g, t, inst, node->vals[k], e);
        } else if (inst) {
            errs_add(e, key, "template '%s': plugin instance '%s' (module %s) reads no "
                     "template keys", t->name, name, plugin_desc(inst)->name);
        } else if (cnode_get(plugins, name) || driver_lost) {
            continue;   /* that instance failed validation and said why */
        } else {
            const char *best = tmpl_suggest(g, d, name);
            if (best) errs_add(e, key, "unknown key '%s' in template '%s'; did you mean "
                               "'%s'?", name, t->name, best);
            else errs_add(e, key, "unknown key '%s' in template '%s': neither a template key "
                          "nor a plugin instance that reads template keys", name, t->name);
        }
    }
}

static void build_template(struct gen *g, const struct cnode *kn, const struct cnode *node,
                           struct errs *e)
{
    const char *name = kn->value;
    if (!ident_valid(name)) {
        errs_add(e, kn, "template name '%s' must be lower case letters, digits, '-' or '_'",
                 name);
        return;
    }
    if (node->kind != CN_MAP) {
        errs_add(e, node, "template '%s' must be a mapping", name);
        return;
    }
    const struct cnode *dn = cnode_get(node, "driver");
    const char *driver = dn && dn->kind == CN_SCALAR ? dn->value : NULL;
    bool failed = false;
    berth_instance *inst = driver ? gen_instance(g, driver, &failed) : NULL;
    const struct berth_plugin *d = inst ? plugin_desc(inst) : NULL;
    /* the driver instance is invalid (it said why): check against its schema regardless */
    bool lost = driver && (inst ? failed
                                : cnode_get(cnode_get(g->conf.root, "plugins"), driver) != NULL);
    struct tmpl *t = &g->tmpls[g->ntmpls];
    *t = (struct tmpl){.name = name, .node = node};
    t->core.driver = driver;
    size_t before = e->n;
    if (driver && !inst && !lost)
        errs_add(e, dn, "template '%s': driver '%s' is not a configured plugin instance",
                 name, driver);
    if (d && !d->template_config) {
        errs_add(e, dn, "template '%s': plugin '%s' is not a driver", name, driver);
        d = NULL;
    }
    struct cnode top = *node;
    top.n = 0;
    top.keys = xcalloc(node->n + 1, sizeof *top.keys);
    top.vals = xcalloc(node->n + 1, sizeof *top.vals);
    split_template(g, t, node, d, !d && driver && (lost || !inst), &top, e);
    t->driver_cfg = d ? arena_alloc(&g->arena, d->template_config_size + 1) : NULL;
    const struct berth_cfg_item *schemas[] = {tmpl_core_schema, d ? d->template_config : NULL};
    void *outs[] = {&t->core, t->driver_cfg};
    char what[96];
    snprintf(what, sizeof what, "template '%s'", name);
    cfg_fill(schemas, outs, d ? 2 : 1, &top, &g->arena, e, what);
    free(top.keys);
    free(top.vals);
    if (d && desc_has_gate(d) && d->template_gates_ready(t->driver_cfg)) t->gates_ready = true;
    if (e->n == before && !lost) g->ntmpls++;
}

static void build_templates(struct gen *g, struct errs *e)
{
    const struct cnode *ts = cnode_get(g->conf.root, "templates");
    if (!ts || (ts->kind == CN_SCALAR && !ts->value[0])) return;
    if (ts->kind != CN_MAP) {
        errs_add(e, ts, "'templates' must be a mapping of template names to templates");
        return;
    }
    g->tmpls = arena_alloc(&g->arena, (ts->n + 1) * sizeof *g->tmpls);
    for (size_t k = 0; k < ts->n; k++) build_template(g, ts->keys[k], ts->vals[k], e);
}

/* host:port as berthd's listeners take it: an IPv4 address, [an IPv6 address] or localhost,
 * and a port 1..65535. Caught here so --check refuses what the listener would. */
static bool hostport_valid(const char *s, char *why, size_t n)
{
    const char *colon = strrchr(s, ':');
    char host[256], *end;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host) {
        snprintf(why, n, "expected host:port");
        return false;
    }
    long port = colon[1] >= '0' && colon[1] <= '9' ? strtol(colon + 1, &end, 10) : -1;
    if (port < 1 || port > 65535 || *end) {
        snprintf(why, n, "the port must be 1..65535");
        return false;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    size_t l = strlen(host);
    unsigned char addr[16];
    bool ok;
    if (host[0] == '[' && l > 2 && host[l - 1] == ']') {
        host[l - 1] = 0;
        ok = inet_pton(AF_INET6, host + 1, addr) == 1;
    } else {
        ok = !strcmp(host, "localhost") || inet_pton(AF_INET, host, addr) == 1;
    }
    if (!ok) snprintf(why, n, "the host must be an IPv4 address, [IPv6] or localhost");
    return ok;
}

static void check_tcp(const struct gen *g, struct errs *e)
{
    const struct cnode *tcp = cnode_get(cnode_get(g->conf.root, "berth"), "tcp");
    const struct cnode *ln = cnode_get(tcp, "listen");
    char why[96];
    if (!g->core.tcp.listen) return;
    if (!hostport_valid(g->core.tcp.listen, why, sizeof why))
        errs_add(e, ln, "berth.tcp.listen: '%s' is not a valid listen address: %s",
                 g->core.tcp.listen, why);
    if (!g->core.tcp.token)     /* blamed on listen: that is what needs the token */
        errs_add(e, ln ? ln : tcp, "berth.tcp: a TCP listener requires a token ({file: PATH} "
                 "or {env: NAME})");
}

static void check_immutable(const struct gen *g, const struct gen *old, struct errs *e)
{
    const struct cnode *nb = cnode_get(g->conf.root, "berth");
    const struct cnode *ob = cnode_get(old->conf.root, "berth");
    const char *key = NULL;
    if (!cfg_reloadable_change(core_schema, ob, nb, &key))
        errs_add(e, cnode_get(nb, key) ? cnode_get(nb, key) : nb,
                 "berth.%s cannot change on reload; restart berthd to apply it", key);
}

struct gen *gen_build(const char *conf_dir, const char *state_override, const struct gen *old,
                      struct errs *e)
{
    static uint64_t next_id = 1;
    struct gen *g = xcalloc(1, sizeof *g);
    g->id = next_id++;
    size_t before = e->n;
    if (conf_dir) conf_load_dir(conf_dir, &g->conf, e);
    else conf_dir = ".";    /* no config: the defaults are absolute paths */
    if (e->n > before) return g;
    check_top(g->conf.root, e);
    const struct berth_cfg_item *cs = core_schema;
    void *co = &g->core;
    cfg_fill(&cs, &co, 1, cnode_get(g->conf.root, "berth"), &g->arena, e, "berth");
    if (state_override) g->core.state_dir = arena_strdup(&g->arena, state_override);
    else g->core.state_dir = abspath(&g->arena, conf_dir, g->core.state_dir);
    g->core.plugin_dir = abspath(&g->arena, conf_dir, g->core.plugin_dir);
    g->core.socket = g->core.socket ? abspath(&g->arena, conf_dir, g->core.socket)
                                    : arena_strdup(&g->arena, "");
    check_tcp(g, e);
    if (old) check_immutable(g, old, e);
    /* go on after core errors: an operator wants every mistake in one run, as nginx -t */
    plugins_prepare(g, old, e);
    build_templates(g, e);
    errs_sort(e, before);    /* read top to bottom, as the files are */
    return g;
}

void gen_free(struct gen *g)
{
    if (!g) return;
    conf_free(&g->conf);
    arena_free(&g->arena);
    free(g->inst);
    free(g->failed);
    free(g);
}

struct gen *gen_ref(struct gen *g)
{
    g->refs++;
    return g;
}

void gen_unref(struct gen *g)
{
    if (g && --g->refs == 0) gen_free(g);
}

/* Makes a validated generation's core settings effective. */
void core_apply(const struct core_cfg *c)
{
    log_configure((enum berth_log_level)log_level_parse(c->log.level),
                  !strcmp(c->log.format, "json"));
    http_limits = (struct http_limits){c->http.header_timeout, c->http.idle_timeout,
                                       c->http.max_header, c->http.max_body,
                                       (uint64_t)c->http.max_connections,
                                       c->http.max_buffered, c->http.send_timeout};
    bus_set_retention((uint64_t)c->events.retention);
}

int core_reload(struct errs *e)
{
    struct gen *g = gen_build(C.conf_dir, C.state_override, C.gen, e);
    C.reload.at_ms = wall_ms();
    cJSON_Delete(C.reload.errors);
    C.reload.errors = cJSON_CreateArray();
    if (e->n) {
        plugins_discard(g);
        gen_free(g);
        C.reload.ok = false;
        log_error("reload failed with %zu error(s); generation %" PRIu64 " keeps running", e->n,
                  C.gen->id);
        for (size_t i = 0; i < e->n; i++) {
            log_error("%s", e->v[i]);
            cJSON_AddItemToArray(C.reload.errors, cJSON_CreateString(e->v[i]));
        }
        struct berth_ev_config_reloaded ev = {sizeof ev, false, (int64_t)C.gen->id,
                                              (int64_t)e->n, e->v[0]};
        bus_publish(BERTH_EV_CONFIG_RELOADED, NULL, &ev);
        return -1;
    }
    struct gen *old = C.gen;
    C.gen = gen_ref(g);
    core_apply(&g->core);
    plugins_activate(g, old);
    gen_unref(old);
    C.reload.ok = true;
    C.reload.generation = g->id;
    log_info("configuration generation %" PRIu64 " is running", g->id);
    struct berth_ev_config_reloaded ev = {sizeof ev, true, (int64_t)g->id, 0, "ok"};
    bus_publish(BERTH_EV_CONFIG_RELOADED, NULL, &ev);
    tenants_reconcile_all();
    return 0;
}

const struct tmpl *tmpl_find(const char *name)
{
    for (size_t i = 0; C.gen && i < C.gen->ntmpls; i++)
        if (!strcmp(C.gen->tmpls[i].name, name)) return &C.gen->tmpls[i];
    return NULL;
}

const void *tmpl_block(const struct tmpl *tm, const char *instance)
{
    if (!tm || !instance) return NULL;
    if (tm->core.driver && !strcmp(tm->core.driver, instance)) return tm->driver_cfg;
    for (size_t i = 0; i < tm->nblocks; i++)
        if (!strcmp(tm->blocks[i].inst, instance)) return tm->blocks[i].cfg;
    return NULL;
}

const struct cnode *tmpl_block_node(const struct tmpl *tm, const char *instance)
{
    if (!tm || !instance) return NULL;
    if (tm->core.driver && !strcmp(tm->core.driver, instance)) return tm->node;
    for (size_t i = 0; i < tm->nblocks; i++)
        if (!strcmp(tm->blocks[i].inst, instance)) return tm->blocks[i].node;
    return NULL;
}

bool tmpl_gates_ready(const struct tmpl *tm)
{
    return tm && tm->gates_ready;
}
