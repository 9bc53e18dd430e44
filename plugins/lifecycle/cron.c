/* cron: parser of five-field cron expressions and the search for the next due time.
 *
 * The search walks the wall clock of the zone field by field (month, day, hour, minute),
 * jumping to the start of the next unit whenever one does not match, so a result costs at most
 * a few hundred cheap steps and one wall-to-epoch conversion. */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#ifndef ZONEINFO_DIR
#define ZONEINFO_DIR "/usr/share/zoneinfo"
#endif

struct field { const char *name; int lo, hi; const char *const *names; };

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct field fields[5] = {
    {"minute", 0, 59, NULL},
    {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},
    {"month", 1, 12, month_names},
    {"day of week", 0, 7, day_names},
};

struct pctx {
    const char *expr, *p;
    char *err;
    size_t errlen;
    int *col;
};

static int fail(struct pctx *c, const char *at, const char *fmt, const char *what, int a,
                int b)
{
    snprintf(c->err, c->errlen, fmt, what, a, b);
    if (c->col) *c->col = (int)(at - c->expr);
    return -1;
}

/* a number, or a name of the field (three letters, any case); -1 if neither */
static int value(struct pctx *c, const struct field *f)
{
    const char *p = c->p;
    if (isdigit((unsigned char)*p)) {
        long v = 0;
        while (isdigit((unsigned char)*p) && v < 1000) v = v * 10 + (*p++ - '0');
        if (isdigit((unsigned char)*p)) return -1;
        c->p = p;
        return (int)v;
    }
    for (int i = 0; f->names && f->names[i]; i++)
        if (!strncasecmp(p, f->names[i], 3) && !isalpha((unsigned char)p[3])) {
            c->p = p + 3;
            return i + f->lo;           /* jan is 1, sun is 0 */
        }
    return -1;
}

/* one list element: '*', v, v-v, with an optional /step */
static int element(struct pctx *c, const struct field *f, uint64_t *bits, bool first,
                   bool *star)
{
    const char *at = c->p;
    int lo, hi;
    bool range = false;
    if (*c->p == '*') {
        c->p++;
        lo = f->lo, hi = f->hi == 7 ? 6 : f->hi;
        range = true;
        if (first) *star = true;
    } else {
        if ((lo = value(c, f)) < 0)
            return fail(c, at, "%s: expected a number, a name or '*'", f->name, 0, 0);
        hi = lo;
        if (*c->p == '-') {
            c->p++;
            const char *h = c->p;
            if ((hi = value(c, f)) < 0)
                return fail(c, h, "%s: expected the end of the range", f->name, 0, 0);
            range = true;
        }
        if (lo < f->lo || lo > f->hi || hi < f->lo || hi > f->hi)
            return fail(c, at, "%s: out of range %d-%d", f->name, f->lo, f->hi);
        if (hi < lo) return fail(c, at, "%s: range runs backwards", f->name, 0, 0);
    }
    int step = 1;
    if (*c->p == '/') {
        const char *s = ++c->p;
        long v = 0;
        while (isdigit((unsigned char)*c->p) && v < 1000) v = v * 10 + (*c->p++ - '0');
        if (c->p == s || v < 1 || v > f->hi)
            return fail(c, s, "%s: the step must be 1-%d", f->name, f->hi, 0);
        step = (int)v;
        /* a/n runs from a to the field's end, which for weekdays is 7: 1/2 is mon, wed,
         * fri and sun, as in cronie and croniter (a-7/n the same) */
        if (!range) hi = f->hi;
    }
    for (int v = lo; v <= hi; v += step) *bits |= 1ull << (v == 7 && f->hi == 7 ? 0 : v);
    return 0;
}

static int field(struct pctx *c, int i, uint64_t *bits, bool *star)
{
    const struct field *f = &fields[i];
    *bits = 0;
    *star = false;
    if (!*c->p) return fail(c, c->p, "%s: missing (a cron expression has five fields)",
                            f->name, 0, 0);
    for (bool first = true;; first = false) {
        if (element(c, f, bits, first, star) < 0) return -1;
        if (*c->p == ',') {
            c->p++;
            continue;
        }
        if (!*c->p || *c->p == ' ' || *c->p == '\t') return 0;
        return fail(c, c->p, "%s: unexpected character '%c'", f->name, *c->p, 0);
    }
}

