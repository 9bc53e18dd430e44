/* cron_tool: the lifecycle plugin's cron parser on the command line, for the oracle test
 * (test_cron_oracle.py). Each stdin line "TZ<tab>AFTER<tab>EXPR" gives one output line: the
 * next due time in seconds since the epoch, "none", or "error COL MESSAGE". */
#include "cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char line[1024];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *tz = line, *after = strchr(tz, '\t'), *expr = after ? strchr(after + 1, '\t')
                                                                  : NULL;
        if (!expr) {
            printf("error 0 malformed input line\n");
            continue;
        }
        *after++ = 0;
        *expr++ = 0;
        struct cron c;
        char err[160];
        int col = 0;
        if (cron_parse(expr, &c, err, sizeof err, &col) < 0) {
            printf("error %d %s\n", col, err);
            continue;
        }
        int64_t n = cron_next(&c, tz, strtoll(after, NULL, 10));
        if (n < 0) printf("none\n");
        else printf("%lld\n", (long long)n);
    }
    return 0;
}
