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

enum
{
    OP_MAXPOOL = 1,
    OP_UPSAMPLE = 2,
    OP_CONCAT = 3
};

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));

static driver_result handle(const driver_record *r)
{
    const int32_t op = r->op, *p = r->p;
    const int8_t *const *blob = r->blob;
    int8_t *dst = r->dst;
    int32_t status = -100, n_out = 0;
    uint32_t t0 = 0, t1 = 0;
    if (op == OP_MAXPOOL)
    {
        const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]}, fd = {1, p[4], p[5], 1};
        const cmsis_nn_dims od = {p[0], p[10], p[11], p[3]};
        const cmsis_nn_pool_params pp = {{p[7], p[6]}, {p[9], p[8]}, {p[12], p[13]}};
        const cmsis_nn_context ctx = {NULL, 0};
        n_out = od.n * od.h * od.w * od.c;
        if (!record_fits(r, n_out))
        {
            const driver_result no_room = {RECORD_NO_ROOM, 0, 0};
            return no_room;
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
        if (!record_fits(r, n_out))
        {
            const driver_result no_room = {RECORD_NO_ROOM, 0, 0};
            return no_room;
        }
        t0 = COUNTER();
        status = tinydet_upsample_nearest_s8(&scale, &id, blob[0], &od, dst);
        t1 = COUNTER();
    }
    else if (op == OP_CONCAT && p[3] <= RECORD_MAX_BLOBS)
    {
        tinydet_concat_part parts[RECORD_MAX_BLOBS];
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
        if (!record_fits(r, n_out))
        {
            const driver_result no_room = {RECORD_NO_ROOM, 0, 0};
            return no_room;
        }
        t0 = COUNTER();
        status = tinydet_concat_s8(p[3], blob, parts, &od, dst);
        t1 = COUNTER();
    }
    const driver_result res = {status, n_out, t1 - t0};
    return res;
}

int main(int argc, char **argv)
{
    return run_records(argc, argv, "neck_driver", arena, ARENA_BYTES, handle);
}
