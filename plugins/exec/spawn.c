/* spawn: a tenant's process, forked into its cgroup with its limits, user, session and
 * stdio set before execve, so there is no moment in which the workload runs unconfined.
 *
 * Between fork and execve the child makes only async-signal-safe calls: everything it needs
 * (argv, env, the resolved program, the cgroup.procs descriptors) is prepared before. A
 * close-on-exec pipe carries a failure of the child back (which step, errno), so a start that
 * cannot be confined fails with its reason instead of running a process that exits 127. */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* one id of a `user`: decimal digits only and below (uid_t)-1, the kernel's "no id".
 * strtoul alone takes "-1" and wraps "4294967296" to 0, which would run the workload as
 * root. */
static bool parse_id(const char *s, const char **end, unsigned long *out)
{
    if (*s < '0' || *s > '9') return false;
    char *e;
    errno = 0;
    unsigned long v = strtoul(s, &e, 10);
    if (errno || v >= (unsigned long)(uid_t)-1) return false;
    *end = e;
    *out = v;
    return true;
}

static bool parse_user(const char *u, uid_t *uid, gid_t *gid)
{
    const char *end;
    unsigned long a, b;
    if (!parse_id(u, &end, &a)) return false;
    b = a;
    if (*end == ':' && !parse_id(end + 1, &end, &b)) return false;
    if (*end) return false;
    *uid = (uid_t)a;
    *gid = (gid_t)b;
    return true;
}

/* What the child needs, prepared by the parent. */
struct plan {
    struct drv *d;
    const char *handle;
    const struct tcfg *t;
    const char *wd, *prog;
    char **argv, **envp;
    int logfd, errfd;
    int cgfds[CG_MAX_HIER], ncg;
    bool supervised;            /* no cgroups: a subreaper holds the tree (supervisor.c) */
    bool as_user;
    uid_t uid;
    gid_t gid;
};

static const char *const stage_names[] = {"", "joining its cgroup", "entering its directory",
                                          "switching user", "execve",
                                          "starting its supervisor"};

static _Noreturn void child_fail(const struct plan *pl, enum spawn_stage st)
{
    int msg[2] = {(int)st, errno};
    if (write(pl->errfd, msg, sizeof msg) < 0) _exit(127);
    _exit(127);
}

/* Between fork and execve only async-signal-safe calls. The cgroup comes first: from then on
 * everything the child becomes, and everything it starts, is inside it. */
static _Noreturn void child(const struct plan *pl)
{
    int e = cg_join(pl->cgfds, pl->ncg);
    if (e) {
        errno = -e;
        child_fail(pl, ST_CGROUP);
    }
    setsid();
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) dup2(nul, 0);
    dup2(pl->logfd, 1);
    dup2(pl->logfd, 2);
    /* nothing of berthd's leaks into a tenant: not a socket, not the database; the error
     * pipe is close-on-exec and stays until execve */
    if (syscall(SYS_close_range, 3, pl->errfd - 1, 0) < 0 ||
        syscall(SYS_close_range, pl->errfd + 1, ~0u, 0) < 0)
        for (int fd = 3; fd < 4096; fd++)
            if (fd != pl->errfd) close(fd);
    struct rlimit r;
    r.rlim_cur = r.rlim_max = (rlim_t)pl->t->nofile;
    setrlimit(RLIMIT_NOFILE, &r);
    if (chdir(pl->wd) < 0) child_fail(pl, ST_CHDIR);
    if (pl->as_user &&
        (setgroups(0, NULL) < 0 || setgid(pl->gid) < 0 || setuid(pl->uid) < 0))
        child_fail(pl, ST_USER);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    execve(pl->prog, pl->argv, pl->envp);
    child_fail(pl, ST_EXEC);
}

