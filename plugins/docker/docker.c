/* docker: a driver on the Docker Engine API, through the host's HTTP client (libcurl multi on
 * berthd's loop, never blocking). Containers are named berth-<handle> and labelled
 * berth.managed, berth.tenant, berth.template and berth.instance, so list() adopts what exists
 * and a restart of berthd never creates a duplicate. follow.c follows dockerd's events
 * (deaths, OOM kills, removals behind berth's back); ports.c keeps each tenant's host port. */
#include <berth/berth.h>
#include <cJSON.h>
#include "dk.h"
#include "docker_answers.h"
#include "ports.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIN_API "1.40"

const struct berth_host *H;

struct tcfg {
    const char *image, *network, *publish, *pull, *user, *volume_owner;
    struct berth_strlist command, volumes, cap_drop, security_opt;
    struct berth_strmap labels;
    uint64_t memory;
    double cpus;
    int64_t pids, stop_timeout, volume_mode;
    bool read_only;
};

#define C(f) offsetof(struct cfg, f)
static const struct berth_cfg_item schema[] = {
    {"socket", BERTH_CFG_STR, "/var/run/docker.sock", 0, 0, C(socket),
     "dockerd's unix socket", 0, NULL, NULL},
    {"host", BERTH_CFG_STR, NULL, 0, 0, C(host),
     "tcp://HOST:PORT of a remote dockerd (TLS with tls_ca/tls_cert/tls_key); overrides socket",
     0, NULL, NULL},
    {"tls_ca", BERTH_CFG_STR, NULL, 0, 0, C(tls_ca), "CA certificate (PEM) for host", 0, NULL,
     NULL},
    {"tls_cert", BERTH_CFG_STR, NULL, 0, 0, C(tls_cert), "client certificate (PEM)", 0, NULL,
     NULL},
    {"tls_key", BERTH_CFG_STR, NULL, 0, 0, C(tls_key), "client key (PEM)", 0, NULL, NULL},
    {"reconnect_max", BERTH_CFG_DURATION, "30s", 100, 600000, C(reconnect_max),
     "longest wait between attempts to reach dockerd's event stream", BERTH_CFG_RELOAD, NULL,
     NULL},
    {0},
};

#define T(f) offsetof(struct tcfg, f)
static const struct berth_cfg_item tschema[] = {
    {"image", BERTH_CFG_STR, NULL, 0, 0, T(image), "image reference", BERTH_CFG_REQUIRED, NULL,
     NULL},
    {"command", BERTH_CFG_LIST, NULL, 0, 0, T(command), "argv overriding the image's CMD", 0,
     NULL, NULL},
    {"volumes", BERTH_CFG_LIST, NULL, 0, 0, T(volumes),
     "HOST:CONTAINER[:ro]; {handle} expands; host directories are created", 0, NULL, NULL},
    {"volume_owner", BERTH_CFG_STR, NULL, 0, 0, T(volume_owner),
     "uid:gid given to created host directories", 0, NULL, NULL},
    {"volume_mode", BERTH_CFG_INT, "488", 0, 4095, T(volume_mode),
     "mode of created host directories (decimal; 488 = 0750)", 0, NULL, NULL},
    {"memory", BERTH_CFG_SIZE, "0", 0, 0, T(memory), "memory limit (0: none)", 0, NULL, NULL},
    {"cpus", BERTH_CFG_DOUBLE, "0", 0, 1024, T(cpus), "CPU limit in cores (0: none)", 0, NULL,
     NULL},
    {"pids", BERTH_CFG_INT, "0", 0, 4194304, T(pids), "process limit (0: none)", 0, NULL, NULL},
    {"network", BERTH_CFG_STR, NULL, 0, 0, T(network), "network, created if missing", 0, NULL,
     NULL},
    {"publish", BERTH_CFG_STR, "127.0.0.1", 0, 0, T(publish),
     "host address the tenant's port is published on (a host port kept per tenant)", 0, NULL,
     NULL},
    {"labels", BERTH_CFG_MAP, NULL, 0, 0, T(labels), "extra container labels", 0, NULL, NULL},
    {"read_only", BERTH_CFG_BOOL, "false", 0, 0, T(read_only), "read-only root filesystem", 0,
     NULL, NULL},
    {"cap_drop", BERTH_CFG_LIST, NULL, 0, 0, T(cap_drop), "capabilities to drop (e.g. ALL)", 0,
     NULL, NULL},
    {"security_opt", BERTH_CFG_LIST, NULL, 0, 0, T(security_opt),
     "security options (default: no-new-privileges)", 0, NULL, NULL},
    {"pull", BERTH_CFG_STR, "if-missing", 0, 0, T(pull), "when to pull the image", 0,
     "if-missing|always|never", NULL},
    {"stop_timeout", BERTH_CFG_DURATION, "10s", 0, 3600000, T(stop_timeout),
     "grace period before SIGKILL on stop", 0, NULL, NULL},
    {"user", BERTH_CFG_STR, NULL, 0, 0, T(user), "user[:group] inside the container", 0, NULL,
     NULL},
    {0},
};

