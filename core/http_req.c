/* Accessors of a request served by berthd: what a handler (or an authorize hook, before the
 * body) reads. Strings belong to the request and live as long as it does. */
#include "http_int.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

char *http_pct_decode(const char *s, size_t n, bool plus)
{
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int h1 = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int h2 = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (h1 < 0 || h2 < 0 || (h1 == 0 && h2 == 0)) {
                free(out);
                return NULL;
            }
            *o++ = (char)(h1 * 16 + h2);
            i += 2;
        } else {
            *o++ = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = 0;
    return out;
}

const char *req_method(berth_req *r) { return r->method; }
const char *req_path(berth_req *r) { return r->path; }
const char *req_query_raw(berth_req *r) { return r->query_raw; }
berth_instance *http_req_owner(berth_req *r) { return r->owner; }

void http_req_set_owner(berth_req *r, berth_instance *owner)
{
    if (r->owner == owner) return;
    if (r->owner) inst_pending(r->owner, -1);
    r->owner = owner;
    if (owner) inst_pending(owner, 1);
}

const char *req_header(berth_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (!strcasecmp(r->hdr[i].k, name)) return r->hdr[i].v;
    return NULL;
}

size_t req_header_count(berth_req *r) { return r->nhdr; }

const char *req_header_at(berth_req *r, size_t i, const char **value)
{
    if (i >= r->nhdr) return NULL;
    if (value) *value = r->hdr[i].v;
    return r->hdr[i].k;
}

const char *req_peer(berth_req *r) { return r->peer; }

const char *req_body(berth_req *r, size_t *len)
{
    if (len) *len = r->body.len;
    return r->body.p ? r->body.p : "";
}

void http_req_set_param(berth_req *r, const char *name, const char *value)
{
    r->param = xrealloc(r->param, (r->nparam + 1) * sizeof *r->param);
    r->param[r->nparam++] = (struct kv){xstrdup(name), xstrdup(value)};
}

const char *req_param(berth_req *r, const char *name)
{
    for (size_t i = 0; i < r->nparam; i++)
        if (!strcmp(r->param[i].k, name)) return r->param[i].v;
    return NULL;
}

const char *req_query(berth_req *r, const char *name)
{
    if (!r->query_parsed) {
        r->query_parsed = true;
        const char *s = r->query_raw;
        while (s && *s) {
            const char *amp = strchr(s, '&');
            size_t n = amp ? (size_t)(amp - s) : strlen(s);
            const char *eq = memchr(s, '=', n);
            size_t kn = eq ? (size_t)(eq - s) : n;
            char *k = http_pct_decode(s, kn, true);
            char *v = eq ? http_pct_decode(eq + 1, n - kn - 1, true) : xstrdup("");
            if (k && v) {
                r->query = xrealloc(r->query, (r->nquery + 1) * sizeof *r->query);
                r->query[r->nquery++] = (struct kv){k, v};
            } else {
                free(k);
                free(v);
            }
            s = amp ? amp + 1 : NULL;
        }
    }
    for (size_t i = 0; i < r->nquery; i++)
        if (!strcmp(r->query[i].k, name)) return r->query[i].v;
    return NULL;
}

int req_conn_claim(berth_req *r, const char *owner, uint32_t max)
{
    if (!r) return BERTH_EINVAL;
    struct conn *c = r->conn;
    if (!c || c->closing) return BERTH_ENOENT;      /* the client is gone */
    return owner_claim(&c->l->owners, &c->claim, owner, max);
}
