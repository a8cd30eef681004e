/*
 * Bundled arm_convolve_s8 / arm_convolve_1x1_s8_fast / arm_convolve_wrapper_s8.
 *
 * Scheme (as CMSIS-NN's DSP path): two output pixels at a time, their receptive fields are copied
 * ("im2col") into an int16 buffer with the input offset already added (positions outside the input
 * become 0), then each pair of output channels is a pair of dot products against both columns:
 * 4 independent accumulators, weights loaded 4 bytes at a time. With the DSP extension each column
 * is stored in groups of 4 reordered as x0 x2 x1 x3 so that one SXTB16 of 4 weight bytes pairs with
 * one 32-bit column load in SMLAD (2 MACs per instruction).
 */
#if !defined(TINYDET_USE_CMSIS_NN)

#include "tinydet_nn.h"
#include "nn_internal.h"

int32_t arm_convolve_s8_get_buffer_size(const cmsis_nn_dims *input_dims, const cmsis_nn_dims *filter_dims)
{
    /* two im2col columns of int16 (see tdn_convolve) */
    return 2 * tdn_align4(filter_dims->w * filter_dims->h * input_dims->c) * (int32_t)sizeof(int16_t);
}

int32_t arm_convolve_1x1_s8_fast_get_buffer_size(const cmsis_nn_dims *input_dims)
{
    const cmsis_nn_dims one_by_one = {1, 1, 1, input_dims->c};
    return arm_convolve_s8_get_buffer_size(input_dims, &one_by_one);
}

int32_t arm_convolve_wrapper_s8_get_buffer_size(const cmsis_nn_conv_params *conv_params,
                                                const cmsis_nn_dims *input_dims,
                                                const cmsis_nn_dims *filter_dims,
                                                const cmsis_nn_dims *output_dims)
{
    (void)conv_params;
    (void)output_dims;
    return arm_convolve_s8_get_buffer_size(input_dims, filter_dims);
}

/* int8 -> int16 with offset, n values. */
static void tdn_widen_offset(const int8_t *src, int16_t *dst, int32_t n, int32_t offset)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4)
    {
        dst[i] = (int16_t)(src[i] + offset);
        dst[i + 1] = (int16_t)(src[i + 1] + offset);
        dst[i + 2] = (int16_t)(src[i + 2] + offset);
        dst[i + 3] = (int16_t)(src[i + 3] + offset);
    }
    for (; i < n; i++)
    {
        dst[i] = (int16_t)(src[i] + offset);
    }
}

typedef struct
{
    const int8_t *in;
    int32_t in_h, in_w, in_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    int32_t out_w;
    int32_t offset;
    int32_t rhs_cols;
} tdn_im2col;

/* Fill one column (receptive field of output pixel (oy, ox)), then reorder for SMLAD. */
static void tdn_fill_column(const tdn_im2col *g, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t y0 = oy * g->stride_h - g->pad_h;
    const int32_t x0 = ox * g->stride_w - g->pad_w;
    const int32_t c = g->in_c;
    int16_t *dst = col;
    for (int32_t ky = 0; ky < g->k_h; ky++)
    {
        const int32_t iy = y0 + ky * g->dil_h;
        if (iy < 0 || iy >= g->in_h)
        {
            memset(dst, 0, (size_t)(g->k_w * c) * sizeof(int16_t));
            dst += g->k_w * c;
            continue;
        }
        const int8_t *row = g->in + (iy * g->in_w) * c;
        if (g->dil_w == 1 && x0 >= 0 && x0 + g->k_w <= g->in_w)
        {
            /* the whole kernel row is inside: one contiguous run */
            tdn_widen_offset(row + x0 * c, dst, g->k_w * c, g->offset);
            dst += g->k_w * c;
            continue;
        }
        for (int32_t kx = 0; kx < g->k_w; kx++)
        {
            const int32_t ix = x0 + kx * g->dil_w;
            if (ix < 0 || ix >= g->in_w)
            {
                memset(dst, 0, (size_t)c * sizeof(int16_t));
            }
            else
            {
                tdn_widen_offset(row + ix * c, dst, c, g->offset);
            }
            dst += c;
        }
    }
#if TDN_DSP
    /* x0 x1 x2 x3 -> x0 x2 x1 x3 in every full group of 4 (see file comment) */
    for (int32_t i = 0; i + 4 <= g->rhs_cols; i += 4)
    {
        const int16_t t = col[i + 1];
        col[i + 1] = col[i + 2];
        col[i + 2] = t;
    }
#endif
}

/* Two output pixels (columns col0, col1) x all output channels. out1 may be NULL (odd tail).
 * `full` (constant in each copy): the layer qualifies for tdn_rq_s8_full. */
TDN_INLINE void tdn_conv_cols_body(const int8_t *weights, int32_t cout, int32_t k,
                                   const int16_t *col0, const int16_t *col1,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                   int32_t out_offset, int32_t act_min, int32_t act_max,
                                   int8_t *out0, int8_t *out1, const int full)
{
    int32_t oc = 0;
    if (col1 == NULL)
    {
        col1 = col0; /* compute twice, store once: keeps one code path for the odd last pixel */
    }
    for (; oc + 2 <= cout; oc += 2)
    {
        const int8_t *w0 = weights + oc * k;
        const int8_t *w1 = w0 + k;
        int32_t b0 = bias ? bias[oc] : 0;
        int32_t b1 = bias ? bias[oc + 1] : 0;
        int32_t a00 = b0, a01 = b0, a10 = b1, a11 = b1; /* a<channel><pixel> */
        int32_t i = 0;
#if TDN_DSP
        for (; i + 4 <= k; i += 4)
        {
            /* the columns hold x0 x2 x1 x3 per group (tdn_fill_column): lanes (even, odd) as loaded */
            const tdn_s16x4 wa = tdn_widen_s8x4(tdn_read_u32(w0 + i)), wb = tdn_widen_s8x4(tdn_read_u32(w1 + i));
            const tdn_s16x4 c0 = {(int32_t)tdn_read_u32(col0 + i), (int32_t)tdn_read_u32(col0 + i + 2)};
            const tdn_s16x4 c1 = {(int32_t)tdn_read_u32(col1 + i), (int32_t)tdn_read_u32(col1 + i + 2)};
            a00 = tdn_dot4(wa, c0, a00);
            a01 = tdn_dot4(wa, c1, a01);
            a10 = tdn_dot4(wb, c0, a10);
            a11 = tdn_dot4(wb, c1, a11);
        }
#else
        for (; i + 2 <= k; i += 2)
        {
            const int32_t x00 = col0[i], x01 = col0[i + 1], x10 = col1[i], x11 = col1[i + 1];
            const int32_t wa0 = w0[i], wa1 = w0[i + 1], wb0 = w1[i], wb1 = w1[i + 1];
            a00 += wa0 * x00 + wa1 * x01;
            a01 += wa0 * x10 + wa1 * x11;
            a10 += wb0 * x00 + wb1 * x01;
            a11 += wb0 * x10 + wb1 * x11;
        }
#endif
        for (; i < k; i++)
        {
            a00 += w0[i] * col0[i];
            a01 += w0[i] * col1[i];
            a10 += w1[i] * col0[i];
            a11 += w1[i] * col1[i];
        }
        /* each channel's shift split once for both pixels */
        const tdn_rq q0 = tdn_rq_make(mult[oc], shift[oc]), q1 = tdn_rq_make(mult[oc + 1], shift[oc + 1]);
        out0[oc] = tdn_rq_s8_sel(a00, &q0, out_offset, act_min, act_max, full);
        out0[oc + 1] = tdn_rq_s8_sel(a10, &q1, out_offset, act_min, act_max, full);
        if (out1)
        {
            out1[oc] = tdn_rq_s8_sel(a01, &q0, out_offset, act_min, act_max, full);
            out1[oc + 1] = tdn_rq_s8_sel(a11, &q1, out_offset, act_min, act_max, full);
        }
    }
    if (oc < cout)
    {
        /* odd last channel: the column order (reordered or not) matches the weights only when the
         * reorder is undone, so index the reordered groups explicitly */
        const int8_t *w0 = weights + oc * k;
        int32_t a0 = bias ? bias[oc] : 0, a1 = a0;
        int32_t i = 0;
#if TDN_DSP
        for (; i + 4 <= k; i += 4)
        {
            a0 += w0[i] * col0[i] + w0[i + 2] * col0[i + 1] + w0[i + 1] * col0[i + 2] + w0[i + 3] * col0[i + 3];
            a1 += w0[i] * col1[i] + w0[i + 2] * col1[i + 1] + w0[i + 1] * col1[i + 2] + w0[i + 3] * col1[i + 3];
        }
#endif
        for (; i < k; i++)
        {
            a0 += w0[i] * col0[i];
            a1 += w0[i] * col1[i];
        }
        const tdn_rq q0 = tdn_rq_make(mult[oc], shift[oc]);
        out0[oc] = tdn_rq_s8_sel(a0, &q0, out_offset, act_min, act_max, full);
        if (out1)
        {
            out1[oc] = tdn_rq_s8_sel(a1, &q0, out_offset, act_min, act_max, full);
        }
    }
}

static void tdn_conv_cols(const int8_t *weights, int32_t cout, int32_t k, const int16_t *col0, const int16_t *col1,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t out_offset,
                          int32_t act_min, int32_t act_max, int8_t *out0, int8_t *out1, int full)
{
    if (full)
    {
        tdn_conv_cols_body(weights, cout, k, col0, col1, bias, mult, shift, out_offset, -128, 127, out0, out1, 1);
    }
    else
    {
        tdn_conv_cols_body(weights, cout, k, col0, col1, bias, mult, shift, out_offset, act_min, act_max, out0, out1,
                           0);
    }
}

/* 1x1 convolution (no padding, any stride): no im2col. Output channels in pairs (outer loop), so a
 * pair's requantization (tdn_rq), bias and input-offset term (bias + off * sum w, so that the inner
 * loop multiplies raw int8 values) are made once per call; then every pair of output pixels is
 * 4 accumulators over the input depth: per 4 input channels 4 loads, 8 SXTB16 and 8 SMLAD (16 MACs).
 * Tails: an odd last pixel (computed as a pair with itself, stored once), an odd last channel, and
 * depths not a multiple of 4 (scalar). */
typedef struct
{
    const int8_t *in;
    int32_t iw, k, ow, sh, sw, npix;
} tdn_1x1;

/* The input pixel under the output pixel after the one at x (column *ox): one pixel on, or for
 * strides above 1, sw pixels on and sh rows down at the end of an output row. */
TDN_INLINE const int8_t *tdn_1x1_next(const tdn_1x1 *g, const int8_t *x, int32_t *ox)
{
    if (g->sh == 1 && g->sw == 1)
    {
        return x + g->k;
    }
    if (++*ox < g->ow)
    {
        return x + g->sw * g->k;
    }
    *ox = 0;
    return x + (g->sw + (g->sh * g->iw - g->ow * g->sw)) * g->k;
}

/* sum over the depth of one output channel's weights */
static int32_t tdn_weight_sum(const int8_t *w, int32_t k)
{
    int32_t s = 0;
    for (int32_t i = 0; i < k; i++)
    {
        s += w[i];
    }
    return s;
}