struct job;
typedef void (*step_fn)(struct job *j, const struct berth_http_result *r);

/* one driver operation in flight: a chain of Engine API calls */
struct job {
    struct dk *d;
    berth_op *op;
    const berth_spec *spec;
    const struct tcfg *t;
    char handle[BERTH_HANDLE_MAX + 1], name[64], id[80];
    step_fn next, then;         /* the pending reply's handler; what follows /version */
    char *pull_status;          /* an error reported inside a pull's stream */
    struct dk_lines pull_lines; /* the pull stream's partial line */
    char *body;                 /* the pending call's request body: sent without a copy */
    struct job *next_waiting;   /* in a netop's queue */
    int64_t wait_ms;            /* what dockerd may take beyond a normal reply (a stop) */
    int avoid_port;             /* a host port dockerd could not bind: not to be picked */
    bool moved;                 /* this start already re-created the container once */
};

/* ---- plumbing ---- */

/* The Engine takes whole seconds: a grace period is rounded up, never cut to nothing. */
static long long stop_secs(const struct tcfg *t)
{
    return (long long)((t->stop_timeout + 999) / 1000);
}

/* Docker answers errors as {"message": "..."}; anything else is shown as it came. */
static void docker_message(const struct berth_http_result *r, char *out, size_t n)
{
    if (r->status == 0) {
        snprintf(out, n, "cannot reach dockerd: %s", r->message);
        return;
    }
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    const char *m = cJSON_GetStringValue(cJSON_GetObjectItem(j, "message"));
    snprintf(out, n, "dockerd: %s (HTTP %d)", m ? m : r->body, r->status);
    cJSON_Delete(j);
}

static void job_free(struct job *j)
{
    cJSON_free(j->body);
    free(j->pull_status);
    dk_lines_reset(&j->pull_lines);
    free(j);
}

static void job_fail(struct job *j, const struct berth_http_result *r, const char *what)
{
    char msg[768], dm[640];
    docker_message(r, dm, sizeof dm);
    snprintf(msg, sizeof msg, "%s: %s", what, dm);
    H->op_done(j->op, r->status == 0 ? BERTH_EAGAIN : BERTH_EIO, NULL, msg);
    job_free(j);
}

static void on_reply(const struct berth_http_result *r, void *arg)
{
    struct job *j = arg;
    j->next(j, r);
}

/* Takes body (cJSON-allocated): the host sends it without a copy, so the job keeps it until
 * the reply. */
static void call(struct job *j, const char *method, const char *path, char *body,
                 step_fn next, bool (*on_data)(const char *, size_t, void *))
{
    struct dk *d = j->d;
    if (body) {
        cJSON_free(j->body);
        j->body = body;
    }
    char url[1024];
    snprintf(url, sizeof url, "%s%s%s%s", d->url, d->api[0] ? "/v" : "", d->api, path);
    static const struct berth_header json_hdr[] = {{"Content-Type", "application/json"},
                                                   {NULL, NULL}};
    struct berth_http_opts o = {
        .size = sizeof o, .method = method, .url = url,
        .unix_socket = d->cfg.host ? NULL : d->cfg.socket,
        .headers = body ? json_hdr : NULL, .body = body, .body_len = body ? strlen(body) : 0,
        .timeout_ms = on_data ? 0 : 120000 + j->wait_ms, .on_data = on_data,
        .tls_ca = d->cfg.tls_ca, .tls_cert = d->cfg.tls_cert, .tls_key = d->cfg.tls_key,
    };
    j->next = next;
    if (!H->http_request(d->self, &o, on_reply, j)) {
        H->op_done(j->op, BERTH_EIO, NULL, "docker: cannot start an HTTP request");
        job_free(j);
    }
}

