/* The classifier's fully connected layer through arm_fully_connected_s8 (bundled or ARM's):
 * per-tensor requantization, filter [C_out][depth] row major, filter_offset 0 (symmetric weights). */
#include <stddef.h>

#include "tinydet_runtime.h"

int32_t tinydet_fully_connected_s8_get_buffer_size(int32_t depth, int32_t out_channels)
{
    const cmsis_nn_dims filter_dims = {depth, 1, 1, out_channels};
    return arm_fully_connected_s8_get_buffer_size(&filter_dims);
}

arm_cmsis_nn_status tinydet_fully_connected_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_fc_params *fc_params,
                                               const cmsis_nn_per_tensor_quant_params *quant_params,
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
    return arm_fully_connected_s8(&buf, fc_params, quant_params, &input_dims, input_data, &filter_dims, filter_data,
                                  &bias_dims, bias_data, &output_dims, output_data);
}
