/*
 * Bundled arm_depthwise_conv_s8 / arm_depthwise_conv_wrapper_s8.
 *
 * ch_mult 1 (every depthwise layer of MobileNet-style networks), kernels up to 7x7: channels are
 * processed in blocks of 4 (outermost loop), so a block's weights are sign-extended once into a
 * small stack array and its bias, multipliers and shifts stay in registers over the whole output
 * map. Windows fully inside the input use sum (x + off) * w = sum x * w + off * sum w (the second
 * term folded into the bias once per block), so the tap loop is: one 32-bit load of 4 input bytes,
 * two SXTB16 and four SMLABB/SMLATT with the DSP extension (4 plain MACs without). Border windows
 * visit only their in-range taps. ch_mult > 1, dilation and larger kernels use a general loop.
 */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

/* kernels up to 7x7 take the fast path (its packed weights live on the stack: 8 bytes per tap) */
#define TDN_DW_MAX_TAPS 49

#if TDN_DSP
/* One tap of a 4-channel block: the 4 input bytes at ptr (LDR, 2 SXTB16) times the tap's packed
 * weights wp[2t] (channels 0, 2) and wp[2t + 1] (channels 1, 3), accumulated into a0..a3. */
#define TDN_DW_TAP(t, ptr)                                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        const tdn_s16x4 x = tdn_widen_s8x4(tdn_read_u32(ptr));                                                         \
        a0 = __smlabb(x.even, wp[2 * (t)], a0);                                                                        \
        a2 = __smlatt(x.even, wp[2 * (t)], a2);                                                                        \
        a1 = __smlabb(x.odd, wp[2 * (t) + 1], a1);                                                                     \
        a3 = __smlatt(x.odd, wp[2 * (t) + 1], a3);                                                                     \
    } while (0)
#endif

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
    const int32_t c = in_d->c, kh = f_d->h, kw = f_d->w, ih = in_d->h, iw = in_d->w;
    const int32_t taps = kh * kw;
    if (p->ch_mult != 1 || tdn_dilation(p->dilation.h) != 1 || tdn_dilation(p->dilation.w) != 1 ||
        taps > TDN_DW_MAX_TAPS)
    {
        return tdn_dw_plain(ctx, p, q, in_d, in, f_d, w, bias_dims, bias, out_d, out);
    }
    const int32_t row_stride = iw * c;
    const int32_t off = p->input_offset, ooff = p->output_offset;
    const int32_t amin = p->activation.min, amax = p->activation.max;
    const int32_t oh = out_d->h, ow = out_d->w;
#if TDN_DSP
    int32_t wpk[2 * TDN_DW_MAX_TAPS]; /* per tap: SXTB16 of channels (0, 2) and of (1, 3) */
#else
    int32_t wpk[4 * TDN_DW_MAX_TAPS]; /* per tap: the 4 channels' weights */
