/* berthctl routes [--instance NAME]: the caddy plugin's routes, what Caddy holds against what
 * berth expects (GET /v1/<instance>/routes). Exit 1 when they differ or Caddy is unreachable,
 * so a script can check it. */
#include <stdio.h>
#include <string.h>

#include "cmds.h"

static const char *s(const cJSON *o, const char *k)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return v ? v : "-";
}

static int print_routes(const cJSON *j)
{
    int differ = 0;
    printf("%-24s %-40s %-22s %-22s %s\n", "HANDLE", "HOST", "EXPECTED", "CADDY", "STATE");
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "routes")) {
        const char *want = s(r, "expected"), *held = s(r, "caddy");
        const char *state = !strcmp(held, "-") ? "missing" : strcmp(held, want) ? "differs"
                                                                                : "ok";
        differ += strcmp(state, "ok") != 0;
        printf("%-24s %-40s %-22s %-22s %s\n", s(r, "handle"), s(r, "host"), want, held,
               state);
    }
    printf("revision %.0f, %.0f config loads, %.0f failed calls",
           cJSON_GetNumberValue(cJSON_GetObjectItem(j, "revision")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(j, "config_loads")),
           cJSON_GetNumberValue(cJSON_GetObjectItem(j, "failures")));
    const char *err = s(j, "caddy_error");
    if (strcmp(err, "-")) printf("; Caddy unreachable: %s", err);
    else if (strcmp(s(j, "last_error"), "-") && *s(j, "last_error"))
        printf("; last error: %s", s(j, "last_error"));
    putchar('\n');
    return differ || strcmp(err, "-") ? 1 : 0;
}

int cmd_routes(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl routes [--instance NAME] [--json]\n"
                 "The routes Caddy holds against those berth expects (the caddy plugin\n"
                 "instance NAME, default caddy); exit 1 when they differ or Caddy is down.\n"))
        return 0;
    const char *inst = "caddy";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--instance") && i + 1 < argc) inst = argv[++i];
        else {
            fprintf(stderr, "berthctl: usage: routes [--instance NAME]\n");
            return 2;
        }
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/%s/routes", inst);
    int rc;
    cJSON *j = ctl_call("GET", path, NULL, &rc);
    if (!rc && ctl_json) ctl_print_json(j);
    else if (!rc) rc = print_routes(j);
    cJSON_Delete(j);
    return rc;
}
