/* berthctl's reader of berthd's event stream (text/event-stream): splits arbitrary chunks
 * into lines and hands each "data: " payload to fn. A curl write callback, and what the SSE
 * fuzz target calls (tests/fuzz/fuzz_sse.c). */
#ifndef BERTHCTL_SSE_H
#define BERTHCTL_SSE_H

#include <stdbool.h>
#include <stddef.h>

/* a line longer than line[] is cut to fit; fn returns false to end the stream */
struct sse { char line[65536]; size_t len; bool (*fn)(const char *data, void *arg); void *arg; };

/* returns sz * n, or 0 once fn asked to stop (curl then ends the transfer) */
size_t sse_feed(char *p, size_t sz, size_t n, void *arg);

#endif
