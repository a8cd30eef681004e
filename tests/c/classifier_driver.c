/*
 * Classifier kernel test driver (tests/test_classifier_deploy.py): the record format of
 * kernel_driver.c (tests/c/driver.py writes and reads it), for the classifier's layers:
 *   OP_GAP 1: h w c act_min act_max scratch_bytes; blob: input      (tinydet_global_avgpool_s8)
 *   OP_FC  2: depth c_out input_offset output_offset act_min act_max scratch_bytes;
 *             blobs: input, weights [c_out][depth], bias, mult, shift (tinydet_fully_connected_s8)
 * scratch_bytes < 0: the size the layer's *_get_buffer_size asks for.
 * Output per record: status, counter ticks around the call (0 on the host), the output bytes.
 */
#include <stdint.h>
#include <stdio.h>

#include "tinydet_runtime.h"

#include "driver_records.h"

#if defined(TINYDET_BOARD)
#include "tinydet_board.h"
#define COUNTER() tinydet_board_counter()
#else
#define COUNTER() 0u
#endif

#define ARENA_BYTES (128 * 1024)
#define SCRATCH_BYTES 8192

enum
{
    OP_GAP = 1,
    OP_FC = 2
};

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));
static int8_t scratch[SCRATCH_BYTES] __attribute__((aligned(8)));

static driver_result handle(const driver_record *r)
{
    const int32_t op = r->op, np = r->np, nb = r->nb, *p = r->p;
    const int8_t *const *blob = r->blob;
    int8_t *dst = r->dst;
    int32_t status = -100, n_out = 0;
    uint32_t t0 = 0, t1 = 0;
    if (op == OP_GAP && np == 6)
    {
        const cmsis_nn_dims id = {1, p[0], p[1], p[2]};
        const cmsis_nn_activation act = {p[3], p[4]};
        const int32_t size = p[5] < 0 ? tinydet_global_avgpool_s8_get_buffer_size(p[2]) : p[5];
        const cmsis_nn_context ctx = {scratch, size};
        n_out = p[2];
        t0 = COUNTER();
        status = size <= SCRATCH_BYTES ? tinydet_global_avgpool_s8(&ctx, &id, blob[0], &act, dst) : -100;
        t1 = COUNTER();
    }
    else if (op == OP_FC && np == 7 && nb == 5)
    {
        const cmsis_nn_fc_params fp = {p[2], 0, p[3], {p[4], p[5]}};
        const cmsis_nn_per_channel_quant_params qp = {(int32_t *)blob[3], (int32_t *)blob[4]};
        const int32_t size = p[6] < 0 ? tinydet_fully_connected_s8_get_buffer_size(p[0], p[1]) : p[6];
        const cmsis_nn_context ctx = {scratch, size};
        n_out = p[1];
        t0 = COUNTER();
        status = size <= SCRATCH_BYTES ? tinydet_fully_connected_s8(&ctx, &fp, &qp, p[0], p[1], blob[0], blob[1],
                                                                    (const int32_t *)blob[2], dst)
                                       : -100;
        t1 = COUNTER();
    }
    const driver_result res = {status, n_out, t1 - t0};
    return res;
}

int main(int argc, char **argv)
{
    return run_records(argc, argv, "classifier_driver", arena, ARENA_BYTES, handle);
}
