/* Reading the homeserver's answers. Everything read here later lands in a fixed buffer, an
 * HTTP header, a URL path or a timer, so each value is checked against what those can hold
 * before the plugin sees it: an answer berth cannot use whole is refused, never cut short
 * (a cut token fails later, far from its cause; a cut id names something else). */
#include "hs_answers.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const cJSON *field(const cJSON *j, const char *key)
{
    return cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
}

static const char *str_field(const cJSON *j, const char *key)
{
    return cJSON_GetStringValue(field(j, key));
}

void hsa_error_read(const cJSON *j, const char **errcode, const char **message)
{
    const char *ec = str_field(j, "errcode"), *em = str_field(j, "error");
    *errcode = ec ? ec : "";
    *message = em ? em : "";
}

int64_t hsa_retry_ms(const cJSON *j)
{
    const cJSON *ra = field(j, "retry_after_ms");
    if (!cJSON_IsNumber(ra)) return HSA_RETRY_DEFAULT_MS;
    double ms = ra->valuedouble;     /* may be 1e999 (inf) or -1e300: compared, never cast */
    if (isnan(ms)) return HSA_RETRY_DEFAULT_MS;
    if (ms < HSA_RETRY_MIN_MS) return HSA_RETRY_MIN_MS;
    if (ms > HSA_RETRY_MAX_MS) return HSA_RETRY_MAX_MS;
    return (int64_t)ms;
}

/* visible ASCII without space: safe in a header, a log line and a path once escaped */
static bool visible(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || (unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e) return false;
    return n > 0;
}

bool hsa_user_id_ok(const char *s, const char *server_name)
{
    if (!s || s[0] != '@' || !visible(s, HSA_ID_LEN_MAX)) return false;
    const char *colon = strchr(s, ':');
    return colon && colon > s + 1 && !strcmp(colon + 1, server_name);
}

const char *hsa_login_read(const cJSON *j, const char *expect, struct hsa_login *out)
{
    memset(out, 0, sizeof *out);
    const char *tok = str_field(j, "access_token"), *dev = str_field(j, "device_id");
    const char *uid = str_field(j, "user_id");
    if (!tok) return "the answer has no access_token";
    if (!visible(tok, sizeof out->token - 1))
        return "the answer's access_token is empty, too long or not printable ASCII";
    if (uid && strcmp(uid, expect)) {
        memset(out, 0, sizeof *out);
        return "the answer names another user";
    }
    snprintf(out->token, sizeof out->token, "%s", tok);
    if (uid) snprintf(out->user_id, sizeof out->user_id, "%s", uid);
    /* the device id is only handed back at the next login: one berth cannot keep is
     * dropped (the homeserver makes a new device), never cut into another */
    if (dev && strlen(dev) < sizeof out->device_id)
        snprintf(out->device_id, sizeof out->device_id, "%s", dev);
    return NULL;
}

const char *hsa_nonce(const cJSON *j)
{
    const char *n = str_field(j, "nonce");
    return n && n[0] ? n : NULL;
}

static bool in_list(const cJSON *arr, const char *s)
{
    const cJSON *c;
    if (!cJSON_IsArray(arr)) return false;
    cJSON_ArrayForEach(c, arr) {
        const char *v = cJSON_GetStringValue(c);
        if (v && !strcmp(v, s)) return true;
    }
    return false;
}

/* the stage of a flow berth does next: NULL when the flow has a stage berth cannot do, or
 * every stage is completed */
static const char *flow_next(const cJSON *flow, const cJSON *completed)
{
    const cJSON *stages = field(flow, "stages"), *st;
    const char *next = NULL;
    if (!cJSON_IsArray(stages)) return NULL;
    cJSON_ArrayForEach(st, stages) {
        const char *s = cJSON_GetStringValue(st), *known;
        if (s && !strcmp(s, HSA_STAGE_TOKEN)) known = HSA_STAGE_TOKEN;
        else if (s && !strcmp(s, HSA_STAGE_DUMMY)) known = HSA_STAGE_DUMMY;
        else return NULL;
        if (!next && !in_list(completed, s)) next = known;
    }
    return next;
}

enum hsa_uia_step hsa_uia_read(const cJSON *j, const char *errcode, const char **session,
                               const char **stage)
{
    *session = str_field(j, "session");
    *stage = NULL;
    if (!*session || !(*session)[0]) return HSA_UIA_NO_SESSION;
    const cJSON *completed = field(j, "completed"), *flows = field(j, "flows"), *flow;
    if (!cJSON_IsArray(flows)) return HSA_UIA_NO_FLOW;
    cJSON_ArrayForEach(flow, flows) {
        const char *next = flow_next(flow, completed);
        if (!next) continue;
        /* an error after the token was sent: sending it again would loop */
        if (errcode[0] && !strcmp(next, HSA_STAGE_TOKEN) && completed)
            return HSA_UIA_REFUSED;
        *stage = next;
        return HSA_UIA_NEXT;
    }
    return HSA_UIA_NO_FLOW;
}

bool hsa_room_id_ok(const char *s)
{
    return s && s[0] == '!' && s[1] && visible(s, HSA_ID_LEN_MAX);
}

const char *hsa_room_id(const cJSON *j)
{
    const char *rid = str_field(j, "room_id");
    return hsa_room_id_ok(rid) ? rid : NULL;
}

const char *hsa_state_string(const cJSON *j, const char *key)
{
    return str_field(j, key);
}

bool hsa_space_child_linked(const cJSON *j)
{
    const cJSON *via = field(j, "via"), *v;
    if (!cJSON_IsArray(via)) return false;
    cJSON_ArrayForEach(v, via) {
        const char *s = cJSON_GetStringValue(v);
        if (s && s[0]) return true;
    }
    return false;
}
