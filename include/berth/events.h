/* berth typed events. Numbers are never reused or renamed; new types are appended.
 * Each payload struct starts with its size, so it can grow at the end. A handler borrows the
 * event and its payload for the duration of the callback only. */
#ifndef BERTH_EVENTS_H
#define BERTH_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct berth_event {
    uint32_t type;
    const char *type_name;      /* "container.stopped" */
    uint64_t seq;               /* journal sequence, increasing */
    int64_t time_ms;
    const char *tenant;         /* handle, or NULL for system events */
    const void *payload;        /* struct berth_ev_* for the type, never NULL */
    const char *json;           /* the payload as a JSON object, as journaled */
};

enum berth_event_type {
    BERTH_EV_TENANT_CREATED = 1,
    BERTH_EV_TENANT_DELETED = 2,
    BERTH_EV_TENANT_ACTIVITY = 3,
    BERTH_EV_TENANT_WAKE_REQUESTED = 4,
    BERTH_EV_TENANT_SLEEP_REQUESTED = 5,
    BERTH_EV_TENANT_READY = 6,
    BERTH_EV_TENANT_DELETING = 7,
    BERTH_EV_TENANT_FAILED = 8,
    BERTH_EV_TENANT_CHANGED = 9,
    BERTH_EV_CONTAINER_CREATED = 10,
    BERTH_EV_CONTAINER_STARTED = 11,
    BERTH_EV_CONTAINER_STOPPED = 12,
    BERTH_EV_CONTAINER_REMOVED = 13,
    BERTH_EV_CONTAINER_HEALTH = 14,
    /* 15-18 were reserved in 1.0 for the quota, route and Matrix plugins; since 1.1 those
     * plugins register their own types by name and own them. The numbers stay unused. */
    BERTH_EV_RESERVED_15_ = 15,
    BERTH_EV_RESERVED_16_ = 16,
    BERTH_EV_RESERVED_17_ = 17,
    BERTH_EV_RESERVED_18_ = 18,
    BERTH_EV_CONFIG_RELOADED = 19,
    BERTH_EV_PLUGIN_LOADED = 20,
    BERTH_EV_PLUGIN_UNLOADED = 21,
    /* 1.1: provisioners */
    BERTH_EV_TENANT_PROVISIONED = 22,       /* tenant.provisioned */
    BERTH_EV_TENANT_PROVISION_FAILED = 23,  /* tenant.provision_failed */
    BERTH_EV_TENANT_DEPROVISIONED = 24,     /* tenant.deprovisioned */
    BERTH_EV_TENANT_DEPROVISION_FAILED = 25,/* tenant.deprovision_failed */
    BERTH_EV_TENANT_ABANDONED = 26,         /* tenant.abandoned: rm --force left this behind */
    BERTH_EV_BUILTIN_MAX_,
    BERTH_EV_CUSTOM_BASE = 1024,    /* types registered by name at run time start here */
};

struct berth_ev_tenant_created { size_t size; const char *kind, *template_name; };
struct berth_ev_tenant_deleted { size_t size; };
struct berth_ev_tenant_activity { size_t size; const char *source; };
struct berth_ev_tenant_wake_requested { size_t size; const char *source; };
struct berth_ev_tenant_sleep_requested { size_t size; const char *source; };
struct berth_ev_tenant_ready { size_t size; const char *address; };
struct berth_ev_tenant_deleting { size_t size; };
struct berth_ev_tenant_failed {
    size_t size; const char *reason; int64_t attempts; int64_t retry_in_ms;
};
struct berth_ev_tenant_changed { size_t size; const char *desired, *observed; };
struct berth_ev_container_created { size_t size; const char *id; };
struct berth_ev_container_started { size_t size; const char *id, *address; };
struct berth_ev_container_stopped {
    size_t size; const char *id; int64_t exit_code; bool oom; bool expected; const char *message;
};
struct berth_ev_container_removed { size_t size; const char *id; };
struct berth_ev_container_health { size_t size; bool healthy; const char *message; };
struct berth_ev_config_reloaded {
    size_t size; bool ok; int64_t generation; int64_t errors; const char *message;
};
struct berth_ev_plugin_loaded { size_t size; const char *name, *module, *version; };
struct berth_ev_plugin_unloaded { size_t size; const char *name; int64_t leaks; };

/* provisioner: the instance name; failures carry the reason and the retry schedule
 * (retry_in_ms -1: a permanent provision failure, BERTH_EPERM, not retried) */
struct berth_ev_tenant_provisioned { size_t size; const char *provisioner; };
struct berth_ev_tenant_provision_failed {
    size_t size; const char *provisioner, *reason; int64_t attempts, retry_in_ms;
};
struct berth_ev_tenant_deprovisioned { size_t size; const char *provisioner; };
struct berth_ev_tenant_deprovision_failed {
    size_t size; const char *provisioner, *reason; int64_t attempts, retry_in_ms;
};
/* what a forced delete did not undo: state is the provisioner's last result */
struct berth_ev_tenant_abandoned { size_t size; const char *provisioner, *state; };

/* Payload of every type registered by name: a JSON object as text. */
struct berth_ev_custom { size_t size; const char *json; };

#endif
