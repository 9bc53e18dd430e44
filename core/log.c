/* Logging to stderr: one line per message, text for people or JSON for collectors. The
 * component (core, plugin:<instance>) is added here so plugins never format their own prefix. */
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static enum berth_log_level min_level = BERTH_LOG_INFO;
static bool as_json;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_configure(enum berth_log_level level, bool json)
{
    min_level = level;
    as_json = json;
}

bool log_enabled(enum berth_log_level level)
{
    return level >= min_level;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i])) return i;
    return -1;
}

/* stderr is journald's stream (systemd sets JOURNAL_STREAM to its device:inode): lines then
 * start with a syslog priority, <6>, and carry no timestamp, which the journal adds */
static bool to_journal(void)
{
    static int known = -1;
    if (known >= 0) return known;
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    known = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
            (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return known;
}

void blogv(enum berth_log_level lvl, const char *component, const char *fmt, va_list ap)
{
    if (lvl < min_level) return;
    char msg[4096], ts[40];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (!as_json && to_journal()) {
        static const int prio[] = {7, 6, 4, 3};
        fprintf(stderr, "<%d>[%s] %s\n", prio[lvl], component, msg);
        return;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t k = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + k, sizeof ts - k, ".%03ldZ", now.tv_nsec / 1000000);
    if (as_json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "ts", ts);
        cJSON_AddStringToObject(o, "level", level_names[lvl]);
        cJSON_AddStringToObject(o, "component", component);
        cJSON_AddStringToObject(o, "msg", msg);
        char *line = cJSON_PrintUnformatted(o);
        fprintf(stderr, "%s\n", line);
        cJSON_free(line);
        cJSON_Delete(o);
    } else {
        fprintf(stderr, "%s %-5s [%s] %s\n", ts, level_names[lvl], component, msg);
    }
}

void blog(enum berth_log_level lvl, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    blogv(lvl, component, fmt, ap);
    va_end(ap);
}
