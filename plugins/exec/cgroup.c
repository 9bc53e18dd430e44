/* cgroup: per-tenant control groups on v1 hierarchies or a v2 subtree (see cgroup.h).
 *
 * The tenants' cgroups hang below berthd's own cgroup in each hierarchy, so whatever limits
 * and accounting the operator (or systemd) put on berthd also bound its tenants, and two
 * berthds on one machine never share a cgroup (the root name is per installation). */
#include "cgroup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct { const char *name; unsigned bit; } ctl_names[] = {
    {"cpu", CG_CPU}, {"memory", CG_MEMORY}, {"pids", CG_PIDS}, {"freezer", CG_FREEZER},
};

/* ---- small file helpers ---- */

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    ssize_t k = write(fd, text, strlen(text));
    int rc = k < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static ssize_t read_file(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t o = 0;
    ssize_t k;
    while (o < n - 1 && (k = read(fd, buf + o, n - 1 - o)) > 0) o += (size_t)k;
    close(fd);
    buf[o] = 0;
    return (ssize_t)o;
}

static bool has_token(const char *list, const char *tok, char sep)
{
    size_t l = strlen(tok);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, sep);
        size_t len = e ? (size_t)(e - p) : strcspn(p, "\n");
        if (len == l && !strncmp(p, tok, l)) return true;
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* ---- detection ---- */

/* berthd's own cgroup in the hierarchy carrying `ctl` ("" for v2): from /proc/self/cgroup */
static bool own_path(const char *ctl, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *b = 0;
        const char *ctls = a + 1;
        found = *ctl ? has_token(ctls, ctl, ',') : !*ctls;
        if (found) snprintf(out, n, "%.*s", (int)strcspn(b + 1, "\n"), b + 1);
    }
    fclose(f);
    return found;
}

/* dir = mountpoint + (own path below the mount's root) + "/" + root; creates it */
static bool add_hier(struct cg_sys *s, const char *mnt, const char *mroot, const char *own,
                     const char *root, unsigned ctls)
{
    size_t rl = strcmp(mroot, "/") ? strlen(mroot) : 0;
    if (strncmp(own, mroot, rl)) return false;      /* outside what this mount shows */
    const char *rel = own + rl;
    if (!strcmp(rel, "/")) rel = "";
    struct cg_hier *h = &s->h[s->n];
    if (snprintf(h->dir, sizeof h->dir, "%s%s/%s", mnt, rel, root) >= (int)sizeof h->dir)
        return false;
    if (mkdir(h->dir, 0755) < 0 && errno != EEXIST) {
        snprintf(s->why, sizeof s->why, "cannot create %.200s: %s", h->dir, strerror(errno));
        return false;
    }
    h->ctls = ctls;
    s->ctls |= ctls;
    /* the processes are listed (and frozen) where a tenant always is: not a cpu-only one */
    if ((ctls & CG_FREEZER) || s->n == 0 || s->h[s->track].ctls == CG_CPU) s->track = s->n;
    s->n++;
    return true;
}

/* v2: enable our controllers for the children of `dir`; returns those `dir` has */
static unsigned v2_enable(const char *dir, const char *child)
{
    char path[600], buf[512];
    unsigned got = 0;
    for (size_t i = 0; i < sizeof ctl_names / sizeof *ctl_names; i++) {
        if (ctl_names[i].bit == CG_FREEZER) continue;      /* core in v2: cgroup.freeze */
        char op[32];
        snprintf(op, sizeof op, "+%s", ctl_names[i].name);
        snprintf(path, sizeof path, "%s/cgroup.subtree_control", dir);
        write_file(path, op);       /* refused when dir holds processes: then not ours */
    }
    snprintf(path, sizeof path, "%s/cgroup.controllers", child);
    if (read_file(path, buf, sizeof buf) < 0) return 0;
    for (size_t i = 0; i < sizeof ctl_names / sizeof *ctl_names; i++)
        if (has_token(buf, ctl_names[i].name, ' ')) got |= ctl_names[i].bit;
    snprintf(path, sizeof path, "%s/cgroup.freeze", child);
    if (access(path, F_OK) == 0) got |= CG_FREEZER;
    return got;
}

