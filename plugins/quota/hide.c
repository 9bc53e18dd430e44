/* The usage chunk a client did not ask for. To meter a streamed OpenAI chat call the proxy
 * sets `stream_options.include_usage`, which makes the upstream send, before `data: [DONE]`,
 * one more chunk whose `choices` is empty and whose `usage` is the call's. The reference
 * promises that chunk only to a client that asked for it, and a client that did not may
 * read `choices[0]` of every chunk; so it is taken out of the relayed stream (after the
 * meter has read it). The `"usage": null` the other chunks then carry is left as sent: a
 * field the SDKs' types declare nullable.
 *
 * The relay goes event by event for every SSE stream, hidden chunk or not: whole events pass
 * at once, a partial one waits for its end (or for the stream's end: hide_flush). So an
 * upstream cut inside an event leaves the client no half event for the error event written
 * after the cut to join (stream_error in proxy.c), which would leave an SDK reading neither. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define HIDE_EVENT_MAX (4u << 20)   /* an event larger than this is passed on unread */

static bool grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t n = need * 2;
    char *q = realloc(*p, n);
    if (!q) return false;
    *p = q;
    *cap = n;
    return true;
}

/* is this event (its lines, without the blank one) the usage chunk? */
static bool usage_chunk(const char *ev, size_t len)
{
    if (!memmem(ev, len, "\"usage\"", 7)) return false;
    const char *d = memmem(ev, len, "data:", 5);
    if (!d) return false;
    d += 5;
    cJSON *j = cJSON_ParseWithLength(d, len - (size_t)(d - ev));
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(j, "choices");
    bool hit = cJSON_IsArray(ch) && !cJSON_GetArraySize(ch) &&
               cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(j, "usage"));
    cJSON_Delete(j);
    return hit;
}

/* the end of the first event in b (after its blank line), or 0 */
static size_t next_event(const char *b, size_t n, size_t *body)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (b[i] != '\n') continue;
        if (b[i + 1] == '\n') { *body = i; return i + 2; }
        if (b[i + 1] == '\r' && i + 2 < n && b[i + 2] == '\n') { *body = i; return i + 3; }
    }
    return 0;
}

/* the end of the last whole event in b, or 0 */
static size_t last_event_end(const char *b, size_t n)
{
    for (size_t i = n; i >= 2; i--) {
        if (b[i - 1] != '\n') continue;
        if (b[i - 2] == '\n' || (i >= 3 && b[i - 2] == '\r' && b[i - 3] == '\n')) return i;
    }
    return 0;
}

/* Nothing to hide and nothing held: the whole events of data pass without a copy, the rest is
 * kept. Upstreams flush event by event, so most reads take this path and a held stream owns
 * no buffer at all. */
static bool pass_whole(struct hide *h, const char *data, size_t len, const char **out,
                       size_t *n)
{
    size_t cut = last_event_end(data, len);
    if (cut < len) {
        if (!grow(&h->buf, &h->cap, len - cut)) return false;
        memcpy(h->buf, data + cut, len - cut);
    }
    h->len = h->scanned = len - cut;
    *out = data;
    *n = cut;
    return true;
}

size_t hide_usage(struct hide *h, const char *data, size_t len, const char **out,
                  bool drop_usage)
{
    h->out_len = 0;
    *out = data;
    size_t n;
    if (!drop_usage && !h->len && !h->passthrough && pass_whole(h, data, len, out, &n))
        return n;
    if (h->passthrough || h->len + len > HIDE_EVENT_MAX) {    /* too large to be usage */
        h->passthrough = true;
        if (!h->len) return len;
        if (!grow(&h->out, &h->out_cap, h->len + len)) return len;
        memcpy(h->out, h->buf, h->len);
        memcpy(h->out + h->len, data, len);
        len += h->len;
        h->len = h->scanned = 0;
        *out = h->out;
        return len;
    }
    if (!grow(&h->buf, &h->cap, h->len + len) || !grow(&h->out, &h->out_cap, h->len + len))
        return len;             /* out of memory: the bytes pass as they are */
    memcpy(h->buf + h->len, data, len);
    h->len += len;
    /* resume the scan where the last stopped (less the 2 bytes an event's end may have begun
     * with): an event in many small reads costs linear time, not quadratic */
    size_t off = 0, end, body, from = h->scanned > 2 ? h->scanned - 2 : 0;
    while ((end = next_event(h->buf + from, h->len - from, &body))) {
        if (!drop_usage || !usage_chunk(h->buf + off, from - off + body)) {
            memcpy(h->out + h->out_len, h->buf + off, from - off + end);
            h->out_len += from - off + end;
        }
        off = from = from + end;
    }
    memmove(h->buf, h->buf + off, h->len - off);
    h->len -= off;
    h->scanned = h->len;
    *out = h->out;
    return h->out_len;
}

size_t hide_flush(struct hide *h, const char **out)
{
    *out = h->buf;
    size_t n = h->len;
    h->len = h->scanned = 0;
    return n;
}

void hide_free(struct hide *h)
{
    free(h->buf);
    free(h->out);
    memset(h, 0, sizeof *h);
}
