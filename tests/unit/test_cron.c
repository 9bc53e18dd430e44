/* The lifecycle plugin's cron parser: syntax, errors with their column, Vixie cron's day
 * semantics and time zones (the wide comparison with croniter is test_cron_oracle.py). */
#include "cron.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t at(int y, int mon, int d, int h, int min)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = min};
    return (int64_t)timegm(&tm);
}

static int64_t next(const char *expr, const char *tz, int64_t after)
{
    struct cron c;
    char err[160];
    int col;
    if (cron_parse(expr, &c, err, sizeof err, &col) < 0) return -2;
    return cron_next(&c, tz, after);
}

static int err_col(const char *expr, const char *want)
{
    struct cron c;
    char err[160] = "";
    int col = -1;
    if (cron_parse(expr, &c, err, sizeof err, &col) == 0) return -2;
    if (want && !strstr(err, want)) {
        fprintf(stderr, "'%s': message '%s' lacks '%s'\n", expr, err, want);
        return -3;
    }
    return col;
}

int main(void)
{
    int64_t t0 = at(2026, 11, 22, 3, 7);        /* a Sunday */
    CHECK(next("*/15 * * * *", NULL, t0) == at(2026, 11, 22, 3, 15));
    CHECK(next("*/15 * * * *", NULL, at(2026, 11, 22, 3, 15)) == at(2026, 11, 22, 3, 30));
    CHECK(next("@hourly", "UTC", t0) == at(2026, 11, 22, 4, 0));
    CHECK(next("@daily", NULL, t0) == at(2026, 11, 23, 0, 0));
    CHECK(next("@weekly", NULL, t0) == at(2026, 11, 29, 0, 0));
    CHECK(next("@monthly", NULL, t0) == at(2026, 12, 1, 0, 0));
    CHECK(next("@yearly", NULL, t0) == at(2027, 1, 1, 0, 0));
    CHECK(next("30 9 * jan-mar mon-fri", NULL, t0) == at(2027, 1, 1, 9, 30));
    CHECK(next("0 0 29 2 *", NULL, t0) == at(2028, 2, 29, 0, 0));
    CHECK(next("0 0 30 2 *", NULL, t0) == -1);
    CHECK(next("0 12 * * 7", NULL, t0) == at(2026, 11, 22, 12, 0));     /* 7 is Sunday */
    /* Vixie: both day fields restricted -> either; one starting with '*' -> both */
    CHECK(next("0 0 1,15 * mon", NULL, t0) == at(2026, 11, 23, 0, 0));
    CHECK(next("0 0 */2 * tue", NULL, t0) == at(2026, 12, 1, 0, 0));   /* odd day, Tuesday */
    CHECK(next("0 0 1 * *", NULL, t0) == at(2026, 12, 1, 0, 0));
    CHECK(next("5/20 * * * *", NULL, t0) == at(2026, 11, 22, 3, 25));
    /* a weekday's a/n runs to 7, Sunday: 5/2 is Friday and Sunday */
    CHECK(next("0 0 * * 5/2", NULL, at(2026, 11, 27, 1, 0)) == at(2026, 11, 29, 0, 0));
    /* zones: 09:00 in Berlin (UTC+1 in November) and in Kolkata (UTC+5:30) */
    CHECK(next("0 9 * * *", "Europe/Berlin", t0) == at(2026, 11, 22, 8, 0));
    CHECK(next("0 9 * * *", "Asia/Kolkata", t0) == at(2026, 11, 22, 3, 30));
    /* the spring-forward gap in Berlin (02:30 does not exist on 2026-03-29) runs an hour on */
    CHECK(next("30 2 * * *", "Europe/Berlin", at(2026, 3, 28, 12, 0)) ==
          at(2026, 3, 29, 1, 30));
    /* the fall-back in Berlin repeats 02:30 on 2026-10-25: it runs once, at the first */
    CHECK(next("30 2 * * *", "Europe/Berlin", at(2026, 10, 24, 12, 0)) ==
          at(2026, 10, 25, 0, 30));
    CHECK(next("30 2 * * *", "Europe/Berlin", at(2026, 10, 25, 0, 30)) ==
          at(2026, 10, 26, 1, 30));
    CHECK(next("30 2 * * *", "Europe/Berlin", at(2026, 10, 25, 1, 10)) ==
          at(2026, 10, 26, 1, 30));
    CHECK(next("*/30 * * * *", "Europe/Berlin", at(2026, 10, 25, 0, 30)) ==
          at(2026, 10, 25, 2, 0));      /* the repeated hour's wall times ran already */
    /* the process's TZ is restored */
    setenv("TZ", "America/New_York", 1);
    tzset();
    next("0 9 * * *", "Asia/Kolkata", t0);
    CHECK(getenv("TZ") && !strcmp(getenv("TZ"), "America/New_York"));
    CHECK(cron_tz_valid("UTC") && cron_tz_valid("Europe/Berlin"));
    CHECK(!cron_tz_valid("Mars/Olympus") && !cron_tz_valid("../etc/passwd") &&
          !cron_tz_valid("/etc/localtime"));

    CHECK(err_col("61 * * * *", "minute: out of range") == 0);
    CHECK(err_col("0 24 * * *", "hour: out of range") == 2);
    CHECK(err_col("0 0 * foo *", "month") == 6);
    CHECK(err_col("0 0 * * * *", "too many fields") == 10);
    CHECK(err_col("0 0 *", "month: missing") == 5);
    CHECK(err_col("*/0 * * * *", "step") == 2);
    CHECK(err_col("5-1 * * * *", "backwards") == 0);
    CHECK(err_col("1,,2 * * * *", "minute") == 2);
    CHECK(err_col("@reboot", "unknown alias") == 0);
    CHECK(err_col("", "minute: missing") == 0);
    return unit_report("test_cron");
}
