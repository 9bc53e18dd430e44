/* exec: a driver that runs each tenant as a supervised process tree on this machine.
 *
 * A tenant's process is forked by the driver itself so that rlimits (address space, processes,
 * open files), the user, the session and the stdio redirection are applied in the child before
 * execve: no window in which the workload runs unlimited. The parent watches the child through
 * a pidfd on the loop (host->watch_fd), which also works for processes adopted after a berthd
 * restart: processes are not killed when berthd stops, like containers outlive dockerd's
 * clients. The driver's table records pid and start time, so a recycled pid is never mistaken
 * for a tenant. Each tenant gets a working directory <dir>/<handle>, a log file
 * <dir>/<handle>.log, and, when its template has a port, a host port from `ports` passed as
 * PORT and {port}. */
#include <berth/berth.h>

#include <errno.h>
#include <grp.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct cfg { const char *dir, *ports, *bind; };
struct tcfg {
    struct berth_strlist command;
    uint64_t memory;
    int64_t pids, nofile, stop_timeout;
    const char *user;
};

static const struct berth_cfg_item schema[] = {
    {"dir", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, dir),
     "where tenants' working directories and logs live (default <state_dir>/exec)", 0, NULL,
     NULL},
    {"ports", BERTH_CFG_STR, "20000-29999", 0, 0, offsetof(struct cfg, ports),
     "host ports handed to tenants whose template has a port", 0, NULL, NULL},
    {"bind", BERTH_CFG_STR, "127.0.0.1", 0, 0, offsetof(struct cfg, bind),
     "the address tenants are reached at", 0, NULL, NULL},
    {0},
};

static const struct berth_cfg_item tschema[] = {
    {"command", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct tcfg, command),
     "argv of the tenant's process; {handle}, {port} and {dir} are expanded",
     BERTH_CFG_REQUIRED, NULL, NULL},
    {"memory", BERTH_CFG_SIZE, "0", 0, 0, offsetof(struct tcfg, memory),
     "address-space limit (RLIMIT_AS); 0: none", 0, NULL, NULL},
    {"pids", BERTH_CFG_INT, "0", 0, 1000000, offsetof(struct tcfg, pids),
     "process limit (RLIMIT_NPROC, per user: use with `user`); 0: none", 0, NULL, NULL},
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

static const struct berth_host *H;

struct proc;

struct drv {
    berth_instance *self;
    struct cfg cfg;
    char dir[512];
    int port_lo, port_hi;
    struct proc *procs;
    struct rmjob *rmjobs;
};

/* a process being watched */
struct proc {
    struct proc *next;
    struct drv *d;
    char handle[40];
    pid_t pid;
    int pidfd;
    bool child;                 /* ours to reap; an adopted one is not */
    bool stopping;
    berth_watch *watch;
    berth_timer *kill_timer;
    berth_op *stop_op;          /* finished when the process is gone */
    berth_op *remove_op;        /* removal goes on when the process is gone */
};

static void remove_files(struct drv *d, const char *handle, berth_op *op);

/* ---- the table ---- */

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

