/* exec: a driver that runs each tenant as a supervised process tree on this machine.
 *
 * A tenant's process is forked by the driver itself (spawn.c) so that its cgroup, limits,
 * user, session and stdio are in place before execve: no window in which the workload runs
 * unconfined. Its tree is supervised (proc.c) until all of it is gone. Processes are not
 * killed when berthd stops, like containers outlive dockerd's clients: the driver's table
 * records pid and start time, so a recycled pid is never mistaken for a tenant, and a record
 * file beside each working directory (record.c) and the cgroup's name keep what adoption
 * needs if the database is lost. Each tenant gets a working directory <dir>/<handle>, a log
 * file <dir>/<handle>.log, and, when its template has a port, a host port from `ports`
 * passed as PORT and {port}. */
#include "exec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static const struct berth_cfg_item schema[] = {
    {"dir", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, dir),
     "where tenants' working directories and logs live (default <state_dir>/exec)", 0, NULL,
     NULL},
    {"ports", BERTH_CFG_STR, "20000-29999", 0, 0, offsetof(struct cfg, ports),
     "host ports handed to tenants whose template has a port", 0, NULL, NULL},
    {"bind", BERTH_CFG_STR, "127.0.0.1", 0, 0, offsetof(struct cfg, bind),
     "the address tenants are reached at", 0, NULL, NULL},
    {"cgroups", BERTH_CFG_STR, "auto", 0, 0, offsetof(struct cfg, cgroups),
     "auto: a cgroup per tenant where the machine has usable cgroups; required: refuse to "
     "start without; off: a subreaper supervisor per tenant holds its tree", 0, NULL, NULL},
    {0},
};

static const struct berth_cfg_item tschema[] = {
    {"command", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct tcfg, command),
     "argv of the tenant's process; {handle}, {port} and {dir} are expanded",
     BERTH_CFG_REQUIRED, NULL, NULL},
    {"cpus", BERTH_CFG_DOUBLE, "0", 0, 1024, offsetof(struct tcfg, cpus),
     "CPU limit of the whole tree in CPUs, e.g. 0.5 (cgroup cpu controller); 0: none", 0,
     NULL, NULL},
    {"memory", BERTH_CFG_SIZE, "0", 0, 0, offsetof(struct tcfg, memory),
     "memory limit of the whole tree (cgroup memory controller); 0: none", 0, NULL, NULL},
    {"pids", BERTH_CFG_INT, "0", 0, 4194304, offsetof(struct tcfg, pids),
     "process and thread limit of the whole tree (cgroup pids controller); 0: none", 0, NULL,
     NULL},
    {"nofile", BERTH_CFG_INT, "1024", 16, 1048576, offsetof(struct tcfg, nofile),
     "open-file limit (RLIMIT_NOFILE)", 0, NULL, NULL},
    {"stop_timeout", BERTH_CFG_DURATION, "10s", 0, 600000, offsetof(struct tcfg, stop_timeout),
     "SIGTERM, then SIGKILL after this long", 0, NULL, NULL},
    {"user", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct tcfg, user),
     "uid[:gid] to run as (berthd must be root)", 0, NULL, NULL},
    {0},
};

static const char *const steps[] = {
    "CREATE TABLE exec_procs (instance TEXT NOT NULL, handle TEXT NOT NULL, template TEXT,"
    " port INTEGER, pid INTEGER, start_time TEXT, state TEXT NOT NULL,"
    " PRIMARY KEY (instance, handle))",
};

const struct berth_host *H;

/* Deleting a tenant's tree may take long: `rm -rf` runs as a child, watched like a tenant. */
struct rmjob {
    struct rmjob *next;
    struct drv *d;
    berth_op *op;
    int pidfd;
    pid_t pid;
    berth_watch *w;
};

static void remove_files(struct drv *d, const char *handle, berth_op *op);

/* ---- the table, mirrored in the record files ---- */

struct row { bool found; int port; pid_t pid; char start[32], state[16], tmpl[64]; };

