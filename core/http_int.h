/* Private to the HTTP server (http_server.c, http_req.c, http_listen.c): the layout of
 * listeners, connections and requests. Everything outside uses core.h's functions. */
#ifndef BERTH_HTTP_INT_H
#define BERTH_HTTP_INT_H

#include "core.h"

#include <http_parser.h>

/* Owners of a listener's connections and their counts (http_owner.c). */
struct conn_owner;
struct owner_table {
    struct conn_owner **b;      /* buckets, a power of two of them (nb; 0 before the first) */
    uint32_t nb, n;             /* n: owners with a connection */
};

struct listener {
    struct list link;
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_handle_t h; uv_stream_t s; } u;
    char *addr, *path;
    berth_http_handler handler;
    void *arg;
    berth_instance *owner;
    char *token;
    bool (*authorize)(berth_req *r, void *arg);     /* with arg, at header completion */
    uint64_t max_body, max_connections, max_buffered;
    uint64_t nconns, buffered;  /* open connections; bytes held for undispatched requests */
    int refs;                   /* its handle + connections accepted on it */
    struct owner_table owners;  /* who holds its connections (req_conn_claim) */
    bool closed;
};

enum req_state { REQ_PARSING, REQ_DISPATCHED, REQ_STREAMING, REQ_DONE };

struct kv { char *k, *v; };

struct berth_req {
    struct conn *conn;          /* NULL once the client is gone */
    enum req_state state;
    const char *method;
    struct buf url, body, hfield, hvalue;
    char *path, *query_raw;
    struct kv *hdr; size_t nhdr;
    struct kv *param; size_t nparam;
    struct kv *query; size_t nquery; bool query_parsed;
    size_t header_bytes;
    bool in_value, keep_alive, http10, head, chunked;
    bool head_done;             /* headers complete: what follows (trailers) is not a header */
    int reject;                 /* status chosen by a limit, sent instead of 400 */
    const char *reject_msg;
    char peer[64];
    berth_instance *owner;
    berth_req_cb close_cb, drain_cb;
    void *close_arg, *drain_arg;
};

struct conn {
    struct list link;
    union { uv_tcp_t tcp; uv_pipe_t pipe; uv_handle_t h; uv_stream_t s; } u;
    uv_timer_t timer;
    struct listener *l;
    http_parser parser;
    struct buf in;
    size_t in_off;
    berth_req *req;
    int open_handles;
    bool closing, close_after, in_process, reading;
    bool eof;                   /* the client shut its side: answer what came, then close */
    bool deadline;              /* header_timeout runs for the request being sent */
    bool refused;               /* answered at header time; the body is never read */
    bool linger, lingering;     /* half-close and drop input before closing (conn_done) */
    uv_shutdown_t shut;
    size_t held;                /* this connection's share of l->buffered */
    char peer[64];
    int writes;
    bool sending;               /* the timer is send_timeout: output is pending (conn_timer) */
    uint64_t queued;            /* bytes ever handed to uv_write */
    uint64_t sent_mark;         /* bytes_out() when send_timeout was last (re)armed */
    uint64_t header_due;        /* loop time header_timeout ends (with deadline) */
    struct conn_owner *claim;   /* its owner's record in l->owners, or NULL */
};

extern struct list http_listeners, http_conns;

void http_conn_close(struct conn *c);   /* the handler of a request in flight gets on_close */
void http_on_connection(uv_stream_t *server, int status);
void http_listener_unref(struct listener *l);   /* frees it with the last reference */
void http_trim_close(void);     /* at shutdown: no more deferred malloc_trim() */
/* Decodes %XX (and '+' as space for queries); NULL on a bad escape or NUL byte. */
char *http_pct_decode(const char *s, size_t n, bool plus);

/* Tags *slot (a connection's claim) as name's, counted in t: 0, or BERTH_EBUSY (nothing
 * changes) when name holds max other connections (max 0: no cap); BERTH_EINVAL for a name
 * longer than 255 bytes. NULL name releases. */
int owner_claim(struct owner_table *t, struct conn_owner **slot, const char *name,
                uint32_t max);
void owner_release(struct owner_table *t, struct conn_owner **slot);
uint32_t owner_count(const struct owner_table *t, const char *name);
void owner_table_free(struct owner_table *t);

#endif
