/* Specs: what an operation gets to work with (template, port, environment), built when the
 * operation is issued, and the deprecated 1.0 spec contributors. */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

struct contrib { struct res res; struct list link; berth_spec_fn fn; void *arg; };

static struct list contribs = {&contribs, &contribs};

int spec_setenv(berth_spec *s, const char *name, const char *value)
{
    if (!s || !name || !*name || strchr(name, '=') || !value) return BERTH_EINVAL;
    for (size_t i = 0; i < s->nenv; i++)
        if (!strcmp(s->names[i], name)) {
            free(s->vals[i]);
            s->vals[i] = xstrdup(value);
            return 0;
        }
    s->names = xrealloc(s->names, (s->nenv + 1) * sizeof *s->names);
    s->vals = xrealloc(s->vals, (s->nenv + 1) * sizeof *s->vals);
    s->names[s->nenv] = xstrdup(name);
    s->vals[s->nenv++] = xstrdup(value);
    return 0;
}

const char *spec_handle(const berth_spec *s) { return s->handle; }
const char *spec_template(const berth_spec *s) { return s->tmpl; }
const void *spec_config(const berth_spec *s) { return s->cfg; }
int spec_port(const berth_spec *s) { return s->port; }
size_t spec_env_count(const berth_spec *s) { return s->nenv; }

const char *spec_env(const berth_spec *s, size_t i, const char **value)
{
    if (i >= s->nenv) return NULL;
    if (value) *value = s->vals[i];
    return s->names[i];
}

int spec_contrib_add(berth_instance *owner, berth_spec_fn fn, void *arg)
{
    if (!fn) return BERTH_EINVAL;
    struct contrib *c = xcalloc(1, sizeof *c);
    c->fn = fn;
    c->arg = arg;
    res_attach(owner, &c->res, RES_CONTRIB);
    list_add_tail(&contribs, &c->link);
    return 0;
}

berth_spec *spec_build(const struct tenant *t, const struct tmpl *tm, bool contribute)
{
    berth_spec *s = xcalloc(1, sizeof *s);
    s->handle = xstrdup(t->handle);
    s->tmpl = xstrdup(t->tmpl);
    s->gen = gen_ref(C.gen);
    s->cfg = tm->driver_cfg;
    s->port = (int)tm->core.port;
    for (size_t i = 0; i < tm->core.env.n; i++)
        spec_setenv(s, tm->core.env.keys[i], tm->core.env.vals[i]);
    spec_setenv(s, "BERTH_HANDLE", t->handle);
    spec_setenv(s, "BERTH_KIND", t->kind);
    if (contribute) {
        list_each(it, &contribs) {
            struct contrib *c = container_of(it, struct contrib, link);
            c->fn(s, c->arg);
        }
    }
    return s;
}

void spec_free(berth_spec *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nenv; i++) free(s->names[i]), free(s->vals[i]);
    free(s->names);
    free(s->vals);
    free(s->handle);
    free(s->tmpl);
    gen_unref(s->gen);
    free(s);
}


void spec_drop_owner(berth_instance *owner)
{
    list_each(it, &contribs) {
        struct contrib *c = container_of(it, struct contrib, link);
        if (c->res.owner != owner) continue;
        list_del(&c->link);
        res_detach(&c->res);
        free(c);
    }
}
