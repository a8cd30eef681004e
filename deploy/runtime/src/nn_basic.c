/* Bundled arm_elementwise_add_s8, arm_avgpool_s8, arm_fully_connected_s8 (+ buffer sizes). */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

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
                                           const int32_t block_size)
{
    /* the three requantizations' shift splits once per call (tdn_add_s8 is the per-element oracle) */
    const tdn_rq q1 = tdn_rq_make(input_1_mult, input_1_shift), q2 = tdn_rq_make(input_2_mult, input_2_shift);
    const tdn_rq qo = tdn_rq_make(out_mult, out_shift);
    if (tdn_rq_full_layer(&out_shift, 1, out_activation_min, out_activation_max))
    {
        /* the common case: one saturate for the output (tdn_rq_s8_full) */
        for (int32_t i = 0; i < block_size; i++)
        {
            output[i] = tdn_add_rq_s8(input_1_vect[i], input_2_vect[i], input_1_offset, &q1, input_2_offset, &q2,
                                      left_shift, out_offset, &qo, -128, 127, 1);
        }
        return ARM_CMSIS_NN_SUCCESS;
    }
    for (int32_t i = 0; i < block_size; i++)
    {
        output[i] = tdn_add_rq_s8(input_1_vect[i], input_2_vect[i], input_1_offset, &q1, input_2_offset, &q2,
                                  left_shift, out_offset, &qo, out_activation_min, out_activation_max, 0);
    }
    return ARM_CMSIS_NN_SUCCESS;
}

int32_t arm_avgpool_s8_get_buffer_size(const int dim_dst_width, const int ch_src)
{
    (void)dim_dst_width;
    return ch_src * (int32_t)sizeof(int32_t);
}

arm_cmsis_nn_status arm_avgpool_s8(const cmsis_nn_context *ctx,
                                   const cmsis_nn_pool_params *pool_params,
                                   const cmsis_nn_dims *input_dims,
                                   const int8_t *input_data,
                                   const cmsis_nn_dims *filter_dims,
                                   const cmsis_nn_dims *output_dims,
                                   int8_t *output_data)
{
    const int32_t ih = input_dims->h, iw = input_dims->w, c = input_dims->c;
    const int32_t kh = filter_dims->h, kw = filter_dims->w;
    const int32_t amin = pool_params->activation.min, amax = pool_params->activation.max;
    int32_t *sums = (ctx != NULL && ctx->buf != NULL) ? (int32_t *)ctx->buf : NULL;
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const int8_t *img = input_data + b * ih * iw * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++)
        {
            const tdn_window ky = tdn_window_at(oy, pool_params->stride.h, pool_params->padding.h, kh, ih);
            for (int32_t ox = 0; ox < output_dims->w; ox++)
            {
                const tdn_window kx = tdn_window_at(ox, pool_params->stride.w, pool_params->padding.w, kw, iw);
                const int32_t count = (ky.hi - ky.lo) * (kx.hi - kx.lo);
                if (ky.hi <= ky.lo || kx.hi <= kx.lo)
                {
                    return ARM_CMSIS_NN_ARG_ERROR; /* window entirely outside the input */
                }
                if (sums != NULL)
                {
                    /* all channels in one pass over the window: contiguous NHWC reads */
                    memset(sums, 0, (size_t)c * sizeof(int32_t));
                    for (int32_t ty = ky.lo; ty < ky.hi; ty++)
                    {
                        for (int32_t tx = kx.lo; tx < kx.hi; tx++)
                        {
                            const int8_t *px = img + ((ky.start + ty) * iw + kx.start + tx) * c;
                            for (int32_t ch = 0; ch < c; ch++)
                            {
                                sums[ch] += px[ch];
                            }
                        }
                    }
                    for (int32_t ch = 0; ch < c; ch++)
                    {
                        *output_data++ = tdn_avg_s8(sums[ch], count, amin, amax);
                    }
                }
                else
                {
                    for (int32_t ch = 0; ch < c; ch++)
                    {
                        int32_t sum = 0;
                        for (int32_t ty = ky.lo; ty < ky.hi; ty++)
                        {
                            for (int32_t tx = kx.lo; tx < kx.hi; tx++)
                            {
                                sum += img[((ky.start + ty) * iw + kx.start + tx) * c + ch];
                            }
                        }
                        *output_data++ = tdn_avg_s8(sum, count, amin, amax);
                    }
                }
            }
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
    const int32_t depth = filter_dims->n, rows = output_dims->c;
    const int32_t in_off = fc_params->input_offset, w_off = fc_params->filter_offset;
    const tdn_rq rq = tdn_rq_make(quant_params->multiplier, quant_params->shift);
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const int8_t *x = input_data + b * depth;
        for (int32_t r = 0; r < rows; r++)
        {
            const int8_t *w = filter_data + r * depth;
            /* sum (x + xo)(w + wo) = sum x*w + xo*sum w + wo*sum x + n*xo*wo: the inner loop only
             * multiplies raw int8 values, the offsets are applied once per row */
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
            int32_t acc = (int32_t)((uint32_t)xw + (uint32_t)(in_off * sw) + (uint32_t)(w_off * sx) +
                                    (uint32_t)(depth * in_off * w_off));
            if (bias_data)
            {
                acc = (int32_t)((uint32_t)acc + (uint32_t)bias_data[r]);
            }
            *output_data++ = tdn_rq_s8(acc, &rq, fc_params->output_offset, fc_params->activation.min,
                                       fc_params->activation.max);
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

#endif /* !TINYDET_USE_CMSIS_NN */
