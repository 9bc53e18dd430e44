/* cron: standard five-field cron expressions (Vixie cron's syntax and day semantics) and the
 * next time one is due in a time zone. Pure functions, no allocation: a struct cron is a value. */
#ifndef LIFECYCLE_CRON_H
#define LIFECYCLE_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cron {
    uint64_t min;               /* bit m: minute m (0-59) */
    uint32_t hour;              /* bit h: hour h (0-23) */
    uint32_t dom;               /* bit d: day of month d (1-31) */
    uint16_t mon;               /* bit m: month m (1-12) */
    uint8_t dow;                /* bit d: weekday d (0-6, Sunday 0; 7 is folded into 0) */
    /* Vixie cron: when either day field starts with '*', a day must match both fields;
     * otherwise either one (0 0 1,15 * 1 runs on the 1st, the 15th and every Monday) */
    bool dom_star, dow_star;
};

/* Parses `expr`: five fields (minute hour day-of-month month day-of-week) of numbers, names
 * (jan-dec, sun-sat), ranges a-b, lists a,b, steps
 * (a star, a range or a start followed by /n; a/n is a-max/n, max 7 for weekdays), or one of
 * @yearly @annually @monthly @weekly @daily @midnight @hourly. On error returns -1, writes a
 * message to err and the 0-based offset in expr of the offending text to *col. */
int cron_parse(const char *expr, struct cron *out, char *err, size_t errlen, int *col);

/* True when tz names a zone this host can compute in: "UTC", or a file under the system's
 * zoneinfo directory (no absolute paths, no ".."). */
bool cron_tz_valid(const char *tz);

/* The first due time strictly after `after_s` (seconds since the epoch), in time zone `tz`
 * (NULL or "UTC": UTC), in seconds since the epoch; -1 when nothing matches within eight years
 * (0 0 30 2 *). A wall time skipped by a daylight-saving change runs as mktime() normalises it
 * (an hour later); a repeated one runs once, at its first occurrence.
 *
 * Other zones switch the process's TZ around localtime_r/mktime and restore it: tzset() state
 * is process-global, which is safe because berthd calls plugins on its one loop thread and its
 * worker threads do no local-time conversion. */
int64_t cron_next(const struct cron *c, const char *tz, int64_t after_s);

#endif
