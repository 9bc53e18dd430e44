/* Cost of starting an exec tenant in its own cgroup against a bare fork/exec, in the same run.
 *
 *   build/bench/exec_bench [starts] [runs]     (as root, on a machine with cgroups)
 *
 * Each start forks, execs /bin/true and waits for it. Rows: the bare fork/exec (baseline);
 * the same with the child joining an existing cgroup before execve (what a wake costs); and
 * a full placement as the exec driver does it for a new tenant: create the cgroup in every
 * hierarchy, write cpus/memory/pids, join, exec, wait, remove the cgroup. Each row is timed
 * over `starts` starts, `runs` times, interleaved; the median per start and the spread
 * (min-max of the runs) are printed. */
#include "cgroup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const struct cg_limits limits = {0.5, 256u << 20, 64};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int start_one(const int *fds, int nfds)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (cg_join(fds, nfds)) _exit(125);
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        execve("/bin/true", argv, envp);
        _exit(127);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) return -1;
    return 0;
}

/* 0: bare; 1: join a prepared cgroup; 2: create, limit, join, remove */
static double run_case(const struct cg_sys *s, int kind, int starts)
{
    int fds[CG_MAX_HIER], nfds = 0;
    char err[256], handle[32];
    if (kind == 1 && cg_prepare(s, "bench", "warm", &limits, fds, &nfds, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    double t0 = now_us();
    for (int i = 0; i < starts; i++) {
        if (kind == 2) {
            snprintf(handle, sizeof handle, "t%d", i);
            if (cg_prepare(s, "bench", handle, &limits, fds, &nfds, err, sizeof err)) {
                fprintf(stderr, "%s\n", err);
                exit(1);
            }
        }
        if (start_one(fds, kind ? nfds : 0) < 0) {
            fprintf(stderr, "a start failed\n");
            exit(1);
        }
        if (kind == 2) {
            while (nfds) close(fds[--nfds]);
            cg_remove(s, "bench", handle);
        }
    }
    double per = (now_us() - t0) / starts;
    while (nfds) close(fds[--nfds]);
    if (kind == 1) cg_remove(s, "bench", "warm");
    return per;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int starts = argc > 1 ? atoi(argv[1]) : 200, runs = argc > 2 ? atoi(argv[2]) : 7;
    if (starts < 1 || runs < 1 || runs > 64) {
        fprintf(stderr, "usage: exec_bench [starts] [runs<=64]\n");
        return 2;
    }
    struct cg_sys s;
    char root[64];
    snprintf(root, sizeof root, "berth-bench-%d", (int)getpid());
    cg_detect(&s, root);
    if (s.mode == CG_NONE || cg_check(&s, &limits, root, sizeof root)) {
        fprintf(stderr, "no usable cgroups with cpu, memory and pids: %s\n", s.why);
        return 77;
    }
    static const char *const names[] = {"bare fork/exec (baseline)",
                                        "join an existing cgroup",
                                        "create cgroup + limits, join, remove"};
    double t[3][64];
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 3; k++) t[k][r] = run_case(&s, k, starts);
    cg_release(&s, "bench");
    printf("cgroup %s, %d starts x %d runs, /bin/true\n", s.mode == CG_V1 ? "v1" : "v2",
           starts, runs);
    printf("| case | per start, median | spread (min-max) | vs bare |\n|---|---:|---:|---:|\n");
    double base = 0;
    for (int k = 0; k < 3; k++) {
        qsort(t[k], (size_t)runs, sizeof t[k][0], cmp);
        double med = t[k][runs / 2];
        if (!k) base = med;
        printf("| %s | %.0f us | %.0f-%.0f us | %.2fx |\n", names[k], med, t[k][0],
               t[k][runs - 1], med / base);
    }
    return 0;
}
