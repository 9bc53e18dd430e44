/* Plugin metrics: counters and gauges with labels that an instance registers and /metrics
 * renders as berth_<instance>_<name>{label="value"} in the Prometheus text format. A metric
 * is a resource of its instance: it is freed when the instance unloads, except that a new
 * instance of the same name (a reload) takes over a metric it registers again, values and
 * all, so a counter does not restart at zero because its plugin was reloaded. */
#include "core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 8
#define MAX_SERIES 10000    /* label sets per metric: a plugin labelling by request id is a bug */

struct series { char **values; double v; };

struct berth_metric {
    struct res res;                 /* first: the owner's resource list points here */
    struct list link;               /* all metrics, in registration order */
    char *name, *help;              /* name is the full berth_<instance>_<name> */
    enum berth_metric_kind kind;
    char **labels; size_t nlabels;
    struct series *s; size_t ns;
};

static struct list metrics = {&metrics, &metrics};

/* the families api.c renders itself; a plugin's may not take their names */
static const char *const core_families[] = {
    "berth_info", "berth_uptime_seconds", "berth_tenants", "berth_events_published_total",
    "berth_http_requests_total", "berth_http_connections", "berth_plugins",
    "berth_config_generation", "berth_config_last_reload_ok", "berth_dependency_up",
};

static bool name_ok(const char *s)
{
    if (!s || !((*s >= 'a' && *s <= 'z') || *s == '_') || strlen(s) > 100) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
    return true;
}

static size_t count(const char *const *v)
{
    size_t n = 0;
    while (v && v[n]) n++;
    return n;
}

static void free_series(struct series *s, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++) free(s->values[i]);
    free(s->values);
}

void metric_free(struct berth_metric *m)
{
    res_detach(&m->res);
    list_del(&m->link);
    for (size_t i = 0; i < m->ns; i++) free_series(&m->s[i], m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++) free(m->labels[i]);
    free(m->s);
    free(m->labels);
    free(m->name);
    free(m->help);
    free(m);
}

static const char *check_args(const char *name, enum berth_metric_kind kind,
                              const char *const *labels)
{
    if (!name_ok(name)) return "its name must match [a-z_][a-z0-9_]*";
    if (kind != BERTH_METRIC_COUNTER && kind != BERTH_METRIC_GAUGE)
        return "its kind must be BERTH_METRIC_COUNTER or BERTH_METRIC_GAUGE";
    size_t n = count(labels);
    if (n > MAX_LABELS) return "it has more than 8 labels";
    for (size_t i = 0; i < n; i++) {
        if (!name_ok(labels[i]) || !strncmp(labels[i], "__", 2))
            return "a label name must match [a-z_][a-z0-9_]* and not start with __";
        for (size_t k = 0; k < i; k++)
            if (!strcmp(labels[i], labels[k])) return "a label name is repeated";
    }
    return NULL;
}

static struct berth_metric *find(const char *full)
{
    list_each(it, &metrics) {
        struct berth_metric *m = container_of(it, struct berth_metric, link);
        if (!strcmp(m->name, full)) return m;
    }
    return NULL;
}

static bool same_shape(const struct berth_metric *m, enum berth_metric_kind kind,
                       const char *const *labels)
{
    if (m->kind != kind || m->nlabels != count(labels)) return false;
    for (size_t i = 0; i < m->nlabels; i++)
        if (strcmp(m->labels[i], labels[i])) return false;
    return true;
}

static char *full_name(berth_instance *self, const char *name)
{
    char *full = xasprintf("berth_%s_%s", inst_name(self), name);
    for (char *p = full; *p; p++)
        if (*p == '-') *p = '_';     /* instance names may have '-', metric names may not */
    return full;
}

static struct berth_metric *metric_new(berth_instance *self, char *full,
                                       enum berth_metric_kind kind, const char *const *labels)
{
    struct berth_metric *m = xcalloc(1, sizeof *m);
    m->name = full;
    m->kind = kind;
    m->nlabels = count(labels);
    m->labels = xcalloc(m->nlabels, sizeof *m->labels);
    for (size_t i = 0; i < m->nlabels; i++) m->labels[i] = xstrdup(labels[i]);
    if (!m->nlabels) {              /* an unlabelled metric shows 0 from the start */
        m->s = xcalloc(1, sizeof *m->s);
        m->ns = 1;
    }
    list_add_tail(&metrics, &m->link);
    res_attach(self, &m->res, RES_METRIC);
    return m;
}

