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
    BERTH_EV_USAGE_RECORDED = 15,
    BERTH_EV_QUOTA_EXCEEDED = 16,
    BERTH_EV_ROUTE_CHANGED = 17,
    BERTH_EV_MATRIX_ACCOUNT = 18,
    BERTH_EV_CONFIG_RELOADED = 19,
    BERTH_EV_PLUGIN_LOADED = 20,
    BERTH_EV_PLUGIN_UNLOADED = 21,
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
struct berth_ev_usage_recorded {
    size_t size; const char *model; int64_t input_tokens, output_tokens, cost_microusd;
};
struct berth_ev_quota_exceeded { size_t size; const char *limit, *message; };
struct berth_ev_route_changed { size_t size; const char *host, *upstream; };
struct berth_ev_matrix_account { size_t size; const char *user_id, *action; };
struct berth_ev_config_reloaded {
    size_t size; bool ok; int64_t generation; int64_t errors; const char *message;
};
struct berth_ev_plugin_loaded { size_t size; const char *name, *module, *version; };
struct berth_ev_plugin_unloaded { size_t size; const char *name; int64_t leaks; };

/* Payload of every type registered by name: a JSON object as text. */
struct berth_ev_custom { size_t size; const char *json; };

#endif
