/*
 * Bundled arm_depthwise_conv_s8 / arm_depthwise_conv_wrapper_s8.
 *
 * ch_mult 1 (every depthwise layer of MobileNet-style networks), kernels up to 9x9: the fast rows
 * of nn_dw_fast.c (blocks of 4 channels, interior and border columns apart, SXTB16 + SMLABB/SMLATT;
 * 3x3 layers through one asm window per pixel, borders included).
 * ch_mult > 1 and dilation use the plain loop of nn_dw_plain.c.
 */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

arm_cmsis_nn_status arm_depthwise_conv_s8(const cmsis_nn_context *ctx,
                                          const cmsis_nn_dw_conv_params *p,
                                          const cmsis_nn_per_channel_quant_params *q,
                                          const cmsis_nn_dims *in_d,
                                          const int8_t *in,
                                          const cmsis_nn_dims *f_d,
                                          const int8_t *w,
                                          const cmsis_nn_dims *bias_dims,
                                          const int32_t *bias,
                                          const cmsis_nn_dims *out_d,
                                          int8_t *out)
{
    if (p->ch_mult < 1 || out_d->c != in_d->c * p->ch_mult || f_d->c != out_d->c)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    if (p->ch_mult != 1 || tdn_dilation(p->dilation.h) != 1 || tdn_dilation(p->dilation.w) != 1 ||
        f_d->h * f_d->w > TDN_DW_MAX_TAPS)
    {
        return tdn_dw_plain(ctx, p, q, in_d, in, f_d, w, bias_dims, bias, out_d, out);
    }
    const int32_t in_image = in_d->h * in_d->w * in_d->c, out_image = out_d->h * out_d->w * out_d->c;
    for (int32_t b = 0; b < in_d->n; b++)
    {
        tdn_dw_geo g;
        tdn_dw_geometry(&g, p, q, in_d, in + b * in_image, f_d, out_d);
        tdn_dw_fast(&g, w, bias, q, out + b * out_image);
    }
    return ARM_CMSIS_NN_SUCCESS;
}

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
                                                  int8_t *output_data)
{
    return arm_depthwise_conv_s8(ctx, dw_conv_params, quant_params, input_dims, input_data, filter_dims,
                                 filter_data, bias_dims, bias_data, output_dims, output_data);
}

int32_t arm_depthwise_conv_wrapper_s8_get_buffer_size(const cmsis_nn_dw_conv_params *dw_conv_params,
                                                      const cmsis_nn_dims *input_dims,
                                                      const cmsis_nn_dims *filter_dims,
                                                      const cmsis_nn_dims *output_dims)
{
    (void)dw_conv_params;
    (void)input_dims;
    (void)filter_dims;
    (void)output_dims;
    return 0;
}

#endif /* !TINYDET_USE_CMSIS_NN */
