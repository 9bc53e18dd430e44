/* Unit tests for the YAML loader: positions, merge rule, schema filling. */
#include "core.h"
#include "unit.h"

#include <stdlib.h>
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

struct route { const char *name; int64_t port; const char *token; struct { bool tls; } opt; };
struct routes {
    struct berth_structlist list;
    struct berth_structmap map;
    struct berth_structlist bad;
};
static const struct berth_cfg_item opt_schema[] = {
    {"tls", BERTH_CFG_BOOL, "true", 0, 0, 0, "", 0, NULL, NULL},
    {0},
};
static const struct berth_cfg_item route_schema[] = {
    {"name", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct route, name), "", BERTH_CFG_REQUIRED,
     NULL, NULL},
    {"port", BERTH_CFG_INT, "80", 1, 65535, offsetof(struct route, port), "", 0, NULL, NULL},
    {"token", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct route, token), "", 0, NULL, NULL},
    {"opt", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct route, opt), "", 0, NULL, opt_schema},
    BERTH_CFG_ELEM_END(struct route),
};
static const struct berth_cfg_item no_end_schema[] = {
    {"name", BERTH_CFG_STR, NULL, 0, 0, 0, "", 0, NULL, NULL},
    {0},
};
static const struct berth_cfg_item routes_schema[] = {
    {"list", BERTH_CFG_STRUCT_LIST, NULL, 0, 0, offsetof(struct routes, list), "", 0, NULL,
     route_schema},
    {"map", BERTH_CFG_STRUCT_MAP, NULL, 0, 0, offsetof(struct routes, map), "", 0, NULL,
     route_schema},
    {"bad", BERTH_CFG_STRUCT_LIST, NULL, 0, 0, offsetof(struct routes, bad), "", 0, NULL,
     no_end_schema},
    {0},
};

static int fill_routes(const char *yaml, struct routes *r, struct errs *e, struct arena *a,
                       struct conf *cf)
{
    memset(r, 0, sizeof *r);
    conf_load_string("r.yaml", yaml, cf, e);
    const struct berth_cfg_item *s = routes_schema;
    void *o = r;
    return cfg_fill(&s, &o, 1, cnode_get(cf->root, "x"), a, e, "x");
}

/* Lists and maps of structs: every element laid out by BERTH_CFG_ELEM_END's size, defaults
 * per element, a secret inside an element resolved like any other. */
static void struct_lists_and_maps(void)
{
    struct routes r;
    struct errs e = {0};
    struct arena a = {0};
    struct conf cf = {0};
    setenv("UNIT_ROUTE_TOKEN", "tok-123", 1);
    CHECK(fill_routes("x:\n  list:\n    - {name: a, port: 8080, token: {env: UNIT_ROUTE_TOKEN}}\n"
                      "    - name: b\n      opt: {tls: false}\n"
                      "  map: {eu: {name: e}, us: {name: u, port: 9}}\n", &r, &e, &a, &cf) == 0);
    const struct route *l = r.list.v, *m = r.map.vals;
    CHECK(r.list.n == 2 && !strcmp(l[0].name, "a") && l[0].port == 8080);
    CHECK(l[0].token && !strcmp(l[0].token, "tok-123") && l[0].opt.tls);
    CHECK(!strcmp(l[1].name, "b") && l[1].port == 80 && !l[1].token && !l[1].opt.tls);
    CHECK(r.map.n == 2 && !strcmp(r.map.keys[0], "eu") && !strcmp(r.map.keys[1], "us"));
    CHECK(!strcmp(m[0].name, "e") && m[0].port == 80 && !strcmp(m[1].name, "u") && m[1].port == 9);
    CHECK(e.n == 0);
    conf_free(&cf);
    arena_free(&a);
    unsetenv("UNIT_ROUTE_TOKEN");
    CHECK(fill_routes("x:\n  list:\n    - {name: a}\n    - {prt: 1}\n    - [q]\n"
                      "    - {name: c, token: {env: UNIT_ROUTE_TOKEN}}\n"
                      "  map:\n    eu: {name: e, port: 0}\n  bad: [{name: z}]\n", &r, &e, &a,
                      &cf) == 6);
    static const char *const want[] = {
        "r.yaml:4:8: unknown key 'prt' in list[1]; did you mean 'port'?",
        "r.yaml:4:7: list[1]: required key 'name' is missing",
        "r.yaml:5:7: 'list[2]' must be a mapping",
        "r.yaml:6:24: 'token': environment variable UNIT_ROUTE_TOKEN is not set",
        "r.yaml:8:25: 'port' must be between 1 and 65535, not 0",
        "r.yaml:9:8: 'bad': the plugin's schema does not end with BERTH_CFG_ELEM_END",
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        bool found = false;
        for (size_t k = 0; k < e.n; k++) found |= !strcmp(e.v[k], want[i]);
        if (!found) fprintf(stderr, "missing: %s\n", want[i]);
        if (!found) for (size_t k = 0; k < e.n; k++) fprintf(stderr, "  have: %s\n", e.v[k]);
        CHECK(found);
    }
    errs_free(&e);
    conf_free(&cf);
    arena_free(&a);
    CHECK(fill_routes("x: {list: {a: 1}, map: [1]}\n", &r, &e, &a, &cf) == 2);
    CHECK(e.n == 2 && !strcmp(e.v[0], "r.yaml:1:11: 'list' must be a list of mappings"));
    CHECK(e.n == 2 && !strcmp(e.v[1], "r.yaml:1:24: 'map' must be a mapping of names to "
                                      "mappings"));
    errs_free(&e);
    conf_free(&cf);
    arena_free(&a);
    cJSON *j = cfg_schema_json(routes_schema);
    cJSON *keys = cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "keys");
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "type")->valuestring,
                  "list_of_mappings"));
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 1), "type")->valuestring,
                  "map_of_mappings"));
    CHECK(cJSON_GetArraySize(keys) == 4);
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(keys, 2), "type")->valuestring,
                  "secret"));
    cJSON_Delete(j);
}

/* The driver's struct is its top-level keys (node: the template); others' are their blocks. */
static void template_blocks(void)
{
    int drv = 1, quota = 2;
    struct cnode tnode = {.kind = CN_MAP}, qnode = {.kind = CN_MAP};
    struct tmpl_blk blk = {.inst = "quota", .cfg = &quota, .node = &qnode};
    struct tmpl tm = {.name = "t", .core = {.driver = "docker"}, .driver_cfg = &drv,
                      .node = &tnode, .blocks = &blk, .nblocks = 1};
    CHECK(tmpl_block(&tm, "docker") == &drv && tmpl_block_node(&tm, "docker") == &tnode);
    CHECK(tmpl_block(&tm, "quota") == &quota && tmpl_block_node(&tm, "quota") == &qnode);
    CHECK(!tmpl_block(&tm, "lifecycle") && !tmpl_block_node(&tm, "lifecycle"));
    CHECK(!tmpl_block(NULL, "quota") && !tmpl_block(&tm, NULL) && !tmpl_block_node(NULL, "x"));
    CHECK(!tmpl_gates_ready(&tm) && !tmpl_gates_ready(NULL));
    tm.gates_ready = true;
    CHECK(tmpl_gates_ready(&tm));
}

int main(void)
{
    defaults_and_values();
    errors_with_positions();
    merge_rule();
    hash_content();
    struct_lists_and_maps();
    template_blocks();
    return unit_report("conf");
}
