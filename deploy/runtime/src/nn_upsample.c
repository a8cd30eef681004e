/* tinydet_upsample_nearest_s8: nearest-neighbour upsampling by integer factors (no CMSIS-NN
 * counterpart; bundled in every build). */
#include <string.h>

#include "tinydet_nn.h"

arm_cmsis_nn_status tinydet_upsample_nearest_s8(const cmsis_nn_tile *scale,
                                                const cmsis_nn_dims *input_dims,
                                                const int8_t *input_data,
                                                const cmsis_nn_dims *output_dims,
                                                int8_t *output_data)
{
    const int32_t sh = scale->h, sw = scale->w;
    const int32_t ih = input_dims->h, iw = input_dims->w, c = input_dims->c;
    if (sh < 1 || sw < 1 || output_dims->h != ih * sh || output_dims->w != iw * sw || output_dims->c != c ||
        output_dims->n != input_dims->n)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const size_t pixel = (size_t)c, out_row = (size_t)iw * (size_t)sw * pixel;
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const int8_t *src = input_data + (size_t)b * (size_t)ih * (size_t)iw * pixel;
        int8_t *dst = output_data + (size_t)b * (size_t)ih * (size_t)sh * out_row;
        for (int32_t y = 0; y < ih; y++)
        {
            /* one output row: every input pixel sw times, then that row sh - 1 more times */
            int8_t *row = dst + (size_t)y * (size_t)sh * out_row;
            for (int32_t x = 0; x < iw; x++)
            {
                for (int32_t r = 0; r < sw; r++)
                {
                    memcpy(row + ((size_t)x * (size_t)sw + (size_t)r) * pixel, src + ((size_t)y * (size_t)iw + (size_t)x) * pixel,
                           pixel);
                }
            }
            for (int32_t r = 1; r < sh; r++)
            {
                memcpy(row + (size_t)r * out_row, row, out_row);
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}
