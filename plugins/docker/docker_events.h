/* dockerd's event stream: JSON lines split from arbitrary chunks, and the fields berth reads
 * from one event. No loop and no host table, so the fuzzer calls the same code the plugin
 * runs (tests/fuzz/fuzz_docker_events.c). */
#ifndef BERTH_DOCKER_EVENTS_H
#define BERTH_DOCKER_EVENTS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* longest line kept; dockerd's events are a few hundred bytes */
#define DK_LINE_MAX (1u << 20)

struct dk_lines { char *buf; size_t len; };

/* Appends data and calls fn for each complete line (without its '\n', NUL-terminated; a line
 * with a NUL byte inside is passed whole with its length). Returns false when a line grows
 * past DK_LINE_MAX or memory runs out: the caller ends the stream. The buffer is owned by l;
 * dk_lines_reset frees it. */
bool dk_lines_feed(struct dk_lines *l, const char *data, size_t len,
                   void (*fn)(const char *line, size_t len, void *arg), void *arg);
void dk_lines_reset(struct dk_lines *l);

/* what berth reads from one event; the strings point into the cJSON tree */
struct dk_event {
    const char *type, *action, *id;
    const char *tenant, *instance, *exit_code;   /* from Actor.Attributes (labels) */
};

/* Fills ev from a parsed event; false unless it is a container event about a berth tenant
 * (type, action, id, tenant and instance all present). */
bool dk_event_parse(const cJSON *m, struct dk_event *ev);

#endif
