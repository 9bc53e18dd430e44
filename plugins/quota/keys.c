/* Tenant keys: the provisioner that gives each tenant its own key for the proxy.
 *
 * A key is HMAC-SHA256(master, handle || nonce) in hex, behind "sk-berth-": the nonce is 16
 * bytes from getrandom per key, the master 32 bytes from getrandom kept in a file of its own
 * (mode 0600) in the state directory, never in the database. The database keeps the key's
 * SHA-256 and its nonce only. So provision() is idempotent, as the SDK asks (a re-run for a
 * changed template block returns the same key, and the workload is not re-created), while
 * a rotation (`berthctl tenant key rotate`) or a deletion draws a new nonce and the old key
 * stops working at once. Without the master file (lost, or a new state dir) a re-run draws
 * a new nonce: a rotation, never a failure. Keys are compared as SHA-256 hashes with
 * CRYPTO_memcmp and are never logged. */
#include "quota.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define NONCE_LEN 16
#define KEY_PREFIX "sk-berth-"
#define KEY_LEN (sizeof KEY_PREFIX - 1 + 64)

/* SHA256() looks the algorithm up in OpenSSL's provider tables on every call (EVP_MD_fetch,
 * ~0.5 us, twice per proxied call): the instance fetches it once and keeps one context */
static void sha256(struct quota *q, const char *s, unsigned char out[QUOTA_HASH_LEN])
{
    if (!q->sha && (q->sha = EVP_MD_fetch(NULL, "SHA256", NULL))) q->sha_ctx = EVP_MD_CTX_new();
    if (!q->sha_ctx || !EVP_DigestInit_ex(q->sha_ctx, q->sha, NULL) ||
        !EVP_DigestUpdate(q->sha_ctx, s, strlen(s)) || !EVP_DigestFinal_ex(q->sha_ctx, out, NULL))
        SHA256((const unsigned char *)s, strlen(s), out);
}

static bool fill_random(void *buf, size_t n)
{
    return getrandom(buf, n, 0) == (ssize_t)n;
}

/* reads the master secret, or creates it (O_EXCL: two instances never write two) */
static int master_load(struct quota *q)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.secret", H->state_dir(q->self), H->name(q->self));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        unsigned char m[sizeof q->master];
        if (!fill_random(m, sizeof m)) return BERTH_EIO;
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        int w = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = w >= 0 && write(w, m, sizeof m) == (ssize_t)sizeof m && !fsync(w);
        if (w >= 0) close(w);
        ok = ok && !link(tmp, path);        /* fails if another instance got there first */
        unlink(tmp);
        OPENSSL_cleanse(m, sizeof m);
        (void)ok;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        H->log(q->self, BERTH_LOG_ERROR, "cannot open the key secret %s: %s", path,
               strerror(errno));
        return BERTH_EIO;
    }
    ssize_t n = read(fd, q->master, sizeof q->master);
    close(fd);
    if (n != (ssize_t)sizeof q->master) {
        H->log(q->self, BERTH_LOG_ERROR, "the key secret %s is damaged", path);
        return BERTH_EIO;
    }
    return 0;
}

static void derive(const struct quota *q, const char *handle, const unsigned char *nonce,
                   char out[KEY_LEN + 1])
{
    unsigned char msg[BERTH_HANDLE_MAX + 1 + NONCE_LEN], mac[32];
    unsigned int maclen = sizeof mac;
    size_t hl = strlen(handle);
    memcpy(msg, handle, hl);
    msg[hl] = 0;
    memcpy(msg + hl + 1, nonce, NONCE_LEN);
    HMAC(EVP_sha256(), q->master, sizeof q->master, msg, hl + 1 + NONCE_LEN, mac, &maclen);
    strcpy(out, KEY_PREFIX);
    for (size_t i = 0; i < sizeof mac; i++)
        snprintf(out + sizeof KEY_PREFIX - 1 + 2 * i, 3, "%02x", mac[i]);
    OPENSSL_cleanse(mac, sizeof mac);
}

const char *quota_key_owner(struct quota *q, const char *key)
{
    unsigned char h[QUOTA_HASH_LEN];
    const char *found = NULL;
    if (!key || strlen(key) != KEY_LEN || strncmp(key, KEY_PREFIX, sizeof KEY_PREFIX - 1))
        return NULL;
    sha256(q, key, h);
    for (struct key *k = q->keys; k; k = k->next)
        if (!CRYPTO_memcmp(k->hash, h, sizeof h)) found = k->handle;
    return found;
}

static void key_drop(struct quota *q, const char *handle)
{
    for (struct key **pp = &q->keys; *pp;) {
        struct key *k = *pp;
        if (strcmp(k->handle, handle)) {
            pp = &k->next;
            continue;
        }
        *pp = k->next;
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
}

static int key_add(struct quota *q, const char *handle, const void *hash)
{
    struct key *k = calloc(1, sizeof *k);
    if (!k) return BERTH_ENOMEM;
    memcpy(k->hash, hash, QUOTA_HASH_LEN);
    snprintf(k->handle, sizeof k->handle, "%s", handle);
    k->next = q->keys;
    q->keys = k;
    return 0;
}

static bool key_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    if (n == 2 && v[0].type == BERTH_VAL_TEXT && v[1].type == BERTH_VAL_BLOB &&
        v[1].len == QUOTA_HASH_LEN && v[0].len <= BERTH_HANDLE_MAX) {
        char h[BERTH_HANDLE_MAX + 1];
        snprintf(h, sizeof h, "%.*s", (int)v[0].len, (const char *)v[0].p);
        key_add(arg, h, v[1].p);
    }
    return true;
}

