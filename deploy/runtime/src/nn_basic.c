/* Bundled arm_elementwise_add_s8, arm_avgpool_s8 (+ buffer size); the fully connected kernels are in nn_fc.c. */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

/* How an add input reaches the common scale, (x + offset) << left_shift requantized by (mult, shift):
 * TFLite gives the input of the larger scale exactly 0.5 (mult 2^30, shift 0), where the requantization
 * is exact, (x + offset) << (left_shift - 1) (a multiple of 2 halved: no rounding); the other input
 * shifts right (tdn_rq_right); anything else takes the general tdn_rq_apply. */
enum
{
    TDN_ADD_HALF = 0,
    TDN_ADD_RIGHT = 1,
    TDN_ADD_GENERAL = 2
};

static int tdn_add_kind(int32_t mult, int32_t shift, int32_t left_shift)
{
    if (mult == (1 << 30) && shift == 0 && left_shift >= 1)
    {
        return TDN_ADD_HALF;
    }
    return shift < 0 ? TDN_ADD_RIGHT : TDN_ADD_GENERAL;
}

/* one input at the common scale; `kind` is a constant in each copy of the loop */
TDN_INLINE int32_t tdn_add_term(int32_t x, int32_t offset, int32_t left_shift, const tdn_rq *q, const int kind)
{
    const int32_t a = (int32_t)((uint32_t)(x + offset) << left_shift);
    if (kind == TDN_ADD_HALF)
    {
        return (int32_t)((uint32_t)(x + offset) << (left_shift - 1));
    }
    return kind == TDN_ADD_RIGHT ? tdn_rq_right(a, q) : tdn_rq_apply(a, q);
}

typedef struct
{
    int32_t off1, off2, left_shift, out_offset, act_min, act_max;
    tdn_rq q1, q2, qo;
} tdn_add_args;

/* n elements; k1, k2: the inputs' kinds, `r2` the output takes tdn_rq_s8_r2 (constants per copy) */
TDN_INLINE void tdn_add_body(const int8_t *x1, const int8_t *x2, int8_t *out, int32_t n, const tdn_add_args *g,
                             const int k1, const int k2, const int r2)
{
    const int32_t off1 = g->off1, off2 = g->off2, ls = g->left_shift, ooff = g->out_offset;
    const tdn_rq q1 = g->q1, q2 = g->q2, qo = g->qo;
    for (int32_t i = 0; i < n; i++)
    {
        const int32_t sum = tdn_add_term(x1[i], off1, ls, &q1, k1) + tdn_add_term(x2[i], off2, ls, &q2, k2);
        out[i] = r2 ? tdn_rq_s8_r2(sum, qo.mult, qo.r1, qo.k_hi, ooff)
                    : tdn_rq_s8(sum, &qo, ooff, g->act_min, g->act_max);
    }
}

/* the copies: the TFLite pairs (one input at 0.5, the other shifting right, either order) with the
 * one-saturate output, and the general form of every step */
static void tdn_add_half_right_r2(const int8_t *x1, const int8_t *x2, int8_t *o, int32_t n, const tdn_add_args *g)
{
    tdn_add_body(x1, x2, o, n, g, TDN_ADD_HALF, TDN_ADD_RIGHT, 1);
}

static void tdn_add_right_half_r2(const int8_t *x1, const int8_t *x2, int8_t *o, int32_t n, const tdn_add_args *g)
{
    tdn_add_body(x1, x2, o, n, g, TDN_ADD_RIGHT, TDN_ADD_HALF, 1);
}

static void tdn_add_general(const int8_t *x1, const int8_t *x2, int8_t *o, int32_t n, const tdn_add_args *g)
{
    tdn_add_body(x1, x2, o, n, g, TDN_ADD_GENERAL, TDN_ADD_GENERAL, 0);
}

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
    /* the three requantizations' shift splits once per call (tinydet/quant/kernels.py add_s8 is the oracle) */
    tdn_add_args g;
    g.off1 = input_1_offset;
    g.off2 = input_2_offset;
    g.left_shift = left_shift;
    g.out_offset = out_offset;
    g.act_min = out_activation_min;
    g.act_max = out_activation_max;
    g.q1 = tdn_rq_make(input_1_mult, input_1_shift);
    g.q2 = tdn_rq_make(input_2_mult, input_2_shift);
    g.qo = tdn_rq_make(out_mult, out_shift);
    const int k1 = tdn_add_kind(input_1_mult, input_1_shift, left_shift);
    const int k2 = tdn_add_kind(input_2_mult, input_2_shift, left_shift);
    if (tdn_rq_r2_layer(&out_shift, 1, out_activation_min, out_activation_max))
    {
        if (k1 == TDN_ADD_HALF && k2 == TDN_ADD_RIGHT)
        {
            tdn_add_half_right_r2(input_1_vect, input_2_vect, output, block_size, &g);
            return ARM_CMSIS_NN_SUCCESS;
        }
        if (k1 == TDN_ADD_RIGHT && k2 == TDN_ADD_HALF)
        {
            tdn_add_right_half_r2(input_1_vect, input_2_vect, output, block_size, &g);
            return ARM_CMSIS_NN_SUCCESS;
        }
    }
    tdn_add_general(input_1_vect, input_2_vect, output, block_size, &g);
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
