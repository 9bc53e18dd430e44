/* Fuzz target for the config loader: YAML parsing with positions, then validation of every
 * section against the core and template schemas.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_conf corpus/
 *   gcc:   the same file runs as a plain program over the seed corpus in the test suite. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = xstrndup((const char *)data, size);
    struct conf cf = {0};
    struct errs e = {0};
    struct arena a = {0};
    conf_load_string("fuzz.yaml", text, &cf, &e);
    struct core_cfg core;
    memset(&core, 0, sizeof core);
    const struct berth_cfg_item *s = core_schema;
    void *o = &core;
    cfg_fill(&s, &o, 1, cnode_get(cf.root, "berth"), &a, &e, "berth");
    const struct cnode *ts = cnode_get(cf.root, "templates");
    for (size_t i = 0; ts && ts->kind == CN_MAP && i < ts->n; i++) {
        struct tmpl_core t;
        memset(&t, 0, sizeof t);
        const struct berth_cfg_item *ts_schema = tmpl_core_schema;
        void *to = &t;
        cfg_fill(&ts_schema, &to, 1, ts->vals[i], &a, &e, "template");
    }
    const char *k;
    (void)cfg_reloadable_change(core_schema, cnode_get(cf.root, "berth"),
                                cnode_get(cf.root, "berth"), &k);
    errs_free(&e);
    arena_free(&a);
    conf_free(&cf);
    free(text);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_conf: %d input(s) ran clean\n", argc - 1);
    return 0;
}
#endif
