/* berthctl events, and the waiting of `tenant add|wake --wait` on a tenant's events. */
#include "cmds.h"

#include <curl/curl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool print_event(const char *data, void *arg)
{
    (void)arg;
    if (ctl_json) {
        puts(data);
        fflush(stdout);
        return true;
    }
    cJSON *e = ctl_parse(data);
    char ts[40];
    ctl_fmt_time(ctl_num(e, "time_ms"), ts, sizeof ts);
    char *payload = cJSON_PrintUnformatted(cJSON_GetObjectItem(e, "payload"));
    const char *tenant = cJSON_GetStringValue(cJSON_GetObjectItem(e, "tenant"));
    printf("%6.0f %s %-22s %-16s %s\n", ctl_num(e, "seq"), ts, ctl_str(e, "type"),
           tenant ? tenant : "-", payload ? payload : "{}");
    fflush(stdout);
    free(payload);
    cJSON_Delete(e);
    return true;
}

static const char events_help[] =
    "usage: berthctl events [-f] [--since SEQ] [--type TYPE] [--tenant HANDLE] [--json]\n"
    "The event journal: the last 100 events, or those after SEQ. -f (--follow) keeps\n"
    "printing new events until interrupted; it exits 1 if berthd goes away. TYPE is an\n"
    "event type (tenant.ready) or a prefix ending in * (tenant.*).\n";

int cmd_events(int argc, char **argv)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'}, {"since", required_argument, NULL, 'S'},
        {"type", required_argument, NULL, 'T'}, {"tenant", required_argument, NULL, 't'}, {0},
    };
    if (ctl_help(argc, argv, events_help)) return 0;
    bool follow = false;
    const char *since = NULL, *type = NULL, *tenant = NULL;
    int ch;
    ctl_getopt_reset();
    while ((ch = getopt_long(argc, argv, ":f", opts, NULL)) != -1) {
        if (ch == 'f') follow = true;
        else if (ch == 'S') since = optarg;
        else if (ch == 'T') type = optarg;
        else if (ch == 't') tenant = optarg;
        else return ctl_bad_option("events", argv, ch);
    }
    if (optind < argc) return ctl_extra("events", argv[optind]);
    char *es = since ? curl_easy_escape(NULL, since, 0) : NULL;
    char *et = type ? curl_easy_escape(NULL, type, 0) : NULL;
    char *eh = tenant ? curl_easy_escape(NULL, tenant, 0) : NULL;
    char path[2048];
    snprintf(path, sizeof path, "/v1/events?follow=%d%s%s%s%s%s%s", follow,
             es ? "&since=" : "", es ? es : "", et ? "&type=" : "", et ? et : "",
             eh ? "&tenant=" : "", eh ? eh : "");
    curl_free(es);
    curl_free(et);
    curl_free(eh);
    int rc = ctl_stream(path, print_event, NULL, 0);
    if (rc == 3 && follow) {
        fprintf(stderr, "berthctl: berthd went away: the event stream ended\n");
        return 1;
    }
    return rc == 3 ? 0 : rc;
}

/* ---- --wait: follow the tenant's events until it is ready or failed ---- */

struct waiter { int result; };

static bool wait_event(const char *data, void *arg)
{
    struct waiter *w = arg;
    cJSON *e = ctl_parse(data);
    const char *type = ctl_str(e, "type");
    cJSON *p = cJSON_GetObjectItem(e, "payload");
    if (ctl_json) {
        puts(data);
    } else if (!strcmp(type, "image.pull_progress")) {
        const char *layer = cJSON_GetStringValue(cJSON_GetObjectItem(p, "layer"));
        const char *prog = cJSON_GetStringValue(cJSON_GetObjectItem(p, "progress"));
        printf("  pull %s: %s%s%s%s%s\n", ctl_str(p, "image"), ctl_str(p, "status"),
               layer ? " " : "", layer ? layer : "", prog ? " " : "", prog ? prog : "");
    } else if (!strcmp(type, "tenant.changed")) {
        printf("  %s\n", ctl_str(p, "observed"));
    } else if (!strcmp(type, "tenant.failed")) {
        printf("  failed: %s\n", ctl_str(p, "reason"));
    }
    fflush(stdout);
    if (!strcmp(type, "tenant.ready")) w->result = 0;
    else if (!strcmp(type, "tenant.failed")) w->result = 1;
    cJSON_Delete(e);
    return w->result < 0;       /* decided: end the stream */
}

/* true when the tenant is ready now (so no tenant.ready will come for this request) */
static bool ready_now(const char *eh, int *rc)
{
    char path[1024];
    snprintf(path, sizeof path, "/v1/tenants/%s", eh);
    cJSON *t = ctl_call("GET", path, NULL, rc);
    bool ready = !*rc && !strcmp(ctl_str(t, "observed"), "ready") &&
                 !strcmp(ctl_str(t, "desired"), "running");
    cJSON_Delete(t);
    return ready;
}

int ctl_wait_ready(const char *handle, double seq, int64_t timeout_ms)
{
    char path[1024], d[32];
    char *eh = curl_easy_escape(NULL, handle, 0);
    struct waiter w = {.result = -1};
    int rc;
    if (ready_now(eh, &rc)) w.result = 0;
    snprintf(path, sizeof path, "/v1/events?since=%.0f&tenant=%s", seq, eh);
    curl_free(eh);
    if (rc) return rc;
    if (w.result < 0) rc = ctl_stream(path, wait_event, &w, (long)timeout_ms);
    if (w.result == 0) {
        if (!ctl_json) printf("%s: ready\n", handle);
        return 0;
    }
    if (w.result == 1) {
        fprintf(stderr, "berthctl: %s failed; berthd keeps retrying (berthctl tenant show %s)"
                "\n", handle, handle);
        return 1;
    }
    ctl_fmt_duration((double)timeout_ms, d, sizeof d);
    if (rc == 4) fprintf(stderr, "berthctl: %s is not ready after %s\n", handle, d);
    else if (rc == 3) fprintf(stderr, "berthctl: berthd went away before %s was ready\n", handle);
    return 1;
}
