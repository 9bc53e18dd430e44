/* berthctl matrix: the matrix plugin's routes (plugins/matrix/README.md).
 *   plan                   what apply would create, join or change (writes nothing)
 *   apply                  rooms, spaces and joins brought to the configuration
 *   invite [USES] [DAYS]   mint a registration token (default 1 use, 7 days; 0 = unlimited)
 *   invites                list them
 *   revoke TOKEN           delete one
 * Each is a line of ctl_matrix_cmds, the group's table (cmds.h). */
#include <cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"

static int print(cJSON *j, int rc)
{
    if (!rc && ctl_json) {
        char *s = cJSON_Print(j);
        puts(s ? s : "null");
        free(s);
    }
    return rc;
}

static int plan_or_apply(int argc, char **argv, bool plan)
{
    if (ctl_help(argc, argv, plan ? "usage: berthctl matrix plan [--json]\nWhat `matrix "
                 "apply` would create, join or change; writes nothing.\n"
                 : "usage: berthctl matrix apply [--json]\nCreates the configured rooms and "
                 "spaces, and joins and changes what the plan says.\n"))
        return 0;
    if (argc > 1) return ctl_extra(argv[0], argv[1]);
    int rc;
    cJSON *j = ctl_call("POST", plan ? "/v1/matrix/plan" : "/v1/matrix/apply", "{}", &rc);
    if (!rc && !ctl_json) {
        if (!plan) {
            puts("matrix: applied");
        } else {
            cJSON *c, *changes = cJSON_GetObjectItem(j, "changes");
            if (!cJSON_GetArraySize(changes)) puts("matrix: nothing to change");
            cJSON_ArrayForEach(c, changes) printf("%s\n", cJSON_GetStringValue(c));
        }
    }
    rc = print(j, rc);
    cJSON_Delete(j);
    return rc;
}

static bool number(const char *s, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0) return false;
    *out = v;
    return true;
}

static int plan(int argc, char **argv)
{
    return plan_or_apply(argc, argv, true);
}

static int apply(int argc, char **argv)
{
    return plan_or_apply(argc, argv, false);
}

static int invite(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl matrix invite [USES] [DAYS] [--json]\n"
                 "Mints a registration token for people who register themselves: USES\n"
                 "registrations (default 1), valid DAYS (default 7); 0 is unlimited.\n"))
        return 0;
    long uses = 1, days = 7;
    if ((argc > 1 && !number(argv[1], &uses)) || (argc > 2 && !number(argv[2], &days)) ||
        argc > 3) {
        fprintf(stderr, "usage: berthctl matrix invite [USES] [DAYS]  (0: unlimited)\n");
        return 2;
    }
    char body[96];
    snprintf(body, sizeof body, "{\"uses\":%ld,\"days\":%ld}", uses, days);
    int rc;
    cJSON *j = ctl_call("POST", "/v1/matrix/invites", body, &rc);
    if (!rc && !ctl_json) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(j, "token"));
        printf("%s\n", t ? t : "?");
    }
    rc = print(j, rc);
    cJSON_Delete(j);
    return rc;
}

static int invites(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl matrix invites [--json]\n"
                 "The registration tokens: uses and expiry.\n"))
        return 0;
    if (argc > 1) return ctl_extra("matrix invites", argv[1]);
    int rc;
    cJSON *j = ctl_call("GET", "/v1/matrix/invites", NULL, &rc);
    if (!rc && !ctl_json) {
        printf("%-24s %-9s %s\n", "TOKEN", "USED", "EXPIRES (ms since epoch)");
        cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "registration_tokens")) {
            cJSON *allowed = cJSON_GetObjectItem(t, "uses_allowed");
            cJSON *exp = cJSON_GetObjectItem(t, "expiry_time");
            char used[32], until[32];
            int n = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(t, "completed"));
            if (cJSON_IsNumber(allowed)) snprintf(used, sizeof used, "%d/%d", n,
                                                  (int)allowed->valuedouble);
            else snprintf(used, sizeof used, "%d/-", n);
            if (cJSON_IsNumber(exp)) snprintf(until, sizeof until, "%.0f", exp->valuedouble);
            else snprintf(until, sizeof until, "never");
            printf("%-24s %-9s %s\n", cJSON_GetStringValue(cJSON_GetObjectItem(t, "token")),
                   used, until);
        }
    }
    rc = print(j, rc);
    cJSON_Delete(j);
    return rc;
}

static int revoke(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl matrix revoke TOKEN\n"
                 "Deletes a registration token.\n"))
        return 0;
    if (argc != 2) {
        fputs("berthctl: matrix revoke needs one TOKEN (see berthctl matrix revoke --help)\n",
              stderr);
        return 2;
    }
    const char *token = argv[1];
    char *e = curl_easy_escape(NULL, token, 0);
    if (!e) return 1;
    char path[512];
    snprintf(path, sizeof path, "/v1/matrix/invites/%s", e);
    curl_free(e);
    int rc;
    cJSON *j = ctl_call("DELETE", path, NULL, &rc);
    if (!rc && !ctl_json) printf("revoked %s\n", token);
    rc = print(j, rc);
    cJSON_Delete(j);
    return rc;
}

const struct ctl_command ctl_matrix_cmds[] = {
    {"plan", "", "what apply would create, join or change (writes nothing)", plan, NULL, NULL},
    {"apply", "", "bring rooms, spaces and joins to the configuration", apply, NULL, NULL},
    {"invite", "[USES] [DAYS]", "a registration token (default 1 use, 7 days; 0: unlimited)",
     invite, NULL, NULL},
    {"invites", "", "the registration tokens", invites, NULL, NULL},
    {"revoke", "TOKEN", "delete a registration token", revoke, NULL, NULL},
    {0},
};
