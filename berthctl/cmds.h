/* Subcommands of berthctl that live in their own files, and the helpers of berthctl.c they
 * use. A call returns the parsed body (the caller frees it) and sets *rc to 0, or to the exit
 * code after printing what went wrong. */
#ifndef BERTHCTL_CMDS_H
#define BERTHCTL_CMDS_H

#include <cJSON.h>
#include <stdbool.h>

extern bool json_out;               /* --json: print what berthd answered, as JSON */
cJSON *call(const char *method, const char *path, const char *body, int *rc);
void print_json(const cJSON *j);

int cmd_routes(int argc, char **argv);

#endif