static bool read_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct row *r = arg;
    r->found = true;
    r->port = v[0] ? atoi(v[0]) : 0;
    r->pid = v[1] ? (pid_t)atoi(v[1]) : 0;
    snprintf(r->start, sizeof r->start, "%s", v[2] ? v[2] : "");
    snprintf(r->state, sizeof r->state, "%s", v[3] ? v[3] : "");
    snprintf(r->tmpl, sizeof r->tmpl, "%s", v[4] ? v[4] : "");
    return false;
}

static struct row get_row(struct drv *d, const char *handle)
{
    struct row r = {.found = false};
    const char *p[] = {H->name(d->self), handle};
    H->store_exec(d->self, "SELECT port,pid,start_time,state,template FROM exec_procs "
                  "WHERE instance=?1 AND handle=?2", p, 2, read_row, &r);
    return r;
}

static int insert_row(struct drv *d, const char *handle, const struct record *r)
{
    char sp[16], spid[16];
    snprintf(sp, sizeof sp, "%d", r->port);
    snprintf(spid, sizeof spid, "%d", (int)r->pid);
    const char *q[] = {H->name(d->self), handle, r->tmpl[0] ? r->tmpl : NULL, sp,
                       r->pid ? spid : NULL, r->start[0] ? r->start : NULL, r->state};
    return H->store_exec(d->self, "INSERT INTO exec_procs(instance,handle,template,port,pid,"
                         "start_time,state) VALUES(?1,?2,?3,?4,?5,?6,?7)", q, 7, NULL, NULL);
}

static void save_record(struct drv *d, const char *handle, const struct record *r)
{
    int rc = record_write(d, handle, r);
    if (rc)
        H->log(d->self, BERTH_LOG_ERROR, "tenant %s: cannot write its record in %s: %s "
               "(a lost database would lose it)", handle, d->dir, strerror(-rc));
}

/* The row first: it is what a restart reads. 0, or the store's error. */
static int set_state(struct drv *d, const char *handle, const char *state, pid_t pid,
                     const char *start)
{
    char spid[16];
    snprintf(spid, sizeof spid, "%d", (int)pid);
    const char *p[] = {H->name(d->self), handle, state, pid ? spid : NULL, start};
    int rc = H->store_exec(d->self, "UPDATE exec_procs SET state=?3, pid=?4, start_time=?5 "
                           "WHERE instance=?1 AND handle=?2", p, 5, NULL, NULL);
    struct record r;
    if (record_read(d, handle, &r)) {
        struct row w = get_row(d, handle);
        if (!w.found) return rc < 0 ? rc : 0;
        memset(&r, 0, sizeof r);
        snprintf(r.tmpl, sizeof r.tmpl, "%s", w.tmpl);
        r.port = w.port;
    }
    snprintf(r.state, sizeof r.state, "%s", state);
    snprintf(r.start, sizeof r.start, "%s", start ? start : "");
    r.pid = pid;
    save_record(d, handle, &r);
    return rc < 0 ? rc : 0;
}

/* ---- processes ---- */

/* Field 22 of /proc/<pid>/stat: start time in clock ticks since boot. With the pid it names a
 * process uniquely, so a pid recycled while berthd was down is not adopted. */
static bool start_time(pid_t pid, char *out, size_t n)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) return false;
    buf[k] = 0;
    char *p = strrchr(buf, ')');    /* the command name may contain spaces */
    if (!p) return false;
    int field = 2;
    for (p++; *p && field < 22; p++)
        if (*p == ' ') field++;
    size_t len = strcspn(p, " ");
    if (field != 22 || !len || len >= n) return false;
    memcpy(out, p, len);
    out[len] = 0;
    return true;
}

int exec_run_recorded(struct drv *d, const char *handle, pid_t pid, char *err, size_t n)
{
    char st[32] = "";
    if (!start_time(pid, st, sizeof st)) {
        snprintf(err, n, "cannot read the start time of pid %d", (int)pid);
        return BERTH_EIO;
    }
    int rc = set_state(d, handle, "running", pid, st);
    if (rc) snprintf(err, n, "cannot record the process in the database (%d); not started", rc);
    return rc;
}

static void addr_of(struct drv *d, int port, char *out, size_t n)
{
    snprintf(out, n, "%s:%d", d->cfg.bind, port);
}

