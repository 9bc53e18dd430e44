/* deptest: reports dependency health on request, so a test can drive /health through
 * host->dependency_report: POST /v1/<instance>/report?name=N&status=S&interval=MS
 * [&required=0][&message=M] makes one report and answers {"rc": <what the host returned>}.
 * Nothing reports on its own: a test sees a report go stale by not asking again. */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct berth_host *H;

struct dt { berth_instance *self; };

static const struct berth_cfg_item schema[] = {{0}};

static void report(berth_req *r, void *arg)
{
    struct dt *d = arg;
    const char *name = H->req_query(r, "name"), *status = H->req_query(r, "status");
    const char *interval = H->req_query(r, "interval"), *req = H->req_query(r, "required");
    int rc = H->dependency_report(d->self, name, !req || strcmp(req, "0"),
                                  status ? atoi(status) : 0, H->req_query(r, "message"),
                                  interval ? atoll(interval) : 1000);
    char body[64];
    int n = snprintf(body, sizeof body, "{\"rc\":%d}\n", rc);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (!BERTH_HOST_HAS(host, dependency_report)) return BERTH_ENOTSUP;
    H = host;
    struct dt *d = calloc(1, sizeof *d);
    if (!d) return BERTH_ENOMEM;
    d->self = self;
    *state = d;
    return 0;
}

static int start(void *state)
{
    struct dt *d = state;
    char path[160];
    snprintf(path, sizeof path, "/v1/%s/report", H->name(d->self));
    return H->route(d->self, "POST", path, report, d);
}

static void destroy(void *state) { free(state); }

BERTH_PLUGIN(.name = "deptest", .version = "1.0",
             .description = "reports dependency health when a test asks",
             .config = schema, .config_size = 0, .init = init, .start = start,
             .destroy = destroy);