static struct job *job_new(struct dk *d, berth_op *op, const berth_spec *s)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        H->op_done(op, BERTH_ENOMEM, NULL, "out of memory");
        return NULL;
    }
    j->d = d;
    j->op = op;
    j->spec = s;
    if (s) {
        j->t = H->spec_config(s);
        snprintf(j->handle, sizeof j->handle, "%s", H->spec_handle(s));
        snprintf(j->name, sizeof j->name, "berth-%s", j->handle);
    }
    return j;
}

/* Every operation first makes sure the API version is known (GET /version, once). */
static void versioned(struct job *j, step_fn then);

static void got_version(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 200) {
        job_fail(j, r, "GET /version");
        return;
    }
    cJSON *v = cJSON_ParseWithLength(r->body, r->body_len);
    const char *api = cJSON_GetStringValue(cJSON_GetObjectItem(v, "ApiVersion"));
    if (!api || strlen(api) >= sizeof j->d->api || strcmp(api, MIN_API) < 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "dockerd speaks API %s; berth needs %s or newer",
                 api ? api : "?", MIN_API);
        cJSON_Delete(v);
        H->op_done(j->op, BERTH_ENOTSUP, NULL, msg);
        job_free(j);
        return;
    }
    snprintf(j->d->api, sizeof j->d->api, "%s", api);
    H->log(j->d->self, BERTH_LOG_INFO, "dockerd %s, API %s",
           cJSON_GetStringValue(cJSON_GetObjectItem(v, "Version")), api);
    cJSON_Delete(v);
    j->then(j, NULL);
}

static void versioned(struct job *j, step_fn then)
{
    if (j->d->api[0]) {
        then(j, NULL);
        return;
    }
    j->then = then;
    call(j, "GET", "/version", NULL, got_version, NULL);
}

/* ---- inspect: observed state and the published address ---- */

static void fill_observed(struct job *j, cJSON *c, struct berth_observed *o,
                          struct dk_inspect *in)
{
    dk_inspect_read(c, j->spec ? H->spec_port(j->spec) : 0, in);
    if (in->id) snprintf(j->id, sizeof j->id, "%s", in->id);
    *o = (struct berth_observed){sizeof *o, in->running ? BERTH_OBS_RUNNING : BERTH_OBS_STOPPED,
                                 j->id, in->addr[0] ? in->addr : NULL, in->exit_code, in->oom,
                                 NULL};
}

static void inspected(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 200) {
        job_fail(j, r, "inspect");
        return;
    }
    cJSON *c = cJSON_ParseWithLength(r->body, r->body_len);
    struct berth_observed o;
    struct dk_inspect in;
    fill_observed(j, c, &o, &in);
    H->op_done(j->op, 0, &o, NULL);
    cJSON_Delete(c);
    job_free(j);
}

static void inspect_then_done(struct job *j)
{
    char path[128];
    snprintf(path, sizeof path, "/containers/%s/json", j->name);
    call(j, "GET", path, NULL, inspected, NULL);
}

/* ---- create ---- */

static cJSON *strlist(const struct berth_strlist *l)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < l->n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(l->v[i]));
    return a;
}

static char *expand_handle(const char *s, const char *handle)
{
    size_t n = strlen(s) + 1;
    for (const char *p = strstr(s, "{handle}"); p; p = strstr(p + 1, "{handle}"))
        n += strlen(handle);
    char *out = malloc(n), *o = out;
    if (!out) return NULL;
    while (*s) {
        if (!strncmp(s, "{handle}", 8)) {
            o = stpcpy(o, handle);
            s += 8;
        } else {
            *o++ = *s++;
        }
    }
    *o = 0;
    return out;
}

static int mkdirs(const char *path, mode_t mode)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
    return chmod(tmp, mode);
}

/* Host directories of volumes are made before the container, owned as configured. */
static cJSON *binds(struct job *j, char *err, size_t n)
{
    const struct tcfg *t = j->t;
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < t->volumes.n; i++) {
        char *b = expand_handle(t->volumes.v[i], j->handle);
        char *colon = b ? strchr(b, ':') : NULL;
        if (!colon || b[0] != '/') {
            snprintf(err, n, "volume '%s' must be /HOST/PATH:/CONTAINER/PATH[:ro]",
                     t->volumes.v[i]);
            free(b);
            cJSON_Delete(a);
            return NULL;
        }
        *colon = 0;
        int rc = mkdirs(b, (mode_t)t->volume_mode);
        if (!rc && t->volume_owner) {
            unsigned uid, gid;
            if (sscanf(t->volume_owner, "%u:%u", &uid, &gid) == 2) rc = chown(b, uid, gid);
        }
        if (rc) {
            snprintf(err, n, "cannot prepare volume directory %s: %s", b, strerror(errno));
            free(b);
            cJSON_Delete(a);
            return NULL;
        }
        *colon = ':';
        cJSON_AddItemToArray(a, cJSON_CreateString(b));
        free(b);
    }
    return a;
}