void exec_tree_gone(struct drv *d, const struct tree_end *e)
{
    if (e->remove_op) {
        remove_files(d, e->handle, e->remove_op);
        return;
    }
    if (!e->stop_op && e->expected && !get_row(d, e->handle).found) {
        /* leftovers in a cgroup no row or record names (orphan_cgroup): no tenant will
         * run there again, and an empty cgroup left behind is litter in every hierarchy */
        if (d->cg.mode != CG_NONE) cg_remove(&d->cg, H->name(d->self), e->handle);
        return;
    }
    set_state(d, e->handle, "stopped", 0, NULL);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, NULL, NULL, e->exit_code, e->oom,
                               e->msg};
    if (e->stop_op) {
        H->op_done(e->stop_op, 0, &o, NULL);
    } else if (!e->expected) {
        H->log(d->self, BERTH_LOG_WARN, "tenant %s: process %s", e->handle, e->msg);
        H->driver_report(d->self, e->handle, &o);
    }
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ---- operations ---- */

static bool port_taken(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names; (void)v;
    *(bool *)arg = true;
    return false;
}

/* A port someone else on the host already listens on is not handed out. */
static bool port_free_on_host(const char *bind_addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return true;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &a.sin_addr) != 1) a.sin_addr.s_addr = htonl(INADDR_ANY);
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int alloc_port(struct drv *d)
{
    for (int p = d->port_lo; p <= d->port_hi; p++) {
        char sp[16];
        snprintf(sp, sizeof sp, "%d", p);
        const char *q[] = {H->name(d->self), sp};
        bool taken = false;
        H->store_exec(d->self, "SELECT 1 FROM exec_procs WHERE instance=?1 AND port=?2", q, 2,
                      port_taken, &taken);
        if (!taken && port_free_on_host(d->cfg.bind, p)) return p;
    }
    return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, mode) < 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, mode) < 0 && errno != EEXIST ? -1 : 0;
}

static void op_create(void *st, const berth_spec *s, berth_op *op)
{
    struct drv *d = st;
    const char *handle = H->spec_handle(s);
    struct row r = get_row(d, handle);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, handle, NULL, -1, false, NULL};
    char wd[600], msg[700], addr[80];
    if (r.found) {           /* idempotent: it exists already */
        addr_of(d, r.port, addr, sizeof addr);
        o.address = r.port ? addr : NULL;
        H->op_done(op, 0, &o, NULL);
        return;
    }
    snprintf(wd, sizeof wd, "%s/%s", d->dir, handle);
    if (mkdir_p(wd, 0750) < 0) {
        snprintf(msg, sizeof msg, "cannot create %s: %s", wd, strerror(errno));
        H->op_done(op, BERTH_EIO, NULL, msg);
        return;
    }
    int port = 0;
    if (H->spec_port(s) > 0 && !(port = alloc_port(d))) {
        H->op_done(op, BERTH_EAGAIN, NULL, "no free port left in exec.ports");
        return;
    }
    struct record rec = {.port = port, .state = "created"};
    snprintf(rec.tmpl, sizeof rec.tmpl, "%s", H->spec_template(s));
    if (insert_row(d, handle, &rec) < 0) {
        H->op_done(op, BERTH_EIO, NULL, "cannot record the process");
        return;
    }
    save_record(d, handle, &rec);
    addr_of(d, port, addr, sizeof addr);
    o.address = port ? addr : NULL;
    H->op_done(op, 0, &o, NULL);
}

