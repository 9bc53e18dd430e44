/* berthd: the supervisor daemon. Runs in the foreground; logs to stderr (journald-style
 * under systemd); speaks the notify protocol when systemd asks for it. */
#include "core.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BERTH_CONF_DIR
#define BERTH_CONF_DIR "/etc/berth/conf.d"
#endif

static uv_signal_t sig_hup, sig_term, sig_int;
static struct listener *ctl_unix, *ctl_tcp;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: berthd [--config DIR] [--state DIR] [--check] [--dump-schema] [--version]\n"
            "  --config DIR    conf.d directory (default %s)\n"
            "  --state DIR     state directory, overrides berth.state_dir\n"
            "  --check         validate the configuration and exit (0 valid, 1 invalid)\n"
            "  --dump-schema   print every config schema as JSON and exit\n"
            "  --version       print the version and exit\n", BERTH_CONF_DIR);
}

static void print_errs(const struct errs *e)
{
    for (size_t i = 0; i < e->n; i++) fprintf(stderr, "%s\n", e->v[i]);
}

static void on_hup(uv_signal_t *s, int sig)
{
    (void)s; (void)sig;
    log_info("SIGHUP: reloading %s", C.conf_dir);
    notify_reloading();
    struct errs e = {0};
    core_reload(&e);
    errs_free(&e);
    notify_send("READY=1");     /* a refused config leaves the running one: ready either way */
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void all_stopped(void)
{
    log_info("plugins drained; closing the store");
    tenants_shutdown();
    api_shutdown();
    bus_shutdown();
    http_client_shutdown();
    plugins_close();
    notify_shutdown();
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
}

static void on_term(uv_signal_t *s, int sig)
{
    (void)s;
    if (C.stopping) return;
    C.stopping = true;
    notify_send("STOPPING=1");
    log_info("%s: stopping; draining plugins in reverse load order",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    http_close_all();
    ctl_unix = ctl_tcp = NULL;
    plugins_stop_all(C.gen, all_stopped);
}

static int mkdirs(const char *path, mode_t mode)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST) goto fail;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST) goto fail;
    free(p);
    return 0;
fail:
    free(p);
    return -1;
}

/* A template's block for one instance, as a "mapping" key of the template schema. */
static void add_block(cJSON *tmpl, const char *inst, const char *module, cJSON *keys)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "key", inst);
    cJSON_AddStringToObject(o, "type", "mapping");
    char *d = xasprintf("template keys of plugin instance '%s' (module %s); in a template "
                        "whose driver it is, they go at the template's top level", inst, module);
    cJSON_AddStringToObject(o, "description", d);
    free(d);
    cJSON_AddBoolToObject(o, "reloadable", false);     /* as every template key */
    cJSON_AddBoolToObject(o, "required", false);
    cJSON_AddItemToObject(o, "keys", keys);
    cJSON_AddItemToArray(tmpl, o);
}

/* Template blocks: the configured instances' or, without a config, each module's under its
 * default instance name (the module name). */
static void dump_blocks(struct gen *g, cJSON *tmpl, cJSON *modules)
{
    for (size_t i = 0; i < g->ninst; i++) {
        const struct berth_plugin *d = plugin_desc(g->inst[i]);
        if (d->template_config)
            add_block(tmpl, inst_name(g->inst[i]), d->name, cfg_schema_json(d->template_config));
    }
    if (g->ninst) return;
    cJSON *m;
    cJSON_ArrayForEach(m, modules) {
        cJSON *keys = cJSON_GetObjectItem(m, "template");
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(m, "module"));
        if (keys && name) add_block(tmpl, name, name, cJSON_Duplicate(keys, true));
    }
}

static int dump_schema(struct gen *g)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "berth", cfg_schema_json(core_schema));
    cJSON *tmpl = cJSON_AddArrayToObject(o, "template");
    cJSON *core_keys = cfg_schema_json(tmpl_core_schema), *k;
    while ((k = cJSON_DetachItemFromArray(core_keys, 0))) cJSON_AddItemToArray(tmpl, k);
    cJSON_Delete(core_keys);
    cJSON *pl = cJSON_AddArrayToObject(o, "plugins");
    struct errs e = {0};
    plugins_schema_json(g->core.plugin_dir, pl, &e);
    dump_blocks(g, tmpl, pl);
    print_errs(&e);
    /* the schemas that could be read are printed; a file that could not is still a failure */
    int code = e.n ? 1 : 0;
    errs_free(&e);
    char *s = cJSON_Print(o);
    printf("%s\n", s);
    cJSON_free(s);
    cJSON_Delete(o);
    return code;
}

