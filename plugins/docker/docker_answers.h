/* What berth reads from dockerd's JSON answers (inspect, list, pull progress): dockerd is
 * outside input. No loop and no host table, so the fuzzer calls the same code the plugin
 * runs (tests/fuzz/fuzz_docker_json.c). */
#ifndef BERTH_DOCKER_ANSWERS_H
#define BERTH_DOCKER_ANSWERS_H

#include <cJSON.h>
#include <stdbool.h>

#define DK_ADDR_MAX 96

/* a JSON number as an int in [lo, hi], or dflt for anything else (not a number, NaN, out
 * of range): casting a double outside int's range is undefined */
int dk_int(const cJSON *n, int lo, int hi, int dflt);

/* GET /containers/{id}/json; the strings point into the cJSON tree */
struct dk_inspect {
    const char *id;             /* NULL when absent */
    bool running, oom;
    int exit_code;              /* -1 when absent or not an exit status */
    char addr[DK_ADDR_MAX];     /* "ip:port" published for container port `port`, or "" */
};
void dk_inspect_read(const cJSON *c, int port, struct dk_inspect *out);

/* one element of GET /containers/json; false unless it names a berth tenant and a state */
struct dk_listed {
    const char *tenant, *tmpl, *state, *id;
    char addr[DK_ADDR_MAX];     /* the first IPv4 published port, or "" */
};
bool dk_list_read(const cJSON *c, struct dk_listed *out);

/* the host port HostConfig.PortBindings gives container port `port`, or 0 */
int dk_bound_port(const cJSON *c, int port);

/* one line of a pull's progress stream; the strings point into the cJSON tree */
struct dk_pull { const char *error, *status, *layer, *progress; };
void dk_pull_read(const cJSON *m, struct dk_pull *out);

#endif
