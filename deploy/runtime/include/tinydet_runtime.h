/*
 * tinydet_runtime.h - tinydet-specific kernels and helpers on top of the CMSIS-NN API
 * (tinydet_nn.h; they work with the bundled kernels and with ARM's library alike).
 *
 *  - in-place depthwise convolution   (DESIGN.md memory rule "in-place depthwise")
 *  - one layer (convolution or depthwise) on the whole map or row by row, with or without a residual
 *    add: the fused residual, the unfused residual and a tile's rows into the stage-1 map
 *  - tile helpers for the patch-based stage 1: read a tile from a (streamed) source, express a
 *    tile's border padding through CMSIS padding + output size.
 *
 * Portable C99, no malloc, integer only. Scratch memory always comes from cmsis_nn_context.
 */
#ifndef TINYDET_RUNTIME_H
#define TINYDET_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "tinydet_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Arguments of arm_elementwise_add_s8 for a residual add (tinydet_conv_rows). Input 1 is the
 * first operand of the graph's Add (the convolution's output when conv_first), input 2 the other.
 * tinydet.quant.kernels.add_params computes them (keys of the same names). */
typedef struct
{
    int32_t input_1_offset;
    int32_t input_1_mult;
    int32_t input_1_shift;
    int32_t input_2_offset;
    int32_t input_2_mult;
    int32_t input_2_shift;
    int32_t left_shift;
    int32_t out_offset;
    int32_t out_mult;
    int32_t out_shift;
    cmsis_nn_activation activation;
} tinydet_add_params;

/* ---- in-place depthwise convolution --------------------------------------------------------------
 * inout holds the [H, W, C] input; on return its first H_out*W_out*C bytes hold the [H_out, W_out, C]
 * output (ch_mult 1, H_out*W_out <= H*W). Channel c is computed into ctx->buf (H_out*W_out bytes) and
 * then stored into channel c's slots of the first H_out*W_out pixels. This never clobbers unread
 * input: those slots belong to channel c, whose input has just been consumed in full, and channels
 * other than c are never written while c is processed. Same results as arm_depthwise_conv_s8.
 * Batch 1, no dilation, at most TINYDET_DW_INPLACE_MAX_TAPS kernel taps (else ARM_CMSIS_NN_ARG_ERROR). */
#ifndef TINYDET_DW_INPLACE_MAX_TAPS
#define TINYDET_DW_INPLACE_MAX_TAPS 81 /* up to 9x9 */
#endif
int32_t tinydet_depthwise_conv_inplace_s8_get_buffer_size(const cmsis_nn_dims *output_dims);
arm_cmsis_nn_status tinydet_depthwise_conv_inplace_s8(const cmsis_nn_context *ctx,
                                                      const cmsis_nn_dw_conv_params *dw_conv_params,
                                                      const cmsis_nn_per_channel_quant_params *quant_params,
                                                      const cmsis_nn_dims *input_dims,
                                                      int8_t *inout_data,
                                                      const cmsis_nn_dims *filter_dims,
                                                      const int8_t *filter_data,
                                                      const cmsis_nn_dims *bias_dims,
                                                      const int32_t *bias_data,
                                                      const cmsis_nn_dims *output_dims);

/* ---- one layer as the generated tables describe it ----------------------------------------------
 * A convolution (OHWI filter, filter_dims {C_out, KH, KW, C_in}) or a depthwise convolution
 * (ch_mult 1, filter [1, KH, KW, C], filter_dims {1, KH, KW, C}), batch 1. */
typedef struct
{
    int32_t depthwise;
    /* the CMSIS parameters themselves (passed to the conv kernels as they are; the depthwise ones add
     * ch_mult 1): input_offset = -input zero point, output_offset = +output zero point, stride,
     * padding top (h) / left (w) (bottom/right are implied by output_dims), dilation, activation */
    cmsis_nn_conv_params conv;
    cmsis_nn_per_channel_quant_params quant;
    cmsis_nn_dims input_dims, filter_dims, output_dims;
    const int8_t *filter;
    const int32_t *bias;
} tinydet_conv_args;

