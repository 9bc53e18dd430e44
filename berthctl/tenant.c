/* berthctl tenant ...: one function per subcommand, each with its own --help. */
#include "cmds.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_WAIT_MS 300000

static void show_provisioners(const cJSON *ps)
{
    const cJSON *p;
    cJSON_ArrayForEach(p, ps) {
        printf("provisioner:   %s %s", p->string, ctl_str(p, "state"));
        const cJSON *env = cJSON_GetObjectItem(p, "env"), *e;
        if (cJSON_GetArraySize(env)) {
            printf(" env");
            cJSON_ArrayForEach(e, env) printf(" %s", cJSON_GetStringValue(e));
        }
        double att = ctl_num(p, "attempts"), next = ctl_num(p, "next_retry_ms");
        if (cJSON_IsString(cJSON_GetObjectItem(p, "message")))
            printf(" (%s)", ctl_str(p, "message"));
        if (att > 0) printf(", attempt %.0f", att);
        if (next > 0) {
            char when[40];
            ctl_fmt_time(next, when, sizeof when);
            printf(", next try %s", when);
        }
        if (cJSON_IsTrue(cJSON_GetObjectItem(p, "permanent")))
            printf(", not retried (reprovision runs it again)");
        printf("\n");
    }
}

static void show_tenant(const cJSON *t)
{
    char created[40], act[40], idle[40], d[32];
    ctl_fmt_time(ctl_num(t, "created_ms"), created, sizeof created);
    ctl_fmt_time(ctl_num(t, "last_activity_ms"), act, sizeof act);
    printf("handle:        %s\nkind:          %s\ntemplate:      %s\ndriver:        %s\n"
           "desired:       %s\nobserved:      %s\n", ctl_str(t, "handle"), ctl_str(t, "kind"),
           ctl_str(t, "template"), ctl_str(t, "driver"), ctl_str(t, "desired"),
           ctl_str(t, "observed"));
    printf("id:            %s\naddress:       %s\nreason:        %s\n", ctl_str(t, "id"),
           ctl_str(t, "address"), ctl_str(t, "reason"));
    printf("created:       %s\nlast activity: %s\n", created, act);
    /* since SDK 1.1 idle settings are the lifecycle plugin's: the core knows no deadline,
     * and a missing one is not "never" */
    cJSON *dl = cJSON_GetObjectItem(t, "idle_deadline_ms");
    if (cJSON_IsNumber(dl)) {
        ctl_fmt_time(dl->valuedouble, idle, sizeof idle);
        printf("idle deadline: %s\n", idle);
    }
    printf("health:        %s\nbusy:          %.0f\nrestarts:      %.0f\ncrashes:       %.0f\n",
           ctl_str(t, "health"), ctl_num(t, "busy"), ctl_num(t, "restarts"),
           ctl_num(t, "crashes"));
    cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(t, "plugins")) {
        char *v = cJSON_PrintUnformatted(p);
        printf("%-14s %s\n", p->string, v ? v : "");
        free(v);
    }
    double att = ctl_num(t, "attempts"), retry = ctl_num(t, "retry_in_ms");
    ctl_fmt_duration(retry, d, sizeof d);
    if (att <= 0 && retry > 0) printf("backoff:       next start in %s\n", d);
    if (att > 0) printf("retry:         attempt %.0f, next in %s\n", att, d);
    show_provisioners(cJSON_GetObjectItem(t, "provisioners"));
    cJSON *fin = cJSON_GetObjectItem(t, "finalizers"), *f;
    if (cJSON_GetArraySize(fin)) {
        printf("finalizers:   ");
        cJSON_ArrayForEach(f, fin) printf(" %s", cJSON_GetStringValue(f));
        printf("\n");
    }
}

/* a request about one tenant: prints the answer (show: in full) */
static int request(const char *method, const char *path, const char *body, bool show)
{
    int rc;
    cJSON *j = ctl_call(method, path, body, &rc);
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc && show && j) show_tenant(j);
    else if (!rc && j) printf("%s: desired %s, observed %s\n", ctl_str(j, "handle"),
                              ctl_str(j, "desired"), ctl_str(j, "observed"));
    cJSON_Delete(j);
    return rc;
}

/* a plugin (lifecycle) marks a tenant that missed its heartbeat "stale" in its status */
static bool is_stale(const cJSON *t)
{
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(t, "plugins"))
        if (cJSON_IsTrue(cJSON_GetObjectItem(p, "stale"))) return true;
    return false;
}