static void op_start(void *st, const berth_spec *s, berth_op *op)
{
    struct drv *d = st;
    const char *handle = H->spec_handle(s);
    struct row r = get_row(d, handle);
    char addr[80], err[1024];
    addr_of(d, r.port, addr, sizeof addr);
    struct berth_observed o = {sizeof o, BERTH_OBS_RUNNING, handle, r.port ? addr : NULL, 0,
                               false, NULL};
    if (!r.found) {
        H->op_done(op, BERTH_ENOENT, NULL, "no such process record; it will be recreated");
        return;
    }
    struct proc *p = proc_find(d, handle);
    if (p && proc_alive(p)) {          /* already running */
        H->op_done(op, 0, &o, NULL);
        return;
    }
    /* never two runs of one tenant: what is left of the last one goes first */
    if (p || proc_drain(d, handle, NULL, NULL)) {
        H->op_done(op, BERTH_EAGAIN, NULL, "processes of the previous run are being killed");
        return;
    }
    pid_t pid;
    int rc = spawn(d, s, r.port, &pid, err, sizeof err);
    if (rc) {
        set_state(d, handle, "stopped", 0, NULL);   /* a run recorded by spawn did not start */
        H->op_done(op, rc, NULL, err);
        return;
    }
    if (!proc_watch(d, handle, pid, true)) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        set_state(d, handle, "stopped", 0, NULL);
        H->op_done(op, BERTH_EIO, NULL, "cannot watch the process (pidfd_open)");
        return;
    }
    H->log(d->self, BERTH_LOG_INFO, "tenant %s: started pid %d", handle, (int)pid);
    H->op_done(op, 0, &o, NULL);
}

static void op_stop(void *st, const berth_spec *s, berth_op *op)
{
    struct drv *d = st;
    const struct tcfg *t = H->spec_config(s);
    const char *handle = H->spec_handle(s);
    struct proc *p = proc_find(d, handle);
    if (p) {
        proc_stop(p, t->stop_timeout, op);
        return;
    }
    if (proc_drain(d, handle, op, NULL)) return;
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, NULL, NULL, -1, false, NULL};
    H->op_done(op, 0, &o, NULL);
}

static void rmjob_unlink(struct rmjob *j)
{
    for (struct rmjob **pp = &j->d->rmjobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
}

static void rm_done(berth_watch *w, int events, void *arg)
{
    (void)events;
    struct rmjob *j = arg;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    waitid((idtype_t)P_PIDFD, (id_t)j->pidfd, &si, WEXITED);
    H->watch_stop(w);
    close(j->pidfd);
    rmjob_unlink(j);
    struct berth_observed o = {sizeof o, BERTH_OBS_ABSENT, NULL, NULL, -1, false, NULL};
    if (si.si_code == CLD_EXITED && si.si_status == 0) H->op_done(j->op, 0, &o, NULL);
    else H->op_done(j->op, BERTH_EIO, NULL, "rm -rf of the working directory failed");
    free(j);
}

static void remove_files(struct drv *d, const char *handle, berth_op *op)
{
    int rc = d->cg.mode != CG_NONE ? cg_remove(&d->cg, H->name(d->self), handle) : 0;
    if (rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot remove the tenant's cgroup: %s", strerror(-rc));
        H->op_done(op, BERTH_EAGAIN, NULL, msg);
        return;
    }
    const char *q[] = {H->name(d->self), handle};
    H->store_exec(d->self, "DELETE FROM exec_procs WHERE instance=?1 AND handle=?2", q, 2,
                  NULL, NULL);
    record_remove(d, handle);
    char wd[600], logpath[600];
    snprintf(wd, sizeof wd, "%s/%s", d->dir, handle);
    snprintf(logpath, sizeof logpath, "%s/%s.log", d->dir, handle);
    unlink(logpath);
    struct rmjob *j = calloc(1, sizeof *j);
    pid_t pid = j ? fork() : -1;
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", "--", wd, (char *)NULL);
        _exit(127);
    }
    if (pid < 0 || (j->pidfd = pidfd_open_(pid)) < 0) {
        free(j);
        H->op_done(op, BERTH_EAGAIN, NULL, "cannot start rm for the working directory");
        return;
    }
    j->d = d;
    j->op = op;
    j->pid = pid;
    j->next = d->rmjobs;
    d->rmjobs = j;
    j->w = H->watch_fd(d->self, j->pidfd, BERTH_WATCH_READABLE, rm_done, j);
}

static void op_remove(void *st, const berth_spec *s, berth_op *op)
{
    struct drv *d = st;
    const char *handle = H->spec_handle(s);
    struct proc *p = proc_find(d, handle);
    if (p) {         /* remove implies stop, without the grace period */
        proc_remove(p, op);
        return;
    }
    if (proc_drain(d, handle, NULL, op)) return;
    remove_files(d, handle, op);
}

/* ---- listing and adoption ---- */