/* Scratch tinydet_conv needs (the wrapper kernel's buffer). */
int32_t tinydet_conv_get_buffer_size(const tinydet_conv_args *conv);

/* The whole layer into out ([H_out, W_out, C_out]) through arm_convolve_wrapper_s8 /
 * arm_depthwise_conv_wrapper_s8; ARM_CMSIS_NN_ARG_ERROR when ctx is smaller than the kernel asks. */
arm_cmsis_nn_status tinydet_conv(const cmsis_nn_context *ctx, const tinydet_conv_args *conv, const int8_t *input,
                                 int8_t *output);

/* ---- row-wise output, with or without a residual add: THE fused-residual implementation ----------
 * Output row y (of conv->output_dims) goes to dst + y * dst_w * C_out. Without `add` each row is the
 * convolution computed on just the input rows it reads (the rows above the input as CMSIS top
 * padding, the rows below simply absent: both read as the zero point), written straight into dst --
 * a tile's last stage-1 layer writing its part of the stage-1 map (dst_w = the map's width).
 * With `add`, row y = add(conv row y, shortcut row y): the conv row comes from conv_out (an
 * unfused residual, the convolution already computed, [H_out, W_out, C_out]) or is computed into
 * scratch (fused residual); the shortcut row -- the output's part of a larger [.., shortcut_w,
 * C_out] region, at (shortcut_y, shortcut_x) -- is copied to scratch before dst is written, so dst
 * may overlap the shortcut anywhere as long as no row clobbers a later row's shortcut: rows go first
 * to last, or last to first with `reverse` (the arena plan's rule, tinydet/schedule/arena.py).
 * Bit-identical to the convolution into a tensor followed by arm_elementwise_add_s8. */
typedef struct
{
    const tinydet_add_params *add; /* NULL: plain rows */
    const int8_t *conv_out;        /* with add: the convolution's output, or NULL to compute each row */
    const int8_t *shortcut;
    int32_t shortcut_w, shortcut_y, shortcut_x;
    int32_t conv_first; /* the add's input 1 is the convolution (else the shortcut) */
    int32_t reverse;    /* rows last to first */
    int8_t *dst;
    int32_t dst_w; /* pixels between the starts of two dst rows (>= W_out) */
} tinydet_rows;

/* Scratch tinydet_conv_rows needs: the one-row convolution's buffer + a conv row + a shortcut row. */
int32_t tinydet_conv_rows_get_buffer_size(const tinydet_conv_args *conv);
arm_cmsis_nn_status tinydet_conv_rows(const cmsis_nn_context *ctx, const tinydet_conv_args *conv, const int8_t *input,
                                      const tinydet_rows *rows);

/* ---- convolution + residual add, in place into the shortcut (CMSIS-style entry points) ------------
 * shortcut_inout [N, H_out, W_out, C_out] is replaced by add(conv(input), shortcut); bit-identical to
 * arm_convolve_s8 into a temporary followed by arm_elementwise_add_s8. tinydet_conv_rows with
 * conv_first, first row to last. */
int32_t tinydet_conv_add_s8_get_buffer_size(const cmsis_nn_dims *input_dims,
                                            const cmsis_nn_dims *filter_dims,
                                            const cmsis_nn_dims *output_dims);
arm_cmsis_nn_status tinydet_conv_add_s8(const cmsis_nn_context *ctx,
                                        const cmsis_nn_conv_params *conv_params,
                                        const cmsis_nn_per_channel_quant_params *quant_params,
                                        const cmsis_nn_dims *input_dims,
                                        const int8_t *input_data,
                                        const cmsis_nn_dims *filter_dims,
                                        const int8_t *filter_data,
                                        const cmsis_nn_dims *bias_dims,
                                        const int32_t *bias_data,
                                        const cmsis_nn_dims *output_dims,
                                        const tinydet_add_params *add_params,
                                        int8_t *shortcut_inout);

