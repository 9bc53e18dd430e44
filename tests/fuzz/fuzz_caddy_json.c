/* Fuzz target for the caddy plugin's reading of what Caddy sends it
 * (plugins/caddy/caddy_answers.c and server.c): access-log lines, the upstreams in use, the
 * container berth holds in Caddy, its revision tag, Caddy's config (for creating the server)
 * and its logging config. The first byte picks the answer, the second a variation.
 * Checked beyond crashes:
 *   - Caddy's log stream, cut anywhere, gives the lines that fit the buffer, whole;
 *   - a log line's host is the JSON's own, lowercased, without its port, whole (or none when
 *     it does not fit its buffer: a prefix could name another route);
 *   - a held revision prints back to exactly the group it was read from;
 *   - a route found by @id has that @id; its upstream is "berth", "?" or its first dial;
 *   - the tag matches only an answer that is that tag as a JSON string;
 *   - applying what server_create returns with Caddy's own rules (a PUT creates a missing key
 *     under an existing object, never replaces one) gives a config whose server's routes
 *     start with berth's container; likewise the logger lands at logging.logs.<id>, written
 *     only beside a logging config berth could read, replacing nothing of anybody else's.
 *   clang: meson setup build-fuzz -Dfuzz=true &&
 *          build-fuzz/tests/fuzz/fuzz_caddy_json corpus/caddy_json
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "caddy_answers.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ID "berth"
#define SERVER "srv0"
#define CONTAINER "{\"@id\":\"berth\",\"group\":\"berth-rev-1\",\"handle\":[]}"

/* keys are matched exactly, as Caddy's admin API walks paths */
static cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static size_t read_ok;      /* answers that gave berth something, for the corpus run */

static void must(bool ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_caddy_json: broken promise: %s\n", what);
    abort();
}

static void log_line(const char *line, size_t len, size_t n)
{
    char host[256];
    bool got = caddy_log_host(line, len, host, n);
    must(n == 0 || strnlen(host, n) < n, "the host fits its buffer");
    if (!got) return;
    read_ok++;
    cJSON *o = cJSON_ParseWithLength(line, len);
    const char *h = cJSON_GetStringValue(get(get(o, "request"),
                                                             "host"));
    must(h != NULL, "a host is read only from a line that has one");
    size_t i = 0;
    for (; n && host[i]; i++)
        must((unsigned char)host[i] == tolower((unsigned char)h[i]) && h[i] != ':',
             "the host is the line's");
    must(!n || !h[i] || h[i] == ':' || (!i && strcspn(h, ":") + 1 > n),
         "the host is the line's whole, or none when it does not fit");
    cJSON_Delete(o);
}

static void log_lines(const char *s, size_t len, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++)
        if (i == len || s[i] == '\n') {
            log_line(s + start, i - start, n);
            start = i + 1;
        }
}

static void count(const char *addr, void *arg)
{
    must(addr != NULL, "a busy upstream has an address");
    (*(int *)arg)++;
}

static void upstreams(const char *s, size_t len)
{
    int n = 0;
    int found = caddy_busy_upstreams(s, len, count, &n);
    must(found == n, "every busy upstream is reported once");
    read_ok += (size_t)found;
}

static void held(const char *s, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(s, len);
    uint64_t rev = 0;
    if (caddy_held_rev(j, ID, &rev)) {
        char back[64];
        snprintf(back, sizeof back, ID "-rev-%llu", (unsigned long long)rev);
        must(!strcmp(back, cJSON_GetStringValue(get(j, "group"))),
             "a held revision prints back to its group");
        read_ok++;
    }
    const cJSON *sub = cJSON_GetArrayItem(get(j, "handle"), 0), *r;
    cJSON_ArrayForEach(r, get(sub, "routes")) {
        const char *rid = cJSON_GetStringValue(get(r, "@id"));
        if (!rid) continue;
        const cJSON *found = caddy_held_route(j, rid);
        must(found && !strcmp(cJSON_GetStringValue(get(found, "@id")), rid),
             "a route found by @id has it");
        const char *up = caddy_held_upstream(found);
        const cJSON *h = cJSON_GetArrayItem(get(found, "handle"), 0);
        const cJSON *first = cJSON_GetArrayItem(get(h, "upstreams"), 0);
        const char *dial = cJSON_GetStringValue(get(first, "dial"));
        must(up && (!strcmp(up, "berth") || !strcmp(up, "?") || (dial && !strcmp(up, dial))),
             "a route's upstream is berth or its first dial");
        read_ok++;
    }
    cJSON_Delete(j);
}

static void tag(const char *s, size_t len, uint64_t rev)
{
    if (!caddy_tag_matches(s, len, ID, rev)) return;
    char want[64];
    snprintf(want, sizeof want, ID "-rev-%llu", (unsigned long long)rev);
    cJSON *j = cJSON_ParseWithLength(s, len);
    must(cJSON_IsString(j) && !strcmp(j->valuestring, want), "a matching tag is the tag");
    cJSON_Delete(j);
    read_ok++;
}

/* Caddy's rules for a write to /config/<path>: POST on the root replaces a config that is
 * not an object; PUT creates a key missing under an object, and refuses one that exists. */
static cJSON *apply(cJSON *root, const char *path, const char *method, cJSON *body)
{
    must(!strncmp(path, "/config/", 8), "a write goes under /config/");
    const char *p = path + 8;
    if (!*p) {
        must(!strcmp(method, "POST") && cJSON_IsNull(root), "only an empty config is set whole");
        cJSON_Delete(root);
        return body;
    }
    must(!strcmp(method, "PUT"), "keys are created by PUT");
    cJSON *at = root;
    for (;;) {
        const char *slash = strchr(p, '/');
        char key[128];
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        must(n < sizeof key && cJSON_IsObject(at), "a write's parent exists");
        memcpy(key, p, n);
        key[n] = 0;
        cJSON *next = get(at, key);
        if (!slash) {
            must(!next, "a PUT never meets a key that exists");
            cJSON_AddItemToObject(at, key, body);
            return root;
        }
        at = next;
        p = slash + 1;
    }
}