static bool handle_ok(const char *h)
{
    size_t n = strlen(h);
    return n && n < 40 && strspn(h, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* A record without a row: the database was lost (or replaced by an older copy). */
static void restore_row(const char *handle, void *arg)
{
    struct drv *d = arg;
    struct record r;
    if (!handle_ok(handle) || get_row(d, handle).found) return;
    if (record_read(d, handle, &r)) {
        H->log(d->self, BERTH_LOG_WARN, "tenant %s: unreadable record %s/%s.run; ignored",
               handle, d->dir, handle);
        return;
    }
    if (insert_row(d, handle, &r) == 0)
        H->log(d->self, BERTH_LOG_WARN, "tenant %s: not in the database; restored from its "
               "record (%s, pid %d)", handle, r.state, (int)r.pid);
}

/* Every tenant cgroup not being supervised is thawed (berthd may have died between freeze and
 * thaw). One with processes and neither row nor record: nobody can say what it runs. */
static void orphan_cgroup(const char *handle, void *arg)
{
    struct drv *d = arg;
    if (!proc_find(d, handle)) cg_thaw(&d->cg, H->name(d->self), handle);
    if (get_row(d, handle).found || proc_find(d, handle)) return;
    if (proc_drain(d, handle, NULL, NULL)) return;
    cg_remove(&d->cg, H->name(d->self), handle);
}

struct listing { struct drv *d; berth_op *op; };

static bool adopt(struct drv *d, const char *handle, const char *const *v)
{
    pid_t pid = v[3] ? (pid_t)atoi(v[3]) : 0;
    char now[32];
    if (!pid || strcmp(v[5], "running") || !start_time(pid, now, sizeof now) || !v[4] ||
        strcmp(now, v[4]) || !proc_watch(d, handle, pid, false))
        return false;
    H->log(d->self, BERTH_LOG_INFO, "tenant %s: adopted running pid %d", handle, (int)pid);
    return true;
}

static bool list_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct listing *l = arg;
    struct drv *d = l->d;
    const char *handle = v[0];
    int port = v[2] ? atoi(v[2]) : 0;
    char addr[80];
    addr_of(d, port, addr, sizeof addr);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, handle, port ? addr : NULL, -1,
                               false, NULL};
    struct proc *p = proc_find(d, handle);
    if (p ? proc_alive(p) : adopt(d, handle, v)) o.state = BERTH_OBS_RUNNING;
    else if (!p) proc_drain(d, handle, NULL, NULL);     /* the leader died while we were away */
    H->op_list_add(l->op, handle, v[1], &o);
    return true;
}

static void op_list(void *st, berth_op *op)
{
    struct drv *d = st;
    struct listing l = {d, op};
    const char *q[] = {H->name(d->self)};
    record_each(d, restore_row, d);
    cg_each(&d->cg, H->name(d->self), orphan_cgroup, d);
    H->store_exec(d->self, "SELECT handle,template,port,pid,start_time,state FROM exec_procs "
                  "WHERE instance=?1", q, 1, list_row, &l);
    H->op_done(op, 0, NULL, NULL);
}

static const struct berth_driver driver = {
    .size = sizeof driver, .name = "exec", .create = op_create, .start = op_start,
    .stop = op_stop, .remove = op_remove, .list = op_list,
};

/* ---- plugin ---- */

static int parse_ports(const char *s, int *lo, int *hi)
{
    char *end;
    long a = strtol(s, &end, 10), b = a;
    if (end == s) return -1;
    if (*end == '-') {
        const char *t = end + 1;
        b = strtol(t, &end, 10);
        if (end == t) return -1;
    }
    if (*end || a < 1 || b > 65535 || a > b) return -1;
    *lo = (int)a;
    *hi = (int)b;
    return 0;
}