berth_metric *metric_register(berth_instance *self, const char *name,
                              enum berth_metric_kind kind, const char *help,
                              const char *const *labels)
{
    const char *why = check_args(name, kind, labels);
    if (!why && help && !utf8_valid(help, strlen(help))) why = "its help is not valid UTF-8";
    char *full = why ? NULL : full_name(self, name);
    for (size_t i = 0; full && i < ARRAY_LEN(core_families); i++)
        if (!strcmp(full, core_families[i])) why = "its name is one of the core's metrics";
    struct berth_metric *m = why ? NULL : find(full);
    if (m && m->res.owner == self) why = "it is already registered";
    else if (m && strcmp(inst_name(m->res.owner), inst_name(self)))
        why = "another instance's metric has this name ('-' and '_' are one character here)";
    if (why) {
        blog(BERTH_LOG_ERROR, inst_comp(self), "metric %s refused: %s", name ? name : "(null)",
             why);
        free(full);
        return NULL;
    }
    if (m && same_shape(m, kind, labels)) {
        free(full);
        res_detach(&m->res);         /* a reload's new instance takes it over */
        res_attach(self, &m->res, RES_METRIC);
    } else {
        if (m) metric_free(m);       /* the predecessor's has another shape: start afresh */
        m = metric_new(self, full, kind, labels);
    }
    free(m->help);
    m->help = xstrdup(help ? help : "");
    return m;
}

static struct series *series_for(struct berth_metric *m, const char *const *values)
{
    if (m->nlabels && !values) return NULL;
    for (size_t i = 0; i < m->nlabels; i++)
        if (!values[i] || !utf8_valid(values[i], strlen(values[i]))) return NULL;
    for (size_t k = 0; k < m->ns; k++) {
        size_t i = 0;
        while (i < m->nlabels && !strcmp(m->s[k].values[i], values[i])) i++;
        if (i == m->nlabels) return &m->s[k];
    }
    if (m->ns >= MAX_SERIES) return NULL;
    m->s = xrealloc(m->s, (m->ns + 1) * sizeof *m->s);
    struct series *s = &m->s[m->ns++];
    s->v = 0;
    s->values = xcalloc(m->nlabels, sizeof *s->values);
    for (size_t i = 0; i < m->nlabels; i++) s->values[i] = xstrdup(values[i]);
    return s;
}

int metric_add(berth_metric *m, const char *const *values, double delta)
{
    if (!m || !m->res.owner || !isfinite(delta)) return BERTH_EINVAL;
    if (m->kind == BERTH_METRIC_COUNTER && delta < 0) {
        blog(BERTH_LOG_ERROR, inst_comp(m->res.owner), "counter %s refused a negative delta "
             "(%g): counters only grow", m->name, delta);
        return BERTH_EINVAL;
    }
    struct series *s = series_for(m, values);
    if (!s) return BERTH_EINVAL;
    s->v += delta;
    return 0;
}

int metric_set(berth_metric *m, const char *const *values, double value)
{
    if (!m || !m->res.owner || !isfinite(value)) return BERTH_EINVAL;
    if (m->kind == BERTH_METRIC_COUNTER) {
        blog(BERTH_LOG_ERROR, inst_comp(m->res.owner), "counter %s cannot be set: counters "
             "only grow (metric_add)", m->name);
        return BERTH_EINVAL;
    }
    struct series *s = series_for(m, values);
    if (!s) return BERTH_EINVAL;
    s->v = value;
    return 0;
}

/* Label values: backslash, double quote and line feed escaped; HELP: backslash and line
 * feed. The text format allows any UTF-8 otherwise. */
static void escape(struct buf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\') buf_adds(b, "\\\\");
        else if (*s == '\n') buf_adds(b, "\\n");
        else if (quote && *s == '"') buf_adds(b, "\\\"");
        else buf_add(b, s, 1);
    }
}

static void render_one(struct buf *b, const struct berth_metric *m)
{
    buf_printf(b, "# HELP %s ", m->name);
    escape(b, m->help, false);
    buf_printf(b, "\n# TYPE %s %s\n", m->name,
               m->kind == BERTH_METRIC_COUNTER ? "counter" : "gauge");
    for (size_t k = 0; k < m->ns; k++) {
        buf_adds(b, m->name);
        for (size_t i = 0; i < m->nlabels; i++) {
            buf_printf(b, "%s%s=\"", i ? "," : "{", m->labels[i]);
            escape(b, m->s[k].values[i], true);
            buf_adds(b, "\"");
        }
        buf_printf(b, "%s %.17g\n", m->nlabels ? "}" : "", m->s[k].v);
    }
}

void metrics_render(struct buf *b)
{
    list_each(it, &metrics) render_one(b, container_of(it, struct berth_metric, link));
}
