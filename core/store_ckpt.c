/* Checkpoints of the state database's WAL, off the loop thread.
 *
 * SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages: a
 * copy of 4 MB into the database and two fsyncs, 9-16 ms of blocked loop every few hundred ms
 * under the quota proxy's load. Here the loop connection has no automatic checkpoint (its WAL
 * hook replaces it); a second connection, used only by one libuv threadpool job at a time,
 * checkpoints instead:
 *   - past SOFT (4 MiB of pages), a PASSIVE checkpoint copies what is in the WAL and
 *     syncs, without any lock the loop waits for. When the loop wrote nothing meanwhile the
 *     WAL is then wholly copied, and the loop's next write starts it again from its
 *     beginning (SQLite's rule).
 *   - under continuous commits that never happens (each PASSIVE leaves the pages written
 *     while it ran): past HARD (16 MiB), a RESTART checkpoint copies the rest (little: see
 *     ckpt_run) holding the WAL's write lock, and starts the WAL again. A loop commit in
 *     that moment waits for it in busy() (short sleeps).
 *   - commits faster than the disk syncs (the checkpointer cannot keep up): past LIMIT
 *     (64 MiB) the loop waits for the job running and restarts the WAL itself.
 * So the WAL never holds more than LIMIT and one transaction. */
#include "store_impl.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* in bytes of pages; the WAL counts pages, of the database's page size */
#define SOFT_BYTES (4 << 20)    /* SQLite's own automatic checkpoint's size (1,000 x 4 KiB) */
#define HARD_BYTES (16 << 20)   /* past it the WAL is restarted, the loop's writes waiting */
#define LIMIT_BYTES (64 << 20)  /* writes faster than the disk: the loop waits, restarts it */
#define SOFT (c->soft)
#define HARD (c->hard)
#define LIMIT (c->limit)

struct store_ckpt {
    uv_work_t work;
    sqlite3 *db;            /* the checkpointer's connection, opened at the first job */
    int walfd;              /* its own descriptor of the -wal file, for the syncs ahead */
    int mode;               /* the job's SQLITE_CHECKPOINT_* */
    int rc, log, done;      /* its result: pages in the WAL, pages copied */
    int frames;             /* pages in the WAL after the loop's last commit */
    int next;               /* the page count at which the next job starts */
    int soft, hard, limit;  /* the bounds above, in pages */
    int fallback_at;        /* the page count at which the loop restarts the WAL itself */
    bool running, closing;
    bool ran;               /* the job's checkpoint has returned (under mu) */
    uv_mutex_t mu;
    uv_cond_t cv;
    struct store *s;
};

/* set while the checkpointer's RESTART runs: it holds the WAL's write lock through its syncs,
 * which a slow disk can make last seconds; a loop commit waits for it rather than fail */
static atomic_bool restarting;

/* A RESTART that finds the loop writing, or a reader (another process) on the WAL, must not
 * wait holding the WAL's write lock: every loop commit would wait with it, up to the loop's
 * 2 s, and fail. The connection has no busy handler, so it returns SQLITE_BUSY at once; the
 * loop's short transactions are waited for here, the lock released, 20 ms at most. */