/* The tenant's kept host port into buf as dockerd wants it ("" lets dockerd pick, when no
 * port can be had here). Moving it is said: a router following the old address loses the
 * tenant. */
static void host_port(struct job *j, char *buf, size_t n)
{
    int from, port = dk_port_pick(j->d->self, j->handle, j->t->publish, j->avoid_port, &from);
    if (from)
        H->log(j->d->self, BERTH_LOG_WARN, "tenant %s: host port %d is taken; publishing on "
               "%d (the tenant's address changes)", j->handle, from, port);
    if (!port) buf[0] = 0;
    else snprintf(buf, n, "%d", port);
}

static char *create_body(struct job *j, char *err, size_t n)
{
    const struct tcfg *t = j->t;
    const berth_spec *s = j->spec;
    cJSON *hc_binds = binds(j, err, n);
    if (!hc_binds) return NULL;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "Image", t->image);
    if (t->command.n) cJSON_AddItemToObject(b, "Cmd", strlist(&t->command));
    if (t->user) cJSON_AddStringToObject(b, "User", t->user);
    cJSON *env = cJSON_AddArrayToObject(b, "Env");
    for (size_t i = 0; i < H->spec_env_count(s); i++) {
        const char *v;
        const char *k = H->spec_env(s, i, &v);
        char *kv = malloc(strlen(k) + strlen(v) + 2);
        if (!kv) continue;
        sprintf(kv, "%s=%s", k, v);
        cJSON_AddItemToArray(env, cJSON_CreateString(kv));
        free(kv);
    }
    int port = H->spec_port(s);
    char key[32];
    snprintf(key, sizeof key, "%d/tcp", port);
    if (port) {
        char kv[32];
        snprintf(kv, sizeof kv, "PORT=%d", port);
        cJSON_AddItemToArray(env, cJSON_CreateString(kv));
        cJSON_AddItemToObject(cJSON_AddObjectToObject(b, "ExposedPorts"), key,
                              cJSON_CreateObject());
    }
    cJSON *labels = cJSON_AddObjectToObject(b, "Labels");
    for (size_t i = 0; i < t->labels.n; i++)
        cJSON_AddStringToObject(labels, t->labels.keys[i], t->labels.vals[i]);
    /* the tenant's own (from provisioners) win over the template's; berth.* are ours */
    size_t nl = BERTH_HOST_HAS(H, spec_label_count) ? H->spec_label_count(s) : 0;
    for (size_t i = 0; i < nl; i++) {
        const char *v, *k = H->spec_label(s, i, &v);
        if (!k || !strncmp(k, "berth.", 6)) continue;
        cJSON_DeleteItemFromObjectCaseSensitive(labels, k);
        cJSON_AddStringToObject(labels, k, v);
    }
    cJSON_AddStringToObject(labels, "berth.managed", "true");
    cJSON_AddStringToObject(labels, "berth.tenant", j->handle);
    cJSON_AddStringToObject(labels, "berth.template", H->spec_template(s));
    cJSON_AddStringToObject(labels, "berth.instance", H->name(j->d->self));
    cJSON_AddNumberToObject(b, "StopTimeout", (double)stop_secs(t));
    cJSON *hc = cJSON_AddObjectToObject(b, "HostConfig");
    cJSON_AddItemToObject(hc, "Binds", hc_binds);
    if (t->memory) cJSON_AddNumberToObject(hc, "Memory", (double)t->memory);
    if (t->cpus > 0) cJSON_AddNumberToObject(hc, "NanoCpus", t->cpus * 1e9);
    if (t->pids) cJSON_AddNumberToObject(hc, "PidsLimit", (double)t->pids);
    if (t->network) cJSON_AddStringToObject(hc, "NetworkMode", t->network);
    if (port) {
        cJSON *pb = cJSON_AddObjectToObject(hc, "PortBindings");
        cJSON *one = cJSON_CreateObject();
        cJSON_AddStringToObject(one, "HostIp", t->publish);
        char hp[16];
        host_port(j, hp, sizeof hp);
        cJSON_AddStringToObject(one, "HostPort", hp);
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, one);
        cJSON_AddItemToObject(pb, key, arr);
    }
    cJSON_AddBoolToObject(hc, "ReadonlyRootfs", t->read_only);
    if (t->cap_drop.n) cJSON_AddItemToObject(hc, "CapDrop", strlist(&t->cap_drop));
    if (t->security_opt.n) cJSON_AddItemToObject(hc, "SecurityOpt", strlist(&t->security_opt));
    else cJSON_AddItemToObject(hc, "SecurityOpt",
                               cJSON_CreateStringArray((const char *[]){"no-new-privileges"}, 1));
    /* berth supervises: dockerd must not restart behind the reconciler's back */
    cJSON_AddItemToObject(hc, "RestartPolicy", cJSON_CreateObject());
    cJSON_AddStringToObject(cJSON_GetObjectItem(hc, "RestartPolicy"), "Name", "no");
    char *out = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    return out;
}

