/* Bundled arm_elementwise_add_s8, arm_avgpool_s8 (+ buffer size); the fully connected kernels are in nn_fc.c. */
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

#endif /* !TINYDET_USE_CMSIS_NN */
