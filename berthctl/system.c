/* berthctl health, info, plugins, reload: berthd as a whole. */
#include "cmds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* commands that take no arguments: --help, or anything else is a usage error */
static int no_args(int argc, char **argv, const char *help, int *rc)
{
    if (ctl_help(argc, argv, help)) {
        *rc = 0;
        return 1;
    }
    if (argc > 1) {
        *rc = argv[1][0] == '-' ? (fprintf(stderr, "berthctl: %s: unknown option %s (see "
                                           "berthctl %s --help)\n", argv[0], argv[1], argv[0]), 2)
                                : ctl_extra(argv[0], argv[1]);
        return 1;
    }
    return 0;
}

int cmd_health(int argc, char **argv)
{
    int rc;
    if (no_args(argc, argv, "usage: berthctl health [--json]\nExit 0 when berthd answers "
                "and is usable; otherwise exit 1 with what is wrong.\n", &rc))
        return rc;
    cJSON *j = ctl_call("GET", "/health?details=1", NULL, &rc);
    if (ctl_json && !rc) ctl_print_json(j);
    else if (!rc) printf("berthd is healthy\n");
    const cJSON *d;     /* healthy, yet an optional dependency may fail: say so */
    if (!ctl_json && !rc)
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"),
                                                  "dependencies"))
            if (!cJSON_IsTrue(cJSON_GetObjectItem(d, "ok")))
                printf("optional dependency %s is %s: %s\n", d->string, ctl_str(d, "status"),
                       ctl_str(d, "message"));
    cJSON_Delete(j);
    return rc;
}

static void print_plugins(const cJSON *ps)
{
    const cJSON *p;
    printf("plugins:\n");
    cJSON_ArrayForEach(p, ps) {
        printf("  %-16s %-14s %-8s %s", ctl_str(p, "name"), ctl_str(p, "module"),
               ctl_str(p, "version"), ctl_str(p, "state"));
        if (cJSON_IsString(cJSON_GetObjectItem(p, "error"))) printf(": %s", ctl_str(p, "error"));
        printf("\n");
    }
}

static void print_tenants(const cJSON *t)
{
    const cJSON *c;
    printf("tenants:   %.0f", ctl_num(t, "total"));
    const char *sep = ": ";
    cJSON_ArrayForEach(c, t) {
        if (!strcmp(c->string, "total") || !cJSON_IsNumber(c) || c->valuedouble <= 0) continue;
        printf("%s%.0f %s", sep, c->valuedouble, c->string);
        sep = ", ";
    }
    printf("\n");
}

/* drivers' engines ("docker") and what plugins report ("caddy/admin": a '/' in the name) */
static void print_dependencies(const cJSON *deps)
{
    const cJSON *d;
    cJSON_ArrayForEach(d, deps) {
        bool ok = cJSON_IsTrue(cJSON_GetObjectItem(d, "ok"));
        const char *why = cJSON_IsString(cJSON_GetObjectItem(d, "message")) ?
                          ctl_str(d, "message") : cJSON_IsString(cJSON_GetObjectItem(d,
                          "reason")) ? ctl_str(d, "reason") : NULL;
        if (!strchr(d->string, '/')) {
            printf("driver:    %s %s%s%s\n", d->string, ok ? "ok" : "FAILING", why ? ": " : "",
                   why ? why : "");
            continue;
        }
        char age[32];
        ctl_fmt_duration(ctl_num(d, "age_ms"), age, sizeof age);
        const char *st = ctl_str(d, "status");
        printf("depends:   %s %s (%s, checked %s ago)%s%s\n", d->string,
               ok ? "ok" : !strcmp(st, "stale") ? "STALE" : "FAILING",
               cJSON_IsTrue(cJSON_GetObjectItem(d, "required")) ? "required" : "optional",
               age, why ? ": " : "", why ? why : "");
    }
}