/* Dot products of two pixels (x0, x1) with two channels' weights (w0, w1), raw int8, depth k,
 * added to a[0..3] = (ch0 px0, ch0 px1, ch1 px0, ch1 px1). Unsigned sums on the plain path: the
 * folded offset term can make partial sums leave the int32 range although the total fits. */
TDN_INLINE void tdn_dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t k,
                            int32_t *a)
{
    int32_t a00 = a[0], a01 = a[1], a10 = a[2], a11 = a[3];
    int32_t i = 0;
#if TDN_DSP
    /* one moving pointer per operand pair, the second operand at a fixed distance: keeps the loop's
     * registers at 4 accumulators, 2 pointers, 2 distances, the end and the SXTB16 results */
    const int8_t *px = x0, *pw = w0;
    const int8_t *const end = x0 + (k & ~3);
    const intptr_t dx = x1 - x0, dw = w1 - w0;
    if (dx == dw && px < end)
    {
        /* the common case (unit stride, not a tail): both second operands at the same distance d. In
         * assembly because the loop needs 14 registers (4 accumulators, 2 pointers, the end, d, and
         * 3 operand vectors of 2 words) and gcc spills d otherwise: per 4 depths 4 LDR, 8 SXTB16,
         * 8 SMLAD and 3 loop instructions for 16 MACs. Bytes 0, 2 (SXTB16) and 1, 3 (ROR #8) of x and
         * w pair up in the same lanes. */
        uint32_t xa, xae, xb, xbe, w, we;
        __asm volatile("1:\n\t"
                       "ldr %[xa], [%[px]]\n\t"
                       "ldr %[w], [%[pw]]\n\t"
                       "sxtb16 %[xae], %[xa]\n\t"
                       "sxtb16 %[xa], %[xa], ror #8\n\t"
                       "sxtb16 %[we], %[w]\n\t"
                       "sxtb16 %[w], %[w], ror #8\n\t"
                       "ldr %[xb], [%[px], %[d]]\n\t"
                       "smlad %[a00], %[xae], %[we], %[a00]\n\t"
                       "smlad %[a00], %[xa], %[w], %[a00]\n\t"
                       "sxtb16 %[xbe], %[xb]\n\t"
                       "sxtb16 %[xb], %[xb], ror #8\n\t"
                       "smlad %[a01], %[xbe], %[we], %[a01]\n\t"
                       "smlad %[a01], %[xb], %[w], %[a01]\n\t"
                       "ldr %[w], [%[pw], %[d]]\n\t"
                       "adds %[px], %[px], #4\n\t"
                       "adds %[pw], %[pw], #4\n\t"
                       "sxtb16 %[we], %[w]\n\t"
                       "sxtb16 %[w], %[w], ror #8\n\t"
                       "smlad %[a10], %[xae], %[we], %[a10]\n\t"
                       "smlad %[a10], %[xa], %[w], %[a10]\n\t"
                       "smlad %[a11], %[xbe], %[we], %[a11]\n\t"
                       "smlad %[a11], %[xb], %[w], %[a11]\n\t"
                       "cmp %[px], %[end]\n\t"
                       "bne 1b"
                       : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [px] "+r"(px),
                         [pw] "+r"(pw), [xa] "=&r"(xa), [xae] "=&r"(xae), [xb] "=&r"(xb), [xbe] "=&r"(xbe),
                         [w] "=&r"(w), [we] "=&r"(we)
                       : [end] "r"(end), [d] "r"(dx)
                       : "cc", "memory");
    }
    for (; px < end; px += 4, pw += 4)
    {
        const tdn_s16x4 xa = tdn_widen_s8x4(tdn_read_u32(px)), xb = tdn_widen_s8x4(tdn_read_u32(px + dx));
        const tdn_s16x4 wa = tdn_widen_s8x4(tdn_read_u32(pw));
        a00 = tdn_dot4(xa, wa, a00);
        a01 = tdn_dot4(xb, wa, a01);
        const tdn_s16x4 wb = tdn_widen_s8x4(tdn_read_u32(pw + dw));
        a10 = tdn_dot4(xa, wb, a10);
        a11 = tdn_dot4(xb, wb, a11);
    }
    i = k & ~3;
#endif
    uint32_t u00 = (uint32_t)a00, u01 = (uint32_t)a01, u10 = (uint32_t)a10, u11 = (uint32_t)a11;
    for (; i < k; i++)
    {
        u00 += (uint32_t)(x0[i] * w0[i]);
        u01 += (uint32_t)(x1[i] * w0[i]);
        u10 += (uint32_t)(x0[i] * w1[i]);
        u11 += (uint32_t)(x1[i] * w1[i]);
    }
    a[0] = (int32_t)u00;
    a[1] = (int32_t)u01;
    a[2] = (int32_t)u10;
    a[3] = (int32_t)u11;
}

TDN_INLINE void tdn_conv_1x1_body(const tdn_1x1 *g, const int8_t *weights, int32_t cout, const int32_t *bias,
                                  const cmsis_nn_per_channel_quant_params *q, int32_t in_off, int32_t out_offset,
                                  int32_t act_min, int32_t act_max, int8_t *out, const int full)
{
    const int32_t k = g->k, npix = g->npix;
    for (int32_t oc = 0; oc < cout; oc += 2)
    {
        /* an odd last channel is computed as a pair with itself and stored once */
        const int32_t oc1 = oc + 1 < cout ? oc + 1 : oc;
        const int8_t *w0 = weights + oc * k, *w1 = weights + oc1 * k;
        const int32_t b0 = (int32_t)((uint32_t)(bias ? bias[oc] : 0) + (uint32_t)in_off * (uint32_t)tdn_weight_sum(w0, k));
        const int32_t b1 = (int32_t)((uint32_t)(bias ? bias[oc1] : 0) + (uint32_t)in_off * (uint32_t)tdn_weight_sum(w1, k));
        const tdn_rq q0 = tdn_rq_make(q->multiplier[oc], q->shift[oc]);
        const tdn_rq q1 = tdn_rq_make(q->multiplier[oc1], q->shift[oc1]);
        int8_t *o = out + oc;
        const int8_t *x = g->in;
        int32_t ox = 0;
        for (int32_t p = 0; p < npix; p += 2)
        {
            const int32_t p1 = p + 1 < npix ? p + 1 : p;
            const int8_t *x0 = x, *x1 = p1 != p ? tdn_1x1_next(g, x0, &ox) : x0;
            x = tdn_1x1_next(g, x1, &ox);
            int32_t a[4] = {b0, b0, b1, b1};
            tdn_dot_2x2(x0, x1, w0, w1, k, a);
            o[0] = tdn_rq_s8_sel(a[0], &q0, out_offset, act_min, act_max, full);
            if (oc1 != oc)
            {
                o[1] = tdn_rq_s8_sel(a[2], &q1, out_offset, act_min, act_max, full);
            }
            if (p1 != p)
            {
                o[cout] = tdn_rq_s8_sel(a[1], &q0, out_offset, act_min, act_max, full);
                if (oc1 != oc)
                {
                    o[cout + 1] = tdn_rq_s8_sel(a[3], &q1, out_offset, act_min, act_max, full);
                }
            }
            o += 2 * cout;
        }
    }
}

/* Two copies of the loops: the common layer's one-saturate requantization, or the general one. */
static void tdn_conv_1x1(const tdn_1x1 *g, const int8_t *weights, int32_t cout, const int32_t *bias,
                         const cmsis_nn_per_channel_quant_params *q, int32_t in_off, int32_t out_offset,
                         int32_t act_min, int32_t act_max, int8_t *out)
{
    if (tdn_rq_full_layer(q->shift, cout, act_min, act_max))
    {
        tdn_conv_1x1_body(g, weights, cout, bias, q, in_off, out_offset, -128, 127, out, 1);
    }
    else
    {
        tdn_conv_1x1_body(g, weights, cout, bias, q, in_off, out_offset, act_min, act_max, out, 0);
    }
}

/* ---- 1x1, stride 1: pixel pairs against channel pairs over pre-widened columns -------------------
 * With the DSP extension and a word-aligned buffer of 4 * align4(k) bytes (the kernels' two im2col
 * columns), the unit-stride 1x1 runs as a matrix product: each pair of input pixels is widened
 * once (int16, input offset added) into one interleaved column (tdn_1x1_widen_pair), then every pair
 * of output channels is 4 accumulators over the depth. Per 4 depths: 2 LDRD (both pixels), 2 LDR
 * (both channels' weights), 4 SXTB16 and 8 SMLAD = 16 instructions for 16 MACs (the loop runs two
 * groups per pass). The widening costs ~1.5 instructions per depth per pixel, shared by all output
 * channels. Requantization: tdn_rq_s8_r2 (8 instructions an output) where every channel shifts right
 * by at least 2 and the activation range is full, else tdn_rq_s8 per channel. */
#if TDN_DSP

/* One group of 4 depths: columns (p0 even, p0 odd, p1 even, p1 odd) by LDRD, the first channel's
 * weights at [pw] (post-incremented), the second's at [pw, dk] (dk = k - 4: pw already moved). */
#define TDN_1X1_GROUP                                    \
    "ldrd %[c0e], %[c0o], [%[pc]], #8\n\t"               \
    "ldrd %[c1e], %[c1o], [%[pc]], #8\n\t"               \
    "ldr %[w], [%[pw]], #4\n\t"                          \
    "sxtb16 %[t], %[w]\n\t"                              \
    "sxtb16 %[w], %[w], ror #8\n\t"                      \
    "smlad %[a00], %[c0e], %[t], %[a00]\n\t"             \
    "smlad %[a00], %[c0o], %[w], %[a00]\n\t"             \
    "smlad %[a01], %[c1e], %[t], %[a01]\n\t"             \
    "smlad %[a01], %[c1o], %[w], %[a01]\n\t"             \
    "ldr %[w], [%[pw], %[dk]]\n\t"                       \
    "sxtb16 %[t], %[w]\n\t"                              \
    "sxtb16 %[w], %[w], ror #8\n\t"                      \
    "smlad %[a10], %[c0e], %[t], %[a10]\n\t"             \
    "smlad %[a10], %[c0o], %[w], %[a10]\n\t"             \
    "smlad %[a11], %[c1e], %[t], %[a11]\n\t"             \
    "smlad %[a11], %[c1o], %[w], %[a11]\n\t"

/* The 4 accumulators of two pixels x two channels (a<channel><pixel>). */
typedef struct
{
    int32_t a00, a01, a10, a11;
} tdn_acc4;

/* acc += the groups [0, g) of column col (tdn_1x1_widen_pair layout) against the channel rows w0 and
 * w0 + w_dist. One asm statement (an odd group first, then two per pass) so that the accumulators
 * stay in the same registers (gcc shuffles them between separate statements); 14 registers: 4 accumulators, 4 column words, the weight word and its
 * even lanes, 2 pointers, the end and the distance. */
