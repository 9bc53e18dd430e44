/* dockerd's event stream, split into lines and read; see docker_events.h. */
#include "docker_events.h"

#include <stdlib.h>
#include <string.h>

bool dk_lines_feed(struct dk_lines *l, const char *data, size_t len,
                   void (*fn)(const char *line, size_t len, void *arg), void *arg)
{
    if (len > DK_LINE_MAX || l->len + len > 2 * (size_t)DK_LINE_MAX) return false;
    char *b = realloc(l->buf, l->len + len + 1);
    if (!b) return false;
    l->buf = b;
    memcpy(b + l->len, data, len);
    l->len += len;
    size_t start = 0;
    char *nl;
    while ((nl = memchr(b + start, '\n', l->len - start))) {
        size_t n = (size_t)(nl - (b + start));
        *nl = 0;
        fn(b + start, n, arg);
        start += n + 1;
    }
    l->len -= start;
    memmove(b, b + start, l->len);
    b[l->len] = 0;
    return l->len <= DK_LINE_MAX;
}

void dk_lines_reset(struct dk_lines *l)
{
    free(l->buf);
    l->buf = NULL;
    l->len = 0;
}

static const char *str(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItem(o, key));
}

bool dk_event_parse(const cJSON *m, struct dk_event *ev)
{
    const cJSON *actor = cJSON_GetObjectItem(m, "Actor");
    const cJSON *attrs = cJSON_GetObjectItem(actor, "Attributes");
    *ev = (struct dk_event){
        .type = str(m, "Type"), .action = str(m, "Action"), .id = str(actor, "ID"),
        .tenant = str(attrs, "berth.tenant"), .instance = str(attrs, "berth.instance"),
        .exit_code = str(attrs, "exitCode"),
    };
    return ev->type && !strcmp(ev->type, "container") && ev->action && ev->id && ev->tenant &&
           ev->instance;
}
