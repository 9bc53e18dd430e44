/* Internal declarations shared by the core's subsystems. Plugins never include this. */
#ifndef BERTH_CORE_H
#define BERTH_CORE_H

#include <berth/berth.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/types.h>
#include <uv.h>

#define BERTH_VERSION_STR "0.1.0"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* ---- util.c ---- */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) BERTH_PRINTF(1, 2);
/* Opens a file the core reads (config, secret, plugin) for reading, without blocking on
 * what is not a regular file: a FIFO would wait for a writer, a device like /dev/zero never
 * ends. Returns a close-on-exec descriptor the caller closes and fills st; -1 with errno
 * when it cannot be opened, -2 when it is not a regular file. */
struct stat;
int open_regular(const char *path, struct stat *st);
int64_t wall_ms(void);
bool handle_valid(const char *h);
bool utf8_valid(const char *s, size_t n);
char *utf8_repaired(const char *s);        /* a copy, invalid bytes as U+FFFD; caller frees */
/* 0 if every string in the JSON text s is whole, valid UTF-8 (no \u0000, no raw control
 * character, no unpaired surrogate); else BERTH_EINVAL and why. Syntax is cJSON's job. */
int json_text_check(const char *s, size_t n, char *err, size_t len);
/* true when s is one JSON object of strings without escapes, numbers, true, false and null
 * (strict JSON, nothing after it): what any JSON parser accepts. false says nothing. */
bool json_flat_object(const char *s);
bool pct_text_valid(const char *s, size_t n);
bool ident_valid(const char *s);           /* plugin instance / template names */
int parse_duration(const char *s, int64_t *ms);
int parse_size(const char *s, uint64_t *bytes);
void fmt_duration(int64_t ms, char *out, size_t n);
bool ct_equal(const char *a, const char *b); /* constant time in the length of b */
int levenshtein(const char *a, const char *b);

struct buf { char *p; size_t len, cap; };
void buf_add(struct buf *b, const void *data, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) BERTH_PRINTF(2, 3);
void buf_free(struct buf *b);
/* appends s as JSON string content; invalid UTF-8 becomes U+FFFD */
void buf_json_escape(struct buf *b, const char *s);

/* Intrusive doubly linked list. */
struct list { struct list *prev, *next; };
static inline void list_init(struct list *l) { l->prev = l->next = l; }
static inline bool list_empty(const struct list *l) { return l->next == l; }
static inline void list_add_tail(struct list *l, struct list *n)
{
    n->prev = l->prev; n->next = l; l->prev->next = n; l->prev = n;
}
static inline void list_del(struct list *n)
{
    n->prev->next = n->next; n->next->prev = n->prev; n->prev = n->next = n;
}
#define list_each(it, head) for (struct list *it = (head)->next, *it##_n = it->next; \
                                 it != (head); it = it##_n, it##_n = it->next)

