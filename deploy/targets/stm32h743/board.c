/*
 * Board glue for the STM32H743 (NUCLEO-H743ZI; Cortex-M7, 1 MB SRAM, 2 MB Flash), register level, no HAL.
 * Runs at the reset clock (HSI 64 MHz, no PLL setup: nothing clock-dependent but the UART divisor).
 * Console: USART3 TX on PD8 (AF7), wired to the ST-LINK virtual COM port, 115200 8N1.
 * Counter: DWT CYCCNT (CPU cycles; real hardware, so not an instruction count).
 */
#include <stdint.h>

#include "tinydet_board.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define RCC_AHB4ENR REG(0x580244E0u)
#define RCC_APB1LENR REG(0x580244E8u)
#define GPIOD_MODER REG(0x58020C00u)
#define GPIOD_AFRH REG(0x58020C24u)
#define USART3_CR1 REG(0x40004800u)
#define USART3_BRR REG(0x4000480Cu)
#define USART3_ISR REG(0x4000481Cu)
#define USART3_TDR REG(0x40004828u)
#define HSI_HZ 64000000u
#define BAUD 115200u

#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

void tinydet_board_init(void)
{
    RCC_AHB4ENR |= 1u << 3;   /* GPIOD */
    RCC_APB1LENR |= 1u << 18; /* USART3 (kernel clock = PCLK1 = HSI 64 MHz after reset) */
    (void)RCC_APB1LENR;       /* read back: the clock must be running before the peripheral is touched */
    GPIOD_MODER = (GPIOD_MODER & ~(3u << 16)) | (2u << 16); /* PD8 alternate function */
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFu) | 7u;                 /* AF7 = USART3 */
    USART3_BRR = (HSI_HZ + BAUD / 2) / BAUD;
    USART3_CR1 = (1u << 3) | (1u << 0); /* TE, UE */

    DEMCR |= 1u << 24; /* TRCENA */
    DWT_LAR = 0xC5ACCE55u;
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
}

int tinydet_board_args(char ***argv)
{
    static char *none[1] = {0};
    *argv = none;
    return 0;
}

void tinydet_board_puts(const char *s)
{
    for (; *s; s++)
    {
        if (*s == '\n')
        {
            while (!(USART3_ISR & (1u << 7)))
            {
            }
            USART3_TDR = '\r';
        }
        while (!(USART3_ISR & (1u << 7)))
        {
        }
        USART3_TDR = (uint32_t)(unsigned char)*s;
    }
}

uint32_t tinydet_board_counter(void)
{
    return DWT_CYCCNT;
}

const char *tinydet_board_counter_name(void)
{
    return "dwt-cyccnt";
}

uint32_t tinydet_board_instructions_per_tick_x1000(void)
{
    return 0; /* cycles, not instructions */
}

void tinydet_board_exit(int code)
{
    static const char hex[] = "0123456789abcdef";
    char msg[] = "tinydet: exit 0x00\n";
    msg[16] = hex[((unsigned)code >> 4) & 0xF];
    msg[17] = hex[(unsigned)code & 0xF];
    tinydet_board_puts(msg);
    for (;;)
    {
        __asm volatile("wfi");
    }
}

/* newlib's stdout/stderr (printf) go to the UART; other descriptors do not exist on this board. */
int _write(int fd, const char *buf, int len)
{
    if (fd != 1 && fd != 2)
    {
        return -1;
    }
    char chunk[33];
    for (int i = 0; i < len; i += 32)
    {
        int n = len - i < 32 ? len - i : 32;
        for (int j = 0; j < n; j++)
        {
            chunk[j] = buf[i + j];
        }
        chunk[n] = 0;
        tinydet_board_puts(chunk);
    }
    return len;
}
