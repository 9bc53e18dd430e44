/* Owners of a listener's connections (req_conn_claim): a plugin tags the connection of a
 * request with an owner's name (the tenant whose key it presented) and the listener counts
 * each owner's connections, so one owner can be held to a share of the listener.
 *
 * A table of owners per listener, hashed by name, each with its count; a connection points
 * at its owner's record. Claiming a connection its owner holds already compares one string
 * and reads one count; only a connection's first claim, or a move to another owner, looks
 * the name up. A record lives while a connection points at it. */
#include "http_int.h"

#include <stdlib.h>
#include <string.h>

#define OWNER_MAX 255           /* the longest owner name, in bytes */

struct conn_owner {
    struct conn_owner *next, **pprev;
    uint32_t count, hash;
    char name[];
};

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;                   /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void link_into(struct owner_table *t, struct conn_owner *o)
{
    struct conn_owner **b = &t->b[o->hash & (t->nb - 1)];
    o->next = *b;
    if (o->next) o->next->pprev = &o->next;
    o->pprev = b;
    *b = o;
}

/* one bucket per owner at most: chains stay short as owners come and go */
static void grow(struct owner_table *t)
{
    struct conn_owner **old = t->b;
    uint32_t n = t->nb;
    t->nb = n ? 2 * n : 8;
    t->b = xcalloc(t->nb, sizeof *t->b);
    for (uint32_t i = 0; i < n; i++)
        for (struct conn_owner *o = old[i], *next; o; o = next) {
            next = o->next;
            link_into(t, o);
        }
    free(old);
}

static struct conn_owner *find(const struct owner_table *t, const char *name, uint32_t h)
{
    if (!t->nb) return NULL;
    for (struct conn_owner *o = t->b[h & (t->nb - 1)]; o; o = o->next)
        if (o->hash == h && !strcmp(o->name, name)) return o;
    return NULL;
}

void owner_release(struct owner_table *t, struct conn_owner **slot)
{
    struct conn_owner *o = *slot;
    if (!o) return;
    *slot = NULL;
    if (--o->count) return;
    *o->pprev = o->next;
    if (o->next) o->next->pprev = o->pprev;
    t->n--;
    free(o);
}

int owner_claim(struct owner_table *t, struct conn_owner **slot, const char *name,
                uint32_t max)
{
    if (!name) {
        owner_release(t, slot);
        return 0;
    }
    struct conn_owner *cur = *slot;
    if (cur && !strcmp(cur->name, name))        /* its own again: the usual case */
        return max && cur->count - 1 >= max ? BERTH_EBUSY : 0;
    size_t len = strnlen(name, OWNER_MAX + 1);
    if (len > OWNER_MAX) return BERTH_EINVAL;
    uint32_t h = name_hash(name);
    struct conn_owner *o = find(t, name, h);
    if (max && o && o->count >= max) return BERTH_EBUSY;
    if (!o) {
        if (t->n >= t->nb) grow(t);
        o = xmalloc(sizeof *o + len + 1);
        memcpy(o->name, name, len + 1);
        o->hash = h;
        o->count = 0;
        link_into(t, o);
        t->n++;
    }
    owner_release(t, slot);                     /* a move: the old owner's count drops */
    o->count++;
    *slot = o;
    return 0;
}

uint32_t owner_count(const struct owner_table *t, const char *name)
{
    const struct conn_owner *o = find(t, name, name_hash(name));
    return o ? o->count : 0;
}

/* With the listener: its connections are gone, and their claims with them. */
void owner_table_free(struct owner_table *t)
{
    for (uint32_t i = 0; i < t->nb; i++)
        for (struct conn_owner *o = t->b[i], *next; o; o = next) {
            next = o->next;
            free(o);
        }
    free(t->b);
    *t = (struct owner_table){0};
}
