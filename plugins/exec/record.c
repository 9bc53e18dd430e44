/* record: <dir>/<handle>.run, one small text file per tenant mirroring its exec_procs row.
 *
 * Docker keeps labels on its containers; this is the exec driver's equivalent: if the state
 * database is lost, list() rebuilds its rows from these files, so the running processes are
 * adopted instead of started a second time. The file sits beside the tenant's working
 * directory, not in it, so a tenant with a user of its own cannot rewrite it; one that runs
 * as berthd's user can, and only regular files are read (never through a symlink). */
#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUFFIX ".run"

static void path_of(const struct drv *d, const char *handle, const char *suffix, char *out,
                    size_t n)
{
    snprintf(out, n, "%s/%s%s", d->dir, handle, suffix);
}

int record_write(const struct drv *d, const char *handle, const struct record *r)
{
    char path[600], tmp[620], text[256];
    path_of(d, handle, SUFFIX, path, sizeof path);
    path_of(d, handle, SUFFIX ".tmp", tmp, sizeof tmp);
    int len = snprintf(text, sizeof text,
                       "template=%s\nport=%d\npid=%d\nstart_time=%s\nstate=%s\n", r->tmpl,
                       r->port, (int)r->pid, r->start, r->state);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) return -errno;
    int rc = write(fd, text, (size_t)len) == len && fsync(fd) == 0 ? 0 : -(errno ? errno : EIO);
    close(fd);
    if (!rc && rename(tmp, path) < 0) rc = -errno;
    if (rc) unlink(tmp);
    return rc;
}

static void field(const char *text, const char *key, char *out, size_t n)
{
    size_t kl = strlen(key);
    out[0] = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, key, kl) && p[kl] == '=') {
            snprintf(out, n, "%.*s", (int)strcspn(p + kl + 1, "\n"), p + kl + 1);
            return;
        }
}

int record_read(const struct drv *d, const char *handle, struct record *r)
{
    char path[600], text[512], num[16];
    path_of(d, handle, SUFFIX, path, sizeof path);
    /* the tenant may reach this file (as ../<handle>.run when it runs as berthd's user): a
     * FIFO would hold the loop in open() and a symlink point anywhere */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    ssize_t k = read(fd, text, sizeof text - 1);
    close(fd);
    if (k <= 0) return -EINVAL;
    text[k] = 0;
    memset(r, 0, sizeof *r);
    field(text, "template", r->tmpl, sizeof r->tmpl);
    field(text, "start_time", r->start, sizeof r->start);
    field(text, "state", r->state, sizeof r->state);
    field(text, "port", num, sizeof num);
    r->port = atoi(num);
    field(text, "pid", num, sizeof num);
    r->pid = (pid_t)atoi(num);
    return r->state[0] ? 0 : -EINVAL;
}

void record_remove(const struct drv *d, const char *handle)
{
    char path[600];
    path_of(d, handle, SUFFIX, path, sizeof path);
    unlink(path);
}

void record_each(const struct drv *d, void (*fn)(const char *handle, void *), void *arg)
{
    DIR *dir = opendir(d->dir);
    if (!dir) return;
    struct dirent *e;
    while ((e = readdir(dir))) {
        size_t l = strlen(e->d_name);
        if (l <= strlen(SUFFIX) || l - strlen(SUFFIX) >= 40 ||
            strcmp(e->d_name + l - strlen(SUFFIX), SUFFIX))
            continue;
        char handle[BERTH_HANDLE_MAX + 1];
        snprintf(handle, sizeof handle, "%.*s", (int)(l - strlen(SUFFIX)), e->d_name);
        fn(handle, arg);
    }
    closedir(dir);
}
