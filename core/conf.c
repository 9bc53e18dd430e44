/* conf.d loading: libyaml events -> a tree that remembers file:line:column for every node, the
 * merge of several files, and validation of a block against a plugin's typed schema. */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* ---- errors ---- */

static void errs_push(struct errs *e, char *msg)
{
    e->v = xrealloc(e->v, (e->n + 1) * sizeof *e->v);
    e->v[e->n++] = msg;
}

void errs_add(struct errs *e, const struct cnode *at, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    errs_push(e, at ? xasprintf("%s:%d:%d: %s", at->file, at->line, at->col, msg)
                    : xstrdup(msg));
}

void errs_addf(struct errs *e, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    errs_push(e, xstrdup(msg));
}

/* "file:line:col: msg" -> where; false for a message without a position */
struct errkey { const char *msg; size_t flen, idx; long line, col; bool pos; };

static void err_key(struct errkey *k)
{
    const char *s = k->msg;
    for (const char *p = strchr(s, ':'); p; p = strchr(p + 1, ':')) {
        char *end, *end2;
        if (p[1] < '0' || p[1] > '9') continue;
        long line = strtol(p + 1, &end, 10);
        if (end[0] != ':' || end[1] < '0' || end[1] > '9') continue;
        long col = strtol(end + 1, &end2, 10);
        if (end2[0] != ':' || end2[1] != ' ') continue;
        *k = (struct errkey){s, (size_t)(p - s), k->idx, line, col, true};
        return;
    }
}

