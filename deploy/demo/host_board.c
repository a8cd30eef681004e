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

/* The host's files: FILE pointers in a small table (the handles index it). */
static FILE *host_files[8];

int tinydet_board_file_open(const char *name)
{
    for (int h = 0; h < (int)(sizeof(host_files) / sizeof(host_files[0])); h++)
    {
        if (host_files[h] == NULL)
        {
            host_files[h] = fopen(name, "rb");
            return host_files[h] != NULL ? h : -1;
        }
    }
    return -1;
}

int tinydet_board_file_read_at(int handle, int32_t at, void *dst, uint32_t n)
{
    FILE *f = handle >= 0 && handle < (int)(sizeof(host_files) / sizeof(host_files[0])) ? host_files[handle] : NULL;
    if (f == NULL || at < 0 || fseek(f, (long)at, SEEK_SET) != 0)
    {
        return -1;
    }
    return fread(dst, 1, n, f) == n ? 0 : -1;
}

void tinydet_board_file_close(int handle)
{
    if (handle >= 0 && handle < (int)(sizeof(host_files) / sizeof(host_files[0])) && host_files[handle] != NULL)
    {
        fclose(host_files[handle]);
        host_files[handle] = NULL;
    }
}

void tinydet_board_exit(int code)
{
    exit(code);
}