/* Tile form (patch-based stage 1): the shortcut buffer holds a larger [Hs, Ws, C_out] region
 * (shortcut_dims) of which the output's part starts at (shortcut_y, shortcut_x); the output
 * [H_out, W_out, C_out] is written compactly at the START of that buffer. Batch 1.
 * tinydet_conv_add_s8 is this with shortcut_dims == output_dims and offset (0, 0); same buffer size. */
arm_cmsis_nn_status tinydet_conv_add_region_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_conv_params *conv_params,
                                               const cmsis_nn_per_channel_quant_params *quant_params,
                                               const cmsis_nn_dims *input_dims,
                                               const int8_t *input_data,
                                               const cmsis_nn_dims *filter_dims,
                                               const int8_t *filter_data,
                                               const cmsis_nn_dims *bias_dims,
                                               const int32_t *bias_data,
                                               const cmsis_nn_dims *output_dims,
                                               const tinydet_add_params *add_params,
                                               const cmsis_nn_dims *shortcut_dims,
                                               int32_t shortcut_y,
                                               int32_t shortcut_x,
                                               int8_t *shortcut_inout);

/* ---- tiles --------------------------------------------------------------------------------------- */
typedef struct
{
    int32_t y, x, h, w; /* top-left corner and size, in pixels */
} tinydet_rect;

typedef struct
{
    int32_t top, left, bottom, right; /* zero padding applied on each side of a tile */
} tinydet_pad;

/* Reads w pixels (w * c bytes, NHWC) of row y starting at column x into dst; returns 0 on success.
 * Lets stage 1 stream its input (camera, file, Flash) instead of holding the whole image in SRAM. */
typedef int (*tinydet_read_fn)(void *user, int32_t y, int32_t x, int32_t w, int8_t *dst);

typedef struct
{
    tinydet_read_fn read;
    void *user;
    int32_t h, w, c; /* full extent of the source */
} tinydet_source;

/* memmove for overlapping copies in the arena (an in-place depthwise tile's output moved to its
 * slot's far end): on Thumb-2 word-aligned copies move 32 bytes per LDM/STM pair (~0.13 instructions
 * a byte), others 8 bytes per step with unaligned word loads/stores (~1 a byte); backwards when dst
 * lies above src. newlib-nano's memmove (built for size) copies one byte per ~6 instructions. */
void tinydet_move(void *dst, const void *src, size_t n);

/* A source backed by an NHWC array in memory (use tinydet_read_memory as the read callback). */
typedef struct
{
    const int8_t *data;
    int32_t h, w, c;
} tinydet_memory_image;
int tinydet_read_memory(void *user /* tinydet_memory_image* */, int32_t y, int32_t x, int32_t w, int8_t *dst);

/* Copies region r of the source into dst ([r.h, r.w, c] contiguous). Returns 0, or -1 if r leaves
 * the source or the callback fails. */
int tinydet_tile_read(const tinydet_source *src, const tinydet_rect *r, int8_t *dst);

/* For a layer applied to a tile of in_h x in_w pixels with `pad` zero padding on each side (the
 * layer's own padding on the sides that touch the image border, 0 inside): sets the CMSIS padding
 * (top/left) and output_dims->h/w (floor((in + before + after - dilation*(k-1) - 1) / stride) + 1).
 * Rows/columns beyond the tile on the bottom/right then read as the zero point inside the kernels.
 * Returns 0, or -1 if the output would be empty. */
int tinydet_tile_geometry(int32_t in_h, int32_t in_w, int32_t k_h, int32_t k_w, const cmsis_nn_tile *stride,
                          const cmsis_nn_tile *dilation, const tinydet_pad *pad, cmsis_nn_tile *padding,
                          cmsis_nn_dims *output_dims);


