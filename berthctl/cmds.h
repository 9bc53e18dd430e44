/* Subcommands that live in their own files, and what berthctl.c lends them. */
#ifndef BERTHCTL_CMDS_H
#define BERTHCTL_CMDS_H

#include <cjson/cJSON.h>
#include <stdbool.h>

/* from berthctl.c: one request to berthd's API; returns the parsed body (the caller frees
 * it) and sets *rc to the exit code (0 on 2xx; 1 with the API's message printed) */
cJSON *berthctl_call(const char *method, const char *path, const char *body, int *rc);
bool berthctl_json_out(void);       /* --json was given */

/* quota_cmd.c: `usage [HANDLE]` and `tenant key rotate HANDLE`; argv[0] is the command */
int cmd_quota(int argc, char **argv);

#endif