static const struct { const char *name, *expr; } aliases[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"}, {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static int parse_alias(const char *expr, struct cron *out, char *err, size_t errlen, int *col)
{
    size_t n = strcspn(expr, " \t");
    for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
        if (strlen(aliases[i].name) == n && !strncasecmp(expr, aliases[i].name, n)) {
            if (expr[n + strspn(expr + n, " \t")]) break;
            return cron_parse(aliases[i].expr, out, err, errlen, NULL);
        }
    snprintf(err, errlen, "unknown alias '%.*s' (@yearly @monthly @weekly @daily @hourly)",
             (int)(n > 20 ? 20 : n), expr);
    if (col) *col = 0;
    return -1;
}

int cron_parse(const char *expr, struct cron *out, char *err, size_t errlen, int *col)
{
    const char *s = expr + strspn(expr, " \t");
    *out = (struct cron){0};
    if (*s == '@') return parse_alias(s, out, err, errlen, col);
    struct pctx c = {.expr = expr, .p = s, .err = err, .errlen = errlen, .col = col};
    uint64_t bits[5];
    bool star[5];
    for (int i = 0; i < 5; i++) {
        if (field(&c, i, &bits[i], &star[i]) < 0) return -1;
        c.p += strspn(c.p, " \t");
    }
    if (*c.p) return fail(&c, c.p, "%s: too many fields (a cron expression has five)",
                          "expression", 0, 0);
    out->min = bits[0];
    out->hour = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->mon = (uint16_t)bits[3];
    out->dow = (uint8_t)bits[4];
    out->dom_star = star[2];
    out->dow_star = star[4];
    return 0;
}

bool cron_tz_valid(const char *tz)
{
    if (!tz || !*tz || !strcmp(tz, "UTC")) return true;
    if (tz[0] == '/' || strstr(tz, "..") || strlen(tz) > 200) return false;
    for (const char *p = tz; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("/_-+", *p)) return false;
    char path[256];
    snprintf(path, sizeof path, "%s/%s", ZONEINFO_DIR, tz);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- the search, on a broken-down wall time ---- */

struct wall { int y, mon, d, h, min; };   /* mon 1-12 */

static bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in(int y, int m)
{
    static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : n[m - 1];
}

/* Sakamoto's method: 0 is Sunday */
static int weekday(int y, int m, int d)
{
    static const int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
    if (m < 3) y--;
    return (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;
}

static bool day_ok(const struct cron *c, const struct wall *w)
{
    bool dom = c->dom >> w->d & 1, dow = c->dow >> weekday(w->y, w->mon, w->d) & 1;
    return c->dom_star || c->dow_star ? dom && dow : dom || dow;
}

static void next_month(struct wall *w)
{
    w->d = 1, w->h = 0, w->min = 0;
    if (++w->mon > 12) w->mon = 1, w->y++;
}

static void next_day(struct wall *w)
{
    w->h = 0, w->min = 0;
    if (++w->d > days_in(w->y, w->mon)) next_month(w);
}

/* the first matching wall minute at or after *w; false past `limit_year` */
static bool search(const struct cron *c, struct wall *w, int limit_year)
{
    while (w->y <= limit_year) {
        if (!(c->mon >> w->mon & 1)) next_month(w);
        else if (!day_ok(c, w)) next_day(w);
        else if (!(c->hour >> w->h & 1)) {
            w->min = 0;
            if (++w->h > 23) next_day(w);
        } else if (!(c->min >> w->min & 1)) {
            if (++w->min > 59) {
                w->min = 0;
                if (++w->h > 23) next_day(w);
            }
        } else return true;
    }
    return false;
}

static bool is_utc(const char *tz) { return !tz || !*tz || !strcmp(tz, "UTC"); }

/* Runs the conversions with TZ set to `tz` (see cron.h for why this is safe in berthd). */
struct tzswap { char *saved; bool had, swapped; };

static void tz_enter(struct tzswap *s, const char *tz)
{
    *s = (struct tzswap){0};
    if (is_utc(tz)) return;
    const char *cur = getenv("TZ");
    s->had = cur != NULL;
    s->saved = cur ? strdup(cur) : NULL;
    char spec[256];
    snprintf(spec, sizeof spec, ":%s", tz);
    setenv("TZ", spec, 1);
    tzset();
    s->swapped = true;
}

static void tz_leave(struct tzswap *s)
{
    if (!s->swapped) return;
    if (s->had && s->saved) setenv("TZ", s->saved, 1);
    else unsetenv("TZ");
    free(s->saved);
    tzset();
}

static void to_wall(int64_t t, bool utc, struct wall *w)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (utc) gmtime_r(&tt, &tm);
    else localtime_r(&tt, &tm);
    *w = (struct wall){tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min};
}

static bool same_wall(const struct wall *a, const struct wall *b)
{
    return a->y == b->y && a->mon == b->mon && a->d == b->d && a->h == b->h &&
           a->min == b->min;
}

/* The instant of a wall time. One a fall-back repeats has two: the first is the run (mktime
 * with tm_isdst -1 picks either, glibc the later). One a spring-forward skips has none:
 * mktime normalises it, an hour later. */
static int64_t from_wall(const struct wall *w, bool utc)
{
    struct tm tm = {.tm_year = w->y - 1900, .tm_mon = w->mon - 1, .tm_mday = w->d,
                    .tm_hour = w->h, .tm_min = w->min, .tm_isdst = -1};
    if (utc) return (int64_t)timegm(&tm);
    int64_t first = -1;
    for (int dst = 0; dst <= 1; dst++) {
        struct tm c = tm;
        c.tm_isdst = dst;
        time_t t = mktime(&c);
        struct wall back;
        if (t == (time_t)-1) continue;
        to_wall((int64_t)t, false, &back);
        if (same_wall(&back, w) && (first < 0 || t < first)) first = (int64_t)t;
    }
    return first >= 0 ? first : (int64_t)mktime(&tm);
}

int64_t cron_next(const struct cron *c, const char *tz, int64_t after_s)
{
    bool utc = is_utc(tz);
    struct tzswap sw;
    tz_enter(&sw, tz);
    struct wall w;
    /* the next whole minute after `after_s` */
    to_wall(after_s - (after_s % 60 + 60) % 60 + 60, utc, &w);
    int limit = w.y + 8;
    int64_t r = -1;
    while (search(c, &w, limit)) {
        int64_t t = from_wall(&w, utc);
        if (t > after_s) {
            r = t;
            break;
        }
        /* a wall time repeated by a daylight-saving change maps before `after`: go on */
        if (++w.min > 59) {
            w.min = 0;
            if (++w.h > 23) next_day(&w);
        }
    }
    tz_leave(&sw);
    return r;
}