struct mnt { char point[256], root[256], type[16], opts[256]; };

static bool parse_mountinfo(char *line, struct mnt *m)
{
    char *sep = strstr(line, " - ");
    if (!sep) return false;
    *sep = 0;
    if (sscanf(line, "%*s %*s %*s %255s %255s", m->root, m->point) != 2) return false;
    return sscanf(sep + 3, "%15s %*s %255s", m->type, m->opts) == 2;
}

void cg_detect(struct cg_sys *s, const char *root)
{
    memset(s, 0, sizeof *s);
    snprintf(s->why, sizeof s->why, "no cgroup hierarchy is mounted");
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return;
    char line[1024], own[512];
    struct mnt v2 = {.type = ""};
    while (fgets(line, sizeof line, f) && s->n < CG_MAX_HIER) {
        struct mnt m;
        if (!parse_mountinfo(line, &m)) continue;
        if (!strcmp(m.type, "cgroup2")) v2 = m;
        if (strcmp(m.type, "cgroup")) continue;
        unsigned ctls = 0;
        const char *first = NULL;
        for (size_t i = 0; i < sizeof ctl_names / sizeof *ctl_names; i++)
            if (has_token(m.opts, ctl_names[i].name, ',')) {
                ctls |= ctl_names[i].bit;
                if (!first) first = ctl_names[i].name;
            }
        if (ctls && own_path(first, own, sizeof own)) add_hier(s, m.point, m.root, own, root,
                                                               ctls);
    }
    fclose(f);
    if (s->n) {
        s->mode = CG_V1;
    } else if (*v2.type && own_path("", own, sizeof own) &&
               add_hier(s, v2.point, v2.root, own, root, 0)) {
        char parent[400];
        snprintf(parent, sizeof parent, "%.*s", (int)(strrchr(s->h[0].dir, '/') - s->h[0].dir),
                 s->h[0].dir);
        s->h[0].ctls = s->ctls = v2_enable(parent, s->h[0].dir);
        s->mode = CG_V2;
    }
}

/* ---- per tenant ---- */

