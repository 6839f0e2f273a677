// The ESP32's split heap in the simulator (MICROPY_GC_SPLIT_HEAP_AUTO).
//
// On the ESP32, MicroPython starts with a 56 KiB GC heap
// (MICROPY_GC_INITIAL_HEAP_SIZE) and, when a collection leaves no room for
// an allocation, adds a heap area taken from ESP-IDF's system heap (py/gc.c
// gc_try_add_heap; ports/esp32: gc_get_max_new_split() is the largest free
// block of the system heap), which Wi-Fi, lwIP, NimBLE and mbedTLS's
// buffers share; an area emptied again goes back. gc.mem_free() counts what
// could still be added, as on the board.
//
// The simulator models the system heap as a budget of bytes: the
// environment variable MICROPY_SIM_HEAP_GROW (decimal; absent or 0: the
// heap never grows, the initial area is all there is). Each area added or
// given back is said on stderr ("SIM heap: ..."), so a test can tell a run
// that fitted in the initial area from one that needed the board to grow.
#include <stdio.h>
#include <stdlib.h>

#include "py/gc.h"

#define SYSHEAP_AREAS (16)

static long sysheap_left = -1;  // not read yet
static struct {
    void *p;
    size_t n;
} sysheap_areas[SYSHEAP_AREAS];

static size_t sysheap_budget(void) {
    if (sysheap_left < 0) {
        const char *s = getenv("MICROPY_SIM_HEAP_GROW");
        long v = s ? strtol(s, NULL, 10) : 0;
        sysheap_left = v > 0 ? v : 0;
    }
    return (size_t)sysheap_left;
}

size_t gc_get_max_new_split(void) {
    return sysheap_budget();
}

void *sim_sysheap_alloc(size_t size) {
    if (size > sysheap_budget()) {
        return NULL;
    }
    for (int i = 0; i < SYSHEAP_AREAS; i++) {
        if (sysheap_areas[i].p == NULL) {
            void *p = malloc(size);
            if (p == NULL) {
                return NULL;
            }
            sysheap_areas[i].p = p;
            sysheap_areas[i].n = size;
            sysheap_left -= (long)size;
            fprintf(stderr, "SIM heap: area of %u bytes added from the system heap (%ld left)\n",
                (unsigned)size, sysheap_left);
            return p;
        }
    }
    return NULL;
}

void sim_sysheap_free(void *p) {
    for (int i = 0; i < SYSHEAP_AREAS; i++) {
        if (sysheap_areas[i].p == p) {
            sysheap_left += (long)sysheap_areas[i].n;
            fprintf(stderr, "SIM heap: area of %u bytes given back (%ld left)\n",
                (unsigned)sysheap_areas[i].n, sysheap_left);
            sysheap_areas[i].p = NULL;
            break;
        }
    }
    free(p);
}