static int ls(int argc, char **argv)
{
    char help[256];     /* ls or list, as it was called */
    snprintf(help, sizeof help, "usage: berthctl tenant %s [--stale] [--json]\n"
             "Every tenant: handle, kind, template, desired and observed state, reason.\n"
             "--stale: only tenants that missed their heartbeat (lifecycle).\n", argv[0]);
    if (ctl_help(argc, argv, help)) return 0;
    static const struct option opts[] = {{"stale", no_argument, NULL, 's'}, {0}};
    bool stale_only = false;
    int ch;
    ctl_getopt_reset();
    while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (ch == 's') stale_only = true;
        else return ctl_bad_option("tenant ls", argv, ch);
    }
    if (optind < argc) return ctl_extra("tenant ls", argv[optind]);
    int rc;
    cJSON *j = ctl_call("GET", "/v1/tenants", NULL, &rc), *t;
    cJSON *all = cJSON_GetObjectItem(j, "tenants");
    for (cJSON *it = all ? all->child : NULL, *next; stale_only && it; it = next) {
        next = it->next;
        if (!is_stale(it)) cJSON_Delete(cJSON_DetachItemViaPointer(all, it));
    }
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc) {
        printf("%-20s %-6s %-12s %-8s %-9s %s\n", "HANDLE", "KIND", "TEMPLATE", "DESIRED",
               "OBSERVED", "REASON");
        cJSON_ArrayForEach(t, all)
            printf("%-20s %-6s %-12s %-8s %-9s %s\n", ctl_str(t, "handle"), ctl_str(t, "kind"),
                   ctl_str(t, "template"), ctl_str(t, "desired"), ctl_str(t, "observed"),
                   cJSON_IsString(cJSON_GetObjectItem(t, "reason")) ? ctl_str(t, "reason") : "");
    }
    cJSON_Delete(j);
    return rc;
}

/* the journal's newest sequence number: --wait follows events from here */
static double last_seq(int *rc)
{
    cJSON *j = ctl_call("GET", "/v1/system/info", NULL, rc);
    double seq = ctl_num(cJSON_GetObjectItem(j, "events"), "last_seq");
    cJSON_Delete(j);
    return seq;
}

struct opts { const char *kind, *tmpl, *handle; bool asleep, wait, force, timeout_set;
              int64_t timeout_ms; };

/* parses the options a tenant subcommand allows (allowed: their long names, space separated)
 * and exactly one HANDLE */
static int parse(const char *cmd, const char *allowed, int argc, char **argv, struct opts *o)
{
    static const struct option opts[] = {
        {"kind", required_argument, NULL, 'k'}, {"template", required_argument, NULL, 'T'},
        {"asleep", no_argument, NULL, 'a'}, {"wait", no_argument, NULL, 'w'},
        {"timeout", required_argument, NULL, 't'}, {"force", no_argument, NULL, 'f'}, {0},
    };
    int ch, idx = -1;
    *o = (struct opts){.kind = "human", .tmpl = "default", .timeout_ms = DEFAULT_WAIT_MS};
    ctl_getopt_reset();
    while ((ch = getopt_long(argc, argv, ":", opts, &idx)) != -1) {
        if (ch == '?' || ch == ':' || idx < 0 || !strstr(allowed, opts[idx].name))
            return ctl_bad_option(cmd, argv, ch == ':' ? ':' : '?');
        idx = -1;
        if (ch == 'k') o->kind = optarg;
        else if (ch == 'T') o->tmpl = optarg;
        else if (ch == 'a') o->asleep = true;
        else if (ch == 'w') o->wait = true;
        else if (ch == 'f') o->force = true;
        else if (ch == 't') {
            o->timeout_set = true;
            if (ctl_parse_duration(optarg, &o->timeout_ms)) {
                fprintf(stderr, "berthctl: %s: --timeout '%s' is not a duration (like 30s, 5m "
                        "or a number of seconds)\n", cmd, optarg);
                return 2;
            }
        }
    }
    if (strcmp(o->kind, "human") && strcmp(o->kind, "agent")) {
        fprintf(stderr, "berthctl: %s: --kind must be human or agent, not '%s'\n", cmd, o->kind);
        return 2;
    }
    if (o->timeout_set && !o->wait) {
        fprintf(stderr, "berthctl: %s: --timeout only applies with --wait\n", cmd);
        return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "berthctl: %s needs a HANDLE (see berthctl %s --help)\n", cmd, cmd);
        return 2;
    }
    if (optind + 1 < argc) return ctl_extra(cmd, argv[optind + 1]);
    o->handle = argv[optind];
    return 0;
}

