/* What the plugin loader (plugin.c) and the host API table it hands plugins (host_api.c)
 * share: the instance and the resources it holds. Private to those two files. */
#ifndef BERTH_PLUGIN_INT_H
#define BERTH_PLUGIN_INT_H

#include "core.h"

struct module {
    struct list link;
    char *path;
    dev_t dev; ino_t ino; off_t size; struct timespec mtime;
    int memfd;
    void *dl;
    const struct berth_plugin *d;
    int refs;
};

enum inst_state { I_STAGED, I_RUNNING, I_FAILED, I_DRAINING, I_DESTROYED };
enum action { A_NEW, A_KEEP, A_RECONF, A_REPLACE };

struct berth_instance {
    struct list link;               /* all instances alive, in load order */
    char *name;
    char comp[80];                  /* log component */
    struct module *mod;
    void *state;
    void *cfg; struct arena arena;
    const struct cnode *node;
    enum inst_state st;
    char *error;
    struct list res;
    int reqs, handles;
    bool drained;
    int64_t loaded_ms, drain_deadline;
    /* staged by a reload */
    enum action action;
    void *new_cfg; struct arena new_arena; const struct cnode *new_node;
    berth_instance *old;
};

/* every loop handle made for a plugin is also listed here, for the uv_walk audit */
struct hrec { struct list link; uv_handle_t *h; };
struct berth_timer { struct res res; struct hrec hr; uv_timer_t t; berth_timer_cb cb; void *arg; };
struct berth_watch { struct res res; struct hrec hr; uv_poll_t p; berth_watch_cb cb; void *arg; };
struct berth_sub { struct res res; struct bus_sub *s; berth_event_cb cb; void *arg; };
struct plisten { struct res res; struct listener *l; };

/* plugin.c: a loop handle made for owner, listed for the uv_walk audit */
void plugin_handle_track(berth_instance *owner, struct hrec *r, uv_handle_t *h);
void plugin_timer_release(struct berth_timer *t);   /* cancels and frees it */
void plugin_watch_release(struct berth_watch *w);
void plugin_schedule_reap(void);
struct plisten *plugin_namesake_listener(const berth_instance *self, const char *addr);    /* look for drained instances to destroy, soon */

#endif
