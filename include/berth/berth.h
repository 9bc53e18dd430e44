/* berth plugin SDK — the only header a plugin includes.
 *
 * ABI rules (see docs/plugin-guide.md):
 *  - A plugin exports one symbol, `berth_plugin_v1`, built with BERTH_PLUGIN(). The host checks
 *    abi_major (must be equal), abi_minor (host >= plugin) and struct_size before anything else.
 *  - The host passes a `struct berth_host` table. It only grows: functions are appended, never
 *    reordered or removed. A plugin built against an older minor sees a prefix of the table; a
 *    plugin that needs a newer function checks `host->size` (BERTH_HOST_HAS()).
 *  - Host objects are opaque handles; plugins never allocate or lay out host structs.
 *  - Every function is called on the loop thread only. Every resource a plugin takes through the
 *    table (timers, watchers, subscriptions, routes, listeners, HTTP calls) is owned by the host
 *    and recorded per instance: after destroy() the host cancels and reports what is left.
 *  - Errors are negative errno-style codes (BERTH_E*); berth_strerror() names them. A function
 *    that takes a callback either returns an error or calls the callback later, never both.
 */
#ifndef BERTH_BERTH_H
#define BERTH_BERTH_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BERTH_ABI_MAJOR 1
#define BERTH_ABI_MINOR 1

#define BERTH_EXPORT __attribute__((visibility("default")))
#define BERTH_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- errors ----------------------------------------------------------------------------- */

enum {
    BERTH_OK = 0,
    BERTH_EPERM = -1,        /* the host refuses: not this plugin's to do (1.1) */
    BERTH_ENOENT = -2,
    BERTH_EIO = -5,
    BERTH_EAGAIN = -11,      /* transient: the caller retries with backoff */
    BERTH_ENOMEM = -12,
    BERTH_EBUSY = -16,
    BERTH_EEXIST = -17,
    BERTH_EINVAL = -22,
    BERTH_ENOTSUP = -95,
    BERTH_ETIMEDOUT = -110,
    BERTH_ECONNREFUSED = -111,
    BERTH_ECANCELED = -125,
    BERTH_ENOSPC = -28,      /* the store's disk is full (1.1) */
};

static inline const char *berth_strerror(int code)
{
    switch (code) {
    case BERTH_OK: return "success";
    case BERTH_EPERM: return "not permitted";
    case BERTH_ENOENT: return "not found";
    case BERTH_EIO: return "I/O error";
    case BERTH_EAGAIN: return "temporary failure, retry";
    case BERTH_ENOMEM: return "out of memory";
    case BERTH_EBUSY: return "busy";
    case BERTH_EEXIST: return "already exists";
    case BERTH_EINVAL: return "invalid argument";
    case BERTH_ENOTSUP: return "not supported";
    case BERTH_ETIMEDOUT: return "timed out";
    case BERTH_ECONNREFUSED: return "connection refused";
    case BERTH_ECANCELED: return "canceled";
    case BERTH_ENOSPC: return "no space left on device";
    default: return "unknown error";
    }
}

/* A tenant handle: ^[a-z][a-z0-9-]{0,30}[a-z0-9]$, validated by the host before a plugin sees
 * it. A buffer that holds one is `char h[BERTH_HANDLE_MAX + 1]`. */
#define BERTH_HANDLE_MAX 32

/* ---- opaque handles ----------------------------------------------------------------------- */

typedef struct berth_instance berth_instance;   /* one loaded plugin instance */
typedef struct berth_timer berth_timer;
typedef struct berth_watch berth_watch;
typedef struct berth_sub berth_sub;
typedef struct berth_req berth_req;              /* an HTTP request served by berthd */
typedef struct berth_call berth_call;            /* an outgoing HTTP request */
typedef struct berth_spec berth_spec;            /* what a driver creates for a tenant */
typedef struct berth_op berth_op;                /* one asynchronous driver operation */
typedef struct berth_metric berth_metric;        /* a counter or gauge shown in /metrics (1.1) */
struct berth_event;

/* ---- configuration schema --------------------------------------------------------------- */

/* Value types and how they are stored at `offset` in the config struct. Strings and lists are
 * owned by the host and stay valid until the next configure() or destroy(). */
