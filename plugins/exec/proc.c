/* proc: supervision of a tenant's running tree, from start (or adoption) until it is gone.
 *
 * The leader is watched through a pidfd on the loop. With cgroups the tree is over only when
 * the tenant's cgroup is empty: a child that ignores SIGTERM, or one that left the session
 * with setsid, is still in it. When the leader ends (on its own or after a stop), the rest of
 * the tree is swept: SIGKILL through the cgroup, every SWEEP_MS, until nothing is left, and
 * only then is the stop or removal finished. Without cgroups the leader is the tenant's
 * supervisor (supervisor.c), which does the same for its tree and exits when it is gone.
 *
 * Ownership: the driver's list owns every struct proc; exec_tree_gone() is called once the
 * tree is gone, after the proc is freed. */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define SWEEP_MS 20

struct proc *proc_find(struct drv *d, const char *handle)
{
    for (struct proc *p = d->procs; p; p = p->next)
        if (!strcmp(p->handle, handle)) return p;
    return NULL;
}

bool proc_alive(const struct proc *p)
{
    return p->pidfd >= 0;
}

static void unwatch(struct proc *p)
{
    if (p->watch) H->watch_stop(p->watch);
    if (p->pidfd >= 0) close(p->pidfd);
    p->watch = NULL;
    p->pidfd = -1;
}

static void proc_free(struct proc *p)
{
    struct proc **pp = &p->d->procs;
    while (*pp != p) pp = &(*pp)->next;
    *pp = p->next;
    unwatch(p);
    if (p->kill_timer) H->timer_stop(p->kill_timer);
    if (p->sweep) H->timer_stop(p->sweep);
    free(p);
}

int tree_count(struct drv *d, const char *handle)
{
    pid_t one[1];
    int k = cg_pids(&d->cg, H->name(d->self), handle, one, 1);
    return k < 0 ? 0 : k;
}

/* Through the pidfd: never a process that took a reaped leader's pid. */
static void signal_leader(struct proc *p, int sig)
{
    if (proc_alive(p)) syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
}

static bool is_supervisor(pid_t pid)
{
    char path[48], comm[32] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd < 0 ? -1 : read(fd, comm, sizeof comm - 1);
    if (fd >= 0) close(fd);
    return k > 0 && !strncmp(comm, SUPERVISOR_NAME "\n", strlen(SUPERVISOR_NAME) + 1);
}

/* A leader outside its cgroup was started without cgroups (by a supervisor, or a driver of
 * before them) and adopted since: it is stopped as it was started. A supervisor is never
 * SIGKILLed (its tree would escape): SIGUSR1 has it kill the tree. */
static void signal_outsider(struct proc *p, int sig)
{
    if (!proc_alive(p)) return;
    if (is_supervisor(p->pid)) signal_leader(p, sig == SIGKILL ? SIGUSR1 : sig);
    else if (getpgid(p->pid) == p->pid) kill(-p->pid, sig);
    else signal_leader(p, sig);
}

/* SIGKILL to the whole tree: through its cgroup, or by its supervisor (which exits when
 * all of it is gone). Returns how many processes are left to wait for. */
static int kill_tree(struct proc *p)
{
    if (p->d->cg.mode != CG_NONE) {
        int k = cg_kill(&p->d->cg, H->name(p->d->self), p->handle);
        if (k <= 0) signal_outsider(p, SIGKILL);
        return k;
    }
    signal_leader(p, SIGUSR1);
    return 0;
}

static void finish(struct proc *p)
{
    struct drv *d = p->d;
    struct tree_end e = {.stop_op = p->stop_op, .remove_op = p->remove_op,
                         .expected = p->stopping, .exit_code = p->exit_code};
    /* the kernel says who it killed only in the cgroup's counter: a SIGKILL alone could be
     * anyone's; an end berth asked for is not the memory limit's doing */
    e.oom = !p->stopping && p->oom_base >= 0 &&
            cg_oom_kills(&d->cg, H->name(d->self), p->handle) > p->oom_base;
    snprintf(e.handle, sizeof e.handle, "%s", p->handle);
    snprintf(e.msg, sizeof e.msg, "%s%s", p->msg,
             e.oom ? ": out of memory (the template's memory limit)" : "");
    proc_free(p);
    exec_tree_gone(d, &e);
}

static void sweep_tick(berth_timer *t, void *arg);

/* The leader is gone: finish once the rest of the tree is too. */
static void settle(struct proc *p)
{
    int left = p->killing ? kill_tree(p) : tree_count(p->d, p->handle);
    if (left <= 0) {
        finish(p);
        return;
    }
    if (!p->sweep) p->sweep = H->timer_start(p->d->self, SWEEP_MS, SWEEP_MS, sweep_tick, p);
}

