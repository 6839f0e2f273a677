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
