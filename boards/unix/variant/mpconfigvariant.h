// The lock's simulator: a unix-port variant shaped like the ESP32 build.
// 32-bit machine word (-m32 in mpconfigvariant.mk): sys.maxsize 2**31-1,
// ticks period 2**30, 16-bit mpz digits. Single-precision floats, as the
// ESP32 port (MICROPY_FLOAT_IMPL_FLOAT); SSE rounding, not x87 extended.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)
#include "variants/mpconfigvariant_common.h"

// The ESP32 port's split heap: the initial area (-X heapsize, 56 KiB as
// MICROPY_GC_INITIAL_HEAP_SIZE) grows from a modelled system heap
// (sysheap.c: MICROPY_SIM_HEAP_GROW bytes; none unless it is set).
#define MICROPY_GC_SPLIT_HEAP (1)
#define MICROPY_GC_SPLIT_HEAP_AUTO (1)
#include <stdlib.h>
void *sim_sysheap_alloc(size_t size);
void sim_sysheap_free(void *p);
#define MP_PLAT_ALLOC_HEAP(size) sim_sysheap_alloc(size)
#define MP_PLAT_FREE_HEAP(p) sim_sysheap_free(p)
