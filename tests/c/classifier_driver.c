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
#define MAX_PARAMS 16
#define MAX_BLOBS 5

enum
{
    OP_GAP = 1,
    OP_FC = 2
};

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));
static int8_t scratch[SCRATCH_BYTES] __attribute__((aligned(8)));

int main(int argc, char **argv)
{
    FILE *in = fopen(argc > 1 ? argv[1] : "kin.bin", "rb");
    FILE *out = fopen(argc > 2 ? argv[2] : "kout.bin", "wb");
    if (in == NULL || out == NULL)
    {
        printf("classifier_driver: cannot open the record files\n");
        return 2;
    }
    int32_t op;
    while (read_i32(in, &op) == 0)
    {
        int32_t np, nb, p[MAX_PARAMS], blen[MAX_BLOBS];
        uint8_t *raw[MAX_BLOBS];
        const int8_t *blob[MAX_BLOBS];
        const long read = read_record(in, "classifier_driver", &np, p, MAX_PARAMS, &nb, raw, blen, MAX_BLOBS, arena,
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
        write_out(out, status, t1 - t0, dst, status == 0 ? n_out : 0);
    }
    fclose(out);
    fclose(in);
    return 0;
}
