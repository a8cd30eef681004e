/*
 * Neck kernel test driver (tests/test_neck_deploy.py): the record format of kernel_driver.c
 * (tests/c/driver.py writes and reads it), for the kernels of detector necks:
 *   OP_MAXPOOL  1: n h w c kh kw sh sw ph pw oh ow act_min act_max; blob: input    (arm_max_pool_s8)
 *   OP_UPSAMPLE 2: n h w c sh sw; blob: input                                     (tinydet_upsample_nearest_s8)
 *   OP_CONCAT   3: n h w k, then per input: channels input_offset mult shift output_offset copy;
 *                  blobs: the k inputs                                            (tinydet_concat_s8)
 * Output per record: status, counter ticks around the call (0 on the host), the output bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tinydet_nn.h"

#include "driver_records.h"

#if defined(TINYDET_BOARD)
#include "tinydet_board.h"
#define COUNTER() tinydet_board_counter()
#else
#define COUNTER() 0u
#endif

#define ARENA_BYTES (256 * 1024)
#define MAX_PARAMS 64
#define MAX_BLOBS 8

enum
{
    OP_MAXPOOL = 1,
    OP_UPSAMPLE = 2,
    OP_CONCAT = 3
};

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));

static int fits(size_t used, int32_t n_out)
{
    if (n_out < 0 || used + (size_t)n_out > ARENA_BYTES)
    {
        printf("neck_driver: output does not fit\n");
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    FILE *in = fopen(argc > 1 ? argv[1] : "kin.bin", "rb");
    FILE *out = fopen(argc > 2 ? argv[2] : "kout.bin", "wb");
    if (in == NULL || out == NULL)
    {
        printf("neck_driver: cannot open the record files\n");
        return 2;
    }
    int32_t op;
    while (read_i32(in, &op) == 0)
    {
        int32_t np, nb, p[MAX_PARAMS], blen[MAX_BLOBS];
        uint8_t *raw[MAX_BLOBS];
        const int8_t *blob[MAX_BLOBS];
        const long read = read_record(in, "neck_driver", &np, p, MAX_PARAMS, &nb, raw, blen, MAX_BLOBS, arena,
                                      ARENA_BYTES, 0);
        if (read < 0)
        {
            return 2;
        }
        const size_t used = (size_t)read;
        for (int32_t i = 0; i < nb; i++)
        {
            blob[i] = (const int8_t *)raw[i];
        }
        int8_t *dst = (int8_t *)(arena + used); /* after every input: no overlap */
        int32_t status = -100, n_out = 0;
        uint32_t t0 = 0, t1 = 0;
        if (op == OP_MAXPOOL)
        {
            const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]}, fd = {1, p[4], p[5], 1};
            const cmsis_nn_dims od = {p[0], p[10], p[11], p[3]};
            const cmsis_nn_pool_params pp = {{p[7], p[6]}, {p[9], p[8]}, {p[12], p[13]}};
            const cmsis_nn_context ctx = {NULL, 0};
            n_out = od.n * od.h * od.w * od.c;
            if (!fits(used, n_out))
            {
                return 2;
            }
            t0 = COUNTER();
            status = arm_max_pool_s8(&ctx, &pp, &id, blob[0], &fd, &od, dst);
            t1 = COUNTER();
        }
        else if (op == OP_UPSAMPLE)
        {
            const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]}, od = {p[0], p[1] * p[4], p[2] * p[5], p[3]};
            const cmsis_nn_tile scale = {p[5], p[4]};
            n_out = od.n * od.h * od.w * od.c;
            if (!fits(used, n_out))
            {
                return 2;
            }
            t0 = COUNTER();
            status = tinydet_upsample_nearest_s8(&scale, &id, blob[0], &od, dst);
            t1 = COUNTER();
        }
        else if (op == OP_CONCAT && p[3] <= MAX_BLOBS)
        {
            tinydet_concat_part parts[MAX_BLOBS];
            int32_t c = 0;
            for (int32_t i = 0; i < p[3]; i++)
            {
                const int32_t *q = p + 4 + 6 * i;
                const tinydet_concat_part part = {q[0], q[1], q[2], q[3], q[4], q[5]};
                parts[i] = part;
                c += q[0];
            }
            const cmsis_nn_dims od = {p[0], p[1], p[2], c};
            n_out = od.n * od.h * od.w * od.c;
            if (!fits(used, n_out))
            {
                return 2;
            }
            t0 = COUNTER();
            status = tinydet_concat_s8(p[3], blob, parts, &od, dst);
            t1 = COUNTER();
        }
        write_out(out, status, t1 - t0, dst, status == 0 ? n_out : 0);
    }
    fclose(out);
    fclose(in);
    return 0;
}
