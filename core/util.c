/* Small helpers: allocation, strings, parsing of durations and sizes, handle validation. */
#include "core.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Out of memory in a supervisor has no graceful answer: abort loudly (as Redis does). */
static void oom(void)
{
    fputs("berth: out of memory\n", stderr);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom();
    return p;
}

void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom();
    return p;
}

char *xstrdup(const char *s)
{
    return s ? xstrndup(s, strlen(s)) : NULL;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    /* gcc's -Wformat-truncation, with UBSan's checks inlined at -O2, sees a path where fmt
     * is NULL and fails the build under -Werror: give that path an answer of its own */
    if (!fmt) return xstrdup("");
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return xstrdup("");
    char *p = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, on the loop. */
int open_regular(const char *path, struct stat *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return -1;
    if (fstat(fd, st) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return -2;
    }
    return fd;
}

int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A handle becomes a container name, a path, a subdomain and a Matrix localpart: a DNS label,
 * lower case, 2..32 characters, no leading digit or hyphen, no trailing hyphen. */
bool handle_valid(const char *h)
{
    if (!h) return false;
    size_t n = strlen(h);
    if (n < 2 || n > 32 || !(h[0] >= 'a' && h[0] <= 'z') || h[n - 1] == '-') return false;
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= '0' && h[i] <= '9') || h[i] == '-'))
            return false;
    return true;
}

bool ident_valid(const char *s)
{
    if (!s || !*s || strlen(s) > 64 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return false;
    return true;
}

static int parse_uint(const char **s, uint64_t *v)
{
    const char *p = *s;
    if (!isdigit((unsigned char)*p)) return -1;
    uint64_t x = 0;
    while (isdigit((unsigned char)*p)) {
        if (x > (UINT64_MAX - 9) / 10) return -1;
        x = x * 10 + (uint64_t)(*p++ - '0');
    }
    *s = p;
    *v = x;
    return 0;
}

int parse_duration(const char *s, int64_t *ms)
{
    uint64_t v;
    const char *p = s;
    if (!s || parse_uint(&p, &v) < 0) return -1;
    uint64_t mul;
    if (!*p) mul = v == 0 ? 1 : 0;           /* a bare number is ambiguous, except 0 */
    else if (!strcmp(p, "ms")) mul = 1;
    else if (!strcmp(p, "s")) mul = 1000;
    else if (!strcmp(p, "m")) mul = 60000;
    else if (!strcmp(p, "h")) mul = 3600000;
    else if (!strcmp(p, "d")) mul = 86400000;
    else return -1;
    if (!mul || v > (uint64_t)INT64_MAX / mul) return -1;
    *ms = (int64_t)(v * mul);
    return 0;
}

int parse_size(const char *s, uint64_t *bytes)
{
    uint64_t v;
    const char *p = s;
    if (!s || parse_uint(&p, &v) < 0) return -1;
    uint64_t mul = 1;
    char u = (char)tolower((unsigned char)*p);
    if (u) {
        if (u == 'k') mul = 1ull << 10;
        else if (u == 'm') mul = 1ull << 20;
        else if (u == 'g') mul = 1ull << 30;
        else if (u == 't') mul = 1ull << 40;
        else return -1;
        p++;
        if (*p == 'b' || *p == 'B') p++;
        if (*p) return -1;
    }
    if (v > UINT64_MAX / mul) return -1;
    *bytes = v * mul;
    return 0;
}

void fmt_duration(int64_t ms, char *out, size_t n)
{
    if (ms % 86400000 == 0 && ms) snprintf(out, n, "%" PRId64 "d", ms / 86400000);
    else if (ms % 3600000 == 0 && ms) snprintf(out, n, "%" PRId64 "h", ms / 3600000);
    else if (ms % 60000 == 0 && ms) snprintf(out, n, "%" PRId64 "m", ms / 60000);
    else if (ms % 1000 == 0) snprintf(out, n, "%" PRId64 "s", ms / 1000);
    else snprintf(out, n, "%" PRId64 "ms", ms);
}

/* Compares a secret without an early exit, so timing tells nothing of the prefix matched. */
bool ct_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++) d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
    return d == 0 && la > 0;
}

int levenshtein(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (a[i - 1] != b[j - 1]);
            int del = row[j] + 1, ins = row[j - 1] + 1;
            row[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
            prev = cur;
        }
    }
    return row[lb];
}

void buf_add(struct buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
}

void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* one formatting pass when the text fits the room left (most calls): a second only to grow */
void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    buf_add(b, NULL, 0);
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->p[b->len] = 0;
        return;
    }
    if ((size_t)n < b->cap - b->len) {
        b->len += (size_t)n;
        return;
    }
    size_t cap = b->cap;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF), or 0 if there is none. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (!len || s[0] > 0xf4 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (s[0] == 0xe0 && s[1] < 0xa0) return 0;      /* overlong */
    if (s[0] == 0xed && s[1] >= 0xa0) return 0;     /* surrogate */
    if (s[0] == 0xf0 && s[1] < 0x90) return 0;      /* overlong */
    if (s[0] == 0xf4 && s[1] >= 0x90) return 0;     /* above U+10FFFF */
    return len;
}

bool utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i);
        if (!l) return false;
        i += l;
    }
    return true;
}

