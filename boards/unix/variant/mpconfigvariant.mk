# Build settings of the lock's simulator interpreter (see mpconfigvariant.h).
# Built by tools/build_mp.py: make -C ports/unix VARIANT_DIR=<this dir>.

# 32-bit word and single-precision float that rounds like the ESP32's FPU.
CFLAGS_EXTRA += -m32 -msse2 -mfpmath=sse
LDFLAGS_EXTRA += -m32

# mbedTLS with the cipher suites MicroPython's ESP32 build offers (ESP-IDF's
# mbedTLS): besides the unix defaults (PSK, ECDHE-ECDSA, GCM), CCM and CCM-8
# and ECDHE-PSK. DTLS (HelloVerify cookies) comes with the EXTRA_FEATURES level.
CFLAGS_EXTRA += -DMBEDTLS_CCM_C -DMBEDTLS_KEY_EXCHANGE_ECDHE_PSK_ENABLED
# Extended master secret (RFC 7627) and encrypt-then-MAC (RFC 7366): on in
# mbedTLS's own default configuration, which ESP-IDF's builds on, but left out
# of MicroPython's extmod config. tinydtls (aiocoap's DTLS) insists on EMS and
# aborts a handshake whose ServerHello lacks it with handshake_failure.
CFLAGS_EXTRA += -DMBEDTLS_SSL_EXTENDED_MASTER_SECRET -DMBEDTLS_SSL_ENCRYPT_THEN_MAC

# Bluetooth: NimBLE, the host stack of the ESP32 port, over an H4 HCI UART
# named by the environment variable MICROPYBTUART.
MICROPY_PY_BLUETOOTH = 1
MICROPY_BLUETOOTH_NIMBLE = 1
# Its wait for the controller sleeps between polls instead of spinning, a
# silent controller does not freeze the firmware's thread, packets go to
# the UART whole, and an unanswered command is said with the bytes that
# crossed the UART last (hciwait.c).
LDFLAGS_EXTRA += -Wl,--wrap=mp_bluetooth_nimble_hci_uart_wfi -Wl,--wrap=ble_hs_hci_cmd_tx -Wl,--wrap=mp_bluetooth_hci_uart_deinit -Wl,--wrap=mp_bluetooth_hci_uart_write -Wl,--wrap=mp_bluetooth_hci_uart_readchar

# No libffi or Berkeley DB for i386; the board has neither.
MICROPY_PY_FFI = 0
MICROPY_PY_BTREE = 0

FROZEN_MANIFEST = $(VARIANT_DIR)/manifest.py

# Frozen modules with native code (the viper P-256 field arithmetic,
# trust/p256_field.py) are compiled for this interpreter's CPU: i386.
MPY_CROSS_FLAGS += -march=x86

# The ESP32 port's split heap (mpconfigvariant.h, sysheap.c). py/gc.c's
# gc_try_add_heap does arithmetic on a void pointer (a GNU C extension the
# ESP32's toolchain accepts), which the unix port's -Wpointer-arith refuses.
CFLAGS_EXTRA += -Wno-pointer-arith
