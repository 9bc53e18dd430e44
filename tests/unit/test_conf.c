/* Unit tests for the YAML loader: positions, merge rule, schema filling. */
#include "core.h"
#include "unit.h"

#include <string.h>

struct cfg {
    const char *name;
    int64_t n, ms;
    uint64_t bytes;
    bool flag;
    struct berth_strlist list;
    struct berth_strmap map;
    struct { int64_t a; const char *b; } sub;
};

static const struct berth_cfg_item sub_schema[] = {
    {"a", BERTH_CFG_INT, "7", 0, 10, 0, "", 0, NULL, NULL},
    {"b", BERTH_CFG_STR, "x", 0, 0, sizeof(int64_t), "", 0, "x|y", NULL},
    {0},
};
static const struct berth_cfg_item schema[] = {
    {"name", BERTH_CFG_STR, "anon", 0, 0, offsetof(struct cfg, name), "", 0, NULL, NULL},
    {"n", BERTH_CFG_INT, "1", 1, 100, offsetof(struct cfg, n), "", 0, NULL, NULL},
    {"ms", BERTH_CFG_DURATION, "1s", 0, 0, offsetof(struct cfg, ms), "", 0, NULL, NULL},
    {"bytes", BERTH_CFG_SIZE, "1k", 0, 0, offsetof(struct cfg, bytes), "", 0, NULL, NULL},
    {"flag", BERTH_CFG_BOOL, NULL, 0, 0, offsetof(struct cfg, flag), "", 0, NULL, NULL},
    {"list", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct cfg, list), "", 0, NULL, NULL},
    {"map", BERTH_CFG_MAP, NULL, 0, 0, offsetof(struct cfg, map), "", 0, NULL, NULL},
    {"sub", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct cfg, sub), "", 0, NULL, sub_schema},
    {0},
};

static int fill(const char *yaml, struct cfg *c, struct errs *e, struct arena *a, struct conf *cf)
{
    memset(c, 0, sizeof *c);
    conf_load_string("t.yaml", yaml, cf, e);
    const struct berth_cfg_item *s = schema;
    void *o = c;
    return cfg_fill(&s, &o, 1, cnode_get(cf->root, "x"), a, e, "x");
}

static void defaults_and_values(void)
{
    struct cfg c;
    struct errs e = {0};
    struct arena a = {0};
    struct conf cf = {0};
    CHECK(fill("x: {}\n", &c, &e, &a, &cf) == 0);
    CHECK(!strcmp(c.name, "anon") && c.n == 1 && c.ms == 1000 && c.bytes == 1024 && !c.flag);
    CHECK(c.sub.a == 7 && !strcmp(c.sub.b, "x"));
    conf_free(&cf);
    arena_free(&a);
    CHECK(fill("x:\n  name: bob\n  n: 42\n  ms: 5m\n  bytes: 2m\n  flag: yes\n"
               "  list: [a, b]\n  map: {K: v}\n  sub: {a: 3, b: y}\n", &c, &e, &a, &cf) == 0);
    CHECK(!strcmp(c.name, "bob") && c.n == 42 && c.ms == 300000 && c.bytes == 2u << 20);
    CHECK(c.flag && c.list.n == 2 && !strcmp(c.list.v[1], "b"));
    CHECK(c.map.n == 1 && !strcmp(c.map.keys[0], "K") && !strcmp(c.map.vals[0], "v"));
    CHECK(c.sub.a == 3 && !strcmp(c.sub.b, "y"));
    CHECK(e.n == 0);
    conf_free(&cf);
    arena_free(&a);
}

