/* A docker tenant's host port: chosen by the driver rather than left to dockerd (which takes
 * a new ephemeral port on every start), and remembered per instance and tenant in the table
 * docker_ports, so sleep, wake, re-creation and a restart of berthd keep the tenant's
 * address and routes to it do not churn. */
#ifndef BERTH_DOCKER_PORTS_H
#define BERTH_DOCKER_PORTS_H

#include <berth/berth.h>

/* Creates the table (a migration); 0 or a BERTH_E* code. */
int dk_ports_init(const struct berth_host *host, berth_instance *self);

/* The host port to publish handle's container on, on address ip (numeric; "" or 0.0.0.0 for
 * every address): the remembered one while it is free and not `avoid`, else a free one,
 * which is remembered. *moved_from is set to the remembered port that could not be kept
 * (else 0). Returns 0 when no port could be had: dockerd then picks one. */
int dk_port_pick(berth_instance *self, const char *handle, const char *ip, int avoid,
                 int *moved_from);

/* The tenant is gone: its port is not kept for it any more. */
void dk_port_forget(berth_instance *self, const char *handle);

#endif
