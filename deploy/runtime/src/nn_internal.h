/* Internal helpers shared by the bundled kernels (not part of the public API). */
#ifndef TINYDET_NN_INTERNAL_H
#define TINYDET_NN_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "tinydet_arith.h"

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

TDN_INLINE uint32_t tdn_ror8(uint32_t v)
{
    return (v >> 8) | (v << 24);
}

#endif