static int errkey_cmp(const void *pa, const void *pb)
{
    const struct errkey *a = pa, *b = pb;
    if (a->pos != b->pos) return a->pos ? 1 : -1;
    if (a->pos) {
        size_t l = a->flen < b->flen ? a->flen : b->flen;
        int c = strncmp(a->msg, b->msg, l);
        if (c) return c;
        if (a->flen != b->flen) return a->flen < b->flen ? -1 : 1;
        if (a->line != b->line) return a->line < b->line ? -1 : 1;
        if (a->col != b->col) return a->col < b->col ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

void errs_sort(struct errs *e, size_t from)
{
    if (e->n - from < 2) return;
    struct errkey *k = xcalloc(e->n - from, sizeof *k);
    for (size_t i = from; i < e->n; i++) {
        k[i - from] = (struct errkey){.msg = e->v[i], .idx = i};
        err_key(&k[i - from]);
    }
    qsort(k, e->n - from, sizeof *k, errkey_cmp);
    for (size_t i = from; i < e->n; i++) e->v[i] = (char *)k[i - from].msg;
    free(k);
}

void errs_free(struct errs *e)
{
    for (size_t i = 0; i < e->n; i++) free(e->v[i]);
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

/* ---- tree ---- */

static struct cnode *cnode_new(enum cnode_kind k, const char *file, const yaml_mark_t *m)
{
    struct cnode *n = xcalloc(1, sizeof *n);
    n->kind = k;
    n->file = file;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

static void cnode_free(struct cnode *n)
{
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) {
        if (n->keys) cnode_free(n->keys[i]);
        cnode_free(n->vals[i]);
    }
    free(n->keys);
    free(n->vals);
    free(n->value);
    free(n);
}

static void cnode_push(struct cnode *n, struct cnode *k, struct cnode *v)
{
    n->vals = xrealloc(n->vals, (n->n + 1) * sizeof *n->vals);
    if (n->kind == CN_MAP) {
        n->keys = xrealloc(n->keys, (n->n + 1) * sizeof *n->keys);
        n->keys[n->n] = k;
    }
    n->vals[n->n++] = v;
}

const struct cnode *cnode_get(const struct cnode *map, const char *key)
{
    if (!map || map->kind != CN_MAP) return NULL;
    for (size_t i = 0; i < map->n; i++)
        if (!strcmp(map->keys[i]->value, key)) return map->vals[i];
    return NULL;
}

bool cnode_equal(const struct cnode *a, const struct cnode *b)
{
    if (!a || !b) return a == b;
    if (a->kind != b->kind || a->n != b->n) return false;
    if (a->kind == CN_SCALAR) return !strcmp(a->value, b->value);
    for (size_t i = 0; i < a->n; i++) {
        if (a->kind == CN_MAP) {
            const struct cnode *bv = cnode_get(b, a->keys[i]->value);
            if (!cnode_equal(a->vals[i], bv)) return false;
        } else if (!cnode_equal(a->vals[i], b->vals[i])) {
            return false;
        }
    }
    return true;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix64(uint64_t x)      /* splitmix64's finalizer: spreads sums of hashes */
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Maps are compared by key like cnode_equal, so their pairs are summed (order-free); a
 * sequence's items are chained in order. Scalars hash their text only: quoting does not
 * matter, as in cnode_equal. */
uint64_t cnode_hash(const struct cnode *n)
{
    if (!n) return 0;
    uint64_t h = fnv(0xcbf29ce484222325ull, &n->kind, sizeof n->kind);
    h = fnv(h, &n->n, sizeof n->n);
    if (n->kind == CN_SCALAR) return mix64(fnv(h, n->value, strlen(n->value) + 1));
    uint64_t sum = 0;
    for (size_t i = 0; i < n->n; i++) {
        uint64_t c = cnode_hash(n->vals[i]);
        if (n->kind == CN_MAP) {
            const char *k = n->keys[i]->value;
            sum += mix64(fnv(fnv(0xcbf29ce484222325ull, k, strlen(k) + 1), &c, sizeof c));
        } else {
            h = mix64(fnv(h, &c, sizeof c));
        }
    }
    return mix64(fnv(h, &sum, sizeof sum));
}

/* ---- parsing ---- */

struct parse { yaml_parser_t p; const char *file; struct errs *e; bool failed; };

static bool next_event(struct parse *ps, yaml_event_t *ev)
{
    if (yaml_parser_parse(&ps->p, ev)) return true;
    const yaml_mark_t *m = &ps->p.problem_mark;
    errs_addf(ps->e, "%s:%zu:%zu: %s%s%s", ps->file, m->line + 1, m->column + 1,
              ps->p.problem ? ps->p.problem : "syntax error",
              ps->p.context ? " " : "", ps->p.context ? ps->p.context : "");
    ps->failed = true;
    return false;
}

static struct cnode *parse_node(struct parse *ps, yaml_event_t *ev, int depth);

static struct cnode *parse_collection(struct parse *ps, struct cnode *n, yaml_event_type_t end,
                                      int depth)
{
    for (;;) {
        yaml_event_t ev;
        if (!next_event(ps, &ev)) goto fail;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            return n;
        }
        struct cnode *k = NULL;
        if (n->kind == CN_MAP) {
            k = parse_node(ps, &ev, depth + 1);
            yaml_event_delete(&ev);
            if (!k) goto fail;
            if (k->kind != CN_SCALAR) {
                errs_add(ps->e, k, "a key must be a plain string");
                cnode_free(k);
                goto fail;
            }
            const struct cnode *dup = cnode_get(n, k->value);
            if (dup) {
                errs_add(ps->e, k, "duplicate key '%s' (first at line %d)", k->value,
                         dup->line);
                cnode_free(k);
                goto fail;
            }
            if (!next_event(ps, &ev)) {
                cnode_free(k);
                goto fail;
            }
        }
        struct cnode *v = parse_node(ps, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (!v) {
            cnode_free(k);
            goto fail;
        }
        cnode_push(n, k, v);
    }
fail:
    cnode_free(n);
    return NULL;
}

/* Consumes the events of one node starting with ev (which the caller deletes). */
static struct cnode *parse_node(struct parse *ps, yaml_event_t *ev, int depth)
{
    if (depth > 32) {
        errs_addf(ps->e, "%s:%zu:%zu: nesting deeper than 32 levels", ps->file,
                  ev->start_mark.line + 1, ev->start_mark.column + 1);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        struct cnode *n = cnode_new(CN_SCALAR, ps->file, &ev->start_mark);
        n->value = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (strlen(n->value) != ev->data.scalar.length) {
            errs_add(ps->e, n, "NUL byte in a value");
            cnode_free(n);
            return NULL;
        }
        return n;
    }
    case YAML_MAPPING_START_EVENT:
        return parse_collection(ps, cnode_new(CN_MAP, ps->file, &ev->start_mark),
                                YAML_MAPPING_END_EVENT, depth);
    case YAML_SEQUENCE_START_EVENT:
        return parse_collection(ps, cnode_new(CN_SEQ, ps->file, &ev->start_mark),
                                YAML_SEQUENCE_END_EVENT, depth);
    case YAML_ALIAS_EVENT:
        errs_addf(ps->e, "%s:%zu:%zu: aliases (*name) are not supported in berth config",
                  ps->file, ev->start_mark.line + 1, ev->start_mark.column + 1);
        return NULL;
    default:
        errs_addf(ps->e, "%s:%zu:%zu: unexpected YAML event", ps->file,
                  ev->start_mark.line + 1, ev->start_mark.column + 1);
        return NULL;
    }
}

/* Parses one document; an empty file yields NULL without error. */
static struct cnode *parse_yaml(const char *file, const unsigned char *text, size_t len,
                                struct errs *e, bool *ok)
{
    struct parse ps = {.file = file, .e = e};
    yaml_parser_initialize(&ps.p);
    yaml_parser_set_input_string(&ps.p, text, len);
    struct cnode *root = NULL;
    yaml_event_t ev;
    *ok = false;
    while (next_event(&ps, &ev)) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            *ok = true;
            break;
        }
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT ||
            t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT) {
            if (root) {
                errs_addf(e, "%s:%zu:%zu: only one YAML document per file", file,
                          ev.start_mark.line + 1, ev.start_mark.column + 1);
                yaml_event_delete(&ev);
                break;
            }
            root = parse_node(&ps, &ev, 0);
            yaml_event_delete(&ev);
            if (!root) break;
            continue;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&ps.p);
    if (!*ok) {
        cnode_free(root);
        return NULL;
    }
    if (root && root->kind == CN_SCALAR && root->plain && !*root->value) {
        cnode_free(root);           /* "---" alone */
        return NULL;
    }
    if (root && root->kind != CN_MAP) {
        errs_add(e, root, "the top level of a config file must be a mapping");
        cnode_free(root);
        *ok = false;
        return NULL;
    }
    return root;
}

/* Later files win: maps merge key by key, anything else is replaced. Consumes src. */
static struct cnode *merge(struct cnode *dst, struct cnode *src)
{
    if (!dst) return src;
    if (dst->kind != CN_MAP || src->kind != CN_MAP) {
        cnode_free(dst);
        return src;
    }
    for (size_t i = 0; i < src->n; i++) {
        size_t j;
        for (j = 0; j < dst->n; j++)
            if (!strcmp(dst->keys[j]->value, src->keys[i]->value)) break;
        if (j < dst->n) {
            dst->vals[j] = merge(dst->vals[j], src->vals[i]);
            cnode_free(src->keys[i]);
        } else {
            cnode_push(dst, src->keys[i], src->vals[i]);
        }
    }
    free(src->keys);
    free(src->vals);
    free(src->value);
    free(src);
    return dst;
}

static int add_text(struct conf *c, const char *name, const char *text, size_t len,
                    struct errs *e)
{
    c->files = xrealloc(c->files, (c->nfiles + 1) * sizeof *c->files);
    char *file = c->files[c->nfiles++] = xstrdup(name);
    bool ok;
    struct cnode *root = parse_yaml(file, (const unsigned char *)text, len, e, &ok);
    if (!ok) return -1;
    if (root) c->root = merge(c->root, root);
    return 0;
}

int conf_load_string(const char *name, const char *text, struct conf *out, struct errs *e)
{
    return add_text(out, name, text, strlen(text), e);
}

/* A conf.d or secret file that is a FIFO or a device is refused unread (see open_regular). */
static FILE *open_file(const char *path, const char **why)
{
    struct stat st;
    int fd = open_regular(path, &st);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) *why = fd == -2 ? "it is not a regular file" : strerror(errno);
    if (fd >= 0 && !f) close(fd);
    return f;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_yaml_name(const char *n)
{
    size_t l = strlen(n);
    if (n[0] == '.') return false;
    return (l > 5 && !strcmp(n + l - 5, ".yaml")) || (l > 4 && !strcmp(n + l - 4, ".yml"));
}

int conf_load_dir(const char *dir, struct conf *out, struct errs *e)
{
    DIR *d = opendir(dir);
    if (!d) {
        errs_addf(e, "%s: cannot open config directory: %s", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_yaml_name(de->d_name)) continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);   /* qsort(NULL, 0) is undefined */
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = xasprintf("%s/%s", dir, names[i]);
        const char *why = NULL;
        FILE *f = open_file(path, &why);
        if (!f) {
            errs_addf(e, "%s: %s", path, why);
            rc = -1;
        } else {
            struct buf b = {0};
            char chunk[8192];
            size_t k;
            while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) buf_add(&b, chunk, k);
            fclose(f);
            if (add_text(out, path, b.p ? b.p : "", b.len, e) < 0) rc = -1;
            buf_free(&b);
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return rc;
}

void conf_free(struct conf *c)
{
    cnode_free(c->root);
    for (size_t i = 0; i < c->nfiles; i++) free(c->files[i]);
    free(c->files);
    c->root = NULL;
    c->files = NULL;
    c->nfiles = 0;
}

/* ---- arena ---- */

struct arena_blk { struct arena_blk *next; max_align_t data[]; };

void *arena_alloc(struct arena *a, size_t n)
{
    struct arena_blk *b = xcalloc(1, sizeof *b + n);
    b->next = a->head;
    a->head = b;
    return b->data;
}

char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(arena_alloc(a, n), s, n);
}