enum berth_cfg_type {
    BERTH_CFG_END = 0,
    BERTH_CFG_STR,       /* const char *           */
    BERTH_CFG_INT,       /* int64_t                */
    BERTH_CFG_BOOL,      /* bool                   */
    BERTH_CFG_DOUBLE,    /* double                 */
    BERTH_CFG_DURATION,  /* int64_t, milliseconds: 500ms 10s 5m 2h 1d */
    BERTH_CFG_SIZE,      /* uint64_t, bytes: 512 64k 256m 2g */
    BERTH_CFG_SECRET,    /* const char *, from {file: PATH} or {env: NAME}; never logged */
    BERTH_CFG_LIST,      /* struct berth_strlist   */
    BERTH_CFG_MAP,       /* struct berth_strmap (string -> string) */
    BERTH_CFG_STRUCT,    /* nested struct described by `sub`, stored inline at `offset` */
    /* 1.1: a YAML list of structs (struct berth_structlist) or a map of name -> struct
     * (struct berth_structmap), each element described by `sub`. The element size is the
     * `offset` of sub's terminating item: end sub with BERTH_CFG_ELEM_END(struct elem). */
    BERTH_CFG_STRUCT_LIST,
    BERTH_CFG_STRUCT_MAP,
};

#define BERTH_CFG_RELOAD   0x1u  /* a reload may change it in place (configure() is called) */
#define BERTH_CFG_REQUIRED 0x2u

struct berth_cfg_item {
    const char *key;
    enum berth_cfg_type type;
    const char *def;                    /* default, written as in YAML; NULL = zero value */
    double min, max;                    /* inclusive range for numbers; both 0 = unbounded */
    size_t offset;
    const char *desc;
    unsigned flags;
    const char *choices;                /* for STR: "a|b|c" */
    const struct berth_cfg_item *sub;   /* for STRUCT */
};

struct berth_strlist { size_t n; const char *const *v; };
struct berth_strmap { size_t n; const char *const *keys; const char *const *vals; };
/* v points at n elements of the sub-schema's struct, laid out as an array (1.1) */
struct berth_structlist { size_t n; const void *v; };
struct berth_structmap { size_t n; const char *const *keys; const void *vals; };

/* The terminating item of a sub-schema used by STRUCT_LIST or STRUCT_MAP: carries the size of
 * one element, so the host can lay out the array (struct berth_cfg_item cannot grow). */
#define BERTH_CFG_ELEM_END(type) {NULL, BERTH_CFG_END, NULL, 0, 0, sizeof(type), NULL, 0, NULL, NULL}

/* ---- logging ---------------------------------------------------------------------------- */

enum berth_log_level { BERTH_LOG_DEBUG, BERTH_LOG_INFO, BERTH_LOG_WARN, BERTH_LOG_ERROR };

/* ---- HTTP ------------------------------------------------------------------------------- */

/* A handler must eventually answer `req` with respond(), respond_with() or
 * respond_start()+respond_write()+respond_end() (respond_abort() to cut it short), possibly from
 * a later callback. The request object lives until the handler ends it, even after the
 * client went away: on_close says so, and the handler still ends the request (respond_abort()
 * or any answer; nothing is sent then). */
typedef void (*berth_http_handler)(berth_req *req, void *arg);
typedef void (*berth_req_cb)(berth_req *req, void *arg);

struct berth_header { const char *name, *value; };

struct berth_http_opts {
    size_t size;                        /* sizeof(struct berth_http_opts) */
    const char *method;                 /* default GET */
    const char *url;
    const char *unix_socket;            /* connect to this socket instead of the URL's host */
    const struct berth_header *headers; /* terminated by {NULL, NULL} */
    const void *body;
    size_t body_len;
    int64_t timeout_ms;                 /* whole transfer; 0 = none */
    int64_t connect_timeout_ms;         /* 0 = 10s */
    /* Streaming: when set, body bytes are handed here as they arrive and not buffered. Return
     * false to abort the transfer. */
    bool (*on_data)(const char *data, size_t len, void *arg);
    /* TLS client authentication (PEM files), and the CA to verify the server with */
    const char *tls_ca, *tls_cert, *tls_key;

