/* The classifier's global average pool through arm_avgpool_s8 (bundled or ARM's): one window
 * covering the whole map, stride 1, no padding, the same scale and zero point in and out. */
#include "tinydet_runtime.h"

int32_t tinydet_global_avgpool_s8_get_buffer_size(int32_t channels)
{
    /* one output pixel; ARM's DSP build needs C int32 sums (tinydet's kernel uses them when given) */
    return arm_avgpool_s8_get_buffer_size(1, channels);
}

arm_cmsis_nn_status tinydet_global_avgpool_s8(const cmsis_nn_context *ctx,
                                              const cmsis_nn_dims *input_dims,
                                              const int8_t *input_data,
                                              const cmsis_nn_activation *activation,
                                              int8_t *output_data)
{
    if (input_dims->n != 1 || input_dims->h < 1 || input_dims->w < 1 || input_dims->c < 1 ||
        ctx->size < tinydet_global_avgpool_s8_get_buffer_size(input_dims->c))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    cmsis_nn_pool_params pool;
    pool.stride.h = 1;
    pool.stride.w = 1;
    pool.padding.h = 0;
    pool.padding.w = 0;
    pool.activation = *activation;
    const cmsis_nn_dims filter_dims = {1, input_dims->h, input_dims->w, 1};
    const cmsis_nn_dims output_dims = {1, 1, 1, input_dims->c};
    return arm_avgpool_s8(ctx, &pool, input_dims, input_data, &filter_dims, &output_dims, output_data);
}
