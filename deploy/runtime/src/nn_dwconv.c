/*
 * Bundled arm_depthwise_conv_s8 / arm_depthwise_conv_wrapper_s8.
 *
 * ch_mult 1 (every depthwise layer of MobileNet-style networks): for each output pixel, channels
 * are processed 4 at a time with 4 register accumulators while the window is walked; windows fully
 * inside the input take a bounds-free path whose 3x3/5x5/7x7 instances the compiler unrolls
 * (constant kernel size through an always-inline helper). With the DSP extension 4 input bytes and
 * 4 weight bytes are sign-extended in pairs (SXTB16), the input offset added with one SADD16 and the
 * four products accumulated with SMLABB/SMLATT. ch_mult > 1 uses a plain general loop.
 */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

/* acc[0..3] += sum over the window rows [ky0, ky1) x cols [kx0, kx1) of (in + offset) * w, for 4
 * channels. src points at channel c of input pixel (y0, x0) (the window's top-left, possibly
 * outside the input: only in-range taps are read). */
TDN_INLINE void tdn_dw_window4(const int8_t *src, int32_t row_stride, int32_t pix_stride, const int8_t *w,
                               int32_t w_row_stride, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1,
                               int32_t offset, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
#if TDN_DSP
    const int32_t off2 = (int32_t)(((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16));
#endif
    for (int32_t ky = ky0; ky < ky1; ky++)
    {
        const int8_t *s = src + ky * row_stride;
        const int8_t *k = w + ky * w_row_stride;
        for (int32_t kx = kx0; kx < kx1; kx++)
        {
#if TDN_DSP
            const uint32_t iv = tdn_read_u32(s + kx * pix_stride);
            const uint32_t wv = tdn_read_u32(k + kx * pix_stride);
            const int32_t i02 = __sadd16(__sxtb16(iv), off2);
            const int32_t i13 = __sadd16(__sxtb16(tdn_ror8(iv)), off2);
            const int32_t w02 = __sxtb16(wv);
            const int32_t w13 = __sxtb16(tdn_ror8(wv));
            a0 = __smlabb(i02, w02, a0);
            a2 = __smlatt(i02, w02, a2);
            a1 = __smlabb(i13, w13, a1);
            a3 = __smlatt(i13, w13, a3);
#else
            const int8_t *ip = s + kx * pix_stride;
            const int8_t *wp = k + kx * pix_stride;
            a0 += (ip[0] + offset) * wp[0];
            a1 += (ip[1] + offset) * wp[1];
            a2 += (ip[2] + offset) * wp[2];
            a3 += (ip[3] + offset) * wp[3];
#endif
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

static arm_cmsis_nn_status tdn_dw_general(const cmsis_nn_dw_conv_params *p,
                                          const cmsis_nn_per_channel_quant_params *q,
                                          const cmsis_nn_dims *in_d, const int8_t *in,
                                          const cmsis_nn_dims *f_d, const int8_t *w,
                                          const int32_t *bias, const cmsis_nn_dims *out_d, int8_t *out)
{
    const int32_t cin = in_d->c, mult = p->ch_mult, cout = out_d->c;
    const int32_t dh = p->dilation.h > 0 ? p->dilation.h : 1, dw = p->dilation.w > 0 ? p->dilation.w : 1;
    for (int32_t b = 0; b < in_d->n; b++)
    {
        const int8_t *src = in + b * in_d->h * in_d->w * cin;
        for (int32_t oy = 0; oy < out_d->h; oy++)
        {
            for (int32_t ox = 0; ox < out_d->w; ox++)
            {
                for (int32_t ic = 0; ic < cin; ic++)
                {
                    for (int32_t m = 0; m < mult; m++)
                    {
                        const int32_t oc = ic * mult + m;
                        int32_t acc = bias ? bias[oc] : 0;
                        for (int32_t ky = 0; ky < f_d->h; ky++)
                        {
                            const int32_t iy = oy * p->stride.h - p->padding.h + ky * dh;
                            if (iy < 0 || iy >= in_d->h)
                            {
                                continue;
                            }
                            for (int32_t kx = 0; kx < f_d->w; kx++)
                            {
                                const int32_t ix = ox * p->stride.w - p->padding.w + kx * dw;
                                if (ix < 0 || ix >= in_d->w)
                                {
                                    continue;
                                }
                                acc += (src[(iy * in_d->w + ix) * cin + ic] + p->input_offset) *
                                       w[(ky * f_d->w + kx) * cout + oc];
                            }
                        }
                        acc = tdn_requantize(acc, q->multiplier[oc], q->shift[oc]) + p->output_offset;
                        *out++ = (int8_t)tdn_clamp(acc, p->activation.min, p->activation.max);
                    }
                }
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

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
    (void)ctx;
    (void)bias_dims;
    if (p->ch_mult < 1 || out_d->c != in_d->c * p->ch_mult || f_d->c != out_d->c)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const int32_t dh = p->dilation.h > 0 ? p->dilation.h : 1, dw = p->dilation.w > 0 ? p->dilation.w : 1;
    if (p->ch_mult != 1 || dh != 1 || dw != 1)
    {
        return tdn_dw_general(p, q, in_d, in, f_d, w, bias, out_d, out);
    }
    const int32_t c = in_d->c, kh = f_d->h, kw = f_d->w, ih = in_d->h, iw = in_d->w;
    const int32_t row_stride = iw * c, w_row_stride = kw * c;
    const int32_t off = p->input_offset, ooff = p->output_offset;
    const int32_t amin = p->activation.min, amax = p->activation.max;
    for (int32_t b = 0; b < in_d->n; b++)
    {
        const int8_t *img = in + b * ih * iw * c;
        for (int32_t oy = 0; oy < out_d->h; oy++)
        {
            const int32_t y0 = oy * p->stride.h - p->padding.h;
            const int32_t ky0 = y0 < 0 ? -y0 : 0;
            const int32_t ky1 = y0 + kh > ih ? ih - y0 : kh;
            for (int32_t ox = 0; ox < out_d->w; ox++)
            {
                const int32_t x0 = ox * p->stride.w - p->padding.w;
                const int32_t kx0 = x0 < 0 ? -x0 : 0;
                const int32_t kx1 = x0 + kw > iw ? iw - x0 : kw;
                const int interior = ky0 == 0 && kx0 == 0 && ky1 == kh && kx1 == kw;
                /* pointer arithmetic may point before the image for border windows; only in-range
                 * taps (ky0..ky1, kx0..kx1) are dereferenced */
                const intptr_t base = ((intptr_t)y0 * iw + x0) * c;
                int32_t ch = 0;
                for (; ch + 4 <= c; ch += 4)
                {
                    int32_t acc[4];
                    for (int32_t j = 0; j < 4; j++)
                    {
                        acc[j] = bias ? bias[ch + j] : 0;
                    }
                    const int8_t *src = (const int8_t *)((uintptr_t)img + (uintptr_t)(base + ch));
                    if (interior && kh == 3 && kw == 3)
                    {
                        tdn_dw_window4(src, row_stride, c, w + ch, w_row_stride, 0, 3, 0, 3, off, acc);
                    }
                    else if (interior && kh == 5 && kw == 5)
                    {
                        tdn_dw_window4(src, row_stride, c, w + ch, w_row_stride, 0, 5, 0, 5, off, acc);
                    }
                    else if (interior && kh == 7 && kw == 7)
                    {
                        tdn_dw_window4(src, row_stride, c, w + ch, w_row_stride, 0, 7, 0, 7, off, acc);
                    }
                    else
                    {
                        tdn_dw_window4(src, row_stride, c, w + ch, w_row_stride, ky0, ky1, kx0, kx1, off, acc);
                    }
                    for (int32_t j = 0; j < 4; j++)
                    {
                        const int32_t v = tdn_requantize(acc[j], q->multiplier[ch + j], q->shift[ch + j]) + ooff;
                        out[ch + j] = (int8_t)tdn_clamp(v, amin, amax);
                    }
                }
                for (; ch < c; ch++)
                {
                    int32_t acc = bias ? bias[ch] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++)
                    {
                        for (int32_t kx = kx0; kx < kx1; kx++)
                        {
                            acc += (img[((y0 + ky) * iw + x0 + kx) * c + ch] + off) * w[(ky * kw + kx) * c + ch];
                        }
                    }
                    const int32_t v = tdn_requantize(acc, q->multiplier[ch], q->shift[ch]) + ooff;
                    out[ch] = (int8_t)tdn_clamp(v, amin, amax);
                }
                out += c;
            }
        }
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
