/* A shared object that is not a berth plugin: it exports no descriptor. */
#include <berth/berth.h>

BERTH_EXPORT int not_a_plugin(void);
int not_a_plugin(void)
{
    return 42;
}