int keys_load(struct quota *q)
{
    int rc = master_load(q);
    if (!rc) rc = H->store_query(q->self, "SELECT tenant, hash FROM quota_keys", NULL, 0,
                                 key_row, q);
    return rc;
}

void keys_free(struct quota *q)
{
    while (q->keys) {
        struct key *k = q->keys;
        q->keys = k->next;
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
    OPENSSL_cleanse(q->master, sizeof q->master);
    EVP_MD_CTX_free(q->sha_ctx);
    EVP_MD_free(q->sha);
    q->sha_ctx = NULL;
    q->sha = NULL;
}

int keys_rotate(struct quota *q, const char *handle)
{
    struct berth_value p[] = {BERTH_TEXT(handle)};
    return H->store_query(q->self, "UPDATE quota_keys SET rotate = 1 WHERE tenant = ?1", p, 1,
                          NULL, NULL);
}

struct existing { unsigned char hash[QUOTA_HASH_LEN], nonce[NONCE_LEN]; bool found, rotate; };

static bool existing_row(int n, const char *const *names, const struct berth_value *v,
                         void *arg)
{
    struct existing *e = arg;
    (void)names;
    if (n == 3 && v[0].type == BERTH_VAL_BLOB && v[0].len == QUOTA_HASH_LEN &&
        v[1].type == BERTH_VAL_BLOB && v[1].len == NONCE_LEN) {
        memcpy(e->hash, v[0].p, QUOTA_HASH_LEN);
        memcpy(e->nonce, v[1].p, NONCE_LEN);
        e->rotate = v[2].i != 0;
        e->found = true;
    }
    return false;
}

/* the tenant's key: the one it has, unless a rotation was asked for or it cannot be derived
 * again; else one with a new nonce, stored before it is handed out */
static int tenant_key(struct quota *q, const char *handle, char key[KEY_LEN + 1], bool *fresh)
{
    struct existing e = {0};
    struct berth_value p[] = {BERTH_TEXT(handle)};
    int rc = H->store_query(q->self, "SELECT hash, nonce, rotate FROM quota_keys WHERE "
                            "tenant = ?1", p, 1, existing_row, &e);
    if (rc) return rc;
    unsigned char hash[QUOTA_HASH_LEN];
    if (e.found && !e.rotate) {
        derive(q, handle, e.nonce, key);
        sha256(q, key, hash);
        if (!CRYPTO_memcmp(hash, e.hash, sizeof hash)) {
            *fresh = false;
            return 0;
        }
    }
    unsigned char nonce[NONCE_LEN];
    if (!fill_random(nonce, sizeof nonce)) return BERTH_EAGAIN;
    derive(q, handle, nonce, key);
    sha256(q, key, hash);
    struct berth_value w[] = {BERTH_TEXT(handle), BERTH_BLOB(hash, sizeof hash),
                              BERTH_BLOB(nonce, sizeof nonce), BERTH_INT(H->now_ms(q->self))};
    rc = H->store_query(q->self, "INSERT INTO quota_keys(tenant, hash, nonce, created_ms) "
                        "VALUES(?1, ?2, ?3, ?4) ON CONFLICT(tenant) DO UPDATE SET hash = ?2,"
                        " nonce = ?3, rotate = 0, created_ms = ?4", w, 4, NULL, NULL);
    if (!rc) {
        key_drop(q, handle);
        rc = key_add(q, handle, hash);
    }
    *fresh = true;
    return rc;
}

static void provision(void *state, const berth_spec *spec, berth_op *op)
{
    struct quota *q = state;
    const char *handle = H->spec_handle(spec);
    char key[KEY_LEN + 1];
    bool fresh = false;
    int rc = tenant_key(q, handle, key, &fresh);
    if (rc) {
        OPENSSL_cleanse(key, sizeof key);
        H->op_done(op, rc, NULL, "quota: cannot store the tenant's key");
        return;
    }
    char url[1024], oai[1100];
    if (q->cfg.public_url) snprintf(url, sizeof url, "%s", q->cfg.public_url);
    else snprintf(url, sizeof url, "http://%s", q->cfg.listen);
    size_t ul = strlen(url);
    while (ul && url[ul - 1] == '/') url[--ul] = 0;
    snprintf(oai, sizeof oai, "%s/v1", url);
    H->op_setenv(op, "ANTHROPIC_BASE_URL", url);
    H->op_setenv(op, "ANTHROPIC_API_KEY", key);
    H->op_setenv(op, "OPENAI_BASE_URL", oai);
    H->op_setenv(op, "OPENAI_API_KEY", key);
    OPENSSL_cleanse(key, sizeof key);
    if (fresh) quota_event(q, q->ev_key, handle, "{\"action\":\"issued\"}");
    H->op_done(op, 0, NULL, NULL);
}

static void deprovision(void *state, const berth_spec *spec, berth_op *op)
{
    struct quota *q = state;
    const char *handle = H->spec_handle(spec);
    struct berth_value p[] = {BERTH_TEXT(handle)};
    int rc = H->store_query(q->self, "DELETE FROM quota_keys WHERE tenant = ?1", p, 1, NULL,
                            NULL);
    key_drop(q, handle);
    if (!rc) quota_event(q, q->ev_key, handle, "{\"action\":\"revoked\"}");
    H->op_done(op, rc, NULL, rc ? "quota: cannot revoke the key" : NULL);
}

const struct berth_provisioner quota_provisioner = {sizeof quota_provisioner, 100, provision,
                                                    deprovision};
