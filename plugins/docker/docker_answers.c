/* dockerd's JSON answers, read into what berth uses; see docker_answers.h. */
#include "docker_answers.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
}

int dk_int(const cJSON *n, int lo, int hi, int dflt)
{
    if (!cJSON_IsNumber(n)) return dflt;
    double v = n->valuedouble;
    if (isnan(v) || v < lo || v > hi) return dflt;
    return (int)v;
}

/* dockerd publishes on 0.0.0.0 to mean every address: the tenant is reached on loopback. An
 * address too long for the buffer is none: cut short, it would name another place. */
static void set_addr(char *out, const char *ip, int port)
{
    int n = snprintf(out, DK_ADDR_MAX, "%s:%d",
                     !ip || !*ip || !strcmp(ip, "0.0.0.0") ? "127.0.0.1" : ip, port);
    if (n < 0 || n >= DK_ADDR_MAX) out[0] = 0;
}

/* a port as dockerd writes it in a binding ("8080"), or 0 */
static int port_of(const char *s)
{
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    return *end || v < 1 || v > 65535 ? 0 : (int)v;
}

void dk_inspect_read(const cJSON *c, int port, struct dk_inspect *out)
{
    const cJSON *st = cJSON_GetObjectItem(c, "State");
    *out = (struct dk_inspect){
        .id = str(c, "Id"),
        .running = cJSON_IsTrue(cJSON_GetObjectItem(st, "Running")),
        .oom = cJSON_IsTrue(cJSON_GetObjectItem(st, "OOMKilled")),
        .exit_code = dk_int(cJSON_GetObjectItem(st, "ExitCode"), INT_MIN, INT_MAX, -1),
    };
    if (!port) return;
    char key[32];
    snprintf(key, sizeof key, "%d/tcp", port);
    const cJSON *ports = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "NetworkSettings"), "Ports");
    const cJSON *b = cJSON_GetArrayItem(cJSON_GetObjectItem(ports, key), 0);
    const char *ip = str(b, "HostIp");
    int hp = port_of(str(b, "HostPort"));
    if (ip && hp) set_addr(out->addr, ip, hp);
}

bool dk_list_read(const cJSON *c, struct dk_listed *out)
{
    const cJSON *labels = cJSON_GetObjectItem(c, "Labels");
    *out = (struct dk_listed){
        .tenant = str(labels, "berth.tenant"), .tmpl = str(labels, "berth.template"),
        .state = str(c, "State"), .id = str(c, "Id"),
    };
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(c, "Ports")) {
        const char *ip = str(p, "IP");
        int pub = dk_int(cJSON_GetObjectItem(p, "PublicPort"), 1, 65535, 0);
        if (!pub || (ip && strchr(ip, ':'))) continue;
        set_addr(out->addr, ip, pub);
        break;
    }
    return out->tenant && out->state;
}

int dk_bound_port(const cJSON *c, int port)
{
    char key[32];
    snprintf(key, sizeof key, "%d/tcp", port);
    const cJSON *pb = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "HostConfig"), "PortBindings");
    return port_of(str(cJSON_GetArrayItem(cJSON_GetObjectItem(pb, key), 0), "HostPort"));
}

void dk_pull_read(const cJSON *m, struct dk_pull *out)
{
    *out = (struct dk_pull){
        .error = str(m, "error"), .status = str(m, "status"), .layer = str(m, "id"),
        .progress = str(m, "progress"),
    };
    if (!out->error) out->error = str(m, "message");
}
