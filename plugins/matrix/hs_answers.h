/* plugins/matrix: what the plugin reads from the homeserver's JSON answers. No host calls,
 * so the plugin and tests/fuzz/fuzz_matrix_json.c compile the same code.
 *
 * Every key is matched case-sensitively (Matrix's keys are; cJSON_GetObjectItem is not).
 * Strings returned are borrowed from the cJSON tree passed in (or static), never owned. */
#ifndef BERTH_MATRIX_HS_ANSWERS_H
#define BERTH_MATRIX_HS_ANSWERS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#define HSA_ID_LEN_MAX 255          /* the spec's limit on a user, room or alias id */
#define HSA_ID_MAX 300              /* a buffer that holds one */
#define HSA_TOKEN_MAX 512
#define HSA_DEVICE_MAX 128

#define HSA_RETRY_MIN_MS 50
#define HSA_RETRY_MAX_MS 60000
#define HSA_RETRY_DEFAULT_MS 1000

#define HSA_STAGE_TOKEN "m.login.registration_token"
#define HSA_STAGE_DUMMY "m.login.dummy"

/* errcode and error of an answer; "" when absent or not strings (j may be NULL) */
void hsa_error_read(const cJSON *j, const char **errcode, const char **message);
/* the wait a 429 asks for, clamped to [HSA_RETRY_MIN_MS, HSA_RETRY_MAX_MS];
 * HSA_RETRY_DEFAULT_MS when absent or not a number */
int64_t hsa_retry_ms(const cJSON *j);

/* s is a user id "@localpart:server_name" of that server, within the spec's length */
bool hsa_user_id_ok(const char *s, const char *server_name);

/* what a register or login answer gives berth */
struct hsa_login {
    char user_id[HSA_ID_MAX];           /* "" when the answer names none */
    char token[HSA_TOKEN_MAX];          /* printable ASCII, no space: it goes in a header */
    char device_id[HSA_DEVICE_MAX];     /* "" when absent or too long to keep */
};
/* Reads a 200 of register or login for the user id `expect`. NULL when it gives a usable
 * token (and names expect, if it names a user), else why not (out is then cleared). */
const char *hsa_login_read(const cJSON *j, const char *expect, struct hsa_login *out);

/* the nonce of GET /_synapse/admin/v1/register; NULL when none */
const char *hsa_nonce(const cJSON *j);

/* a 401 of the registration's user-interactive auth */
enum hsa_uia_step {
    HSA_UIA_NEXT,           /* *session and *stage are set */
    HSA_UIA_NO_SESSION,     /* not a UIA answer */
    HSA_UIA_REFUSED,        /* the registration token was tried and refused */
    HSA_UIA_NO_FLOW,        /* no flow of only the stages berth can do */
};
/* errcode as read by hsa_error_read. *stage is HSA_STAGE_TOKEN or HSA_STAGE_DUMMY (static),
 * the first stage not completed of the first flow berth can follow. */
enum hsa_uia_step hsa_uia_read(const cJSON *j, const char *errcode, const char **session,
                               const char **stage);

/* s is a room id: "!" and printable ASCII, within the spec's length */
bool hsa_room_id_ok(const char *s);
/* the "room_id" of an alias lookup or createRoom answer; NULL when none or not a room id */
const char *hsa_room_id(const cJSON *j);
/* a string field of a state event's content (the name of m.room.name...); NULL when none */
const char *hsa_state_string(const cJSON *j, const char *key);
/* an m.space.child content that links the child: "via" is an array naming a server */
bool hsa_space_child_linked(const cJSON *j);

#endif