    /* ---- 1.1: for proxies ---- */
    /* The response's status and headers, once, before the first body byte (and before
     * on_data). n headers, then {NULL, NULL} (it can go to respond_start() as is); the array
     * and its strings are borrowed for the call. Return false
     * to abort the transfer (cb then reports BERTH_ECANCELED). */
    bool (*on_head)(int status, const struct berth_header *headers, size_t n, void *arg);
    /* A streaming request body, pulled as the transfer can take it: copy up to cap bytes into
     * buf and return how many; 0 ends the body; BERTH_EAGAIN pauses sending until
     * http_resume(); any other negative code aborts. With read_body, `body` is ignored and
     * body_len is the total length, or SIZE_MAX when unknown (sent chunked). `body` itself is never
     * copied: it must stay valid until cb (a served request's req_body() does). */
    int64_t (*read_body)(char *buf, size_t cap, void *arg);
    /* With on_data: the most bytes read from the connection at once (1024 to 524288; 0: 16
     * KiB). A small one makes a held stream cheaper (the buffer is the call's) and a large
     * answer costlier (more reads). (1.1) */
    size_t recv_buffer;
};

struct berth_http_result {
    int status;                         /* HTTP status, or 0 on transport failure */
    int error;                          /* BERTH_E* on transport failure */
    const char *message;                /* transport error text, or "" */
    const char *body;                   /* buffered body (not with on_data), NUL-terminated */
    size_t body_len;
    const char *content_type;
};

typedef void (*berth_http_done)(const struct berth_http_result *res, void *arg);

/* A listener's own limits (1.1). Zero fields take berth.http's value. */
struct berth_listen_opts {
    size_t size;                        /* sizeof(struct berth_listen_opts) */
    const char *addr;                   /* "host:port" or "unix:PATH" */
    uint64_t max_body;                  /* 413 above it */
    uint64_t max_connections;           /* accepted connections beyond it are closed at once */
    uint64_t max_buffered;              /* bytes buffered for all unauthorized requests */
    /* Called once a request's headers are complete, before any body byte is read. Return
     * true to go on; false after answering the request (respond_error) to refuse it: its
     * body is never buffered. NULL: every request is authorized. */
    bool (*authorize)(berth_req *req, void *arg);
    int unix_mode;                      /* for unix: sockets; 0 = 0660 */
};

/* ---- tenants and drivers ------------------------------------------------------------------ */

enum berth_desired { BERTH_DESIRED_RUNNING = 1, BERTH_DESIRED_ASLEEP, BERTH_DESIRED_DELETED };

enum berth_observed_state {
    BERTH_OBS_ABSENT = 1, BERTH_OBS_CREATING, BERTH_OBS_STARTING, BERTH_OBS_RUNNING,
    BERTH_OBS_READY, BERTH_OBS_STOPPING, BERTH_OBS_STOPPED, BERTH_OBS_FAILED,
};

/* What a driver reports about one tenant's workload. Strings are borrowed for the call. */
struct berth_observed {
    size_t size;                        /* sizeof(struct berth_observed) */
    enum berth_observed_state state;
    const char *id;                     /* container id, pid... */
    const char *address;                /* host:port where the tenant's port answers, or NULL */
    int exit_code;                      /* with STOPPED, -1 when unknown */
    bool oom;
    const char *message;                /* reason on failure or unexpected stop */
};

/* A driver is a table of asynchronous operations. Each takes an op handle and finishes it with
 * host->op_done() exactly once, possibly later; list() adds entries with host->op_list_add()
 * first. An op status of BERTH_EAGAIN means transient (retried soon); other errors are retried
 * with backoff too, and their message lands on the tenant's status. */
struct berth_driver {
    size_t size;                        /* sizeof(struct berth_driver) */
    const char *name;                   /* templates name it in `driver:` */
    void (*create)(void *state, const berth_spec *spec, berth_op *op);
    void (*start)(void *state, const berth_spec *spec, berth_op *op);
    void (*stop)(void *state, const berth_spec *spec, berth_op *op);
    void (*remove)(void *state, const berth_spec *spec, berth_op *op);
    void (*inspect)(void *state, const berth_spec *spec, berth_op *op);
    void (*list)(void *state, berth_op *op);   /* everything this driver manages, for adoption */
};