static void set_state(struct drv *d, const char *handle, const char *state, pid_t pid,
                      const char *start)
{
    char spid[16];
    snprintf(spid, sizeof spid, "%d", (int)pid);
    const char *p[] = {H->name(d->self), handle, state, pid ? spid : NULL, start};
    H->store_exec(d->self, "UPDATE exec_procs SET state=?3, pid=?4, start_time=?5 "
                  "WHERE instance=?1 AND handle=?2", p, 5, NULL, NULL);
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

static void addr_of(struct drv *d, int port, char *out, size_t n)
{
    snprintf(out, n, "%s:%d", d->cfg.bind, port);
}

static struct proc *proc_find(struct drv *d, const char *handle)
{
    for (struct proc *p = d->procs; p; p = p->next)
        if (!strcmp(p->handle, handle)) return p;
    return NULL;
}

static void proc_forget(struct proc *p)
{
    struct proc **pp = &p->d->procs;
    while (*pp != p) pp = &(*pp)->next;
    *pp = p->next;
    if (p->watch) H->watch_stop(p->watch);
    if (p->kill_timer) H->timer_stop(p->kill_timer);
    close(p->pidfd);
    free(p);
}

static void describe_exit(int code, int sig, char *msg, size_t n, int *exit_code)
{
    if (sig) {
        snprintf(msg, n, "killed by signal %d (%s)", sig, strsignal(sig));
        *exit_code = 128 + sig;
    } else {
        snprintf(msg, n, "exited with status %d", code);
        *exit_code = code;
    }
}

static void on_exit_fd(berth_watch *w, int events, void *arg)
{
    (void)w; (void)events;
    struct proc *p = arg;
    struct drv *d = p->d;
    int code = -1;
    char msg[128] = "exited (status unknown: adopted process)";
    if (p->child) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED) == 0)
            describe_exit(si.si_code == CLD_EXITED ? si.si_status : 0,
                          si.si_code == CLD_EXITED ? 0 : si.si_status, msg, sizeof msg, &code);
    }
    char handle[40];
    snprintf(handle, sizeof handle, "%s", p->handle);
    berth_op *op = p->stop_op, *rm = p->remove_op;
    bool expected = p->stopping;
    proc_forget(p);
    if (rm) {
        remove_files(d, handle, rm);
        return;
    }
    set_state(d, handle, "stopped", 0, NULL);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, NULL, NULL, code, false, msg};
    if (op) {
        H->op_done(op, 0, &o, NULL);
    } else if (!expected) {
        H->log(d->self, BERTH_LOG_WARN, "tenant %s: process %s", handle, msg);
        H->driver_report(d->self, handle, &o);
    }
}

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static struct proc *watch(struct drv *d, const char *handle, pid_t pid, bool child)
{
    int fd = pidfd_open_(pid);
    if (fd < 0) return NULL;
    struct proc *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return NULL;
    }
    p->d = d;
    snprintf(p->handle, sizeof p->handle, "%s", handle);
    p->pid = pid;
    p->pidfd = fd;
    p->child = child;
    p->watch = H->watch_fd(d->self, fd, BERTH_WATCH_READABLE, on_exit_fd, p);
    p->next = d->procs;
    d->procs = p;
    return p;
}