static void created(struct job *j, const struct berth_http_result *r);

static void adopt_conflict(struct job *j, const struct berth_http_result *r)
{
    cJSON *c = r->status == 200 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
    cJSON *labels = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "Config"), "Labels");
    const char *who = cJSON_GetStringValue(cJSON_GetObjectItem(labels, "berth.tenant"));
    if (!who || strcmp(who, j->handle)) {
        char msg[256];
        snprintf(msg, sizeof msg, "a container named %s exists and is not this tenant's; "
                 "remove or rename it", j->name);
        H->op_done(j->op, BERTH_EEXIST, NULL, msg);
        cJSON_Delete(c);
        job_free(j);
        return;
    }
    struct berth_observed o;
    struct dk_inspect in;
    fill_observed(j, c, &o, &in);   /* ours already: create is idempotent */
    H->op_done(j->op, 0, &o, NULL);
    cJSON_Delete(c);
    job_free(j);
}

static void created(struct job *j, const struct berth_http_result *r)
{
    if (r->status == 409) {
        char path[128];
        snprintf(path, sizeof path, "/containers/%s/json", j->name);
        call(j, "GET", path, NULL, adopt_conflict, NULL);
        return;
    }
    if (r->status != 201) {
        job_fail(j, r, "create");
        return;
    }
    cJSON *c = cJSON_ParseWithLength(r->body, r->body_len);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(c, "Id"));
    snprintf(j->id, sizeof j->id, "%s", id ? id : "");
    cJSON_Delete(c);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, j->id, NULL, -1, false, NULL};
    H->op_done(j->op, 0, &o, NULL);
    job_free(j);
}

static void do_create(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    char err[512], path[128];
    char *body = create_body(j, err, sizeof err);
    if (!body) {
        H->op_done(j->op, BERTH_EINVAL, NULL, err);
        job_free(j);
        return;
    }
    snprintf(path, sizeof path, "/containers/create?name=%s", j->name);
    call(j, "POST", path, body, created, NULL);
}

static struct netop *netop_find(struct dk *d, const char *name)
{
    for (struct netop *n = d->netops; n; n = n->next)
        if (!strcmp(n->name, name)) return n;
    return NULL;
}

/* The network question is settled (r NULL: it exists now): every job waiting goes on. */
static void netop_done(struct job *j, const struct berth_http_result *r)
{
    struct dk *d = j->d;
    struct netop *n = netop_find(d, j->t->network);
    struct job *waiting = n ? n->waiting : NULL;
    if (n) {
        for (struct netop **pp = &d->netops; *pp; pp = &(*pp)->next)
            if (*pp == n) {
                *pp = n->next;
                break;
            }
        free(n);
    }
    if (r) job_fail(j, r, "creating network");
    else do_create(j, NULL);
    while (waiting) {
        struct job *w = waiting;
        waiting = w->next_waiting;
        if (r) job_fail(w, r, "creating network");
        else do_create(w, NULL);
    }
}

static void network_made(struct job *j, const struct berth_http_result *r)
{
    netop_done(j, r->status == 201 || r->status == 409 ? NULL : r);
}

static void network_checked(struct job *j, const struct berth_http_result *r)
{
    if (r->status == 200) {
        netop_done(j, NULL);
        return;
    }
    if (r->status != 404) {
        netop_done(j, r);
        return;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "Name", j->t->network);
    cJSON_AddBoolToObject(b, "CheckDuplicate", true);
    cJSON_AddStringToObject(cJSON_AddObjectToObject(b, "Labels"), "berth.managed", "true");
    char *body = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    call(j, "POST", "/networks/create", body, network_made, NULL);
}