void arena_free(struct arena *a)
{
    while (a->head) {
        struct arena_blk *b = a->head;
        a->head = b->next;
        free(b);
    }
}

/* ---- schema validation ---- */

static const char *type_name(enum berth_cfg_type t)
{
    static const char *const names[] = {"end", "string", "integer", "boolean", "number",
                                        "duration", "size", "secret", "list", "map",
                                        "mapping", "list_of_mappings", "map_of_mappings"};
    return t <= BERTH_CFG_STRUCT_MAP ? names[t] : "?";
}

static bool in_range(const struct berth_cfg_item *it, double v)
{
    return (it->min == 0 && it->max == 0) || (v >= it->min && v <= it->max);
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t lv = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == lv && !strncmp(p, v, l)) return true;
        p += l + (bar ? 1 : 0);
    }
    return false;
}

static char *read_secret_file(const char *path, char *err, size_t n)
{
    const char *why = NULL;
    FILE *f = open_file(path, &why);
    if (!f) {
        snprintf(err, n, "cannot read secret file %s: %s", path, why);
        return NULL;
    }
    char data[4097];
    size_t k = fread(data, 1, sizeof data - 1, f);
    fclose(f);
    if (k == sizeof data - 1) {
        snprintf(err, n, "secret file %s is larger than 4 KiB", path);
        return NULL;
    }
    if (memchr(data, 0, k)) {     /* as a C string it would end there, cut short */
        snprintf(err, n, "secret file %s holds a NUL byte", path);
        return NULL;
    }
    data[k] = 0;
    while (k && (data[k - 1] == '\n' || data[k - 1] == '\r')) data[--k] = 0;
    if (!k) {
        snprintf(err, n, "secret file %s is empty", path);
        return NULL;
    }
    return xstrdup(data);
}