/* A provisioner (1.1) gives each tenant something that must exist before its workload starts
 * and be taken away when the tenant is deleted: an API key, a route, accounts. A template
 * enables it by having a block under the registering instance's name (`quota: {...}`),
 * filled from the plugin's template_config; spec_config() in its operations returns that
 * block.
 *
 * The core runs the provisioners of a tenant before its driver's create, in ascending
 * `order` (ties: by instance name), and deprovisions in reverse before the tenant is gone.
 * Each finishes its op with host->op_done() exactly once; before that, provision() may add
 * environment and labels for the workload with op_setenv() / op_label(). The core persists
 * each result (done, or failed with message and attempts) and what it returned, retries
 * failures with its backoff, and re-runs provision() when the template's block changes or
 * an operator asks (reprovision). Both calls must therefore be idempotent: provision() for
 * a tenant that already has its key returns the same env; deprovision() of something
 * already gone succeeds. An op status of BERTH_EAGAIN is retried soon, others with backoff;
 * the message lands in the tenant's status. A provision finished with BERTH_EPERM is a
 * permanent failure (waiting will not help: a name someone else owns): it stays failed and
 * runs again only when its block changes or on reprovision. Deprovisions are always
 * retried. */
struct berth_provisioner {
    size_t size;                        /* sizeof(struct berth_provisioner) */
    int order;                          /* lower first: e.g. keys 100, accounts 200, routes 900 */
    void (*provision)(void *state, const berth_spec *spec, berth_op *op);
    void (*deprovision)(void *state, const berth_spec *spec, berth_op *op);
};

struct berth_tenant_info {
    size_t size;                        /* set by the caller: sizeof(struct berth_tenant_info) */
    const char *handle, *kind, *template_name;
    enum berth_desired desired;
    enum berth_observed_state observed;
    const char *address;                /* may be NULL */
    const char *reason;                 /* may be NULL */
    int64_t created_ms, last_activity_ms;
    /* 1.0 only: since 1.1 idle and health settings live in the lifecycle plugin's own template
     * block (host->template_config) and these are always 0 / NULL. Kept for the layout. */
    int64_t idle_timeout_ms;
    const char *health_http;            /* path probed with GET */
    bool health_tcp;
    int64_t health_interval_ms, health_timeout_ms, health_retries, health_start_period_ms;
    int64_t busy;                       /* holds taken with busy_hold() */
    int64_t started_ms;                 /* when the workload last started, 0 if unknown */
};

typedef void (*berth_spec_fn)(berth_spec *spec, void *arg);
/* status 0: ready; BERTH_ETIMEDOUT; BERTH_EIO with message: it failed; BERTH_ENOENT: gone */
typedef void (*berth_ready_cb)(const char *handle, int status, const char *message, void *arg);
typedef bool (*berth_tenant_fn)(const struct berth_tenant_info *t, void *arg); /* false stops */

/* ---- store values (1.1) ---------------------------------------------------------------------
 * Typed binds and columns. Text and blob point at len bytes (text is also NUL-terminated in
 * rows; in binds len may be SIZE_MAX for a NUL-terminated string). Row values are borrowed for
 * the callback. */
enum berth_value_type {
    BERTH_VAL_NULL = 0, BERTH_VAL_INT, BERTH_VAL_DOUBLE, BERTH_VAL_TEXT, BERTH_VAL_BLOB,
};
struct berth_value {
    enum berth_value_type type;
    int64_t i;
    double d;
    const void *p;
    size_t len;
};
#define BERTH_NULL ((struct berth_value){.type = BERTH_VAL_NULL})
#define BERTH_INT(v) ((struct berth_value){.type = BERTH_VAL_INT, .i = (v)})
#define BERTH_DOUBLE(v) ((struct berth_value){.type = BERTH_VAL_DOUBLE, .d = (v)})
#define BERTH_TEXT(s) ((struct berth_value){.type = BERTH_VAL_TEXT, .p = (s), .len = SIZE_MAX})
#define BERTH_BLOB(b, n) ((struct berth_value){.type = BERTH_VAL_BLOB, .p = (b), .len = (n)})

