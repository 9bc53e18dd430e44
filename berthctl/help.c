/* berthctl's command table at work: dispatch, `berthctl help` and `--json help` (from which
 * berthctl(1) is generated) all walk the same tables, so no command can be dispatched without
 * being listed, nor listed without being dispatched. */
#include "cmds.h"

#include <stdio.h>
#include <string.h>

static bool asks_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h") || !strcmp(a, "help");
}

const struct ctl_command *ctl_find(const struct ctl_command *table, const char *name)
{
    for (const struct ctl_command *c = table; c->name; c++)
        if (!strcmp(c->name, name)) return c;
    return NULL;
}

/* every command under table, as "prefix name args   help" */
static void list(FILE *f, const struct ctl_command *table, const char *prefix)
{
    for (const struct ctl_command *c = table; c->name; c++) {
        char path[128], left[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? " " : "", c->name);
        if (c->subs) {
            list(f, c->subs, path);
            continue;
        }
        snprintf(left, sizeof left, "%s%s%s", path, *c->args ? " " : "", c->args);
        if (strlen(left) <= 32) fprintf(f, "  %-32s %s\n", left, c->help);
        else fprintf(f, "  %s\n  %-32s %s\n", left, "", c->help);
    }
}

void ctl_list_commands(FILE *f, const struct ctl_command *table)
{
    list(f, table, "");
}

static void add_json(cJSON *a, const struct ctl_command *table, const char *prefix)
{
    for (const struct ctl_command *c = table; c->name; c++) {
        char path[128];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? " " : "", c->name);
        if (c->subs) {
            add_json(a, c->subs, path);
            continue;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "command", path);
        cJSON_AddStringToObject(o, "args", c->args);
        cJSON_AddStringToObject(o, "help", c->help);
        cJSON_AddItemToArray(a, o);
    }
}

void ctl_print_commands_json(const struct ctl_command *table)
{
    cJSON *a = cJSON_CreateArray();
    add_json(a, table, "");
    ctl_print_json(a);
    cJSON_Delete(a);
}

static void group_help(FILE *f, const char *path, const struct ctl_command *g)
{
    fprintf(f, "usage: berthctl %s COMMAND [ARGS] [--json]\n%s\n\ncommands:\n", path, g->help);
    list(f, g->subs, path);
    if (g->more) fprintf(f, "\n%s", g->more);
    fprintf(f, "\n`berthctl %s COMMAND --help` says more about one.\n", path);
}

int ctl_dispatch(const char *path, const struct ctl_command *c, int argc, char **argv)
{
    if (!c->subs) return c->fn(argc, argv);
    if (argc < 2 || asks_help(argv[1])) {
        group_help(argc < 2 ? stderr : stdout, path, c);
        return argc < 2 ? 2 : 0;
    }
    const struct ctl_command *s = ctl_find(c->subs, argv[1]);
    if (!s) {
        fprintf(stderr, "berthctl: unknown %s command '%s' (see berthctl %s --help)\n", path,
                argv[1], path);
        return 2;
    }
    char sub[128];
    snprintf(sub, sizeof sub, "%s %s", path, s->name);
    return ctl_dispatch(sub, s, argc - 1, argv + 1);
}

int ctl_help_for(const struct ctl_command *table, int argc, char **argv)
{
    char path[128] = "";
    const struct ctl_command *c = NULL;
    for (int i = 0; i < argc; i++) {
        c = ctl_find(c ? c->subs : table, argv[i]);
        if (!c) {
            fprintf(stderr, "berthctl: unknown command '%s%s%s' (see berthctl help)\n", path,
                    *path ? " " : "", argv[i]);
            return 2;
        }
        snprintf(path + strlen(path), sizeof path - strlen(path), "%s%s", *path ? " " : "",
                 c->name);
        if (!c->subs) break;
    }
    if (c->subs) {
        group_help(stdout, path, c);
        return 0;
    }
    char *args[] = {(char *)c->name, "--help", NULL};
    return c->fn(2, args);
}
