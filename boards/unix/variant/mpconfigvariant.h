// The lock's simulator: a unix-port variant shaped like the ESP32 build.
// 32-bit machine word (-m32 in mpconfigvariant.mk): sys.maxsize 2**31-1,
// ticks period 2**30, 16-bit mpz digits. Single-precision floats, as the
// ESP32 port (MICROPY_FLOAT_IMPL_FLOAT); SSE rounding, not x87 extended.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)
#include "variants/mpconfigvariant_common.h"
