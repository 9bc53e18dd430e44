/* berthctl: the command line of berth. Global options (anywhere on the line), then one
 * command from the table below; each command lives in its own function or file (cmds.h). */
#include <cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"

#define DEFAULT_SOCKET "/var/lib/berth/berth.sock"

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

/* Every command berthctl has; a group's own table is beside its commands. */
static const struct ctl_command commands[] = {
    {"health", "", "is berthd usable (exit 0), with details", cmd_health, NULL, NULL},
    {"info", "", "version, uptime, plugins, tenants by state, memory, disk", cmd_info, NULL,
     NULL},
    {"tenant", "", "the tenants: create, list, show, delete, wake, sleep", NULL,
     ctl_tenant_cmds,
     "T is a duration (30s, 5m) or a number of seconds; the default is 5m.\n"},
    {"events", "[-f] [--since SEQ] [--type T] [--tenant H]", "the event journal; -f follows it",
     cmd_events, NULL, NULL},
    {"plugins", "", "loaded plugin instances", cmd_plugins, NULL, NULL},
    {"reload", "", "re-read conf.d (like SIGHUP)", cmd_reload, NULL, NULL},
    {"backup", "FILE", "a consistent copy of the state, taken while berthd runs", cmd_backup,
     NULL, NULL},
    {"usage", "[HANDLE]", "LLM spending and budget (quota plugin)", cmd_usage, NULL, NULL},
    {"matrix", "", "Matrix rooms and invite tokens (matrix plugin)", NULL, ctl_matrix_cmds,
     NULL},
    {"routes", "[--instance NAME]", "what Caddy holds against what berth expects (caddy "
     "plugin)", cmd_routes, NULL, NULL},
    {"version", "", "berthctl's version", cmd_version, NULL, NULL},
    {"help", "[COMMAND...]", "this list, or a command's help", cmd_help, NULL, NULL},
    {0},
};

static void usage(FILE *f)
{
    fputs("usage: berthctl [--socket PATH | --url http://HOST:PORT [--token-file F]] [--json] "
          "COMMAND [ARGS]\n\ncommands:\n", f);
    ctl_list_commands(f, commands);
    fputs("\nOptions may come before or after the command. The socket defaults to "
          "$BERTH_SOCKET,\nelse " DEFAULT_SOCKET ". Over TCP the bearer token comes from "
          "--token-file or $BERTH_TOKEN.\n`berthctl COMMAND --help` says more about a "
          "command.\n", f);
}

/* help [COMMAND...]; with --json, every command as JSON (berthctl(1) is made from it) */
static int cmd_help(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl help [COMMAND...]\nEvery command, or what "
                 "one does; with --json, every command as JSON.\n"))
        return 0;
    if (argc < 2) {
        if (ctl_json) ctl_print_commands_json(commands);
        else usage(stdout);
        return 0;
    }
    return ctl_help_for(commands, argc - 1, argv + 1);
}

static int cmd_version(int argc, char **argv)
{
    if (ctl_help(argc, argv, "usage: berthctl version\nPrints berthctl's version; `berthctl "
                 "info` shows berthd's.\n"))
        return 0;
    if (argc > 1) return ctl_extra("version", argv[1]);
    printf("berthctl %s\n", BERTHCTL_VERSION);
    return 0;
}

/* The global options, wherever they are written: taken out of argv. */
struct globals { const char *sock, *url, *token_file; bool help, version; };

static int take_value(int *i, int argc, char **argv, const char *name, const char **out)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (!strncmp(a, name, n) && a[n] == '=') {
        *out = a + n + 1;
        return 1;
    }
    if (strcmp(a, name)) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "berthctl: option %s needs a value\n", name);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

static int take_globals(int *argc, char **argv, struct globals *g)
{
    int out = 1, i;
    for (i = 1; i < *argc && strcmp(argv[i], "--"); i++) {
        int r = take_value(&i, *argc, argv, "--socket", &g->sock);
        if (!r) r = take_value(&i, *argc, argv, "-s", &g->sock);
        if (!r) r = take_value(&i, *argc, argv, "--url", &g->url);
        if (!r) r = take_value(&i, *argc, argv, "--token-file", &g->token_file);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j")) ctl_json = true;
        else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) g->version = true;
        else if (out == 1 && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")))
            g->help = true;             /* before any command: berthctl's own help */
        else if (out == 1 && argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "berthctl: unknown option %s (see berthctl help)\n", argv[i]);
            return 2;
        } else argv[out++] = argv[i];
    }
    while (i < *argc) argv[out++] = argv[i++];
    argv[out] = NULL;
    *argc = out;
    return 0;
}

/* --socket, else $BERTH_SOCKET (set but empty is a mistake worth naming), else the default */
static int connect_to(const struct globals *g)
{
    const char *sock = g->sock, *env = getenv("BERTH_SOCKET");
    if (!sock && env && !*env) {
        fprintf(stderr, "berthctl: BERTH_SOCKET is set but empty: unset it (for "
                DEFAULT_SOCKET ") or set it to berthd's socket\n");
        return 2;
    }
    if (!sock) sock = env ? env : DEFAULT_SOCKET;
    if (!*sock) {
        fprintf(stderr, "berthctl: --socket needs a path\n");
        return 2;
    }
    char line[4096];
    const char *token = getenv("BERTH_TOKEN");
    if (g->token_file) {
        FILE *f = fopen(g->token_file, "r");
        if (!f || !fgets(line, sizeof line, f)) {
            fprintf(stderr, "berthctl: cannot read token file %s: %s\n", g->token_file,
                    f ? "it is empty" : strerror(errno));
            if (f) fclose(f);
            return 2;
        }
        fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        token = line;
    }
    ctl_connect(sock, g->url, token);
    memset(line, 0, sizeof line);
    return 0;
}

int main(int argc, char **argv)
{
    struct globals g = {0};
    int rc = take_globals(&argc, argv, &g);
    if (rc) return rc;
    if (g.version) return cmd_version(1, argv);
    if (g.help) {
        usage(stdout);
        return 0;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const struct ctl_command *c = ctl_find(commands, argv[1]);
    if (!c) {
        fprintf(stderr, "berthctl: unknown command '%s' (see berthctl help)\n", argv[1]);
        return 2;
    }
    bool local = c->fn == cmd_help || c->fn == cmd_version;  /* need no berthd */
    if (!local && (rc = connect_to(&g))) return rc;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = ctl_dispatch(c->name, c, argc - 1, argv + 1);
    ctl_disconnect();
    curl_global_cleanup();
    return rc;
}