/* One typed row. Return false to stop. */
typedef bool (*berth_value_row_cb)(int ncols, const char *const *names,
                                   const struct berth_value *vals, void *arg);
/* The body of a transaction: run statements with store_query/store_exec and return 0 to
 * commit, or an error to roll back. A statement that fails inside rolls the whole
 * transaction back whatever the body returns. */
typedef int (*berth_tx_fn)(void *arg);

/* store_tx_flags: the commit is durable against a crash of berthd at once (it is in the
 * WAL when the call returns), against a power loss at the next synced commit or within 1 s
 * (a sync of the WAL starts at most 1 s after the commit). The call never waits for the disk. */
#define BERTH_TX_NOSYNC 1u

/* ---- metrics (1.1) ------------------------------------------------------------------------ */
enum berth_metric_kind { BERTH_METRIC_COUNTER = 1, BERTH_METRIC_GAUGE };

/* ---- callbacks ---------------------------------------------------------------------------- */

typedef void (*berth_timer_cb)(berth_timer *t, void *arg);
typedef void (*berth_watch_cb)(berth_watch *w, int events, void *arg);
typedef void (*berth_event_cb)(const struct berth_event *ev, void *arg);
/* One result row: column names and values (NULL for SQL NULL). Return false to stop. */
typedef bool (*berth_row_cb)(int ncols, const char *const *names, const char *const *vals,
                             void *arg);

#define BERTH_WATCH_READABLE 1
#define BERTH_WATCH_WRITABLE 2

/* ---- the host API table --------------------------------------------------------------------
 * Append only. `self` identifies the calling instance: the host records resources per instance
 * and prefixes its log lines with the instance name. */
struct berth_host {
    size_t size;
    uint16_t abi_major, abi_minor;

    /* identity and logging */
    const char *(*name)(berth_instance *self);
    const char *(*state_dir)(berth_instance *self);
    void (*log)(berth_instance *self, enum berth_log_level lvl, const char *fmt, ...)
        BERTH_PRINTF(3, 4);
    int64_t (*now_ms)(berth_instance *self);            /* wall clock, ms since the epoch */

    /* the drain handshake: call once stop() has finished its work */
    void (*drained)(berth_instance *self);

    /* timers and fd watchers */
    berth_timer *(*timer_start)(berth_instance *self, uint64_t timeout_ms, uint64_t repeat_ms,
                                berth_timer_cb cb, void *arg);
    void (*timer_stop)(berth_timer *t);                 /* frees it; safe inside its callback */
    berth_watch *(*watch_fd)(berth_instance *self, int fd, int events, berth_watch_cb cb,
                             void *arg);
    void (*watch_stop)(berth_watch *w);

    /* event bus: type 0 subscribes to all; publish copies the payload */
    berth_sub *(*subscribe)(berth_instance *self, uint32_t type, berth_event_cb cb, void *arg);
    void (*unsubscribe)(berth_sub *s);
    int (*publish)(berth_instance *self, uint32_t type, const char *tenant, const void *payload);
    uint32_t (*event_register)(berth_instance *self, const char *name); /* 0 on error */
    uint32_t (*event_lookup)(berth_instance *self, const char *name);   /* 0 if unknown */
    const char *(*event_name)(berth_instance *self, uint32_t type);

    /* store: plugin-owned tables; short statements only (they run on the loop thread).
     * migrate applies steps[i] for every schema version above the recorded one, in a
     * transaction each; exec binds params as text ?1..?n. */
    int (*store_migrate)(berth_instance *self, const char *const *steps, size_t n);
    int (*store_exec)(berth_instance *self, const char *sql, const char *const *params,
                      size_t nparams, berth_row_cb cb, void *arg);

    /* HTTP client on the loop (berth's own HTTP/1.1 client for http://, libcurl for https);
     * cb is called exactly once unless canceled, never inside http_request */
    berth_call *(*http_request)(berth_instance *self, const struct berth_http_opts *o,
                                berth_http_done cb, void *arg);
    void (*http_cancel)(berth_call *c);

    /* HTTP server: routes on the control API, and listeners owned by the core that survive a
     * reload of their plugin. A pattern segment `{name}` captures; `*` at the end matches the
     * rest. addr is "host:port" or "unix:PATH". */
    int (*route)(berth_instance *self, const char *method, const char *pattern,
                 berth_http_handler h, void *arg);
    int (*listen)(berth_instance *self, const char *addr, berth_http_handler h, void *arg);

