/*
 * Record I/O shared by the C test drivers (kernel_driver.c, classifier_driver.c, neck_driver.c);
 * tests/c/driver.py writes the records and reads the results:
 *   kin.bin : per record: op, np, np int32 params, nb, then per blob: nbytes, bytes (zero padded to 4)
 *   kout.bin: per record: status, ticks, nbytes, bytes (zero padded to 4)
 */
#ifndef TINYDET_TEST_DRIVER_RECORDS_H
#define TINYDET_TEST_DRIVER_RECORDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static int read_i32(FILE *f, int32_t *v)
{
    return fread(v, 4, 1, f) == 1 ? 0 : -1;
}

static void write_out(FILE *f, int32_t status, uint32_t ticks, const void *data, int32_t n)
{
    const int32_t hdr[3] = {status, (int32_t)ticks, n};
    static const uint8_t pad[4] = {0, 0, 0, 0};
    fwrite(hdr, 4, 3, f);
    if (n > 0)
    {
        fwrite(data, 1, (size_t)n, f);
    }
    fwrite(pad, 1, (size_t)((4 - (n & 3)) & 3), f);
}

/* One record's params and blobs (its op already read). Blobs are placed 8-byte aligned from the
 * start of ``arena``, keeping ``reserve`` bytes free after them. Returns the arena bytes used, or
 * -1 after printing why (``who`` names the driver). */
static long read_record(FILE *in, const char *who, int32_t *np, int32_t *p, int32_t max_params, int32_t *nb,
                        uint8_t **blob, int32_t *blen, int32_t max_blobs, uint8_t *arena, size_t arena_bytes,
                        size_t reserve)
{
    size_t used = 0;
    if (read_i32(in, np) || *np < 0 || *np > max_params || fread(p, 4, (size_t)*np, in) != (size_t)*np ||
        read_i32(in, nb) || *nb < 0 || *nb > max_blobs)
    {
        printf("%s: malformed record\n", who);
        return -1;
    }
    for (int32_t i = 0; i < *nb; i++)
    {
        const size_t padded = read_i32(in, &blen[i]) || blen[i] < 0 ? 0 : (size_t)((blen[i] + 3) & ~3);
        if (used + padded + reserve > arena_bytes || fread(arena + used, 1, padded, in) != padded)
        {
            printf("%s: blob %d does not fit or is truncated\n", who, (int)i);
            return -1;
        }
        blob[i] = arena + used;
        used += (padded + 7) & ~(size_t)7;
    }
    return (long)used;
}

#endif
