/* exec: shared declarations of the driver's files.
 *
 * exec.c      the driver's operations, its table, the plugin
 * proc.c      supervision of a running tree until all of it is gone
 * spawn.c     building argv/env and forking a tenant into its cgroup
 * record.c    the record kept next to the processes (<dir>/<handle>.run)
 * cgroup.c    per-tenant control groups
 * supervisor.c  without cgroups: a subreaper process per tenant that holds its tree
 */
#ifndef EXEC_EXEC_H
#define EXEC_EXEC_H

#include <berth/berth.h>

#include <sys/types.h>

#include "cgroup.h"

struct cfg { const char *dir, *ports, *bind, *cgroups; };
struct tcfg {
    struct berth_strlist command;
    double cpus;
    uint64_t memory;
    int64_t pids, nofile, stop_timeout;
    const char *user;
};

extern const struct berth_host *H;

struct proc;
struct rmjob;

struct drv {
    berth_instance *self;
    struct cfg cfg;
    char dir[512];
    int port_lo, port_hi;
    struct cg_sys cg;           /* mode CG_NONE: a supervisor holds each tree */
    struct proc *procs;
    struct rmjob *rmjobs;
};

/* ---- proc.c ---- */

/* A tenant's tree being watched: its leader (pidfd) and, with cgroups, the rest of it. */
struct proc {
    struct proc *next;
    struct drv *d;
    char handle[BERTH_HANDLE_MAX + 1];
    pid_t pid;                  /* the leader; 0 for leftovers found without one */
    int pidfd;                  /* -1 once the leader is gone */
    bool child;                 /* ours to reap; an adopted one is not */
    bool stopping;              /* asked to end: its end is not reported as a crash */
    bool killing;               /* SIGKILL to whatever is left, every sweep */
    berth_watch *watch;
    berth_timer *kill_timer;    /* stop_timeout after SIGTERM */
    berth_timer *sweep;         /* while the leader is gone and the cgroup is not empty */
    int exit_code;
    char msg[128];              /* how the leader ended */
    long oom_base;              /* the cgroup's OOM kills when watching began; -1: unknown */
    berth_op *stop_op;          /* finished when the tree is gone */
    berth_op *remove_op;        /* removal goes on when the tree is gone */
};

/* How a tree ended, handed to exec_tree_gone (defined in exec.c). */
struct tree_end {
    berth_op *stop_op, *remove_op;
    bool expected;
    bool oom;                   /* the OOM killer acted in the tenant's cgroup meanwhile */
    int exit_code;
    char handle[BERTH_HANDLE_MAX + 1], msg[192];
};
void exec_tree_gone(struct drv *d, const struct tree_end *e);
/* Records the run of pid (running, with its start time) in the table and the record file
 * (defined in exec.c). spawn calls it between fork and letting the child run anything of the
 * tenant, so a berthd killed at any moment of a start leaves no run, or one its table names
 * and a restart adopts: never one it would start a second time. 0 or BERTH_E* with err. */
int exec_run_recorded(struct drv *d, const char *handle, pid_t pid, char *err, size_t n);

struct proc *proc_find(struct drv *d, const char *handle);
/* Watches a leader (child: ours to reap). NULL when its pidfd cannot be opened. */
struct proc *proc_watch(struct drv *d, const char *handle, pid_t pid, bool child);
/* Kills processes of the tenant's cgroup that have no leader (an earlier run's leftovers);
 * false when there are none. The ops, if any, finish when they are gone. */
bool proc_drain(struct drv *d, const char *handle, berth_op *stop_op, berth_op *remove_op);
bool proc_alive(const struct proc *p);
/* SIGTERM to the tree, SIGKILL after timeout_ms; op finishes when all of it is gone. */
void proc_stop(struct proc *p, int64_t timeout_ms, berth_op *op);
/* SIGKILL to the tree now; op goes on to removal when all of it is gone. */
void proc_remove(struct proc *p, berth_op *op);
/* The processes in the tenant's cgroup (0 without cgroups). */
int tree_count(struct drv *d, const char *handle);
/* Unloading: trees outlive berthd, only the watches go; a pending stop is honoured. */
void proc_release_all(struct drv *d);

/* ---- spawn.c ---- */

/* Forks the tenant's process into its cgroup (created with its limits) and execs it. The
 * forked process waits until exec_run_recorded has made its pid durable; the call returns
 * once the child has exec'd or failed; a failure before execve is reported with its stage in
 * err (the run is recorded then: the caller records its end). */
int spawn(struct drv *d, const berth_spec *s, int port, pid_t *out, char *err, size_t n);

/* What failed before the workload's execve, sent back on spawn's pipe as {stage, errno}. */
enum spawn_stage { ST_CGROUP = 1, ST_CHDIR, ST_USER, ST_EXEC, ST_SUPERVISOR };

/* ---- supervisor.c ---- */

#define SUPERVISOR_NAME "berth-supervise"     /* its comm, as /proc shows it */

/* Runs in a process berthd has just forked: becomes the subreaper of a tree whose leader is
 * forked to run workload(arg), and exits when all of it is gone (see supervisor.c). errfd is
 * spawn's pipe: a failure to start is written there, and it is closed once the leader runs. */
_Noreturn void supervise(void (*workload)(const void *), const void *arg, int errfd,
                         int64_t stop_timeout_ms);

/* ---- record.c ---- */

/* What adoption needs, kept next to the processes so that a lost database loses nothing. */
struct record {
    char tmpl[64], start[32], state[16];
    int port;
    pid_t pid;
};

/* Writes <dir>/<handle>.run atomically (temporary file, fsync, rename). 0 or -errno. */
int record_write(const struct drv *d, const char *handle, const struct record *r);
/* 0, or -errno (-ENOENT: none; -EINVAL: not a record). */
int record_read(const struct drv *d, const char *handle, struct record *r);
void record_remove(const struct drv *d, const char *handle);
/* Calls fn for each handle that has a record. */
void record_each(const struct drv *d, void (*fn)(const char *handle, void *), void *arg);

#endif
