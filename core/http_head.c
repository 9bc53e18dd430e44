/* What berth's own HTTP client (http_conn.c) sends: the URL taken apart, and the request
 * head. A caller's header cannot smuggle a second request or header in (no CR/LF, names are
 * tokens), and the body's framing is the client's, never the caller's. */
#include "http_call.h"

#include <http_parser.h>
#include <string.h>
#include <strings.h>

static bool token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (*s <= ' ' || *s >= 127 || strchr("()<>@,;:\\\"/[]?={}", *s)) return false;
    return true;
}

static bool line_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

bool http_target_parse(const char *s, struct http_target *u)
{
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    size_t len = strlen(s);
    if (strncasecmp(s, "http://", 7) || http_parser_parse_url(s, len, 0, &pu) ||
        !(pu.field_set & (1 << UF_HOST)) || (pu.field_set & (1 << UF_USERINFO)) ||
        pu.field_data[UF_HOST].len >= sizeof u->host)
        return false;
    memcpy(u->host, s + pu.field_data[UF_HOST].off, pu.field_data[UF_HOST].len);
    u->host[pu.field_data[UF_HOST].len] = 0;
    u->port = pu.field_set & (1 << UF_PORT) ? pu.port : 80;
    u->auth = s + 7;
    u->alen = strcspn(u->auth, "/?#");
    u->target = u->auth + u->alen;
    u->tlen = strcspn(u->target, "#");
    for (size_t i = 0; i < u->tlen; i++)
        if ((unsigned char)u->target[i] <= ' ' || u->target[i] == 127) return false;
    return true;
}

static void add_line(struct buf *b, const char *name, const char *v, size_t vlen)
{
    buf_adds(b, name);
    buf_add(b, ": ", 2);
    buf_add(b, v, vlen);
    buf_add(b, "\r\n", 2);
}

/* request line, the caller's headers but the framing ones, Host from the URL unless given,
 * the framing, Accept unless given; in one allocation */
bool http_head_build(struct buf *b, const char *method, const struct http_target *u,
                     const struct berth_header *hdrs, int64_t framing, bool *close)
{
    if (!token(method)) return false;
    size_t need = strlen(method) + u->tlen + u->alen + 96;
    for (const struct berth_header *h = hdrs; h && h->name; h++)
        need += strlen(h->name) + (h->value ? strlen(h->value) : 0) + 4;
    b->p = xmalloc(need);       /* buf_add grows it if ever short */
    b->cap = need;
    buf_adds(b, method);
    buf_add(b, " /", u->tlen && *u->target == '/' ? 1 : 2);
    buf_add(b, u->target, u->tlen);
    buf_adds(b, " HTTP/1.1\r\n");
    bool host = false, accept = false;
    for (const struct berth_header *h = hdrs; h && h->name; h++) {
        const char *v = h->value ? h->value : "";
        if (!token(h->name) || !line_safe(v)) return false;
        if (!strcasecmp(h->name, "content-length") || !strcasecmp(h->name, "transfer-encoding"))
            continue;
        if (!strcasecmp(h->name, "host")) host = true;
        if (!strcasecmp(h->name, "accept")) accept = true;
        if (!strcasecmp(h->name, "connection") && strcasestr(v, "close")) *close = true;
        add_line(b, h->name, v, strlen(v));
    }
    if (!host) add_line(b, "Host", u->auth, u->alen);
    char n[24];
    if (framing == HEAD_CHUNKED) add_line(b, "Transfer-Encoding", "chunked", 7);
    else if (framing >= 0)
        add_line(b, "Content-Length", n, (size_t)snprintf(n, sizeof n, "%" PRId64, framing));
    else if (strcmp(method, "GET") && strcmp(method, "HEAD") && strcmp(method, "DELETE") &&
             strcmp(method, "OPTIONS"))
        add_line(b, "Content-Length", "0", 1);      /* a body-less POST is not a 411 */
    if (!accept) add_line(b, "Accept", "*/*", 3);
    buf_add(b, "\r\n", 2);
    return true;
}
