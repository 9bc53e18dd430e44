/* dueq: everything the lifecycle plugin must do at a time (a scheduled run, the end of a
 * run_for, a heartbeat deadline) sits in one binary min-heap keyed by wall-clock ms, behind
 * one host timer set for the earliest. 10,000 tenants cost 10,000 heap nodes and one timer;
 * a change costs O(log n) and re-arms the timer only when the earliest due time moved.
 *
 * Also the table of per-tenant entries (struct ent) the heap's nodes belong to: a chained
 * hash by handle, grown by doubling. */
#include "lc.h"

#include <stdlib.h>
#include <string.h>

static void put(struct dueq *q, size_t i, struct dq_node *n)
{
    q->v[i] = n;
    n->pos = i + 1;
}

static void up(struct dueq *q, size_t i)
{
    struct dq_node *n = q->v[i];
    while (i > 0 && q->v[(i - 1) / 2]->due > n->due) {
        put(q, i, q->v[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    put(q, i, n);
}

static void down(struct dueq *q, size_t i)
{
    struct dq_node *n = q->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->n) break;
        if (c + 1 < q->n && q->v[c + 1]->due < q->v[c]->due) c++;
        if (q->v[c]->due >= n->due) break;
        put(q, i, q->v[c]);
        i = c;
    }
    put(q, i, n);
}

void dq_del(struct lc *lc, struct dq_node *n)
{
    struct dueq *q = &lc->dq;
    if (!n->pos) return;
    size_t i = n->pos - 1;
    n->pos = 0;
    struct dq_node *last = q->v[--q->n];
    if (i == q->n) return;
    put(q, i, last);
    up(q, i);
    down(q, last->pos - 1);
}

void dq_set(struct lc *lc, struct dq_node *n, int64_t due)
{
    struct dueq *q = &lc->dq;
    if (n->pos) {
        n->due = due;
        up(q, n->pos - 1);
        down(q, n->pos - 1);
        return;
    }
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        struct dq_node **v = realloc(q->v, cap * sizeof *v);
        if (!v) {
            H->log(lc->self, BERTH_LOG_ERROR, "out of memory: tenant %s loses a due time",
                   n->ent->handle);
            return;
        }
        q->v = v;
        q->cap = cap;
    }
    n->due = due;
    put(q, q->n++, n);
    up(q, q->n - 1);
}

static void on_timer(berth_timer *t, void *arg)
{
    struct lc *lc = arg;
    H->timer_stop(t);
    lc->dq.timer = NULL;
    lc->dq.armed = 0;
    int64_t now = H->now_ms(lc->self);
    bool fired = false;
    /* bounded by what is due now: a handler that re-queues for now runs on the next turn */
    for (size_t budget = lc->dq.n; budget && lc->dq.n && lc->dq.v[0]->due <= now; budget--) {
        struct dq_node *n = lc->dq.v[0];
        dq_del(lc, n);
        if (n->kind == DQ_FIRE) sched_fire(lc, n->ent), fired = true;
        else if (n->kind == DQ_RUN_END) sched_run_end(lc, n->ent);
        else hb_due(lc, n->ent);
    }
    if (fired) sched_save(lc);      /* records how far the schedule has run */
    dq_arm(lc);
}

void dq_arm(struct lc *lc)
{
    struct dueq *q = &lc->dq;
    int64_t due = q->n ? q->v[0]->due : 0;
    if (due == q->armed && (q->timer || !due)) return;
    if (q->timer) H->timer_stop(q->timer);
    q->timer = NULL;
    q->armed = due;
    if (!due) return;
    int64_t wait = due - H->now_ms(lc->self);
    q->timer = H->timer_start(lc->self, wait > 0 ? (uint64_t)wait : 0, 0, on_timer, lc);
}

void dq_free(struct lc *lc)
{
    if (lc->dq.timer) H->timer_stop(lc->dq.timer);
    free(lc->dq.v);
    lc->dq = (struct dueq){0};
}

/* ---- the entries ---- */

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static void grow(struct lc *lc)
{
    size_t n = lc->ntab ? lc->ntab * 2 : 256;
    struct ent **tab = calloc(n, sizeof *tab);
    if (!tab) return;       /* longer chains, still correct */
    for (size_t i = 0; i < lc->ntab; i++)
        for (struct ent *e = lc->tab[i], *next; e; e = next) {
            next = e->next;
            e->next = tab[hash(e->handle) & (n - 1)];
            tab[hash(e->handle) & (n - 1)] = e;
        }
    free(lc->tab);
    lc->tab = tab;
    lc->ntab = n;
}

struct ent *ent_get(struct lc *lc, const char *handle, bool create)
{
    if (lc->ntab) {
        for (struct ent *e = lc->tab[hash(handle) & (lc->ntab - 1)]; e; e = e->next)
            if (!strcmp(e->handle, handle)) return e;
    }
    if (!create || strlen(handle) > BERTH_HANDLE_MAX) return NULL;
    if (lc->nent >= lc->ntab) grow(lc);
    struct ent *e = lc->ntab ? calloc(1, sizeof *e) : NULL;
    if (!e) return NULL;
    strcpy(e->handle, handle);
    e->fire = (struct dq_node){.ent = e, .kind = DQ_FIRE};
    e->run_end = (struct dq_node){.ent = e, .kind = DQ_RUN_END};
    e->hb = (struct dq_node){.ent = e, .kind = DQ_HEARTBEAT};
    size_t b = hash(handle) & (lc->ntab - 1);
    e->next = lc->tab[b];
    lc->tab[b] = e;
    lc->nent++;
    return e;
}

static void ent_free(struct lc *lc, struct ent *e)
{
    dq_del(lc, &e->fire);
    dq_del(lc, &e->run_end);
    dq_del(lc, &e->hb);
    free(e->hb_status);
    free(e);
}

void ent_drop(struct lc *lc, const char *handle)
{
    if (!lc->ntab) return;
    for (struct ent **pp = &lc->tab[hash(handle) & (lc->ntab - 1)]; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->handle, handle)) {
            struct ent *e = *pp;
            *pp = e->next;
            if (e->stale) lc->nstale--;
            ent_free(lc, e);
            lc->nent--;
            return;
        }
}

void ents_free(struct lc *lc)
{
    for (size_t i = 0; i < lc->ntab; i++)
        for (struct ent *e = lc->tab[i], *next; e; e = next) {
            next = e->next;
            ent_free(lc, e);
        }
    free(lc->tab);
    lc->tab = NULL;
    lc->ntab = lc->nent = 0;
}
