/* Creating what berth's route needs in a Caddy that has none of it (started with no config, or
 * with one that lost apps.http): the configured server, listening on `server_listen`, with a
 * routes array holding berth's container.
 *
 * Caddy 2.6 cannot create a missing parent, and a PUT creates a key only where it is missing
 * (it refuses to replace one), so the deepest part of apps.http.servers.<server> that exists
 * decides where the rest goes. A server that exists is never replaced: when it lacks only its
 * routes array, that array is all berth adds. */
#include "caddy_answers.h"

#include <cJSON.h>
#include <stdio.h>
#include <string.h>

static cJSON *new_server(const char *const *listen_v, size_t nlisten, cJSON *routes)
{
    cJSON *srv = cJSON_CreateObject();
    cJSON *listen = cJSON_AddArrayToObject(srv, "listen");
    for (size_t i = 0; i < nlisten; i++)
        cJSON_AddItemToArray(listen, cJSON_CreateString(listen_v[i]));
    cJSON_AddItemToObject(srv, "routes", routes);
    return srv;
}

/* Wraps `inner` in objects named by keys[from..n-1], innermost last: {"k": {"k2": inner}}. */
static cJSON *wrap(const char *const *keys, int from, int n, cJSON *inner)
{
    for (int i = n - 1; i >= from; i--) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, keys[i], inner);
        inner = o;
    }
    return inner;
}

char *server_create(const char *server, const char *const *listen, size_t nlisten,
                    const char *cfg, size_t cfg_len, const char *container,
                    char *path, size_t path_len, const char **method, char *err, size_t err_len)
{
    const char *keys[] = {"apps", "http", "servers", server};
    const int nkeys = 4;
    cJSON *root = cJSON_ParseWithLength(cfg, cfg_len);
    cJSON *routes = cJSON_CreateArray();
    cJSON *mine = cJSON_Parse(container);
    char *out = NULL;
    if (!routes || !mine) {
        cJSON_Delete(mine);
        snprintf(err, err_len, "out of memory");
        goto done;
    }
    cJSON_AddItemToArray(routes, mine);
    if (!cJSON_IsObject(root) && !cJSON_IsNull(root)) {
        /* only an empty config (null) is set whole: one berth cannot read is kept */
        snprintf(err, err_len, "Caddy's config is %s, not an object",
                 root ? "another JSON value" : "not JSON berth can read");
        goto done;
    }
    int depth = 0;      /* how many of keys exist, as objects */
    cJSON *at = root;
    while (depth < nkeys && cJSON_IsObject(at)) {
        cJSON *next = cJSON_GetObjectItemCaseSensitive(at, keys[depth]);
        if (!next) break;
        if (!cJSON_IsObject(next)) {
            /* a PUT cannot replace it, and berth will not: Caddy would refuse every retry */
            char at_path[300] = "";
            for (int i = 0; i <= depth; i++)
                snprintf(at_path + strlen(at_path), sizeof at_path - strlen(at_path), "%s%s",
                         i ? "." : "", keys[i]);
            snprintf(err, err_len, "Caddy's config holds %s, and it is not an object", at_path);
            goto done;
        }
        at = next;
        depth++;
    }
    cJSON *body;
    *method = "PUT";
    if (depth == nkeys) {
        if (cJSON_GetObjectItemCaseSensitive(at, "routes")) {
            snprintf(err, err_len, "server %s has routes, yet berth's route could not be "
                     "inserted", server);
            goto done;
        }
        body = routes;
        snprintf(path, path_len, "/config/apps/http/servers/%s/routes", server);
    } else if (!nlisten) {
        snprintf(err, err_len, "Caddy has no server %s (set server_listen to let berth create "
                 "it)", server);
        goto done;
    } else {
        body = wrap(keys, depth + 1, nkeys, new_server(listen, nlisten, routes));
        size_t n = (size_t)snprintf(path, path_len, "/config/");
        for (int i = 0; i <= depth && n < path_len; i++)
            n += (size_t)snprintf(path + n, path_len - n, "%s%s", i ? "/" : "", keys[i]);
        if (!cJSON_IsObject(root)) {
            /* no config at all: the root is null, whose key a PUT cannot create */
            body = wrap(keys, 0, 1, body);
            snprintf(path, path_len, "/config/");
            *method = "POST";
        }
    }
    routes = NULL;      /* now part of body */
    out = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!out) snprintf(err, err_len, "out of memory");
done:
    cJSON_Delete(routes);
    cJSON_Delete(root);
    return out;
}
