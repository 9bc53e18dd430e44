/* What a berth_call is to the core: the handle both HTTP clients hand out. http_client.c
 * (libcurl: https, TLS options, anything unusual) and http_conn.c (berth's own keep-alive
 * HTTP/1.1 client for plain http://) each embed it first in their call, so plugin.c's
 * resource list and the host API see one type; `native` says whose it is. */
#ifndef BERTH_HTTP_CALL_H
#define BERTH_HTTP_CALL_H

#include "core.h"

struct berth_call {
    struct res res;             /* first: linked into its instance when a plugin made it */
    bool native;                /* http_conn.c's, else http_client.c's */
};

/* ---- http_conn.c ---- */
/* true when berth's own client takes this request: an http:// URL, no TLS option, no
 * userinfo in the URL, no proxy in the environment */
bool hconn_wants(const struct berth_http_opts *o);
/* Same contract as http_call(): cb exactly once unless canceled, never before this returns.
 * Borrows o->body until cb; copies everything else. */
berth_call *hconn_call(berth_instance *owner, const struct berth_http_opts *o,
                       berth_http_done cb, void *arg);
void hconn_cancel(berth_call *c);
int hconn_pause(berth_call *c);
int hconn_resume(berth_call *c);
void hconn_init(void);
void hconn_shutdown(void);

#endif