TDN_INLINE tdn_acc4 tdn_1x1_groups(const uint32_t *col, const int8_t *w0, int32_t w_dist, int32_t g, tdn_acc4 acc)
{
    const uint32_t *pc = col;
    const int8_t *pw = w0;
    const int8_t *const end = w0 + 4 * g;
    const int32_t dk = w_dist - 4;
    uint32_t c0e, c0o, c1e, c1o, w, t;
    /* an odd group count: (end - pw) = 4 g has bit 2 set */
    __asm volatile("sub %[t], %[end], %[pw]\n\t"
                   "tst %[t], #4\n\t"
                   "beq 2f\n\t" TDN_1X1_GROUP
                   "2:\n\t"
                   "cmp %[pw], %[end]\n\t"
                   "beq 3f\n"
                   "1:\n\t" TDN_1X1_GROUP TDN_1X1_GROUP
                   "cmp %[pw], %[end]\n\t"
                   "bne 1b\n"
                   "3:"
                   : [a00] "+r"(acc.a00), [a01] "+r"(acc.a01), [a10] "+r"(acc.a10), [a11] "+r"(acc.a11),
                     [pc] "+r"(pc), [pw] "+r"(pw), [c0e] "=&r"(c0e), [c0o] "=&r"(c0o), [c1e] "=&r"(c1e),
                     [c1o] "=&r"(c1o), [w] "=&r"(w), [t] "=&r"(t)
                   : [dk] "r"(dk), [end] "r"(end)
                   : "cc", "memory");
    return acc;
}

/* Pixels x0 and x1 (k depths each) widened with the input offset into col: per group of 4 depths
 * the words p0 (x0, x2), p0 (x1, x3), p1 (x0, x2), p1 (x1, x3) (the lanes SXTB16 gives the
 * weights); the last k % 4 depths make one more group, zero in the missing lanes (4 * align4(k)
 * bytes in all). */
