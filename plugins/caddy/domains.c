/* The domains berth serves besides the plugin's own: those of templates whose `caddy:` block
 * sets `domain`. Each gets a catch-all in berth's container, as the plugin's domain does, so an
 * unknown handle there reaches berth's 404 page rather than whatever Caddy does with a host no
 * route matches (an empty 200).
 *
 * berth cannot list templates, only look one up by name, so a template's domain is learnt when
 * one of its tenants is provisioned and kept in the table caddy_domains (it outlives the
 * template's last tenant). On start and after every config reload each row is checked against
 * its template's block again: a template gone, without a block, or naming another domain
 * drops it. */
#include "caddy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct domain {
    struct domain *next;
    char tmpl[BERTH_HANDLE_MAX + 64];
    char name[CADDY_HOST_MAX];
};

static struct domain *domain_new(struct caddy *c, const char *tmpl, const char *name)
{
    struct domain *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    snprintf(d->tmpl, sizeof d->tmpl, "%s", tmpl);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->next = c->domains;
    c->domains = d;
    return d;
}

static bool load_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct caddy *c = arg;
    if (v[0] && v[1] && !domain_new(c, v[0], v[1]))
        H->log(c->self, BERTH_LOG_ERROR, "out of memory loading the domain of %s", v[0]);
    return true;
}

int domains_load(struct caddy *c)
{
    const char *q[] = {H->name(c->self)};
    int rc = H->store_exec(c->self, "SELECT tmpl, domain FROM caddy_domains WHERE inst=?1", q,
                           1, load_row, c);
    if (!rc) domains_recheck(c);
    return rc;
}

/* The domain a template's tenants get now: NULL when the template is gone or has no block. */
static const char *template_domain(struct caddy *c, const char *tmpl)
{
    const struct caddy_blk *b = H->template_config(c->self, tmpl);
    if (!b) return NULL;
    return b->domain && *b->domain ? b->domain : c->cfg.domain;
}

static void store_drop(struct caddy *c, const char *tmpl)
{
    const char *q[] = {H->name(c->self), tmpl};
    H->store_exec(c->self, "DELETE FROM caddy_domains WHERE inst=?1 AND tmpl=?2", q, 2, NULL,
                  NULL);
}

void domains_recheck(struct caddy *c)
{
    bool changed = false;
    for (struct domain **pp = &c->domains; *pp;) {
        struct domain *d = *pp;
        const char *now = template_domain(c, d->tmpl);
        if (now && !strcmp(now, d->name)) {
            pp = &d->next;
            continue;
        }
        store_drop(c, d->tmpl);
        *pp = d->next;
        free(d);
        changed = true;
    }
    if (changed) routes_changed(c);
}

int domain_seen(struct caddy *c, const char *tmpl, const char *name)
{
    struct domain *d = c->domains;
    while (d && strcmp(d->tmpl, tmpl)) d = d->next;
    if (d && !strcmp(d->name, name)) return 0;
    if (!strcmp(name, c->cfg.domain)) {     /* the plugin's own: always served */
        if (!d) return 0;
        store_drop(c, tmpl);
        for (struct domain **pp = &c->domains; *pp; pp = &(*pp)->next)
            if (*pp == d) {
                *pp = d->next;
                break;
            }
        free(d);
        routes_changed(c);
        return 0;
    }
    const char *q[] = {H->name(c->self), tmpl, name};
    int rc = H->store_exec(c->self, "INSERT INTO caddy_domains(inst,tmpl,domain) VALUES(?1,?2,?3)"
                           " ON CONFLICT(inst,tmpl) DO UPDATE SET domain=?3", q, 3, NULL, NULL);
    if (rc) return rc;
    if (!d && !(d = domain_new(c, tmpl, name))) return BERTH_ENOMEM;
    snprintf(d->name, sizeof d->name, "%s", name);
    routes_changed(c);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The domain part of a route's host (<handle>.<domain>), or NULL. */
static const char *route_domain(const struct route *r)
{
    size_t hl = strlen(r->handle);
    return !strncmp(r->host, r->handle, hl) && r->host[hl] == '.' && r->host[hl + 1]
               ? r->host + hl + 1 : NULL;
}

/* Calls fn once for every domain that needs a catch-all, in name order: the plugin's, each
 * template's, and that of every route (a tenant whose template changed domain keeps its route
 * until it is provisioned again). BERTH_ENOMEM when the list cannot be built. */
int domains_each(struct caddy *c, void (*fn)(struct caddy *c, const char *domain, void *arg),
                 void *arg)
{
    size_t cap = 1, n = 0;
    for (struct domain *d = c->domains; d; d = d->next) cap++;
    for (struct route *r = c->routes; r; r = r->next) cap++;
    const char **v = malloc(cap * sizeof *v);
    if (!v) return BERTH_ENOMEM;
    if (c->cfg.domain && *c->cfg.domain) v[n++] = c->cfg.domain;
    for (struct domain *d = c->domains; d; d = d->next) v[n++] = d->name;
    for (struct route *r = c->routes; r; r = r->next)
        if (route_domain(r)) v[n++] = route_domain(r);
    qsort(v, n, sizeof *v, by_name);
    for (size_t i = 0; i < n; i++)
        if (!i || strcmp(v[i], v[i - 1])) fn(c, v[i], arg);
    free(v);
    return 0;
}

void domains_free(struct caddy *c)
{
    while (c->domains) {
        struct domain *d = c->domains;
        c->domains = d->next;
        free(d);
    }
}
