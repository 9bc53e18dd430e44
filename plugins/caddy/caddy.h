/* plugins/caddy: shared state of the plugin's files.
 *
 *  caddy.c   the descriptor, configuration, events and the provisioner
 *  routes.c  the routes berth expects, and writing them to Caddy in batches
 *  waking.c  berth's own listener: the waking path, the 404 page, `ask`
 *  activity.c  Caddy's access log: requests count as their tenant's activity
 *  list.c    GET /v1/<instance>/routes: Caddy's routes against berth's
 *  domains.c the templates' own domains, each with a catch-all like the plugin's
 *  server.c  creating the configured server in a Caddy that lacks it
 *  caddy_answers.c  reading Caddy's answers and log lines (no host calls: fuzzed)
 *
 * Ownership: struct caddy owns every route, op waiter and held request; all of it is freed in
 * destroy(). Everything runs on the loop thread. */
#ifndef BERTH_CADDY_H
#define BERTH_CADDY_H

#include <berth/berth.h>
#include "caddy_answers.h"
#include <stdbool.h>
#include <stdint.h>

#define CADDY_HOST_MAX 256
#define CADDY_ADDR_MAX 128

struct caddy_waking { const char *mode; int64_t hold; };

struct caddy_cfg {
    const char *admin, *server, *domain, *listen, *upstream, *id, *access_log;
    int64_t batch, check, timeout, activity_interval;
    struct caddy_waking waking;
    struct berth_strlist extra_hosts;
    struct berth_strlist server_listen;     /* empty: berth never creates the server */
    bool required;                          /* /health fails while the admin API does */
};

struct caddy_blk { const char *domain; };

/* One tenant's route as berth expects it. `upstream` is what the next write sends;
 * `acked` what Caddy confirmed holding (empty: not written yet). */
struct route {
    struct route *next;
    char handle[BERTH_HANDLE_MAX + 1];
    char host[CADDY_HOST_MAX];
    char upstream[CADDY_ADDR_MAX];      /* the tenant's address, or "" for berth's listener */
    char acked[CADDY_ADDR_MAX + 8];     /* "-" none yet; else the upstream as written */
    bool active;                        /* in Caddy's access log since the last publish */
};

/* A provision/deprovision waiting for the write that carries its change. */
struct op_wait {
    struct op_wait *next;
    berth_op *op;
    uint64_t gen;
};

struct hold;
struct listing;
struct act_conn;
struct domain;

struct caddy {
    berth_instance *self;
    struct caddy_cfg cfg;
    struct berth_provisioner prov;
    struct route *routes;
    struct op_wait *ops;
    struct hold *holds;
    struct listing *listings;           /* GET /v1/<instance>/routes in flight */
    struct domain *domains;             /* templates' own domains (domains.c) */
    berth_sub *subs[5];
    bool started, stopping;

    /* writing: gen counts changes, sent is the gen of the write in flight, acked the last
     * written; rev is the revision tag berth wrote into Caddy's config */
    uint64_t gen, sent, acked, rev;
    berth_call *call;
    int call_kind;
    char *call_body;
    berth_timer *flush_timer, *check_timer;
    int64_t last_write_ms;              /* when the last write of routes started */
    bool lost;                          /* Caddy does not hold our routes: write them all */
    bool log_written;                   /* Caddy holds berth's access logger */
    int64_t loads, failures;
    char last_error[256];
    char admin_url[256];
    const char *admin_sock;             /* points into cfg.admin, or NULL for TCP */
    char admin_host[128];               /* Host: Caddy checks it on TCP */
    char admin_origin[160];             /* Origin, for enforce_origin; "" on a unix socket */
    berth_metric *m_loads, *m_fail;

    /* the access log (activity.c) */
    int act_fd;
    berth_call *act_call;               /* GET /reverse_proxy/upstreams in flight */
    berth_watch *act_watch;
    berth_timer *act_timer;
    struct act_conn *act_conns;
    int act_nconns;
    int64_t act_lines;
};

extern const struct berth_host *H;

/* routes.c */
int routes_load(struct caddy *c);
struct route *route_find(struct caddy *c, const char *handle);
struct route *route_by_host(struct caddy *c, const char *host);
int route_add(struct caddy *c, const char *handle, const char *host);
void route_remove(struct caddy *c, const char *handle);
void route_refresh(struct caddy *c, const char *handle);
void routes_changed(struct caddy *c);
void routes_start(struct caddy *c);
void routes_stop(struct caddy *c);
void op_wait_add(struct caddy *c, berth_op *op);
/* fills h[0..3] with the headers every admin API call sends (Host, Origin on TCP, and
 * Content-Type when `json`), NULL-terminated */
void admin_headers(struct caddy *c, struct berth_header h[4], bool json);
char *routes_status_json(struct caddy *c, const struct route *r);

/* domains.c */
int domains_load(struct caddy *c);
void domains_recheck(struct caddy *c);
int domain_seen(struct caddy *c, const char *tmpl, const char *name);
int domains_each(struct caddy *c, void (*fn)(struct caddy *c, const char *domain, void *arg),
                 void *arg);
void domains_free(struct caddy *c);

/* list.c */
void routes_list(berth_req *req, void *arg);
void routes_list_stop(struct caddy *c);

/* activity.c */
int activity_start(struct caddy *c);
struct cJSON *activity_logger(struct caddy *c);   /* the logger object berth writes */
void activity_stop(struct caddy *c);

/* waking.c */
int waking_start(struct caddy *c);
void waking_acked(struct caddy *c);
void waking_stop(struct caddy *c);
void waking_free(struct caddy *c);
bool host_is_extra(struct caddy *c, const char *host);

#endif
