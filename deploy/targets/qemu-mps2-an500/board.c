/*
 * Board glue for QEMU's mps2-an500 (Cortex-M7):
 *   console and file I/O: ARM semihosting (newlib + librdimon, plus direct calls below);
 *   exit status: SYS_EXIT_EXTENDED, so the status reaches the host as QEMU's exit code;
 *   serial link (board protocol): CMSDK APB UART0 (0x40004000), QEMU's first -serial;
 *   counter: CMSDK APB TIMER0 (0x40000000), a 32-bit down counter clocked at the board's 25 MHz
 *   SYSCLK. Under -icount shift=0 each instruction advances virtual time by exactly 1 ns, so one
 *   tick = 40 instructions (measured by tests/test_c_kernels.py::test_qemu_counter_calibration).
 */
#include <stdint.h>

#include "tinydet_board.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_READ 0x06
#define SYS_SEEK 0x0A
#define SYS_GET_CMDLINE 0x15
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

#define TIMER0_CTRL (*(volatile uint32_t *)0x40000000u)
#define TIMER0_VALUE (*(volatile uint32_t *)0x40000004u)
#define TIMER0_RELOAD (*(volatile uint32_t *)0x40000008u)

#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010u)
#define UART_STATE_TXFULL 1u
#define UART_STATE_RXFULL 2u

#ifndef TINYDET_QEMU_SYSCLK_HZ
#define TINYDET_QEMU_SYSCLK_HZ 25000000u
#endif

extern void initialise_monitor_handles(void);

static int32_t semihost(int32_t op, const void *arg)
{
    register int32_t r0 __asm("r0") = op;
    register const void *r1 __asm("r1") = arg;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int tinydet_board_file_open(const char *name)
{
    uint32_t n = 0;
    while (name[n] != '\0')
    {
        n++;
    }
    const uint32_t block[3] = {(uint32_t)(uintptr_t)name, 1u /* "rb" */, n};
    return (int)semihost(SYS_OPEN, block);
}

int tinydet_board_file_read_at(int handle, int32_t at, void *dst, uint32_t n)
{
    const uint32_t seek[2] = {(uint32_t)handle, (uint32_t)at};
    const uint32_t read[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)dst, n};
    if (handle < 0 || at < 0 || semihost(SYS_SEEK, seek) != 0)
    {
        return -1;
    }
    return semihost(SYS_READ, read) == 0 ? 0 : -1; /* SYS_READ returns the bytes it did not read */
}

void tinydet_board_file_close(int handle)
{
    const uint32_t block[1] = {(uint32_t)handle};
    if (handle >= 0)
    {
        semihost(SYS_CLOSE, block);
    }
}

void tinydet_board_init(void)
{
    initialise_monitor_handles();
    TIMER0_CTRL = 0;
    TIMER0_RELOAD = 0xFFFFFFFFu;
    TIMER0_VALUE = 0xFFFFFFFFu;
    TIMER0_CTRL = 1u; /* enable, PCLK source, no interrupt */
    UART0_BAUDDIV = TINYDET_QEMU_SYSCLK_HZ / 115200u; /* QEMU ignores the rate but needs a valid divisor */
    UART0_CTRL = 3u;                                    /* TX and RX enable, no interrupts */
}

int tinydet_board_serial_read(void)
{
    while (!(UART0_STATE & UART_STATE_RXFULL))
    {
    }
    return (int)(UART0_DATA & 0xFFu);
}

void tinydet_board_serial_write(const uint8_t *data, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++)
    {
        while (UART0_STATE & UART_STATE_TXFULL)
        {
        }
        UART0_DATA = data[i];
    }
}

int tinydet_board_args(char ***argv)
{
    static char line[256];
    static char *args[17];
    int32_t block[2] = {(int32_t)(uintptr_t)line, (int32_t)sizeof(line)};
    int argc = 0;
    if (semihost(SYS_GET_CMDLINE, block) == 0)
    {
        /* split on spaces in place (arguments with spaces are not supported) */
        char *p = line;
        while (*p && argc < 16)
        {
            while (*p == ' ')
            {
                *p++ = 0;
            }
            if (*p)
            {
                args[argc++] = p;
            }
            while (*p && *p != ' ')
            {
                p++;
            }
        }
    }
    args[argc] = 0;
    *argv = args;
    return argc;
}

void tinydet_board_puts(const char *s)
{
    semihost(SYS_WRITE0, s);
}

uint32_t tinydet_board_counter(void)
{
    return 0xFFFFFFFFu - TIMER0_VALUE; /* counts down: turn it into an up-counter */
}

const char *tinydet_board_counter_name(void)
{
    return "cmsdk-timer0@25MHz";
}

uint32_t tinydet_board_instructions_per_tick_x1000(void)
{
    /* 1 instruction = 1 ns of virtual time under -icount shift=0 */
    return (uint32_t)(1000000000000ull / TINYDET_QEMU_SYSCLK_HZ);
}

void tinydet_board_exit(int code)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    semihost(SYS_EXIT_EXTENDED, block);
    for (;;)
    {
    }
}