static int tenant_dir(const struct cg_hier *h, const char *inst, const char *handle,
                      const char *file, char *out, size_t n)
{
    int k = snprintf(out, n, "%s/%s%s%s%s%s", h->dir, inst, handle ? "/" : "",
                     handle ? handle : "", file ? "/" : "", file ? file : "");
    return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

int cg_check(const struct cg_sys *s, const struct cg_limits *l, char *err, size_t n)
{
    const char *missing = l->cpus > 0 && !(s->ctls & CG_CPU) ? "cpus (cgroup cpu controller)"
        : l->memory && !(s->ctls & CG_MEMORY) ? "memory (cgroup memory controller)"
        : l->pids && !(s->ctls & CG_PIDS) ? "pids (cgroup pids controller)" : NULL;
    if (!missing) return 0;
    snprintf(err, n, "the template asks for a %s limit this machine cannot enforce: %s",
             missing, s->mode == CG_NONE ? s->why : "the controller is not available");
    return -1;
}

static int set_limit(const struct cg_hier *h, bool v2, const char *base, unsigned ctl,
                     const struct cg_limits *l, char *err, size_t n)
{
    char path[700], v[64];
    const char *file;
    if (ctl == CG_CPU) {
        long period = 100000, quota = (long)(l->cpus * (double)period + 0.5);
        if (l->cpus > 0 && quota < 1000) quota = 1000;      /* the kernel's minimum */
        if (v2) {
            file = "cpu.max";
            if (l->cpus > 0) snprintf(v, sizeof v, "%ld %ld", quota, period);
            else snprintf(v, sizeof v, "max %ld", period);
        } else {
            snprintf(path, sizeof path, "%s/cpu.cfs_period_us", base);
            snprintf(v, sizeof v, "%ld", period);
            write_file(path, v);
            file = "cpu.cfs_quota_us";
            snprintf(v, sizeof v, "%ld", l->cpus > 0 ? quota : -1L);
        }
    } else if (ctl == CG_MEMORY) {
        file = v2 ? "memory.max" : "memory.limit_in_bytes";
        if (l->memory) snprintf(v, sizeof v, "%llu", (unsigned long long)l->memory);
        else snprintf(v, sizeof v, v2 ? "max" : "-1");
    } else if (ctl == CG_PIDS) {
        file = "pids.max";
        if (l->pids) snprintf(v, sizeof v, "%lld", (long long)l->pids);
        else snprintf(v, sizeof v, "max");
    } else {
        return 0;
    }
    if (!(h->ctls & ctl)) return 0;
    snprintf(path, sizeof path, "%s/%s", base, file);
    int rc = write_file(path, v);
    if (rc) snprintf(err, n, "cannot set %s to %s: %s", path, v, strerror(-rc));
    return rc;
}

int cg_prepare(const struct cg_sys *s, const char *inst, const char *handle,
               const struct cg_limits *l, int *fds, int *nfds, char *err, size_t n)
{
    *nfds = 0;
    int rc = 0;
    for (int i = 0; i < s->n && !rc; i++) {
        const struct cg_hier *h = &s->h[i];
        char idir[600], tdir[600], procs[700];
        /* a cgroup of its own in the cpu hierarchy makes the tenant one CFS group among the
         * machine's tasks: under load it would get a task's share for its whole tree, not
         * one per process. Only a cpu limit is worth that. */
        if (h->ctls == CG_CPU && l->cpus <= 0 && i != s->track) continue;
        if ((rc = tenant_dir(h, inst, NULL, NULL, idir, sizeof idir)) ||
            (rc = tenant_dir(h, inst, handle, NULL, tdir, sizeof tdir))) {
            snprintf(err, n, "cgroup path too long under %s", h->dir);
            break;
        }
        if ((mkdir(h->dir, 0755) < 0 && errno != EEXIST) ||
            (mkdir(idir, 0755) < 0 && errno != EEXIST)) {
            rc = -errno;
            snprintf(err, n, "cannot create cgroup %s: %s", idir, strerror(errno));
            break;
        }
        if (s->mode == CG_V2) v2_enable(h->dir, idir);
        if (mkdir(tdir, 0755) < 0 && errno != EEXIST) {
            rc = -errno;
            snprintf(err, n, "cannot create cgroup %s: %s", tdir, strerror(errno));
            break;
        }
        if (s->mode == CG_V2) v2_enable(idir, tdir);
        for (unsigned c = CG_CPU; c <= CG_PIDS && !rc; c <<= 1)
            rc = set_limit(h, s->mode == CG_V2, tdir, c, l, err, n);
        snprintf(procs, sizeof procs, "%s/cgroup.procs", tdir);
        if (!rc && (fds[*nfds] = open(procs, O_WRONLY | O_CLOEXEC)) < 0) {
            rc = -errno;
            snprintf(err, n, "cannot open %s: %s", procs, strerror(errno));
        } else if (!rc) {
            (*nfds)++;
        }
    }
    if (rc)
        while (*nfds) close(fds[--*nfds]);
    return rc;
}

int cg_join(const int *fds, int nfds)
{
    char buf[16], *p = buf + sizeof buf;
    unsigned long v = (unsigned long)getpid();
    do *--p = (char)('0' + v % 10);
    while ((v /= 10));
    for (int i = 0; i < nfds; i++)
        if (write(fds[i], p, (size_t)(buf + sizeof buf - p)) < 0) return -errno;
    return 0;
}

int cg_pids(const struct cg_sys *s, const char *inst, const char *handle, pid_t *out, int max)
{
    if (s->mode == CG_NONE) return -1;
    char path[700];
    if (tenant_dir(&s->h[s->track], inst, handle, "cgroup.procs", path, sizeof path)) return -1;
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    int k = 0;
    long v;
    while (k < max && fscanf(f, "%ld", &v) == 1) out[k++] = (pid_t)v;
    fclose(f);
    return k;
}

int cg_signal(const struct cg_sys *s, const char *inst, const char *handle, int sig)
{
    if (s->mode == CG_NONE) return -1;
    char path[700];
    if (tenant_dir(&s->h[s->track], inst, handle, "cgroup.procs", path, sizeof path)) return -1;
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    int k = 0;
    long v;
    while (fscanf(f, "%ld", &v) == 1) {     /* as read: a tree has no size limit here */
        if (v > 0) kill((pid_t)v, sig);
        k++;
    }
    fclose(f);
    return k;
}

static int freezer_set(const struct cg_sys *s, const char *inst, const char *handle,
                       bool frozen)
{
    for (int i = 0; i < s->n; i++) {
        if (!(s->h[i].ctls & CG_FREEZER)) continue;
        char path[700];
        bool v2 = s->mode == CG_V2;
        if (tenant_dir(&s->h[i], inst, handle, v2 ? "cgroup.freeze" : "freezer.state", path,
                       sizeof path))
            return -1;
        return write_file(path, v2 ? (frozen ? "1" : "0") : (frozen ? "FROZEN" : "THAWED"));
    }
    return -1;
}

long cg_oom_kills(const struct cg_sys *s, const char *inst, const char *handle)
{
    for (int i = 0; i < s->n; i++) {
        if (!(s->h[i].ctls & CG_MEMORY)) continue;
        char path[700], buf[1024];
        if (tenant_dir(&s->h[i], inst, handle,
                       s->mode == CG_V2 ? "memory.events" : "memory.oom_control", path,
                       sizeof path) || read_file(path, buf, sizeof buf) < 0)
            return -1;
        const char *at = strstr(buf, "oom_kill ");     /* not oom_kill_disable */
        return at ? strtol(at + 9, NULL, 10) : -1;
    }
    return -1;
}

void cg_thaw(const struct cg_sys *s, const char *inst, const char *handle)
{
    freezer_set(s, inst, handle, false);
}

int cg_kill(const struct cg_sys *s, const char *inst, const char *handle)
{
    pid_t pids[1];
    int k = cg_pids(s, inst, handle, pids, 1);
    if (k <= 0) return k;
    char path[700];
    if (s->mode == CG_V2 &&
        !tenant_dir(&s->h[0], inst, handle, "cgroup.kill", path, sizeof path) &&
        write_file(path, "1") == 0)
        return k;
    /* Frozen tasks cannot fork; they take the SIGKILL as soon as they are thawed. Freezing
     * may still be in progress when we read the list: the caller sweeps again until empty. */
    bool frozen = freezer_set(s, inst, handle, true) == 0;
    k = cg_signal(s, inst, handle, SIGKILL);
    if (frozen) freezer_set(s, inst, handle, false);
    return k;
}

int cg_remove(const struct cg_sys *s, const char *inst, const char *handle)
{
    int rc = 0;
    for (int i = 0; i < s->n; i++) {
        char path[700];
        if (tenant_dir(&s->h[i], inst, handle, NULL, path, sizeof path)) continue;
        if (rmdir(path) < 0 && errno != ENOENT && !rc) rc = -errno;
    }
    cg_release(s, inst);
    return rc;
}

void cg_release(const struct cg_sys *s, const char *inst)
{
    for (int i = 0; i < s->n; i++) {
        char path[700];
        if (!tenant_dir(&s->h[i], inst, NULL, NULL, path, sizeof path)) rmdir(path);
        rmdir(s->h[i].dir);     /* both fail while a tenant's cgroup is still there */
    }
}

void cg_each(const struct cg_sys *s, const char *inst, void (*fn)(const char *handle, void *),
             void *arg)
{
    if (s->mode == CG_NONE) return;
    char path[700];
    if (tenant_dir(&s->h[s->track], inst, NULL, NULL, path, sizeof path)) return;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_type == DT_DIR && e->d_name[0] != '.') fn(e->d_name, arg);
    closedir(d);
}