static void print_info(const cJSON *j)
{
    char up[32], a[32], b[32], c[32];
    ctl_fmt_duration(1000 * (double)(long long)ctl_num(j, "uptime_s"), up, sizeof up);
    printf("berthd %s (plugin ABI %s), pid %.0f, up %s\n", ctl_str(j, "version"),
           ctl_str(j, "abi"), ctl_num(j, "pid"), up);
    const cJSON *cfg = cJSON_GetObjectItem(j, "config");
    const cJSON *lr = cJSON_GetObjectItem(cfg, "last_reload");
    printf("config:    %s, generation %.0f%s\n", ctl_str(cfg, "dir"), ctl_num(cfg, "generation"),
           cJSON_IsFalse(cJSON_GetObjectItem(lr, "ok")) ? ", last reload FAILED" : "");
    const cJSON *disk = cJSON_GetObjectItem(j, "disk");
    ctl_fmt_bytes(ctl_num(disk, "state_dir_bytes"), a, sizeof a);
    ctl_fmt_bytes(ctl_num(disk, "free_bytes"), b, sizeof b);
    ctl_fmt_bytes(ctl_num(disk, "total_bytes"), c, sizeof c);
    printf("state:     %s uses %s; %s free of %s\n", ctl_str(j, "state_dir"), a, b, c);
    const cJSON *store = cJSON_GetObjectItem(j, "store");
    printf("store:     %s%s%s\n", cJSON_IsTrue(cJSON_GetObjectItem(store, "healthy")) ?
           "healthy" : "FAILING", cJSON_IsString(cJSON_GetObjectItem(store, "reason")) ? ": " :
           "", cJSON_IsString(cJSON_GetObjectItem(store, "reason")) ? ctl_str(store, "reason")
           : "");
    const cJSON *mem = cJSON_GetObjectItem(j, "memory");
    ctl_fmt_bytes(ctl_num(mem, "available_bytes"), a, sizeof a);
    ctl_fmt_bytes(ctl_num(mem, "total_bytes"), b, sizeof b);
    ctl_fmt_bytes(ctl_num(mem, "berthd_rss_bytes"), c, sizeof c);
    printf("memory:    host %s available of %s; berthd %s\n", a, b, c);
    print_tenants(cJSON_GetObjectItem(j, "tenants"));
    print_dependencies(cJSON_GetObjectItem(j, "dependencies"));
    print_plugins(cJSON_GetObjectItem(j, "plugins"));
}

int cmd_info(int argc, char **argv)
{
    int rc;
    if (no_args(argc, argv, "usage: berthctl info [--json]\nberthd's version and uptime, its "
                "config and state dir, host memory, tenants by state, plugins.\n", &rc))
        return rc;
    cJSON *j = ctl_call("GET", "/v1/system", NULL, &rc);
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc) print_info(j);
    cJSON_Delete(j);
    return rc;
}

int cmd_plugins(int argc, char **argv)
{
    int rc;
    if (no_args(argc, argv, "usage: berthctl plugins [--json]\nThe loaded plugin instances: "
                "name, module, version, state, file.\n", &rc))
        return rc;
    cJSON *j = ctl_call("GET", "/v1/plugins", NULL, &rc), *p;
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc) {
        printf("%-16s %-16s %-10s %-9s %s\n", "NAME", "MODULE", "VERSION", "STATE", "PATH");
        cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "plugins"))
            printf("%-16s %-16s %-10s %-9s %s\n", ctl_str(p, "name"), ctl_str(p, "module"),
                   ctl_str(p, "version"), ctl_str(p, "state"), ctl_str(p, "path"));
    }
    cJSON_Delete(j);
    return rc;
}

int cmd_reload(int argc, char **argv)
{
    int rc;
    if (no_args(argc, argv, "usage: berthctl reload\nRe-reads conf.d, as SIGHUP does; a "
                "config with errors is refused and they are listed.\n", &rc))
        return rc;
    cJSON *j = ctl_call("POST", "/v1/reload", "{}", &rc);
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc) printf("configuration reloaded\n");
    cJSON_Delete(j);
    return rc;
}
