/* Counter calibration: a loop of exactly 2 instructions per iteration (SUBS + BNE) timed with the
 * board counter; under QEMU -icount shift=0 ticks * instructions_per_tick must equal 2 * N. */
#include <stdint.h>
#include <stdio.h>

#include "tinydet_board.h"

#define N 1000000u

int main(void)
{
    uint32_t n = N;
    const uint32_t t0 = tinydet_board_counter();
    __asm volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    const uint32_t t1 = tinydet_board_counter();
    printf("calib instructions=%lu ticks=%lu ipt_x1000=%lu\n", (unsigned long)(2u * N), (unsigned long)(t1 - t0),
           (unsigned long)tinydet_board_instructions_per_tick_x1000());
    return 0;
}