    const char *(*req_method)(berth_req *r);
    const char *(*req_path)(berth_req *r);              /* without the query */
    const char *(*req_query)(berth_req *r, const char *name); /* decoded, NULL if absent */
    const char *(*req_param)(berth_req *r, const char *name); /* from the route pattern */
    const char *(*req_header)(berth_req *r, const char *name);
    const char *(*req_body)(berth_req *r, size_t *len);
    void (*respond)(berth_req *r, int status, const char *content_type, const char *body,
                    size_t len);
    void (*respond_error)(berth_req *r, int status, const char *code, const char *fmt, ...)
        BERTH_PRINTF(4, 5);
    /* streaming: respond_start() sends the head (chunked); respond_write() returns the bytes
     * still queued for the client, so a producer can pause above its own high-water mark and
     * resume in on_drain; respond_end() finishes (1.0 named them start/write/end). */
    int (*respond_start)(berth_req *r, int status, const struct berth_header *headers);
    size_t (*respond_write)(berth_req *r, const char *data, size_t len);
    void (*respond_end)(berth_req *r);
    void (*on_close)(berth_req *r, berth_req_cb cb, void *arg);
    void (*on_drain)(berth_req *r, berth_req_cb cb, void *arg);

    /* spec contributions: called before a driver creates a tenant's workload. Deprecated
     * since 1.1, which has provisioners: they can wait for a remote service and their results
     * are persisted. Still honoured for 1.0 plugins. */
    int (*spec_contributor)(berth_instance *self, berth_spec_fn fn, void *arg);
    const char *(*spec_handle)(const berth_spec *s);
    const char *(*spec_template)(const berth_spec *s);  /* template name */
    /* in a driver's op: the driver's template struct; in a provisioner's: its block */
    const void *(*spec_config)(const berth_spec *s);
    int (*spec_port)(const berth_spec *s);
    size_t (*spec_env_count)(const berth_spec *s);
    const char *(*spec_env)(const berth_spec *s, size_t i, const char **value);
    int (*spec_setenv)(berth_spec *s, const char *name, const char *value);

    /* tenants: get/each copy nothing; pointers are valid during the call only */
    int (*tenant_get)(berth_instance *self, const char *handle,
                      struct berth_tenant_info *out);
    int (*tenant_each)(berth_instance *self, berth_tenant_fn fn, void *arg);
    int (*tenant_set_desired)(berth_instance *self, const char *handle, enum berth_desired d,
                              const char *reason);
    int (*finalizer_add)(berth_instance *self, const char *handle, const char *name);
    int (*finalizer_release)(berth_instance *self, const char *handle, const char *name);

    /* drivers */
    int (*driver_register)(berth_instance *self, const struct berth_driver *d, void *state);
    void (*op_done)(berth_op *op, int status, const struct berth_observed *obs,
                    const char *message);
    void (*op_list_add)(berth_op *op, const char *handle, const char *template_name,
                        const struct berth_observed *obs);
    /* an unexpected change (container died, OOM): the core updates and reconciles */
    void (*driver_report)(berth_instance *self, const char *handle,
                          const struct berth_observed *obs);
    /* ask for list() now, e.g. after reconnecting to an engine that may have changed */
    void (*driver_relist)(berth_instance *self);

    /* lifecycle: a busy tenant (an open stream, a websocket) is never put to sleep; holds are
     * counted and released by the host if the instance unloads */
    int (*busy_hold)(berth_instance *self, const char *handle);
    int (*busy_release)(berth_instance *self, const char *handle);
    /* the result of a health probe: healthy marks a running tenant ready (tenant.ready) */
    int (*health_report)(berth_instance *self, const char *handle, bool healthy,
                         const char *message);
    /* the workload failed (a health check): the core restarts it as after a crash, paced by
     * the tenant's crash-loop backoff (1.0 named it tenant_restart) */
    int (*tenant_report_crash)(berth_instance *self, const char *handle, const char *reason);
    /* a JSON object shown in the tenant's status under "plugins"."<instance>"; NULL clears */
    int (*tenant_status_set)(berth_instance *self, const char *handle, const char *json);
    /* cb once the tenant is ready (at once if it is), failed, gone, or after timeout_ms */
    int (*tenant_wait_ready)(berth_instance *self, const char *handle, int64_t timeout_ms,
                             berth_ready_cb cb, void *arg);