/* A copy of s (caller frees) with each invalid byte replaced by U+FFFD: cJSON prints strings
 * byte for byte, so a plugin's or an upstream's text in an answer or an event would otherwise
 * make it invalid JSON. */
char *utf8_repaired(const char *s)
{
    size_t n = strlen(s);
    if (utf8_valid(s, n)) return xstrdup(s);
    struct buf b = {0};
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)s + i, n - i);
        if (l) buf_add(&b, s + i, l);
        else buf_adds(&b, "\xef\xbf\xbd");
        i += l ? l : 1;
    }
    buf_add(&b, "", 1);
    return b.p;
}

/* Invalid bytes become U+FFFD, so an answer that echoes client input is still JSON. */
void buf_json_escape(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)s[i];
        size_t l = utf8_seq((const unsigned char *)s + i, n - i);
        if (!l) {
            buf_adds(b, "\xef\xbf\xbd");
            i++;
        } else if (ch == '"' || ch == '\\') {
            buf_printf(b, "\\%c", ch);
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            buf_printf(b, "\\u%04x", ch);
            i++;
        } else {
            buf_add(b, s + i, l);
            i += l;
        }
    }
}

static int hex4(const char *s, size_t n)
{
    if (n < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One escape after a backslash at s[0]; returns its length, or 0 if it would not decode to
 * a whole string: cJSON stops a string at an escaped NUL and keeps a lone surrogate. */
static size_t escape_ok(const char *s, size_t n, const char **why)
{
    if (n < 2) return 0;
    if (s[1] != 'u') return 2;
    int v = hex4(s + 2, n - 2);
    if (v < 0) return 2;                /* a syntax error: cJSON reports it */
    if (v == 0) {
        *why = "a string contains \\u0000";
        return 0;
    }
    if (v >= 0xdc00 && v <= 0xdfff) {
        *why = "a string contains an unpaired surrogate";
        return 0;
    }
    if (v < 0xd800 || v > 0xdbff) return 6;
    int lo = n >= 8 && s[6] == '\\' && s[7] == 'u' ? hex4(s + 8, n - 8) : -1;
    if (lo < 0xdc00 || lo > 0xdfff) {
        *why = "a string contains an unpaired surrogate";
        return 0;
    }
    return 12;
}

int json_text_check(const char *s, size_t n, char *err, size_t len)
{
    const char *why = NULL;
    if (!utf8_valid(s, n)) why = "the body is not valid UTF-8";
    bool in_str = false;
    for (size_t i = 0; !why && i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!in_str) {
            in_str = ch == '"';
            if (!ch) why = "the body contains a NUL byte";
        } else if (ch == '"') {
            in_str = false;
        } else if (ch < 0x20) {
            why = "a string contains a raw control character";
        } else if (ch == '\\') {
            size_t l = escape_ok(s + i, n - i, &why);
            if (l) i += l - 1;
        }
    }
    if (!why) return 0;
    snprintf(err, len, "%s; every string must be whole, valid UTF-8", why);
    return BERTH_EINVAL;
}

/* ---- a flat JSON object, recognised without a tree ---- */

static const char *flat_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    return s;
}

static const char *flat_digits(const char *s)
{
    if (*s < '0' || *s > '9') return NULL;
    while (*s >= '0' && *s <= '9') s++;
    return s;
}

/* a string without escapes: one with a backslash is left to the full parser */
static const char *flat_string(const char *s)
{
    if (*s++ != '"') return NULL;
    for (; *s != '"'; s++)
        if ((unsigned char)*s < 0x20 || *s == '\\') return NULL;
    return s + 1;
}

static const char *flat_value(const char *s)
{
    if (*s == '"') return flat_string(s);
    if (!strncmp(s, "true", 4) || !strncmp(s, "null", 4)) return s + 4;
    if (!strncmp(s, "false", 5)) return s + 5;
    if (*s == '-') s++;
    if (*s == '0') s++;
    else if (!(s = flat_digits(s))) return NULL;
    if (*s == '.' && !(s = flat_digits(s + 1))) return NULL;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        s = flat_digits(s);
    }
    return s;
}

bool json_flat_object(const char *s)
{
    s = flat_ws(s);
    if (*s++ != '{') return false;
    s = flat_ws(s);
    if (*s == '}') return !*flat_ws(s + 1);
    for (;;) {
        if (!(s = flat_string(s))) return false;
        s = flat_ws(s);
        if (*s++ != ':') return false;
        if (!(s = flat_value(flat_ws(s)))) return false;
        s = flat_ws(s);
        if (*s == '}') return !*flat_ws(s + 1);
        if (*s++ != ',') return false;
        s = flat_ws(s);
    }
}

/* A percent-encoded URL part decodes to text without NUL or invalid UTF-8. */
bool pct_text_valid(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    size_t o = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        int h = -1;
        if (s[i] == '%' && i + 2 < n) {
            char hx[5] = {'0', '0', s[i + 1], s[i + 2], 0};
            h = hex4(hx, 4);
        }
        if (s[i] == '%' && h >= 0) {
            ok = h != 0;
            d[o++] = (char)h;
            i += 2;
        } else {
            d[o++] = s[i];
        }
    }
    ok = ok && utf8_valid(d, o);
    free(d);
    return ok;
}
