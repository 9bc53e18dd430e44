/* plugins/caddy: reading what Caddy sends berth (its admin API's answers, its access log), with
 * no host dependency, so that tests/fuzz/fuzz_caddy_json.c compiles the same code.
 *
 * Nothing here keeps state or allocates beyond the call: strings returned point into the
 * cJSON tree passed in (or are literals) and live as long as it does. */
#ifndef BERTH_CADDY_ANSWERS_H
#define BERTH_CADDY_ANSWERS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An access-log line's request.host, lowercased and without its port, in host[0..n-1]; ""
 * when it does not fit. False (host "") when the line is not JSON or names no host. */
bool caddy_log_host(const char *line, size_t len, char *host, size_t n);

/* Caddy's `net` log writer's stream: splits buf[0..*len-1] into lines and calls fn with each
 * whole one (without its newline); the partial line left is moved to the start of buf. A line
 * that fills all `cap` bytes of buf is dropped, with the rest of it up to its newline
 * (*skipping), so a line reaches fn exactly when it is shorter than `cap`. */
void caddy_lines_take(char *buf, size_t *len, size_t cap, bool *skipping,
                      void (*fn)(const char *line, size_t len, void *arg), void *arg);

/* GET /reverse_proxy/upstreams: calls fn with the address of every upstream that has requests
 * open. Returns how many it found; 0 for an answer that is not such a list. */
int caddy_busy_upstreams(const char *body, size_t len,
                         void (*fn)(const char *addr, void *arg), void *arg);

/* The revision of a container held in Caddy, from its group "<id>-rev-<n>": true only when
 * the group is exactly what berth writes for that revision (it prints back the same). */
bool caddy_held_rev(const cJSON *held, const char *id, uint64_t *rev);

/* GET /id/<id>/group: true when the answer is the tag "<id>-rev-<rev>" berth wrote. */
bool caddy_tag_matches(const char *body, size_t len, const char *id, uint64_t rev);

/* The route with @id `id` in a held container's subroute, or NULL. */
const cJSON *caddy_held_route(const cJSON *held, const char *id);

/* Where one of Caddy's routes sends a tenant: the first dial when it has two upstreams (the
 * tenant before berth), "berth" when it has fewer, "?" when its first has no dial. */
const char *caddy_held_upstream(const cJSON *route);

/* Where berth's logger goes, given Caddy's /config/logging answer parsed (`cur`: JSON null
 * when Caddy has none, NULL when the answer was not JSON). Returns 1 with *body what to POST
 * (it has taken `logger`, maybe wrapped) and path where; 0 when Caddy holds it as it is; -1
 * when berth cannot place it without replacing what it cannot read (cur not JSON, or not an
 * object; logs neither an object nor null). On 0 and -1 `logger` is untouched, *body NULL. */
int caddy_logger_place(const cJSON *cur, const char *id, cJSON *logger, cJSON **body,
                       char *path, size_t path_len);

/* server.c: the body and where it goes (`method` on `path`) that give a Caddy whose config is
 * `cfg` the server `server` (listening on listen[0..nlisten-1]) with `container` as its
 * routes; NULL with `err` when berth must not or cannot create it. The caller frees it. */
char *server_create(const char *server, const char *const *listen, size_t nlisten,
                    const char *cfg, size_t cfg_len, const char *container,
                    char *path, size_t path_len, const char **method, char *err, size_t err_len);

#endif