static const char *secret_value(const struct cnode *v, struct arena *a, struct errs *e,
                                const char *key)
{
    if (v->kind != CN_MAP || v->n != 1 || v->vals[0]->kind != CN_SCALAR) {
        errs_add(e, v, "'%s' is a secret: write {file: PATH} or {env: NAME}, not the value",
                 key);
        return NULL;
    }
    const char *how = v->keys[0]->value, *arg = v->vals[0]->value;
    char err[512];
    if (!strcmp(how, "env")) {
        const char *s = getenv(arg);
        if (!s || !*s) {
            errs_add(e, v, "'%s': environment variable %s is not set", key, arg);
            return NULL;
        }
        return arena_strdup(a, s);
    }
    if (!strcmp(how, "file")) {
        char *path = arg[0] == '/' ? xstrdup(arg) : NULL;
        if (!path) {
            const char *slash = strrchr(v->file, '/');
            path = slash ? xasprintf("%.*s/%s", (int)(slash - v->file), v->file, arg)
                         : xstrdup(arg);
        }
        char *s = read_secret_file(path, err, sizeof err);
        free(path);
        if (!s) {
            errs_add(e, v, "'%s': %s", key, err);
            return NULL;
        }
        const char *r = arena_strdup(a, s);
        explicit_bzero(s, strlen(s));
        free(s);
        return r;
    }
    errs_add(e, v->keys[0], "'%s': a secret comes from 'file' or 'env', not '%s'", key, how);
    return NULL;
}