static void ensure_network(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    const char *n = j->t->network;
    if (!n || !strcmp(n, "bridge") || !strcmp(n, "host") || !strcmp(n, "none") ||
        !strncmp(n, "container:", 10)) {
        do_create(j, NULL);
        return;
    }
    struct netop *op = netop_find(j->d, n);
    if (op) {                   /* another tenant is settling this network: wait for it */
        j->next_waiting = op->waiting;
        op->waiting = j;
        return;
    }
    op = calloc(1, sizeof *op);
    if (!op) {
        H->op_done(j->op, BERTH_ENOMEM, NULL, "out of memory");
        job_free(j);
        return;
    }
    snprintf(op->name, sizeof op->name, "%s", n);
    op->next = j->d->netops;
    j->d->netops = op;
    char path[256];
    snprintf(path, sizeof path, "/networks/%s", n);
    call(j, "GET", path, NULL, network_checked, NULL);
}

/* Pull progress arrives as JSON lines, cut anywhere by the network; an error can come inside
 * a 200 stream, and a refused pull (HTTP 4xx/5xx) says why as {"message": ...}. */
static void pull_line(const char *line, size_t len, void *arg)
{
    struct job *j = arg;
    cJSON *m = cJSON_ParseWithLength(line, len);
    struct dk_pull p;
    dk_pull_read(m, &p);
    if (p.error) {
        free(j->pull_status);
        j->pull_status = strdup(p.error);
    } else if (p.status && j->d->ev_pull) {
        cJSON *ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "image", j->t->image);
        cJSON_AddStringToObject(ev, "status", p.status);
        if (p.layer) cJSON_AddStringToObject(ev, "layer", p.layer);
        if (p.progress) cJSON_AddStringToObject(ev, "progress", p.progress);
        char *js = cJSON_PrintUnformatted(ev);
        struct berth_ev_custom c = {sizeof c, js};
        H->publish(j->d->self, j->d->ev_pull, j->handle, &c);
        cJSON_free(js);
        cJSON_Delete(ev);
    }
    cJSON_Delete(m);
}

static bool pull_data(const char *data, size_t len, void *arg)
{
    struct job *j = arg;
    if (dk_lines_feed(&j->pull_lines, data, len, pull_line, j)) return true;
    free(j->pull_status);
    j->pull_status = strdup("a progress line over 1 MiB");
    return false;
}

static void pulled(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 200 || j->pull_status) {
        char msg[768];
        if (j->pull_status)
            snprintf(msg, sizeof msg, "pulling %s: dockerd: %s", j->t->image, j->pull_status);
        else
            snprintf(msg, sizeof msg, "pulling %s failed (HTTP %d %s)", j->t->image, r->status,
                     r->message);
        H->op_done(j->op, r->status == 0 ? BERTH_EAGAIN : BERTH_EIO, NULL, msg);
        job_free(j);
        return;
    }
    H->log(j->d->self, BERTH_LOG_INFO, "pulled %s", j->t->image);
    ensure_network(j, NULL);
}

static void pull(struct job *j)
{
    char *q = malloc(strlen(j->t->image) * 3 + 32);
    if (!q) {
        H->op_done(j->op, BERTH_ENOMEM, NULL, "out of memory");
        job_free(j);
        return;
    }
    char *o = stpcpy(q, "/images/create?fromImage=");
    for (const char *p = j->t->image; *p; p++) {
        if (isalnum((unsigned char)*p) || strchr("-._~", *p)) *o++ = *p;
        else o += sprintf(o, "%%%02X", (unsigned char)*p);
    }
    *o = 0;
    call(j, "POST", q, NULL, pulled, pull_data);
    free(q);
}

static void image_checked(struct job *j, const struct berth_http_result *r)
{
    if (r->status == 200) ensure_network(j, NULL);
    else if (r->status == 404) pull(j);
    else job_fail(j, r, "inspecting image");
}

static void create_start(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    const char *policy = j->t->pull;
    if (!strcmp(policy, "never")) {
        ensure_network(j, NULL);
    } else if (!strcmp(policy, "always")) {
        pull(j);
    } else {
        char path[600];
        snprintf(path, sizeof path, "/images/%s/json", j->t->image);
        call(j, "GET", path, NULL, image_checked, NULL);
    }
}

static void op_create(void *st, const berth_spec *s, berth_op *op)
{
    struct job *j = job_new(st, op, s);
    if (j) versioned(j, create_start);
}

/* ---- start, stop, remove ---- */

