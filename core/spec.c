/* Specs: what an operation gets to work with (template, port, environment), built when the
 * operation is issued, and the deprecated 1.0 spec contributors. */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

struct contrib { struct res res; struct list link; berth_spec_fn fn; void *arg; };

static struct list contribs = {&contribs, &contribs};

/* ---- name=value lists ---- */

int kv_set(struct kv *kv, const char *name, const char *value)
{
    for (size_t i = 0; i < kv->n; i++)
        if (!strcmp(kv->k[i], name)) {
            free(kv->v[i]);
            kv->v[i] = xstrdup(value);
            return 0;
        }
    kv->k = xrealloc(kv->k, (kv->n + 1) * sizeof *kv->k);
    kv->v = xrealloc(kv->v, (kv->n + 1) * sizeof *kv->v);
    kv->k[kv->n] = xstrdup(name);
    kv->v[kv->n++] = xstrdup(value);
    return 0;
}

void kv_free(struct kv *kv)
{
    for (size_t i = 0; i < kv->n; i++) free(kv->k[i]), free(kv->v[i]);
    free(kv->k);
    free(kv->v);
    *kv = (struct kv){0};
}

/* the same names with the same values, in any order */
bool kv_equal(const struct kv *a, const struct kv *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++) {
        size_t j = 0;
        while (j < b->n && strcmp(a->k[i], b->k[j])) j++;
        if (j == b->n || strcmp(a->v[i], b->v[j])) return false;
    }
    return true;
}

char *kv_json(const struct kv *kv)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; i < kv->n; i++) cJSON_AddStringToObject(o, kv->k[i], kv->v[i]);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

void kv_parse(struct kv *kv, const char *json)
{
    cJSON *o = cJSON_Parse(json ? json : "{}"), *it;
    cJSON_ArrayForEach(it, o)
        if (cJSON_IsString(it)) kv_set(kv, it->string, it->valuestring);
    cJSON_Delete(o);
}

/* An environment variable's name: no '=' (it would end the name) and no NUL, not empty. */
bool env_name_valid(const char *name)
{
    return name && *name && !strchr(name, '=');
}

/* ---- specs ---- */

int spec_setenv(berth_spec *s, const char *name, const char *value)
{
    if (!s || !env_name_valid(name) || !value) return BERTH_EINVAL;
    return kv_set(&s->env, name, value);
}

const char *spec_handle(const berth_spec *s) { return s->handle; }
const char *spec_template(const berth_spec *s) { return s->tmpl; }
const void *spec_config(const berth_spec *s) { return s->cfg; }
int spec_port(const berth_spec *s) { return s->port; }
size_t spec_env_count(const berth_spec *s) { return s->env.n; }
size_t spec_label_count(const berth_spec *s) { return s ? s->labels.n : 0; }

const char *spec_env(const berth_spec *s, size_t i, const char **value)
{
    if (i >= s->env.n) return NULL;
    if (value) *value = s->env.v[i];
    return s->env.k[i];
}

const char *spec_label(const berth_spec *s, size_t i, const char **value)
{
    if (!s || i >= s->labels.n) return NULL;
    if (value) *value = s->labels.v[i];
    return s->labels.k[i];
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

/* The template's environment, then BERTH_HANDLE and BERTH_KIND. */
static berth_spec *spec_base(const struct tenant *t, const struct tmpl *tm)
{
    berth_spec *s = xcalloc(1, sizeof *s);
    s->handle = xstrdup(t->handle);
    s->tmpl = xstrdup(t->tmpl);
    s->gen = gen_ref(C.gen);
    if (tm) {
        s->port = (int)tm->core.port;
        for (size_t i = 0; i < tm->core.env.n; i++)
            kv_set(&s->env, tm->core.env.keys[i], tm->core.env.vals[i]);
    }
    kv_set(&s->env, "BERTH_HANDLE", t->handle);
    kv_set(&s->env, "BERTH_KIND", t->kind);
    return s;
}

/* A driver's spec: the base, then what the tenant's provisioners returned (in their order),
 * then, for a create, the 1.0 contributors. tm may be NULL (a template removed while a tenant
 * of it is deleted). */
berth_spec *spec_build(const struct tenant *t, const struct tmpl *tm, bool contribute)
{
    berth_spec *s = spec_base(t, tm);
    s->cfg = tm ? tm->driver_cfg : NULL;
    provision_fill_spec(t, tm, &s->env, &s->labels);
    if (contribute) {
        list_each(it, &contribs) {
            struct contrib *c = container_of(it, struct contrib, link);
            c->fn(s, c->arg);
        }
    }
    return s;
}

/* A provisioner's spec: the base, and its own template block as the config. */
berth_spec *spec_build_prov(const struct tenant *t, const struct tmpl *tm, const void *block)
{
    berth_spec *s = spec_base(t, tm);
    s->cfg = block;
    return s;
}

void spec_free(berth_spec *s)
{
    if (!s) return;
    kv_free(&s->env);
    kv_free(&s->labels);
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
