/* Firmware that crashes (bus fault on an unmapped address) or hangs, for the toolchain error tests. */
#include <stdint.h>

int main(void)
{
#if defined(TINYDET_TEST_HANG)
    for (volatile int i = 0;; i++)
    {
    }
#else
    volatile uint32_t *bad = (volatile uint32_t *)0xF0000000u;
    return (int)*bad;
#endif
}
