/* Bundled arm_max_pool_s8 (CMSIS-NN API; TFLite MAX_POOL_2D): with CMSIS_NN_ROOT the build links
 * ARM's instead and this file compiles to nothing. */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

/* dst[i] = max(dst[i], src[i]) over n channels. */
static void tdn_max_into(int8_t *dst, const int8_t *src, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
    {
        if (src[i] > dst[i])
        {
            dst[i] = src[i];
        }
    }
}

arm_cmsis_nn_status arm_max_pool_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_pool_params *pool_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data)
{
    (void)ctx;
    const int32_t ih = input_dims->h, iw = input_dims->w, c = input_dims->c;
    const int32_t amin = pool_params->activation.min, amax = pool_params->activation.max;
    if (input_dims->n < 1 || output_dims->c != c)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const int8_t *img = input_data + b * ih * iw * c;
        for (int32_t oy = 0; oy < output_dims->h; oy++)
        {
            const tdn_window ky =
                tdn_window_at(oy, pool_params->stride.h, pool_params->padding.h, filter_dims->h, ih);
            for (int32_t ox = 0; ox < output_dims->w; ox++)
            {
                const tdn_window kx =
                    tdn_window_at(ox, pool_params->stride.w, pool_params->padding.w, filter_dims->w, iw);
                if (ky.hi <= ky.lo || kx.hi <= kx.lo)
                {
                    return ARM_CMSIS_NN_ARG_ERROR; /* window entirely in the padding: no value to take */
                }
                /* padding positions are skipped (never a value): the first tap inside the input
                 * starts the maximum, the others raise it, all channels of a pixel at once */
                memcpy(output_data, img + ((ky.start + ky.lo) * iw + kx.start + kx.lo) * c, (size_t)c);
                for (int32_t ty = ky.lo; ty < ky.hi; ty++)
                {
                    for (int32_t tx = ty == ky.lo ? kx.lo + 1 : kx.lo; tx < kx.hi; tx++)
                    {
                        tdn_max_into(output_data, img + ((ky.start + ty) * iw + kx.start + tx) * c, c);
                    }
                }
                for (int32_t ch = 0; ch < c; ch++)
                {
                    output_data[ch] = (int8_t)tdn_clamp(output_data[ch], amin, amax);
                }
                output_data += c;
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

#endif /* !TINYDET_USE_CMSIS_NN */
