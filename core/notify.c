/* The systemd notify protocol, spoken directly: datagrams to $NOTIFY_SOCKET (a path, or an
 * abstract name starting with '@'), and the watchdog ping every half of $WATCHDOG_USEC. No
 * libsystemd: the protocol is one sendto() per state. Without $NOTIFY_SOCKET it does
 * nothing. */
#include "core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct {
    int fd;
    struct sockaddr_un addr;
    socklen_t len;
    uv_timer_t watchdog;
    bool watching;
} N = {.fd = -1};

static void ping(uv_timer_t *t)
{
    (void)t;
    notify_send("WATCHDOG=1");
}

/* the watchdog is for this process only when WATCHDOG_PID, if set, names it */
static uint64_t watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    if (!us || (pid && strtoll(pid, NULL, 10) != (long long)getpid())) return 0;
    return strtoull(us, NULL, 10);
}

int notify_init(uv_loop_t *loop)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return 0;
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof N.addr.sun_path) {
        log_warn("NOTIFY_SOCKET '%s' is not a unix socket path; not notifying systemd", path);
        return -1;
    }
    N.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (N.fd < 0) {
        log_warn("notify socket: %s", strerror(errno));
        return -1;
    }
    N.addr.sun_family = AF_UNIX;
    memcpy(N.addr.sun_path, path, n);
    if (path[0] == '@') N.addr.sun_path[0] = 0;
    N.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    uint64_t us = watchdog_usec();
    if (us) {
        uv_timer_init(loop, &N.watchdog);
        uint64_t every = us / 2000 ? us / 2000 : 1;
        uv_timer_start(&N.watchdog, ping, every, every);
        uv_unref((uv_handle_t *)&N.watchdog);
        N.watching = true;
    }
    return 0;
}

void notify_send(const char *state)
{
    if (N.fd < 0) return;
    if (sendto(N.fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&N.addr, N.len) < 0)
        log_debug("notify '%s': %s", state, strerror(errno));
}

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char msg[96];
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    notify_send(msg);
}

void notify_shutdown(void)
{
    if (N.watching) uv_close((uv_handle_t *)&N.watchdog, NULL);
    N.watching = false;
    if (N.fd >= 0) close(N.fd);
    N.fd = -1;
}
