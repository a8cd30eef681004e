/*
 * Internal helpers shared by the bundled kernels (nn_*.c), the tinydet kernels (runtime.c) and the
 * reference loops (ref_kernels.c); not part of the public API. Each piece of arithmetic that two of
 * them share lives here once, as a static inline function, so that the fast kernels and the plain
 * ref_ loops cannot drift apart. The int8 requantization itself is in tinydet_arith.h.
 */
#ifndef TINYDET_NN_INTERNAL_H
#define TINYDET_NN_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "tinydet_arith.h"
#include "tinydet_nn.h"

/* The ACLE DSP/SIMD32 intrinsics (SXTB16, SMLAD, SMLABB/TT, SADD16) exist on Cortex-M4/M7/M33;
 * elsewhere (host builds, Cortex-M0) the kernels use plain 32-bit multiply-accumulates. */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && !defined(TINYDET_NO_DSP)
#include <arm_acle.h>
#define TDN_DSP 1
#else
#define TDN_DSP 0
#endif

/* Unaligned 32-bit load: memcpy compiles to a single LDR on cores that allow unaligned access. */
TDN_INLINE uint32_t tdn_read_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

#if TDN_DSP
/* Four int8 values of a word sign-extended into two words of two int16 lanes each: bytes 0 and 2
 * (even: SXTB16) and bytes 1 and 3 (odd: SXTB16 of the word rotated by 8). */
typedef struct
{
    int32_t even, odd;
} tdn_s16x4;

/* SXTB16 of v rotated right by 8 in one instruction (ACLE has no rotating form; gcc would emit a
 * separate ROR). */
TDN_INLINE int32_t tdn_sxtb16_ror8(uint32_t v)
{
    int32_t r;
    __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

TDN_INLINE tdn_s16x4 tdn_widen_s8x4(uint32_t v)
{
    tdn_s16x4 r;
    r.even = __sxtb16(v);
    r.odd = tdn_sxtb16_ror8(v);
    return r;
}

/* acc + the dot product of two 4-lane int16 vectors in the same (even, odd) lane order: two SMLAD. */
TDN_INLINE int32_t tdn_dot4(tdn_s16x4 a, tdn_s16x4 b, int32_t acc)
{
    return __smlad(a.odd, b.odd, __smlad(a.even, b.even, acc));
}
#endif

/* n rounded up to a multiple of 4 (word-aligned scratch sizes, SMLAD column groups). */
TDN_INLINE int32_t tdn_align4(int32_t n)
{
    return (n + 3) & ~3;
}

/* CMSIS-NN dilation fields: 0 (left unset by older callers) means 1. */
TDN_INLINE int32_t tdn_dilation(int32_t d)
{
    return d > 0 ? d : 1;
}

/* The window of output position o along one axis (stride, top/left padding pad, k taps one input
 * apart) over an input of n positions: it starts at input position `start` (negative inside the
 * padding) and its taps [lo, hi) fall inside the input; the others read as the zero point. Empty
 * (hi <= lo) when the window lies entirely in the padding. */
typedef struct
{
    int32_t start, lo, hi;
} tdn_window;

TDN_INLINE tdn_window tdn_window_at(int32_t o, int32_t stride, int32_t pad, int32_t k, int32_t n)
{
    tdn_window win;
    win.start = o * stride - pad;
    win.lo = win.start < 0 ? -win.start : 0;
    win.hi = win.start + k > n ? n - win.start : k;
    return win;
}

/* One channel of a depthwise window: sum over the taps [ky0, ky1) x [kx0, kx1) of (x + offset) * w,
 * x read from src (src_row elements between input rows, src_pix between pixels), w from wt (w_row
 * between kernel rows, w_pix between taps: the filter itself, or a dense copy of one channel).
 * Always inlined so that calls with constant bounds (the interior 5x5 / 7x7 windows) unroll. */
TDN_INLINE int32_t tdn_dw1_window(const int8_t *src, int32_t src_row, int32_t src_pix, const int8_t *wt, int32_t w_row,
                                  int32_t w_pix, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1, int32_t offset)
{
    int32_t acc = 0;
    for (int32_t ky = ky0; ky < ky1; ky++)
    {
        const int8_t *s = src + ky * src_row;
        const int8_t *k = wt + ky * w_row;
        for (int32_t kx = kx0; kx < kx1; kx++)
        {
            acc += (s[kx * src_pix] + offset) * k[kx * w_pix];
        }
    }
    return acc;
}

/* Depthwise convolution as plain loops (nn_dw_plain.c): one output element at a time, no unrolling,
 * bounds checked per tap. It is ref_arm_depthwise_conv_s8 (the baseline the benchmark compares
 * against) and the bundled arm_depthwise_conv_s8's path for what its fast path does not cover
 * (ch_mult > 1, dilation, kernels above 7x7). Same arguments as arm_depthwise_conv_s8. */
arm_cmsis_nn_status tdn_dw_plain(const cmsis_nn_context *ctx, const cmsis_nn_dw_conv_params *p,
                                 const cmsis_nn_per_channel_quant_params *q, const cmsis_nn_dims *in_d,
                                 const int8_t *in, const cmsis_nn_dims *f_d, const int8_t *w,
                                 const cmsis_nn_dims *bias_dims, const int32_t *bias, const cmsis_nn_dims *out_d,
                                 int8_t *out);

/* The fast depthwise path (nn_dw_fast.c): ch_mult 1, no dilation, at most TDN_DW_MAX_TAPS taps
 * (9x9, the in-place kernel's limit TINYDET_DW_INPLACE_MAX_TAPS). */
#define TDN_DW_MAX_TAPS 81
#define TDN_DW_MAX_K 9 /* kernel rows (9x9) */

/* A depthwise layer's geometry and output quantization, with its interior columns [ox_lo, ox_hi)
 * (the window lies inside the input horizontally) computed once. */
typedef struct
{
    const int8_t *img;
    int32_t ih, iw, c, kh, kw, sh, sw, ph, pw, oh, ow;
    int32_t off, ooff, amin, amax;
    int32_t ox_lo, ox_hi, oy_lo, oy_hi; /* interior columns / rows */
    int32_t row;   /* bytes per input row (iw * c) */
    int32_t lo_at; /* input offset of the window of column ox_lo: (ox_lo * sw - pw) * c */
    int32_t full; /* tdn_rq_r2_layer: the 7-instruction one-saturate requantization applies */
    int32_t fast3; /* nn_dw_fast.c's tdn_dw3 interior applies (3x3, shifts in [-22, -1], full range) */
} tdn_dw_geo;

void tdn_dw_geometry(tdn_dw_geo *g, const cmsis_nn_dw_conv_params *p, const cmsis_nn_per_channel_quant_params *q,
                     const cmsis_nn_dims *in_d, const int8_t *img, const cmsis_nn_dims *f_d,
                     const cmsis_nn_dims *out_d);

/* One image of a depthwise layer into out ([oh, ow, c]) through the fast rows. */
void tdn_dw_fast(const tdn_dw_geo *g, const int8_t *w, const int32_t *bias,
                 const cmsis_nn_per_channel_quant_params *q, int8_t *out);

/* Average of a pooling window, CMSIS/TFLite rounding: half away from zero, then C truncating division;
 * clamped to the activation range. */
TDN_INLINE int8_t tdn_avg_s8(int32_t sum, int32_t count, int32_t act_min, int32_t act_max)
{
    const int32_t half = count / 2;
    const int32_t v = (sum > 0 ? sum + half : sum - half) / count;
    return (int8_t)tdn_clamp(v, act_min, act_max);
}

#endif
