/* Fuzz target for the matrix plugin's reading of the homeserver's answers
 * (plugins/matrix/hs_answers.c). The first byte picks the answer, the second a variation.
 * Checked beyond crashes:
 *   - a 429's wait is within [50 ms, 60 s], and the server's own figure when that is within;
 *   - a register/login answer gives a whole token fit for a header (printable ASCII, no
 *     space, never cut), a user id that is the expected one on berth's server, and a device
 *     id that is the answer's own or none; a refused answer leaves nothing behind;
 *   - a UIA answer names one of the two stages berth can do, not yet completed, of a flow
 *     the answer lists; completing what it names ends the dance within two steps;
 *   - a room id read is "!" + printable ASCII within 255 bytes, so its escaped form fits the
 *     plugin's path buffers; a linked space child has a "via" array naming a server;
 *   - a user id accepted is "@localpart:example.com", printable, within 255 bytes.
 *   clang: meson setup build-fuzz -Dfuzz=true &&
 *          build-fuzz/tests/fuzz/fuzz_matrix_json corpus/matrix_json
 *   gcc:   runs as a plain program over the seed corpus in the test suite. */
#include "hs_answers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SERVER "example.com"
#define EXPECT "@alice:" SERVER
#define PATH_BUF (HSA_ID_MAX * 3)       /* the plugin's escaped-id buffers */

static size_t read_ok;      /* answers that gave berth something, for the corpus run */

static void must(bool ok, const char *what)
{
    if (ok) return;
    fprintf(stderr, "fuzz_matrix_json: broken promise: %s\n", what);
    abort();
}

static const char *str(const cJSON *j, const char *k)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, k));
}

static bool printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

static void error_answer(const cJSON *j)
{
    const char *ec, *em;
    hsa_error_read(j, &ec, &em);
    must(ec && em, "errcode and error are never NULL");
    int64_t ms = hsa_retry_ms(j);
    must(ms >= HSA_RETRY_MIN_MS && ms <= HSA_RETRY_MAX_MS, "a 429's wait within [50 ms, 60 s]");
    const cJSON *ra = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "retry_after_ms")
                                        : NULL;
    if (cJSON_IsNumber(ra) && ra->valuedouble >= HSA_RETRY_MIN_MS &&
        ra->valuedouble <= HSA_RETRY_MAX_MS)
        must(ms == (int64_t)ra->valuedouble, "a wait within bounds is the server's own");
    if (ec[0]) read_ok++;
}

static void login_answer(const cJSON *j)
{
    struct hsa_login l;
    memset(&l, 0x5a, sizeof l);
    const char *why = hsa_login_read(j, EXPECT, &l);
    if (why) {
        must(!l.token[0] && !l.user_id[0] && !l.device_id[0], "a refused answer leaves nothing");
        return;
    }
    must(printable(l.token, HSA_TOKEN_MAX - 1), "a token fit for a header");
    must(!strcmp(l.token, str(j, "access_token")), "the token is the answer's, whole");
    if (l.user_id[0]) {
        must(!strcmp(l.user_id, EXPECT), "the user id is the expected one");
        must(hsa_user_id_ok(l.user_id, SERVER), "the user id is one of berth's server");
    }
    const char *dev = str(j, "device_id");
    must(!l.device_id[0] || (dev && !strcmp(l.device_id, dev)), "the device id is the answer's");
    read_ok++;
}

static bool flows_list(const cJSON *j, const char *stage)
{
    const cJSON *flow, *st;
    cJSON_ArrayForEach(flow, cJSON_GetObjectItemCaseSensitive(j, "flows"))
        cJSON_ArrayForEach(st, cJSON_GetObjectItemCaseSensitive(flow, "stages"))
            if (cJSON_GetStringValue(st) && !strcmp(cJSON_GetStringValue(st), stage))
                return true;
    return false;
}

static void uia_answer(cJSON *j)
{
    const char *ec, *em, *session, *stage;
    hsa_error_read(j, &ec, &em);
    int steps = 0;
    for (;;) {
        enum hsa_uia_step s = hsa_uia_read(j, ec, &session, &stage);
        if (s != HSA_UIA_NEXT) {
            must(!stage, "no stage unless one is next");
            break;
        }
        must(session && session[0] && !strcmp(session, str(j, "session")),
             "the session is the answer's");
        must(!strcmp(stage, HSA_STAGE_TOKEN) || !strcmp(stage, HSA_STAGE_DUMMY),
             "a stage berth can do");
        must(flows_list(j, stage), "a stage of a listed flow");
        must(++steps <= 2, "completing the named stages ends the dance");
        read_ok++;
        /* the homeserver accepted that stage: it is completed, no error */
        cJSON *done = cJSON_GetObjectItemCaseSensitive(j, "completed");
        if (!cJSON_IsArray(done)) {     /* every "completed" goes: a duplicate key is read */
            while (cJSON_GetObjectItemCaseSensitive(j, "completed"))
                cJSON_DeleteItemFromObjectCaseSensitive(j, "completed");
            done = cJSON_AddArrayToObject(j, "completed");
        }
        cJSON_AddItemToArray(done, cJSON_CreateString(stage));
        ec = "";
    }
}

static void room_answer(const cJSON *j)
{
    const char *rid = hsa_room_id(j);
    if (rid) {
        must(rid[0] == '!' && printable(rid, HSA_ID_LEN_MAX), "a room id as the spec has it");
        must(3 * strlen(rid) + 1 <= PATH_BUF, "an escaped room id fits the path buffers");
        read_ok++;
    }
    const char *name = hsa_state_string(j, "name");
    if (name) must(name == str(j, "name"), "the name is the answer's, by its exact key");
    if (hsa_space_child_linked(j)) {
        const cJSON *via = cJSON_GetObjectItemCaseSensitive(j, "via");
        must(cJSON_IsArray(via) && cJSON_GetArraySize(via) > 0, "a linked child has a via");
        read_ok++;
    }
}

static void user_id(const char *s, size_t len)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), s);
    if (!hsa_user_id_ok(buf, SERVER)) return;
    size_t n = strlen(buf), tail = strlen(":" SERVER);
    must(buf[0] == '@' && printable(buf, HSA_ID_LEN_MAX), "a user id as the spec has it");
    must(n > tail + 1 && !strcmp(buf + n - tail, ":" SERVER), "a user id of berth's server");
    read_ok++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int kind = data[0] % 5;
    const char *json = (const char *)data + 2;
    size_t len = size - 2;
    if (kind == 4) {
        user_id(json, len);
    }
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (kind == 0) error_answer(j);
    else if (kind == 1) login_answer(j);
    else if (kind == 2) uia_answer(j);
    else if (kind == 3) room_answer(j);
    else if (hsa_nonce(j)) read_ok++;
    cJSON_Delete(j);
    return 0;
}

#ifndef BERTH_LIBFUZZER
#include "corpus_run.h"

int main(int argc, char **argv)
{
    if (corpus_run(argc, argv)) return 1;
    printf("fuzz_matrix_json: %d input(s) ran clean, %zu read\n", argc - 1, read_ok);
    return read_ok > 0 || argc == 1 ? 0 : 1;
}
#endif
