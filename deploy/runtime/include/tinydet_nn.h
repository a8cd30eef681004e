/*
 * tinydet_nn.h - the CMSIS-NN s8 API subset that tinydet's generated code calls.
 *
 * Struct names, field names and function signatures are those of ARM's CMSIS-NN
 * (Include/arm_nn_types.h, Include/arm_nnfunctions.h; checked against CMSIS-NN main, 2026), so the
 * same generated code builds against either library:
 *
 *   default                      tinydet's bundled kernels (deploy/runtime/src/nn_*.c)
 *   -DTINYDET_USE_CMSIS_NN       ARM's headers and sources (set up by CMSIS_NN_ROOT, see README.md);
 *                                the bundled nn_*.c then compile to nothing.
 *
 * Semantics (both libraries): NHWC int8 activations, OHWI conv filters, [1, KH, KW, C] depthwise
 * filters, input_offset = -input_zero_point, output_offset = +output_zero_point, per-channel Q31
 * multiplier/shift with TFLite double rounding, activation clamp [activation.min, activation.max].
 * Padding is the top/left amount; the output size is taken from output_dims and input positions
 * outside the input contribute zero (they read as the input zero point).
 */
#ifndef TINYDET_NN_H
#define TINYDET_NN_H

#if defined(TINYDET_USE_CMSIS_NN)

#include "arm_nnfunctions.h"

#else /* bundled kernels */

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum
{
    ARM_CMSIS_NN_SUCCESS = 0,
    ARM_CMSIS_NN_ARG_ERROR = -1,
    ARM_CMSIS_NN_NO_IMPL_ERROR = -2,
    ARM_CMSIS_NN_FAILURE = -3
} arm_cmsis_nn_status;

typedef struct
{
    int32_t w;
    int32_t h;
} cmsis_nn_tile;

typedef struct
{
    void *buf;
    int32_t size;
} cmsis_nn_context;

typedef struct
{
    int32_t n; /* batch, or output channels for filters */
    int32_t h;
    int32_t w;
    int32_t c;
} cmsis_nn_dims;

typedef struct
{
    int32_t *multiplier;
    int32_t *shift;
} cmsis_nn_per_channel_quant_params;

typedef struct
{
    int32_t multiplier;
    int32_t shift;
} cmsis_nn_per_tensor_quant_params;

typedef struct
{
    int32_t min;
    int32_t max;
} cmsis_nn_activation;

typedef struct
{
    int32_t input_offset;
    int32_t output_offset;
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_tile dilation;
    cmsis_nn_activation activation;
} cmsis_nn_conv_params;

typedef struct
{
    int32_t input_offset;
    int32_t output_offset;
    int32_t ch_mult;
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_tile dilation;
    cmsis_nn_activation activation;
} cmsis_nn_dw_conv_params;

typedef struct
{
    cmsis_nn_tile stride;
    cmsis_nn_tile padding;
    cmsis_nn_activation activation;
} cmsis_nn_pool_params;

typedef struct
{
    int32_t input_offset;
    int32_t filter_offset;
    int32_t output_offset;
    cmsis_nn_activation activation;
} cmsis_nn_fc_params;

/* General convolution (any kernel, stride, dilation, padding). ctx->buf must hold
 * arm_convolve_s8_get_buffer_size() bytes. upscale_dims: NULL or {.h,.w} in {1} (2 = transposed
 * convolution upscaling is not bundled and returns ARM_CMSIS_NN_NO_IMPL_ERROR). Filter channels
 * must equal input channels (grouped convolution is not bundled: ARM_CMSIS_NN_ARG_ERROR). */
arm_cmsis_nn_status arm_convolve_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_conv_params *conv_params,
                                    const cmsis_nn_per_channel_quant_params *quant_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const int8_t *filter_data,
                                    const cmsis_nn_dims *bias_dims,
                                    const int32_t *bias_data,
                                    const cmsis_nn_dims *upscale_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data);
int32_t arm_convolve_s8_get_buffer_size(const cmsis_nn_dims *input_dims, const cmsis_nn_dims *filter_dims);

/* 1x1 convolution, stride 1, no padding (ARM's constraints); same results as arm_convolve_s8. */
arm_cmsis_nn_status arm_convolve_1x1_s8_fast(const cmsis_nn_context *ctx,
                                             const cmsis_nn_conv_params *conv_params,
                                             const cmsis_nn_per_channel_quant_params *quant_params,
                                             const cmsis_nn_dims *input_dims,
                                             const int8_t *input_data,
                                             const cmsis_nn_dims *filter_dims,
                                             const int8_t *filter_data,
                                             const cmsis_nn_dims *bias_dims,
                                             const int32_t *bias_data,
                                             const cmsis_nn_dims *output_dims,
                                             int8_t *output_data);
