/*
 * Kernel test driver: reads a list of kernel calls from "kin.bin", runs them, writes their outputs
 * to "kout.bin". Built for the host (plain stdio) and for qemu-mps2-an500 (stdio over semihosting),
 * driven by tests/test_c_kernels.py, which writes the calls and checks the outputs against numpy.
 *
 * (Other file names: kernel_driver IN OUT.)
 * kin.bin  : records of int32 little-endian words: op, nparams, params..., nblobs,
 *            then per blob: nbytes, bytes (zero padded to a multiple of 4)
 * kout.bin : per record: status, ticks, nbytes, bytes (padded to 4)
 * OP_ARITH params: p0 = 0 srdhm(a, b), 1 rdbpot(a, b), 2 requantize(a, b, c), 3 tdn_rq_apply(a, rq(b, c)),
 *                  4 tdn_rq_s8(a, rq(b, c), p1, p2, p3), 5 tdn_rq_s8_r2(a, b, -c - 1, 2^(-c-2), p1) (int32 results)
 * OP_MOVE params: n, dst, src: tinydet_move of n bytes within blob 0 (offsets dst, src); output the blob.
 * OP_CONV_ROWS params: a conv record's 20, then dst_w, scratch bytes (0: the rest of the arena), reverse:
 *   tinydet_conv_rows without an add into a zeroed [H_out, dst_w, C_out] map; output the map. With 12
 *   more (an OP_CONV_ADD record's add params and range) and blob 5 = a [Hs, dst_w, C_out] buffer: the
 *   rows add the buffer's rows from its top as the shortcut and write from row p[35] down, in the
 *   same buffer (dst over a later row's shortcut: only the reverse order is right); output the buffer.
 * ticks is the board counter around the kernel call (0 on the host).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ref_kernels.h"
#include "tinydet_arith.h"
#include "tinydet_nn.h"
#include "tinydet_runtime.h"

#include "driver_records.h"

#if defined(TINYDET_BOARD)
#include "tinydet_board.h"
#define COUNTER() tinydet_board_counter()
#else
#define COUNTER() 0u
#endif

#ifndef ARENA_BYTES
#define ARENA_BYTES (1536 * 1024)
#endif
#define MAX_PARAMS 64
#define MAX_BLOBS 8

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(8)));

enum
{
    OP_CONV = 1,
    OP_DW = 2,
    OP_ADD = 3,
    OP_AVGPOOL = 4,
    OP_FC = 5,
    OP_CONV_ADD = 6,
    OP_ARITH = 7,
    OP_TILE = 8,
    OP_GEOMETRY = 9,
    OP_MOVE = 10,
    OP_CONV_ROWS = 11
};

/* p[7..18] of a conv or depthwise record: stride, padding, dilation (h, w each), input offset,
 * output offset, activation min and max. */
static void read_window_params(const int32_t *p, cmsis_nn_tile *stride, cmsis_nn_tile *padding,
                               cmsis_nn_tile *dilation, int32_t *input_offset, int32_t *output_offset,
                               cmsis_nn_activation *activation)
{
    stride->h = p[7];
    stride->w = p[8];
    padding->h = p[9];
    padding->w = p[10];
    dilation->h = p[11];
    dilation->w = p[12];
    *input_offset = p[15];
    *output_offset = p[16];
    activation->min = p[17];
    activation->max = p[18];
}

/* An add's 10 arm_elementwise_add_s8 parameters and its activation range, from q[0..11]. */
static tinydet_add_params read_add_params(const int32_t *q)
{
    tinydet_add_params ap;
    ap.input_1_offset = q[0];
    ap.input_1_mult = q[1];
    ap.input_1_shift = q[2];
    ap.input_2_offset = q[3];
    ap.input_2_mult = q[4];
    ap.input_2_shift = q[5];
    ap.left_shift = q[6];
    ap.out_offset = q[7];
    ap.out_mult = q[8];
    ap.out_shift = q[9];
    ap.activation.min = q[10];
    ap.activation.max = q[11];
    return ap;
}