    /* ================================ 1.1 ================================================ */

    /* provisioners (see struct berth_provisioner); one per instance */
    int (*provisioner_register)(berth_instance *self, const struct berth_provisioner *p,
                                void *state);
    /* in provision(), before op_done: environment and labels for the tenant's workload */
    int (*op_setenv)(berth_op *op, const char *name, const char *value);
    int (*op_label)(berth_op *op, const char *name, const char *value);
    /* run this instance's provision() for the tenant again (a rotated key); the workload is
     * re-created if what it returns changes */
    int (*tenant_reprovision)(berth_instance *self, const char *handle);
    /* labels a driver applies to the workload: provisioners' and the core's */
    size_t (*spec_label_count)(const berth_spec *s);
    const char *(*spec_label)(const berth_spec *s, size_t i, const char **value);

    /* this instance's block of a template, filled from its descriptor's template_config; NULL
     * when the template has none (or is unknown). Valid until the next config.reloaded. */
    const void *(*template_config)(berth_instance *self, const char *template_name);

    /* store: typed statements on this instance's own tables. Every table a plugin creates
     * or touches is named `<module>_...` (the module's name, as in exec_procs); the core's
     * tables and other plugins' are refused with BERTH_EPERM. A full disk is BERTH_ENOSPC.
     * store_tx runs fn inside one transaction (no nesting: BERTH_EBUSY); a committed
     * transaction is on disk (fsync) before store_tx returns. */
    int (*store_query)(berth_instance *self, const char *sql, const struct berth_value *params,
                       size_t nparams, berth_value_row_cb cb, void *arg);
    int (*store_tx)(berth_instance *self, berth_tx_fn fn, void *arg);

    /* HTTP client: pause and resume a call's transfer, both ways (on_data's delivery and
     * read_body's pulls). Safe inside the call's own callbacks. */
    int (*http_pause)(berth_call *c);
    int (*http_resume)(berth_call *c);

    /* HTTP server */
    size_t (*req_header_count)(berth_req *r);
    const char *(*req_header_at)(berth_req *r, size_t i, const char **value);
    const char *(*req_peer)(berth_req *r);  /* "1.2.3.4:5678", "[::1]:80" or "unix" */
    int (*listen_opts)(berth_instance *self, const struct berth_listen_opts *o,
                       berth_http_handler h, void *arg);
    int (*unlisten)(berth_instance *self, const char *addr);
    /* a whole answer with headers of the caller's (Content-Length and Connection are the
     * host's) */
    void (*respond_with)(berth_req *r, int status, const struct berth_header *headers,
                         const char *body, size_t len);
    /* ends a streamed answer so the client sees it cut short (no terminating chunk; the
     * connection closes), for an upstream that failed mid-body */
    void (*respond_abort)(berth_req *r);

    /* metrics shown in /metrics as berth_<instance>_<name>{labels}. label_names is
     * NULL-terminated (or NULL: no labels); values in metric_add/metric_set are given in
     * the same order. Counters only grow. Freed when the instance unloads. */
    berth_metric *(*metric_register)(berth_instance *self, const char *name,
                                     enum berth_metric_kind kind, const char *help,
                                     const char *const *label_names);
    int (*metric_add)(berth_metric *m, const char *const *label_values, double delta);
    int (*metric_set)(berth_metric *m, const char *const *label_values, double value);

    /* store_tx with flags (BERTH_TX_NOSYNC, above; 0 is store_tx). Unknown flags:
     * BERTH_EINVAL. (1.1) */
    int (*store_tx_flags)(berth_instance *self, berth_tx_fn fn, void *arg, unsigned flags);