static void tdn_1x1_widen_pair(const int8_t *x0, const int8_t *x1, int32_t k, int32_t offset, uint32_t *col)
{
    const uint32_t off2 = ((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16);
    int32_t g = k >> 2;
    if (g > 0)
    {
        /* SXTAB16 widens two bytes and adds the offset to both lanes in one instruction: per group
         * 2 LDR (unaligned: the pixels start anywhere), 4 SXTAB16, 2 STRD and the loop */
        uint32_t a, b, ae, be;
        __asm volatile("1:\n\t"
                       "ldr %[a], [%[x0]], #4\n\t"
                       "ldr %[b], [%[x1]], #4\n\t"
                       "sxtab16 %[ae], %[off], %[a]\n\t"
                       "sxtab16 %[a], %[off], %[a], ror #8\n\t"
                       "sxtab16 %[be], %[off], %[b]\n\t"
                       "sxtab16 %[b], %[off], %[b], ror #8\n\t"
                       "strd %[ae], %[a], [%[col]], #8\n\t"
                       "strd %[be], %[b], [%[col]], #8\n\t"
                       "subs %[g], %[g], #1\n\t"
                       "bne 1b"
                       : [x0] "+r"(x0), [x1] "+r"(x1), [col] "+r"(col), [g] "+r"(g), [a] "=&r"(a), [b] "=&r"(b),
                         [ae] "=&r"(ae), [be] "=&r"(be)
                       : [off] "r"(off2)
                       : "cc", "memory");
    }
    if (k & 3)
    {
        int16_t *t = (int16_t *)col;
        for (int32_t i = 0; i < 4; i++)
        {
            /* depth i of the group is lane (i >> 1) of word (i & 1) */
            t[2 * (i & 1) + (i >> 1)] = (int16_t)(i < (k & 3) ? x0[i] + offset : 0);
            t[4 + 2 * (i & 1) + (i >> 1)] = (int16_t)(i < (k & 3) ? x1[i] + offset : 0);
        }
    }
}

/* Output channels oc and oc + d (d = 1, or 0 for an odd last channel paired with itself) of two
 * pixels (one widened column, tdn_1x1_widen_pair) into out0 / out1 (the same pixel when the column
 * holds one pixel twice: the second store rewrites the same value). The SMLAD loop runs `groups`
 * groups; `tail` > 0 adds the first `tail` depths of group `groups` one by one (the rows' last
 * k % 4 weights where reading a whole word would leave the weights array). `fast` (constant in
 * each copy): every shift <= -2 and the activation range is [-128, 127] (tdn_rq_s8_r2). */
TDN_INLINE void tdn_1x1_s1_pair(const uint32_t *col, int32_t k, int32_t groups, int32_t tail, const int8_t *weights,
                                int32_t oc, int32_t d, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                int32_t out_offset, int32_t act_min, int32_t act_max, int8_t *out0, int8_t *out1,
                                const int fast)
{
    const int8_t *w0 = weights + oc * k;
    const int32_t w_dist = d * k;
    const int32_t b0 = bias ? bias[oc] : 0, b1 = bias ? bias[oc + d] : 0;
    tdn_acc4 a = {b0, b0, b1, b1};
    a = tdn_1x1_groups(col, w0, w_dist, groups, a);
    if (tail)
    {
        const int16_t *t = (const int16_t *)(col + 4 * groups);
        const int8_t *wa = w0 + 4 * groups, *wb = wa + w_dist;
        for (int32_t i = 0; i < tail; i++)
        {
            /* unsigned: an extreme bias may take a partial sum outside int32 although the total fits */
            const int32_t x0 = t[2 * (i & 1) + (i >> 1)], x1 = t[4 + 2 * (i & 1) + (i >> 1)];
            a.a00 = (int32_t)((uint32_t)a.a00 + (uint32_t)(wa[i] * x0));
            a.a01 = (int32_t)((uint32_t)a.a01 + (uint32_t)(wa[i] * x1));
            a.a10 = (int32_t)((uint32_t)a.a10 + (uint32_t)(wb[i] * x0));
            a.a11 = (int32_t)((uint32_t)a.a11 + (uint32_t)(wb[i] * x1));
        }
    }
    /* channel oc + d first: for the odd last channel (d == 0) channel oc's stores then win (same value) */
    if (fast)
    {
        const int32_t r1b = ~shift[oc + d]; /* R - 1 = -shift - 1 */
        const int32_t kb = (int32_t)(1u << (r1b - 1)), mb = mult[oc + d];
        out0[oc + d] = tdn_rq_s8_r2(a.a10, mb, r1b, kb, out_offset);
        out1[oc + d] = tdn_rq_s8_r2(a.a11, mb, r1b, kb, out_offset);
        const int32_t r1a = ~shift[oc];
        const int32_t ka = (int32_t)(1u << (r1a - 1)), ma = mult[oc];
        out0[oc] = tdn_rq_s8_r2(a.a00, ma, r1a, ka, out_offset);
        out1[oc] = tdn_rq_s8_r2(a.a01, ma, r1a, ka, out_offset);
    }
    else
    {
        const tdn_rq q0 = tdn_rq_make(mult[oc], shift[oc]), q1 = tdn_rq_make(mult[oc + d], shift[oc + d]);
        out0[oc + d] = tdn_rq_s8(a.a10, &q1, out_offset, act_min, act_max);
        out1[oc + d] = tdn_rq_s8(a.a11, &q1, out_offset, act_min, act_max);
        out0[oc] = tdn_rq_s8(a.a00, &q0, out_offset, act_min, act_max);
        out1[oc] = tdn_rq_s8(a.a01, &q0, out_offset, act_min, act_max);
    }
}

/* All output channels of two pixels (see tdn_1x1_s1_pair). With k % 4 != 0 the padded group runs
 * in the SMLAD loop (its zero lanes meet the next row's first weights) for every pair whose word
 * reads stay inside the weights array: all but the last one or two. */
TDN_INLINE void tdn_1x1_s1_cols(const uint32_t *col, int32_t k, const int8_t *weights, int32_t cout,
                                const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t out_offset,
                                int32_t act_min, int32_t act_max, int8_t *out0, int8_t *out1, const int fast)
{
    const int32_t g = k >> 2, r = k & 3;
    int32_t oc = 0;
    if (r == 0)
    {
        /* its own loop: with the tail a constant 0 the pair compiles to the SMLAD loop and stores */
        for (; oc + 2 <= cout; oc += 2)
        {
            tdn_1x1_s1_pair(col, k, g, 0, weights, oc, 1, bias, mult, shift, out_offset, act_min, act_max, out0,
                            out1, fast);
        }
    }
    else
    {
        /* a pair at oc reads up to byte (oc + 2) * k + 4 - r of the weights with the padded group */
        const int32_t safe_end = cout * k - (4 - r);
        for (; oc + 2 <= cout; oc += 2)
        {
            const int32_t padded = (oc + 2) * k <= safe_end;
            tdn_1x1_s1_pair(col, k, g + padded, padded ? 0 : r, weights, oc, 1, bias, mult, shift, out_offset,
                            act_min, act_max, out0, out1, fast);
        }
    }
    if (oc < cout)
    {
        tdn_1x1_s1_pair(col, k, g, r, weights, oc, 0, bias, mult, shift, out_offset, act_min, act_max, out0, out1,
                        fast);
    }
}

/* tdn_1x1_s1_cols with `fast` made a constant: one copy of the loops per requantization form. */
static void tdn_s1_cols(const uint32_t *col, int32_t k, const int8_t *weights, int32_t cout, const int32_t *bias,
                        const int32_t *mult, const int32_t *shift, int32_t out_offset, int32_t act_min,
                        int32_t act_max, int8_t *out0, int8_t *out1, int fast)
{
    if (fast)
    {
        tdn_1x1_s1_cols(col, k, weights, cout, bias, mult, shift, out_offset, -128, 127, out0, out1, 1);
    }
    else
    {
        tdn_1x1_s1_cols(col, k, weights, cout, bias, mult, shift, out_offset, act_min, act_max, out0, out1, 0);
    }
}

/* ---- small receptive fields (the 3x3x3 stem): staged pixels through the 1x1 columns ---------------
 * Convolutions whose receptive field has at most TDN_CONV_STAGE_MAX values gather each output
 * pixel's field as int8 (HWC order, the padding as the input zero point, which is 0 once the
 * offset is added) into a stack buffer, then run exactly as a 1x1 layer of depth kh * kw * c_in
 * (tdn_1x1_widen_pair + tdn_1x1_s1_cols): the weights' OHWI rows are that depth's rows. */
#define TDN_CONV_STAGE_MAX 64

/* n bytes from src to dst a word at a time (always inlined: a constant n becomes straight code) */
TDN_INLINE void tdn_copy_run(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i = 0;
    for (; i + 4 <= n; i += 4)
    {
        const uint32_t v = tdn_read_u32(src + i);
        memcpy(dst + i, &v, 4);
    }
    for (; i < n; i++)
    {
        dst[i] = src[i];
    }
}

/* n input bytes, or the zero point when src is NULL (padding) */
TDN_INLINE int8_t *tdn_stage_run(int8_t *dst, const int8_t *src, int32_t n, int8_t zp)
{
    if (src)
    {
        tdn_copy_run(dst, src, n);
    }
    else
    {
        for (int32_t i = 0; i < n; i++)
        {
            dst[i] = zp;
        }
    }
    return dst + n;
}

/* The receptive field of output pixel pix as int8 into dst, then the zero point up to align4(k)
 * values (the widened padded group's missing lanes: zero point + offset = 0), so that the pair widens
 * in whole groups. */
static void tdn_stage_field(const tdn_im2col *g, int32_t pix, int8_t *dst)
{
    const int32_t oy = pix / g->out_w, ox = pix % g->out_w;
    const int32_t y0 = oy * g->stride_h - g->pad_h, x0 = ox * g->stride_w - g->pad_w, c = g->in_c;
    const int8_t zp = (int8_t)(-g->offset); /* input_offset = -zero point, in [-127, 128] */
    for (int32_t i = g->rhs_cols; i < tdn_align4(g->rhs_cols); i++)
    {
        dst[i] = zp;
    }
    if (g->dil_h == 1 && g->dil_w == 1 && y0 >= 0 && y0 + g->k_h <= g->in_h && x0 >= 0 && x0 + g->k_w <= g->in_w)
    {
        /* inside the input (most pixels): k_h runs of k_w * c bytes, one input row apart */
        const int32_t n = g->k_w * c, step = g->in_w * c;
        const int8_t *src = g->in + (y0 * g->in_w + x0) * c;
        for (int32_t ky = 0; ky < g->k_h; ky++, src += step)
        {
            dst = tdn_stage_run(dst, src, n, zp);
        }
        return;
    }
    for (int32_t ky = 0; ky < g->k_h; ky++)
    {
        const int32_t iy = y0 + ky * g->dil_h;
        const int8_t *row = g->in + iy * g->in_w * c;
        if (iy < 0 || iy >= g->in_h)
        {
            dst = tdn_stage_run(dst, NULL, g->k_w * c, zp);
        }
        else if (g->dil_w == 1 && x0 >= 0 && x0 + g->k_w <= g->in_w)
        {
            dst = tdn_stage_run(dst, row + x0 * c, g->k_w * c, zp);
        }
        else
        {
            for (int32_t kx = 0; kx < g->k_w; kx++)
            {
                const int32_t ix = x0 + kx * g->dil_w;
                dst = tdn_stage_run(dst, ix < 0 || ix >= g->in_w ? NULL : row + ix * c, c, zp);
            }
        }
    }
}

/* ---- the common layer's channel-pair loop in one assembly routine ---------------------------------
 * Where every channel shifts right by 2..31, the activation range is [-128, 127] and the output
 * offset can be folded into the rounding constant (tdn_pp_layer_ok), one routine (tdn_pp_godd /
 * tdn_pp_geven per parity of the group count, or an unrolled tdn_pp_g2..g8 for small depths) runs
 * all channel pairs of a chunk against one widened pixel pair (tdn_pp_loop runs the pixel pairs
 * too where no C tail is needed): the accumulators start from the bias, the SMLAD groups run, the 4 outputs are
 * requantized and stored, with no C code (and no gcc spills) between channel pairs. Each channel's
 * requantization constants are made once per call into a small stack table (tdn_pp_pair):
 *   khi' = 2^(r1-1) + out_offset * 2^r1 = (2 out_offset + 1) << (r1 - 1)
 * (tdn_rq_s8_r2's khi with the offset added as a multiple of 2^r1, so that the one ASR by r1 also
 * adds out_offset: exact while the high word cannot overflow, see tdn_pp_layer_ok). An output is
 * then AND, ORR, ADD, SMLAL, ASR, SSAT and STRB: 7 instructions. Per pair of channels the routine
 * adds ~12 instructions (bias LDRD, table LDMs, loop and pointer upkeep) to the 16 per group.
 * The last pair is marked by bit 8 of its second channel's r1 (register shifts use only the low
 * byte of the shift register), so that no register holds the loop end. */
#define TDN_PP_PAIRS 24 /* channel pairs per table chunk: 24 * 32 = 768 bytes of stack */
#define TDN_PP_SPACE 1536 /* stack bytes for a chunk's table and the pre-widened / padded weight copies */
#define TDN_PP_TAIL 136 /* bytes for the last pair's rows (k <= 66) when the padded group would read past the weights */

/* Two output channels' requantization: biases, then per channel (mult, r1 = R - 1, khi'). */
typedef struct
{
    int32_t b0, b1;
    int32_t m0, r0, k0;
    int32_t m1, r1, k1;
} tdn_pp_pair;

/* The routine's arguments (offsets fixed: the assembly reads them by position). */
typedef struct
{
    const uint32_t *col;     /* 0: the widened pixel pair (tdn_1x1_widen_pair) */
    const int8_t *w;         /* 4: the chunk's first weight row */
    const tdn_pp_pair *tab;  /* 8: the chunk's table, the last pair marked */
    int8_t *out0;            /* 12: the first pixel's output at the chunk's first channel */
    int32_t dist;            /* 16: second pixel's output - first's (cout, or 0 for one pixel) */
    int32_t wadv;            /* 20: 2 k - 4 groups: from the end of a pair's first row to the next pair */
    int32_t dk;              /* 24: k - 4: second row from the first, after the first's post-increment */
    const uint32_t *col_end; /* 28: col + 4 groups (words) */
} tdn_pp_args;

void tdn_pp_godd(const tdn_pp_args *a);
void tdn_pp_geven(const tdn_pp_args *a);
void tdn_pp_g2(const tdn_pp_args *a);
void tdn_pp_g4(const tdn_pp_args *a);
void tdn_pp_g6(const tdn_pp_args *a);
void tdn_pp_g7(const tdn_pp_args *a);
void tdn_pp_g8(const tdn_pp_args *a);
void tdn_pp_w2(const tdn_pp_args *a);
void tdn_pp_w4(const tdn_pp_args *a);
void tdn_pp_w6(const tdn_pp_args *a);
void tdn_pp_w7(const tdn_pp_args *a);
void tdn_pp_w8(const tdn_pp_args *a);

/* Registers: r0 column (moving in the group loop), r1 weights, r2 table, r3 output, r4-r7 the
 * accumulators a00 a01 a10 a11 (a<channel><pixel>), r8-r11 the column words (p0 even, p0 odd, p1
 * even, p1 odd), r12 and lr a weight word's odd and even lanes. During the groups r2 / r3 hold dk
 * and the column end (r0, r2, r3 pushed); after them r8-r12 are the requantization's registers and
 * lr the output distance. Frame: [sp] dist, wadv, dk, col_end (+12 while r0, r2, r3 are pushed). */
#define TDN_PP_GROUP_FIRST                   \
    "ldrd r8, r9, [r0], #8\n\t"              \
    "ldrd r10, r11, [r0], #8\n\t"            \
    "ldr r12, [r1], #4\n\t"                  \
    "sxtb16 lr, r12\n\t"                     \
    "sxtb16 r12, r12, ror #8\n\t"            \
    "smlad r5, r10, lr, r4\n\t"              \
    "smlad r5, r11, r12, r5\n\t"             \
    "smlad r4, r8, lr, r4\n\t"               \
    "smlad r4, r9, r12, r4\n\t"              \
    "ldr r12, [r1, r2]\n\t"                  \
    "sxtb16 lr, r12\n\t"                     \
    "sxtb16 r12, r12, ror #8\n\t"            \
    "smlad r7, r10, lr, r6\n\t"              \
    "smlad r7, r11, r12, r7\n\t"             \
    "smlad r6, r8, lr, r6\n\t"               \
    "smlad r6, r9, r12, r6\n\t"

#define TDN_PP_GROUP                         \
    "ldrd r8, r9, [r0], #8\n\t"              \
    "ldrd r10, r11, [r0], #8\n\t"            \
    "ldr r12, [r1], #4\n\t"                  \
    "sxtb16 lr, r12\n\t"                     \
    "sxtb16 r12, r12, ror #8\n\t"            \
    "smlad r4, r8, lr, r4\n\t"               \
    "smlad r4, r9, r12, r4\n\t"              \
    "smlad r5, r10, lr, r5\n\t"              \
    "smlad r5, r11, r12, r5\n\t"             \
    "ldr r12, [r1, r2]\n\t"                  \
    "sxtb16 lr, r12\n\t"                     \
    "sxtb16 r12, r12, ror #8\n\t"            \
    "smlad r6, r8, lr, r6\n\t"               \
    "smlad r6, r9, r12, r6\n\t"              \
    "smlad r7, r10, lr, r7\n\t"              \
    "smlad r7, r11, r12, r7\n\t"

/* Requantize accumulators A (pixel 0) and B (pixel 1) of one channel with its table entry, store
 * B at [r3, lr] and A at [r3], r3 one on (B's register becomes the next one's scratch). */
#define TDN_PP_RQ(A, B)                             \
    "ldm r2!, {r8, r9, r10}\n\t"                    \
    "and r11, " A ", #0x80000000\n\t"               \
    "orr r11, r11, #0x40000000\n\t"                 \
    "add r12, r10, " A ", asr #31\n\t"              \
    "smlal r11, r12, " A ", r8\n\t"                 \
    "and " A ", " B ", #0x80000000\n\t"             \
    "orr " A ", " A ", #0x40000000\n\t"             \
    "add r11, r10, " B ", asr #31\n\t"              \
    "smlal " A ", r11, " B ", r8\n\t"               \
    "asr r12, r12, r9\n\t"                          \
    "asr r11, r11, r9\n\t"                          \
    "ssat r12, #8, r12\n\t"                         \
    "ssat r11, #8, r11\n\t"                         \
    "strb r11, [r3, lr]\n\t"                        \
    "strb r12, [r3], #1\n\t"

/* A file-scope Thumb-2 function NAME (a string literal) in its own section, hidden: the text
 * between TDN_ASM_BEGIN and TDN_ASM_END is its body. */
#define TDN_ASM_BEGIN(NAME)                                                                        \
    ".pushsection .text." NAME ",\"ax\",%progbits\n\t.syntax unified\n\t.thumb\n\t.p2align 2\n\t" \
    ".global " NAME "\n\t.hidden " NAME "\n\t.type " NAME ", %function\n\t.thumb_func\n" NAME ":\n\t"
#define TDN_ASM_END(NAME) ".size " NAME ", . - " NAME "\n\t.popsection"

/* One routine: ODD_GROUP is TDN_PP_GROUP when the group count is even (the first group is peeled
 * to start the second pixel's accumulators from the bias, one more makes the rest even). */
#define TDN_PP_ROUTINE(NAME, ODD_GROUP)                                                    \
    __asm(TDN_ASM_BEGIN(NAME)                                                              \
          "push {r4-r11, lr}\n\t"                                                          \
          "add r12, r0, #16\n\t"                                                           \
          "ldm r12, {r4-r7}\n\t"                                                           \
          "push {r4-r7}\n\t"                                                               \
          "ldm r0, {r0-r3}\n"                                                              \
          "1:\n\t"                                                                         \
          "ldrd r4, r6, [r2], #8\n\t"                                                      \
          "push {r0, r2, r3}\n\t"                                                          \
          "ldrd r2, r3, [sp, #20]\n\t" TDN_PP_GROUP_FIRST ODD_GROUP                        \
          "cmp r0, r3\n\t"                                                                 \
          "beq 3f\n"                                                                       \
          "2:\n\t" TDN_PP_GROUP TDN_PP_GROUP                                               \
          "cmp r0, r3\n\t"                                                                 \
          "bne 2b\n"                                                                       \
          "3:\n\t"                                                                         \
          "pop {r0, r2, r3}\n\t"                                                           \
          "ldrd lr, r12, [sp]\n\t"                                                         \
          "add r1, r1, r12\n\t" TDN_PP_RQ("r4", "r5") TDN_PP_RQ("r6", "r7")               \
          "tst r9, #0x100\n\t"                                                             \
          "beq 1b\n\t"                                                                     \
          "add sp, sp, #16\n\t"                                                            \
          "pop {r4-r11, pc}\n\t"                                                           \
          TDN_ASM_END(NAME))

TDN_PP_ROUTINE("tdn_pp_godd", "");
TDN_PP_ROUTINE("tdn_pp_geven", TDN_PP_GROUP);

/* The same routine fully unrolled for the small depths k = 4 G, G = 2, 4, 6, 7, 8 (tdn_pp_g2 ...; 7:
 * the stem's 27 depths padded to 28, see tdn_pp_run): the
 * column and both weight rows by immediate offsets (r0 and r1 stay put during the groups, r1 moves
 * on 2 k after them), so that no register holds dk or the column end and nothing is pushed per pair:
 * per pair 16 G + ~35 instructions. Frame: [sp] dist. Group J of G; P01 / P11: the accumulators the
 * second pixel's sums start from (the bias registers r4 / r6 in group 0, else r5 / r7). */
#define TDN_PPU_GROUP(G, J, P01, P11)                \
    "ldrd r8, r9, [r0, #(16*" J ")]\n\t"             \
    "ldrd r10, r11, [r0, #(16*" J "+8)]\n\t"         \
    "ldr r12, [r1, #(4*" J ")]\n\t"                  \
    "sxtb16 lr, r12\n\t"                             \
    "sxtb16 r12, r12, ror #8\n\t"                    \
    "smlad r5, r10, lr, " P01 "\n\t"                 \
    "smlad r5, r11, r12, r5\n\t"                     \
    "smlad r4, r8, lr, r4\n\t"                       \
    "smlad r4, r9, r12, r4\n\t"                      \
    "ldr r12, [r1, #(4*" G "+4*" J ")]\n\t"          \
    "sxtb16 lr, r12\n\t"                             \
    "sxtb16 r12, r12, ror #8\n\t"                    \
    "smlad r7, r10, lr, " P11 "\n\t"                 \
    "smlad r7, r11, r12, r7\n\t"                     \
    "smlad r6, r8, lr, r6\n\t"                       \
    "smlad r6, r9, r12, r6\n\t"

#define TDN_PPU_G0(G) TDN_PPU_GROUP(G, "0", "r4", "r6")
#define TDN_PPU_GJ(G, J) TDN_PPU_GROUP(G, J, "r5", "r7")
#define TDN_PPU_2 TDN_PPU_G0("2") TDN_PPU_GJ("2", "1")
#define TDN_PPU_4 TDN_PPU_G0("4") TDN_PPU_GJ("4", "1") TDN_PPU_GJ("4", "2") TDN_PPU_GJ("4", "3")
#define TDN_PPU_6                                                                                     \
    TDN_PPU_G0("6") TDN_PPU_GJ("6", "1") TDN_PPU_GJ("6", "2") TDN_PPU_GJ("6", "3") TDN_PPU_GJ("6", "4") \
        TDN_PPU_GJ("6", "5")
#define TDN_PPU_7                                                                                     \
    TDN_PPU_G0("7") TDN_PPU_GJ("7", "1") TDN_PPU_GJ("7", "2") TDN_PPU_GJ("7", "3") TDN_PPU_GJ("7", "4") \
        TDN_PPU_GJ("7", "5") TDN_PPU_GJ("7", "6")
#define TDN_PPU_8                                                                                     \
    TDN_PPU_G0("8") TDN_PPU_GJ("8", "1") TDN_PPU_GJ("8", "2") TDN_PPU_GJ("8", "3") TDN_PPU_GJ("8", "4") \
        TDN_PPU_GJ("8", "5") TDN_PPU_GJ("8", "6") TDN_PPU_GJ("8", "7")

/* One unrolled routine NAME: GROUPS per channel pair, the weights moving on PAIR_BYTES a pair. */
#define TDN_PP_UNROLLED(NAME, PAIR_BYTES, GROUPS)                                          \
    __asm(TDN_ASM_BEGIN(NAME)                                                              \
          "push {r4-r11, lr}\n\t"                                                          \
          "ldr r4, [r0, #16]\n\t"                                                          \
          "push {r4}\n\t"                                                                  \
          "ldm r0, {r0-r3}\n"                                                              \
          "1:\n\t"                                                                         \
          "ldrd r4, r6, [r2], #8\n\t" GROUPS                                               \
          "add r1, r1, #" PAIR_BYTES "\n\t"                                                \
          "ldr lr, [sp]\n\t" TDN_PP_RQ("r4", "r5") TDN_PP_RQ("r6", "r7")                   \
          "tst r9, #0x100\n\t"                                                             \
          "beq 1b\n\t"                                                                     \
          "add sp, sp, #4\n\t"                                                            \
          "pop {r4-r11, pc}\n\t"                                                           \
          TDN_ASM_END(NAME))
#define TDN_PPU_ROUTINE(NAME, G, GROUPS) TDN_PP_UNROLLED(NAME, "(8*" G ")", GROUPS)

/* The unrolled routines over pre-widened weights (tdn_pp_widen_weights: per pair and group the
 * words (w0, w2), (w1, w3) of the first channel, then of the second, 16 bytes): one LDRD per
 * channel and group instead of LDR and two SXTB16, 12 instructions for 16 MACs; r1 moves on 16 G
 * bytes a pair. tdn_pp_w2 ... for the depths of tdn_pp_g2 ... */
#define TDN_PPW_GROUP(J, P01, P11)                   \
    "ldrd r8, r9, [r0, #(16*" J ")]\n\t"             \
    "ldrd r10, r11, [r0, #(16*" J "+8)]\n\t"         \
    "ldrd lr, r12, [r1, #(16*" J ")]\n\t"            \
    "smlad r5, r10, lr, " P01 "\n\t"                 \
    "smlad r5, r11, r12, r5\n\t"                     \
    "smlad r4, r8, lr, r4\n\t"                       \
    "smlad r4, r9, r12, r4\n\t"                      \
    "ldrd lr, r12, [r1, #(16*" J "+8)]\n\t"          \
    "smlad r7, r10, lr, " P11 "\n\t"                 \
    "smlad r7, r11, r12, r7\n\t"                     \
    "smlad r6, r8, lr, r6\n\t"                       \
    "smlad r6, r9, r12, r6\n\t"

#define TDN_PPW_G0 TDN_PPW_GROUP("0", "r4", "r6")
#define TDN_PPW_GJ(J) TDN_PPW_GROUP(J, "r5", "r7")
#define TDN_PPW_2 TDN_PPW_G0 TDN_PPW_GJ("1")
#define TDN_PPW_4 TDN_PPW_2 TDN_PPW_GJ("2") TDN_PPW_GJ("3")
#define TDN_PPW_6 TDN_PPW_4 TDN_PPW_GJ("4") TDN_PPW_GJ("5")
#define TDN_PPW_7 TDN_PPW_6 TDN_PPW_GJ("6")
#define TDN_PPW_8 TDN_PPW_7 TDN_PPW_GJ("7")

#define TDN_PPW_ROUTINE(NAME, G, GROUPS) TDN_PP_UNROLLED(NAME, "(16*" G ")", GROUPS)

/* Both unrolled routines of depth 4 G: tdn_pp_g<G> and tdn_pp_w<G>. */
#define TDN_PP_DEPTH(G)                                         \
    TDN_PPU_ROUTINE("tdn_pp_g" #G, #G, TDN_PPU_##G);            \
    TDN_PPW_ROUTINE("tdn_pp_w" #G, #G, TDN_PPW_##G)

TDN_PP_DEPTH(2);
TDN_PP_DEPTH(4);
TDN_PP_DEPTH(6);
TDN_PP_DEPTH(7);
TDN_PP_DEPTH(8);

/* The pixel-pair loop of a 1x1 layer with k % 4 == 0 and an even channel count (no tail for C) in
 * assembly too: per pixel pair it widens the pair (as tdn_1x1_widen_pair: 2 LDR, 4 SXTAB16, 2 STRD
 * per group), calls the chunk's routine and moves the output on, ~15 instructions besides the
 * widening where the C loop spent ~60 (gcc keeps its state on the stack around the calls). The
 * inner routine saves r4-r11, so the loop's state lives in r4 (input), r5 (pixel pairs left) and
 * r11 (the arguments). */
typedef struct
{
    tdn_pp_args a;                       /* 0: the inner routine's arguments (a.out0 moves) */
    const int8_t *x;                     /* 32: the first pixel */
    int32_t k;                           /* 36 */
    int32_t pairs;                       /* 40: pixel pairs, >= 1 */
    uint32_t off2;                       /* 44: the input offset in both halfwords */
    int32_t out_step;                    /* 48: 2 cout */
    void (*inner)(const tdn_pp_args *);  /* 52 */
} tdn_pp_loop_args;

void tdn_pp_loop(const tdn_pp_loop_args *o);

__asm(TDN_ASM_BEGIN("tdn_pp_loop")
      "push {r4-r11, lr}\n\t"
      "mov r11, r0\n\t"
      "ldr r4, [r11, #32]\n\t"
      "ldr r5, [r11, #40]\n"
      "1:\n\t"
      "ldr r6, [r11, #0]\n\t"
      "ldr r7, [r11, #36]\n\t"
      "ldr r8, [r11, #44]\n\t"
      "add r9, r4, r7\n\t"
      "lsrs r10, r7, #2\n"
      "2:\n\t"
      "ldr r0, [r4], #4\n\t"
      "ldr r1, [r9], #4\n\t"
      "sxtab16 r2, r8, r0\n\t"
      "sxtab16 r0, r8, r0, ror #8\n\t"
      "sxtab16 r3, r8, r1\n\t"
      "sxtab16 r1, r8, r1, ror #8\n\t"
      "strd r2, r0, [r6], #8\n\t"
      "strd r3, r1, [r6], #8\n\t"
      "subs r10, r10, #1\n\t"
      "bne 2b\n\t"
      "mov r4, r9\n\t" /* the next pair starts where the second pixel ended */
      "mov r0, r11\n\t"
      "ldr r12, [r11, #52]\n\t"
      "blx r12\n\t"
      "ldr r0, [r11, #12]\n\t"
      "ldr r1, [r11, #48]\n\t"
      "add r0, r0, r1\n\t"
      "str r0, [r11, #12]\n\t"
      "subs r5, r5, #1\n\t"
      "bne 1b\n\t"
      "pop {r4-r11, pc}\n\t"
      TDN_ASM_END("tdn_pp_loop"));

/* Whether the layer runs through tdn_pp_*: every shift in [-31, -2], the range [-128, 127], and
 * for every channel |khi'| + 2^30 + 2 < 2^31 so that the high word of the SMLAL (whose magnitude
 * without the folded offset is below 2^30 + 2^(r1-1) + 1 for every int32 accumulator and
 * multiplier below 2^31) stays inside int32 with it: (2 |out_offset| + 1) << (r1 - 1) <= 2^30 - 2. */
static int tdn_pp_layer_ok(const int32_t *shift, int32_t cout, int32_t out_offset, int32_t act_min, int32_t act_max)
{
    if (act_min != -128 || act_max != 127 || cout < 1)
    {
        return 0;
    }
    /* one pass for the smallest and largest shift: the bound on the offset grows with the right
     * shift, so the largest right shift decides it for every channel */
    int32_t lo = shift[0], hi = shift[0];
    for (int32_t i = 1; i < cout; i++)
    {
        lo = shift[i] < lo ? shift[i] : lo;
        hi = shift[i] > hi ? shift[i] : hi;
    }
    const int64_t odd = 2 * (int64_t)(out_offset < 0 ? -out_offset : out_offset) + 1;
    return hi <= -2 && lo >= -31 && (odd << (-lo - 2)) <= ((int64_t)1 << 30) - 2;
}

/* The table entries of channel pairs [p0, p1) into tab, the last one marked. */
static void tdn_pp_table(tdn_pp_pair *tab, int32_t p0, int32_t p1, const int32_t *bias, const int32_t *mult,
                         const int32_t *shift, int32_t out_offset)
{
    const uint32_t odd = 2u * (uint32_t)out_offset + 1u;
    for (int32_t p = p0; p < p1; p++, tab++)
    {
        const int32_t c = 2 * p;
        tab->b0 = bias ? bias[c] : 0;
        tab->b1 = bias ? bias[c + 1] : 0;
        tab->m0 = mult[c];
        tab->r0 = ~shift[c]; /* -shift - 1 */
        tab->k0 = (int32_t)(odd << (tab->r0 - 1));
        tab->m1 = mult[c + 1];
        tab->r1 = ~shift[c + 1];
        tab->k1 = (int32_t)(odd << (tab->r1 - 1));
    }
    tab[-1].r1 |= 0x100;
}

/* A staged layer's geometry made once per call: the output pixels whose receptive field lies
 * inside the input ([oy_lo, oy_hi) x [ox_lo, ox_hi), empty with dilation) are k_h runs of n = k_w * c
 * input bytes, step bytes apart. */
typedef struct
{
    const tdn_im2col *g;
    int32_t n, step, oy_lo, oy_hi, ox_lo, ox_hi;
    int32_t stem; /* a 3x3 kernel over 3 channels (tdn_stem_widen_pair), no dilation */
} tdn_stager;

/* [lo, hi): the outputs of one axis whose k taps (stride s, padding pad) lie inside n inputs */
static void tdn_inside(int32_t n, int32_t k, int32_t s, int32_t pad, int32_t dil, int32_t *lo, int32_t *hi)
{
    *lo = (pad + s - 1) / s;
    *hi = dil == 1 && n - k + pad >= 0 ? (n - k + pad) / s + 1 : 0;
}

static tdn_stager tdn_stager_make(const tdn_im2col *g)
{
    tdn_stager st;
    st.g = g;
    st.n = g->k_w * g->in_c;
    st.step = g->in_w * g->in_c;
    tdn_inside(g->in_h, g->k_h, g->stride_h, g->pad_h, g->dil_h, &st.oy_lo, &st.oy_hi);
    tdn_inside(g->in_w, g->k_w, g->stride_w, g->pad_w, g->dil_w, &st.ox_lo, &st.ox_hi);
    st.stem = g->k_h == 3 && g->k_w == 3 && g->in_c == 3 && g->dil_h == 1 && g->dil_w == 1;
    return st;
}

/* One group of the stem's pixel pair: the raw words w0, w1 widened with the offset (as
 * tdn_1x1_widen_pair) and stored. */
#define TDN_STEM_WIDEN                                                                                                 \
    "sxtab16 %[e0], %[off], %[w0]\n\t"                                                                                \
    "sxtab16 %[w0], %[off], %[w0], ror #8\n\t"                                                                        \
    "sxtab16 %[e1], %[off], %[w1]\n\t"                                                                                \
    "sxtab16 %[w1], %[off], %[w1], ror #8\n\t"                                                                        \
    "strd %[e0], %[w0], [%[col]], #8\n\t"                                                                             \
    "strd %[e1], %[w1], [%[col]], #8\n\t"

/* The 3x3 RGB stem's pixel pair at s0, s1 (each 3 input rows of 9 bytes, step bytes apart, all
 * inside the input) straight into the widened column of tdn_1x1_widen_pair (7 groups): a pixel's
 * 27 bytes as 7 words of unaligned loads, the groups that straddle two rows merged from a byte /
 * halfword of one and the low bytes of the next (ORR with a shift), the 28th byte the zero point
 * (so that its widened lane is 0, as tdn_stage_pixel makes it). Every load stays inside the 9
 * bytes of its row. About 70 instructions a pair instead of ~230 through tdn_stage_pixel twice and
 * tdn_1x1_widen_pair. */
TDN_INLINE void tdn_stem_widen_pair(const int8_t *s0, const int8_t *s1, int32_t step, int32_t offset, uint32_t *col)
{
    const uint32_t off2 = ((uint32_t)offset & 0xFFFFu) | ((uint32_t)offset << 16);
    const uint32_t zp24 = (uint32_t)(uint8_t)(-offset) << 24;
    uint32_t w0, w1, t0, t1, e0, e1;
    const int8_t *q0, *q1;
    __asm volatile("ldr %[w0], [%[s0]]\n\t" /* row 0 bytes 0-3 */
                   "ldr %[w1], [%[s1]]\n\t" TDN_STEM_WIDEN
                   "ldr %[w0], [%[s0], #4]\n\t" /* row 0 bytes 4-7 */
                   "ldr %[w1], [%[s1], #4]\n\t" TDN_STEM_WIDEN
                   "add %[q0], %[s0], %[step]\n\t" /* row 0 byte 8, row 1 bytes 0-2 */
                   "add %[q1], %[s1], %[step]\n\t"
                   "ldrb %[t0], [%[s0], #8]\n\t"
                   "ldr %[w0], [%[q0]]\n\t"
                   "orr %[w0], %[t0], %[w0], lsl #8\n\t"
                   "ldrb %[t1], [%[s1], #8]\n\t"
                   "ldr %[w1], [%[q1]]\n\t"
                   "orr %[w1], %[t1], %[w1], lsl #8\n\t" TDN_STEM_WIDEN
                   "ldr %[w0], [%[q0], #3]\n\t" /* row 1 bytes 3-6 */
                   "ldr %[w1], [%[q1], #3]\n\t" TDN_STEM_WIDEN
                   "ldrh %[t0], [%[q0], #7]\n\t" /* row 1 bytes 7-8, row 2 bytes 0-1 */
                   "add %[q0], %[q0], %[step]\n\t"
                   "ldr %[w0], [%[q0]]\n\t"
                   "orr %[w0], %[t0], %[w0], lsl #16\n\t"
                   "ldrh %[t1], [%[q1], #7]\n\t"
                   "add %[q1], %[q1], %[step]\n\t"
                   "ldr %[w1], [%[q1]]\n\t"
                   "orr %[w1], %[t1], %[w1], lsl #16\n\t" TDN_STEM_WIDEN
                   "ldr %[w0], [%[q0], #2]\n\t" /* row 2 bytes 2-5 */
                   "ldr %[w1], [%[q1], #2]\n\t" TDN_STEM_WIDEN
                   "ldr %[w0], [%[q0], #5]\n\t" /* row 2 bytes 6-8 (byte 5 shifted out), the zero point */
                   "ldr %[w1], [%[q1], #5]\n\t"
                   "orr %[w0], %[zp], %[w0], lsr #8\n\t"
                   "orr %[w1], %[zp], %[w1], lsr #8\n\t" TDN_STEM_WIDEN
                   : [w0] "=&r"(w0), [w1] "=&r"(w1), [t0] "=&r"(t0), [t1] "=&r"(t1), [e0] "=&r"(e0), [e1] "=&r"(e1),
                     [q0] "=&r"(q0), [q1] "=&r"(q1), [col] "+&r"(col)
                   : [s0] "r"(s0), [s1] "r"(s1), [step] "r"(step), [off] "r"(off2), [zp] "r"(zp24)
                   : "memory");
}

/* tdn_stage_field of pixel pix, with the runs of an inside pixel copied a word at a time. */
static void tdn_stage_pixel(const tdn_stager *st, int32_t pix, int8_t *dst)
{
    const tdn_im2col *g = st->g;
    const int32_t oy = pix / g->out_w, ox = pix - oy * g->out_w;
    if (oy < st->oy_lo || oy >= st->oy_hi || ox < st->ox_lo || ox >= st->ox_hi)
    {
        tdn_stage_field(g, pix, dst);
        return;
    }
    const int32_t n = st->n;
    const int8_t *src = g->in + (oy * g->stride_h - g->pad_h) * st->step + (ox * g->stride_w - g->pad_w) * g->in_c;
    int8_t *const end = dst + g->k_h * n;
    if (n == 9 && g->k_h == 3)
    {
        /* the 3x3 RGB stem: straight-line copies */
        tdn_copy_run(dst, src, 9);
        tdn_copy_run(dst + 9, src + st->step, 9);
        tdn_copy_run(dst + 18, src + 2 * st->step, 9);
    }
    else
    {
        for (; dst < end; src += st->step, dst += n)
        {
            tdn_copy_run(dst, src, n);
        }
    }
    for (int32_t i = g->rhs_cols; i < tdn_align4(g->rhs_cols); i++)
    {
        end[i - g->rhs_cols] = (int8_t)(-g->offset); /* the zero point: see tdn_stage_field */
    }
}

/* The input window of output pixel p of a stem (st->stem) when it lies inside the input, else NULL. */
static const int8_t *tdn_stem_window(const tdn_stager *st, int32_t p)
{
    const tdn_im2col *g = st->g;
    const int32_t oy = p / g->out_w, ox = p - oy * g->out_w;
    if (oy < st->oy_lo || oy >= st->oy_hi || ox < st->ox_lo || ox >= st->ox_hi)
    {
        return NULL;
    }
    return g->in + (oy * g->stride_h - g->pad_h) * st->step + (ox * g->stride_w - g->pad_w) * 3;
}

/* The stem's pixel pairs from pixel p on along p's output row whose two windows lie inside the
 * input, each widened by tdn_stem_widen_pair into col and run through routine with a (outputs at
 * out: the chunk's first channel of pixel 0); the number of pairs, 0 when p does not start one.
 * One loop per row run: the per-pair bookkeeping of tdn_pp_run's general loop was as much as the
 * widening itself. */
static int32_t tdn_stem_run(const tdn_stager *st, int32_t p, int32_t off, tdn_pp_args *a,
                            void (*routine)(const tdn_pp_args *), uint32_t *col, int8_t *out, int32_t cout)
{
    const tdn_im2col *g = st->g;
    const int32_t n = (st->ox_hi - (p % g->out_w)) / 2;
    const int8_t *s = tdn_stem_window(st, p);
    if (s == NULL || n <= 0)
    {
        return 0;
    }
    const int32_t px = 3 * g->stride_w;
    a->out0 = out + p * cout;
    a->dist = cout;
    for (int32_t i = 0; i < n; i++, s += 2 * px, a->out0 += 2 * cout)
    {
        tdn_stem_widen_pair(s, s + px, st->step, off, col);
        routine(a);
    }
    return n;
}

/* Pixel pair (p, p + two) widened into col: from the input (1x1, k values a pixel) or, when st is
 * not NULL, staged receptive fields (padded to whole groups). */
static void tdn_pp_fill(const int8_t *in, const tdn_stager *st, int32_t k, int32_t off, int32_t p, int32_t two,
                        uint32_t *col)
{
    if (st && st->stem && two)
    {
        /* two windows inside the input, also a pair across two rows */
        const int8_t *s0 = tdn_stem_window(st, p), *s1 = tdn_stem_window(st, p + 1);
        if (s0 != NULL && s1 != NULL)
        {
            tdn_stem_widen_pair(s0, s1, st->step, off, col);
            return;
        }
    }
    if (st)
    {
        int8_t stage[2][TDN_CONV_STAGE_MAX];
        tdn_stage_pixel(st, p, stage[0]);
        if (two)
        {
            tdn_stage_pixel(st, p + 1, stage[1]);
        }
        tdn_1x1_widen_pair(stage[0], stage[two], tdn_align4(k), off, col);
    }
    else
    {
        tdn_1x1_widen_pair(in + p * k, in + (p + two) * k, k, off, col);
    }
}

/* The rows of channel pairs [0, pairs) (k weights each) pre-widened for tdn_pp_w*: per pair and group
 * of 4 depths the SXTB16 words (w0, w2), (w1, w3) of the pair's first channel, then of its second;
 * the depths past k weigh 0. */
static void tdn_pp_widen_weights(const int8_t *w, int32_t k, int32_t pairs, int32_t gp, uint32_t *dst)
{
    const int32_t full = k >> 2;
    for (int32_t j = 0; j < pairs; j++)
    {
        const int8_t *r0 = w + 2 * j * k, *r1 = r0 + k;
        for (int32_t g = 0; g < full; g++, dst += 4)
        {
            const tdn_s16x4 a = tdn_widen_s8x4(tdn_read_u32(r0 + 4 * g)), b = tdn_widen_s8x4(tdn_read_u32(r1 + 4 * g));
            dst[0] = (uint32_t)a.even;
            dst[1] = (uint32_t)a.odd;
            dst[2] = (uint32_t)b.even;
            dst[3] = (uint32_t)b.odd;
        }
        if (full < gp) /* the last k % 4 depths, zero beyond */
        {
            uint32_t v0 = 0, v1 = 0;
            for (int32_t i = 0; i < (k & 3); i++)
            {
                v0 |= (uint32_t)(uint8_t)r0[4 * full + i] << (8 * i);
                v1 |= (uint32_t)(uint8_t)r1[4 * full + i] << (8 * i);
            }
            const tdn_s16x4 a = tdn_widen_s8x4(v0), b = tdn_widen_s8x4(v1);
            dst[0] = (uint32_t)a.even;
            dst[1] = (uint32_t)a.odd;
            dst[2] = (uint32_t)b.even;
            dst[3] = (uint32_t)b.odd;
            dst += 4;
        }
    }
}

/* A unit-stride 1x1 (or staged) layer of npix pixels through tdn_pp_*; 0 when it does not apply
 * (tdn_pp_layer_ok, fewer than 4 pixels: the table would not pay, no pair for the routine). The
 * routine takes the channel pairs in chunks of at most TDN_PP_PAIRS (each chunk widens the pixels
 * again). With k % 4 != 0 it reads every row from a zero-padded copy where that fits beside the
 * table; else it takes the pairs whose padded last group reads inside the weights, the last pair
 * or two from a copy of their rows (TDN_PP_TAIL) or tdn_1x1_s1_pair. An odd last channel runs
 * through tdn_1x1_s1_pair in the last chunk. */
static int tdn_pp_run(const int8_t *in, const tdn_im2col *g, int32_t npix, int32_t k, int32_t off,
                      const int8_t *weights, int32_t cout, const int32_t *bias,
                      const cmsis_nn_per_channel_quant_params *q, int32_t out_offset, uint32_t *col, int8_t *out)
{
    const int32_t groups = k >> 2, r = k & 3, gp = groups + (r != 0), all = cout / 2;
    /* pair j reads its second row's bytes [(2j + 1) k, (2j + 1) k + 4 gp) */
    int32_t npairs = all;
    while (npairs > 0 && (2 * npairs - 1) * k + 4 * gp > cout * k)
    {
        npairs--;
    }
    /* padded depths (k % 4 != 0) whose even channels' rows, each padded with zeros to 4 gp bytes, fit
     * beside their table in the table's space (the stem: 8 pairs, 256 + 448 bytes): every pair runs
     * from that copy (rows 4 gp apart: the unrolled routines apply) */
    union
    {
        tdn_pp_pair pairs[TDN_PP_PAIRS];
        uint32_t words[TDN_PP_SPACE / 4];
    } tab_space;
    tdn_pp_pair *const tab = tab_space.pairs;
    /* depths of an unrolled routine (4 G, G = 2, 4, 6, 7, 8, padded or not) whose pairs' rows,
     * pre-widened (16 G bytes a pair), fit beside their table: every pair through tdn_pp_w* from
     * that copy (the weights widened once per call instead of once per pixel pair) */
    void (*const wroutine)(const tdn_pp_args *) = gp == 2 ? tdn_pp_w2 : gp == 4 ? tdn_pp_w4 : gp == 6 ? tdn_pp_w6
                                                : gp == 7 ? tdn_pp_w7 : gp == 8 ? tdn_pp_w8 : NULL;
    const int widened = wroutine != NULL && all > 0 && all * (int32_t)(sizeof(tdn_pp_pair) + 16 * gp) <= TDN_PP_SPACE;
    const int padded = !widened && r != 0 && all > 0 &&
                       all * (int32_t)sizeof(tdn_pp_pair) + 8 * all * gp <= (int32_t)sizeof(tab_space);
    /* else the pairs after npairs (at most 2: 1 unless k == 1) run from a copy of their rows with 4
     * bytes after them, when it fits TDN_PP_TAIL bytes; else through tdn_1x1_s1_pair */
    const int32_t tail_bytes = 2 * (all - npairs) * k;
    const int copy = !widened && !padded && npairs < all && tail_bytes + 4 <= TDN_PP_TAIL;
    if (npix < 4 || (npairs == 0 && !copy && !padded && !widened) ||
        !tdn_pp_layer_ok(q->shift, cout, out_offset, -128, 127))
    {
        return 0;
    }
    const int8_t *wts = weights;
    int32_t kw = k; /* the distance of the rows the routine reads */
    if (widened)
    {
        tdn_pp_widen_weights(weights, k, all, gp, (uint32_t *)(tab + all));
        wts = (const int8_t *)(tab + all);
        kw = 8 * gp; /* a.w = wts + 2 * p0 * kw: 16 G bytes a pair */
        npairs = all;
    }
    else if (padded)
    {
        int8_t *dst = (int8_t *)(tab + all);
        for (int32_t c = 0; c < 2 * all; c++, dst += 4 * gp)
        {
            memcpy(dst, weights + c * k, (size_t)k);
            memset(dst + k, 0, (size_t)(4 * gp - k)); /* they meet zero column lanes: any value would do */
        }
        wts = (const int8_t *)(tab + all);
        kw = 4 * gp;
        npairs = all;
    }
    /* the tail pairs (padded depths only) always take the looped routine */
    void (*const tail_routine)(const tdn_pp_args *) = (gp & 1) ? tdn_pp_godd : tdn_pp_geven;
    void (*routine)(const tdn_pp_args *) = tail_routine;
    if (widened)
    {
        routine = wroutine;
    }
    else if (kw == 4 * gp)
    {
        routine = kw == 8 ? tdn_pp_g2 : kw == 16 ? tdn_pp_g4 : kw == 24 ? tdn_pp_g6 : kw == 28 ? tdn_pp_g7
                : kw == 32 ? tdn_pp_g8 : routine;
    }
    const int32_t nchunks = npairs > 0 ? (npairs + TDN_PP_PAIRS - 1) / TDN_PP_PAIRS : 1;
    const int32_t per = npairs > 0 ? (npairs + nchunks - 1) / nchunks : 1;
    tdn_pp_pair tail_tab[2];
    int8_t tail_w[TDN_PP_TAIL];
    tdn_stager stager;
    const tdn_stager *st = NULL;
    if (g)
    {
        stager = tdn_stager_make(g);
        st = &stager;
    }
    tdn_pp_args a, t;
    a.col = col;
    a.tab = tab;
    a.wadv = 2 * kw - 4 * gp;
    a.dk = kw - 4;
    a.col_end = col + 4 * gp;
    t = a;
    t.wadv = 2 * k - 4 * gp;
    t.dk = k - 4;
    if (copy)
    {
        memcpy(tail_w, weights + 2 * npairs * k, (size_t)tail_bytes);
        memset(tail_w + tail_bytes, 0, 4);
        tdn_pp_table(tail_tab, npairs, all, bias, q->multiplier, q->shift, out_offset);
        t.w = tail_w;
        t.tab = tail_tab;
    }
    for (int32_t p0 = 0; p0 < npairs || p0 == 0; p0 += per)
    {
        const int32_t p1 = p0 + per < npairs ? p0 + per : npairs;
        if (p1 > p0)
        {
            tdn_pp_table(tab, p0, p1, bias, q->multiplier, q->shift, out_offset);
        }
        a.w = wts + 2 * p0 * kw;
        int32_t p = 0;
        if (st == NULL && r == 0 && (cout & 1) == 0)
        {
            /* every pixel pair but an odd last pixel through tdn_pp_loop (nothing for C per pair) */
            tdn_pp_loop_args o;
            o.a = a;
            o.a.out0 = out + 2 * p0;
            o.a.dist = cout;
            o.x = in;
            o.k = k;
            o.pairs = npix / 2;
            o.off2 = ((uint32_t)off & 0xFFFFu) | ((uint32_t)off << 16);
            o.out_step = 2 * cout;
            o.inner = routine;
            tdn_pp_loop(&o);
            p = 2 * o.pairs;
        }
        /* the stem's interior pairs in row runs, where this chunk has no per-pair tails */
        const int stem_runs = st != NULL && st->stem && p1 > p0 && (p1 < npairs || (!copy && 2 * npairs == cout));
        for (; p < npix; p += 2)
        {
            if (stem_runs)
            {
                const int32_t n = tdn_stem_run(st, p, off, &a, routine, col, out + 2 * p0, cout);
                if (n > 0)
                {
                    p += 2 * n - 2;
                    continue;
                }
            }
            const int32_t two = p + 1 < npix;
            int8_t *out0 = out + p * cout, *out1 = out0 + two * cout;
            tdn_pp_fill(in, st, k, off, p, two, col);
            a.out0 = out0 + 2 * p0;
            a.dist = two * cout;
            if (p1 > p0)
            {
                routine(&a);
            }
            if (p1 < npairs)
            {
                continue;
            }
            int32_t oc = 2 * npairs;
            if (copy)
            {
                t.out0 = out0 + oc;
                t.dist = a.dist;
                tail_routine(&t);
                oc = 2 * all;
            }
            for (; oc + 2 <= cout; oc += 2)
            {
                tdn_1x1_s1_pair(col, k, groups, r, weights, oc, 1, bias, q->multiplier, q->shift, out_offset, -128,
                                127, out0, out1, 1);
            }
            if (oc < cout)
            {
                tdn_1x1_s1_pair(col, k, groups, r, weights, oc, 0, bias, q->multiplier, q->shift, out_offset, -128,
                                127, out0, out1, 1);
            }
        }
    }
    return 1;
}

/* npix pixels (contiguous, k values each) in pairs; the odd last pixel is widened twice. */
static void tdn_1x1_s1_body(const int8_t *in, int32_t npix, int32_t k, const int8_t *weights, int32_t cout,
                            const int32_t *bias, const int32_t *mult, const int32_t *shift, int32_t in_off,
                            int32_t out_offset, int32_t act_min, int32_t act_max, uint32_t *col, int8_t *out,
                            int fast)
{
    for (int32_t p = 0; p < npix; p += 2)
    {
        const int32_t two = p + 1 < npix;
        tdn_1x1_widen_pair(in, in + two * k, k, in_off, col);
        tdn_s1_cols(col, k, weights, cout, bias, mult, shift, out_offset, act_min, act_max, out, out + two * cout,
                    fast);
        in += 2 * k;
        out += 2 * cout;
    }
}

/* The unit-stride 1x1 through the widened columns; 0 when the buffer does not allow it (the caller
 * then runs tdn_conv_1x1). */
static int tdn_conv_1x1_s1(const cmsis_nn_context *ctx, const int8_t *in, int32_t npix, int32_t k,
                           const int8_t *weights, int32_t cout, const int32_t *bias,
                           const cmsis_nn_per_channel_quant_params *q, int32_t in_off, int32_t out_offset,
                           int32_t act_min, int32_t act_max, int8_t *out)
{
    if (ctx == NULL || ctx->buf == NULL || ((uintptr_t)ctx->buf & 3u) != 0 || ctx->size < 4 * tdn_align4(k))
    {
        return 0;
    }
    if (act_min == -128 && act_max == 127 &&
        tdn_pp_run(in, NULL, npix, k, in_off, weights, cout, bias, q, out_offset, (uint32_t *)ctx->buf, out))
    {
        return 1;
    }
    tdn_1x1_s1_body(in, npix, k, weights, cout, bias, q->multiplier, q->shift, in_off, out_offset, act_min, act_max,
                    (uint32_t *)ctx->buf, out, tdn_rq_r2_layer(q->shift, cout, act_min, act_max));
    return 1;
}
#endif /* TDN_DSP */

/* 1x1, no padding, no dilation: the im2col-free path. */
static int tdn_is_1x1(const cmsis_nn_conv_params *p, const cmsis_nn_dims *f)
{
    return f->h == 1 && f->w == 1 && p->padding.h == 0 && p->padding.w == 0 && tdn_dilation(p->dilation.h) == 1 &&
           tdn_dilation(p->dilation.w) == 1;
}

static arm_cmsis_nn_status tdn_convolve_1x1(const cmsis_nn_context *ctx,
                                            const cmsis_nn_conv_params *p,
                                            const cmsis_nn_per_channel_quant_params *q,
                                            const cmsis_nn_dims *input_dims,
                                            const int8_t *input_data,
                                            const cmsis_nn_dims *filter_dims,
                                            const int8_t *filter_data,
                                            const int32_t *bias_data,
                                            const cmsis_nn_dims *output_dims,
                                            int8_t *output_data)
{
    if (filter_dims->c != input_dims->c)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    tdn_1x1 g;
    g.iw = input_dims->w;
    g.k = input_dims->c;
    g.ow = output_dims->w;
    g.sh = p->stride.h;
    g.sw = p->stride.w;
    g.npix = output_dims->h * output_dims->w;
    const int32_t in_image = input_dims->h * input_dims->w * input_dims->c;
    const int32_t out_image = g.npix * output_dims->c;
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        g.in = input_data + b * in_image;
#if TDN_DSP
        if (g.sh == 1 && g.sw == 1 &&
            tdn_conv_1x1_s1(ctx, g.in, g.npix, g.k, filter_data, output_dims->c, bias_data, q, p->input_offset,
                            p->output_offset, p->activation.min, p->activation.max, output_data + b * out_image))
        {
            continue;
        }
#else
        (void)ctx;
#endif
        tdn_conv_1x1(&g, filter_data, output_dims->c, bias_data, q, p->input_offset, p->output_offset,
                     p->activation.min, p->activation.max, output_data + b * out_image);
    }
    return ARM_CMSIS_NN_SUCCESS;
}

#if TDN_DSP
/* tdn_convolve for rhs_cols <= TDN_CONV_STAGE_MAX with a word-aligned buffer of 4 * align4(rhs_cols) bytes;
 * 0 when it does not apply. */
static int tdn_convolve_staged(const cmsis_nn_context *ctx, const tdn_im2col *geo, int32_t n_batch,
                               const int8_t *filter, const int32_t *bias, const cmsis_nn_per_channel_quant_params *q,
                               int32_t cout, int32_t npix, int32_t out_offset, int32_t act_min, int32_t act_max,
                               int8_t *output)
{
    const int32_t k = geo->rhs_cols;
    if (k > TDN_CONV_STAGE_MAX || ((uintptr_t)ctx->buf & 3u) != 0 || ctx->size < 4 * tdn_align4(k))
    {
        return 0;
    }
    int8_t stage[2][TDN_CONV_STAGE_MAX];
    uint32_t *col = (uint32_t *)ctx->buf;
    const int fast = tdn_rq_r2_layer(q->shift, cout, act_min, act_max);
    tdn_im2col g = *geo;
    for (int32_t b = 0; b < n_batch; b++)
    {
        g.in = geo->in + b * g.in_h * g.in_w * g.in_c;
        int8_t *out = output + b * npix * cout;
        if (act_min == -128 && act_max == 127 &&
            tdn_pp_run(NULL, &g, npix, k, g.offset, filter, cout, bias, q, out_offset, col, out))
        {
            continue;
        }
        for (int32_t pix = 0; pix < npix; pix += 2)
        {
            const int32_t two = pix + 1 < npix;
            tdn_stage_field(&g, pix, stage[0]);
            if (two)
            {
                tdn_stage_field(&g, pix + 1, stage[1]);
            }
            tdn_1x1_widen_pair(stage[0], stage[two], tdn_align4(k), g.offset, col);
            tdn_s1_cols(col, k, filter, cout, bias, q->multiplier, q->shift, out_offset, act_min, act_max, out,
                        out + two * cout, fast);
            out += 2 * cout;
        }
    }
    return 1;
}
#endif /* TDN_DSP */

static arm_cmsis_nn_status tdn_convolve(const cmsis_nn_context *ctx,
                                        const cmsis_nn_conv_params *p,
                                        const cmsis_nn_per_channel_quant_params *q,
                                        const cmsis_nn_dims *input_dims,
                                        const int8_t *input_data,
                                        const cmsis_nn_dims *filter_dims,
                                        const int8_t *filter_data,
                                        const int32_t *bias_data,
                                        const cmsis_nn_dims *output_dims,
                                        int8_t *output_data)
{
    if (ctx == NULL || ctx->buf == NULL || filter_dims->c != input_dims->c)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    tdn_im2col g;
    g.in_h = input_dims->h;
    g.in_w = input_dims->w;
    g.in_c = input_dims->c;
    g.k_h = filter_dims->h;
    g.k_w = filter_dims->w;
    g.stride_h = p->stride.h;
    g.stride_w = p->stride.w;
    g.pad_h = p->padding.h;
    g.pad_w = p->padding.w;
    g.dil_h = tdn_dilation(p->dilation.h);
    g.dil_w = tdn_dilation(p->dilation.w);
    g.out_w = output_dims->w;
    g.offset = p->input_offset;
    g.rhs_cols = g.k_h * g.k_w * g.in_c;
    const int32_t aligned = tdn_align4(g.rhs_cols);
    int16_t *col0 = (int16_t *)ctx->buf;
    int16_t *col1 = col0 + aligned;
    const int32_t cout = output_dims->c;
    const int32_t npix = output_dims->h * output_dims->w;
#if TDN_DSP
    g.in = input_data;
    if (tdn_convolve_staged(ctx, &g, input_dims->n, filter_data, bias_data, q, cout, npix, p->output_offset,
                            p->activation.min, p->activation.max, output_data))
    {
        return ARM_CMSIS_NN_SUCCESS;
    }
#endif
    const int full = tdn_rq_full_layer(q->shift, cout, p->activation.min, p->activation.max);
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        g.in = input_data + b * g.in_h * g.in_w * g.in_c;
        int8_t *out = output_data + b * npix * cout;
        int32_t pix = 0;
        for (; pix + 2 <= npix; pix += 2)
        {
            tdn_fill_column(&g, pix / g.out_w, pix % g.out_w, col0);
            tdn_fill_column(&g, (pix + 1) / g.out_w, (pix + 1) % g.out_w, col1);
            tdn_conv_cols(filter_data, cout, g.rhs_cols, col0, col1, bias_data, q->multiplier, q->shift,
                          p->output_offset, p->activation.min, p->activation.max, out, out + cout, full);
            out += 2 * cout;
        }
        if (pix < npix)
        {
            tdn_fill_column(&g, pix / g.out_w, pix % g.out_w, col0);
            tdn_conv_cols(filter_data, cout, g.rhs_cols, col0, NULL, bias_data, q->multiplier, q->shift,
                          p->output_offset, p->activation.min, p->activation.max, out, NULL, full);
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

arm_cmsis_nn_status arm_convolve_s8(const cmsis_nn_context *ctx,
                                    const cmsis_nn_conv_params *conv_params,
                                    const cmsis_nn_per_channel_quant_params *quant_params,
                                    const cmsis_nn_dims *input_dims,
                                    const int8_t *input_data,
                                    const cmsis_nn_dims *filter_dims,
                                    const int8_t *filter_data,
                                    const cmsis_nn_dims *bias_dims,
                                    const int32_t *bias_data,
                                    const cmsis_nn_dims *upscale_dims,
                                    const cmsis_nn_dims *output_dims,
                                    int8_t *output_data)
{
    (void)bias_dims;
    if (upscale_dims != NULL && (upscale_dims->h > 1 || upscale_dims->w > 1))
    {
        return ARM_CMSIS_NN_NO_IMPL_ERROR;
    }
    return tdn_convolve(ctx, conv_params, quant_params, input_dims, input_data, filter_dims, filter_data,
                        bias_data, output_dims, output_data);
}

arm_cmsis_nn_status arm_convolve_1x1_s8_fast(const cmsis_nn_context *ctx,
                                             const cmsis_nn_conv_params *conv_params,
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
    (void)bias_dims;
    if (filter_dims->h != 1 || filter_dims->w != 1 || conv_params->padding.w != 0 || conv_params->padding.h != 0 ||
        conv_params->stride.w != 1 || conv_params->stride.h != 1)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    return tdn_convolve_1x1(ctx, conv_params, quant_params, input_dims, input_data, filter_dims, filter_data, bias_data,
                            output_dims, output_data);
}

arm_cmsis_nn_status arm_convolve_wrapper_s8(const cmsis_nn_context *ctx,
                                            const cmsis_nn_conv_params *conv_params,
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
    if (tdn_is_1x1(conv_params, filter_dims))
    {
        return tdn_convolve_1x1(ctx, conv_params, quant_params, input_dims, input_data, filter_dims, filter_data,
                                bias_data, output_dims, output_data);
    }
    return arm_convolve_s8(ctx, conv_params, quant_params, input_dims, input_data, filter_dims, filter_data,
                           bias_dims, bias_data, NULL, output_dims, output_data);
}

#endif /* !TINYDET_USE_CMSIS_NN */
