/* Dependencies that plugins report: a Caddy admin API, a Matrix homeserver. Each report
 * replaces the last one of its (instance, name) and carries when it was made and how often
 * the plugin checks; a report older than STALE_FACTOR check intervals is stale and counts as
 * failing, so a plugin whose checks stopped (a hung call, a stopped timer) cannot leave an
 * old "ok" standing. A dependency is a resource of the instance that last reported it: it is
 * freed when that instance unloads, except that a reload's new instance takes over the
 * entries it reports again, so /health does not flicker across a reload.
 *
 * Ownership: this file owns every struct dep and its strings; api.c only reads them through
 * deps_json(). Everything runs on the loop thread. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

#define STALE_FACTOR 3
#define NAME_MAX_LEN 64
#define MESSAGE_MAX 512
#define MAX_PER_INSTANCE 32     /* a plugin reporting one per tenant is a bug */

struct dep {
    struct res res;             /* first: the owner's resource list points here */
    struct list link;           /* all dependencies, in first-report order */
    char *name;
    bool required, ok;
    bool logged_failing;        /* the log said it fails and has not said it is back */
    int status;                 /* BERTH_OK or BERTH_E* */
    char *message;              /* may be NULL */
    int64_t at_ms;              /* wall clock of the report, for people */
    uint64_t at_mono_ms;        /* monotonic, for age and staleness */
    int64_t interval_ms;
};

static struct list deps = {&deps, &deps};

static uint64_t mono_ms(void) { return uv_hrtime() / 1000000u; }

void dep_free(struct dep *d)
{
    res_detach(&d->res);
    list_del(&d->link);
    free(d->name);
    free(d->message);
    free(d);
}

static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > NAME_MAX_LEN || !((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr("._-", *s)))
            return false;
    return true;
}

static struct dep *find(const char *inst, const char *name)
{
    list_each(it, &deps) {
        struct dep *d = container_of(it, struct dep, link);
        if (!strcmp(d->name, name) && !strcmp(inst_name(d->res.owner), inst)) return d;
    }
    return NULL;
}

static size_t owned_by(const berth_instance *self)
{
    size_t n = 0;
    list_each(it, &deps)
        n += container_of(it, struct dep, link)->res.owner == self;
    return n;
}

static const char *check_args(berth_instance *self, const char *name, int status,
                              int64_t interval_ms)
{
    if (!name_ok(name)) return "its name must match [a-z0-9][a-z0-9._-]* (64 at most)";
    if (status > 0) return "its status must be BERTH_OK or a negative BERTH_E* code";
    if (interval_ms < 10 || interval_ms > 86400000)
        return "its check interval must be between 10ms and 1d";
    if (!find(inst_name(self), name) && owned_by(self) >= MAX_PER_INSTANCE)
        return "the instance already reports 32 dependencies";
    return NULL;
}

/* a change of state is worth a line in the log, a repeat is not; BERTH_EAGAIN (not checked
 * yet, as after every reload) is no news either way */
static void log_change(berth_instance *self, struct dep *d)
{
    if (d->ok && d->logged_failing) {
        d->logged_failing = false;
        blog(BERTH_LOG_INFO, inst_comp(self), "dependency %s is usable again", d->name);
    } else if (!d->ok && d->status != BERTH_EAGAIN && !d->logged_failing) {
        d->logged_failing = true;
        blog(d->required ? BERTH_LOG_WARN : BERTH_LOG_INFO, inst_comp(self),
             "dependency %s%s is failing: %s", d->name, d->required ? "" : " (optional)",
             d->message ? d->message : berth_strerror(d->status));
    }
}

int dep_report(berth_instance *self, const char *name, bool required, int status,
               const char *message, int64_t interval_ms)
{
    const char *why = check_args(self, name, status, interval_ms);
    if (why) {
        blog(BERTH_LOG_ERROR, inst_comp(self), "dependency report %s refused: %s",
             name ? name : "(null)", why);
        return BERTH_EINVAL;
    }
    struct dep *d = find(inst_name(self), name);
    if (!d) {
        d = xcalloc(1, sizeof *d);
        d->name = xstrdup(name);
        list_add_tail(&deps, &d->link);
    } else {
        res_detach(&d->res);    /* the last reporter owns it: a reload's new instance */
    }
    res_attach(self, &d->res, RES_DEP);
    free(d->message);
    d->message = message && *message ? utf8_repaired(message) : NULL;
    if (d->message && strlen(d->message) > MESSAGE_MAX) d->message[MESSAGE_MAX] = 0;
    d->required = required;
    d->status = status;
    d->ok = status == BERTH_OK;
    d->interval_ms = interval_ms;
    d->at_ms = wall_ms();
    d->at_mono_ms = mono_ms();
    log_change(self, d);
    return 0;
}

static bool stale(const struct dep *d, uint64_t now)
{
    return now - d->at_mono_ms > (uint64_t)d->interval_ms * STALE_FACTOR;
}

/* what /health says about a required dependency that fails; caller frees */
static char *failure(const struct dep *d, uint64_t now)
{
    char age[32], every[32];
    fmt_duration((int64_t)(now - d->at_mono_ms), age, sizeof age);
    fmt_duration(d->interval_ms, every, sizeof every);
    if (stale(d, now))
        return xasprintf("dependency %s/%s: no report for %s (checked every %s)",
                         inst_name(d->res.owner), d->name, age, every);
    return xasprintf("dependency %s/%s is failing: %s", inst_name(d->res.owner), d->name,
                     d->message ? d->message : berth_strerror(d->status));
}

static void dep_json(cJSON *o, const struct dep *d, uint64_t now)
{
    char key[NAME_MAX_LEN + 128];
    snprintf(key, sizeof key, "%s/%s", inst_name(d->res.owner), d->name);
    cJSON *j = cJSON_AddObjectToObject(o, key);
    bool is_stale = stale(d, now);
    cJSON_AddBoolToObject(j, "ok", d->ok && !is_stale);
    cJSON_AddStringToObject(j, "status", is_stale ? "stale" : d->ok ? "ok" : "failing");
    cJSON_AddBoolToObject(j, "required", d->required);
    if (!d->ok) cJSON_AddStringToObject(j, "error", berth_strerror(d->status));
    if (d->message) cJSON_AddStringToObject(j, "message", d->message);
    cJSON_AddNumberToObject(j, "age_ms", (double)(now - d->at_mono_ms));
    cJSON_AddNumberToObject(j, "checked_at_ms", (double)d->at_ms);
    cJSON_AddNumberToObject(j, "interval_ms", (double)d->interval_ms);
}

void deps_metrics(struct buf *b)
{
    if (list_empty(&deps)) return;
    uint64_t now = mono_ms();
    buf_adds(b, "# HELP berth_dependency_up 1 while a dependency a plugin reports is ok and "
             "fresh.\n# TYPE berth_dependency_up gauge\n");
    list_each(it, &deps) {
        const struct dep *d = container_of(it, struct dep, link);
        buf_printf(b, "berth_dependency_up{dependency=\"%s/%s\",required=\"%s\"} %d\n",
                   inst_name(d->res.owner), d->name, d->required ? "true" : "false",
                   d->ok && !stale(d, now));
    }
}

char *deps_json(cJSON *o)
{
    uint64_t now = mono_ms();
    char *reason = NULL;
    list_each(it, &deps) {
        const struct dep *d = container_of(it, struct dep, link);
        dep_json(o, d, now);
        if (!reason && d->required && (!d->ok || stale(d, now))) reason = failure(d, now);
    }
    return reason;
}
