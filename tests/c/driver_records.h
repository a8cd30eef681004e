/*
 * Record I/O shared by the C test drivers (kernel_driver.c; classifier_driver.c and neck_driver.c
 * through run_records);
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

#define RECORD_MAX_PARAMS 64
#define RECORD_MAX_BLOBS 8
#define RECORD_NO_ROOM (-101) /* a handler's status: the output would not fit after the inputs */

/* One decoded record: its op, params and blobs (in the driver's arena), and the free space after
 * them where the handler writes its output (never overlapping an input). */
typedef struct
{
    int32_t op, np, nb;
    int32_t p[RECORD_MAX_PARAMS];
    const int8_t *blob[RECORD_MAX_BLOBS];
    int32_t blen[RECORD_MAX_BLOBS];
    int8_t *dst;
    size_t dst_bytes;
} driver_record;

/* What a handler reports: the kernel's status (-100: a record it does not understand), the output
 * bytes at dst and the counter ticks around the kernel call. */
typedef struct
{
    int32_t status;
    int32_t n_out;
    uint32_t ticks;
} driver_result;

typedef driver_result (*driver_handler)(const driver_record *r);

static int record_fits(const driver_record *r, int32_t n_out)
{
    return n_out >= 0 && (size_t)n_out <= r->dst_bytes;
}

/* main() of a record driver: ``who [IN [OUT]]`` (default kin.bin, kout.bin); every record is
 * read into ``arena``, handled, and its result written. Returns the process exit status. */
static int run_records(int argc, char **argv, const char *who, uint8_t *arena, size_t arena_bytes,
                       driver_handler handle)
{
    FILE *in = fopen(argc > 1 ? argv[1] : "kin.bin", "rb");
    FILE *out = fopen(argc > 2 ? argv[2] : "kout.bin", "wb");
    if (in == NULL || out == NULL)
    {
        printf("%s: cannot open the record files\n", who);
        return 2;
    }
    static driver_record r;
    while (read_i32(in, &r.op) == 0)
    {
        uint8_t *raw[RECORD_MAX_BLOBS];
        const long used = read_record(in, who, &r.np, r.p, RECORD_MAX_PARAMS, &r.nb, raw, r.blen, RECORD_MAX_BLOBS,
                                      arena, arena_bytes, 0);
        if (used < 0)
        {
            return 2;
        }
        for (int32_t i = 0; i < r.nb; i++)
        {
            r.blob[i] = (const int8_t *)raw[i];
        }
        r.dst = (int8_t *)(arena + used);
        r.dst_bytes = arena_bytes - (size_t)used;
        const driver_result res = handle(&r);
        if (res.status == RECORD_NO_ROOM)
        {
            printf("%s: output does not fit\n", who);
            return 2;
        }
        write_out(out, res.status, res.ticks, r.dst, res.status == 0 ? res.n_out : 0);
    }
    fclose(out);
    fclose(in);
    return 0;
}

#endif
