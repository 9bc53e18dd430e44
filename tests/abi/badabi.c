/* A plugin built for an ABI major this berthd does not speak: the loader must refuse it. */
#include <berth/berth.h>

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    (void)host; (void)self; (void)state;
    return 0;
}

BERTH_EXPORT const struct berth_plugin berth_plugin_v1 = {
    .abi_major = 99, .abi_minor = 0, .struct_size = sizeof(struct berth_plugin),
    .name = "badabi", .init = init,
};
