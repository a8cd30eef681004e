/*
 * ref_kernels.h - straightforward reference C loops with the same API as tinydet_nn.h, prefixed
 * ref_. Used only by tests and by the benchmark that compares instruction counts of the optimised
 * kernels against a plain implementation; never linked into firmware by the code generator.
 */
#ifndef TINYDET_REF_KERNELS_H
#define TINYDET_REF_KERNELS_H

#include "tinydet_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

arm_cmsis_nn_status ref_arm_convolve_s8(const cmsis_nn_context *ctx,
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
arm_cmsis_nn_status ref_arm_depthwise_conv_s8(const cmsis_nn_context *ctx,
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
arm_cmsis_nn_status ref_arm_avgpool_s8(const cmsis_nn_context *ctx,
                                       const cmsis_nn_pool_params *pool_params,
                                       const cmsis_nn_dims *input_dims,
                                       const int8_t *input_data,
                                       const cmsis_nn_dims *filter_dims,
                                       const cmsis_nn_dims *output_dims,
                                       int8_t *output_data);
arm_cmsis_nn_status ref_arm_fully_connected_s8(const cmsis_nn_context *ctx,
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

#ifdef __cplusplus
}
#endif
#endif