static void start_go(struct job *j, const struct berth_http_result *r);

/* dockerd could not bind the tenant's host port: something else took it while the tenant
 * slept */
static bool port_taken(const struct berth_http_result *r)
{
    char m[640];
    docker_message(r, m, sizeof m);
    return r->status == 500 && (strstr(m, "address already in use") ||
                                strstr(m, "port is already allocated"));
}

static void recreated(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 201) {
        job_fail(j, r, "re-creating on another host port");
        return;
    }
    start_go(j, NULL);
}

static void moved_removed(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 204 && r->status != 404) {
        job_fail(j, r, "removing to publish on another host port");
        return;
    }
    char err[512], path[128];
    char *body = create_body(j, err, sizeof err);
    if (!body) {
        H->op_done(j->op, BERTH_EINVAL, NULL, err);
        job_free(j);
        return;
    }
    snprintf(path, sizeof path, "/containers/create?name=%s", j->name);
    call(j, "POST", path, body, recreated, NULL);
}

/* The container's port binding is fixed at create: to publish on another port it is made
 * again (the tenant's data is in its volumes; the container's own layer goes). Its destroy
 * is ours, not a crash. */
static void moved_inspected(struct job *j, const struct berth_http_result *r)
{
    cJSON *c = r->status == 200 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(c, "Id"));
    char path[128];
    j->avoid_port = dk_bound_port(c, H->spec_port(j->spec));
    if (id) dk_id_add(&j->d->moved, id);
    cJSON_Delete(c);
    snprintf(path, sizeof path, "/containers/%s?force=true", j->name);
    call(j, "DELETE", path, NULL, moved_removed, NULL);
}

static void started(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 204 && r->status != 304) {
        if (j->moved || !H->spec_port(j->spec) || !port_taken(r)) {
            job_fail(j, r, "start");
            return;
        }
        j->moved = true;
        char path[128];
        snprintf(path, sizeof path, "/containers/%s/json", j->name);
        call(j, "GET", path, NULL, moved_inspected, NULL);
        return;
    }
    inspect_then_done(j);
}

static void start_go(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    char path[128];
    dk_expect_take(j->d, j->handle);
    snprintf(path, sizeof path, "/containers/%s/start", j->name);
    call(j, "POST", path, NULL, started, NULL);
}

static void op_start(void *st, const berth_spec *s, berth_op *op)
{
    struct job *j = job_new(st, op, s);
    if (j) versioned(j, start_go);
}

static void stopped(struct job *j, const struct berth_http_result *r)
{
    if (r->status == 404) {
        struct berth_observed o = {sizeof o, BERTH_OBS_ABSENT, NULL, NULL, -1, false, NULL};
        H->op_done(j->op, 0, &o, NULL);
        job_free(j);
        return;
    }
    if (r->status != 204 && r->status != 304) {
        job_fail(j, r, "stop");
        return;
    }
    inspect_then_done(j);
}

static void stop_go(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    char path[160];
    dk_expect_add(j->d, j->handle);
    snprintf(path, sizeof path, "/containers/%s/stop?t=%lld", j->name, stop_secs(j->t));
    j->wait_ms = stop_secs(j->t) * 1000;
    call(j, "POST", path, NULL, stopped, NULL);
}

static void op_stop(void *st, const berth_spec *s, berth_op *op)
{
    struct job *j = job_new(st, op, s);
    if (j) versioned(j, stop_go);
}

static void removed(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 204 && r->status != 404) {
        job_fail(j, r, "remove");
        return;
    }
    /* a tenant being deleted gives its port up; one re-created keeps it */
    struct berth_tenant_info ti = {.size = sizeof ti};
    if (H->tenant_get(j->d->self, j->handle, &ti) != 0 || ti.desired == BERTH_DESIRED_DELETED)
        dk_port_forget(j->d->self, j->handle);
    struct berth_observed o = {sizeof o, BERTH_OBS_ABSENT, NULL, NULL, -1, false, NULL};
    H->op_done(j->op, 0, &o, NULL);
    job_free(j);
}

static void remove_go(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    char path[128];
    dk_expect_add(j->d, j->handle);
    /* volumes stay: a tenant's data is bind-mounted from the host, not a docker volume */
    snprintf(path, sizeof path, "/containers/%s?force=true", j->name);
    call(j, "DELETE", path, NULL, removed, NULL);
}

static void op_remove(void *st, const berth_spec *s, berth_op *op)
{
    struct job *j = job_new(st, op, s);
    if (j) versioned(j, remove_go);
}

