/* berthctl backup FILE: berthd's consistent copy of its state (SQLite's online backup),
 * written to FILE.tmp (mode 0600), synced, checked to be an SQLite file, then renamed. */
#include "cmds.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char backup_help[] =
    "usage: berthctl backup FILE\n"
    "Writes a consistent copy of berthd's state database to FILE while berthd runs.\n"
    "To restore: stop berthd, copy FILE to <state_dir>/berth.db, remove berth.db-wal and\n"
    "berth.db-shm beside it, start berthd (tenants are adopted as after any restart).\n";

int cmd_backup(int argc, char **argv)
{
    if (ctl_help(argc, argv, backup_help)) return 0;
    if (argc < 2) {
        fprintf(stderr, "berthctl: backup needs a FILE (see berthctl backup --help)\n");
        return 2;
    }
    if (argc > 2) return ctl_extra("backup", argv[2]);
    const char *file = argv[1];
    size_t len = 0;
    char *data = NULL;
    int rc = ctl_fetch("/v1/system/backup", &data, &len);
    if (rc) return rc;
    if (len < 16 || memcmp(data, "SQLite format 3", 16)) {
        fprintf(stderr, "berthctl: backup: berthd's answer is not an SQLite database\n");
        free(data);
        return 1;
    }
    char *tmp = malloc(strlen(file) + 8);
    if (!tmp) {
        free(data);
        return 1;
    }
    sprintf(tmp, "%s.tmp", file);
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    size_t off = 0;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    bool ok = fd >= 0 && off == len && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0 && close(fd) != 0) ok = false;
    if (ok && rename(tmp, file) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        fprintf(stderr, "berthctl: backup: cannot write %s: %s\n", file, strerror(err));
        unlink(tmp);
    } else if (!ctl_json) {
        printf("backup written to %s (%zu bytes)\n", file, len);
    } else {
        printf("{\"file\":\"%s\",\"bytes\":%zu}\n", file, len);
    }
    free(tmp);
    free(data);
    return ok ? 0 : 1;
}