    /* Dependency health (1.1, appended): the result of the plugin's own check of a service it
     * needs (Caddy's admin API, a homeserver). `name` ([a-z0-9][a-z0-9._-]*, 64 at most)
     * names the dependency within the instance; it is shown as "<instance>/<name>" in
     * /health, GET /v1/system and `berthctl info`. status is BERTH_OK or the BERTH_E* code
     * of the failure; message (may be NULL; copied) says what is wrong. interval_ms is how
     * often the plugin checks (10ms..1d): a report older than 3 intervals is stale and
     * counts as failing, so report on every check, ok or not. When `required`, /health
     * answers 503 while the dependency fails or is stale; otherwise it is listed only.
     * Each report replaces the last of its name; the reports are cleared when the instance
     * unloads (a reload's new instance takes over the names it reports again). At most 32
     * names per instance. Returns BERTH_EINVAL (and logs why) for a bad argument. */
    int (*dependency_report)(berth_instance *self, const char *name, bool required,
                             int status, const char *message, int64_t interval_ms);

    /* Connection owners (1.1, appended): tags the connection r arrived on as `owner`'s (a
     * tenant whose key the request carries; the name is copied, 255 bytes at most) and
     * counts each owner's connections per listener, so that one owner can be held to its
     * share of a listener. Returns 0, or BERTH_EBUSY when owner holds `max` other
     * connections on that listener already (max 0: no cap); nothing changes then. A
     * connection its owner claims again costs one string compare; one another owner claims
     * moves to it. The claim ends when the connection closes, or is done serving (an answer
     * with Connection: close, a refusal in authorize) and its answer is written; a NULL
     * owner ends it now.
     * BERTH_ENOENT when the client is gone, BERTH_EINVAL for a bad argument. Works in a
     * listener's authorize hook (at header time) and in a handler. */
    int (*req_conn_claim)(berth_req *r, const char *owner, uint32_t max);
};

#define BERTH_HOST_HAS(host, fn) \
    ((host)->size >= offsetof(struct berth_host, fn) + sizeof((host)->fn) && (host)->fn)

/* ---- the plugin descriptor ---------------------------------------------------------------- */

struct berth_plugin {
    uint16_t abi_major, abi_minor;
    uint32_t struct_size;
    const char *name, *version, *description;

    const struct berth_cfg_item *config;    /* schema of the instance's block */
    size_t config_size;                     /* size of the struct it fills */
    /* Template keys the plugin reads. A driver's are written at the template's top level
     * (the template names one driver); any other plugin's under its instance name
     * (`templates: {default: {lifecycle: {idle_timeout: 10m}}}`). --check validates them. */
    const struct berth_cfg_item *template_config;
    size_t template_config_size;

    /* check beyond the schema; write a message to err. Called in --check and before reload. */
    int (*validate)(const void *cfg, char *err, size_t errlen);
    int (*init)(const struct berth_host *host, berth_instance *self, void **state);
    /* first with the initial config, later on reload when only BERTH_CFG_RELOAD keys changed */
    int (*configure)(void *state, const void *cfg);
    int (*start)(void *state);
    /* begin draining; call host->drained(self) when done. NULL: nothing to drain. */
    void (*stop)(void *state);
    void (*destroy)(void *state);

    /* ---- 1.1 (read by the host only when struct_size covers it) ---- */
    /* For a plugin whose template block can hold a health check: true when `block` (this
     * plugin's template_config struct for one template) makes the plugin declare that
     * template's tenants ready itself (host->health_report). Without any such gate a tenant
     * is ready as soon as its workload runs. */
    bool (*template_gates_ready)(const void *block);
    /* Checks one template's block beyond its schema (a cron expression), in --check and before
     * a reload. On error write a message that starts with the dotted key at fault
     * ("schedule.cron: ...") to err and return < 0: the host reports it at that value's
     * file:line:column. NULL: the schema is the whole check. (1.1) */
    int (*template_validate)(const void *block, char *err, size_t errlen);
};

#define BERTH_PLUGIN(...)                                                                    \
    BERTH_EXPORT const struct berth_plugin berth_plugin_v1 = {                               \
        .abi_major = BERTH_ABI_MAJOR, .abi_minor = BERTH_ABI_MINOR,                          \
        .struct_size = sizeof(struct berth_plugin), __VA_ARGS__}

#define BERTH_PLUGIN_SYMBOL "berth_plugin_v1"

#include <berth/events.h>

#ifdef __cplusplus
}
#endif
#endif