static int add(int argc, char **argv)
{
    if (ctl_help(argc, argv,
                 "usage: berthctl tenant add HANDLE [--kind human|agent] [--template NAME]\n"
                 "                           [--asleep] [--wait [--timeout T]]\n"
                 "Creates a tenant from a template (default: 'default'), running unless "
                 "--asleep.\n--wait follows image pulls and start-up and returns once it is "
                 "ready (exit 0),\nfailed or not ready after T (exit 1; default 5m).\n"))
        return 0;
    struct opts o;
    int rc = parse("tenant add", "kind template asleep wait timeout", argc, argv, &o);
    if (rc) return rc;
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "handle", o.handle);
    cJSON_AddStringToObject(b, "kind", o.kind);
    cJSON_AddStringToObject(b, "template", o.tmpl);
    cJSON_AddStringToObject(b, "desired", o.asleep ? "asleep" : "running");
    char *body = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    double seq = o.wait ? last_seq(&rc) : 0;
    if (!rc) rc = request("POST", "/v1/tenants", body, false);
    if (!rc && o.wait && !o.asleep) rc = ctl_wait_ready(o.handle, seq, o.timeout_ms);
    free(body);
    return rc;
}

static int rm(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl tenant rm HANDLE [--force]\n"
                 "Deletes a tenant: stops it, deprovisions it, removes it.\n--force gives up "
                 "on deprovisioning what is left (published as tenant.abandoned).\n"))
        return 0;
    struct opts o;
    int rc = parse("tenant rm", "force", argc, argv, &o);
    if (rc) return rc;
    char *eh = curl_easy_escape(NULL, o.handle, 0), path[1024];
    snprintf(path, sizeof path, "/v1/tenants/%s%s", eh, o.force ? "?force=true" : "");
    curl_free(eh);
    return request("DELETE", path, NULL, false);
}

static int show(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl tenant show HANDLE [--json]\n"
                 "One tenant in full: state, reason, address, counters, plugins' status.\n"))
        return 0;
    struct opts o;
    int rc = parse("tenant show", "", argc, argv, &o);
    if (rc) return rc;
    char *eh = curl_easy_escape(NULL, o.handle, 0), path[1024];
    snprintf(path, sizeof path, "/v1/tenants/%s", eh);
    curl_free(eh);
    return request("GET", path, NULL, true);
}

/* wake, sleep, restart, touch, reprovision: POST /v1/tenants/HANDLE/ACTION */
static int action(int argc, char **argv)
{
    static const char wake_help[] =
        "usage: berthctl tenant wake HANDLE [--wait [--timeout T]]\n"
        "Asks for the tenant to run. With --wait, returns once it is ready (exit 0), or\n"
        "failed or not ready after T (exit 1; T like 30s or 5m, default 5m).\n";
    char help[256], cmd[64];
    snprintf(cmd, sizeof cmd, "tenant %s", argv[0]);
    snprintf(help, sizeof help, "usage: berthctl tenant %s HANDLE\n%s\n", argv[0],
             !strcmp(argv[0], "sleep") ? "Stops the tenant's workload; it stays, asleep."
             : !strcmp(argv[0], "restart") ? "Stops and starts the tenant's workload."
             : !strcmp(argv[0], "touch") ? "Marks the tenant active (resets its idle timer)."
             : "Runs the tenant's provisioners again.");
    bool wake = !strcmp(argv[0], "wake");
    if (ctl_help(argc, argv, wake ? wake_help : help)) return 0;
    struct opts o;
    int rc = parse(cmd, wake ? "wait timeout" : "", argc, argv, &o);
    if (rc) return rc;
    char *eh = curl_easy_escape(NULL, o.handle, 0), path[1024];
    snprintf(path, sizeof path, "/v1/tenants/%s/%s", eh, argv[0]);
    curl_free(eh);
    double seq = o.wait ? last_seq(&rc) : 0;
    if (!rc) rc = request("POST", path, "{}", false);
    if (!rc && o.wait) rc = ctl_wait_ready(o.handle, seq, o.timeout_ms);
    return rc;
}

/* berthctl tenant ...: the group's table (cmds.h); each command has its own --help */
const struct ctl_command ctl_tenant_cmds[] = {
    {"add", "HANDLE [--kind human|agent] [--template NAME] [--asleep] [--wait [--timeout T]]",
     "create a tenant; --wait follows pulls and start-up until ready", add, NULL, NULL},
    {"ls", "[--stale]", "every tenant: desired and observed state, reason", ls, NULL, NULL},
    {"list", "[--stale]", "the same as ls", ls, NULL, NULL},
    {"show", "HANDLE", "one tenant in full", show, NULL, NULL},
    {"rm", "HANDLE [--force]", "delete; --force gives up on deprovisioning what is left", rm,
     NULL, NULL},
    {"wake", "HANDLE [--wait [--timeout T]]", "run it; --wait returns once it is ready",
     action, NULL, NULL},
    {"sleep", "HANDLE", "stop its workload; it stays, asleep", action, NULL, NULL},
    {"restart", "HANDLE", "stop and start its workload", action, NULL, NULL},
    {"touch", "HANDLE", "mark it active (resets its idle timer)", action, NULL, NULL},
    {"reprovision", "HANDLE", "run its provisioners again", action, NULL, NULL},
    {"key", "", "its LLM proxy key (quota plugin)", NULL, ctl_key_cmds, NULL},
    {0},
};
