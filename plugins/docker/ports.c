/* docker_ports: which host port each tenant of an instance is published on (ports.h). */
#include "ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const struct berth_host *H;

static const char *const steps[] = {
    "CREATE TABLE docker_ports(inst TEXT NOT NULL, handle TEXT NOT NULL, port INTEGER NOT NULL,"
    " PRIMARY KEY(inst, handle))",
};

int dk_ports_init(const struct berth_host *host, berth_instance *self)
{
    H = host;
    return H->store_migrate(self, steps, sizeof steps / sizeof *steps);
}

/* Binds ip:port (port 0: any) the way dockerd's proxy does; returns the port bound, or 0
 * when it is taken or the address is not one of this host's. */
static int try_bind(const char *ip, int port)
{
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (!*ip || inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        len = sizeof *v6;
    } else {
        return 0;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, got = 0;
    if (fd < 0) return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) == 0 &&
        getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
        got = ntohs(ss.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
    close(fd);
    return got;
}

static bool port_row(int ncols, const char *const *names, const struct berth_value *vals,
                     void *arg)
{
    (void)names;
    if (ncols == 1 && vals[0].type == BERTH_VAL_INT) *(int *)arg = (int)vals[0].i;
    return false;
}

static void remember(berth_instance *self, const char *handle, int port)
{
    struct berth_value p[] = {BERTH_TEXT(H->name(self)), BERTH_TEXT(handle), BERTH_INT(port)};
    int rc = H->store_query(self, "INSERT INTO docker_ports(inst, handle, port) "
                            "VALUES(?1, ?2, ?3) ON CONFLICT(inst, handle) DO UPDATE SET "
                            "port = ?3", p, 3, NULL, NULL);
    if (rc)     /* the port still works; only a later wake may get another */
        H->log(self, BERTH_LOG_WARN, "tenant %s: cannot remember host port %d (%s)", handle,
               port, berth_strerror(rc));
}

int dk_port_pick(berth_instance *self, const char *handle, const char *ip, int avoid,
                 int *moved_from)
{
    const char *any = !strcmp(ip, "0.0.0.0") ? "" : ip;
    struct berth_value p[] = {BERTH_TEXT(H->name(self)), BERTH_TEXT(handle)};
    int kept = 0;
    H->store_query(self, "SELECT port FROM docker_ports WHERE inst = ?1 AND handle = ?2", p, 2,
                   port_row, &kept);
    *moved_from = 0;
    if (kept > 0 && kept != avoid && try_bind(any, kept) == kept) return kept;
    int port = try_bind(any, 0);
    if (!port) return 0;
    if (kept > 0) *moved_from = kept;
    remember(self, handle, port);
    return port;
}

void dk_port_forget(berth_instance *self, const char *handle)
{
    struct berth_value p[] = {BERTH_TEXT(H->name(self)), BERTH_TEXT(handle)};
    H->store_query(self, "DELETE FROM docker_ports WHERE inst = ?1 AND handle = ?2", p, 2, NULL,
                   NULL);
}
