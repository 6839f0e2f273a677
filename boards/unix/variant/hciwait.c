// NimBLE's wait for the controller in the simulator.
//
// While NimBLE waits for the answer to an HCI command (at most 2 s, then it
// resets its host), the unix port spins on mp_bluetooth_nimble_hci_uart_wfi
// (extmod/nimble/nimble/nimble_npl_os.c, ble_npl_sem_pend), which polls the
// UART without blocking. On the ESP32 that wait sleeps until the
// controller's interrupt. In the simulator the controller is another
// process on the same CPUs (Bumble, lockctl.blelink): a spinning host takes
// the CPU from the controller it waits for, and on a loaded machine the 2 s
// passed and NimBLE reset its host. Linked with --wrap (mpconfigvariant.mk),
// each poll is followed by a 0.5 ms sleep, as the board's wait yields the
// CPU until the answer comes.
#include <unistd.h>

void __real_mp_bluetooth_nimble_hci_uart_wfi(void);

void __wrap_mp_bluetooth_nimble_hci_uart_wfi(void) {
    __real_mp_bluetooth_nimble_hci_uart_wfi();
    usleep(500);
}

// A controller that stays silent. Each HCI command then waits the full 2 s
// and schedules a host reset, whose resync sends the next command: on the
// unix port NimBLE runs its events on the firmware's thread, so the lock
// (CoAP, the relock timer) froze for as long as the controller was gone.
// On the ESP32 the host resyncs in its own task, and the firmware's calls
// fail at once while the host is not synced. The model: after a command
// timed out, commands fail at once (BLE_HS_ETIMEOUT_HCI, no new reset) for
// 1 s, doubling to 4 s while the controller stays silent; then one command
// probes it again. Any answer ends the quiet period, and so does turning
// the radio off (BLE().active(False) closes the HCI UART): the host that
// starts next is a new one, as on the board.
#include <stdint.h>
#include <stdio.h>
#include "py/mphal.h"

// What crossed the UART last, each way, for the line said when a command
// goes unanswered (a silent controller, or one whose bytes the host does
// not take as an answer, tell apart).
#define SIM_RING (16)
static uint8_t sim_rx[SIM_RING], sim_tx[SIM_RING];
static uint32_t sim_rx_n, sim_tx_n, sim_rx_ms;

static void sim_ring_put(uint8_t *ring, uint32_t *n, const uint8_t *buf, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        ring[(*n)++ % SIM_RING] = buf[i];
    }
}

static void sim_ring_say(const char *what, const uint8_t *ring, uint32_t n) {
    uint32_t k = n < SIM_RING ? n : SIM_RING;
    printf(" %s %u bytes, the last:", what, (unsigned)n);
    for (uint32_t i = n - k; i < n; ++i) {
        printf(" %02x", ring[i % SIM_RING]);
    }
    printf(";");
}

#define SIM_BLE_HS_ETIMEOUT_HCI (19)  // nimble/host/include/host/ble_hs.h
#define SIM_QUIET_MIN_MS (1000)
#define SIM_QUIET_MAX_MS (4000)

int __real_ble_hs_hci_cmd_tx(uint16_t opcode, const void *cmd, uint8_t cmd_len, void *rsp, uint8_t rsp_len);

static uint32_t sim_quiet_until;
static uint32_t sim_quiet_ms;  // 0: the controller answers

int __wrap_ble_hs_hci_cmd_tx(uint16_t opcode, const void *cmd, uint8_t cmd_len, void *rsp, uint8_t rsp_len) {
    uint32_t now = mp_hal_ticks_ms();
    if (sim_quiet_ms != 0 && (int32_t)(sim_quiet_until - now) > 0) {
        return SIM_BLE_HS_ETIMEOUT_HCI;
    }
    int rc = __real_ble_hs_hci_cmd_tx(opcode, cmd, cmd_len, rsp, rsp_len);
    if (rc == SIM_BLE_HS_ETIMEOUT_HCI) {
        printf("SIM HCI: command %04x unanswered for 2 s;", opcode);
        sim_ring_say("sent", sim_tx, sim_tx_n);
        sim_ring_say("received", sim_rx, sim_rx_n);
        if (sim_rx_n) {
            printf(" %u ms since a byte came\n", (unsigned)(mp_hal_ticks_ms() - sim_rx_ms));
        } else {
            printf(" none came\n");
        }
        sim_quiet_ms = sim_quiet_ms == 0 ? SIM_QUIET_MIN_MS
            : (sim_quiet_ms * 2 > SIM_QUIET_MAX_MS ? SIM_QUIET_MAX_MS : sim_quiet_ms * 2);
        sim_quiet_until = mp_hal_ticks_ms() + sim_quiet_ms;
    } else {
        sim_quiet_ms = 0;
    }
    return rc;
}

int __real_mp_bluetooth_hci_uart_deinit(void);

// BLE().active(False) closes the HCI UART (a host reset only reconfigures
// it, through mp_bluetooth_hci_uart_init, which keeps it open).
int __wrap_mp_bluetooth_hci_uart_deinit(void) {
    sim_quiet_ms = 0;
    return __real_mp_bluetooth_hci_uart_deinit();
}

// NimBLE hands each HCI packet to the UART in one call
// (extmod/nimble/hal/hal_uart.c) and the unix port writes it with one
// non-blocking write() whose result nobody reads: with the pty's buffer
// nearly full (the controller process starved or stopped) a packet would
// go out cut short, and the controller's H4 parser would take the next
// commands as the rest of it. A UART driver on a board queues the whole
// packet and waits for room (flow control). The model: the rest is
// written as room comes, waiting up to 5 s; a controller that takes
// nothing for that long is said on the console, and the rest is dropped.
#include <errno.h>

int __real_mp_bluetooth_hci_uart_write(const uint8_t *buf, size_t len);

int __wrap_mp_bluetooth_hci_uart_write(const uint8_t *buf, size_t len) {
    size_t done = 0;
    uint32_t t0 = mp_hal_ticks_ms();
    while (done < len) {
        int n = __real_mp_bluetooth_hci_uart_write(buf + done, len - done);
        if (n > 0) {
            sim_ring_put(sim_tx, &sim_tx_n, buf + done, n);
            done += n;
            t0 = mp_hal_ticks_ms();
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            break;  // the UART is gone (the controller's end closed)
        }
        if (mp_hal_ticks_ms() - t0 >= 5000) {
            printf("SIM HCI: the controller took no data for 5 s: %u bytes of a packet dropped\n",
                (unsigned)(len - done));
            break;
        }
        usleep(500);
    }
    return done;
}

int __real_mp_bluetooth_hci_uart_readchar(void);

int __wrap_mp_bluetooth_hci_uart_readchar(void) {
    int c = __real_mp_bluetooth_hci_uart_readchar();
    if (c >= 0) {
        uint8_t b = c;
        sim_ring_put(sim_rx, &sim_rx_n, &b, 1);
        sim_rx_ms = mp_hal_ticks_ms();
    }
    return c;
}