int32_t arm_convolve_1x1_s8_fast_get_buffer_size(const cmsis_nn_dims *input_dims);

/* Picks the fastest bundled variant; the call generated code should use. */
arm_cmsis_nn_status arm_convolve_wrapper_s8(const cmsis_nn_context *ctx,
                                            const cmsis_nn_conv_params *conv_params,
                                            const cmsis_nn_per_channel_quant_params *quant_params,
                                            const cmsis_nn_dims *input_dims,
                                            const int8_t *input_data,
                                            const cmsis_nn_dims *filter_dims,
                                            const int8_t *filter_data,
                                            const cmsis_nn_dims *bias_dims,
                                            const int32_t *bias_data,
                                            const cmsis_nn_dims *output_dims,
                                            int8_t *output_data);
int32_t arm_convolve_wrapper_s8_get_buffer_size(const cmsis_nn_conv_params *conv_params,
                                                const cmsis_nn_dims *input_dims,
                                                const cmsis_nn_dims *filter_dims,
                                                const cmsis_nn_dims *output_dims);

/* Depthwise convolution, filter [1, KH, KW, C_OUT]; specialised for ch_mult 1 (interior windows
 * of 3x3/5x5/7x7 fully unrolled); ch_mult > 1 runs a general loop. No buffer needed. */
arm_cmsis_nn_status arm_depthwise_conv_s8(const cmsis_nn_context *ctx,
                                          const cmsis_nn_dw_conv_params *dw_conv_params,
                                          const cmsis_nn_per_channel_quant_params *quant_params,
                                          const cmsis_nn_dims *input_dims,
                                          const int8_t *input_data,
                                          const cmsis_nn_dims *filter_dims,
                                          const int8_t *filter_data,
                                          const cmsis_nn_dims *bias_dims,
                                          const int32_t *bias_data,
                                          const cmsis_nn_dims *output_dims,
                                          int8_t *output_data);
arm_cmsis_nn_status arm_depthwise_conv_wrapper_s8(const cmsis_nn_context *ctx,
                                                  const cmsis_nn_dw_conv_params *dw_conv_params,
                                                  const cmsis_nn_per_channel_quant_params *quant_params,
                                                  const cmsis_nn_dims *input_dims,
                                                  const int8_t *input_data,
                                                  const cmsis_nn_dims *filter_dims,
                                                  const int8_t *filter_data,
                                                  const cmsis_nn_dims *bias_dims,
                                                  const int32_t *bias_data,
                                                  const cmsis_nn_dims *output_dims,
                                                  int8_t *output_data);
int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                      const cmsis_nn_dims *input_dims,
                                                      const cmsis_nn_dims *filter_dims,
                                                      const cmsis_nn_dims *output_dims);

arm_cmsis_nn_status arm_elementwise_add_s8(const int8_t *input_1_vect,
                                           const int8_t *input_2_vect,
                                           const int32_t input_1_offset,
                                           const int32_t input_1_mult,
                                           const int32_t input_1_shift,
                                           const int32_t input_2_offset,
                                           const int32_t input_2_mult,
                                           const int32_t input_2_shift,
                                           const int32_t left_shift,
                                           int8_t *output,
                                           const int32_t out_offset,
                                           const int32_t out_mult,
                                           const int32_t out_shift,
                                           const int32_t out_activation_min,
                                           const int32_t out_activation_max,
                                           const int32_t block_size);

/* Average pool; padding positions are not counted. ctx->buf (optional, may be NULL) of
 * arm_avgpool_s8_get_buffer_size() bytes lets all channels accumulate in one pass. */
arm_cmsis_nn_status arm_avgpool_s8(const cmsis_nn_context *ctx,
                                   const cmsis_nn_pool_params *pool_params,
                                   const cmsis_nn_dims *input_dims,
                                   const int8_t *input_data,
                                   const cmsis_nn_dims *filter_dims,
                                   const cmsis_nn_dims *output_dims,
                                   int8_t *output_data);
int32_t arm_avgpool_s8_get_buffer_size(const int dim_dst_width, const int ch_src);

