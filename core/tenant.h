/* Internals of the tenant subsystem, shared by its files and nobody else:
 *   tenant.c     tenant records, their JSON, the handle index, persistence, waiters, busy holds
 *   driver.c     the driver registry, driver operations, listing and adoption, reports
 *   spec.c       building a spec for an operation, its accessors, spec contributors
 *   crash.c      crash-loop accounting
 *   reconcile.c  the reconciler: compares desired and observed state, issues one operation
 *                per tenant at a time
 * Everything here runs on the loop thread. */
#ifndef BERTH_TENANT_H
#define BERTH_TENANT_H

#include "core.h"

enum op_kind { OP_CREATE, OP_START, OP_STOP, OP_REMOVE, OP_INSPECT, OP_LIST };
extern const char *const op_names[];

struct driver {
    struct res res;             /* first: the owner's resource list points here */
    struct list link;
    const struct berth_driver *d;
    void *state;
    bool listed;
    berth_op *listing;
    int64_t list_failures;
    char *list_error;           /* why the last list() failed, shown on waiting tenants */
    uv_timer_t *relist;         /* retry of a failed list(), with backoff */
};

struct listed { char *handle, *tmpl, *id, *address; enum berth_observed_state st; };

struct berth_op {
    struct res res;
    struct list link;           /* ops of all drivers, for cancellation */
    struct driver *drv;
    enum op_kind kind;
    char handle[40];
    berth_spec *spec;           /* owned */
    struct listed *items; size_t nitems;
};

struct berth_spec {
    char *handle, *tmpl;
    struct gen *gen;            /* one reference, held while the spec lives */
    const void *cfg;
    int port;
    char **names, **vals; size_t nenv;
};

struct tenant {
    struct list link;
    struct tenant *hnext;
    char handle[40];
    char *kind, *tmpl, *driver;
    enum berth_desired desired;
    enum berth_observed_state observed;
    char *id, *address, *reason;
    int64_t created_ms, updated_ms, last_activity_ms, restarts;
    char **fin; size_t nfin;
    /* runtime only */
    bool dirty, restart_pending, activity_dirty;
    struct list dirty_link;
    berth_op *op;
    int64_t attempts, retry_at;
    int64_t started_ms, crashes;    /* crash-loop backoff */
    uv_timer_t *retry;
    int64_t busy;
    int health;                     /* 0 unknown, 1 healthy, 2 unhealthy */
    cJSON *plugins;                 /* status objects set by plugins, by instance name */
    struct list waiters;            /* tenant_wait_ready() callers */
};

/* ---- tenant.c ---- */
extern struct list tenant_all;      /* every tenant, in creation order */
void tenant_save(struct tenant *t);
void tenant_set_observed(struct tenant *t, enum berth_observed_state s);
void tenant_changed(struct tenant *t);                 /* publishes tenant.changed */
void tenant_notify(struct tenant *t, int status, const char *msg);  /* answers waiters */
void tenant_forget(struct tenant *t);  /* drops the record from memory and store, frees t */
void str_set(char **dst, const char *v);
void uv_free_handle(uv_handle_t *h);   /* close callback of a malloc'd handle */

/* ---- reconcile.c ---- */
void reconcile_start(void);
void reconcile_stop(void);
void tenant_mark(struct tenant *t);    /* look at t again soon */
int64_t reconcile_backoff(int64_t steps);
void tenant_retry_in(struct tenant *t, int64_t delay);
/* the tenant's operation op finished (status 0 or a BERTH_E* code) */
void reconcile_op_finished(struct tenant *t, berth_op *op, int status,
                           const struct berth_observed *obs, const char *msg);

/* ---- driver.c ---- */
struct driver *driver_find(const char *name);
/* starts op kind k for t with spec (consumed) and records it as t->op */
void driver_issue(struct tenant *t, struct driver *d, enum op_kind k, berth_spec *spec);
void drivers_list_all(void);

/* ---- spec.c ---- */
/* contribute: run spec contributors (for a create) */
berth_spec *spec_build(const struct tenant *t, const struct tmpl *tm, bool contribute);
void spec_free(berth_spec *s);
void spec_drop_owner(berth_instance *owner);   /* its spec contributors */

/* ---- crash.c ---- */
void crash_count(struct tenant *t, const char *msg);   /* an unexpected stop */
bool crash_looping(const struct tenant *t);

#endif