/* ---- list: adoption ---- */

static void listed(struct job *j, const struct berth_http_result *r)
{
    if (r->status != 200) {
        job_fail(j, r, "list");
        return;
    }
    cJSON *a = cJSON_ParseWithLength(r->body, r->body_len);
    cJSON *c;
    cJSON_ArrayForEach(c, a) {
        struct dk_listed l;
        if (!dk_list_read(c, &l)) continue;
        struct berth_observed o = {sizeof o, !strcmp(l.state, "running") ? BERTH_OBS_RUNNING
                                                                          : BERTH_OBS_STOPPED,
                                   l.id, l.addr[0] ? l.addr : NULL, -1, false, NULL};
        H->op_list_add(j->op, l.tenant, l.tmpl, &o);
    }
    cJSON_Delete(a);
    H->op_done(j->op, 0, NULL, NULL);
    job_free(j);
}

static void list_go(struct job *j, const struct berth_http_result *r)
{
    (void)r;
    char path[256];
    /* {"label":["berth.managed=true","berth.instance=<name>"]}, URL-encoded */
    snprintf(path, sizeof path, "/containers/json?all=1&filters=%%7B%%22label%%22%%3A%%5B%%22"
             "berth.managed%%3Dtrue%%22%%2C%%22berth.instance%%3D%s%%22%%5D%%7D",
             H->name(j->d->self));
    call(j, "GET", path, NULL, listed, NULL);
}

static void op_list(void *st, berth_op *op)
{
    struct job *j = job_new(st, op, NULL);
    if (j) versioned(j, list_go);
}

static const struct berth_driver driver = {
    .size = sizeof driver, .name = "docker", .create = op_create, .start = op_start,
    .stop = op_stop, .remove = op_remove, .list = op_list,
};

/* ---- plugin ---- */

static int validate(const void *cfg, char *err, size_t n)
{
    const struct cfg *c = cfg;
    if (c->host && strncmp(c->host, "tcp://", 6)) {
        snprintf(err, n, "host must be tcp://HOST:PORT, not '%s'", c->host);
        return BERTH_EINVAL;
    }
    return 0;
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    struct dk *d = calloc(1, sizeof *d);
    if (!d) return BERTH_ENOMEM;
    d->self = self;
    *state = d;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct dk *d = state;
    d->cfg = *(const struct cfg *)cfg;
    if (d->cfg.host)
        snprintf(d->url, sizeof d->url, "%s://%s",
                 d->cfg.tls_ca || d->cfg.tls_cert ? "https" : "http",
                 d->cfg.host + 6);
    else snprintf(d->url, sizeof d->url, "http://docker");
    return 0;
}

static int start(void *state)
{
    struct dk *d = state;
    d->ev_pull = H->event_register(d->self, "image.pull_progress");
    int rc = dk_ports_init(H, d->self);
    if (rc) {
        H->log(d->self, BERTH_LOG_ERROR, "cannot create the table of host ports: %s",
               berth_strerror(rc));
        return rc;
    }
    dk_follow(d);
    return H->driver_register(d->self, &driver, d);
}

/* The event stream never ends by itself, and the host waits for every call in flight before
 * it unloads us: end it here. Engine calls of operations in flight still finish. */
static void stop(void *state)
{
    struct dk *d = state;
    dk_unfollow(d);
    H->drained(d->self);
}

/* Also reached without stop(): an instance whose start failed is destroyed directly. */
static void destroy(void *state)
{
    struct dk *d = state;
    dk_unfollow(d);
    while (d->expected) {
        struct expect *e = d->expected;
        d->expected = e->next;
        free(e);
    }
    dk_id_clear(&d->oom);
    dk_id_clear(&d->moved);
    while (d->netops) {         /* their jobs' ops are completed as canceled by the host */
        struct netop *n = d->netops;
        d->netops = n->next;
        while (n->waiting) {
            struct job *w = n->waiting;
            n->waiting = w->next_waiting;
            job_free(w);
        }
        free(n);
    }
    dk_lines_reset(&d->ev);
    free(d);
}

BERTH_PLUGIN(.name = "docker", .version = "0.1.0",
             .description = "runs tenants as Docker containers (Engine API)",
             .config = schema, .config_size = sizeof(struct cfg),
             .template_config = tschema, .template_config_size = sizeof(struct tcfg),
             .validate = validate, .init = init, .configure = configure, .start = start,
             .stop = stop, .destroy = destroy);
