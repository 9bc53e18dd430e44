/* Without libFuzzer (gcc builds), a fuzz target runs each seed file named on its command line
 * once, through the same LLVMFuzzerTestOneInput. Returns 0, or 1 if a file cannot be read. */
#ifndef BERTH_CORPUS_RUN_H
#define BERTH_CORPUS_RUN_H

#include "core.h"

static int corpus_run(int argc, char **argv)
{
    log_configure(BERTH_LOG_ERROR, false);
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        struct buf b = {0};
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_add(&b, chunk, n);
        fclose(f);
        LLVMFuzzerTestOneInput((const uint8_t *)(b.p ? b.p : ""), b.len);
        buf_free(&b);
    }
    return 0;
}
#endif
