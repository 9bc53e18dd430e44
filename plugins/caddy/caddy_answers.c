/* Reading what Caddy sends berth: its access log's lines and its admin API's answers (the
 * upstreams in use, the container berth holds there, its logging config). No host calls, so
 * the fuzz target (tests/fuzz/fuzz_caddy_json.c) runs exactly this code. */
#include "caddy_answers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Keys are matched exactly, as Caddy's admin API walks its config's paths */
static const cJSON *key(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

bool caddy_log_host(const char *line, size_t len, char *host, size_t n)
{
    if (n) host[0] = 0;
    cJSON *o = cJSON_ParseWithLength(line, len);
    if (!o) return false;
    const cJSON *req = key(o, "request");
    const char *h = cJSON_GetStringValue(key(req, "host"));
    bool got = h != NULL;
    size_t i = 0;
    for (; h && n && h[i] && h[i] != ':' && i + 1 < n; i++)
        host[i] = (char)tolower((unsigned char)h[i]);
    /* a host longer than the buffer is none berth routes: its prefix could be one */
    if (n) host[h && h[i] && h[i] != ':' ? 0 : i] = 0;
    cJSON_Delete(o);
    return got;
}

void caddy_lines_take(char *buf, size_t *len, size_t cap, bool *skipping,
                      void (*fn)(const char *line, size_t len, void *arg), void *arg)
{
    size_t start = 0;
    for (size_t i = 0; i < *len; i++) {
        if (buf[i] != '\n') continue;
        if (!*skipping) fn(buf + start, i - start, arg);
        *skipping = false;
        start = i + 1;
    }
    memmove(buf, buf + start, *len - start);
    *len -= start;
    if (*len == cap) {      /* a line longer than the buffer: dropped */
        *skipping = true;
        *len = 0;
    }
}

int caddy_busy_upstreams(const char *body, size_t len,
                         void (*fn)(const char *addr, void *arg), void *arg)
{
    cJSON *list = cJSON_ParseWithLength(body, len);
    const cJSON *u;
    int found = 0;
    cJSON_ArrayForEach(u, list) {
        const char *addr = cJSON_GetStringValue(key(u, "address"));
        if (!addr || cJSON_GetNumberValue(key(u, "num_requests")) <= 0) continue;
        fn(addr, arg);
        found++;
    }
    cJSON_Delete(list);
    return found;
}

bool caddy_held_rev(const cJSON *held, const char *id, uint64_t *rev)
{
    const char *group = cJSON_GetStringValue(key(held, "group"));
    size_t idlen = strlen(id);
    if (!group || strncmp(group, id, idlen) || strncmp(group + idlen, "-rev-", 5)) return false;
    /* only what berth prints: strtoull alone takes a sign, spaces, leading zeros and wraps
     * on overflow, and a revision read so is not newer than the tag it came from */
    const char *d = group + idlen + 5;
    size_t n = strspn(d, "0123456789");
    if (!n || d[n] || (d[0] == '0' && n > 1) || n > 20) return false;
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t digit = (uint64_t)(d[i] - '0');
        if (r > (UINT64_MAX - digit) / 10) return false;
        r = r * 10 + digit;
    }
    *rev = r;
    return true;
}

bool caddy_tag_matches(const char *body, size_t len, const char *id, uint64_t rev)
{
    char want[512];
    int w = snprintf(want, sizeof want, "\"%s-rev-%llu\"", id, (unsigned long long)rev);
    if (w < 0 || (size_t)w >= sizeof want) return false;
    while (len && (body[len - 1] == '\n' || body[len - 1] == ' ')) len--;
    return len == (size_t)w && !memcmp(body, want, len);
}

const cJSON *caddy_held_route(const cJSON *held, const char *id)
{
    const cJSON *sub = cJSON_GetArrayItem(key(held, "handle"), 0);
    const cJSON *r;
    cJSON_ArrayForEach(r, key(sub, "routes")) {
        const char *rid = cJSON_GetStringValue(key(r, "@id"));
        if (rid && !strcmp(rid, id)) return r;
    }
    return NULL;
}

const char *caddy_held_upstream(const cJSON *route)
{
    const cJSON *h = cJSON_GetArrayItem(key(route, "handle"), 0);
    const cJSON *ups = key(h, "upstreams");
    if (cJSON_GetArraySize(ups) < 2) return "berth";
    const char *d = cJSON_GetStringValue(key(cJSON_GetArrayItem(ups, 0), "dial"));
    return d ? d : "?";
}

/* Caddy 2.6 cannot create a missing parent, so the parent's state decides where it goes */
int caddy_logger_place(const cJSON *cur, const char *id, cJSON *logger, cJSON **body,
                       char *path, size_t path_len)
{
    *body = NULL;
    const cJSON *logs = key(cur, "logs");
    if (cJSON_Compare(key(logs, id), logger, true)) return 0;
    /* a POST sets its key whole: only where there is nothing (null, missing) to lose */
    if (!cJSON_IsNull(cur) && !cJSON_IsObject(cur)) return -1;
    if (logs && !cJSON_IsNull(logs) && !cJSON_IsObject(logs)) return -1;
    if (cJSON_IsObject(logs)) {
        *body = logger;
        snprintf(path, path_len, "/config/logging/logs/%s", id);
        return 1;
    }
    cJSON *outer = cJSON_CreateObject(), *inner = outer;
    if (cJSON_IsNull(cur)) {
        inner = cJSON_AddObjectToObject(outer, "logs");
        snprintf(path, path_len, "/config/logging");
    } else {
        snprintf(path, path_len, "/config/logging/logs");
    }
    if (!cJSON_AddItemToObject(inner, id, logger)) {
        cJSON_Delete(logger);       /* out of memory: nothing to write, rather than less */
        cJSON_Delete(outer);
        outer = NULL;
    }
    *body = outer;
    return 1;
}
