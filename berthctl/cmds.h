/* berthctl's commands and the client helpers they share.
 *
 * A command is `int cmd_<name>(int argc, char **argv)`: argv[0] is the command's name, the
 * rest its arguments with the global options (--json, --socket, --url, --token-file) already
 * taken out, wherever they were written. It returns the exit code: 0 done, 1 berthd refused
 * or failed (the reason printed), 2 a usage error (named). Each command is one line of a
 * command table (struct ctl_command): the top-level one in berthctl.c, and a group's own
 * beside the group's commands (tenant.c, quota_cmd.c, matrix_cmd.c). */
#ifndef BERTHCTL_CMDS_H
#define BERTHCTL_CMDS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* One line of a command table, which ends with {0}. Dispatch, `berthctl help` and
 * `berthctl --json help` (which berthctl(1) is generated from) all read the tables, so what
 * runs and what is listed cannot differ. */
struct ctl_command {
    const char *name;
    const char *args;                   /* its arguments as help shows them, "" for none */
    const char *help;                   /* one line for `berthctl help` */
    int (*fn)(int argc, char **argv);   /* a command: argv[0] is its name */
    const struct ctl_command *subs;     /* a group instead (like tenant): its commands */
    const char *more;                   /* a group's note under its list, or NULL */
};

/* Runs c (path: its words, like "tenant key"): a command's fn, or a group's command named
 * by argv[1], with the group's help on --help, -h or help (exit 0) or when nothing follows
 * (on stderr, exit 2), and unknown ones named (exit 2). */
int ctl_dispatch(const char *path, const struct ctl_command *c, int argc, char **argv);
const struct ctl_command *ctl_find(const struct ctl_command *table, const char *name);
/* `berthctl help WORDS...`: the help of the command or group the words name */
int ctl_help_for(const struct ctl_command *table, int argc, char **argv);
/* every command under table, a line each with its full words, arguments and help */
void ctl_list_commands(FILE *f, const struct ctl_command *table);
/* the same as a JSON array of {command, args, help} on stdout */
void ctl_print_commands_json(const struct ctl_command *table);

extern bool ctl_json;       /* --json: print the API's JSON instead of text for people */

/* One request to berthd. Returns the parsed body (the caller frees it; NULL when empty) and
 * sets *rc: 0 on 2xx, 1 with the server's reason printed on stderr otherwise (or when berthd
 * cannot be reached). body may be NULL. */
cJSON *ctl_call(const char *method, const char *path, const char *body, int *rc);

/* Streams GET path (an SSE endpoint) to fn for each event's data until fn returns false, the
 * stream ends or timeout_ms passes (0: no limit). Returns 0 when fn ended it, 3 when the
 * stream ended by itself, 4 on the timeout, 1 with the reason printed otherwise. */
int ctl_stream(const char *path, bool (*fn)(const char *data, void *arg), void *arg,
               long timeout_ms);

/* GET path into *data (malloc'd, *len bytes): 0 on 200, else 1 with the reason printed */
int ctl_fetch(const char *path, char **data, size_t *len);

void ctl_print_json(const cJSON *j);
/* data parsed; unless --json, control characters in its strings shown as '?' */
cJSON *ctl_parse(const char *data);
const char *ctl_str(const cJSON *o, const char *key);   /* the string, or "-" */
double ctl_num(const cJSON *o, const char *key);        /* the number, or 0 */

/* Durations as people write them: 1500 -> "1.5s", 10000 -> "10s", 221000 -> "3m41s". */
void ctl_fmt_duration(double ms, char *out, size_t n);
/* "30" (seconds), "500ms", "10s", "5m", "2h": 0 and *ms set, or -1 for anything else. */
int ctl_parse_duration(const char *s, int64_t *ms);
void ctl_fmt_bytes(double bytes, char *out, size_t n);
void ctl_fmt_time(double ms, char *out, size_t n);      /* local time, or "-" */

/* Where berthd is: a unix socket, or a URL with an optional bearer token (copied). */
void ctl_connect(const char *sock, const char *url, const char *token);
void ctl_disconnect(void);

/* For commands parsing their options with getopt_long (argv[0] the command; shorts start
 * with ':'): ctl_getopt_reset() before the first call; on '?' or ':' ctl_bad_option() names
 * the option and what is wrong, and returns 2. Options may follow operands (GNU order). */
void ctl_getopt_reset(void);
int ctl_bad_option(const char *cmd, char **argv, int ch);
int ctl_extra(const char *cmd, const char *arg);    /* "unexpected argument", returns 2 */
/* --help for a command: prints text to stdout and returns true when argv asks for it */
bool ctl_help(int argc, char **argv, const char *text);

extern const struct ctl_command ctl_tenant_cmds[];    /* tenant.c */
int cmd_events(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_health(int argc, char **argv);
int cmd_plugins(int argc, char **argv);
int cmd_reload(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_routes(int argc, char **argv);      /* routes_cmd.c: the caddy plugin's routes */
/* quota_cmd.c, the quota plugin's: `usage [HANDLE]`, and `tenant key rotate HANDLE` */
int cmd_usage(int argc, char **argv);
extern const struct ctl_command ctl_key_cmds[];
extern const struct ctl_command ctl_matrix_cmds[];  /* matrix_cmd.c: the matrix plugin's */

/* tenant wake|add --wait: follows the tenant's events from seq until it is ready (0) or
 * failed (1), up to timeout_ms */
int ctl_wait_ready(const char *handle, double seq, int64_t timeout_ms);

#endif
