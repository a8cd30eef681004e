/* Fully connected layers.
 *
 * Bundled (without TINYDET_USE_CMSIS_NN): arm_fully_connected_s8 (per-tensor requantization) and
 * arm_fully_connected_per_channel_s8 (one multiplier/shift per output row), one accumulation loop.
 * Every build: tinydet_fully_connected_s8, the classifier's layer as the executor calls it, over
 * either library's arm_fully_connected_per_channel_s8 (filter [C_out][depth] row major,
 * filter_offset 0: symmetric weights, TFLite's per-channel FULLY_CONNECTED). */
#include <stddef.h>

#include "tinydet_runtime.h"

#if !defined(TINYDET_USE_CMSIS_NN)

#include "nn_internal.h"

/* bias[r] + sum_i (x[i] + in_off) * (w[i] + w_off) of one filter row, in int32 (wrapping as ARM's):
 * sum (x + xo)(w + wo) = sum x*w + xo*sum w + wo*sum x + n*xo*wo, so the inner loop only multiplies
 * raw int8 values and the offsets are applied once per row. */
static int32_t tdn_fc_row(const int8_t *x, const int8_t *w, int32_t depth, int32_t in_off, int32_t w_off,
                          const int32_t *bias, int32_t r)
{
    int32_t xw = 0, sw = 0, sx = 0;
    int32_t i = 0;
#if TDN_DSP
    const tdn_s16x4 ones = {0x00010001, 0x00010001};
    for (; i + 4 <= depth; i += 4)
    {
        const tdn_s16x4 xv = tdn_widen_s8x4(tdn_read_u32(x + i)), wv = tdn_widen_s8x4(tdn_read_u32(w + i));
        xw = tdn_dot4(xv, wv, xw);
        sw = tdn_dot4(wv, ones, sw);
        sx = tdn_dot4(xv, ones, sx);
    }
#else
    for (; i + 4 <= depth; i += 4)
    {
        xw += x[i] * w[i] + x[i + 1] * w[i + 1] + x[i + 2] * w[i + 2] + x[i + 3] * w[i + 3];
        sw += w[i] + w[i + 1] + w[i + 2] + w[i + 3];
        sx += x[i] + x[i + 1] + x[i + 2] + x[i + 3];
    }
#endif
    for (; i < depth; i++)
    {
        xw += x[i] * w[i];
        sw += w[i];
        sx += x[i];
    }
    const uint32_t acc = (uint32_t)xw + (uint32_t)(in_off * sw) + (uint32_t)(w_off * sx) +
                         (uint32_t)(depth * in_off * w_off);
    return (int32_t)(bias != NULL ? acc + (uint32_t)bias[r] : acc);
}

/* Both bundled kernels: mult/shift hold one value (per_channel 0) or one per output row. */
static arm_cmsis_nn_status tdn_fc(const cmsis_nn_fc_params *fc_params, const int32_t *mult, const int32_t *shift,
                                  int32_t per_channel, const cmsis_nn_dims *input_dims, const int8_t *input_data,
                                  const cmsis_nn_dims *filter_dims, const int8_t *filter_data, const int32_t *bias_data,
                                  const cmsis_nn_dims *output_dims, int8_t *output_data)
{
    const int32_t depth = filter_dims->n, rows = output_dims->c;
    const tdn_rq one = tdn_rq_make(mult[0], shift[0]);
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const int8_t *x = input_data + b * depth;
        for (int32_t r = 0; r < rows; r++)
        {
            const int32_t acc = tdn_fc_row(x, filter_data + r * depth, depth, fc_params->input_offset,
                                           fc_params->filter_offset, bias_data, r);
            const tdn_rq rq = per_channel ? tdn_rq_make(mult[r], shift[r]) : one;
            *output_data++ = tdn_rq_s8(acc, &rq, fc_params->output_offset, fc_params->activation.min,
                                       fc_params->activation.max);
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

int32_t arm_fully_connected_s8_get_buffer_size(const cmsis_nn_dims *filter_dims)
{
    (void)filter_dims;
    return 0;
}

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
                                           int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    return tdn_fc(fc_params, &quant_params->multiplier, &quant_params->shift, 0, input_dims, input_data, filter_dims,
                  filter_data, bias_data, output_dims, output_data);
}

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
                                                       int8_t *output_data)
{
    (void)ctx;
    (void)bias_dims;
    return tdn_fc(fc_params, quant_params->multiplier, quant_params->shift, 1, input_dims, input_data, filter_dims,
                  filter_data, bias_data, output_dims, output_data);
}

#endif /* !TINYDET_USE_CMSIS_NN */

int32_t tinydet_fully_connected_s8_get_buffer_size(int32_t depth, int32_t out_channels)
{
    /* ARM sizes the per-channel kernel's buffer with the same function (kernel sums on Helium) */
    const cmsis_nn_dims filter_dims = {depth, 1, 1, out_channels};
    return arm_fully_connected_s8_get_buffer_size(&filter_dims);
}

arm_cmsis_nn_status tinydet_fully_connected_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_fc_params *fc_params,
                                               const cmsis_nn_per_channel_quant_params *quant_params,
                                               int32_t depth,
                                               int32_t out_channels,
                                               const int8_t *input_data,
                                               const int8_t *filter_data,
                                               const int32_t *bias_data,
                                               int8_t *output_data)
{
    const int32_t need = tinydet_fully_connected_s8_get_buffer_size(depth, out_channels);
    if (depth < 1 || out_channels < 1 || fc_params->filter_offset != 0 || ctx->size < need)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const cmsis_nn_dims input_dims = {1, 1, 1, depth};
    const cmsis_nn_dims filter_dims = {depth, 1, 1, out_channels};
    const cmsis_nn_dims bias_dims = {1, 1, 1, out_channels};
    const cmsis_nn_dims output_dims = {1, 1, 1, out_channels};
    const cmsis_nn_context buf = {need > 0 ? ctx->buf : NULL, need};
#if defined(TINYDET_USE_CMSIS_NN)
    if (need > 0)
    {
        /* ARM's contract where the kernel takes a buffer (Helium builds): the per-row weight sums
         * times the input offset, plus the bias, precomputed by arm_vector_sum_s8 */
        const arm_cmsis_nn_status st = arm_vector_sum_s8((int32_t *)ctx->buf, depth, out_channels, filter_data,
                                                         fc_params->input_offset, fc_params->filter_offset, bias_data);
        if (st != ARM_CMSIS_NN_SUCCESS)
        {
            return st;
        }
    }
#endif
    return arm_fully_connected_per_channel_s8(&buf, fc_params, quant_params, &input_dims, input_data, &filter_dims,
                                              filter_data, &bias_dims, bias_data, &output_dims, output_data);
}
