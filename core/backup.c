/* GET /v1/system/backup: a consistent copy of the state database while berthd runs, made
 * with SQLite's online backup into a scratch file of the state dir and answered as the
 * body (application/vnd.sqlite3). The copy goes a chunk of pages per loop turn, so a large
 * database never blocks the loop for long; the backup source is berthd's own connection,
 * whose writes in between SQLite carries into the copy, so the result is the database as
 * of the last step. */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGES_PER_STEP 512

struct backup {
    struct list link;
    berth_req *r;
    sqlite3 *dst;
    sqlite3_backup *b;
    char *path;
    uv_timer_t timer;
};

static struct list backups = {&backups, &backups};
static unsigned serial;

static void closed(uv_handle_t *h)
{
    free(h->data);
}

/* ends a backup: answers err (a 500) or the copy, and removes the scratch file */
static void finish(struct backup *bk, const char *err)
{
    if (bk->b) sqlite3_backup_finish(bk->b);
    if (bk->dst) sqlite3_close(bk->dst);
    char *data = NULL;
    size_t len = 0;
    int fd = err ? -1 : open(bk->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        data = xmalloc((size_t)st.st_size + 1);
        while (len < (size_t)st.st_size) {
            ssize_t n = read(fd, data + len, (size_t)st.st_size - len);
            if (n <= 0) break;
            len += (size_t)n;
        }
        if (len != (size_t)st.st_size) err = "cannot read the copy back";
    } else if (!err) {
        err = strerror(errno);
    }
    if (fd >= 0) close(fd);
    unlink(bk->path);
    if (err) req_respond_error(bk->r, 500, "backup_failed", "backup: %s", err);
    else req_respond(bk->r, 200, "application/vnd.sqlite3", data, len);
    if (!err) log_info("backup: %zu bytes sent", len);
    free(data);
    free(bk->path);
    list_del(&bk->link);
    uv_close((uv_handle_t *)&bk->timer, closed);
}

static void step(uv_timer_t *t)
{
    struct backup *bk = t->data;
    int rc = sqlite3_backup_step(bk->b, PAGES_PER_STEP);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        uv_timer_start(&bk->timer, step, rc == SQLITE_OK ? 0 : 10, 0);
        return;
    }
    if (rc == SQLITE_DONE) {
        finish(bk, NULL);
        return;
    }
    char err[256];
    snprintf(err, sizeof err, "%s", sqlite3_errmsg(bk->dst));
    finish(bk, err);
}

void backup_start(berth_req *r, struct store *s, const char *dir)
{
    struct backup *bk = xcalloc(1, sizeof *bk);
    bk->r = r;
    bk->path = xasprintf("%s/.backup-%ld-%u.db", dir, (long)getpid(), serial++);
    list_add_tail(&backups, &bk->link);
    uv_timer_init(C.loop, &bk->timer);
    bk->timer.data = bk;
    unlink(bk->path);
    int fd = open(bk->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);  /* not world-readable */
    if (fd < 0) {
        finish(bk, strerror(errno));
        return;
    }
    close(fd);
    if (sqlite3_open_v2(bk->path, &bk->dst, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        finish(bk, bk->dst ? sqlite3_errmsg(bk->dst) : "cannot open the scratch file");
        return;
    }
    bk->b = sqlite3_backup_init(bk->dst, "main", s->db, "main");
    if (!bk->b) {
        char err[256];
        snprintf(err, sizeof err, "%s", sqlite3_errmsg(bk->dst));
        finish(bk, err);
        return;
    }
    uv_timer_start(&bk->timer, step, 0, 0);
}

/* berthd stops: backups in flight are refused rather than left half-made */
void backup_shutdown(void)
{
    list_each(it, &backups) finish(container_of(it, struct backup, link), "berthd is stopping");
}
