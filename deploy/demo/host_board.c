/*
 * Board glue for the host build of the demo firmware (`tinydet deploy --target host`): the counter
 * is the process CPU clock in microseconds (no instruction count on the host, so the conversion
 * factor is 0); console output goes to stdout. Stack painting exists only on the M7 targets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tinydet_board.h"

void tinydet_board_init(void)
{
}

void tinydet_board_puts(const char *s)
{
    fputs(s, stdout);
}

uint32_t tinydet_board_counter(void)
{
    return (uint32_t)((unsigned long long)clock() * 1000000ull / (unsigned long long)CLOCKS_PER_SEC);
}

const char *tinydet_board_counter_name(void)
{
    return "host-cpu-clock-us";
}

uint32_t tinydet_board_instructions_per_tick_x1000(void)
{
    return 0; /* microseconds, not instructions */
}

void tinydet_board_exit(int code)
{
    exit(code);
}
