/* cgroup: one control group per exec tenant, on cgroup v1 hierarchies or a v2 subtree.
 *
 * A tenant's processes live in <hierarchy>/<berthd's own cgroup>/<root>/<instance>/<handle>
 * in every usable hierarchy, so nothing a tenant starts (a setsid child, a double fork) can
 * leave it, and the cgroup's process list is the tenant's whole tree. The path names the
 * instance and handle, so the cgroups survive a lost database and tell what runs.
 *
 * Ownership: struct cg_sys is a value owned by the driver (no heap); every function takes the
 * paths it needs from it. None of these calls blocks for long: they read and write small
 * kernel files. cg_join is async-signal-safe, for the child between fork and execve. */
#ifndef EXEC_CGROUP_H
#define EXEC_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { CG_CPU = 1, CG_MEMORY = 2, CG_PIDS = 4, CG_FREEZER = 8 };
enum cg_mode { CG_NONE = 0, CG_V1, CG_V2 };

#define CG_MAX_HIER 4

struct cg_hier {
    char dir[400];              /* <mount><own cgroup>/<root>: the driver's part of it */
    unsigned ctls;              /* CG_* controllers this hierarchy carries */
};

struct cg_sys {
    enum cg_mode mode;
    int n;
    struct cg_hier h[CG_MAX_HIER];
    int track;                  /* index of the hierarchy whose cgroup.procs is read */
    unsigned ctls;              /* union of the hierarchies' controllers */
    char why[256];              /* with CG_NONE: why no cgroup is usable */
};

struct cg_limits {
    double cpus;                /* CPUs, 0: none */
    uint64_t memory;            /* bytes, 0: none */
    int64_t pids;               /* 0: none */
};

/* Finds the usable hierarchies and creates <root> in each. Never fails: without usable
 * cgroups s->mode is CG_NONE and s->why says why. */
void cg_detect(struct cg_sys *s, const char *root);

/* A message for a limit this machine cannot enforce, or 0 when every limit can be. */
int cg_check(const struct cg_sys *s, const struct cg_limits *l, char *err, size_t n);

/* Creates the tenant's cgroup in every hierarchy (a cpu-only v1 hierarchy only with a cpu
 * limit: see cgroup.c), writes its limits (clearing absent ones)
 * and opens each cgroup.procs for writing (O_CLOEXEC) into fds[CG_MAX_HIER]; *nfds is set.
 * The caller closes the fds. */
int cg_prepare(const struct cg_sys *s, const char *inst, const char *handle,
               const struct cg_limits *l, int *fds, int *nfds, char *err, size_t n);

/* In the child before execve: moves the calling process into each cgroup. -errno or 0. */
int cg_join(const int *fds, int nfds);

/* The processes in the tenant's cgroup, at most max of them; -1 when it does not exist. */
int cg_pids(const struct cg_sys *s, const char *inst, const char *handle, pid_t *out,
            int max);

/* Sends sig to every process in the cgroup; returns how many there were (-1: no cgroup). */
int cg_signal(const struct cg_sys *s, const char *inst, const char *handle, int sig);

/* SIGKILL to the whole cgroup so that none can fork meanwhile (cgroup.kill on v2; freeze,
 * kill, thaw on v1 with a freezer; a plain sweep otherwise, repeated by the caller until
 * the cgroup is empty). Returns the number of processes found. */
int cg_kill(const struct cg_sys *s, const char *inst, const char *handle);

/* How many times the kernel's OOM killer acted in the tenant's memory cgroup since it was
 * made (v1 memory.oom_control, v2 memory.events: "oom_kill N"); -1 when it cannot say. */
long cg_oom_kills(const struct cg_sys *s, const char *inst, const char *handle);

/* Thaws the tenant's cgroup: one left frozen by a berthd that died inside cg_kill. */
void cg_thaw(const struct cg_sys *s, const char *inst, const char *handle);

/* Removes the tenant's (empty) cgroup from every hierarchy: 0 or -errno of the first error. */
int cg_remove(const struct cg_sys *s, const char *inst, const char *handle);

/* Removes the instance's and the root's cgroups where they are empty. */
void cg_release(const struct cg_sys *s, const char *inst);

/* Calls fn for each tenant cgroup of the instance (its handle). */
void cg_each(const struct cg_sys *s, const char *inst, void (*fn)(const char *handle, void *),
             void *arg);

#endif
