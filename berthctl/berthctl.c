/* berthctl: the command line of berth. Talks HTTP/JSON to berthd's control socket; tables
 * for people, JSON (--json) for scripts. A CLI may block, so it uses libcurl's easy API. */
#include <cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "sse.h"

#define DEFAULT_SOCKET "/var/lib/berth/berth.sock"

static const char *sock_path, *base_url;
static char *token;                 /* bearer token for a TCP listener */
static struct curl_slist *auth;
static bool json_out;

struct resp { char *data; size_t len; long status; };

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    char *d = realloc(r->data, r->len + sz * n + 1);
    if (!d) return 0;
    memcpy(d + r->len, p, sz * n);
    r->data = d;
    r->len += sz * n;
    d[r->len] = 0;
    return sz * n;
}

static CURL *easy(const char *method, const char *path)
{
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base_url ? base_url : "http://berth", path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (!base_url) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock_path);
    if (auth) curl_easy_setopt(c, CURLOPT_HTTPHEADER, auth);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

static int unreachable(CURLcode cc)
{
    fprintf(stderr, "berthctl: cannot reach berthd at %s: %s (is berthd running? set --socket "
            "or BERTH_SOCKET)\n", base_url ? base_url : sock_path, curl_easy_strerror(cc));
    return 1;
}

/* Performs a request; returns the parsed JSON body (or NULL for an empty one) and sets *rc to
 * the exit code: 0 on 2xx, 1 with the API's message printed otherwise. */
static cJSON *call(const char *method, const char *path, const char *body, int *rc)
{
    CURL *c = easy(method, path);
    struct resp r = {0};
    struct curl_slist *h = NULL;
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        if (token) {
            char *line = malloc(strlen(token) + 32);
            if (line) {
                sprintf(line, "Authorization: Bearer %s", token);
                h = curl_slist_append(h, line);
                free(line);
            }
        }
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        *rc = unreachable(cc);
        free(r.data);
        return NULL;
    }
    cJSON *j = r.data ? cJSON_Parse(r.data) : NULL;
    *rc = 0;
    if (r.status >= 300) {
        cJSON *e = cJSON_GetObjectItem(j, "error");
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(e, "message"));
        const char *code = cJSON_GetStringValue(cJSON_GetObjectItem(e, "code"));
        if (json_out && r.data) fputs(r.data, stdout);
        fprintf(stderr, "berthctl: %s (%s, HTTP %ld)\n", msg ? msg : "request failed",
                code ? code : "error", r.status);
        cJSON *details = cJSON_GetObjectItem(e, "details");
        cJSON *d;
        cJSON_ArrayForEach(d, details) fprintf(stderr, "  %s\n", cJSON_GetStringValue(d));
        *rc = 1;
    }
    free(r.data);
    return j;
}

/* for subcommands in their own files (cmds.h) */
cJSON *berthctl_call(const char *method, const char *path, const char *body, int *rc)
{
    return call(method, path, body, rc);
}

bool berthctl_json(void) { return json_out; }

static void print_json(const cJSON *j)
{
    char *s = cJSON_Print(j);
    puts(s);
    free(s);
}

static const char *str(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return s ? s : "-";
}