static bool scalar_bool(const char *s, bool *b)
{
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) return *b = true, true;
    if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) return *b = false, true;
    return false;
}

static void fill_one(const struct berth_cfg_item *it, const struct cnode *v, char *out,
                     struct arena *a, struct errs *e);

static void fill_default(const struct berth_cfg_item *it, char *out, struct arena *a,
                         struct errs *e)
{
    if (it->type == BERTH_CFG_STRUCT) {
        for (const struct berth_cfg_item *s = it->sub; s && s->key; s++)
            fill_default(s, out + it->offset, a, e);
        return;
    }
    if (!it->def) return;   /* the caller zeroed the struct */
    struct cnode d = {.kind = CN_SCALAR, .file = "(default)", .line = 0, .col = 0,
                      .value = (char *)it->def, .plain = true};
    fill_one(it, &d, out, a, e);
}

/* The element size of a STRUCT_LIST or STRUCT_MAP: the offset of sub's terminating item
 * (BERTH_CFG_ELEM_END); 0 when the plugin's schema lacks it. */
static size_t elem_size(const struct berth_cfg_item *sub)
{
    while (sub && sub->key) sub++;
    return sub ? sub->offset : 0;
}

/* Each element is filled like a block of its own, so its errors point at the element's own
 * file:line:column and name it (`routes[2]`, `backends.eu`). */
static void fill_elems(const struct berth_cfg_item *it, const struct cnode *v, void *dst,
                       struct arena *a, struct errs *e)
{
    bool is_map = it->type == BERTH_CFG_STRUCT_MAP;
    size_t size = elem_size(it->sub);
    if (v->kind != (is_map ? CN_MAP : CN_SEQ)) {
        errs_add(e, v, is_map ? "'%s' must be a mapping of names to mappings"
                              : "'%s' must be a list of mappings", it->key);
        return;
    }
    if (!size) {
        errs_add(e, v, "'%s': the plugin's schema does not end with BERTH_CFG_ELEM_END",
                 it->key);
        return;
    }
    char *elems = arena_alloc(a, v->n * size + 1);
    const char **keys = is_map ? arena_alloc(a, (v->n + 1) * sizeof *keys) : NULL;
    for (size_t i = 0; i < v->n; i++) {
        char what[160];
        if (is_map) {
            keys[i] = arena_strdup(a, v->keys[i]->value);
            snprintf(what, sizeof what, "%s.%s", it->key, keys[i]);
        } else {
            snprintf(what, sizeof what, "%s[%zu]", it->key, i);
        }
        if (v->vals[i]->kind != CN_MAP) {
            errs_add(e, v->vals[i], "'%s' must be a mapping", what);
            continue;
        }
        const struct berth_cfg_item *sub = it->sub;
        void *o = elems + i * size;
        cfg_fill(&sub, &o, 1, v->vals[i], a, e, what);
    }
    if (is_map) *(struct berth_structmap *)dst = (struct berth_structmap){v->n, keys, elems};
    else *(struct berth_structlist *)dst = (struct berth_structlist){v->n, elems};
}

