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
 * output with tdn_rq_s8: the shift is split into its left and right parts once, and the rounding
 * divide uses a branch-free form (5 ALU operations, no mask built per output). Bit identical to
 * tdn_requantize_s8 for every accumulator and every (mult, shift) with mult in [0, 2^31) and shift
 * in [-31, 31] (tests/test_c_kernels.py checks both against tinydet/quant/arith.py). */
typedef struct
{
    int32_t mult;  /* Q31 multiplier */
    int32_t left;  /* max(shift, 0) */
    int32_t right; /* max(-shift, 0) */
    int32_t half;  /* (2^right - 1) >> 1: the largest remainder that rounds down for x >= 0 */
} tdn_rq;

TDN_INLINE tdn_rq tdn_rq_make(int32_t mult, int32_t shift)
{
    tdn_rq q;
    q.mult = mult;
    q.left = shift > 0 ? shift : 0;
    q.right = shift > 0 ? 0 : -shift;
    q.half = (int32_t)((((uint32_t)1 << q.right) - 1u) >> 1);
    return q;
}

/* rdbpot(x, right) without the mask: with q = x >> right and rem = x - (q << right) in [0, 2^right),
 * the result rounds up exactly when rem > half + [x < 0] (ties away from zero), i.e. when
 * half + [x < 0] - rem is negative; that difference lies in (-2^31, 2^30], so it cannot overflow, and
 * right = 0 gives rem = half = 0: no rounding. */
TDN_INLINE int32_t tdn_rq_rdbpot(int32_t x, int32_t right, int32_t half)
{
    const int32_t q = x >> right; /* arithmetic, see tdn_rdbpot */
    const int32_t rem = (int32_t)((uint32_t)x - ((uint32_t)q << right));
    const int32_t t = (int32_t)((uint32_t)half + ((uint32_t)x >> 31) - (uint32_t)rem);
    return q - (t >> 31);
}

/* tdn_requantize(acc, mult, shift) for q = tdn_rq_make(mult, shift). */
TDN_INLINE int32_t tdn_rq_apply(int32_t acc, const tdn_rq *q)
{
    const int32_t shifted = (int32_t)((uint32_t)acc << q->left);
    const int32_t high = (int32_t)(((int64_t)shifted * (int64_t)q->mult + ((int64_t)1 << 30)) >> 31);
    return tdn_rq_rdbpot(high, q->right, q->half);
}

/* tdn_requantize_s8(acc, mult, shift, out_offset, act_min, act_max) for q = tdn_rq_make(mult, shift). */
TDN_INLINE int8_t tdn_rq_s8(int32_t acc, const tdn_rq *q, int32_t out_offset, int32_t act_min, int32_t act_max)
{
    /* offset added after the clamp, as in tdn_requantize_s8 (no overflow) */
    return (int8_t)(tdn_clamp(tdn_rq_apply(acc, q), act_min - out_offset, act_max - out_offset) + out_offset);
}

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_ARITH_H */
