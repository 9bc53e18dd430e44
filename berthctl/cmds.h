/* Subcommands that live in their own files, and what berthctl.c lends them. */
#ifndef BERTHCTL_CMDS_H
#define BERTHCTL_CMDS_H

#include <cJSON.h>
#include <stdbool.h>

/* A request to berthd: the parsed JSON body (caller frees; NULL when empty) and *rc, the exit
 * code: 0 on 2xx, 1 with the API's message already printed to stderr. */
cJSON *berthctl_call(const char *method, const char *path, const char *body, int *rc);
bool berthctl_json(void);               /* --json: print the API's JSON as is */

int cmd_matrix(int argc, char **argv);  /* matrix_cmd.c */

#endif
