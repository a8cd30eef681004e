/*
 * STM32H743 (NUCLEO-H743ZI; Cortex-M7, 1 MB SRAM, 2 MB Flash) for common/stm32_board.c.
 * Console: USART3 TX on PD8 (AF7), wired to the ST-LINK virtual COM port; reset clock HSI 64 MHz
 * (the USART3 kernel clock is PCLK1 = HSI after reset).
 */
#define STM32_RCC_GPIO_ENR 0x580244E0u  /* RCC_AHB4ENR ... */
#define STM32_RCC_GPIO_BIT 3            /* ... GPIODEN */
#define STM32_RCC_USART_ENR 0x580244E8u /* RCC_APB1LENR ... */
#define STM32_RCC_USART_BIT 18          /* ... USART3EN */
#define STM32_GPIO_BASE 0x58020C00u     /* GPIOD */
#define STM32_TX_PIN 8u                 /* PD8 */
#define STM32_RX_PIN 9u                /* PD9 (same port and AF as TX) */
#define STM32_TX_AF 7u                  /* AF7 = USART3 */
#define STM32_USART_BASE 0x40004800u    /* USART3 */
#define STM32_HSI_HZ 64000000u