/* ---- classifier layers (src/nn_avgpool.c, src/nn_fc.c) --------------------------------------------
 * The global average pool ([1, H, W, C] -> [1, 1, 1, C] through arm_avgpool_s8, ctx->buf of
 * tinydet_global_avgpool_s8_get_buffer_size(C) bytes) and the fully connected layer ([depth] ->
 * [C_out] through arm_fully_connected_per_channel_s8, one multiplier/shift per output, ctx->buf of
 * tinydet_fully_connected_s8_get_buffer_size(depth, C_out) bytes; with ARM's library the buffer is
 * filled by arm_vector_sum_s8 where ARM's kernel needs it). */
int32_t tinydet_global_avgpool_s8_get_buffer_size(int32_t channels);
arm_cmsis_nn_status tinydet_global_avgpool_s8(const cmsis_nn_context *ctx,
                                              const cmsis_nn_dims *input_dims,
                                              const int8_t *input_data,
                                              const cmsis_nn_activation *activation,
                                              int8_t *output_data);
int32_t tinydet_fully_connected_s8_get_buffer_size(int32_t depth, int32_t out_channels);
arm_cmsis_nn_status tinydet_fully_connected_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_fc_params *fc_params,
                                               const cmsis_nn_per_channel_quant_params *quant_params,
                                               int32_t depth,
                                               int32_t out_channels,
                                               const int8_t *input_data,
                                               const int8_t *filter_data,
                                               const int32_t *bias_data,
                                               int8_t *output_data);

/* ---- fused inverted residual, row by row (src/nn_fused_ir.c) ---------------------------------------
 * expand (1x1) -> depthwise (k x k, stride s) -> project (1x1) [+ shortcut], one output row at a
 * time (tinydet.schedule.fusion; tinydet.quant.reference.fused_ir_rows is its numpy twin): the
 * input rows the depthwise window of row y needs are expanded once each into the ring (rows in
 * order from its start; rows no later window reads are dropped by moving the kept ones down), each
 * output pixel's window goes through the depthwise kernel into `pixel` and the projection [+ the
 * add] writes it to dst. Every value goes through the layers' own kernels (tinydet_conv,
 * arm_depthwise_conv_wrapper_s8, arm_elementwise_add_s8), so the block is bit exact with running
 * them op by op. The output may overlap the input as the plan allows: output row y is written only
 * after the input rows its ring needs were expanded (and its shortcut pixels read). */
typedef struct
{
    const tinydet_conv_args *expand;  /* 1x1 on one input row ([1, 1, W, C_in] -> [1, 1, W, C_e]), or NULL */
    const tinydet_conv_args *dw;      /* the block's depthwise: input [1, H, W, C_e], pads, output size */
    const tinydet_conv_args *project; /* 1x1 on one pixel ([1, 1, 1, C_e] -> [1, 1, 1, C_out]) */
    const tinydet_add_params *add;    /* residual add after the projection, or NULL */
    int32_t conv_first;               /* the add's input 1 is the projection (else the shortcut) */
    const int8_t *input;              /* the block input [H, W, C_in] (C_e without expansion) */
    int8_t *ring;                     /* ring_rows x W x C_e bytes (unused without expansion) */
    int32_t ring_rows;
    int8_t *pixel;                    /* C_e bytes */
    const int8_t *shortcut;           /* with add: the shortcut region around the output */
    int32_t shortcut_w, shortcut_y, shortcut_x;
    int8_t *dst;                      /* output row y at dst + y * dst_w * C_out */
    int32_t dst_w;
} tinydet_fused_ir;

/* Scratch tinydet_fused_ir_s8 needs: its kernels' buffer, one depthwise window, one projected pixel. */
int32_t tinydet_fused_ir_get_buffer_size(const tinydet_fused_ir *f);
arm_cmsis_nn_status tinydet_fused_ir_s8(const cmsis_nn_context *ctx, const tinydet_fused_ir *f);

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_RUNTIME_H */