/* Fully connected, per-tensor requantization; filter [C_OUT, N] row major with filter_dims->n =
 * accumulation depth and output_dims->c = C_OUT. No buffer needed. */
arm_cmsis_nn_status arm_fully_connected_s8(const cmsis_nn_context *ctx,
                                           const cmsis_nn_fc_params *fc_params,
                                           const cmsis_nn_per_tensor_quant_params *quant_params,
                                           const cmsis_nn_dims *input_dims,
                                           const int8_t *input_data,
                                           const cmsis_nn_dims *filter_dims,
                                           const int8_t *filter_data,
                                           const cmsis_nn_dims *bias_dims,
                                           const int32_t *bias_data,
                                           const cmsis_nn_dims *output_dims,
                                           int8_t *output_data);
int32_t arm_fully_connected_s8_get_buffer_size(const cmsis_nn_dims *filter_dims);

/* Fully connected with one multiplier/shift per output row (TFLite's per-channel FULLY_CONNECTED);
 * otherwise as arm_fully_connected_s8 (buffer: arm_fully_connected_s8_get_buffer_size). */
arm_cmsis_nn_status arm_fully_connected_per_channel_s8(const cmsis_nn_context *ctx,
                                                       const cmsis_nn_fc_params *fc_params,
                                                       const cmsis_nn_per_channel_quant_params *quant_params,
                                                       const cmsis_nn_dims *input_dims,
                                                       const int8_t *input_data,
                                                       const cmsis_nn_dims *filter_dims,
                                                       const int8_t *filter_data,
                                                       const cmsis_nn_dims *bias_dims,
                                                       const int32_t *bias_data,
                                                       const cmsis_nn_dims *output_dims,
                                                       int8_t *output_data);

/* Max pool (TFLite MAX_POOL_2D): the largest value over the window's positions inside the input
 * (padding positions are skipped), then the activation clamp; input and output share scale and
 * zero point. No buffer needed (ctx unused). The input must not overlap the output. A window
 * entirely in the padding returns ARM_CMSIS_NN_ARG_ERROR (ARM's leaves that output unwritten). */
arm_cmsis_nn_status arm_max_pool_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_pool_params *pool_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data);

#ifdef __cplusplus
}
#endif

#endif /* TINYDET_USE_CMSIS_NN */

/* ---- neck kernels with no CMSIS-NN counterpart (bundled in every build, same conventions) --------
 * nn_upsample.c, nn_concat.c; tinydet.quant.kernels.upsample_nearest_s8 / concat_s8 are their numpy
 * twins. Inputs and outputs must not overlap. */
#ifdef __cplusplus
extern "C" {
#endif

/* Nearest-neighbour upsampling by integer factors (TFLite RESIZE_NEAREST_NEIGHBOR, ONNX Resize
 * nearest): out[y][x] = in[y / scale->h][x / scale->w], values (scale, zero point) unchanged.
 * output_dims must be {n, h * scale->h, w * scale->w, c}, else ARM_CMSIS_NN_ARG_ERROR. */
arm_cmsis_nn_status tinydet_upsample_nearest_s8(const cmsis_nn_tile *scale,
                                                const cmsis_nn_dims *input_dims,
                                                const int8_t *input_data,
                                                const cmsis_nn_dims *output_dims,
                                                int8_t *output_data);

/* One input of a channel concatenation and its requantization into the output's parameters
 * (tinydet.quant.kernels.Requant): copied when copy != 0, else
 * clamp(requantize(q + input_offset, mult, shift) + output_offset) -- TFLite's QUANTIZE int8 -> int8,
 * which the converter puts before every CONCATENATION input whose parameters differ. */
typedef struct
{
    int32_t channels;
    int32_t input_offset; /* -input zero point */
    int32_t mult, shift;  /* Q31 multiplier and shift of input scale / output scale */
    int32_t output_offset; /* +output zero point */
    int32_t copy;
} tinydet_concat_part;

/* Channel concatenation of num_inputs NHWC int8 tensors input_data[i] ([n, h, w, parts[i].channels])
 * into output_dims ([n, h, w, sum of the channels]); ARM_CMSIS_NN_ARG_ERROR when the channels do not
 * add up. */
arm_cmsis_nn_status tinydet_concat_s8(int32_t num_inputs,
                                      const int8_t *const *input_data,
                                      const tinydet_concat_part *parts,
                                      const cmsis_nn_dims *output_dims,
                                      int8_t *output_data);

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_NN_H */