/* ---- log.c ---- */
void log_configure(enum berth_log_level level, bool json);
bool log_enabled(enum berth_log_level level);
void blogv(enum berth_log_level lvl, const char *component, const char *fmt, va_list ap);
void blog(enum berth_log_level lvl, const char *component, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
#define log_debug(...) blog(BERTH_LOG_DEBUG, "core", __VA_ARGS__)
#define log_info(...) blog(BERTH_LOG_INFO, "core", __VA_ARGS__)
#define log_warn(...) blog(BERTH_LOG_WARN, "core", __VA_ARGS__)
#define log_error(...) blog(BERTH_LOG_ERROR, "core", __VA_ARGS__)
int log_level_parse(const char *s);

/* ---- backup.c: GET /v1/system/backup, SQLite's online backup answered as the body ---- */
struct store;
void backup_start(berth_req *r, struct store *s, const char *dir);
void backup_shutdown(void);

/* ---- notify.c: systemd's notify protocol over $NOTIFY_SOCKET, and its watchdog ---- */
int notify_init(uv_loop_t *loop);       /* 0 also when there is no NOTIFY_SOCKET */
void notify_send(const char *state);    /* "READY=1", "STOPPING=1", ... */
void notify_reloading(void);            /* RELOADING=1 with MONOTONIC_USEC */
void notify_shutdown(void);

/* ---- conf.c: YAML tree with positions, merge, schema validation ---- */
enum cnode_kind { CN_SCALAR, CN_MAP, CN_SEQ };
struct cnode {
    enum cnode_kind kind;
    const char *file;           /* owned by the conf that loaded it */
    int line, col;
    char *value;                /* scalar */
    bool plain;                 /* unquoted scalar */
    size_t n;
    struct cnode **keys;        /* map: scalar key nodes */
    struct cnode **vals;        /* map values, or seq items */
};

struct errs { char **v; size_t n; };
void errs_add(struct errs *e, const struct cnode *at, const char *fmt, ...) BERTH_PRINTF(3, 4);
void errs_addf(struct errs *e, const char *fmt, ...) BERTH_PRINTF(2, 3);
void errs_free(struct errs *e);
/* Orders e->v[from..] by file, line and column (files sort as conf.d loads them); messages
 * without a position first, ties in the order they were found. */
void errs_sort(struct errs *e, size_t from);

struct conf {
    struct cnode *root;         /* merged; NULL when nothing loaded */
    char **files; size_t nfiles;
};
/* Loads every .yaml and .yml file of dir in lexical order and merges them: maps merge key by key,
 * recursively; a scalar or a list in a later file replaces the earlier value whole. */
int conf_load_dir(const char *dir, struct conf *out, struct errs *e);
int conf_load_string(const char *name, const char *text, struct conf *out, struct errs *e);
void conf_free(struct conf *c);
const struct cnode *cnode_get(const struct cnode *map, const char *key);
bool cnode_equal(const struct cnode *a, const struct cnode *b);
/* the value in `node` that a plugin validate() message names (plugin.c) */
const struct cnode *validate_blame(const struct cnode *node, const char *msg);
/* A digest of a subtree's content: equal trees (cnode_equal) hash equal whatever their file,
 * line or map key order. A change detector, not a cryptographic hash. NULL hashes to 0. */
uint64_t cnode_hash(const struct cnode *n);

/* An arena owns everything cfg_fill allocates for one config generation. */
struct arena { struct arena_blk *head; };
void *arena_alloc(struct arena *a, size_t n);
char *arena_strdup(struct arena *a, const char *s);
void arena_free(struct arena *a);

/* Fills `out` (schemas[i] -> outs[i]) from a map node; a key belongs to the first schema that
 * declares it; unknown keys, wrong types and out-of-range values are errors. Missing keys take
 * their default. base_dir resolves relative {file:} secrets. Returns the number of errors. */
int cfg_fill(const struct berth_cfg_item *const *schemas, void *const *outs, size_t nschemas,
             const struct cnode *map, struct arena *a, struct errs *e, const char *what);
/* true when the two blocks differ only in keys flagged BERTH_CFG_RELOAD */
bool cfg_reloadable_change(const struct berth_cfg_item *schema, const struct cnode *a,
                           const struct cnode *b, const char **key);
cJSON *cfg_schema_json(const struct berth_cfg_item *schema);

/* ---- store.c ---- */
struct store;
int store_open(const char *path, struct store **out, char *err, size_t errlen);
void store_close(struct store *s);
struct sqlite3 *store_db(struct store *s);
int store_exec_params(struct store *s, const char *sql, const char *const *p, size_t n,
                      berth_row_cb cb, void *arg, char **errmsg);
int store_migrate_owner(struct store *s, const char *owner, const char *const *steps, size_t n,
                        char **errmsg);
/* The core's batch (journal, tenant activity): refused while a plugin transaction is open
 * (BERTH_EBUSY) or the store is unhealthy; a failed commit is rolled back. */
void store_durable(struct store *s, bool on);
int store_begin(struct store *s);
int store_commit(struct store *s);
/* false once the database file was deleted or replaced under berthd; *why says so (owned by
 * the store). Every write is refused from then on. */
bool store_healthy(struct store *s, const char **why);
/* checks the file every every_ms too (writes check it anyway); the timer is closed by
 * store_close or by the loop's final walk */
void store_watch(struct store *s, uv_loop_t *loop, uint64_t every_ms);
/* store_plugin.c: a plugin's statements, limited to tables named <module>_*; errors are
 * BERTH_E* with *errmsg (caller frees) saying why */
int store_plugin_exec(struct store *s, const char *module, const char *sql,
                      const char *const *p, size_t n, berth_row_cb cb, void *arg,
                      char **errmsg);
int store_plugin_query(struct store *s, const char *module, const char *sql,
                       const struct berth_value *p, size_t n, berth_value_row_cb cb, void *arg,
                       char **errmsg);
/* flags: BERTH_TX_NOSYNC commits without a sync; the WAL is synced within 1 s after (in
 * libuv's threadpool, once store_watch gave the store a loop; without one it syncs now) */
int store_plugin_tx(struct store *s, const char *module, berth_tx_fn fn, void *arg,
                    unsigned flags, char **errmsg);
/* the core's part of each plugin transaction: before() inside it, just before its commit;
 * after() told whether the commit took (one hook: the bus's journal) */
void store_set_tx_hook(struct store *s, void (*before)(void), void (*after)(bool committed));
/* a short statement of the core's own (SAVEPOINT...); errmsg may be NULL */
int store_exec_raw(struct store *s, const char *sql, char **errmsg);
/* finalizes the statements kept for module (every module's when NULL): it unloads */
void store_plugin_forget(struct store *s, const char *module);
uint64_t store_max_seq(struct store *s);
int store_journal(struct store *s, uint64_t seq, int64_t t, const char *type,
                  const char *tenant, const char *json);
int store_journal_trim(struct store *s, uint64_t keep_from);
typedef bool (*store_event_cb)(uint64_t seq, int64_t t, const char *type, const char *tenant,
                               const char *json, void *arg);
int store_events_since(struct store *s, uint64_t after, size_t limit, store_event_cb cb,
                       void *arg);

/* ---- bus.c ---- */
int bus_init(void);
void bus_shutdown(void);
uint32_t bus_register(const char *name);
uint32_t bus_register_owned(const char *name, const char *owner);
const char *bus_owner(uint32_t type);   /* the module that registered a custom type, or NULL */
uint32_t bus_lookup(const char *name);
const char *bus_name(uint32_t type);
int bus_publish(uint32_t type, const char *tenant, const void *payload);
void bus_flush(void);           /* deliver what is queued now (used at shutdown and in tests) */
uint64_t bus_last_seq(void);
uint64_t bus_published(void);
struct bus_sub;
struct bus_sub *bus_subscribe(uint32_t type, berth_event_cb cb, void *arg);
void bus_unsubscribe(struct bus_sub *s);
void bus_set_retention(uint64_t max_events);
/* Serializes the payload of a built-in type into a JSON object (text, malloc'd). */
char *bus_payload_json(uint32_t type, const void *payload);

/* ---- http_server.c ---- */
struct listener;
struct http_limits {
    int64_t header_timeout_ms, idle_timeout_ms;
    uint64_t max_header, max_body;
    /* per listener; 0 = 1024 connections, 64 MiB held for requests not yet dispatched */
    uint64_t max_connections, max_buffered;
    int64_t send_timeout_ms;    /* output pending and none of it taken this long: closed */
};
extern struct http_limits http_limits;
/* addr: "host:port" or "unix:PATH". token: when set, requests need "Authorization: Bearer". */
int http_listen(const char *addr, int mode, berth_http_handler h, void *arg, const char *token,
                berth_instance *owner, struct listener **out, char *err, size_t errlen);
void http_listener_retarget(struct listener *l, berth_http_handler h, void *arg,
                            berth_instance *owner);
/* o's limits and authorize (called with the handler's arg); NULL: berth.http's, no hook */
void http_listener_set_opts(struct listener *l, const struct berth_listen_opts *o);
void http_listener_close(struct listener *l);
void http_listener_hold(struct listener *l);
void http_listener_release(struct listener *l);
const char *http_listener_addr(struct listener *l);
berth_instance *http_listener_owner(struct listener *l);
void http_close_all(void);
int http_serve_fd(int fd, berth_http_handler h, void *arg);
void http_req_set_param(berth_req *r, const char *name, const char *value);
berth_instance *http_req_owner(berth_req *r);
void http_req_set_owner(berth_req *r, berth_instance *owner);
/* answers what an unloaded plugin left: 503 before the head, a cut-short stream after it */
void http_abort_owner(berth_instance *owner);
const char *req_method(berth_req *r);
const char *req_path(berth_req *r);
const char *req_query_raw(berth_req *r);     /* still percent-encoded; NULL if none */
const char *req_query(berth_req *r, const char *name);
const char *req_param(berth_req *r, const char *name);
const char *req_header(berth_req *r, const char *name);
const char *req_body(berth_req *r, size_t *len);
size_t req_header_count(berth_req *r);
const char *req_header_at(berth_req *r, size_t i, const char **value);  /* NULL past the end */
const char *req_peer(berth_req *r);     /* "1.2.3.4:5678", "[::1]:80" or "unix" */
/* tags r's connection as owner's, counted per listener (berth_host.req_conn_claim) */
int req_conn_claim(berth_req *r, const char *owner, uint32_t max);
void req_respond_with(berth_req *r, int status, const struct berth_header *h,
                      const char *body, size_t len);
void req_abort(berth_req *r);           /* a cut-short answer: no final chunk, closes */
void req_respond(berth_req *r, int status, const char *ct, const char *body, size_t len);
void req_respond_error(berth_req *r, int status, const char *code, const char *fmt, ...)
    BERTH_PRINTF(4, 5);
void req_respond_json(berth_req *r, int status, cJSON *json); /* consumes json */
int req_start(berth_req *r, int status, const struct berth_header *h);
size_t req_write(berth_req *r, const char *data, size_t len);
void req_end(berth_req *r);
void req_on_close(berth_req *r, berth_req_cb cb, void *arg);
void req_on_drain(berth_req *r, berth_req_cb cb, void *arg);
uint64_t http_requests_total(void);
uint64_t http_connections_open(void);

/* ---- http_client.c ---- */
int http_client_init(void);
void http_client_shutdown(void);
berth_call *http_call(berth_instance *owner, const struct berth_http_opts *o,
                      berth_http_done cb, void *arg);
void http_call_cancel(berth_call *c);
int http_call_pause(berth_call *c);     /* both directions; safe inside the call's callbacks */
int http_call_resume(berth_call *c);

/* ---- plugin.c ---- */
struct core_cfg;
struct gen;
extern const struct berth_host berth_host_api;
int plugins_prepare(struct gen *g, const struct gen *old, struct errs *e);
void plugins_activate(struct gen *g, struct gen *old);
void plugins_stop_all(struct gen *g, void (*done)(void));
cJSON *plugins_json(void);
size_t plugins_count(void);
const char *inst_name(const berth_instance *i);
const char *inst_comp(const berth_instance *i);   /* its log component, "plugin:<name>" */
/* 0 if fd holds a complete shared object for this machine, else BERTH_EINVAL and why */
int elf_check_fd(int fd, char *err, size_t len);
bool inst_running(const berth_instance *i);     /* started and not draining */
void inst_pending(berth_instance *i, int delta);
cJSON *loop_handles_json(void);
void plugins_schema_json(const char *plugin_dir, cJSON *out, struct errs *e);
void plugins_discard(struct gen *g);
void plugins_close(void);
const struct berth_plugin *plugin_desc(const berth_instance *i);
const void *plugin_staged_cfg(const berth_instance *i);
/* every resource the host hands a plugin is linked into its instance */
struct res {
    struct list link;
    berth_instance *owner;
    int kind;
};
enum { RES_TIMER = 1, RES_WATCH, RES_SUB, RES_ROUTE, RES_CALL, RES_CONTRIB, RES_DRIVER, RES_OP,
       RES_LISTEN, RES_BUSY, RES_WAIT, RES_METRIC, RES_PROV, RES_DEP };
void res_attach(berth_instance *owner, struct res *r, int kind);
void res_detach(struct res *r);

/* ---- config.c: the generation ---- */
/* what the core itself reads of a template; idle and health live in lifecycle's block */
struct tmpl_core {
    const char *driver;
    int64_t port;
    struct berth_strmap env;
};
/* One plugin instance's block of a template: `templates.<t>.<instance>`, filled from the
 * instance's template_config schema. Everything lives in the generation's arena. */
struct tmpl_blk {
    const char *inst;           /* instance name */
    void *cfg;                  /* the filled template_config struct */
    const struct cnode *node;   /* the block's node in the generation's conf tree */
};
struct tmpl {
    const char *name;
    struct tmpl_core core;
    void *driver_cfg;           /* the driver module's template_config struct */
    const struct cnode *node;
    struct tmpl_blk *blocks; size_t nblocks;    /* the non-driver instances' blocks */
    bool gates_ready;           /* some instance's template_gates_ready(block) said true */
};
struct core_cfg {
    const char *state_dir, *socket, *plugin_dir;
    struct { const char *listen; const char *token; } tcp;
    struct { const char *level, *format; } log;
    struct { int64_t retention; } events;
    struct {
        int64_t header_timeout, idle_timeout;
        uint64_t max_header, max_body;
        int64_t max_connections;
        uint64_t max_buffered;
        int64_t send_timeout;
    } http;
    struct {
        int64_t resync_interval, retry_base, retry_max;
        int64_t crash_backoff_base, crash_backoff_max, crash_reset;
    } reconcile;
    int64_t drain_timeout;
};
struct inst_cfg;                /* plugin.c */
struct gen {
    uint64_t id;
    int refs;                   /* C.gen holds one; each spec in flight holds one */
    struct conf conf;
    struct arena arena;
    struct core_cfg core;
    struct tmpl *tmpls; size_t ntmpls;
    berth_instance **inst; size_t ninst;
    /* instances whose config is invalid: never started, kept so that templates naming them
     * are still checked against their module's schema; freed by plugins_discard */
    berth_instance **failed; size_t nfailed;
};
extern const struct berth_cfg_item core_schema[];
extern const struct berth_cfg_item tmpl_core_schema[];
/* Parse + validate conf_dir into a new generation (plugins loaded, not started). A NULL
 * conf_dir is an empty configuration (every default), for --dump-schema without a conf.d. */
struct gen *gen_build(const char *conf_dir, const char *state_override, const struct gen *old,
                      struct errs *e);
void gen_free(struct gen *g);
struct gen *gen_ref(struct gen *g);
void gen_unref(struct gen *g);
const struct tmpl *tmpl_find(const char *name);
/* The instance's template struct: for the template's driver its top-level keys (driver_cfg),
 * for any other instance its block; NULL when the template has no block for it. Borrowed from
 * the template's generation. */
const void *tmpl_block(const struct tmpl *tm, const char *instance);
/* The node that instance's struct was filled from: the block, or for the driver the template
 * itself (its top level holds the driver's keys). NULL if absent. */
const struct cnode *tmpl_block_node(const struct tmpl *tm, const char *instance);
/* true when a tenant of this template becomes ready only on a health report */
bool tmpl_gates_ready(const struct tmpl *tm);

/* ---- tenants: tenant.c, driver.c, provision.c, spec.c, crash.c, reconcile.c ---- */
struct tenant;
int tenants_init(void);
void tenants_shutdown(void);
struct tenant *tenant_find(const char *handle);
/* Stores the new tenant before it is acknowledged: a store error (BERTH_ENOSPC, BERTH_EIO)
 * leaves nothing behind and err says why. */
int tenant_create(const char *handle, const char *kind, const char *tmpl,
                  enum berth_desired desired, char *err, size_t n);
int tenant_desire(const char *handle, enum berth_desired d, const char *source);
/* desired = deleted; force also gives up on provisioners not yet deprovisioned, publishing
 * tenant.abandoned for each */
int tenant_delete(const char *handle, bool force);
int tenant_restart(const char *handle);
int tenant_touch(const char *handle, const char *source);
cJSON *tenant_json(const struct tenant *t);
cJSON *tenants_json(void);
void tenants_count(size_t counts[9]);
size_t tenants_total(void);
int tenant_finalizer(const char *handle, const char *name, bool add);
void tenant_fill_info(const struct tenant *t, struct berth_tenant_info *out);
int tenants_each(berth_tenant_fn fn, void *arg);
void tenants_reconcile_all(void);
const char *desired_name(enum berth_desired d);
const char *observed_name(enum berth_observed_state s);
/* drivers */
struct driver;
int driver_add(berth_instance *owner, const struct berth_driver *d, void *state);
/* an instance unloads: its driver and provisioner ops finish as canceled, its registrations,
 * spec contributors and tenant status entries go */
void tenants_drop_owner(berth_instance *owner);
void op_done(berth_op *op, int status, const struct berth_observed *obs, const char *msg);
bool op_live(const berth_op *op, const char *fn);     /* false (logged): not in flight */
void op_list_add(berth_op *op, const char *handle, const char *tmpl,
                 const struct berth_observed *obs);
void driver_report(berth_instance *owner, const char *handle, const struct berth_observed *o);
void driver_relist(berth_instance *owner);
bool drivers_health(cJSON *o);
int tenant_wait_ready(berth_instance *owner, const char *handle, int64_t timeout_ms,
                      berth_ready_cb cb, void *arg);
void waiter_drop(struct res *r);
int tenant_busy(berth_instance *owner, const char *handle, bool hold);
void busy_drop(struct res *r);
int tenant_health(const char *handle, bool healthy, const char *msg);
int tenant_restart_crash(const char *handle, const char *reason);
int tenant_status_set(berth_instance *owner, const char *handle, const char *json);
/* provisioners */
int provisioner_add(berth_instance *owner, const struct berth_provisioner *p, void *state);
int op_setenv(berth_op *op, const char *name, const char *value);
int op_label(berth_op *op, const char *name, const char *value);
/* runs the provision of owner's provisioner for the tenant again; owner NULL: of all */
int tenant_reprovision(berth_instance *owner, const char *handle);
int spec_contrib_add(berth_instance *owner, berth_spec_fn fn, void *arg);
const char *spec_handle(const berth_spec *s);
const char *spec_template(const berth_spec *s);
const void *spec_config(const berth_spec *s);
int spec_port(const berth_spec *s);
size_t spec_env_count(const berth_spec *s);
const char *spec_env(const berth_spec *s, size_t i, const char **value);
int spec_setenv(berth_spec *s, const char *name, const char *value);
size_t spec_label_count(const berth_spec *s);
const char *spec_label(const berth_spec *s, size_t i, const char **value);

/* ---- api.c ---- */
int api_init(void);
struct route;
/* ---- metrics.c: plugin metrics, owned by their instance ---- */
berth_metric *metric_register(berth_instance *self, const char *name,
                              enum berth_metric_kind kind, const char *help,
                              const char *const *labels);
int metric_add(berth_metric *m, const char *const *values, double delta);
int metric_set(berth_metric *m, const char *const *values, double value);
void metric_free(berth_metric *m);
void metrics_render(struct buf *b);     /* every plugin metric, in the text format */

/* ---- depend.c: dependencies plugins report (host->dependency_report), owned by their
 * instance ---- */
struct dep;
int dep_report(berth_instance *self, const char *name, bool required, int status,
               const char *message, int64_t interval_ms);
void dep_free(struct dep *d);
/* adds every dependency to o as "<instance>/<name>": {ok, status, required, message, age_ms,
 * ...}; returns why the first failing (or stale) required one fails, or NULL (caller frees) */
char *deps_json(cJSON *o);
void deps_metrics(struct buf *b);       /* berth_dependency_up{dependency, required} */

int route_add(berth_instance *owner, const char *method, const char *pattern,
              berth_http_handler h, void *arg, struct route **out);
/* the pattern of a core route that method+pattern would take requests from, or NULL */
const char *route_shadows_core(const char *method, const char *pattern);
void route_del(struct route *r);
void api_dispatch(berth_req *r, void *arg);
void api_shutdown(void);

/* ---- main.c: the daemon's global state ---- */
struct core {
    uv_loop_t *loop;
    const char *conf_dir;
    const char *state_override;
    char *state_dir;
    struct store *store;
    struct gen *gen;
    int64_t started_ms;
    bool stopping;
    struct { bool ok; int64_t at_ms; uint64_t generation; cJSON *errors; } reload;
};
extern struct core C;
int core_reload(struct errs *e);
void core_apply(const struct core_cfg *c);

#endif
