/* berthctl's side of the control API: requests, event streams, and the formatting every
 * command shares. A CLI may block, so it uses libcurl's easy API. */
#include "cmds.h"
#include "sse.h"

#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool ctl_json;

static char *sock_path, *base_url;
static struct curl_slist *auth;     /* the bearer token line, or NULL */

void ctl_connect(const char *sock, const char *url, const char *token)
{
    sock_path = sock ? strdup(sock) : NULL;
    base_url = url ? strdup(url) : NULL;
    if (token) {
        size_t n = strlen(token) + 32;
        char *line = malloc(n);
        if (line) {
            snprintf(line, n, "Authorization: Bearer %s", token);
            auth = curl_slist_append(NULL, line);
            memset(line, 0, n);
            free(line);
        }
    }
}

void ctl_disconnect(void)
{
    curl_slist_free_all(auth);
    auth = NULL;
    free(sock_path);
    free(base_url);
    sock_path = base_url = NULL;
}

struct resp { char *data; size_t len; };

static size_t collect(char *p, size_t sz, size_t n, void *arg)
{
    struct resp *r = arg;
    char *d = realloc(r->data, r->len + sz * n + 1);
    if (!d) return 0;
    memcpy(d + r->len, p, sz * n);
    r->data = d;
    r->len += sz * n;
    d[r->len] = 0;
    return sz * n;
}

static CURL *easy(const char *method, const char *path, struct curl_slist **h, const char *body)
{
    CURL *c = curl_easy_init();
    if (!c) return NULL;
    char url[2048];
    snprintf(url, sizeof url, "%s%s", base_url ? base_url : "http://berth", path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    if (!base_url) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock_path);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    for (struct curl_slist *a = auth; a; a = a->next) *h = curl_slist_append(*h, a->data);
    if (body) {
        *h = curl_slist_append(*h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    if (*h) curl_easy_setopt(c, CURLOPT_HTTPHEADER, *h);
    return c;
}

static int unreachable(CURLcode cc)
{
    fprintf(stderr, "berthctl: cannot reach berthd at %s: %s (is berthd running? set --socket "
            "or BERTH_SOCKET)\n", base_url ? base_url : sock_path, curl_easy_strerror(cc));
    return 1;
}

/* Control characters in the server's strings are shown as '?' to people: a tenant's
 * heartbeat text, a Caddy dial or a homeserver's message must not drive the operator's
 * terminal (escape sequences). --json output keeps the API's JSON as it came. */
static void defang(char *s)
{
    for (unsigned char *u = (unsigned char *)s; u && *u; u++) {
        if (*u < 0x20 || *u == 0x7f) *u = '?';
        else if (*u == 0xc2 && u[1] >= 0x80 && u[1] <= 0x9f) u[0] = u[1] = '?';   /* C1 */
    }
}

static void defang_tree(cJSON *j)
{
    for (; j; j = j->next) {
        defang(j->string);
        if (cJSON_IsString(j)) defang(j->valuestring);
        defang_tree(j->child);
    }
}

cJSON *ctl_parse(const char *data)
{
    cJSON *j = data ? cJSON_Parse(data) : NULL;
    if (!ctl_json) defang_tree(j);
    return j;
}

/* the API's error shape {"error":{"code","message","details"}} on stderr */
static void print_error(const char *data, long status)
{
    bool json = ctl_json;
    ctl_json = false;           /* stderr is for people */
    cJSON *j = ctl_parse(data);
    ctl_json = json;
    cJSON *e = cJSON_GetObjectItem(j, "error");
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItem(e, "message"));
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItem(e, "code"));
    if (!msg) msg = cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason"));
    fprintf(stderr, "berthctl: %s (%s, HTTP %ld)\n", msg ? msg : "request failed",
            code ? code : "error", status);
    cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(e, "details"))
        if (cJSON_IsString(d)) fprintf(stderr, "  %s\n", d->valuestring);
    cJSON_Delete(j);
}

cJSON *ctl_call(const char *method, const char *path, const char *body, int *rc)
{
    struct curl_slist *h = NULL;
    struct resp r = {0};
    long status = 0;
    CURL *c = easy(method, path, &h, body);
    if (!c) {
        fprintf(stderr, "berthctl: out of memory\n");
        *rc = 1;
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        *rc = unreachable(cc);
        free(r.data);
        return NULL;
    }
    cJSON *j = ctl_parse(r.data);
    *rc = 0;
    if (status >= 300) {
        if (ctl_json && r.data) fputs(r.data, stdout);
        print_error(r.data, status);
        *rc = 1;
    }
    free(r.data);
    return j;
}

int ctl_fetch(const char *path, char **data, size_t *len)
{
    struct curl_slist *h = NULL;
    struct resp r = {0};
    long status = 0;
    CURL *c = easy("GET", path, &h, NULL);
    if (!c) return 1;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK || status != 200) {
        if (cc != CURLE_OK) unreachable(cc);
        else print_error(r.data, status);
        free(r.data);
        return 1;
    }
    *data = r.data;
    *len = r.len;
    return 0;
}