static _Noreturn void workload(const void *arg)
{
    child(arg);
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

/* The forked process's first step: wait until berthd has recorded its pid (exec_run_recorded)
 * and says go. EOF instead means berthd could not record it or died before it did: nothing
 * of the tenant may run then, as no table would name the run and a restarted berthd would
 * start a second one beside it. */
static void await_go(int go[2])
{
    char c;
    ssize_t k;
    close(go[1]);
    while ((k = read(go[0], &c, 1)) < 0 && errno == EINTR) {}
    if (k != 1) _exit(0);
    close(go[0]);
}

/* Records the run of pid, then lets the child go on. On failure the write end is closed
 * unwritten: the child sees EOF and exits; it is reaped here. */
static int release(const struct plan *pl, pid_t pid, int go, char *err, size_t n)
{
    int rc = exec_run_recorded(pl->d, pl->handle, pid, err, n);
    if (!rc && write(go, "g", 1) != 1) {
        snprintf(err, n, "cannot release the tenant's process: %s", strerror(errno));
        rc = BERTH_EIO;
    }
    close(go);
    if (rc) waitpid(pid, NULL, 0);
    return rc;
}

/* The child's verdict: EOF on the pipe means execve succeeded. The wait is the child's few
 * system calls before execve, not the workload's start-up. */
static int verdict(int fd, pid_t pid, char *err, size_t n)
{
    int msg[2];
    ssize_t k;
    while ((k = read(fd, msg, sizeof msg)) < 0 && errno == EINTR) {}
    close(fd);
    if (k != (ssize_t)sizeof msg) return 0;
    waitpid(pid, NULL, 0);      /* it has _exit'ed or is about to */
    int st = msg[0] >= ST_CGROUP && msg[0] <= ST_SUPERVISOR ? msg[0] : ST_EXEC;
    snprintf(err, n, "the tenant's process failed %s: %s", stage_names[st], strerror(msg[1]));
    return st == ST_CGROUP ? BERTH_EIO : BERTH_EINVAL;
}

/* Forks, records the run, releases the child and waits for its verdict. */
static int fork_exec(struct plan *pl, pid_t *out, char *err, size_t n)
{
    int pfd[2], go[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        snprintf(err, n, "pipe: %s", strerror(errno));
        return BERTH_EAGAIN;
    }
    if (pipe2(go, O_CLOEXEC) < 0) {
        snprintf(err, n, "pipe: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return BERTH_EAGAIN;
    }
    pl->errfd = pfd[1];
    pid_t pid = fork();
    if (pid == 0) await_go(go);
    if (pid == 0 && !pl->supervised) child(pl);
    if (pid == 0) supervise(workload, pl, pl->errfd, pl->t->stop_timeout);
    int e = errno;
    close(pfd[1]);
    close(go[0]);
    if (pid < 0) {
        close(pfd[0]);
        close(go[1]);
        snprintf(err, n, "fork: %s", strerror(e));
        return BERTH_EAGAIN;
    }
    int rc = release(pl, pid, go[1], err, n);
    if (rc) close(pfd[0]);
    else rc = verdict(pfd[0], pid, err, n);
    if (!rc) *out = pid;
    return rc;
}

/* argv with {handle}, {port} and {dir} expanded, and the environment; NULL when out of
 * memory. *path is the tenant's PATH. */
static int build(const berth_spec *s, int port, const char *wd, char ***argvp, char ***envpp,
                 const char **path)
{
    const struct tcfg *t = H->spec_config(s);
    const char *handle = H->spec_handle(s);
    size_t nenv = H->spec_env_count(s);
    char **argv = calloc(t->command.n + 1, sizeof *argv);
    char **envp = calloc(nenv + 4, sizeof *envp);
    bool oom = !argv || !envp;
    for (size_t i = 0; !oom && i < t->command.n; i++)
        oom |= !(argv[i] = expand(t->command.v[i], handle, port, wd));
    if (oom) {      /* a hole would cut argv short, and free_vec stops at it */
        for (size_t i = 0; argv && i < t->command.n; i++) free(argv[i]);
        free(argv);
        free(envp);
        return BERTH_ENOMEM;
    }
    size_t e = 0;
    *path = NULL;
    for (size_t i = 0; i < nenv; i++) {
        const char *v;
        const char *k = H->spec_env(s, i, &v);
        if (!strcmp(k, "PATH")) *path = v;
        if (asprintf(&envp[e], "%s=%s", k, v) > 0) e++;
    }
    if (!*path) {
        *path = "/usr/local/bin:/usr/bin:/bin";
        if (asprintf(&envp[e], "PATH=%s", *path) > 0) e++;
    }
    if (asprintf(&envp[e], "HOME=%s", wd) > 0) e++;
    if (port && asprintf(&envp[e], "PORT=%d", port) > 0) e++;
    *argvp = argv;
    *envpp = envp;
    return 0;
}

/* The log sits beside the working directory, where a tenant running as berthd's user can
 * reach it: a FIFO there would hold the loop in open(), a symlink send the output anywhere.
 * Returns the fd, -1 with errno, or -2 when it is not a regular file. */
static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW,
                  0640);
    if (fd < 0) return errno == ENXIO || errno == ELOOP ? -2 : -1;    /* a FIFO, a symlink */
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -2;
    }
    fcntl(fd, F_SETFL, O_APPEND);     /* the tenant's stdout: blocking, as it expects */
    return fd;
}

int spawn(struct drv *d, const berth_spec *s, int port, pid_t *out, char *err, size_t n)
{
    const struct tcfg *t = H->spec_config(s);
    const char *handle = H->spec_handle(s);
    char wd[600], logpath[600], prog[1024];
    snprintf(wd, sizeof wd, "%s/%s", d->dir, handle);
    snprintf(logpath, sizeof logpath, "%s/%s.log", d->dir, handle);
    struct plan pl = {.d = d, .handle = handle, .t = t, .wd = wd, .prog = prog, .logfd = -1,
                      .as_user = t->user != NULL, .supervised = d->cg.mode == CG_NONE};
    struct cg_limits lim = {t->cpus, t->memory, t->pids};
    if (pl.as_user && !parse_user(t->user, &pl.uid, &pl.gid)) {
        snprintf(err, n, "user '%s' is not uid[:gid]", t->user);
        return BERTH_EINVAL;
    }
    if (cg_check(&d->cg, &lim, err, n)) return BERTH_EINVAL;
    const char *path;
    int rc = build(s, port, wd, &pl.argv, &pl.envp, &path);
    if (rc) return rc;
    if (!t->command.n || !resolve(pl.argv[0], path, prog, sizeof prog)) {
        snprintf(err, n, "command '%s' not found in PATH %s", pl.argv[0] ? pl.argv[0] : "",
                 path);
        rc = BERTH_EINVAL;
    } else if ((pl.logfd = open_log(logpath)) < 0) {
        snprintf(err, n, "cannot open %s: %s", logpath,
                 pl.logfd == -2 ? "it is not a regular file" : strerror(errno));
        pl.logfd = -1;
        rc = BERTH_EIO;
    } else if (d->cg.mode != CG_NONE &&
               cg_prepare(&d->cg, H->name(d->self), handle, &lim, pl.cgfds, &pl.ncg, err, n)) {
        rc = BERTH_EIO;
    } else {
        rc = fork_exec(&pl, out, err, n);
    }
    while (pl.ncg) close(pl.cgfds[--pl.ncg]);
    if (pl.logfd >= 0) close(pl.logfd);
    free_vec(pl.argv);
    free_vec(pl.envp);
    return rc;
}
