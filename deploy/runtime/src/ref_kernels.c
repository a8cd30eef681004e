/* Plain reference loops (see include/ref_kernels.h): one output element at a time, no unrolling,
 * no SIMD, bounds checked per tap. Semantics identical to the optimised kernels; the per-element
 * arithmetic (requantization, add, average) and the plain depthwise loop are nn_internal.h's, shared
 * with the bundled kernels. */
#include "ref_kernels.h"
#include "nn_internal.h"

arm_cmsis_nn_status ref_arm_convolve_s8(const cmsis_nn_context *ctx,
                                        const cmsis_nn_conv_params *p,
                                        const cmsis_nn_per_channel_quant_params *q,
                                        const cmsis_nn_dims *in_d,
                                        const int8_t *in,
                                        const cmsis_nn_dims *f_d,
                                        const int8_t *w,
                                        const cmsis_nn_dims *bias_dims,
                                        const int32_t *bias,
                                        const cmsis_nn_dims *upscale_dims,
                                        const cmsis_nn_dims *out_d,
                                        int8_t *out)
{
    (void)ctx;
    (void)bias_dims;
    (void)upscale_dims;
    const int32_t dh = tdn_dilation(p->dilation.h), dw = tdn_dilation(p->dilation.w);
    for (int32_t b = 0; b < in_d->n; b++)
        for (int32_t oy = 0; oy < out_d->h; oy++)
            for (int32_t ox = 0; ox < out_d->w; ox++)
                for (int32_t oc = 0; oc < out_d->c; oc++)
                {
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = 0; ky < f_d->h; ky++)
                        for (int32_t kx = 0; kx < f_d->w; kx++)
                        {
                            const int32_t iy = oy * p->stride.h - p->padding.h + ky * dh;
                            const int32_t ix = ox * p->stride.w - p->padding.w + kx * dw;
                            if (iy < 0 || iy >= in_d->h || ix < 0 || ix >= in_d->w)
                                continue;
                            for (int32_t ic = 0; ic < in_d->c; ic++)
                                acc += (in[((b * in_d->h + iy) * in_d->w + ix) * in_d->c + ic] + p->input_offset) *
                                       w[((oc * f_d->h + ky) * f_d->w + kx) * f_d->c + ic];
                        }
                    out[((b * out_d->h + oy) * out_d->w + ox) * out_d->c + oc] =
                        tdn_requantize_s8(acc, q->multiplier[oc], q->shift[oc], p->output_offset, p->activation.min,
                                          p->activation.max);
                }
    return ARM_CMSIS_NN_SUCCESS;
}

arm_cmsis_nn_status ref_arm_depthwise_conv_s8(const cmsis_nn_context *ctx,
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
    return tdn_dw_plain(ctx, p, q, in_d, in, f_d, w, bias_dims, bias, out_d, out);
}

arm_cmsis_nn_status ref_arm_avgpool_s8(const cmsis_nn_context *ctx,
                                       const cmsis_nn_pool_params *p,
                                       const cmsis_nn_dims *in_d,
                                       const int8_t *in,
                                       const cmsis_nn_dims *f_d,
                                       const cmsis_nn_dims *out_d,
                                       int8_t *out)
{
    (void)ctx;
    for (int32_t b = 0; b < in_d->n; b++)
        for (int32_t oy = 0; oy < out_d->h; oy++)
            for (int32_t ox = 0; ox < out_d->w; ox++)
                for (int32_t c = 0; c < in_d->c; c++)
                {
                    int32_t sum = 0, count = 0;
                    for (int32_t ky = 0; ky < f_d->h; ky++)
                        for (int32_t kx = 0; kx < f_d->w; kx++)
                        {
                            const int32_t iy = oy * p->stride.h - p->padding.h + ky;
                            const int32_t ix = ox * p->stride.w - p->padding.w + kx;
                            if (iy < 0 || iy >= in_d->h || ix < 0 || ix >= in_d->w)
                                continue;
                            sum += in[((b * in_d->h + iy) * in_d->w + ix) * in_d->c + c];
                            count++;
                        }
                    if (count == 0)
                        return ARM_CMSIS_NN_ARG_ERROR;
                    out[((b * out_d->h + oy) * out_d->w + ox) * in_d->c + c] =
                        tdn_avg_s8(sum, count, p->activation.min, p->activation.max);
                }
    return ARM_CMSIS_NN_SUCCESS;
}

arm_cmsis_nn_status ref_arm_fully_connected_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_fc_params *p,
                                               const cmsis_nn_per_tensor_quant_params *q,
                                               const cmsis_nn_dims *in_d,
                                               const int8_t *in,
                                               const cmsis_nn_dims *f_d,
                                               const int8_t *w,
                                               const cmsis_nn_dims *bias_dims,
                                               const int32_t *bias,
                                               const cmsis_nn_dims *out_d,
                                               int8_t *out)
{
    (void)ctx;
    (void)bias_dims;
    for (int32_t b = 0; b < in_d->n; b++)
        for (int32_t r = 0; r < out_d->c; r++)
        {
            int32_t acc = bias ? bias[r] : 0;
            for (int32_t i = 0; i < f_d->n; i++)
                acc += (in[b * f_d->n + i] + p->input_offset) * (w[r * f_d->n + i] + p->filter_offset);
            out[b * out_d->c + r] = tdn_requantize_s8(acc, q->multiplier, q->shift, p->output_offset,
                                                      p->activation.min, p->activation.max);
        }
    return ARM_CMSIS_NN_SUCCESS;
}
