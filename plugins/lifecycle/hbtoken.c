/* hbtoken: the heartbeat form a tenant reaches itself. With `heartbeat_listen` set, the
 * plugin listens there (its own listener, not the control API) for
 * POST /v1/heartbeat with `Authorization: Bearer <token>`, and as a provisioner gives each
 * tenant whose template expects heartbeats HEARTBEAT_URL and HEARTBEAT_TOKEN (BERTH_* is the
 * core's).
 *
 * A token is "<handle>.<hex HMAC-SHA256(key, handle "/" created_ms)>" under a random key kept
 * in the store (lifecycle_secret): provisioning is idempotent without storing tokens, a token
 * names the one tenant it is good for, and it stops working when that tenant is deleted, even
 * if a tenant of the same handle is created later (its creation time differs). The check runs
 * at the headers (authorize), so an unauthenticated body is never buffered. */
#include "lc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

#define KEY_LEN 32
#define MAC_HEX (2 * 32)
#define TOKEN_MAX (BERTH_HANDLE_MAX + 1 + MAC_HEX)

/* The MAC of one tenant: its handle and creation time, so a token outlives no tenant. */
static int mac_hex(const struct lc *lc, const char *handle, int64_t created_ms,
                   char out[MAC_HEX + 1])
{
    char msg[BERTH_HANDLE_MAX + 32];
    int n = snprintf(msg, sizeof msg, "%s/%lld", handle, (long long)created_ms);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    if (n < 0 || (size_t)n >= sizeof msg ||
        !HMAC(EVP_sha256(), lc->hb_key, KEY_LEN, (const unsigned char *)msg, (size_t)n, mac,
              &len) || len != 32)
        return BERTH_EIO;
    for (unsigned i = 0; i < len; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return 0;
}

/* The existing tenant a token is good for, copied to handle; false when it is not a valid
 * token of a tenant that exists now. */
static bool token_handle(const struct lc *lc, const char *token, char handle[BERTH_HANDLE_MAX + 1])
{
    const char *dot = token ? strchr(token, '.') : NULL;
    if (!dot || dot == token || dot - token > BERTH_HANDLE_MAX || strlen(dot + 1) != MAC_HEX)
        return false;
    memcpy(handle, token, (size_t)(dot - token));
    handle[dot - token] = 0;
    struct berth_tenant_info t = {.size = sizeof t};
    if (H->tenant_get(lc->self, handle, &t) < 0) return false;
    char want[MAC_HEX + 1];
    return mac_hex(lc, handle, t.created_ms, want) == 0 &&
           CRYPTO_memcmp(want, dot + 1, MAC_HEX) == 0;
}

static bool bearer(const struct lc *lc, berth_req *r, char handle[BERTH_HANDLE_MAX + 1])
{
    const char *a = H->req_header(r, "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7)) return false;
    return token_handle(lc, a + 7, handle);
}

static bool authorize(berth_req *r, void *arg)
{
    char handle[BERTH_HANDLE_MAX + 1];
    if (bearer(arg, r, handle)) return true;
    H->respond_error(r, 401, "unauthorized", "a tenant's heartbeat token is required "
                     "(Authorization: Bearer $HEARTBEAT_TOKEN)");
    return false;
}

static void serve(berth_req *r, void *arg)
{
    struct lc *lc = arg;
    char handle[BERTH_HANDLE_MAX + 1];
    if (strcmp(H->req_path(r), "/v1/heartbeat")) {
        H->respond_error(r, 404, "not_found", "only POST /v1/heartbeat is served here");
        return;
    }
    if (strcmp(H->req_method(r), "POST")) {
        H->respond_error(r, 405, "method_not_allowed", "POST /v1/heartbeat");
        return;
    }
    if (!bearer(lc, r, handle)) {       /* authorized at the headers; checked again for it */
        H->respond_error(r, 401, "unauthorized", "a tenant's heartbeat token is required");
        return;
    }
    hb_answer(lc, r, handle);
}

static void provision(void *state, const berth_spec *s, berth_op *op)
{
    struct lc *lc = state;
    const struct tcfg *c = H->spec_config(s);
    if (!c || c->heartbeat.expect_every <= 0) {
        H->op_done(op, 0, NULL, NULL);
        return;
    }
    const char *handle = H->spec_handle(s);
    struct berth_tenant_info t = {.size = sizeof t};
    char mac[MAC_HEX + 1], token[TOKEN_MAX + 1];
    if (H->tenant_get(lc->self, handle, &t) < 0) {
        H->op_done(op, BERTH_ENOENT, NULL, "the tenant is gone");
        return;
    }
    if (mac_hex(lc, handle, t.created_ms, mac) < 0) {
        H->op_done(op, BERTH_EIO, NULL, "cannot compute the heartbeat token");
        return;
    }
    snprintf(token, sizeof token, "%s.%s", handle, mac);
    int rc = H->op_setenv(op, "HEARTBEAT_URL", lc->hb_url);
    if (rc == 0) rc = H->op_setenv(op, "HEARTBEAT_TOKEN", token);
    H->op_done(op, rc, NULL, rc ? "cannot set the heartbeat environment" : NULL);
}

/* nothing to take away: the token dies with the tenant */
static void deprovision(void *state, const berth_spec *s, berth_op *op)
{
    (void)state; (void)s;
    H->op_done(op, 0, NULL, NULL);
}

static bool key_row(int ncols, const char *const *names, const struct berth_value *v,
                    void *arg)
{
    (void)ncols; (void)names;
    struct lc *lc = arg;
    if (v[0].type == BERTH_VAL_BLOB && v[0].len == KEY_LEN) {
        memcpy(lc->hb_key, v[0].p, KEY_LEN);
        lc->hb_have_key = true;
    }
    return true;
}

static int load_key(struct lc *lc)
{
    int rc = H->store_query(lc->self, "SELECT key FROM lifecycle_secret WHERE id = 1", NULL, 0,
                            key_row, lc);
    if (rc < 0 || lc->hb_have_key) return rc;
    if (RAND_bytes(lc->hb_key, KEY_LEN) != 1) return BERTH_EIO;
    struct berth_value p[] = {BERTH_BLOB(lc->hb_key, KEY_LEN)};
    rc = H->store_query(lc->self, "INSERT INTO lifecycle_secret(id, key) VALUES(1, ?1)", p, 1,
                        NULL, NULL);
    lc->hb_have_key = rc == 0;
    return rc;
}

int hbtoken_start(struct lc *lc)
{
    if (!lc->cfg.heartbeat_listen) return 0;
    int rc = load_key(lc);
    if (rc < 0) return rc;
    snprintf(lc->hb_url, sizeof lc->hb_url, "%s", lc->cfg.heartbeat_url ? lc->cfg.heartbeat_url
             : "");
    if (!lc->cfg.heartbeat_url)
        snprintf(lc->hb_url, sizeof lc->hb_url, "http://%s/v1/heartbeat",
                 lc->cfg.heartbeat_listen);
    struct berth_listen_opts o = {.size = sizeof o, .addr = lc->cfg.heartbeat_listen,
                                  .max_body = 8192, .authorize = authorize};
    if ((rc = H->listen_opts(lc->self, &o, serve, lc)) < 0) {
        H->log(lc->self, BERTH_LOG_ERROR, "cannot listen on %s for heartbeats: %s",
               lc->cfg.heartbeat_listen, berth_strerror(rc));
        return rc;
    }
    lc->hb_prov = (struct berth_provisioner){.size = sizeof lc->hb_prov, .order = 500,
                                             .provision = provision,
                                             .deprovision = deprovision};
    return H->provisioner_register(lc->self, &lc->hb_prov, lc);
}