/* Replaces {handle}, {port} and {dir} in one argument. */
static char *expand(const char *s, const char *handle, int port, const char *dir)
{
    char out[4096], num[16];
    size_t o = 0;
    snprintf(num, sizeof num, "%d", port);
    while (*s && o < sizeof out - 1) {
        const char *rep = NULL;
        size_t skip = 0;
        if (!strncmp(s, "{handle}", 8)) rep = handle, skip = 8;
        else if (!strncmp(s, "{port}", 6)) rep = num, skip = 6;
        else if (!strncmp(s, "{dir}", 5)) rep = dir, skip = 5;
        if (rep) {
            size_t l = strlen(rep);
            if (o + l >= sizeof out) break;
            memcpy(out + o, rep, l);
            o += l;
            s += skip;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = 0;
    return strdup(out);
}

static void free_vec(char **v)
{
    for (char **p = v; p && *p; p++) free(*p);
    free(v);
}

static bool parse_user(const char *u, uid_t *uid, gid_t *gid)
{
    char *end;
    unsigned long a = strtoul(u, &end, 10);
    if (end == u) return false;
    unsigned long b = a;
    if (*end == ':') {
        const char *g = end + 1;
        b = strtoul(g, &end, 10);
        if (end == g) return false;
    }
    if (*end) return false;
    *uid = (uid_t)a;
    *gid = (gid_t)b;
    return true;
}

/* Between fork and execve only async-signal-safe calls: everything was prepared before. */
static void child(const struct tcfg *t, const char *wd, int logfd, const char *prog,
                  char **argv, char **envp, bool as_user, uid_t uid, gid_t gid)
{
    setsid();
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    /* nothing of berthd's leaks into a tenant: not a socket, not the database */
    if (syscall(SYS_close_range, 3, ~0u, 0) < 0)
        for (int fd = 3; fd < 4096; fd++) close(fd);
    struct rlimit r;
    if (t->memory) {
        r.rlim_cur = r.rlim_max = (rlim_t)t->memory;
        setrlimit(RLIMIT_AS, &r);
    }
    if (t->pids) {
        r.rlim_cur = r.rlim_max = (rlim_t)t->pids;
        setrlimit(RLIMIT_NPROC, &r);
    }
    r.rlim_cur = r.rlim_max = (rlim_t)t->nofile;
    setrlimit(RLIMIT_NOFILE, &r);
    if (chdir(wd) < 0) _exit(126);
    if (as_user && (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)) _exit(126);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    execve(prog, argv, envp);
    _exit(127);
}

/* execvpe would search berthd's own PATH: the tenant's PATH decides which program runs. */
static bool resolve(const char *name, const char *path, char *out, size_t n)
{
    if (strchr(name, '/')) {
        snprintf(out, n, "%s", name);
        return access(out, X_OK) == 0;
    }
    for (const char *p = path; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        snprintf(out, n, "%.*s/%s", (int)len, len ? p : ".", name);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0) return true;
        p = colon ? colon + 1 : NULL;
    }
    return false;
}

static int spawn(struct drv *d, const berth_spec *s, int port, pid_t *out, char *err, size_t n)
{
    const struct tcfg *t = H->spec_config(s);
    const char *handle = H->spec_handle(s);
    char wd[600], logpath[600];
    snprintf(wd, sizeof wd, "%s/%s", d->dir, handle);
    snprintf(logpath, sizeof logpath, "%s/%s.log", d->dir, handle);
    uid_t uid = 0;
    gid_t gid = 0;
    bool as_user = t->user != NULL;
    if (as_user && !parse_user(t->user, &uid, &gid)) {
        snprintf(err, n, "user '%s' is not uid[:gid]", t->user);
        return BERTH_EINVAL;
    }
    char **argv = calloc(t->command.n + 1, sizeof *argv);
    size_t nenv = H->spec_env_count(s);
    char **envp = calloc(nenv + 4, sizeof *envp);
    if (!argv || !envp) {
        free(argv);
        free(envp);
        return BERTH_ENOMEM;
    }
    bool oom = false;
    for (size_t i = 0; i < t->command.n; i++)
        oom |= !(argv[i] = expand(t->command.v[i], handle, port, wd));
    if (oom) {      /* a hole would cut argv short, and free_vec stops at it */
        for (size_t i = 0; i < t->command.n; i++) free(argv[i]);
        free(argv);
        free(envp);
        return BERTH_ENOMEM;
    }
    size_t e = 0;
    const char *path = NULL;
    for (size_t i = 0; i < nenv; i++) {
        const char *v;
        const char *k = H->spec_env(s, i, &v);
        if (!strcmp(k, "PATH")) path = v;
        if (asprintf(&envp[e], "%s=%s", k, v) > 0) e++;
    }
    if (!path) {
        path = "/usr/local/bin:/usr/bin:/bin";
        if (asprintf(&envp[e], "PATH=%s", path) > 0) e++;
    }
    if (asprintf(&envp[e], "HOME=%s", wd) > 0) e++;
    if (port && asprintf(&envp[e], "PORT=%d", port) > 0) e++;
    char prog[1024];
    int logfd = -1, rc = 0;
    if (!t->command.n || !resolve(argv[0], path, prog, sizeof prog)) {
        snprintf(err, n, "command '%s' not found in PATH %s", argv[0] ? argv[0] : "", path);
        rc = BERTH_EINVAL;
    } else if ((logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640)) < 0) {
        snprintf(err, n, "cannot open %s: %s", logpath, strerror(errno));
        rc = BERTH_EIO;
    } else {
        pid_t pid = fork();
        if (pid == 0) child(t, wd, logfd, prog, argv, envp, as_user, uid, gid);
        if (pid < 0) {
            snprintf(err, n, "fork: %s", strerror(errno));
            rc = BERTH_EAGAIN;
        }
        *out = pid;
        close(logfd);
    }
    free_vec(argv);
    free_vec(envp);
    return rc;
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
    char sp[16];
    snprintf(sp, sizeof sp, "%d", port);
    const char *q[] = {H->name(d->self), handle, H->spec_template(s), sp};
    if (H->store_exec(d->self, "INSERT INTO exec_procs(instance,handle,template,port,state) "
                      "VALUES(?1,?2,?3,?4,'created')", q, 4, NULL, NULL) < 0) {
        H->op_done(op, BERTH_EIO, NULL, "cannot record the process");
        return;
    }
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
    if (proc_find(d, handle)) {          /* already running */
        H->op_done(op, 0, &o, NULL);
        return;
    }
    pid_t pid;
    int rc = spawn(d, s, r.port, &pid, err, sizeof err);
    if (rc) {
        H->op_done(op, rc, NULL, err);
        return;
    }
    char st_[32] = "";
    start_time(pid, st_, sizeof st_);
    if (!watch(d, handle, pid, true)) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        H->op_done(op, BERTH_EIO, NULL, "cannot watch the process (pidfd_open)");
        return;
    }
    set_state(d, handle, "running", pid, st_);
    H->log(d->self, BERTH_LOG_INFO, "tenant %s: started pid %d", handle, (int)pid);
    H->op_done(op, 0, &o, NULL);
}

