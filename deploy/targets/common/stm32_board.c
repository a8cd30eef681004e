/*
 * Board glue shared by the STM32 Cortex-M7 targets (register level, no HAL).
 * Runs at the reset clock (HSI, no PLL setup: nothing clock-dependent but the UART divisor).
 * Console: one USART's TX pin in its alternate function, 115200 8N1 (the ST-LINK virtual COM port);
 * its RX pin too, for the board protocol's serial link (tinydet_board_serial_*, serve_main.c).
 * Counter: DWT CYCCNT (CPU cycles; real hardware, so not an instruction count).
 *
 * What differs between boards (RCC enable registers, GPIO port and pin, USART, HSI frequency) comes
 * from the target's board_config.h, named by TINYDET_BOARD_CONFIG in its target.json cflags. The
 * GPIO and USART register layouts used here are the same on STM32F7 and STM32H7.
 */
#include <stdint.h>

#include "tinydet_board.h"

#ifndef TINYDET_BOARD_CONFIG
#error "stm32_board.c: define TINYDET_BOARD_CONFIG as the board's config header (see deploy/targets/README.md)"
#endif
#include TINYDET_BOARD_CONFIG

#define REG(a) (*(volatile uint32_t *)(a))
#define GPIO_MODER REG(STM32_GPIO_BASE + 0x00u)
#define GPIO_AFR REG(STM32_GPIO_BASE + 0x20u + 4u * (STM32_TX_PIN / 8u)) /* AFRL for pins 0-7, AFRH 8-15 */
#define AFR_SHIFT (4u * (STM32_TX_PIN % 8u))
#define GPIO_AFR_RX REG(STM32_GPIO_BASE + 0x20u + 4u * (STM32_RX_PIN / 8u))
#define AFR_SHIFT_RX (4u * (STM32_RX_PIN % 8u))
#define USART_CR1 REG(STM32_USART_BASE + 0x00u)
#define USART_BRR REG(STM32_USART_BASE + 0x0Cu)
#define USART_ISR REG(STM32_USART_BASE + 0x1Cu)
#define USART_ICR REG(STM32_USART_BASE + 0x20u)
#define USART_RDR REG(STM32_USART_BASE + 0x24u)
#define USART_TDR REG(STM32_USART_BASE + 0x28u)
#define USART_ISR_TXE (1u << 7)
#define USART_ISR_RXNE (1u << 5)
#define USART_ISR_ORE (1u << 3)
#define BAUD 115200u

#define DEMCR REG(0xE000EDFCu)
#define DWT_CTRL REG(0xE0001000u)
#define DWT_CYCCNT REG(0xE0001004u)
#define DWT_LAR REG(0xE0001FB0u)

void tinydet_board_init(void)
{
    REG(STM32_RCC_GPIO_ENR) |= 1u << STM32_RCC_GPIO_BIT;
    REG(STM32_RCC_USART_ENR) |= 1u << STM32_RCC_USART_BIT;
    (void)REG(STM32_RCC_USART_ENR); /* read back: the clock must be running before the peripheral is touched */
    GPIO_MODER = (GPIO_MODER & ~(3u << (2u * STM32_TX_PIN))) | (2u << (2u * STM32_TX_PIN)); /* alternate function */
    GPIO_AFR = (GPIO_AFR & ~(0xFu << AFR_SHIFT)) | ((uint32_t)STM32_TX_AF << AFR_SHIFT);
    GPIO_MODER = (GPIO_MODER & ~(3u << (2u * STM32_RX_PIN))) | (2u << (2u * STM32_RX_PIN));
    GPIO_AFR_RX = (GPIO_AFR_RX & ~(0xFu << AFR_SHIFT_RX)) | ((uint32_t)STM32_TX_AF << AFR_SHIFT_RX);
    USART_BRR = (STM32_HSI_HZ + BAUD / 2) / BAUD;
    USART_CR1 = (1u << 3) | (1u << 2) | (1u << 0); /* TE, RE, UE */

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

static void uart_send(char ch)
{
    while (!(USART_ISR & USART_ISR_TXE))
    {
    }
    USART_TDR = (uint32_t)(unsigned char)ch;
}

/* No file system on the boards: images come from memory or a camera (board_main.c). */
int tinydet_board_file_open(const char *name)
{
    (void)name;
    return -1;
}

int tinydet_board_file_read_at(int handle, int32_t at, void *dst, uint32_t n)
{
    (void)handle;
    (void)at;
    (void)dst;
    (void)n;
    return -1;
}

void tinydet_board_file_close(int handle)
{
    (void)handle;
}

void tinydet_board_puts(const char *s)
{
    for (; *s; s++)
    {
        if (*s == '\n')
        {
            uart_send('\r');
        }
        uart_send(*s);
    }
}

int tinydet_board_serial_read(void)
{
    for (;;)
    {
        const uint32_t isr = USART_ISR;
        if (isr & USART_ISR_RXNE)
        {
            return (int)(USART_RDR & 0xFFu);
        }
        if (isr & USART_ISR_ORE)
        {
            USART_ICR = USART_ISR_ORE; /* a lost byte shows up as a CRC error frame; keep receiving */
        }
    }
}

void tinydet_board_serial_write(const uint8_t *data, uint32_t size)
{
    for (uint32_t i = 0; i < size; i++)
    {
        uart_send((char)data[i]); /* raw bytes: no newline translation on the link */
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