static void fmt_time(double ms, char *out, size_t n)
{
    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

static int tenant_ls(void)
{
    int rc;
    cJSON *j = call("GET", "/v1/tenants", NULL, &rc);
    if (!rc && json_out) print_json(j);
    else if (!rc) {
        printf("%-20s %-6s %-12s %-8s %-9s %s\n", "HANDLE", "KIND", "TEMPLATE", "DESIRED",
               "OBSERVED", "REASON");
        cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tenants"))
            printf("%-20s %-6s %-12s %-8s %-9s %s\n", str(t, "handle"), str(t, "kind"),
                   str(t, "template"), str(t, "desired"), str(t, "observed"),
                   cJSON_IsString(cJSON_GetObjectItem(t, "reason")) ? str(t, "reason") : "");
    }
    cJSON_Delete(j);
    return rc;
}

/* one line per provisioner: state, the env names it gave, the last failure and retry */
static void show_provisioners(const cJSON *ps)
{
    const cJSON *p;
    cJSON_ArrayForEach(p, ps) {
        printf("provisioner:   %s %s", p->string, str(p, "state"));
        const cJSON *env = cJSON_GetObjectItem(p, "env"), *e;
        if (cJSON_GetArraySize(env)) {
            printf(" env");
            cJSON_ArrayForEach(e, env) printf(" %s", cJSON_GetStringValue(e));
        }
        double att = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "attempts"));
        double next = cJSON_GetNumberValue(cJSON_GetObjectItem(p, "next_retry_ms"));
        if (cJSON_IsString(cJSON_GetObjectItem(p, "message")))
            printf(" (%s)", str(p, "message"));
        if (att > 0) printf(", attempt %.0f", att);
        if (next > 0) {
            char when[40];
            fmt_time(next, when, sizeof when);
            printf(", next try %s", when);
        }
        printf("\n");
    }
}

static void show_tenant(const cJSON *t)
{
    char created[40], act[40];
    fmt_time(cJSON_GetNumberValue(cJSON_GetObjectItem(t, "created_ms")), created,
             sizeof created);
    fmt_time(cJSON_GetNumberValue(cJSON_GetObjectItem(t, "last_activity_ms")), act, sizeof act);
    printf("handle:        %s\nkind:          %s\ntemplate:      %s\ndriver:        %s\n"
           "desired:       %s\nobserved:      %s\n", str(t, "handle"), str(t, "kind"),
           str(t, "template"), str(t, "driver"), str(t, "desired"), str(t, "observed"));
    printf("id:            %s\naddress:       %s\nreason:        %s\n", str(t, "id"),
           str(t, "address"), str(t, "reason"));
    char idle[40];
    cJSON *dl = cJSON_GetObjectItem(t, "idle_deadline_ms");
    fmt_time(cJSON_IsNumber(dl) ? dl->valuedouble : 0, idle, sizeof idle);
    printf("created:       %s\nlast activity: %s\nidle deadline: %s\n", created, act,
           cJSON_IsNumber(dl) ? idle : "never");
    printf("health:        %s\nbusy:          %.0f\nrestarts:      %.0f\ncrashes:       %.0f\n",
           str(t, "health"), cJSON_GetNumberValue(cJSON_GetObjectItem(t, "busy")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(t, "restarts")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(t, "crashes")));
    cJSON *pl = cJSON_GetObjectItem(t, "plugins"), *p;
    cJSON_ArrayForEach(p, pl) {
        char *v = cJSON_PrintUnformatted(p);
        printf("%-14s %s\n", p->string, v);
        free(v);
    }
    double att = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "attempts"));
    double retry = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "retry_in_ms"));
    if (att <= 0 && retry > 0) printf("backoff:       next start in %.1fs\n", retry / 1000.0);
    if (att > 0)
        printf("retry:         attempt %.0f, next in %.1fs\n", att,
               cJSON_GetNumberValue(cJSON_GetObjectItem(t, "retry_in_ms")) / 1000.0);
    show_provisioners(cJSON_GetObjectItem(t, "provisioners"));
    cJSON *fin = cJSON_GetObjectItem(t, "finalizers");
    if (cJSON_GetArraySize(fin)) {
        printf("finalizers:   ");
        cJSON *f;
        cJSON_ArrayForEach(f, fin) printf(" %s", cJSON_GetStringValue(f));
        printf("\n");
    }
}

static int tenant_cmd(const char *method, const char *path, const char *body, bool show)
{
    int rc;
    cJSON *j = call(method, path, body, &rc);
    if (!rc && json_out) print_json(j);
    else if (!rc && show && j) show_tenant(j);
    else if (!rc && j) printf("%s: desired %s, observed %s\n", str(j, "handle"),
                              str(j, "desired"), str(j, "observed"));
    cJSON_Delete(j);
    return rc;
}

/* ---- events ---- */