static int start(void)
{
    struct core_cfg *c = &C.gen->core;
    C.state_dir = xstrdup(c->state_dir);
    if (mkdirs(C.state_dir, 0750) < 0) {
        log_error("cannot create state directory %s: %s", C.state_dir, strerror(errno));
        return -1;
    }
    char err[512];
    char *db = xasprintf("%s/berth.db", C.state_dir);
    int rc = store_open(db, &C.store, err, sizeof err);
    free(db);
    if (rc) {
        log_error("state: %s", err);
        return -1;
    }
    /* writes check the file themselves; the timer catches it while berthd is idle */
    store_watch(C.store, C.loop, 2000);
    bus_init();
    if (http_client_init() < 0) {
        log_error("cannot initialise libcurl");
        return -1;
    }
    if (tenants_init() < 0) return -1;
    api_init();
    char *sock = c->socket[0] ? xstrdup(c->socket) : xasprintf("%s/berth.sock", C.state_dir);
    char *addr = xasprintf("unix:%s", sock);
    rc = http_listen(addr, 0660, api_dispatch, NULL, NULL, NULL, &ctl_unix, err, sizeof err);
    free(addr);
    if (rc) {
        log_error("control socket: %s", err);
        free(sock);
        return -1;
    }
    log_info("control API on %s (mode 0660)", sock);
    free(sock);
    if (c->tcp.listen) {
        rc = http_listen(c->tcp.listen, 0, api_dispatch, NULL, c->tcp.token, NULL, &ctl_tcp,
                         err, sizeof err);
        if (rc) {
            log_error("berth.tcp.listen: %s", err);
            return -1;
        }
        log_info("control API on tcp %s (bearer token required)", c->tcp.listen);
    }
    plugins_activate(C.gen, NULL);
    notify_send("READY=1");
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"state", required_argument, NULL, 's'},
        {"check", no_argument, NULL, 'k'},        {"dump-schema", no_argument, NULL, 'd'},
        {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
        {0},
    };
    bool check = false, dump = false, conf_given = false;
    C.conf_dir = BERTH_CONF_DIR;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': C.conf_dir = optarg; conf_given = true; break;
        case 's': C.state_override = optarg; break;
        case 'k': check = true; break;
        case 'd': dump = true; break;
        case 'V': printf("berthd %s (plugin ABI %d.%d)\n", BERTH_VERSION_STR, BERTH_ABI_MAJOR,
                         BERTH_ABI_MINOR); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    C.loop = uv_default_loop();
    C.started_ms = wall_ms();
    struct errs e = {0};
    /* the schema does not need a config: without a conf.d every default applies */
    struct stat st;
    bool no_conf = dump && !conf_given && stat(C.conf_dir, &st) < 0 && errno == ENOENT;
    struct gen *g = gen_build(no_conf ? NULL : C.conf_dir, C.state_override, NULL, &e);
    if (check || dump || e.n) {
        int code = 0;
        if (dump && !e.n) code = dump_schema(g);
        else if (e.n) {
            print_errs(&e);
            fprintf(stderr, "berthd: %s: %zu error(s)\n", C.conf_dir, e.n);
            code = 1;
        } else {
            printf("berthd: %s: configuration OK (%zu plugin instance(s), %zu template(s))\n",
                   C.conf_dir, g->ninst, g->ntmpls);
        }
        plugins_discard(g);
        gen_free(g);
        errs_free(&e);
        return code;
    }
    C.gen = gen_ref(g);
    C.reload.ok = true;
    C.reload.generation = g->id;
    core_apply(&g->core);
    uv_signal_init(C.loop, &sig_hup);
    uv_signal_init(C.loop, &sig_term);
    uv_signal_init(C.loop, &sig_int);
    uv_signal_start(&sig_hup, on_hup, SIGHUP);
    uv_signal_start(&sig_term, on_term, SIGTERM);
    uv_signal_start(&sig_int, on_term, SIGINT);
    log_info("berthd %s starting: config %s, state %s", BERTH_VERSION_STR, C.conf_dir,
             g->core.state_dir);
    int code = 0;
    notify_init(C.loop);
    if (start() < 0) {
        code = 1;
        C.stopping = true;
        http_close_all();
        plugins_discard(C.gen);     /* start() fails before any plugin was activated */
        plugins_stop_all(C.gen, all_stopped);
    }
    uv_run(C.loop, UV_RUN_DEFAULT);
    uv_walk(C.loop, close_walk, NULL);
    uv_run(C.loop, UV_RUN_DEFAULT);
    uv_loop_close(C.loop);
    store_close(C.store);
    gen_unref(C.gen);
    cJSON_Delete(C.reload.errors);
    free(C.state_dir);
    if (!code) log_info("stopped");
    return code;
}