#endif
    for (int32_t b = 0; b < in_d->n; b++)
    {
        const int8_t *img = in + b * ih * iw * c;
        int8_t *dst = out + b * oh * ow * c;
        int32_t ch = 0;
        /* channel blocks outermost: the block's weights, weight sums and quantization stay in
         * registers / one small stack array for the whole output map */
        for (; ch + 4 <= c; ch += 4)
        {
            int32_t ws0 = 0, ws1 = 0, ws2 = 0, ws3 = 0;
            for (int32_t t = 0; t < taps; t++)
            {
                const int8_t *wt = w + t * c + ch;
                ws0 += wt[0];
                ws1 += wt[1];
                ws2 += wt[2];
                ws3 += wt[3];
#if TDN_DSP
                const tdn_s16x4 wv = tdn_widen_s8x4(tdn_read_u32(wt));
                wpk[2 * t] = wv.even;
                wpk[2 * t + 1] = wv.odd;
#else
                wpk[4 * t] = wt[0];
                wpk[4 * t + 1] = wt[1];
                wpk[4 * t + 2] = wt[2];
                wpk[4 * t + 3] = wt[3];
#endif
            }
            const int32_t b0 = bias ? bias[ch] : 0, b1 = bias ? bias[ch + 1] : 0;
            const int32_t b2 = bias ? bias[ch + 2] : 0, b3 = bias ? bias[ch + 3] : 0;
            /* interior windows: sum (x + off) * w = sum x * w + off * sum w */
            const int32_t i0 = b0 + off * ws0, i1 = b1 + off * ws1, i2 = b2 + off * ws2, i3 = b3 + off * ws3;
            const int32_t m0 = q->multiplier[ch], m1 = q->multiplier[ch + 1];
            const int32_t m2 = q->multiplier[ch + 2], m3 = q->multiplier[ch + 3];
            const int32_t s0 = q->shift[ch], s1 = q->shift[ch + 1], s2 = q->shift[ch + 2], s3 = q->shift[ch + 3];
            for (int32_t oy = 0; oy < oh; oy++)
            {
                const tdn_window ky = tdn_window_at(oy, p->stride.h, p->padding.h, kh, ih);
                for (int32_t ox = 0; ox < ow; ox++)
                {
                    const tdn_window kx = tdn_window_at(ox, p->stride.w, p->padding.w, kw, iw);
                    int32_t a0, a1, a2, a3;
                    if (ky.lo == 0 && kx.lo == 0 && ky.hi == kh && kx.hi == kw)
                    {
                        a0 = i0;
                        a1 = i1;
                        a2 = i2;
                        a3 = i3;
                        const int8_t *src = img + (ky.start * iw + kx.start) * c + ch;
                        const int32_t *wp = wpk;
#if TDN_DSP
                        if (kh == 3 && kw == 3)
                        {
                            /* the common case, fully unrolled */
                            const int8_t *r1 = src + row_stride, *r2 = src + 2 * row_stride;
                            TDN_DW_TAP(0, src);
                            TDN_DW_TAP(1, src + c);
                            TDN_DW_TAP(2, src + 2 * c);
                            TDN_DW_TAP(3, r1);
                            TDN_DW_TAP(4, r1 + c);
                            TDN_DW_TAP(5, r1 + 2 * c);
                            TDN_DW_TAP(6, r2);
                            TDN_DW_TAP(7, r2 + c);
                            TDN_DW_TAP(8, r2 + 2 * c);
                        }
                        else
#endif
                        for (int32_t ty = 0; ty < kh; ty++)
                        {
                            const int8_t *s = src + ty * row_stride;
                            for (int32_t tx = 0; tx < kw; tx++)
                            {
#if TDN_DSP
                                TDN_DW_TAP(0, s);
                                wp += 2;
#else
                                a0 += s[0] * wp[0];
                                a1 += s[1] * wp[1];
                                a2 += s[2] * wp[2];
                                a3 += s[3] * wp[3];
                                wp += 4;
#endif
                                s += c;
                            }
                        }
                    }
                    else
                    {
                        /* border window: only the taps inside the input, offset added per tap */
                        a0 = b0;
                        a1 = b1;
                        a2 = b2;
                        a3 = b3;
                        for (int32_t ty = ky.lo; ty < ky.hi; ty++)
                        {
                            for (int32_t tx = kx.lo; tx < kx.hi; tx++)
                            {
                                const int8_t *s = img + ((ky.start + ty) * iw + kx.start + tx) * c + ch;
                                const int8_t *wt = w + (ty * kw + tx) * c + ch;
                                a0 += (s[0] + off) * wt[0];
                                a1 += (s[1] + off) * wt[1];
                                a2 += (s[2] + off) * wt[2];
                                a3 += (s[3] + off) * wt[3];
                            }
                        }
                    }
                    int8_t *o = dst + (oy * ow + ox) * c + ch;
                    o[0] = tdn_requantize_s8(a0, m0, s0, ooff, amin, amax);
                    o[1] = tdn_requantize_s8(a1, m1, s1, ooff, amin, amax);
                    o[2] = tdn_requantize_s8(a2, m2, s2, ooff, amin, amax);
                    o[3] = tdn_requantize_s8(a3, m3, s3, ooff, amin, amax);
                }
            }
        }
        /* remaining channels (C not a multiple of 4): one at a time, in-range taps only */
        for (; ch < c; ch++)
        {
            const int32_t bc = bias ? bias[ch] : 0;
            for (int32_t oy = 0; oy < oh; oy++)
            {
                const tdn_window ky = tdn_window_at(oy, p->stride.h, p->padding.h, kh, ih);
                for (int32_t ox = 0; ox < ow; ox++)
                {
                    const tdn_window kx = tdn_window_at(ox, p->stride.w, p->padding.w, kw, iw);
                    /* may point outside the image for border windows; only in-range taps are read */
                    const int8_t *src =
                        (const int8_t *)((uintptr_t)img + (uintptr_t)((ky.start * (intptr_t)iw + kx.start) * c + ch));
                    const int32_t acc =
                        bc + tdn_dw1_window(src, row_stride, c, w + ch, kw * c, c, ky.lo, ky.hi, kx.lo, kx.hi, off);
                    dst[(oy * ow + ox) * c + ch] =
                        tdn_requantize_s8(acc, q->multiplier[ch], q->shift[ch], ooff, amin, amax);
                }
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