static void escalate(berth_timer *t, void *arg)
{
    struct proc *p = arg;
    H->timer_stop(t);
    p->kill_timer = NULL;
    H->log(p->d->self, BERTH_LOG_WARN, "tenant %s: still running after SIGTERM; SIGKILL",
           p->handle);
    kill(-p->pid, SIGKILL);
}

static void op_stop(void *st, const berth_spec *s, berth_op *op)
{
    struct drv *d = st;
    const struct tcfg *t = H->spec_config(s);
    struct proc *p = proc_find(d, H->spec_handle(s));
    if (!p) {
        struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, NULL, NULL, -1, false, NULL};
        H->op_done(op, 0, &o, NULL);
        return;
    }
    p->stopping = true;
    p->stop_op = op;
    kill(-p->pid, SIGTERM);      /* the whole session: the tenant's children too */
    if (!p->kill_timer)
        p->kill_timer = H->timer_start(d->self, (uint64_t)t->stop_timeout, 0, escalate, p);
}

/* Deleting a tenant's tree may take long: `rm -rf` runs as a child, watched like a tenant. */
struct rmjob {
    struct rmjob *next;
    struct drv *d;
    berth_op *op;
    int pidfd;
    pid_t pid;
    berth_watch *w;
};

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
    const char *q[] = {H->name(d->self), handle};
    H->store_exec(d->self, "DELETE FROM exec_procs WHERE instance=?1 AND handle=?2", q, 2,
                  NULL, NULL);
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
        p->stopping = true;
        p->remove_op = op;
        kill(-p->pid, SIGKILL);
        return;
    }
    remove_files(d, handle, op);
}

struct listing { struct drv *d; berth_op *op; };

static bool list_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct listing *l = arg;
    struct drv *d = l->d;
    const char *handle = v[0];
    int port = v[2] ? atoi(v[2]) : 0;
    pid_t pid = v[3] ? (pid_t)atoi(v[3]) : 0;
    char addr[80], now[32];
    addr_of(d, port, addr, sizeof addr);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, handle, port ? addr : NULL, -1,
                               false, NULL};
    struct proc *p = proc_find(d, handle);
    if (p) {
        o.state = BERTH_OBS_RUNNING;
    } else if (pid && !strcmp(v[5], "running") && start_time(pid, now, sizeof now) && v[4] &&
               !strcmp(now, v[4])) {
        /* still the same process: adopt it */
        if (watch(d, handle, pid, false)) {
            o.state = BERTH_OBS_RUNNING;
            H->log(d->self, BERTH_LOG_INFO, "tenant %s: adopted running pid %d", handle,
                   (int)pid);
        }
    }
    H->op_list_add(l->op, handle, v[1], &o);
    return true;
}

static void op_list(void *st, berth_op *op)
{
    struct drv *d = st;
    struct listing l = {d, op};
    const char *q[] = {H->name(d->self)};
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

static int start(void *state)
{
    struct drv *d = state;
    if (mkdir_p(d->dir, 0750) < 0) {
        H->log(d->self, BERTH_LOG_ERROR, "cannot create %s: %s", d->dir, strerror(errno));
        return BERTH_EIO;
    }
    int rc = H->store_migrate(d->self, steps, sizeof steps / sizeof *steps);
    return rc ? rc : H->driver_register(d->self, &driver, d);
}

/* Processes outlive the instance (and berthd): only the watches go. */
static void destroy(void *state)
{
    struct drv *d = state;
    while (d->procs) {
        struct proc *p = d->procs;
        if (p->stop_op || p->remove_op) kill(-p->pid, SIGKILL);    /* honour a stop */
        proc_forget(p);
    }
    while (d->rmjobs) {     /* rm goes on; its op is completed as canceled by the host */
        struct rmjob *j = d->rmjobs;
        d->rmjobs = j->next;
        H->watch_stop(j->w);
        close(j->pidfd);
        free(j);
    }
    free(d);
}

BERTH_PLUGIN(.name = "exec", .version = "0.1.0",
             .description = "runs tenants as supervised local process trees",
             .config = schema, .config_size = sizeof(struct cfg),
             .template_config = tschema, .template_config_size = sizeof(struct tcfg),
             .validate = validate, .init = init, .configure = configure, .start = start,
             .destroy = destroy);
