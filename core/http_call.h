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
    bool ending;                /* its cb runs: a cancel from inside cb is a no-op */
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

/* ---- http_head.c: what http_conn.c sends ---- */
struct http_target {            /* an http:// URL taken apart */
    const char *auth, *target;  /* in the URL: host[:port], and path?query (no fragment) */
    size_t alen, tlen;
    char host[256];             /* without an IPv6 literal's brackets */
    int port;
};
/* false unless http://, with a host and no userinfo, and a target without blanks */
bool http_target_parse(const char *url, struct http_target *t);
enum { HEAD_CHUNKED = -1, HEAD_NO_BODY = -2 };
/* The request head into b (empty; the caller frees it), its body framed by `framing`: a
 * Content-Length, HEAD_CHUNKED or HEAD_NO_BODY. *close is set when the caller asked for
 * Connection: close. False when the method or a header cannot be sent as it is. */
bool http_head_build(struct buf *b, const char *method, const struct http_target *t,
                     const struct berth_header *h, int64_t framing, bool *close);

#endif
