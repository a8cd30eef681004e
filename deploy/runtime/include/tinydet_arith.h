/*
 * tinydet_arith.h - the int8 requantization arithmetic, in one header.
 *
 * TFLite / CMSIS-NN double rounding (DESIGN.md "Int8 arithmetic"), identical bit for bit to
 * tinydet/quant/arith.py (tests/test_c_kernels.py checks the two against each other):
 *
 *   requantize(acc, mult, shift) = rdbpot(srdhm(acc << max(shift, 0), mult), max(-shift, 0))
 *
 * mult is a Q31 multiplier in [2^30, 2^31) (or 0), shift > 0 is a left shift. The left shift wraps
 * modulo 2^32 like the register it runs in; it is done on uint32_t so that the wrap is defined C.
 * Right shifts of negative values are arithmetic (implementation-defined in C99; arithmetic on gcc,
 * clang and arm-none-eabi-gcc, the compilers tinydet supports). Portable C99, integer only.
 */
#ifndef TINYDET_ARITH_H
#define TINYDET_ARITH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TDN_INLINE static inline __attribute__((always_inline))
#else
#define TDN_INLINE static inline
#endif

#if defined(__GNUC__)
#define TDN_LIKELY(x) __builtin_expect(!!(x), 1)
#else
#define TDN_LIKELY(x) (x)
#endif

#define TDN_INT32_MIN ((int32_t)0x80000000u)
#define TDN_INT32_MAX ((int32_t)0x7FFFFFFF)

/* Saturating rounding doubling high multiply: round(a * b / 2^31) with TFLite's rounding;
 * INT32_MIN * INT32_MIN (the one overflow) saturates to INT32_MAX.
 * TFLite writes it as trunc((ab + nudge) / 2^31) with nudge = 2^30 for ab >= 0 and 1 - 2^30 below;
 * for ab < 0 that truncation equals ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31), so one
 * add and an arithmetic shift (SMULL, ADDS, ADC, shifts on Cortex-M) give the same result for every
 * input (the form CMSIS-NN uses). */
TDN_INLINE int32_t tdn_srdhm(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int32_t r = (int32_t)((ab + ((int64_t)1 << 30)) >> 31);
    return (a == TDN_INT32_MIN && b == TDN_INT32_MIN) ? TDN_INT32_MAX : r;
}

/* Rounding divide by 2^exponent, exponent in [0, 31], ties away from zero. */
TDN_INLINE int32_t tdn_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* arithmetic shift of a negative value: implementation-defined in C99, arithmetic on every
     * compiler tinydet targets (gcc, clang, arm-none-eabi-gcc) */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* CMSIS-NN arm_nn_requantize (double rounding): acc * mult * 2^(shift - 31), rounded. Like CMSIS it
 * uses the doubling high multiply without the INT32_MIN * INT32_MIN saturation: a multiplier is
 * never INT32_MIN (quantize_multiplier gives [2^30, 2^31) or 0), so this equals tdn_srdhm for
 * every valid multiplier and equals ARM's kernels for every input. */
TDN_INLINE int32_t tdn_requantize(int32_t acc, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    const int32_t shifted = (int32_t)((uint32_t)acc << left);
    const int32_t high = (int32_t)(((int64_t)shifted * (int64_t)mult + ((int64_t)1 << 30)) >> 31);
    return tdn_rdbpot(high, right);
}

TDN_INLINE int32_t tdn_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* One int8 output of a layer (DESIGN.md "Int8 arithmetic"): requantize the int32 accumulator, add
 * the output zero point (out_offset), clamp to the activation range [act_min, act_max]. */
TDN_INLINE int8_t tdn_requantize_s8(int32_t acc, int32_t mult, int32_t shift, int32_t out_offset, int32_t act_min,
                                    int32_t act_max)
{
    /* clamp before adding the offset: requantize can be near INT32_MAX (extreme left shifts), where
     * adding first would overflow; the activation bounds minus the offset are small */
    return (int8_t)(tdn_clamp(tdn_requantize(acc, mult, shift), act_min - out_offset, act_max - out_offset) +
                    out_offset);
}