static void fill_one(const struct berth_cfg_item *it, const struct cnode *v, char *out,
                     struct arena *a, struct errs *e)
{
    void *dst = out + it->offset;
    const char *key = it->key;
    if (it->type == BERTH_CFG_STRUCT_LIST || it->type == BERTH_CFG_STRUCT_MAP) {
        fill_elems(it, v, dst, a, e);
        return;
    }
    if (it->type == BERTH_CFG_SECRET) {
        const char *s = secret_value(v, a, e, key);
        if (s) *(const char **)dst = s;
        return;
    }
    if (it->type == BERTH_CFG_STRUCT) {
        if (v->kind != CN_MAP) {
            errs_add(e, v, "'%s' must be a mapping", key);
            return;
        }
        const struct berth_cfg_item *sub = it->sub;
        void *o = dst;
        cfg_fill(&sub, &o, 1, v, a, e, key);
        return;
    }
    if (it->type == BERTH_CFG_LIST) {
        if (v->kind != CN_SEQ) {
            errs_add(e, v, "'%s' must be a list", key);
            return;
        }
        const char **items = arena_alloc(a, (v->n + 1) * sizeof *items);
        for (size_t i = 0; i < v->n; i++) {
            if (v->vals[i]->kind != CN_SCALAR) {
                errs_add(e, v->vals[i], "'%s' items must be strings", key);
                return;
            }
            items[i] = arena_strdup(a, v->vals[i]->value);
        }
        *(struct berth_strlist *)dst = (struct berth_strlist){v->n, items};
        return;
    }
    if (it->type == BERTH_CFG_MAP) {
        if (v->kind != CN_MAP) {
            errs_add(e, v, "'%s' must be a mapping of names to strings", key);
            return;
        }
        const char **ks = arena_alloc(a, (v->n + 1) * sizeof *ks);
        const char **vs = arena_alloc(a, (v->n + 1) * sizeof *vs);
        for (size_t i = 0; i < v->n; i++) {
            if (v->vals[i]->kind != CN_SCALAR) {
                errs_add(e, v->vals[i], "'%s.%s' must be a string", key, v->keys[i]->value);
                return;
            }
            ks[i] = arena_strdup(a, v->keys[i]->value);
            vs[i] = arena_strdup(a, v->vals[i]->value);
        }
        *(struct berth_strmap *)dst = (struct berth_strmap){v->n, ks, vs};
        return;
    }
    if (v->kind != CN_SCALAR) {
        errs_add(e, v, "'%s' must be a %s, not a %s", key, type_name(it->type),
                 v->kind == CN_MAP ? "mapping" : "list");
        return;
    }
    const char *s = v->value;
    char *end;
    switch (it->type) {
    case BERTH_CFG_STR:
        if (it->choices && !choice_ok(it->choices, s)) {
            errs_add(e, v, "'%s' must be one of %s, not '%s'", key, it->choices, s);
            return;
        }
        *(const char **)dst = arena_strdup(a, s);
        return;
    case BERTH_CFG_BOOL:
        if (!scalar_bool(s, (bool *)dst)) errs_add(e, v, "'%s' must be true or false", key);
        return;
    case BERTH_CFG_INT: {
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (!*s || *end || errno) errs_add(e, v, "'%s' must be an integer, not '%s'", key, s);
        else if (!in_range(it, (double)x))
            errs_add(e, v, "'%s' must be between %.0f and %.0f, not %lld", key, it->min,
                     it->max, x);
        else *(int64_t *)dst = x;
        return;
    }
    case BERTH_CFG_DOUBLE: {
        errno = 0;
        double x = strtod(s, &end);
        if (!*s || *end || errno) errs_add(e, v, "'%s' must be a number, not '%s'", key, s);
        else if (!in_range(it, x))
            errs_add(e, v, "'%s' must be between %g and %g, not %g", key, it->min, it->max, x);
        else *(double *)dst = x;
        return;
    }
    case BERTH_CFG_DURATION: {
        int64_t ms;
        if (parse_duration(s, &ms) < 0)
            errs_add(e, v, "'%s' must be a duration like 500ms, 10s, 5m, 2h, not '%s'", key, s);
        else if (!in_range(it, (double)ms))
            errs_add(e, v, "'%s' is out of range (%.0fms..%.0fms)", key, it->min, it->max);
        else *(int64_t *)dst = ms;
        return;
    }
    case BERTH_CFG_SIZE: {
        uint64_t b;
        if (parse_size(s, &b) < 0)
            errs_add(e, v, "'%s' must be a size like 512, 64k, 256m, 2g, not '%s'", key, s);
        else if (!in_range(it, (double)b))
            errs_add(e, v, "'%s' is out of range (%.0f..%.0f bytes)", key, it->min, it->max);
        else *(uint64_t *)dst = b;
        return;
    }
    default:
        errs_add(e, v, "'%s': unsupported schema type", key);
    }
}

static const struct berth_cfg_item *find_item(const struct berth_cfg_item *s, const char *k)
{
    for (; s && s->key; s++)
        if (!strcmp(s->key, k)) return s;
    return NULL;
}

