/* Unit tests for the event bus: FIFO order, per-type and wildcard delivery, payload copies,
 * unsubscribing inside a handler, custom types. Runs without a loop or a store. */
#include "core.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>


static char log_[4096];

static void record(const struct berth_event *ev, void *arg)
{
    char line[256];
    snprintf(line, sizeof line, "%s:%s:%s|", (const char *)arg, ev->type_name,
             ev->tenant ? ev->tenant : "-");
    strncat(log_, line, sizeof log_ - strlen(log_) - 1);
}

static struct bus_sub *self_removing;

static void once(const struct berth_event *ev, void *arg)
{
    record(ev, arg);
    bus_unsubscribe(self_removing);
}

static void publish_more(const struct berth_event *ev, void *arg)
{
    (void)arg;
    if (ev->type != BERTH_EV_TENANT_CREATED) return;
    struct berth_ev_tenant_ready r = {sizeof r, "addr"};
    bus_publish(BERTH_EV_TENANT_READY, ev->tenant, &r);
}

int main(void)
{
    bus_init();
    bus_subscribe(BERTH_EV_TENANT_CREATED, record, "typed");
    bus_subscribe(0, record, "all");
    self_removing = bus_subscribe(0, once, "once");
    bus_subscribe(0, publish_more, NULL);
    char kind[] = "human";
    struct berth_ev_tenant_created c = {sizeof c, kind, "default"};
    CHECK(bus_publish(BERTH_EV_TENANT_CREATED, "alice", &c) == 0);
    strcpy(kind, "XXXXX");         /* the bus copied the payload at publish time */
    CHECK(bus_publish(BERTH_EV_TENANT_CREATED, "Bad Handle", &c) == BERTH_EINVAL);
    CHECK(bus_publish(999, NULL, &c) == BERTH_EINVAL);
    bus_flush();
    CHECK(!strcmp(log_, "typed:tenant.created:alice|all:tenant.created:alice|"
                        "once:tenant.created:alice|all:tenant.ready:alice|"));
    uint32_t t = bus_register("backup.finished");
    CHECK(t >= BERTH_EV_CUSTOM_BASE);
    CHECK(bus_register("backup.finished") == t);
    CHECK(bus_register("tenant.created") == 0);     /* built-in names are not for taking */
    CHECK(bus_register("nodot") == 0);
    CHECK(bus_lookup("backup.finished") == t);
    struct berth_ev_custom bad = {sizeof bad, "not json"};
    CHECK(bus_publish(t, NULL, &bad) == BERTH_EINVAL);
    struct berth_ev_custom ok = {sizeof ok, "{\"n\":1}"};
    CHECK(bus_publish(t, NULL, &ok) == 0);
    char *j = bus_payload_json(BERTH_EV_TENANT_CREATED, &c);
    CHECK(!strcmp(j, "{\"kind\":\"XXXXX\",\"template_name\":\"default\"}"));
    free(j);
    log_[0] = 0;
    bus_flush();
    CHECK(!strcmp(log_, "all:backup.finished:-|"));
    CHECK(bus_last_seq() == 3);
    bus_shutdown();
    return unit_report("bus");
}