/* ---- the same requantization with the per-channel work done once ---------------------------------
 * A kernel makes one tdn_rq per output channel (tdn_rq_make) before its loops, then writes every
 * output with tdn_rq_s8. Bit identical to tdn_requantize_s8 for every accumulator and every
 * (mult, shift) with mult in [0, 2^31) and shift in [-31, 31] (tests/test_c_kernels.py checks both
 * against tinydet/quant/arith.py).
 *
 * Right shifts (shift < 0, R = -shift >= 1: every layer whose real multiplier is below 0.5) take one
 * 64-bit multiply-accumulate and one shift. With P = acc * mult, high = floor((P + 2^30) / 2^31) and
 * rdbpot(high, R) = floor((high + 2^(R-1) - [high < 0]) / 2^R) (ties away from zero), the nested
 * floors merge: result = floor((P + K) / 2^(31+R)) with K = 2^30 + 2^(R+30) - [high < 0] * 2^31,
 * i.e. the high word of P + K shifted right by R - 1. [high < 0] may be replaced by [acc < 0]: they
 * differ only when high == 0, where both give 0. |P| + |K| < 2^63: no overflow. On Cortex-M that is
 * SMLAL (K preloaded), AND/SUBS/SBC for the sign term and one ASR. Left shifts (shift >= 0) need no
 * rounding divide: high of (acc << shift) * mult. */
typedef struct
{
    uint32_t k_lo; /* K = 2^30 + 2^(R+30) (right shifts), low and high words */
    int32_t k_hi;
    int32_t mult;  /* Q31 multiplier */
    int32_t left;  /* max(shift, 0) */
    int32_t r1;    /* R - 1 for right shifts, -1 for shift >= 0 */
} tdn_rq;

TDN_INLINE tdn_rq tdn_rq_make(int32_t mult, int32_t shift)
{
    tdn_rq q;
    q.mult = mult;
    q.left = shift > 0 ? shift : 0;
    q.r1 = shift < 0 ? -shift - 1 : -1;
    /* t = 2^(R-1): K's high word is 2^(R-2) (R >= 2), its low word 2^30 plus 2^31 when R == 1 */
    const uint32_t t = shift < 0 ? (uint32_t)1 << q.r1 : 0u;
    q.k_hi = (int32_t)(t >> 1);
    q.k_lo = 0x40000000u + (t << 31);
    return q;
}

/* tdn_rq_apply for a right shift (q->r1 >= 0): one SMLAL with K preloaded, the sign term, one shift. */
TDN_INLINE int32_t tdn_rq_right(int32_t acc, const tdn_rq *q)
{
    const int64_t k = (int64_t)(((uint64_t)(uint32_t)q->k_hi << 32) | q->k_lo) - (int64_t)((uint32_t)acc & 0x80000000u);
    const int64_t t = k + (int64_t)acc * (int64_t)q->mult;
    return (int32_t)(t >> 32) >> q->r1; /* arithmetic, see tdn_rdbpot */
}

/* tdn_requantize(acc, mult, shift) for q = tdn_rq_make(mult, shift). */
TDN_INLINE int32_t tdn_rq_apply(int32_t acc, const tdn_rq *q)
{
    if (TDN_LIKELY(q->r1 >= 0))
    {
        return tdn_rq_right(acc, q);
    }
    const int32_t shifted = (int32_t)((uint32_t)acc << q->left);
    return (int32_t)(((int64_t)shifted * (int64_t)q->mult + ((int64_t)1 << 30)) >> 31);
}

/* tdn_requantize_s8(acc, mult, shift, out_offset, act_min, act_max) for q = tdn_rq_make(mult, shift). */
TDN_INLINE int8_t tdn_rq_s8(int32_t acc, const tdn_rq *q, int32_t out_offset, int32_t act_min, int32_t act_max)
{
    /* offset added after the clamp, as in tdn_requantize_s8 (no overflow) */
    return (int8_t)(tdn_clamp(tdn_rq_apply(acc, q), act_min - out_offset, act_max - out_offset) + out_offset);
}