/* an SSE reader that also keeps the body of a refusal, to show the server's reason */
struct stream { struct sse s; struct resp err; CURL *c; bool refused, checked; };

static size_t stream_feed(char *p, size_t sz, size_t n, void *arg)
{
    struct stream *st = arg;
    if (!st->checked) {
        long status = 0;
        curl_easy_getinfo(st->c, CURLINFO_RESPONSE_CODE, &status);
        st->refused = status != 200;
        st->checked = true;
    }
    if (st->refused) return collect(p, sz, n, &st->err);
    return sse_feed(p, sz, n, &st->s);
}

int ctl_stream(const char *path, bool (*fn)(const char *data, void *arg), void *arg,
               long timeout_ms)
{
    struct curl_slist *h = NULL;
    struct stream *st = calloc(1, sizeof *st);
    CURL *c = st ? easy("GET", path, &h, NULL) : NULL;
    if (!c) {
        free(st);
        fprintf(stderr, "berthctl: out of memory\n");
        return 1;
    }
    st->c = c;
    st->s.fn = fn;
    st->s.arg = arg;
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_feed);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
    if (timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    int rc;
    if (status && status != 200) {
        print_error(st->err.data, status);
        rc = 1;
    } else if (cc == CURLE_WRITE_ERROR && st->checked) {
        rc = 0;                         /* fn asked to stop */
    } else if (cc == CURLE_OPERATION_TIMEDOUT && status == 200) {
        rc = 4;
    } else if (cc == CURLE_OK || status == 200) {
        rc = 3;                         /* the server ended it (or the connection broke) */
    } else {
        rc = unreachable(cc);
    }
    free(st->err.data);
    free(st);
    return rc;
}

void ctl_print_json(const cJSON *j)
{
    char *s = cJSON_Print(j);
    if (s) puts(s);
    free(s);
}

const char *ctl_str(const cJSON *o, const char *k)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, k));
    return s ? s : "-";
}

double ctl_num(const cJSON *o, const char *k)
{
    const cJSON *n = cJSON_GetObjectItem(o, k);
    return cJSON_IsNumber(n) ? n->valuedouble : 0;
}

void ctl_fmt_duration(double ms, char *out, size_t n)
{
    int64_t v = (int64_t)(ms + 0.5);
    if (v < 1000) {
        snprintf(out, n, "%" PRId64 "ms", v);
        return;
    }
    if (v < 60000 && v % 1000) {
        snprintf(out, n, "%.1fs", (double)v / 1000.0);
        return;
    }
    /* whole units, largest first: 3m41s, 1h, 2h5m */
    int64_t s = v / 1000, h = s / 3600, m = s / 60 % 60, sec = s % 60;
    size_t k = 0;
    out[0] = 0;
    if (h) k += (size_t)snprintf(out + k, n - k, "%" PRId64 "h", h);
    if (m && k < n) k += (size_t)snprintf(out + k, n - k, "%" PRId64 "m", m);
    if ((sec || !k) && k < n) snprintf(out + k, n - k, "%" PRId64 "s", sec);
}

int ctl_parse_duration(const char *s, int64_t *ms)
{
    static const struct { const char *unit; int64_t mul; } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    char *end;
    if (!s || *s < '0' || *s > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit)) continue;
        if (!v || v > (unsigned long long)INT64_MAX / (unsigned long long)units[i].mul)
            return -1;
        *ms = (int64_t)v * units[i].mul;
        return 0;
    }
    return -1;
}

void ctl_fmt_bytes(double b, char *out, size_t n)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

void ctl_fmt_time(double ms, char *out, size_t n)
{
    if (ms <= 0) {
        snprintf(out, n, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M:%S", &tm);
}

void ctl_getopt_reset(void)
{
    optind = 0;         /* 0, not 1: glibc re-initialises, so permutation works again */
    opterr = 0;
}

int ctl_bad_option(const char *cmd, char **argv, int ch)
{
    const char *opt = argv[optind - 1];
    if (ch == ':')
        fprintf(stderr, "berthctl: %s: option %s needs a value\n", cmd, opt);
    else if (optopt && opt[0] == '-' && opt[1] != '-')
        fprintf(stderr, "berthctl: %s: unknown option -%c (see berthctl %s --help)\n", cmd,
                optopt, cmd);
    else
        fprintf(stderr, "berthctl: %s: unknown option %s (see berthctl %s --help)\n", cmd, opt,
                cmd);
    return 2;
}

int ctl_extra(const char *cmd, const char *arg)
{
    fprintf(stderr, "berthctl: %s: unexpected argument '%s' (see berthctl %s --help)\n", cmd,
            arg, cmd);
    return 2;
}

bool ctl_help(int argc, char **argv, const char *text)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (strcmp(argv[i], "--help") && strcmp(argv[i], "-h")) continue;
        fputs(text, stdout);
        return true;
    }
    return false;
}
