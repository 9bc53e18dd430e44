/* Fuzz target for the control API's JSON bodies: the whole-string check every body passes
 * (json_text_check), cJSON's parse, the fields POST /v1/tenants reads, and the escaping of
 * echoed input in error bodies. It checks the promises the API makes, not only for crashes:
 * a body the check accepts decodes to strings that are whole, valid UTF-8, and anything
 * escaped for an answer is valid JSON. A broken promise aborts.
 *   clang: meson setup build-fuzz -Dfuzz=true && build-fuzz/tests/fuzz/fuzz_json corpus/json
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void must(bool ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_json: broken promise: %s\n", what);
    abort();
}

static void walk(const cJSON *j, int depth)
{
    for (const cJSON *c = j ? j->child : NULL; c && depth < 64; c = c->next) {
        if (c->string) must(utf8_valid(c->string, strlen(c->string)), "a key is valid UTF-8");
        if (cJSON_IsString(c))
            must(utf8_valid(c->valuestring, strlen(c->valuestring)), "a string is valid UTF-8");
        walk(c, depth + 1);
    }
}

/* the fields post_tenants reads, as it reads them */
static void tenant_fields(const cJSON *j)
{
    static const char *const keys[] = {"handle", "kind", "template", "desired"};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(j, keys[i]));
        if (!s) continue;
        if (!strcmp(keys[i], "handle") && handle_valid(s))
            must(strlen(s) >= 2 && strlen(s) <= 32, "a valid handle is 2..32 bytes");
        (void)ident_valid(s);
    }
}

/* an error body that echoes the input is JSON whatever the input was */
static void echo_is_json(const char *text)
{
    struct buf b = {0};
    buf_adds(&b, "{\"message\":\"");
    buf_json_escape(&b, text);
    buf_adds(&b, "\"}");
    must(utf8_valid(b.p, b.len), "an escaped echo is valid UTF-8");
    cJSON *j = cJSON_ParseWithLength(b.p, b.len);
    must(cJSON_IsString(cJSON_GetObjectItem(j, "message")), "an escaped echo parses");
    cJSON_Delete(j);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    char err[160];
    bool accepted = json_text_check(s, size, err, sizeof err) == 0;
    cJSON *j = cJSON_ParseWithLength(s, size);
    if (accepted && j) {
        walk(j, 0);
        tenant_fields(j);
    }
    cJSON_Delete(j);
    char *text = xstrndup(s, size);     /* as far as the first NUL, like a C string echo */
    echo_is_json(text);
    (void)pct_text_valid(s, size);
    free(text);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_json: %d input(s) ran clean\n", argc - 1);
    return 0;
}
#endif