/* A kernel writing an od-sized output at out_p: sets *out_n to its size in bytes and returns the
 * kernel's scratch, the rest of the arena after the output (8-byte aligned). */
static cmsis_nn_context output_and_scratch(const cmsis_nn_dims *od, uint8_t *out_p, int32_t *out_n,
                                           const uint8_t *free_mem, size_t free_bytes)
{
    *out_n = od->n * od->h * od->w * od->c;
    uint8_t *scratch = out_p + ((*out_n + 7) & ~7);
    const cmsis_nn_context ctx = {scratch, (int32_t)(free_bytes - (size_t)(scratch - free_mem))};
    return ctx;
}

int main(int argc, char **argv)
{
    /* usage: kernel_driver [IN [OUT]]  (default kin.bin, kout.bin) */
    FILE *in = fopen(argc > 1 ? argv[1] : "kin.bin", "rb");
    FILE *out = fopen(argc > 2 ? argv[2] : "kout.bin", "wb");
    if (in == NULL || out == NULL)
    {
        printf("kernel_driver: cannot open kin.bin / kout.bin\n");
        return 2;
    }
    int32_t op;
    int records = 0;
    while (read_i32(in, &op) == 0)
    {
        int32_t np, nb, p[MAX_PARAMS];
        uint8_t *blob[MAX_BLOBS];
        int32_t blen[MAX_BLOBS];
        const long read = read_record(in, "kernel_driver", &np, p, MAX_PARAMS, &nb, blob, blen, MAX_BLOBS, arena,
                                      ARENA_BYTES, 8);
        if (read < 0)
        {
            return 2;
        }
        const size_t used = (size_t)read;
        uint8_t *free_mem = arena + used;
        const size_t free_bytes = ARENA_BYTES - used;
        int32_t status = -100;
        int32_t out_n = 0;
        uint8_t *out_p = free_mem;
        uint32_t t0 = 0, t1 = 0;
#define BLOB_OR_NULL(i) (blen[i] > 0 ? (void *)blob[i] : NULL)
        if (op == OP_CONV || op == OP_CONV_ADD)
        {
            const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]};
            const cmsis_nn_dims fd = {p[4], p[5], p[6], p[3]};
            const cmsis_nn_dims bd = {1, 1, 1, p[4]};
            const cmsis_nn_dims od = {p[0], p[13], p[14], p[4]};
            cmsis_nn_conv_params cp;
            read_window_params(p, &cp.stride, &cp.padding, &cp.dilation, &cp.input_offset, &cp.output_offset,
                               &cp.activation);
            cmsis_nn_per_channel_quant_params qp = {(int32_t *)blob[3], (int32_t *)blob[4]};
            const int32_t variant = p[19];
            cmsis_nn_context ctx = output_and_scratch(&od, out_p, &out_n, free_mem, free_bytes);
            if (op == OP_CONV)
            {
                t0 = COUNTER();
                if (variant == 0)
                    status = arm_convolve_s8(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                             BLOB_OR_NULL(2), NULL, &od, (int8_t *)out_p);
                else if (variant == 1)
                    status = arm_convolve_1x1_s8_fast(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1],
                                                      &bd, BLOB_OR_NULL(2), &od, (int8_t *)out_p);
                else if (variant == 2)
                    status = arm_convolve_wrapper_s8(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1],
                                                     &bd, BLOB_OR_NULL(2), &od, (int8_t *)out_p);
                else
                    status = ref_arm_convolve_s8(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                                 BLOB_OR_NULL(2), NULL, &od, (int8_t *)out_p);
                t1 = COUNTER();
            }
            else
            {
                const tinydet_add_params ap = read_add_params(p + 20);
                const int32_t need = tinydet_conv_add_s8_get_buffer_size(&id, &fd, &od);
                if (variant > 0 && ctx.size > need + variant - 1)
                {
                    ctx.size = need + variant - 1; /* the scratch a plan sized for one row plus variant - 1 bytes */
                }
                if (need > ctx.size)
                {
                    status = -101;
                }
                else if (np > 32)
                {
                    /* region form: shortcut [p32, p33, C_out] with the output at (p34, p35) */
                    const cmsis_nn_dims sd = {1, p[32], p[33], p[4]};
                    t0 = COUNTER();
                    status = tinydet_conv_add_region_s8(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1],
                                                        &bd, BLOB_OR_NULL(2), &od, &ap, &sd, p[34], p[35],
                                                        (int8_t *)blob[5]);
                    t1 = COUNTER();
                }
                else
                {
                    t0 = COUNTER();
                    status = tinydet_conv_add_s8(&ctx, &cp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                                 BLOB_OR_NULL(2), &od, &ap, (int8_t *)blob[5]);
                    t1 = COUNTER();
                }
                out_p = blob[5];
                out_n = np > 32 ? od.h * od.w * od.c : blen[5];
            }
        }
        else if (op == OP_DW)
        {
            const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]};
            const cmsis_nn_dims od = {p[0], p[13], p[14], p[3] * p[4]};
            const cmsis_nn_dims fd = {1, p[5], p[6], od.c};
            const cmsis_nn_dims bd = {1, 1, 1, od.c};
            cmsis_nn_dw_conv_params dp;
            dp.ch_mult = p[4];
            read_window_params(p, &dp.stride, &dp.padding, &dp.dilation, &dp.input_offset, &dp.output_offset,
                               &dp.activation);
            cmsis_nn_per_channel_quant_params qp = {(int32_t *)blob[3], (int32_t *)blob[4]};
            const int32_t variant = p[19];
            cmsis_nn_context ctx = output_and_scratch(&od, out_p, &out_n, free_mem, free_bytes);
            t0 = COUNTER();
            if (variant == 0)
                status = arm_depthwise_conv_s8(&ctx, &dp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                               BLOB_OR_NULL(2), &od, (int8_t *)out_p);
            else if (variant == 1)
                status = arm_depthwise_conv_wrapper_s8(&ctx, &dp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1],
                                                       &bd, BLOB_OR_NULL(2), &od, (int8_t *)out_p);
            else if (variant == 2)
                status = ref_arm_depthwise_conv_s8(&ctx, &dp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                                   BLOB_OR_NULL(2), &od, (int8_t *)out_p);
            else
            {
                /* in place: the output is the first out_n bytes of the input buffer; the buffer is
                 * exactly the documented size, as the firmware's arena plan gives it */
                ctx.size = tinydet_depthwise_conv_inplace_s8_get_buffer_size(&od);
                status = tinydet_depthwise_conv_inplace_s8(&ctx, &dp, &qp, &id, (int8_t *)blob[0], &fd,
                                                           (int8_t *)blob[1], &bd, BLOB_OR_NULL(2), &od);
                out_p = blob[0];
            }
            t1 = COUNTER();
        }
        else if (op == OP_ADD)
        {
            out_n = blen[0];
            t0 = COUNTER();
            /* checked against numpy directly (tinydet.quant.kernels.add_s8): no ref_ variant */
            status = arm_elementwise_add_s8((int8_t *)blob[0], (int8_t *)blob[1], p[0], p[1], p[2], p[3], p[4], p[5],
                                            p[6], (int8_t *)out_p, p[7], p[8], p[9], p[10], p[11], out_n);
            t1 = COUNTER();
        }
        else if (op == OP_AVGPOOL)
        {
            const cmsis_nn_dims id = {p[0], p[1], p[2], p[3]};
            const cmsis_nn_dims fd = {1, p[4], p[5], 1};
            const cmsis_nn_dims od = {p[0], p[10], p[11], p[3]};
            cmsis_nn_pool_params pp;
            pp.stride.h = p[6];
            pp.stride.w = p[7];
            pp.padding.h = p[8];
            pp.padding.w = p[9];
            pp.activation.min = p[12];
            pp.activation.max = p[13];
            out_n = od.n * od.h * od.w * od.c;
            uint8_t *scratch = out_p + ((out_n + 7) & ~7);
            cmsis_nn_context ctx = {p[14] == 1 ? NULL : scratch, arm_avgpool_s8_get_buffer_size(od.w, od.c)};
            t0 = COUNTER();
            if (p[14] == 2)
                status = ref_arm_avgpool_s8(&ctx, &pp, &id, (int8_t *)blob[0], &fd, &od, (int8_t *)out_p);
            else
                status = arm_avgpool_s8(&ctx, &pp, &id, (int8_t *)blob[0], &fd, &od, (int8_t *)out_p);
            t1 = COUNTER();
        }
        else if (op == OP_FC)
        {
            const cmsis_nn_dims id = {p[0], 1, 1, p[1]};
            const cmsis_nn_dims fd = {p[1], 1, 1, p[2]};
            const cmsis_nn_dims bd = {1, 1, 1, p[2]};
            const cmsis_nn_dims od = {p[0], 1, 1, p[2]};
            cmsis_nn_fc_params fp;
            fp.input_offset = p[3];
            fp.filter_offset = p[4];
            fp.output_offset = p[5];
            fp.activation.min = p[8];
            fp.activation.max = p[9];
            cmsis_nn_per_tensor_quant_params qp = {p[6], p[7]};
            out_n = p[0] * p[2];
            uint8_t *scratch = out_p + ((out_n + 7) & ~7);
            cmsis_nn_context ctx = {scratch, arm_fully_connected_s8_get_buffer_size(&fd)};
            t0 = COUNTER();
            if (p[10] == 0)
                status = arm_fully_connected_s8(&ctx, &fp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                                BLOB_OR_NULL(2), &od, (int8_t *)out_p);
            else
                status = ref_arm_fully_connected_s8(&ctx, &fp, &qp, &id, (int8_t *)blob[0], &fd, (int8_t *)blob[1], &bd,
                                                    BLOB_OR_NULL(2), &od, (int8_t *)out_p);
            t1 = COUNTER();
        }
        else if (op == OP_ARITH)
        {
            const int32_t n = blen[0] / 4;
            const int32_t *a = (const int32_t *)blob[0], *b = (const int32_t *)blob[1];
            const int32_t *c = nb > 2 ? (const int32_t *)blob[2] : NULL;
            int32_t *r = (int32_t *)out_p;
            for (int32_t i = 0; i < n; i++)
            {
                if (p[0] == 0)
                    r[i] = tdn_srdhm(a[i], b[i]);
                else if (p[0] == 1)
                    r[i] = tdn_rdbpot(a[i], b[i]);
                else if (p[0] == 2)
                    r[i] = tdn_requantize(a[i], b[i], c[i]);
                else if (p[0] == 5)
                    /* the right-shift-by->=2 form of the 1x1 kernel: c = shift <= -2, p1 = offset */
                    r[i] = tdn_rq_s8_r2(a[i], b[i], ~c[i], (int32_t)(1u << (~c[i] - 1)), p[1]);
                else
                {
                    /* the kernels' precomputed form: 3 = tdn_rq_apply, 4 = tdn_rq_s8 (p1..p3: offset, min, max) */
                    const tdn_rq rq = tdn_rq_make(b[i], c[i]);
                    r[i] = p[0] == 3 ? tdn_rq_apply(a[i], &rq) : tdn_rq_s8(a[i], &rq, p[1], p[2], p[3]);
                }
            }
            out_n = n * 4;
            status = 0;
        }
        else if (op == OP_TILE)
        {
            tinydet_memory_image im = {(const int8_t *)blob[0], p[0], p[1], p[2]};
            tinydet_source src = {tinydet_read_memory, &im, p[0], p[1], p[2]};
            const tinydet_rect r = {p[3], p[4], p[5], p[6]};
            int8_t *tile = (int8_t *)out_p;
            int8_t *dst = tile + ((p[5] * p[6] * p[2] + 7) & ~7);
            const int32_t dst_w = p[7], dst_h = p[10];
            memset(dst, 0, (size_t)(dst_h * dst_w * p[2]));
            status = tinydet_tile_read(&src, &r, tile);
            if (status == 0)
            {
                for (int32_t row = 0; row < r.h; row++) /* place the tile read at (y0, x0) of dst */
                {
                    memcpy(dst + ((size_t)(p[8] + row) * (size_t)dst_w + (size_t)p[9]) * (size_t)p[2],
                           tile + (size_t)row * (size_t)r.w * (size_t)p[2], (size_t)r.w * (size_t)p[2]);
                }
            }
            out_p = (uint8_t *)dst;
            out_n = dst_h * dst_w * p[2];
        }
        else if (op == OP_GEOMETRY)
        {
            const cmsis_nn_tile stride = {p[5], p[4]}, dil = {p[7], p[6]};
            const tinydet_pad pad = {p[8], p[9], p[10], p[11]};
            cmsis_nn_tile padding = {0, 0};
            cmsis_nn_dims od = {1, 0, 0, 1};
            int32_t *r = (int32_t *)out_p;
            r[0] = tinydet_tile_geometry(p[0], p[1], p[2], p[3], &stride, &dil, &pad, &padding, &od);
            r[1] = padding.h;
            r[2] = padding.w;
            r[3] = od.h;
            r[4] = od.w;
            out_n = 20;
            status = 0;
        }
        else if (op == OP_CONV_ROWS)
        {
            tinydet_conv_args a;
            a.depthwise = 0;
            read_window_params(p, &a.conv.stride, &a.conv.padding, &a.conv.dilation, &a.conv.input_offset,
                               &a.conv.output_offset, &a.conv.activation);
            a.quant.multiplier = (int32_t *)blob[3];
            a.quant.shift = (int32_t *)blob[4];
            const cmsis_nn_dims id = {1, p[1], p[2], p[3]}, fd = {p[4], p[5], p[6], p[3]}, od = {1, p[13], p[14], p[4]};
            a.input_dims = id;
            a.filter_dims = fd;
            a.output_dims = od;
            a.filter = blob[1];
            a.bias = (const int32_t *)BLOB_OR_NULL(2);
            tinydet_rows rows;
            memset(&rows, 0, sizeof(rows));
            rows.dst = (int8_t *)out_p;
            rows.dst_w = p[20];
            rows.reverse = p[22];
            out_n = od.h * p[20] * od.c;
            memset(out_p, 0, (size_t)out_n);
            tinydet_add_params ap;
            if (np > 23)
            {
                ap = read_add_params(p + 23);
                out_n = blen[5];
                memcpy(out_p, blob[5], (size_t)out_n);
                rows.add = &ap;
                rows.conv_first = 1;
                rows.shortcut = (int8_t *)out_p;
                rows.shortcut_w = p[20];
                rows.dst = (int8_t *)out_p + (size_t)p[35] * (size_t)p[20] * (size_t)od.c;
            }
            cmsis_nn_context ctx = {out_p + ((out_n + 7) & ~7), 0};
            ctx.size = (int32_t)(free_bytes - (size_t)((uint8_t *)ctx.buf - free_mem));
            if (p[21] > 0 && p[21] < ctx.size)
            {
                ctx.size = p[21];
            }
            t0 = COUNTER();
            status = tinydet_conv_rows(&ctx, &a, blob[0], &rows);
            t1 = COUNTER();
        }
        else if (op == OP_MOVE)
        {
            memcpy(out_p, blob[0], (size_t)blen[0]);
            tinydet_move(out_p + p[1], out_p + p[2], (size_t)p[0]);
            out_n = blen[0];
            status = 0;
        }
        write_out(out, status, t1 - t0, out_p, out_n);
        records++;
    }
    fclose(in);
    fclose(out);
    printf("kernel_driver: %d records\n", records);
    return 0;
}