static bool print_event(const char *data, void *arg)
{
    (void)arg;
    if (json_out) {
        puts(data);
        fflush(stdout);
        return true;
    }
    cJSON *e = cJSON_Parse(data);
    char ts[40];
    fmt_time(cJSON_GetNumberValue(cJSON_GetObjectItem(e, "time_ms")), ts, sizeof ts);
    char *payload = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "payload"));
    const char *tenant = cJSON_GetStringValue(cJSON_GetObjectItem(e, "tenant"));
    printf("%6.0f %s %-22s %-16s %s\n", cJSON_GetNumberValue(cJSON_GetObjectItem(e, "seq")), ts,
           str(e, "type"), tenant ? tenant : "-", payload ? payload : "{}");
    fflush(stdout);
    free(payload);
    cJSON_Delete(e);
    return true;
}

static int events(bool follow, const char *since, const char *type, const char *tenant)
{
    char path[1024];
    char *et = type ? curl_easy_escape(NULL, type, 0) : NULL;
    snprintf(path, sizeof path, "/v1/events?follow=%d%s%s%s%s%s%s", follow,
             since ? "&since=" : "", since ? since : "", et ? "&type=" : "", et ? et : "",
             tenant ? "&tenant=" : "", tenant ? tenant : "");
    curl_free(et);
    CURL *c = easy("GET", path);
    struct sse *s = calloc(1, sizeof *s);
    if (!s) return 1;
    s->fn = print_event;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sse_feed);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    free(s);
    if (cc != CURLE_OK) return unreachable(cc);
    if (status != 200) {
        fprintf(stderr, "berthctl: events: HTTP %ld\n", status);
        return 1;
    }
    return 0;
}

static int simple(const char *method, const char *path)
{
    int rc;
    cJSON *j = call(method, path, method[0] == 'P' ? "{}" : NULL, &rc);
    if (!rc && json_out) print_json(j);
    cJSON_Delete(j);
    return rc;
}

static int plugins(void)
{
    int rc;
    cJSON *j = call("GET", "/v1/plugins", NULL, &rc);
    if (!rc && json_out) print_json(j);
    else if (!rc) {
        printf("%-16s %-16s %-10s %-9s %s\n", "NAME", "MODULE", "VERSION", "STATE", "PATH");
        cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "plugins"))
            printf("%-16s %-16s %-10s %-9s %s\n", str(p, "name"), str(p, "module"),
                   str(p, "version"), str(p, "state"), str(p, "path"));
    }
    cJSON_Delete(j);
    return rc;
}

/* ---- tenant add --wait: follow the tenant's events until it is ready or failed ---- */

struct waiter { struct sse s; const char *handle; int result; };

static bool wait_event(const char *data, void *arg)
{
    struct waiter *w = arg;
    cJSON *e = cJSON_Parse(data);
    const char *type = str(e, "type");
    cJSON *p = cJSON_GetObjectItem(e, "payload");
    if (json_out) {
        puts(data);
    } else if (!strcmp(type, "image.pull_progress")) {
        const char *layer = cJSON_GetStringValue(cJSON_GetObjectItem(p, "layer"));
        const char *prog = cJSON_GetStringValue(cJSON_GetObjectItem(p, "progress"));
        printf("  pull %s: %s%s%s%s%s\n", str(p, "image"), str(p, "status"),
               layer ? " " : "", layer ? layer : "", prog ? " " : "", prog ? prog : "");
    } else if (!strcmp(type, "tenant.changed")) {
        printf("  %s\n", str(p, "observed"));
    } else if (!strcmp(type, "tenant.failed")) {
        printf("  failed: %s\n", str(p, "reason"));
    }
    fflush(stdout);
    if (!strcmp(type, "tenant.ready")) w->result = 0;
    else if (!strcmp(type, "tenant.failed")) w->result = 1;
    cJSON_Delete(e);
    return w->result < 0;       /* decided: end the stream */
}

