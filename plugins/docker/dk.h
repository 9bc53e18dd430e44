/* The docker plugin's shared state, between docker.c (the driver's operations) and follow.c
 * (dockerd's event stream). Internal to the plugin: nothing here is part of the SDK. */
#ifndef BERTH_DOCKER_DK_H
#define BERTH_DOCKER_DK_H

#include <berth/berth.h>
#include <stdbool.h>

#include "docker_events.h"

extern const struct berth_host *H;     /* set by init() in docker.c */

struct cfg {
    const char *socket, *host, *tls_ca, *tls_cert, *tls_key;
    int64_t reconnect_max;
};

struct expect { struct expect *next; char handle[BERTH_HANDLE_MAX + 1]; };

/* container ids awaiting an event, the oldest dropped when full */
struct idlist { char *v[64]; int n; };

/* a network being checked or created: one job does it, the others wait (dockerd does not
 * make "create if missing" atomic, and two creates make two networks of one name) */
struct netop { struct netop *next; char name[128]; struct job *waiting; };

struct dk {
    berth_instance *self;
    struct cfg cfg;
    char url[256];          /* scheme://authority */
    char api[16];           /* negotiated API version, "" until known */
    uint32_t ev_pull;       /* image.pull_progress */
    berth_call *events;
    berth_timer *reconnect;
    int64_t backoff;
    struct dk_lines ev;     /* the event stream's partial line */
    struct expect *expected;    /* stops and removals berth asked for itself */
    struct idlist oom;          /* containers whose next die was an OOM kill */
    struct idlist moved;        /* containers berth removed to publish on another port */
    struct netop *netops;
};

/* Stops and removals berth asked for itself, by tenant: the next die or destroy of that
 * tenant's container is not a crash. */
void dk_expect_add(struct dk *d, const char *h);
bool dk_expect_take(struct dk *d, const char *h);   /* true when h was expected (now not) */

/* an id list keeps its own copies of the ids */
void dk_id_add(struct idlist *l, const char *id);
bool dk_id_take(struct idlist *l, const char *id);  /* true when id was there (now not) */
void dk_id_clear(struct idlist *l);

/* Follows GET /events (reconnecting with backoff, a re-list once it is back); unfollow ends
 * the stream and any pending reconnection. */
void dk_follow(struct dk *d);
void dk_unfollow(struct dk *d);

#endif