static void errors_with_positions(void)
{
    struct cfg c;
    struct errs e = {0};
    struct arena a = {0};
    struct conf cf = {0};
    CHECK(fill("x:\n  n: 500\n  nam: q\n  sub: {b: z}\n", &c, &e, &a, &cf) == 3);
    CHECK(e.n == 3);
    CHECK(e.n > 0 && !strcmp(e.v[0], "t.yaml:2:6: 'n' must be between 1 and 100, not 500"));
    CHECK(e.n > 1 && !strcmp(e.v[1], "t.yaml:3:3: unknown key 'nam' in x; did you mean 'name'?"));
    CHECK(e.n > 2 && !strcmp(e.v[2], "t.yaml:4:12: 'b' must be one of x|y, not 'z'"));
    errs_free(&e);
    conf_free(&cf);
    arena_free(&a);
    conf_load_string("bad.yaml", "a: [1, 2\n", &cf, &e);
    CHECK(e.n == 1 && !strncmp(e.v[0], "bad.yaml:2:1: ", 14));
    errs_free(&e);
    conf_free(&cf);
    conf_load_string("dup.yaml", "a: 1\nb: 2\na: 3\n", &cf, &e);
    CHECK(e.n == 1 && !strcmp(e.v[0], "dup.yaml:3:1: duplicate key 'a' (first at line 1)"));
    errs_free(&e);
    conf_free(&cf);
    conf_load_string("alias.yaml", "a: &x 1\nb: *x\n", &cf, &e);
    CHECK(e.n == 1 && strstr(e.v[0], "aliases"));
    errs_free(&e);
    conf_free(&cf);
}

static void merge_rule(void)
{
    struct errs e = {0};
    struct conf cf = {0};
    conf_load_string("1.yaml", "m: {a: 1, b: {c: 2, d: 3}}\nl: [1, 2]\n", &cf, &e);
    conf_load_string("2.yaml", "m: {b: {c: 9}, e: 5}\nl: [7]\n", &cf, &e);
    CHECK(e.n == 0);
    const struct cnode *m = cnode_get(cf.root, "m");
    CHECK(!strcmp(cnode_get(m, "a")->value, "1"));                      /* kept */
    CHECK(!strcmp(cnode_get(cnode_get(m, "b"), "c")->value, "9"));      /* overridden */
    CHECK(!strcmp(cnode_get(cnode_get(m, "b"), "d")->value, "3"));      /* merged */
    CHECK(!strcmp(cnode_get(cnode_get(m, "b"), "c")->file, "2.yaml"));
    const struct cnode *l = cnode_get(cf.root, "l");
    CHECK(l->n == 1 && !strcmp(l->vals[0]->value, "7"));                /* lists replace */
    conf_free(&cf);
}

/* Equal content hashes equal wherever it was written; any change of a key, a value, an
 * item or the order of a list changes the hash. */
static void hash_content(void)
{
    struct errs e = {0};
    struct conf a = {0}, b = {0}, c = {0};
    conf_load_string("a.yaml", "t: {x: 1, y: [a, b], z: {q: \"s\"}}\n", &a, &e);
    conf_load_string("b.yaml", "\n\nt:\n  z: {q: s}\n  y: [a, b]\n  x: 1\n", &b, &e);
    CHECK(e.n == 0);
    const struct cnode *ta = cnode_get(a.root, "t"), *tb = cnode_get(b.root, "t");
    CHECK(cnode_equal(ta, tb) && cnode_hash(ta) == cnode_hash(tb));
    CHECK(cnode_hash(NULL) == 0 && cnode_hash(ta) != 0);
    static const char *const changed[] = {
        "t: {x: 2, y: [a, b], z: {q: s}}\n", "t: {x: 1, y: [b, a], z: {q: s}}\n",
        "t: {x: 1, y: [a, b], z: {r: s}}\n", "t: {x: 1, y: [a, b]}\n",
        "t: {x: 1, y: [a, b, c], z: {q: s}}\n", "t: {x: 1, y: [a, b], z: [q, s]}\n",
        "t: {x: 1, y: [ab], z: {q: s}}\n", "t: {x: 1, y: {a: b}, z: {q: s}}\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(changed); i++) {
        conf_load_string("c.yaml", changed[i], &c, &e);
        CHECK(e.n == 0 && cnode_hash(cnode_get(c.root, "t")) != cnode_hash(ta));
        conf_free(&c);
    }
    conf_free(&a);
    conf_free(&b);
}

int main(void)
{
    defaults_and_values();
    errors_with_positions();
    merge_rule();
    hash_content();
    return unit_report("conf");
}