static int wait_ready(const char *handle, double since, long timeout_s)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/events?since=%.0f&tenant=%s", since, handle);
    CURL *c = easy("GET", path);
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) return 1;
    w->handle = handle;
    w->result = -1;
    w->s.fn = wait_event;
    w->s.arg = w;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sse_feed);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &w->s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    int rc = w->result;
    free(w);
    if (rc == 0) {
        if (!json_out) printf("%s: ready\n", handle);
        return 0;
    }
    if (rc == 1) {
        fprintf(stderr, "berthctl: %s failed; berthd keeps retrying (berthctl tenant show %s)\n",
                handle, handle);
        return 1;
    }
    if (cc == CURLE_OPERATION_TIMEDOUT) {
        fprintf(stderr, "berthctl: %s is not ready after %lds\n", handle, timeout_s);
        return 1;
    }
    return unreachable(cc);
}

static double last_seq(int *rc)
{
    cJSON *j = call("GET", "/v1/system/info", NULL, rc);
    double seq = cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "events"),
                                                          "last_seq"));
    cJSON_Delete(j);
    return seq;
}

static void usage(FILE *f)
{
    fputs("usage: berthctl [--socket PATH | --url http://HOST:PORT [--token-file F]] [--json] "
          "COMMAND\n"
          "  health                         is berthd up\n"
          "  info                           version, uptime, plugins, tenant counts\n"
          "  tenant add HANDLE [--kind human|agent] [--template NAME] [--asleep]\n"
          "             [--wait [--timeout SECONDS]]  follow pulls and start-up until ready\n"
          "  tenant ls | show HANDLE\n"
          "  tenant rm HANDLE [--force]       delete; --force gives up on deprovisioning\n"
          "                                 what is left (published as tenant.abandoned)\n"
          "  tenant wake|sleep|restart|touch HANDLE\n"
          "  tenant reprovision HANDLE        run the tenant's provisioners again\n"
          "  matrix plan|apply|invite [USES] [DAYS]|invites|revoke TOKEN  (plugins/matrix)\n"
          "  events [-f] [--since SEQ] [--type TYPE] [--tenant HANDLE]\n"
          "  plugins                        loaded plugin instances\n"
          "  reload                         re-read conf.d (like SIGHUP)\n"
          "The socket defaults to $BERTH_SOCKET, else " DEFAULT_SOCKET ".\n"
          "Over TCP the bearer token comes from --token-file or $BERTH_TOKEN.\n", f);
}