/* The common layer: every channel shifts right (multipliers below 0.5) and the activation range is
 * the whole int8 range. Then the requantized value is at most 2^30 in magnitude, so adding the
 * output offset cannot overflow and one saturation (SSAT #8 with the DSP extension) is the clamp:
 * tdn_rq_s8_full(acc, q, off) == tdn_rq_s8(acc, q, off, -128, 127) whenever q->r1 >= 0. Kernels
 * test tdn_rq_full_layer once per call and run a copy of their loops with this form. */
TDN_INLINE int8_t tdn_rq_s8_full(int32_t acc, const tdn_rq *q, int32_t out_offset)
{
    const int64_t k = (int64_t)(((uint64_t)(uint32_t)q->k_hi << 32) | q->k_lo) - (int64_t)((uint32_t)acc & 0x80000000u);
    const int64_t t = k + (int64_t)acc * (int64_t)q->mult;
    const int32_t v = ((int32_t)(t >> 32) >> q->r1) + out_offset;
#if defined(__ARM_FEATURE_SAT)
    return (int8_t)__builtin_arm_ssat(v, 8);
#else
    return (int8_t)tdn_clamp(v, -128, 127);
#endif
}

/* tdn_rq_s8_full for a channel that shifts right by R >= 2, from the raw multiplier: r1 = R - 1
 * and khi = 2^(R-2) (K's high word; its low word is 2^30). K - [acc < 0] * 2^31 is then the pair
 * (khi + (acc >> 31), 2^30 | (acc & 2^31)) with no carry to propagate (2^30 - 2^31 borrows exactly
 * one from the high word), so an output is AND, ORR, ADD, SMLAL, ASR, ADD and SSAT: 7
 * instructions, none of them a register copy. Equal to tdn_rq_s8_full(acc, tdn_rq_make(mult,
 * -R), out_offset) for every acc (tests/test_c_kernels.py, "rq_s8_r2"). */
TDN_INLINE int8_t tdn_rq_s8_r2(int32_t acc, int32_t mult, int32_t r1, int32_t khi, int32_t out_offset)
{
    uint32_t lo = ((uint32_t)acc & 0x80000000u) | 0x40000000u;
    int32_t hi = khi + (acc >> 31); /* arithmetic, see tdn_rdbpot */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SAT)
    __asm("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(acc), "r"(mult));
    return (int8_t)__builtin_arm_ssat((hi >> r1) + out_offset, 8);
#else
    const int64_t t = (int64_t)(((uint64_t)(uint32_t)hi << 32) | lo) + (int64_t)acc * (int64_t)mult;
    return (int8_t)tdn_clamp(((int32_t)(t >> 32) >> r1) + out_offset, -128, 127);
#endif
}

/* Whether a layer's outputs may use tdn_rq_s8_full: all shifts < 0 and act range [-128, 127]. */
TDN_INLINE int tdn_rq_full_layer(const int32_t *shift, int32_t n, int32_t act_min, int32_t act_max)
{
    if (act_min != -128 || act_max != 127)
    {
        return 0;
    }
    for (int32_t i = 0; i < n; i++)
    {
        if (shift[i] >= 0)
        {
            return 0;
        }
    }
    return 1;
}

/* Whether every channel shifts right by at least 2 and the range is [-128, 127]: the layer's
 * outputs may use tdn_rq_s8_r2 (with q.mult, q.r1 and q.k_hi of tdn_rq_make, which are R - 1 and
 * 2^(R-2) for such shifts). */
TDN_INLINE int tdn_rq_r2_layer(const int32_t *shift, int32_t n, int32_t act_min, int32_t act_max)
{
    if (act_min != -128 || act_max != 127)
    {
        return 0;
    }
    for (int32_t i = 0; i < n; i++)
    {
        if (shift[i] > -2)
        {
            return 0;
        }
    }
    return 1;
}

/* An int8 output through tdn_rq_s8_full when `full` (a constant in the always-inlined kernel
 * copies), else tdn_rq_s8. */
TDN_INLINE int8_t tdn_rq_s8_sel(int32_t acc, const tdn_rq *q, int32_t out_offset, int32_t act_min, int32_t act_max,
                                const int full)
{
    return full ? tdn_rq_s8_full(acc, q, out_offset) : tdn_rq_s8(acc, q, out_offset, act_min, act_max);
}

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_ARITH_H */
