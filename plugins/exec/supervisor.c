/* supervisor: where there are no cgroups, one small process per tenant holds its tree.
 *
 * berthd forks it (no execve: it is a copy of berthd that closes everything it inherited);
 * it makes itself a child subreaper (PR_SET_CHILD_SUBREAPER) and forks the workload. Every
 * process the workload starts is its descendant, and stays one when its parent dies or it
 * calls setsid: orphans are re-parented to the subreaper, not to init. So "no child left"
 * (waitpid: ECHILD) means the whole tree is gone, whatever it did.
 *
 * Protocol with the driver, by signal (pidfd_send_signal, never a recycled pid):
 *   SIGTERM  SIGTERM to every descendant; SIGKILL to what is left after stop_timeout
 *   SIGUSR1  SIGKILL to every descendant now, again every 20 ms until none is left
 * When the workload (the leader) exits on its own, the rest of the tree is killed. The
 * supervisor exits once nothing is left, with the leader's status (re-raising its signal),
 * so the driver's pidfd watch sees the tree's end as it saw a plain process's exit.
 *
 * Limits of this mode: the supervisor runs as berthd's user; a workload running as the same
 * user (root) can kill it, and then the rest of its tree escapes to init. Nothing here
 * allocates: berthd may have had threads when it forked. */
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXPROC 32768
#define SWEEP_NS 20000000L

/* the supervisor's copy of berthd's memory: these are touched only there */
static pid_t all_pid[MAXPROC], all_ppid[MAXPROC], tree[MAXPROC];

static pid_t parse_pid(const char *s)
{
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000) return 0;
        v = v * 10 + (*s - '0');
    }
    return (pid_t)v;
}

static pid_t ppid_of(pid_t pid)
{
    char path[32] = "/proc/", buf[512], *p = path + 6;
    char digits[12];
    int n = 0;
    for (pid_t v = pid; v; v /= 10) digits[n++] = (char)('0' + v % 10);
    while (n) *p++ = digits[--n];
    memcpy(p, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) return 0;
    buf[k] = 0;
    char *e = strrchr(buf, ')');    /* "pid (comm) S ppid ..." */
    if (!e || e[1] != ' ' || !e[2] || e[3] != ' ') return 0;
    long v = 0;
    for (p = e + 4; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
    return (pid_t)v;
}

/* Every process of the machine with its parent, from /proc (getdents64: no allocation). */
static int scan(void)
{
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC), n = 0;
    if (fd < 0) return 0;
    char buf[8192];
    long k;
    while ((k = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0)
        for (long off = 0; off < k;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type;
                     char name[]; } *e = (void *)(buf + off);
            pid_t pid = parse_pid(e->name);
            if (pid && n < MAXPROC && (all_ppid[n] = ppid_of(pid))) all_pid[n++] = pid;
            off += e->reclen;
        }
    close(fd);
    return n;
}

/* Signals every descendant of this process; returns how many there were. */
static int signal_tree(int sig)
{
    int n = scan(), m = 0;
    pid_t self = getpid();
    for (bool grew = true; grew;) {     /* parents before children, whatever /proc's order */
        grew = false;
        for (int i = 0; i < n; i++) {
            if (!all_pid[i]) continue;
            bool in = all_ppid[i] == self;
            for (int j = 0; j < m && !in; j++) in = all_ppid[i] == tree[j];
            if (!in) continue;
            tree[m++] = all_pid[i];
            all_pid[i] = 0;
            grew = true;
        }
    }
    for (int i = 0; i < m; i++) kill(tree[i], sig);
    return m;
}

static _Noreturn void exit_like(int status)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        raise(sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 127);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reaps what ended; true once nothing is left. */
static bool reap(pid_t leader, bool *leader_done, int *status)
{
    for (;;) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r > 0) {
            if (r == leader) {
                *leader_done = true;
                *status = st;
            }
            continue;
        }
        return r < 0 && errno == ECHILD;
    }
}

static _Noreturn void watch_tree(pid_t leader, int64_t stop_timeout_ms, const sigset_t *set)
{
    bool leader_done = false, killing = false;
    int status = 0;
    int64_t deadline = 0;
    for (;;) {
        siginfo_t si;
        int sig;
        if (killing || deadline) {
            int64_t left = killing ? 0 : deadline - now_ms();
            struct timespec ts = {0, SWEEP_NS};
            if (left > 20) ts = (struct timespec){left / 1000, (left % 1000) * 1000000L};
            sig = sigtimedwait(set, &si, &ts);
        } else {
            sig = sigwaitinfo(set, &si);
        }
        if (sig == SIGTERM) {
            signal_tree(SIGTERM);
            if (!deadline) deadline = now_ms() + stop_timeout_ms;
        } else if (sig == SIGUSR1) {
            killing = true;
        }
        if (reap(leader, &leader_done, &status)) exit_like(status);
        /* a leader that ended on its own takes its tree along; after a stop the rest has
         * until the deadline */
        if ((leader_done && !deadline) || (deadline && now_ms() >= deadline)) killing = true;
        if (killing) signal_tree(SIGKILL);
    }
}

_Noreturn void supervise(void (*workload)(const void *), const void *arg, int errfd,
                         int64_t stop_timeout_ms)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGHUP);                /* not berthd's handlers: nothing to do */
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);     /* taken with sigwaitinfo, not handlers */
    setsid();
    prctl(PR_SET_NAME, SUPERVISOR_NAME);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        int msg[2] = {ST_SUPERVISOR, errno};
        if (write(errfd, msg, sizeof msg) < 0) _exit(127);
        _exit(127);
    }
    pid_t leader = fork();
    if (leader == 0) workload(arg);
    if (leader < 0) {
        int msg[2] = {ST_SUPERVISOR, errno};
        if (write(errfd, msg, sizeof msg) < 0) _exit(127);
        _exit(127);
    }
    /* nothing of berthd's stays open here: not a socket, not the database, not the pipe
     * whose end tells berthd that the workload has exec'd */
    int nul = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3 && nul >= 0; fd++) dup2(nul, fd);
    if (syscall(SYS_close_range, 3, ~0u, 0) < 0)
        for (int fd = 3; fd < 4096; fd++) close(fd);
    watch_tree(leader, stop_timeout_ms, &set);
}