static int tenant(int argc, char **argv)
{
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[0];
    if (!strcmp(sub, "ls") || !strcmp(sub, "list")) return tenant_ls();
    if (argc < 2) {
        fprintf(stderr, "berthctl: tenant %s needs a HANDLE\n", sub);
        return 2;
    }
    const char *h = argv[1];
    char *eh = curl_easy_escape(NULL, h, 0);
    char path[512];
    int rc;
    if (!strcmp(sub, "add")) {
        const char *kind = "human", *tmpl = "default";
        bool asleep = false, wait = false;
        long timeout_s = 300;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--wait")) wait = true;
            else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout_s = atol(argv[++i]);
            else if (!strcmp(argv[i], "--kind") && i + 1 < argc) kind = argv[++i];
            else if (!strcmp(argv[i], "--template") && i + 1 < argc) tmpl = argv[++i];
            else if (!strcmp(argv[i], "--asleep")) asleep = true;
            else {
                fprintf(stderr, "berthctl: unknown option %s\n", argv[i]);
                curl_free(eh);
                return 2;
            }
        }
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "handle", h);
        cJSON_AddStringToObject(b, "kind", kind);
        cJSON_AddStringToObject(b, "template", tmpl);
        cJSON_AddStringToObject(b, "desired", asleep ? "asleep" : "running");
        char *body = cJSON_PrintUnformatted(b);
        double seq = wait ? last_seq(&rc) : 0;
        if (!wait || !rc) rc = tenant_cmd("POST", "/v1/tenants", body, false);
        if (!rc && wait && !asleep) rc = wait_ready(h, seq, timeout_s);
        free(body);
        cJSON_Delete(b);
    } else if (!strcmp(sub, "show")) {
        snprintf(path, sizeof path, "/v1/tenants/%s", eh);
        rc = tenant_cmd("GET", path, NULL, true);
    } else if (!strcmp(sub, "rm")) {
        bool force = argc > 2 && !strcmp(argv[2], "--force");
        if (argc > 2 + force) {
            fprintf(stderr, "berthctl: unknown option %s\n", argv[2 + force]);
            curl_free(eh);
            return 2;
        }
        snprintf(path, sizeof path, "/v1/tenants/%s%s", eh, force ? "?force=true" : "");
        rc = tenant_cmd("DELETE", path, NULL, false);
    } else if (!strcmp(sub, "wake") || !strcmp(sub, "sleep") || !strcmp(sub, "restart") ||
               !strcmp(sub, "touch") || !strcmp(sub, "reprovision")) {
        snprintf(path, sizeof path, "/v1/tenants/%s/%s", eh, sub);
        rc = tenant_cmd("POST", path, "{}", false);
    } else {
        fprintf(stderr, "berthctl: unknown tenant command '%s'\n", sub);
        rc = 2;
    }
    curl_free(eh);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
        {"url", required_argument, NULL, 'u'}, {"token-file", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'}, {0},
    };
    sock_path = getenv("BERTH_SOCKET") ? getenv("BERTH_SOCKET") : DEFAULT_SOCKET;
    int ch;
    const char *token_file = NULL;
    while ((ch = getopt_long(argc, argv, "+s:jh", opts, NULL)) != -1) {
        if (ch == 's') sock_path = optarg;
        else if (ch == 'u') base_url = optarg;
        else if (ch == 't') token_file = optarg;
        else if (ch == 'j') json_out = true;
        else if (ch == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    if (token_file) {
        FILE *f = fopen(token_file, "r");
        char line[4096];
        if (!f || !fgets(line, sizeof line, f)) {
            fprintf(stderr, "berthctl: cannot read token file %s: %s\n", token_file,
                    strerror(errno));
            if (f) fclose(f);
            return 2;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        token = strdup(line);
    } else if (getenv("BERTH_TOKEN")) {
        token = strdup(getenv("BERTH_TOKEN"));
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (token) {
        char *line = malloc(strlen(token) + 32);
        if (line) {
            sprintf(line, "Authorization: Bearer %s", token);
            auth = curl_slist_append(NULL, line);
            free(line);
        }
    }
    const char *cmd = argv[0];
    int rc;
    if (!strcmp(cmd, "tenant")) rc = tenant(argc - 1, argv + 1);
    else if (!strcmp(cmd, "health")) {
        rc = simple("GET", "/health");
        if (!rc && !json_out) puts("berthd is healthy");
    } else if (!strcmp(cmd, "info")) {
        int r2;
        cJSON *j = call("GET", "/v1/system/info", NULL, &r2);
        if (!r2) print_json(j);
        cJSON_Delete(j);
        rc = r2;
    } else if (!strcmp(cmd, "plugins")) rc = plugins();
    else if (!strcmp(cmd, "matrix")) rc = cmd_matrix(argc - 1, argv + 1);
    else if (!strcmp(cmd, "reload")) {
        rc = simple("POST", "/v1/reload");
        if (!rc && !json_out) puts("configuration reloaded");
    } else if (!strcmp(cmd, "events")) {
        bool follow = false;
        const char *since = NULL, *type = NULL, *ten = NULL;
        rc = 0;
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow")) follow = true;
            else if (!strcmp(argv[i], "--since") && i + 1 < argc) since = argv[++i];
            else if (!strcmp(argv[i], "--type") && i + 1 < argc) type = argv[++i];
            else if (!strcmp(argv[i], "--tenant") && i + 1 < argc) ten = argv[++i];
            else {
                fprintf(stderr, "berthctl: unknown option %s\n", argv[i]);
                rc = 2;
            }
        }
        if (!rc) rc = events(follow, since, type, ten);
    } else {
        fprintf(stderr, "berthctl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    curl_slist_free_all(auth);
    if (token) {
        memset(token, 0, strlen(token));
        free(token);
    }
    curl_global_cleanup();
    return rc;
}