static cJSON *dig(cJSON *j, const char *const *keys, int n)
{
    for (int i = 0; i < n && j; i++) j = get(j, keys[i]);
    return j;
}

static void server(const char *s, size_t len, int variant)
{
    const char *listen[] = {":443"};
    char path[300], err[200] = "";
    const char *method = NULL;
    char *out = server_create(SERVER, listen, (size_t)(variant & 1), s, len, CONTAINER, path,
                              sizeof path, &method, err, sizeof err);
    if (!out) {
        must(*err, "a refusal says why");
        return;
    }
    cJSON *body = cJSON_Parse(out);
    must(body != NULL, "the body is JSON");
    cJSON *root = apply(cJSON_ParseWithLength(s, len), path, method, body);
    const char *keys[] = {"apps", "http", "servers", SERVER, "routes"};
    cJSON *want = cJSON_Parse(CONTAINER);
    must(cJSON_Compare(cJSON_GetArrayItem(dig(root, keys, 5), 0), want, true),
         "the server's routes start with berth's container");
    cJSON_Delete(want);
    cJSON_Delete(root);
    free(out);
    read_ok++;
}

static cJSON *logger(void)
{
    return cJSON_Parse("{\"writer\":{\"output\":\"net\",\"address\":\"tcp/127.0.0.1:9514\"},"
                       "\"encoder\":{\"format\":\"json\"},\"include\":[\"http.log.access\"]}");
}

static void logging(const char *s, size_t len)
{
    cJSON *cur = cJSON_ParseWithLength(s, len), *body, *mine = logger();
    char path[300];
    if (caddy_logger_place(cur, ID, mine, &body, path, sizeof path) <= 0) {
        must(!body, "nothing is written when Caddy holds it or berth cannot place it");
        cJSON_Delete(mine);
        cJSON_Delete(cur);
        return;
    }
    must(cur != NULL, "the logger is written only beside a logging config berth read");
    /* a POST sets the key; its parent must exist as an object */
    const char *keys[] = {"logs", ID};
    cJSON *root = cJSON_CreateObject();
    if (cur) cJSON_AddItemToObject(root, "logging", cur);
    char parent[300];
    snprintf(parent, sizeof parent, "%s", path);
    char *last = strrchr(parent, '/');
    *last = 0;
    const char *pk[] = {"logging", "logs"};
    int depth = !strcmp(parent, "/config") ? 0 : !strcmp(parent, "/config/logging") ? 1 : 2;
    cJSON *at = dig(root, pk, depth);
    must(cJSON_IsObject(at), "the logger's parent exists");
    const cJSON *old = get(at, last + 1);
    must(!old || cJSON_IsNull(old) || !strcmp(last + 1, ID),
         "the logger replaces nothing but null or berth's own logger");
    cJSON_DeleteItemFromObjectCaseSensitive(at, last + 1);
    cJSON_AddItemToObject(at, last + 1, body);
    cJSON *want = logger();
    must(cJSON_Compare(dig(get(root, "logging"), keys, 2), want,
                       true), "the logger lands at logging.logs.<id>");
    cJSON_Delete(want);
    cJSON_Delete(root);
    read_ok++;
}

struct text { char *p; size_t n; };

static void add(struct text *t, const char *s, size_t n)
{
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n++] = '\n';
}

static void collect(const char *line, size_t len, void *arg)
{
    add(arg, line, len);
    log_line(line, len, 256);
}

/* the log stream cut into reads of `chunk` bytes, into a buffer of `cap`: every line shorter
 * than cap arrives whole and in order, nothing else does, wherever the reads end */
static void stream(const char *s, size_t len, size_t cap, size_t chunk)
{
    struct text got = {malloc(len + 1), 0}, want = {malloc(len + 1), 0};
    size_t start = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\n') {
            if (i - start < cap) add(&want, s + start, i - start);
            start = i + 1;
        }
    char *buf = malloc(cap);
    size_t blen = 0;
    bool skipping = false;
    for (size_t off = 0; off < len;) {
        size_t c = cap - blen < chunk ? cap - blen : chunk;
        if (c > len - off) c = len - off;
        must(c > 0, "the buffer always has room");
        memcpy(buf + blen, s + off, c);
        blen += c;
        off += c;
        caddy_lines_take(buf, &blen, cap, &skipping, collect, &got);
    }
    must(got.n == want.n && !memcmp(got.p, want.p, got.n), "the stream's lines arrive whole");
    free(buf);
    free(got.p);
    free(want.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int kind = data[0] % 8, variant = data[1];
    const char *s = (const char *)data + 2;
    size_t len = size - 2;
    switch (kind) {
    case 0: log_lines(s, len, variant % 2 ? 256 : (size_t)variant % 16); break;
    case 1: upstreams(s, len); break;
    case 2: held(s, len); break;
    case 3: tag(s, len, 7); tag(s, len, (uint64_t)variant); break;
    case 4: server(s, len, variant); break;
    case 5: logging(s, len); break;
    default: stream(s, len, (size_t)variant * 4 + 1, (size_t)data[0] / 8 + 1); break;
    }
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_caddy_json: %d input(s) ran clean, %zu read\n", argc - 1, read_ok);
    return read_ok > 0 || argc == 1 ? 0 : 1;
}
#endif
