/*
 * STM32F746G-DISCO (Cortex-M7, 320 kB SRAM, 1 MB Flash) for common/stm32_board.c.
 * Console: USART1 TX on PA9 (AF7), wired to the ST-LINK virtual COM port; reset clock HSI 16 MHz.
 */
#define STM32_RCC_GPIO_ENR 0x40023830u  /* RCC_AHB1ENR ... */
#define STM32_RCC_GPIO_BIT 0            /* ... GPIOAEN */
#define STM32_RCC_USART_ENR 0x40023844u /* RCC_APB2ENR ... */
#define STM32_RCC_USART_BIT 4           /* ... USART1EN */
#define STM32_GPIO_BASE 0x40020000u     /* GPIOA */
#define STM32_TX_PIN 9u                 /* PA9 */
#define STM32_RX_PIN 10u                /* PA10 (same port and AF as TX) */
#define STM32_TX_AF 7u                  /* AF7 = USART1 */
#define STM32_USART_BASE 0x40011000u    /* USART1 */
#define STM32_HSI_HZ 16000000u
