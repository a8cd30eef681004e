/* tinydet_concat_s8: channel concatenation with per-input requantization (no CMSIS-NN
 * counterpart; bundled in every build). */
#include <string.h>

#include "tinydet_arith.h"
#include "tinydet_nn.h"

arm_cmsis_nn_status tinydet_concat_s8(int32_t num_inputs,
                                      const int8_t *const *input_data,
                                      const tinydet_concat_part *parts,
                                      const cmsis_nn_dims *output_dims,
                                      int8_t *output_data)
{
    const int32_t c_out = output_dims->c;
    const int32_t pixels = output_dims->n * output_dims->h * output_dims->w;
    int32_t c0 = 0;
    for (int32_t i = 0; i < num_inputs; i++)
    {
        c0 += parts[i].channels;
    }
    if (num_inputs < 1 || c0 != c_out)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    /* input by input: its channels go to [c0, c0 + c) of every output pixel */
    c0 = 0;
    for (int32_t i = 0; i < num_inputs; i++)
    {
        const tinydet_concat_part *q = &parts[i];
        const int8_t *src = input_data[i];
        int8_t *dst = output_data + c0;
        if (q->copy)
        {
            for (int32_t p = 0; p < pixels; p++)
            {
                memcpy(dst + (size_t)p * (size_t)c_out, src + (size_t)p * (size_t)q->channels, (size_t)q->channels);
            }
        }
        else
        {
            /* TFLite's QUANTIZE int8 -> int8 (reference_ops::Requantize) into the output's parameters */
            const tdn_rq rq = tdn_rq_make(q->mult, q->shift);
            for (int32_t p = 0; p < pixels; p++)
            {
                for (int32_t ch = 0; ch < q->channels; ch++)
                {
                    dst[(size_t)p * (size_t)c_out + (size_t)ch] =
                        tdn_rq_s8(src[(size_t)p * (size_t)q->channels + (size_t)ch] + q->input_offset, &rq,
                                  q->output_offset, -128, 127);
                }
            }
        }
        c0 += q->channels;
    }
    return ARM_CMSIS_NN_SUCCESS;
}
