/*
 * Board glue for the STM32F746G-DISCO (Cortex-M7, 320 kB SRAM, 1 MB Flash), register level, no HAL.
 * Runs at the reset clock (HSI 16 MHz, no PLL setup: nothing clock-dependent but the UART divisor).
 * Console: USART1 TX on PA9 (AF7), wired to the ST-LINK virtual COM port, 115200 8N1.
 * Counter: DWT CYCCNT (CPU cycles; real hardware, so not an instruction count).
 */
#include <stdint.h>

#include "tinydet_board.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB2ENR REG(0x40023844u)
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRH REG(0x40020024u)
#define USART1_CR1 REG(0x40011000u)
#define USART1_BRR REG(0x4001100Cu)
#define USART1_ISR REG(0x4001101Cu)
#define USART1_TDR REG(0x40011028u)
#define HSI_HZ 16000000u
#define BAUD 115200u

#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

void tinydet_board_init(void)
{
    RCC_AHB1ENR |= 1u << 0; /* GPIOA */
    RCC_APB2ENR |= 1u << 4; /* USART1 */
    (void)RCC_APB2ENR;      /* read back: the clock must be running before the peripheral is touched */
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 18)) | (2u << 18);  /* PA9 alternate function */
    GPIOA_AFRH = (GPIOA_AFRH & ~(0xFu << 4)) | (7u << 4);    /* AF7 = USART1 */
    USART1_BRR = (HSI_HZ + BAUD / 2) / BAUD;
    USART1_CR1 = (1u << 3) | (1u << 0); /* TE, UE */

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
            while (!(USART1_ISR & (1u << 7)))
            {
            }
            USART1_TDR = '\r';
        }
        while (!(USART1_ISR & (1u << 7)))
        {
        }
        USART1_TDR = (uint32_t)(unsigned char)*s;
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