static const char *suggest(const struct berth_cfg_item *const *schemas, size_t n, const char *k)
{
    const char *best = NULL;
    int bd = 3;
    for (size_t i = 0; i < n; i++)
        for (const struct berth_cfg_item *s = schemas[i]; s && s->key; s++) {
            int d = levenshtein(k, s->key);
            if (d < bd) bd = d, best = s->key;
        }
    return best;
}

int cfg_fill(const struct berth_cfg_item *const *schemas, void *const *outs, size_t nschemas,
             const struct cnode *map, struct arena *a, struct errs *e, const char *what)
{
    size_t before = e->n;
    for (size_t i = 0; i < nschemas; i++)
        for (const struct berth_cfg_item *it = schemas[i]; it && it->key; it++)
            fill_default(it, outs[i], a, e);
    if (map && map->kind != CN_MAP) {
        errs_add(e, map, "'%s' must be a mapping", what);
        return (int)(e->n - before);
    }
    for (size_t k = 0; map && k < map->n; k++) {
        const char *key = map->keys[k]->value;
        const struct berth_cfg_item *it = NULL;
        size_t i;
        for (i = 0; i < nschemas && !it; i++) it = find_item(schemas[i], key);
        if (!it) {
            const char *s = suggest(schemas, nschemas, key);
            if (s) errs_add(e, map->keys[k], "unknown key '%s' in %s; did you mean '%s'?", key,
                            what, s);
            else errs_add(e, map->keys[k], "unknown key '%s' in %s", key, what);
            continue;
        }
        fill_one(it, map->vals[k], outs[i - 1], a, e);
    }
    for (size_t i = 0; i < nschemas; i++)
        for (const struct berth_cfg_item *it = schemas[i]; it && it->key; it++)
            if ((it->flags & BERTH_CFG_REQUIRED) && !cnode_get(map, it->key))
                errs_add(e, map, "%s: required key '%s' is missing", what, it->key);
    return (int)(e->n - before);
}

bool cfg_reloadable_change(const struct berth_cfg_item *schema, const struct cnode *a,
                           const struct cnode *b, const char **key)
{
    /* a list or a value where a mapping belongs has no keys to compare (found by fuzz_conf:
     * a reload with `berth: [x]` read the keys of a list) */
    if ((a && a->kind != CN_MAP) || (b && b->kind != CN_MAP)) {
        *key = "";
        return cnode_equal(a, b);
    }
    for (int pass = 0; pass < 2; pass++) {
        const struct cnode *x = pass ? b : a, *y = pass ? a : b;
        for (size_t i = 0; x && i < x->n; i++) {
            const char *k = x->keys[i]->value;
            if (cnode_equal(x->vals[i], cnode_get(y, k))) continue;
            const struct berth_cfg_item *it = find_item(schema, k);
            if (!it || !(it->flags & BERTH_CFG_RELOAD)) {
                *key = k;
                return false;
            }
        }
    }
    return true;
}

cJSON *cfg_schema_json(const struct berth_cfg_item *schema)
{
    cJSON *arr = cJSON_CreateArray();
    for (const struct berth_cfg_item *it = schema; it && it->key; it++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", it->key);
        cJSON_AddStringToObject(o, "type", type_name(it->type));
        if (it->def) cJSON_AddStringToObject(o, "default", it->def);
        if (it->min != 0 || it->max != 0) {
            cJSON_AddNumberToObject(o, "min", it->min);
            cJSON_AddNumberToObject(o, "max", it->max);
        }
        if (it->choices) cJSON_AddStringToObject(o, "choices", it->choices);
        cJSON_AddStringToObject(o, "description", it->desc ? it->desc : "");
        cJSON_AddBoolToObject(o, "reloadable", (it->flags & BERTH_CFG_RELOAD) != 0);
        cJSON_AddBoolToObject(o, "required", (it->flags & BERTH_CFG_REQUIRED) != 0);
        if (it->type == BERTH_CFG_STRUCT || it->type == BERTH_CFG_STRUCT_LIST ||
            it->type == BERTH_CFG_STRUCT_MAP)
            cJSON_AddItemToObject(o, "keys", cfg_schema_json(it->sub));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}
