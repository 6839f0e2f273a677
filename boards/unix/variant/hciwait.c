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
#include "py/mphal.h"

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
