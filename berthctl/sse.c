/* Splits an SSE stream into lines; see sse.h. */
#include "sse.h"

#include <string.h>

size_t sse_feed(char *p, size_t sz, size_t n, void *arg)
{
    struct sse *s = arg;
    for (size_t i = 0; i < sz * n; i++) {
        if (p[i] != '\n') {
            if (s->len < sizeof s->line - 1) s->line[s->len++] = p[i];
            continue;
        }
        s->line[s->len] = 0;
        s->len = 0;
        if (!strncmp(s->line, "data: ", 6) && !s->fn(s->line + 6, s->arg)) return 0;
    }
    return sz * n;
}
