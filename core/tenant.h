/* Internals of the tenant subsystem, shared by its files and nobody else:
 *   tenant.c     tenant records, their JSON, the handle index, persistence, waiters, busy holds
 *   driver.c     the driver registry, driver operations, listing and adoption, reports
 *   spec.c       building a spec for an operation, its accessors, spec contributors
 *   crash.c      crash-loop accounting
 *   provision.c  the provisioner registry, per-tenant provisioning results and their
 *                persistence, provision and deprovision operations
 *   reconcile.c  the reconciler: compares desired and observed state, runs the tenant's
 *                provisioners and issues driver operations, one of each kind at a time
 * Everything here runs on the loop thread. */
#ifndef BERTH_TENANT_H
#define BERTH_TENANT_H

#include "core.h"

enum op_kind { OP_CREATE, OP_START, OP_STOP, OP_REMOVE, OP_INSPECT, OP_LIST, OP_PROVISION,
               OP_DEPROVISION };
extern const char *const op_names[OP_DEPROVISION + 1];

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

struct listed {
    char *handle, *tmpl, *id, *address;
    enum berth_observed_state st;
    bool known;                 /* its tenant had a record when the list answered */
};

/* name=value pairs in insertion order; owns its strings */
struct kv { char **k, **v; size_t n; };

struct berth_op {
    struct res res;             /* owned by the driver's or the provisioner's instance */
    struct list link;           /* every op in flight, for cancellation */
    struct driver *drv;         /* driver ops */
    enum op_kind kind;
    char handle[BERTH_HANDLE_MAX + 1];
    char *pname;                /* provisioner ops: the provisioner (instance) name */
    struct kv env, labels;      /* provision: what op_setenv / op_label gave, until op_done */
    berth_spec *spec;           /* owned */
    struct listed *items; size_t nitems;
};

struct berth_spec {
    char *handle, *tmpl;
    struct gen *gen;            /* one reference, held while the spec lives */
    const void *cfg;
    int port;
    struct kv env, labels;
};

struct tenant {
    struct list link;
    struct tenant *hnext;
    char handle[BERTH_HANDLE_MAX + 1];
    char *kind, *tmpl, *driver;
    enum berth_desired desired;
    enum berth_observed_state observed;
    char *id, *address, *reason;
    int64_t created_ms, updated_ms, last_activity_ms, restarts;
    char **fin; size_t nfin;
    /* runtime only */
    bool dirty, restart_pending, activity_dirty;
    bool unsaved;               /* its last save failed: the activity flush retries it */
    bool listed;                /* in the driver's list being adopted (driver.c's adopt) */
    struct list dirty_link;
    berth_op *op;                   /* the driver operation in flight */
    berth_op *pop;                  /* the provisioner operation in flight */
    struct list provs;              /* struct pstate: provisioners that ran for it, by order */
    uv_timer_t *pretry;             /* the next provisioning retry */
    int64_t attempts, retry_at;
    int64_t started_ms, crashes;    /* crash-loop backoff */
    char *crash_msg;                /* what the last crash said (owned) */
    bool recovering;                /* down for a crash or restart: its next start counts */
    uv_timer_t *retry;
    int64_t busy;
    int health;                     /* 0 unknown, 1 healthy, 2 unhealthy */
    struct list status;             /* struct pstatus: status objects set by plugins */
    struct list waiters;            /* tenant_wait_ready() callers */
};

/* ---- tenant.c ---- */
extern struct list tenant_all;      /* every tenant, in creation order */
/* 0, or the store's error (BERTH_ENOSPC for a full disk); a failure is logged once and
 * retried by the activity flush, so the row catches up when the store recovers */
int tenant_save(struct tenant *t);
int tenant_save_durable(struct tenant *t);   /* synced to disk before it returns */
void tenant_set_observed(struct tenant *t, enum berth_observed_state s);
void tenant_changed(struct tenant *t);                 /* publishes tenant.changed */
void tenant_notify(struct tenant *t, int status, const char *msg);  /* answers waiters */
void tenant_forget(struct tenant *t);  /* drops the record from memory and store, frees t */
void str_set(char **dst, const char *v);
void uv_free_handle(uv_handle_t *h);   /* close callback of a malloc'd handle */

void tenants_drop_status(berth_instance *owner);

/* ---- reconcile.c ---- */
void reconcile_start(void);
void reconcile_stop(void);
void tenant_mark(struct tenant *t);    /* look at t again soon */
int64_t reconcile_backoff(int64_t steps);
void tenant_retry_in(struct tenant *t, int64_t delay);
/* the tenant's operation op finished (status 0 or a BERTH_E* code) */
void reconcile_op_finished(struct tenant *t, berth_op *op, int status,
                           const struct berth_observed *obs, const char *msg);

/* ---- provision.c ---- */
int provision_load(void);                       /* after the tenants are loaded */
void provision_free_tenant(struct tenant *t);   /* memory only */
void provision_forget(struct tenant *t);        /* deletes its rows too */
/* true when every provisioner the template enables is done with its current block; else
 * issues the next provision op or says in t->reason what it waits for */
bool provision_step(struct tenant *t, const struct tmpl *tm);
/* true when a provisioner returned something the existing workload does not have yet */
bool provision_stale(const struct tenant *t, const struct tmpl *tm, const char **who);
void provision_applied(struct tenant *t);      /* a create succeeded */
/* true when every provisioner that ran is deprovisioned; else as provision_step */
bool deprovision_step(struct tenant *t, const struct tmpl *tm);
void provision_fill_spec(const struct tenant *t, const struct tmpl *tm, struct kv *env,
                         struct kv *labels);
void provision_op_finished(berth_op *op, int status, const char *msg);
void provision_json(const struct tenant *t, cJSON *o);
void provision_abandon(struct tenant *t);       /* a forced delete */
void provisioners_drop_owner(berth_instance *owner);

/* ---- driver.c ---- */
berth_op *op_alloc(berth_instance *owner, enum op_kind k, const char *handle);
void op_free(berth_op *op);
struct driver *driver_find(const char *name);
/* starts op kind k for t with spec (consumed) and records it as t->op */
void driver_issue(struct tenant *t, struct driver *d, enum op_kind k, berth_spec *spec);
void drivers_list_all(void);

/* ---- spec.c ---- */
/* contribute: run spec contributors (for a create) */
berth_spec *spec_build(const struct tenant *t, const struct tmpl *tm, bool contribute);
berth_spec *spec_build_prov(const struct tenant *t, const struct tmpl *tm, const void *block);
void spec_free(berth_spec *s);
int kv_set(struct kv *kv, const char *name, const char *value);
void kv_free(struct kv *kv);
bool kv_equal(const struct kv *a, const struct kv *b);
char *kv_json(const struct kv *kv);                    /* a JSON object, malloc'd */
void kv_parse(struct kv *kv, const char *json);         /* adds a JSON object's strings */
bool env_name_valid(const char *name);
void spec_drop_owner(berth_instance *owner);   /* its spec contributors */

/* ---- crash.c ---- */
void crash_count(struct tenant *t, const char *msg);   /* an unexpected stop */
bool crash_looping(const struct tenant *t);
void crash_ready(struct tenant *t);     /* the workload is ready again */

#endif
