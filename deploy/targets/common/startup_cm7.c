/*
 * Shared Cortex-M7 startup: vector table, reset handler (FPU enable, .data copy, .bss zero, stack
 * painting), fault handlers that report and exit non-zero (exit 3; the report names the fault and
 * prints the fault status registers, which tinydet.deploy.run.describe_fault decodes on the host).
 * The linker script of each target
 * provides the symbols used here (see deploy/targets/<name>/linker.ld).
 */
#include <stdint.h>
#include <string.h>

#include "tinydet_board.h"

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_limit__, __stack_top__;
extern void __libc_init_array(void);
extern int main(int argc, char **argv);

#define STACK_PAINT 0xA5A5A5A5u

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void MemManage_Handler(void);
void BusFault_Handler(void);
void UsageFault_Handler(void);

/* exceptions other than reset: a fault or stray interrupt ends the run with a message */
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));

typedef void (*vector_fn)(void);

/* 16 system exceptions + 16 external IRQs (all default) is enough for tinydet's polling glue */
__attribute__((section(".isr_vector"), used)) const vector_fn tinydet_vectors[32] = {
    (vector_fn)(uintptr_t)&__stack_top__,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    0, 0, 0, 0,
    SVC_Handler,
    DebugMon_Handler,
    0,
    PendSV_Handler,
    SysTick_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler,
};

static void put_hex(const char *label, uint32_t v)
{
    char buf[32];
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    while (*label && n < 16)
    {
        buf[n++] = *label++;
    }
    buf[n++] = '0';
    buf[n++] = 'x';
    for (int i = 7; i >= 0; i--)
    {
        buf[n++] = hex[(v >> (4 * i)) & 0xF];
    }
    buf[n++] = '\n';
    buf[n] = 0;
    tinydet_board_puts(buf);
}

/* The report of every fault: its name, the faulting pc and lr from the exception frame, and the
 * System Control Block's fault status (CFSR = MMFSR | BFSR | UFSR, HFSR) and address registers. */
__attribute__((used, noreturn)) void tinydet_fault_report(const uint32_t *frame, uint32_t which)
{
    static const char *const names[] = {"HardFault", "MemManage", "BusFault", "UsageFault"};
    volatile uint32_t *scb = (volatile uint32_t *)0xE000ED00u;
    tinydet_board_puts("tinydet: HARDFAULT (crash in firmware)\n");
    tinydet_board_puts("  fault ");
    tinydet_board_puts(names[which & 3u]);
    tinydet_board_puts("\n");
    put_hex("  pc   ", frame[6]);
    put_hex("  lr   ", frame[5]);
    put_hex("  cfsr ", scb[0x28 / 4]);
    put_hex("  hfsr ", scb[0x2C / 4]);
    put_hex("  mmfar ", scb[0x34 / 4]);
    put_hex("  bfar ", scb[0x38 / 4]);
    tinydet_board_exit(3);
}

/* Naked, so no prologue moves the stack before it is read: the exception frame is on the stack
 * that was in use (MSP or PSP, as EXC_RETURN in lr says); r0 = frame, r1 = which fault. */
#define TINYDET_FAULT_HANDLER(fn, which)                                             \
    __attribute__((naked)) void fn(void)                                             \
    {                                                                                \
        __asm volatile("tst lr, #4\n\tite eq\n\tmrseq r0, msp\n\tmrsne r0, psp\n\t"     \
                       "movs r1, #" #which "\n\tb tinydet_fault_report\n\t");          \
    }

TINYDET_FAULT_HANDLER(HardFault_Handler, 0)
TINYDET_FAULT_HANDLER(MemManage_Handler, 1)
TINYDET_FAULT_HANDLER(BusFault_Handler, 2)
TINYDET_FAULT_HANDLER(UsageFault_Handler, 3)

void Default_Handler(void)
{
    uint32_t ipsr;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    tinydet_board_puts("tinydet: unexpected exception\n");
    put_hex("  ipsr ", ipsr);
    tinydet_board_exit(4);
}

uint32_t tinydet_stack_size_bytes(void)
{
    return (uint32_t)((uintptr_t)&__stack_top__ - (uintptr_t)&__stack_limit__);
}

uint32_t tinydet_stack_used_bytes(void)
{
    /* the stack grows down: the first word from the bottom that lost its paint is the deepest */
    const uint32_t *p = &__stack_limit__;
    while (p < &__stack_top__ && *p == STACK_PAINT)
    {
        p++;
    }
    return (uint32_t)((uintptr_t)&__stack_top__ - (uintptr_t)p);
}

__attribute__((naked, noreturn)) void Reset_Handler(void)
{
    __asm volatile(
        "ldr sp, =__stack_top__\n\t"
        "bl tinydet_reset_c\n\t"
        "b .\n\t");
}

__attribute__((noreturn, used)) void tinydet_reset_c(void)
{
    /* FPU on (CP10/CP11 full access) before any code that may use VFP registers */
    volatile uint32_t *cpacr = (volatile uint32_t *)0xE000ED88u;
    *cpacr |= (0xFu << 20);
    __asm volatile("dsb\n\tisb");
    /* relocate the vector table (VTOR) to ours */
    *(volatile uint32_t *)0xE000ED08u = (uint32_t)(uintptr_t)tinydet_vectors;
    /* SHCSR: MemManage, BusFault and UsageFault get their own handlers (else they escalate to
     * HardFault and the report could only say "forced") */
    *(volatile uint32_t *)0xE000ED24u |= (1u << 16) | (1u << 17) | (1u << 18);

    uint32_t *src = &__data_load__;
    for (uint32_t *dst = &__data_start__; dst < &__data_end__;)
    {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start__; dst < &__bss_end__;)
    {
        *dst++ = 0;
    }
    /* paint the stack below the current frame (leave 256 bytes for this function) */
    uint32_t *sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &__stack_limit__; p < sp - 64; p++)
    {
        *p = STACK_PAINT;
    }
    tinydet_board_init();
    __libc_init_array();
    char **argv;
    const int argc = tinydet_board_args(&argv);
    const int rc = main(argc, argv);
    tinydet_board_exit(rc);
}

/* newlib wants _init/_fini with -nostartfiles */
void _init(void) {}
void _fini(void) {}
