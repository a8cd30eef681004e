/* The plain depthwise loop shared by ref_arm_depthwise_conv_s8 and the bundled kernel's general path
 * (declared in nn_internal.h). A function of its own, compiled in every build (also with
 * -DTINYDET_USE_CMSIS_NN, where the ref_ kernels still use it), so that both callers run exactly
 * this code. */
#include "nn_internal.h"

arm_cmsis_nn_status tdn_dw_plain(const cmsis_nn_context *ctx, const cmsis_nn_dw_conv_params *p,
                                 const cmsis_nn_per_channel_quant_params *q, const cmsis_nn_dims *in_d,
                                 const int8_t *in, const cmsis_nn_dims *f_d, const int8_t *w,
                                 const cmsis_nn_dims *bias_dims, const int32_t *bias, const cmsis_nn_dims *out_d,
                                 int8_t *out)
{
    (void)ctx;
    (void)bias_dims;
    const int32_t dh = tdn_dilation(p->dilation.h), dw = tdn_dilation(p->dilation.w);
    for (int32_t b = 0; b < in_d->n; b++)
        for (int32_t oy = 0; oy < out_d->h; oy++)
            for (int32_t ox = 0; ox < out_d->w; ox++)
                for (int32_t oc = 0; oc < out_d->c; oc++)
                {
                    const int32_t ic = oc / p->ch_mult;
                    int32_t acc = bias ? bias[oc] : 0;
                    for (int32_t ky = 0; ky < f_d->h; ky++)
                        for (int32_t kx = 0; kx < f_d->w; kx++)
                        {
                            const int32_t iy = oy * p->stride.h - p->padding.h + ky * dh;
                            const int32_t ix = ox * p->stride.w - p->padding.w + kx * dw;
                            if (iy < 0 || iy >= in_d->h || ix < 0 || ix >= in_d->w)
                                continue;
                            acc += (in[((b * in_d->h + iy) * in_d->w + ix) * in_d->c + ic] + p->input_offset) *
                                   w[(ky * f_d->w + kx) * out_d->c + oc];
                        }
                    out[((b * out_d->h + oy) * out_d->w + ox) * out_d->c + oc] =
                        tdn_requantize_s8(acc, q->multiplier[oc], q->shift[oc], p->output_offset, p->activation.min,
                                          p->activation.max);
                }
    return ARM_CMSIS_NN_SUCCESS;
}