static void sweep_tick(berth_timer *t, void *arg)
{
    (void)t;
    settle(arg);
}

static void describe_exit(struct proc *p, int code, int sig)
{
    if (sig) {
        snprintf(p->msg, sizeof p->msg, "killed by signal %d (%s)", sig, strsignal(sig));
        p->exit_code = 128 + sig;
    } else {
        snprintf(p->msg, sizeof p->msg, "exited with status %d", code);
        p->exit_code = code;
    }
}

static void on_exit_fd(berth_watch *w, int events, void *arg)
{
    (void)w; (void)events;
    struct proc *p = arg;
    if (p->child) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED) == 0)
            describe_exit(p, si.si_code == CLD_EXITED ? si.si_status : 0,
                          si.si_code == CLD_EXITED ? 0 : si.si_status);
    }
    unwatch(p);
    /* a tenant is its leader, as a container is its init: what it leaves behind goes too */
    if (!p->killing && tree_count(p->d, p->handle) > 0 && !p->stopping)
        H->log(p->d->self, BERTH_LOG_WARN, "tenant %s: leader %s; killing what it left",
               p->handle, p->msg);
    if (!p->stopping || p->d->cg.mode == CG_NONE) p->killing = true;
    settle(p);
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static struct proc *proc_new(struct drv *d, const char *handle)
{
    struct proc *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->d = d;
    p->pidfd = -1;
    p->exit_code = -1;
    p->oom_base = d->cg.mode != CG_NONE ? cg_oom_kills(&d->cg, H->name(d->self), handle) : -1;
    snprintf(p->msg, sizeof p->msg, "exited (status unknown: adopted process)");
    snprintf(p->handle, sizeof p->handle, "%s", handle);
    p->next = d->procs;
    d->procs = p;
    return p;
}

struct proc *proc_watch(struct drv *d, const char *handle, pid_t pid, bool child)
{
    int fd = pidfd_open_(pid);
    if (fd < 0) return NULL;
    struct proc *p = proc_new(d, handle);
    if (!p) {
        close(fd);
        return NULL;
    }
    p->pid = pid;
    p->pidfd = fd;
    p->child = child;
    p->watch = H->watch_fd(d->self, fd, BERTH_WATCH_READABLE, on_exit_fd, p);
    return p;
}

bool proc_drain(struct drv *d, const char *handle, berth_op *stop_op, berth_op *remove_op)
{
    if (tree_count(d, handle) <= 0) return false;
    struct proc *p = proc_new(d, handle);
    if (!p) return false;
    p->stopping = p->killing = true;
    p->stop_op = stop_op;
    p->remove_op = remove_op;
    snprintf(p->msg, sizeof p->msg, "leftovers of an earlier run killed");
    H->log(d->self, BERTH_LOG_WARN, "tenant %s: processes without their leader; killing them",
           handle);
    settle(p);
    return true;
}


static void escalate(berth_timer *t, void *arg)
{
    struct proc *p = arg;
    H->timer_stop(t);
    p->kill_timer = NULL;
    H->log(p->d->self, BERTH_LOG_WARN, "tenant %s: still running after SIGTERM; SIGKILL",
           p->handle);
    p->killing = true;
    if (proc_alive(p)) kill_tree(p);    /* the leader's exit settles the rest */
    else settle(p);
}

void proc_stop(struct proc *p, int64_t timeout_ms, berth_op *op)
{
    p->stopping = true;
    p->stop_op = op;
    if (p->d->cg.mode == CG_NONE)
        signal_leader(p, SIGTERM);      /* the supervisor passes it to the whole tree */
    else if (cg_signal(&p->d->cg, H->name(p->d->self), p->handle, SIGTERM) <= 0)
        signal_outsider(p, SIGTERM);
    if (!p->kill_timer && !p->killing)
        p->kill_timer = H->timer_start(p->d->self, (uint64_t)timeout_ms, 0, escalate, p);
}

void proc_remove(struct proc *p, berth_op *op)
{
    p->stopping = p->killing = true;
    p->remove_op = op;
    if (proc_alive(p)) kill_tree(p);
    else settle(p);
}

void proc_release_all(struct drv *d)
{
    while (d->procs) {
        struct proc *p = d->procs;
        if (p->stop_op || p->remove_op || p->killing) kill_tree(p);    /* honour a stop */
        proc_free(p);
    }
}
