/* berthctl's commands for the quota plugin (the LLM proxy):
 *   berthctl usage [HANDLE]            spending, budget and tokens per model
 *   berthctl tenant key rotate HANDLE  a new proxy key for the tenant (the old one stops)
 * (the second through ctl_key_cmds, the table of `tenant key`) */
#include "cmds.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void show(const cJSON *u)
{
    printf("%s: spent $%.6f, reserved $%.6f, remaining $%.6f of $%.2f; %.0f calls\n",
           cJSON_GetStringValue(cJSON_GetObjectItem(u, "tenant")), num(u, "spent"),
           num(u, "reserved"), num(u, "remaining"), num(u, "budget"), num(u, "calls"));
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(u, "models"))
        printf("  %-28s %6.0f calls %10.0f in %10.0f out %8.0f cache-r %8.0f cache-w $%.6f\n",
               cJSON_GetStringValue(cJSON_GetObjectItem(m, "model")), num(m, "calls"),
               num(m, "input_tokens"), num(m, "output_tokens"), num(m, "cache_read_tokens"),
               num(m, "cache_write_tokens"), num(m, "cost"));
}

int cmd_usage(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl usage [HANDLE] [--json]\n"
                 "LLM spending of one tenant, or of all: spent, reserved, remaining, budget,\n"
                 "calls and tokens per model (the quota plugin).\n"))
        return 0;
    char path[256];
    if (argc > 2) {
        fputs("usage: berthctl usage [HANDLE]\n", stderr);
        return 2;
    }
    if (argc == 2) {
        char *e = curl_easy_escape(NULL, argv[1], 0);
        snprintf(path, sizeof path, "/v1/tenants/%s/usage", e);
        curl_free(e);
    } else {
        snprintf(path, sizeof path, "/v1/quota/usage");
    }
    int rc;
    cJSON *j = ctl_call("GET", path, NULL, &rc);
    if (!rc) {
        if (ctl_json) {
            char *s = cJSON_Print(j);
            puts(s);
            cJSON_free(s);
        } else if (cJSON_IsArray(j)) {
            const cJSON *u;
            cJSON_ArrayForEach(u, j) show(u);
        } else {
            show(j);
        }
    }
    cJSON_Delete(j);
    return rc;
}

static int rotate(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl tenant key rotate HANDLE\n"
                 "A new LLM proxy key for the tenant; the old one stops working at once and\n"
                 "the workload is re-created with the new one (the quota plugin).\n"))
        return 0;
    if (argc < 2) {
        fputs("berthctl: tenant key rotate needs a HANDLE (see berthctl tenant key rotate "
              "--help)\n", stderr);
        return 2;
    }
    if (argc > 2) return ctl_extra("tenant key rotate", argv[2]);
    char path[256];
    char *e = curl_easy_escape(NULL, argv[1], 0);
    snprintf(path, sizeof path, "/v1/tenants/%s/key/rotate", e);
    curl_free(e);
    int rc;
    cJSON *j = ctl_call("POST", path, "{}", &rc);
    cJSON_Delete(j);
    if (!rc && !ctl_json)
        printf("%s: a new key is being provisioned; the old one no longer works\n", argv[1]);
    return rc;
}

const struct ctl_command ctl_key_cmds[] = {
    {"rotate", "HANDLE", "a new LLM proxy key; the old one stops at once", rotate, NULL, NULL},
    {0},
};