static int ckpt_restart(struct store_ckpt *c)
{
    for (int i = 0;; i++) {
        int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_RESTART, &c->log,
                                           &c->done);
        if (rc != SQLITE_BUSY || i == 20) return rc;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* A checkpoint first syncs the WAL, then copies, then syncs the database. The WAL's sync is
 * what takes long (all that was written since the last one), so it is done ahead, without
 * any lock; and a RESTART, which holds the WAL's write lock, comes after a PASSIVE and a
 * second sync: it is left with what was written during those. */
static void ckpt_run(uv_work_t *w)
{
    struct store_ckpt *c = container_of(w, struct store_ckpt, work);
    c->log = c->done = -1;
    if (c->walfd >= 0) fdatasync(c->walfd);
    if (c->mode == SQLITE_CHECKPOINT_RESTART) {
        sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (c->walfd >= 0) fdatasync(c->walfd);
    }
    if (c->mode == SQLITE_CHECKPOINT_RESTART) {
        atomic_store(&restarting, true);
        c->rc = ckpt_restart(c);
        atomic_store(&restarting, false);
    } else {
        c->rc = sqlite3_wal_checkpoint_v2(c->db, NULL, c->mode, &c->log, &c->done);
    }
    uv_mutex_lock(&c->mu);
    c->ran = true;
    uv_cond_signal(&c->cv);
    uv_mutex_unlock(&c->mu);
}

/* Commits outrun the disk (the checkpointer's syncs): the loop waits for the job running
 * and restarts the WAL itself, as SQLite's automatic checkpoint would have, only later. */
static void ckpt_fallback(struct store_ckpt *c, sqlite3 *db)
{
    if (c->running) {
        uv_mutex_lock(&c->mu);
        while (!c->ran) uv_cond_wait(&c->cv, &c->mu);
        uv_mutex_unlock(&c->mu);
    }
    /* no waiting for a reader (another process): the WAL cannot start again before it
     * leaves, and the loop would wait its 2 s at every commit */
    sqlite3_busy_handler(db, NULL, NULL);
    int rc = sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
    store_ckpt_init(db);
    c->next = SOFT;
    c->fallback_at = LIMIT;
    if (rc == SQLITE_OK) return;
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        log_error("store: checkpoint: %s", sqlite3_errstr(rc));
    c->fallback_at = c->frames + SOFT;     /* tried again after as many pages more */
}

static void ckpt_start(struct store_ckpt *c, int mode);

static void ckpt_after(uv_work_t *w, int status)
{
    struct store_ckpt *c = container_of(w, struct store_ckpt, work);
    c->running = false;
    if (c->closing) return;
    if (c->rc == SQLITE_BUSY && c->mode == SQLITE_CHECKPOINT_RESTART) {
        /* a reader holds the WAL: not again at every commit while it stays */
        c->next = c->frames + SOFT;
        return;
    }
    if (status < 0 || (c->rc != SQLITE_OK && c->rc != SQLITE_BUSY) || c->log < 0) {
        log_error("store: checkpoint: %s", status < 0 ? uv_strerror(status)
                                           : c->rc ? sqlite3_errstr(c->rc) : "no WAL");
        c->next = c->frames + SOFT;     /* tried again after as many pages more */
        return;
    }
    if (c->rc == SQLITE_OK && c->log >= 0 && c->log == c->done) {
        /* all copied: the loop's next write (or the RESTART itself) starts the WAL anew */
        c->next = SOFT;
        return;
    }
    /* pages were written while it ran; what the WAL holds past what was copied */
    c->next = (c->done > 0 ? c->done : 0) + SOFT;
    /* past the bound: restart it (one that failed is tried again at the next commit) */
    if (c->frames >= HARD && c->mode == SQLITE_CHECKPOINT_PASSIVE)
        ckpt_start(c, SQLITE_CHECKPOINT_RESTART);
}

static void ckpt_start(struct store_ckpt *c, int mode)
{
    struct store *s = c->s;
    if (c->running || c->closing || !store_check(s)) return;
    if (!c->db) {
        if (sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            log_error("store: checkpointer: %s", c->db ? sqlite3_errmsg(c->db) : "cannot open");
            sqlite3_close(c->db);
            c->db = NULL;
            c->next = c->frames + SOFT;
            return;
        }
        /* a connection opens the WAL at its first read; until then a checkpoint is a no-op */
        sqlite3_busy_timeout(c->db, 1000);
        if (sqlite3_exec(c->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) !=
            SQLITE_OK)
            log_error("store: checkpointer: %s", sqlite3_errmsg(c->db));
        /* then no busy handler: ckpt_restart waits for the loop without holding a lock */
        sqlite3_busy_handler(c->db, NULL, NULL);
        char *wal = xasprintf("%s-wal", s->path);
        c->walfd = open(wal, O_RDONLY | O_CLOEXEC);
        free(wal);
    }
    c->mode = mode;
    c->ran = false;
    if (uv_queue_work(s->loop, &c->work, ckpt_run, ckpt_after) == 0) c->running = true;
}

/* after each commit of the loop connection, with the pages the WAL holds */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)name;
    struct store_ckpt *c = arg;
    c->frames = frames;
    if (frames >= c->fallback_at && !c->closing) ckpt_fallback(c, db);
    if (frames < c->next) return SQLITE_OK;
    ckpt_start(c, frames >= HARD ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE);
    return SQLITE_OK;
}

/* The loop waits for the checkpointer's RESTART (or another process) in steps of 50 us, not
 * SQLite's default 1, 2, 5, 10 ms... sleeps: it holds the lock for a few ms at most, or as
 * long as its syncs take on a slow disk; for it the loop waits past 2 s (it ends: it waits
 * for no lock while it holds this one), for another process 2 s at most. */
static int busy(void *arg, int tries)
{
    (void)arg;
    static __thread uint64_t since;
    uint64_t now = uv_hrtime();
    if (!tries) since = now;
    if (now - since > 2000000000ull && !atomic_load(&restarting)) return 0;
    struct timespec ts = {0, tries < 20 ? 50000 : 1000000};
    nanosleep(&ts, NULL);
    return 1;
}

void store_ckpt_init(sqlite3 *db)
{
    sqlite3_busy_handler(db, busy, NULL);
}

void store_ckpt_start(struct store *s)
{
    if (s->ckpt || !s->loop) return;
    struct store_ckpt *c = xcalloc(1, sizeof *c);
    c->s = s;
    sqlite3_stmt *st;
    int page = 4096;
    if (sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) > 0)
        page = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    c->soft = SOFT_BYTES / page;
    c->hard = HARD_BYTES / page;
    c->limit = LIMIT_BYTES / page;
    c->next = SOFT;
    c->fallback_at = LIMIT;
    c->walfd = -1;
    uv_mutex_init(&c->mu);
    uv_cond_init(&c->cv);
    s->ckpt = c;
    sqlite3_wal_hook(s->db, wal_hook, c);
}

/* After the loop has stopped: a job that ran kept it alive, so none runs now. SQLite's own
 * automatic checkpoint is back for what is committed after this. */
void store_ckpt_stop(struct store *s)
{
    struct store_ckpt *c = s->ckpt;
    if (!c) return;
    c->closing = true;
    sqlite3_wal_autocheckpoint(s->db, SOFT);
    if (!c->running) {
        if (c->walfd >= 0) close(c->walfd);
        sqlite3_close(c->db);
        uv_mutex_destroy(&c->mu);
        uv_cond_destroy(&c->cv);
        free(c);
    }   /* else: a loop closed with a job queued is a bug elsewhere; leaking beats a crash */
    s->ckpt = NULL;
}