static int validate(const void *cfg, char *err, size_t n)
{
    const struct cfg *c = cfg;
    int lo, hi;
    if (parse_ports(c->ports, &lo, &hi) < 0) {
        snprintf(err, n, "ports must be PORT or LOW-HIGH within 1-65535, not '%s'", c->ports);
        return BERTH_EINVAL;
    }
    struct in_addr ip;      /* tenants' addresses are bind:port; the port check binds it */
    if (inet_pton(AF_INET, c->bind, &ip) != 1) {
        snprintf(err, n, "bind must be an IPv4 address, not '%s'", c->bind);
        return BERTH_EINVAL;
    }
    if (strcmp(c->cgroups, "auto") && strcmp(c->cgroups, "required") &&
        strcmp(c->cgroups, "off")) {
        snprintf(err, n, "cgroups must be auto, required or off, not '%s'", c->cgroups);
        return BERTH_EINVAL;
    }
    return 0;
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    struct drv *d = calloc(1, sizeof *d);
    if (!d) return BERTH_ENOMEM;
    d->self = self;
    *state = d;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct drv *d = state;
    d->cfg = *(const struct cfg *)cfg;
    if (d->cfg.dir) snprintf(d->dir, sizeof d->dir, "%s", d->cfg.dir);
    else snprintf(d->dir, sizeof d->dir, "%s/exec", H->state_dir(d->self));
    return parse_ports(d->cfg.ports, &d->port_lo, &d->port_hi) < 0 ? BERTH_EINVAL : 0;
}

/* The cgroups' root is named after the installation (its exec directory), so berthds that
 * share a machine, or a parent cgroup, never share a tenant's cgroup. */
static void cgroups_start(struct drv *d)
{
    char real[PATH_MAX], root[32];
    const char *p = realpath(d->dir, real) ? real : d->dir;
    uint32_t h = 2166136261u;
    for (; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(root, sizeof root, "berth-%08x", h);
    if (!strcmp(d->cfg.cgroups, "off")) {
        memset(&d->cg, 0, sizeof d->cg);
        snprintf(d->cg.why, sizeof d->cg.why, "exec.cgroups is off");
    } else {
        cg_detect(&d->cg, root);
    }
    if (d->cg.mode == CG_NONE) {
        H->log(d->self, BERTH_LOG_WARN, "no cgroups (%s): a supervisor process per tenant "
               "holds its tree; cpus, memory and pids limits are refused", d->cg.why);
        return;
    }
    H->log(d->self, BERTH_LOG_INFO, "cgroup %s under %s:%s%s%s%s", d->cg.mode == CG_V1 ? "v1"
           : "v2", d->cg.h[d->cg.track].dir, d->cg.ctls & CG_CPU ? " cpu" : "",
           d->cg.ctls & CG_MEMORY ? " memory" : "", d->cg.ctls & CG_PIDS ? " pids" : "",
           d->cg.ctls & CG_FREEZER ? " freezer" : "");
}

static int start(void *state)
{
    struct drv *d = state;
    if (mkdir_p(d->dir, 0750) < 0) {
        H->log(d->self, BERTH_LOG_ERROR, "cannot create %s: %s", d->dir, strerror(errno));
        return BERTH_EIO;
    }
    cgroups_start(d);
    if (d->cg.mode == CG_NONE && !strcmp(d->cfg.cgroups, "required")) {
        H->log(d->self, BERTH_LOG_ERROR, "exec.cgroups is required, but: %s", d->cg.why);
        return BERTH_EINVAL;
    }
    int rc = H->store_migrate(d->self, steps, sizeof steps / sizeof *steps);
    return rc ? rc : H->driver_register(d->self, &driver, d);
}

/* Processes outlive the instance (and berthd): only the watches go. */
static void destroy(void *state)
{
    struct drv *d = state;
    proc_release_all(d);
    while (d->rmjobs) {     /* rm goes on; its op is completed as canceled by the host */
        struct rmjob *j = d->rmjobs;
        d->rmjobs = j->next;
        H->watch_stop(j->w);
        close(j->pidfd);
        free(j);
    }
    if (d->cg.mode != CG_NONE) cg_release(&d->cg, H->name(d->self));
    free(d);
}

BERTH_PLUGIN(.name = "exec", .version = "0.2.0",
             .description = "runs tenants as supervised local process trees",
             .config = schema, .config_size = sizeof(struct cfg),
             .template_config = tschema, .template_config_size = sizeof(struct tcfg),
             .validate = validate, .init = init, .configure = configure, .start = start,
             .destroy = destroy);
