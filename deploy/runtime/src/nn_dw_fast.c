/*
 * The fast depthwise rows (ch_mult 1, no dilation, up to TDN_DW_MAX_TAPS taps), shared by the bundled
 * arm_depthwise_conv_s8 (nn_dwconv.c) and tinydet_depthwise_conv_inplace_s8 (below). Compiled in every
 * build, also with -DTINYDET_USE_CMSIS_NN: the in-place depthwise is tinydet's own kernel.
 *
 * Scheme: channels in blocks of 4 (tdn_dw4); a block's weights are sign-extended once into a small
 * array, its biases and requantization parameters (tdn_rq, shift split once) prepared once. One output
 * row at a time: the row's vertical window is computed once; its columns are split into the left
 * border, the interior (window inside the input on both axes: fixed taps, the input offset folded
 * into the bias: sum (x + off) * w = sum x * w + off * sum w) and the right border. Interior taps
 * are one 32-bit load of 4 input bytes, SXTB16 of it and of it rotated by 8, and four SMLABB/SMLATT
 * with the DSP extension (3x3 fully unrolled); border windows visit their in-range taps only.
 * Channels left over (C not a multiple of 4) run one at a time through the same split (tdn_dw1).
 *
 * 3x3 with the DSP extension (the demo's every depthwise layer), when every shift is a right shift
 * of 1..22 and the range is the whole int8 range (tdn_dw_geo.fast3): one asm block per output pixel
 * of 4 channels (tdn_dw3_run: 9 taps, the requantization and the store, about 110 instructions for
 * 36 MACs) from a table of doubled weights, biases and requantization constants. Windows cut by the
 * padding run the same block with a table whose taps are shifted onto a base clamped inside the
 * input and whose taps in the padding weigh 0 (tdn_dw3_cut_table); so every pixel of such a layer,
 * border or not, is one call of the asm.
 */
#include "nn_internal.h"
#include "tinydet_runtime.h"

#if TDN_DSP
/* One tap of a 4-channel block: the 4 input bytes at ptr (LDR, 2 SXTB16) times the tap's packed
 * weights wp[2t] (channels 0, 2) and wp[2t + 1] (channels 1, 3), accumulated into a0..a3. */
#define TDN_DW_TAP(t, ptr)                                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        const tdn_s16x4 x = tdn_widen_s8x4(tdn_read_u32(ptr));                                                         \
        a0 = __smlabb(x.even, wp[2 * (t)], a0);                                                                        \
        a2 = __smlatt(x.even, wp[2 * (t)], a2);                                                                        \
        a1 = __smlabb(x.odd, wp[2 * (t) + 1], a1);                                                                     \
        a3 = __smlatt(x.odd, wp[2 * (t) + 1], a3);                                                                     \
    } while (0)
#define TDN_DW_WPK_PER_TAP 2
#else
#define TDN_DW_TAP(t, ptr)                                                                                             \
    do                                                                                                                 \
    {                                                                                                                  \
        const int8_t *x_ = (ptr);                                                                                      \
        a0 += x_[0] * wp[4 * (t)];                                                                                     \
        a1 += x_[1] * wp[4 * (t) + 1];                                                                                 \
        a2 += x_[2] * wp[4 * (t) + 2];                                                                                 \
        a3 += x_[3] * wp[4 * (t) + 3];                                                                                 \
    } while (0)
#define TDN_DW_WPK_PER_TAP 4
#endif

#if TDN_DSP
/* The 3x3 interior of a 4-channel block as one table for tdn_dw3_run (fixed offsets from one base
 * register): w[2t], w[2t + 1] the tap's packed weights doubled (channels 0, 2 / 1, 3; |2w| <= 256
 * fits an int16 lane), bias[j] twice the interior bias, rq[3j..3j+2] channel j's (mult, hic, R).
 * Doubling the accumulator turns the requantization of tdn_rq_s8_r2 into a constant low word: for
 * a right shift R >= 1, TFLite's result is floor((P + K) / 2^(31+R)) with P = acc * mult and
 * K = 2^30 + 2^(R+30) - [acc < 0] 2^31 (tinydet_arith.h); times two that is the high word of
 * 2P + (2^(R-1) - [acc < 0]) 2^32 + 2^31, shifted right by R. The output offset is folded in
 * (hic = 2^(R-1) + (out_offset << R): (hi >> R) + off == (hi + (off << R)) >> R, exact), so an
 * output is ADD, SMMLAR, ASR, SSAT. tdn_dw_geo.fast3 and tdn_dw4.use3 say when it applies.
 * The loop constants of tdn_dw3_run follow (in memory: the asm has no register left for them). */
typedef struct
{
    int32_t w[18];
    int32_t bias[4];
    int32_t rq[12];
    int32_t step; /* from a window's third input row to the next window: sw * c - 2 * row */
    int32_t opix; /* bytes between output pixels (set with end, per run) */
    int8_t *end;  /* the row ends when the output pointer reaches it */
    int32_t rows; /* rows the run goes on for after the current one (0: one row) */
    int32_t in_adv, out_adv, out_row; /* to the next row: input and output pointer moves, end's move */
} tdn_dw3;

/* the asm reads the loop fields by offset */
typedef char tdn_dw3_offsets_ok[(offsetof(tdn_dw3, step) == 136 && offsetof(tdn_dw3, end) == 144 &&
                                 offsetof(tdn_dw3, rows) == 148 && offsetof(tdn_dw3, in_adv) == 152 &&
                                 offsetof(tdn_dw3, out_row) == 160) ? 1 : -1];

#define TDN_DW3_TAP(t, addr)                                                                                           \
    "ldr %[x0], " addr "\n\t"                                                                                          \
    "ldrd %[w0], %[w1], [%[b], #" #t "*8]\n\t"                                                                         \
    "sxtb16 %[x1], %[x0], ror #8\n\t"                                                                                  \
    "sxtb16 %[x0], %[x0]\n\t"                                                                                          \
    "smlabb %[a0], %[x0], %[w0], %[a0]\n\t"                                                                            \
    "smlatt %[a2], %[x0], %[w0], %[a2]\n\t"                                                                            \
    "smlabb %[a1], %[x1], %[w1], %[a1]\n\t"                                                                            \
    "smlatt %[a3], %[x1], %[w1], %[a3]\n\t"

/* Channel j's output from accumulator a (doubled) into a: mult, hic, R from the table (one LDM,
 * the base moving on to the next channel's entries). SMMLAR is the high word of (Ra << 32) +
 * Rn * Rm + 2^31: the whole sum of the table's comment in one instruction, Ra = hic - [a < 0]. */
#define TDN_DW3_RQ(a)                                                                                                  \
    "ldm %[b]!, {%[w0], %[w1], %[x1]}\n\t"                                                                              \
    "add %[w1], %[w1], " a ", asr #31\n\t"                                                                             \
    "smmlar %[w1], " a ", %[w0], %[w1]\n\t"                                                                            \
    "asr " a ", %[w1], %[x1]\n\t"                                                                                      \
    "ssat " a ", #8, " a "\n\t"

/* n >= 1 outputs of a block with table b (b->end = out + n * b->opix set by the caller): the 3x3
 * window at p (tap (ky, kx) at p + ky * row + kx * c), its 4 int8 outputs stored as one word at
 * out; then p and out move on by one output pixel. Per pixel 9 x (LDR, LDRD, 2 SXTB16, 4 SMLABB /
 * SMLATT), 4 x 5 requantization, 3 BFI, STR and 8 for the loop and the table base. One asm block: gcc spilled the tap
 * offsets and accumulators of the C form (about 160 instructions a pixel instead of about 107).
 * Then b->rows more rows of as many pixels: p, out and end move by in_adv, out_adv and out_row
 * (12 instructions a row, the table's rows and end updated in place). */
TDN_INLINE void tdn_dw3_run(const int8_t *p, int8_t *out, int32_t c, int32_t row, const tdn_dw3 *b)
{
    int32_t a0, a1, a2, a3, x0;
    /* LDM fills its registers in ascending order: mult, hic, R */
    register int32_t w0 __asm__("r4"), w1 __asm__("r5"), x1 __asm__("r6");
    __asm volatile("1:\n\t"
                   "ldrd %[a0], %[a1], [%[b], #72]\n\t"
                   "ldrd %[a2], %[a3], [%[b], #80]\n\t"
                   TDN_DW3_TAP(0, "[%[p]]")
                   TDN_DW3_TAP(1, "[%[p], %[c]]")
                   TDN_DW3_TAP(2, "[%[p], %[c], lsl #1]")
                   "add %[p], %[p], %[row]\n\t"
                   TDN_DW3_TAP(3, "[%[p]]")
                   TDN_DW3_TAP(4, "[%[p], %[c]]")
                   TDN_DW3_TAP(5, "[%[p], %[c], lsl #1]")
                   "add %[p], %[p], %[row]\n\t"
                   TDN_DW3_TAP(6, "[%[p]]")
                   TDN_DW3_TAP(7, "[%[p], %[c]]")
                   TDN_DW3_TAP(8, "[%[p], %[c], lsl #1]")
                   "add %[b], %[b], #88\n\t"
                   TDN_DW3_RQ("%[a0]")
                   TDN_DW3_RQ("%[a1]")
                   "bfi %[a0], %[a1], #8, #8\n\t"
                   TDN_DW3_RQ("%[a2]")
                   "bfi %[a0], %[a2], #16, #8\n\t"
                   TDN_DW3_RQ("%[a3]")
                   "bfi %[a0], %[a3], #24, #8\n\t"
                   "ldm %[b], {%[w0], %[w1], %[x1]}\n\t" /* step, opix, end */
                   "str %[a0], [%[out]]\n\t"
                   "add %[p], %[p], %[w0]\n\t"
                   "add %[out], %[out], %[w1]\n\t"
                   "sub %[b], %[b], #136\n\t"
                   "cmp %[out], %[x1]\n\t"
                   "bne 1b\n\t"
                   "ldr %[a1], [%[b], #148]\n\t" /* rows left */
                   "subs %[a1], %[a1], #1\n\t"
                   "bmi 2f\n\t"
                   "str %[a1], [%[b], #148]\n\t"
                   "ldrd %[a2], %[a3], [%[b], #152]\n\t" /* in_adv, out_adv */
                   "ldr %[x0], [%[b], #160]\n\t"         /* out_row */
                   "add %[p], %[p], %[a2]\n\t"
                   "add %[out], %[out], %[a3]\n\t"
                   "add %[x1], %[x1], %[x0]\n\t"
                   "str %[x1], [%[b], #144]\n\t" /* the next row's end */
                   "b 1b\n"
                   "2:\n\t"
                   : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [x0] "=&r"(x0),
                     [x1] "=&r"(x1), [w0] "=&r"(w0), [w1] "=&r"(w1), [p] "+&r"(p), [out] "+&r"(out), [b] "+&r"(b)
                   : [c] "r"(c), [row] "r"(row)
                   : "memory", "cc");
}
#endif

#if TDN_DSP
#define TDN_DW3_CUTS 4 /* cut-window tables kept per block (replaced in turn when a row needs a fifth) */
#endif

/* A block of 4 channels starting at ch: packed weights, biases, requantization. */
typedef struct
{
    int32_t wpk[TDN_DW_WPK_PER_TAP * TDN_DW_MAX_TAPS];
    int32_t bias[4];     /* border windows: the bias itself (offset added per tap) */
    int32_t interior[4]; /* interior windows: bias + off * sum of the channel's weights */
    int32_t wrow[4 * TDN_DW_MAX_K]; /* per kernel row and channel: the sum of that row's weights
                                     * (kernels of up to TDN_DW_MAX_K rows; taller ones use the
                                     * border path for cut rows) */
    tdn_rq rq[4];
    const int8_t *w;   /* the filter at this block's first channel: w[t * c + j] */
    const int8_t *img; /* the input at this block's first channel */
    int32_t ch;
#if TDN_DSP
    tdn_dw3 k3;   /* the 3x3 interior table, valid when use3 */
    int32_t use3; /* g->fast3 and the doubled accumulators fit int32 */
    /* tables of the windows cut by the padding (tdn_dw3_cut_table), made when first needed: a
     * layer has at most 3 x 3 - 1 kinds of them with paddings <= 1 */
    tdn_dw3 cut[TDN_DW3_CUTS];
    int32_t cut_key[TDN_DW3_CUTS];
    int32_t cut_next;
#endif
} tdn_dw4;

/* One channel (the C % 4 leftovers): dense weights, bias, requantization. */
typedef struct
{
    int8_t wk[TDN_DW_MAX_TAPS];
    int32_t bias, interior;
    tdn_rq rq;
    int32_t ch;
} tdn_dw1;

void tdn_dw_geometry(tdn_dw_geo *g, const cmsis_nn_dw_conv_params *p, const cmsis_nn_per_channel_quant_params *q,
                     const cmsis_nn_dims *in_d, const int8_t *img, const cmsis_nn_dims *f_d,
                     const cmsis_nn_dims *out_d)
{
    g->full = tdn_rq_r2_layer(q->shift, out_d->c, p->activation.min, p->activation.max);
    g->img = img;
    g->ih = in_d->h;
    g->iw = in_d->w;
    g->c = in_d->c;
    g->kh = f_d->h;
    g->kw = f_d->w;
    g->sh = p->stride.h;
    g->sw = p->stride.w;
    g->ph = p->padding.h;
    g->pw = p->padding.w;
    g->oh = out_d->h;
    g->ow = out_d->w;
    g->off = p->input_offset;
    g->ooff = p->output_offset;
    g->amin = p->activation.min;
    g->amax = p->activation.max;
    /* interior columns [ox_lo, ox_hi): ox * sw - pw >= 0 and ox * sw - pw + kw <= iw */
    int32_t lo = (g->pw + g->sw - 1) / g->sw;
    int32_t hi = g->iw - g->kw + g->pw >= 0 ? (g->iw - g->kw + g->pw) / g->sw + 1 : 0;
    lo = lo < g->ow ? lo : g->ow;
    hi = hi < g->ow ? hi : g->ow;
    g->ox_lo = lo;
    g->ox_hi = hi > lo ? hi : lo;
    g->row = g->iw * g->c;
    g->lo_at = (g->ox_lo * g->sw - g->pw) * g->c;
    /* rows whose windows lie inside the input vertically: [oy_lo, oy_hi) */
    lo = (g->ph + g->sh - 1) / g->sh;
    hi = g->ih - g->kh + g->ph >= 0 ? (g->ih - g->kh + g->ph) / g->sh + 1 : 0;
    lo = lo < g->oh ? lo : g->oh;
    hi = hi < g->oh ? hi : g->oh;
    g->oy_lo = lo;
    g->oy_hi = hi > lo ? hi : lo;
    /* tdn_dw3: every shift a right shift of 1..22 (R <= 22 keeps hi + (out_offset << R) within
     * int32: |hi| <= 2^30 + 2^(R-1) + 1, |out_offset << R| <= 2^(R+7)), the whole int8 range (SSAT
     * is the clamp) */
    g->fast3 = g->kh == 3 && g->kw == 3 && g->amin == -128 && g->amax == 127;
    for (int32_t j = 0; j < g->c && g->fast3; j++)
    {
        g->fast3 = q->shift[j] <= -1 && q->shift[j] >= -22;
    }
}

#if TDN_DSP
/* The requantization entries of tdn_dw3 for channel ch + j (shift -R, 1 <= R <= 22). */
TDN_INLINE void tdn_dw3_rq(tdn_dw3 *k, const tdn_dw_geo *g, const cmsis_nn_per_channel_quant_params *q, int32_t ch,
                           int32_t j)
{
    const int32_t r = -q->shift[ch + j];
    k->rq[3 * j] = q->multiplier[ch + j];
    k->rq[3 * j + 1] = (1 << (r - 1)) + (int32_t)((uint32_t)g->ooff << r);
    k->rq[3 * j + 2] = r;
}

/* tdn_dw4_prepare for a block that will run only through tdn_dw3 (g->fast3, input at least 3 x 3):
 * the interior table and the plain biases (the cut tables' start), none of the C rows' arrays
 * (a third of the instructions of the full preparation, which a 12 x 12 map feels). 0, nothing
 * usable, when an interior bias is beyond tdn_dw3's bound (the full preparation then says use3 = 0). */
static int tdn_dw4_prepare3(tdn_dw4 *b, const tdn_dw_geo *g, const int8_t *w, const int32_t *bias,
                            const cmsis_nn_per_channel_quant_params *q, int32_t ch)
{
    const int32_t c = g->c;
    tdn_dw3 *k = &b->k3;
    uint32_t se = 0, so = 0; /* doubled weights summed per int16 lane: |sum| <= 9 * 256 */
    for (int32_t t = 0; t < 9; t++)
    {
        const tdn_s16x4 v = tdn_widen_s8x4(tdn_read_u32(w + t * c + ch));
        const uint32_t e2 = __sadd16((uint32_t)v.even, (uint32_t)v.even), o2 = __sadd16((uint32_t)v.odd, (uint32_t)v.odd);
        k->w[2 * t] = (int32_t)e2;
        k->w[2 * t + 1] = (int32_t)o2;
        se = __sadd16(se, e2);
        so = __sadd16(so, o2);
    }
    const int32_t s2[4] = {(int16_t)(se & 0xFFFFu), (int16_t)(so & 0xFFFFu), (int16_t)(se >> 16), (int16_t)(so >> 16)};
    for (int32_t j = 0; j < 4; j++)
    {
        b->bias[j] = bias ? bias[ch + j] : 0;
        /* |bias + off * sum w| <= 2^29: twice that plus twice 9 products of |x|, |w| <= 128 (< 2^19)
         * fits int32, and so do the cut tables' biases (tdn_dw3_cut_table) */
        const int64_t interior2 = 2 * (int64_t)b->bias[j] + (int64_t)g->off * s2[j];
        if (interior2 > ((int64_t)1 << 30) || interior2 < -((int64_t)1 << 30))
        {
            return 0;
        }
        k->bias[j] = (int32_t)interior2;
        tdn_dw3_rq(k, g, q, ch, j);
    }
    k->step = g->sw * c - 2 * g->iw * c;
    for (int32_t i = 0; i < TDN_DW3_CUTS; i++)
    {
        b->cut_key[i] = -1;
    }
    b->cut_next = 0;
    b->w = w + ch;
    b->ch = ch;
    b->img = g->img + ch;
    b->use3 = 1;
    return 1;
}
#endif

static void tdn_dw4_prepare(tdn_dw4 *b, const tdn_dw_geo *g, const int8_t *w, const int32_t *bias,
                            const cmsis_nn_per_channel_quant_params *q, int32_t ch)
{
#if TDN_DSP
    if (g->fast3 && g->ih >= 3 && g->iw >= 3 && tdn_dw4_prepare3(b, g, w, bias, q, ch))
    {
        return;
    }
#endif
    const int32_t taps = g->kh * g->kw, c = g->c;
    int32_t ws[4] = {0, 0, 0, 0};
    memset(b->wrow, 0, sizeof(b->wrow));
    for (int32_t t = 0; t < taps; t++)
    {
        const int8_t *wt = w + t * c + ch;
        for (int32_t j = 0; j < 4; j++)
        {
            ws[j] += wt[j];
            if (g->kh <= TDN_DW_MAX_K)
            {
                b->wrow[4 * (t / g->kw) + j] += wt[j];
            }
        }
#if TDN_DSP
        const tdn_s16x4 wv = tdn_widen_s8x4(tdn_read_u32(wt));
        b->wpk[2 * t] = wv.even;
        b->wpk[2 * t + 1] = wv.odd;
#else
        for (int32_t j = 0; j < 4; j++)
        {
            b->wpk[4 * t + j] = wt[j];
        }
#endif
    }
    for (int32_t j = 0; j < 4; j++)
    {
        b->bias[j] = bias ? bias[ch + j] : 0;
        b->interior[j] = b->bias[j] + g->off * ws[j];
        b->rq[j] = tdn_rq_make(q->multiplier[ch + j], q->shift[ch + j]);
    }
    b->w = w + ch;
    b->ch = ch;
#if TDN_DSP
    b->use3 = 0; /* the C rows (tdn_dw4_prepare3 took every block tdn_dw3 can run) */
#endif
}

static void tdn_dw1_prepare(tdn_dw1 *b, const tdn_dw_geo *g, const int8_t *w, const int32_t *bias,
                            const cmsis_nn_per_channel_quant_params *q, int32_t ch)
{
    const int32_t taps = g->kh * g->kw;
    int32_t ws = 0;
    for (int32_t t = 0; t < taps; t++)
    {
        b->wk[t] = w[t * g->c + ch];
        ws += b->wk[t];
    }
    b->bias = bias ? bias[ch] : 0;
    b->interior = b->bias + g->off * ws;
    b->rq = tdn_rq_make(q->multiplier[ch], q->shift[ch]);
    b->ch = ch;
}

/* One output of a block: tdn_rq_s8_r2 when `full` (g->full: every shift <= -2, full range), else the
 * general form. */
TDN_INLINE int8_t tdn_dw_rq(int32_t acc, const tdn_rq *q, int32_t ooff, int32_t amin, int32_t amax, const int full)
{
    return full ? tdn_rq_s8_r2(acc, q->mult, q->r1, q->k_hi, ooff) : tdn_rq_s8(acc, q, ooff, amin, amax);
}

/* The 4 int8 outputs of a block's window. */
TDN_INLINE void tdn_dw4_store(int8_t *out, int32_t a0, int32_t a1, int32_t a2, int32_t a3, const tdn_dw4 *b,
                              int32_t ooff, int32_t amin, int32_t amax, const int full)
{
    out[0] = tdn_dw_rq(a0, &b->rq[0], ooff, amin, amax, full);
    out[1] = tdn_dw_rq(a1, &b->rq[1], ooff, amin, amax, full);
    out[2] = tdn_dw_rq(a2, &b->rq[2], ooff, amin, amax, full);
    out[3] = tdn_dw_rq(a3, &b->rq[3], ooff, amin, amax, full);
}

/* Border window of a 4-channel block at (ky, kx): in-range taps only. With the DSP extension the
 * taps multiply the raw input (TDN_DW_TAP) and the offset term is added once, off times the sum of
 * the in-range weights (summed as packed int16 pairs: at most 81 taps of |w| <= 128 fit 16 bits);
 * `full` as in tdn_dw4_store. */
TDN_INLINE void tdn_dw4_border_body(const tdn_dw_geo *g, const tdn_dw4 *b, tdn_window ky, tdn_window kx, int8_t *o,
                                    const int full)
{
    int32_t a0 = b->bias[0], a1 = b->bias[1], a2 = b->bias[2], a3 = b->bias[3];
    const int32_t off = g->off, c = g->c;
#if TDN_DSP
    const int32_t *wp = b->wpk;
    uint32_t se = 0, so = 0;
    for (int32_t ty = ky.lo; ty < ky.hi; ty++)
    {
        const int8_t *s = g->img + ((ky.start + ty) * g->iw + kx.start) * c + b->ch;
        for (int32_t tx = kx.lo; tx < kx.hi; tx++)
        {
            const int32_t t = ty * g->kw + tx;
            TDN_DW_TAP(t, s + tx * c);
            se = __sadd16(se, (uint32_t)wp[2 * t]);
            so = __sadd16(so, (uint32_t)wp[2 * t + 1]);
        }
    }
    a0 += off * (int16_t)(se & 0xFFFFu);
    a2 += off * (int16_t)(se >> 16);
    a1 += off * (int16_t)(so & 0xFFFFu);
    a3 += off * (int16_t)(so >> 16);
#else
    for (int32_t ty = ky.lo; ty < ky.hi; ty++)
    {
        for (int32_t tx = kx.lo; tx < kx.hi; tx++)
        {
            const int8_t *s = g->img + ((ky.start + ty) * g->iw + kx.start + tx) * c + b->ch;
            const int8_t *wt = b->w + (ty * g->kw + tx) * c;
            a0 += (s[0] + off) * wt[0];
            a1 += (s[1] + off) * wt[1];
            a2 += (s[2] + off) * wt[2];
            a3 += (s[3] + off) * wt[3];
        }
    }
#endif
    tdn_dw4_store(o, a0, a1, a2, a3, b, g->ooff, g->amin, g->amax, full);
}

/* Output row oy of a 4-channel block; output pixel ox goes to o + ox * opix (4 bytes). `full`
 * (constant in each copy): g->full, the layer's outputs take tdn_rq_s8_r2. */
TDN_INLINE void tdn_dw4_row_body(const tdn_dw_geo *g, const tdn_dw4 *b, int32_t oy, int8_t *o, int32_t opix,
                                 const int full)
{
    const tdn_window ky = tdn_window_at(oy, g->sh, g->ph, g->kh, g->ih);
    const int32_t ow = g->ow, full_rows = ky.lo == 0 && ky.hi == g->kh;
    /* rows cut by the top/bottom padding still have interior columns: their taps are the window's
     * rows inside the input (the bias takes off * those rows' weight sums) */
    const int32_t split = full_rows || (ky.hi > ky.lo && g->kh <= TDN_DW_MAX_K);
    const int32_t lo = split ? g->ox_lo : ow, hi = split ? g->ox_hi : ow;
    int32_t ox = 0;
    for (; ox < lo; ox++)
    {
        tdn_dw4_border_body(g, b, ky, tdn_window_at(ox, g->sw, g->pw, g->kw, g->iw), o + ox * opix, full);
    }
    if (ox < hi && !full_rows)
    {
        const int32_t c = g->c, row = g->iw * c, step = g->sw * c, kw = g->kw, off = g->off;
        int32_t p0 = b->bias[0], p1 = b->bias[1], p2 = b->bias[2], p3 = b->bias[3];
        for (int32_t ty = ky.lo; ty < ky.hi; ty++)
        {
            p0 += off * b->wrow[4 * ty];
            p1 += off * b->wrow[4 * ty + 1];
            p2 += off * b->wrow[4 * ty + 2];
            p3 += off * b->wrow[4 * ty + 3];
        }
        const int32_t ooff = g->ooff, amin = g->amin, amax = g->amax;
        const int32_t *wp = b->wpk;
        const int8_t *src = g->img + ((ky.start + ky.lo) * g->iw + ox * g->sw - g->pw) * c + b->ch;
        int8_t *out = o + ox * opix;
        for (; ox < hi; ox++)
        {
            int32_t a0 = p0, a1 = p1, a2 = p2, a3 = p3;
            const int8_t *s = src;
            for (int32_t ty = ky.lo; ty < ky.hi; ty++)
            {
                for (int32_t tx = 0; tx < kw; tx++)
                {
                    TDN_DW_TAP(ty * kw + tx, s + tx * c);
                }
                s += row;
            }
            tdn_dw4_store(out, a0, a1, a2, a3, b, ooff, amin, amax, full);
            src += step;
            out += opix;
        }
    }
    if (ox < hi)
    {
        const int32_t c = g->c, row = g->iw * c, step = g->sw * c, kh = g->kh, kw = g->kw;
        const int32_t i0 = b->interior[0], i1 = b->interior[1], i2 = b->interior[2], i3 = b->interior[3];
        const int32_t ooff = g->ooff, amin = g->amin, amax = g->amax;
        const int32_t *wp = b->wpk;
        const int8_t *src = g->img + (ky.start * g->iw + ox * g->sw - g->pw) * c + b->ch;
        int8_t *out = o + ox * opix;
        if (kh == 3 && kw == 3)
        {
            for (; ox < hi; ox++)
            {
                int32_t a0 = i0, a1 = i1, a2 = i2, a3 = i3;
                const int8_t *r1 = src + row, *r2 = r1 + row;
                TDN_DW_TAP(0, src);
                TDN_DW_TAP(1, src + c);
                TDN_DW_TAP(2, src + 2 * c);
                TDN_DW_TAP(3, r1);
                TDN_DW_TAP(4, r1 + c);
                TDN_DW_TAP(5, r1 + 2 * c);
                TDN_DW_TAP(6, r2);
                TDN_DW_TAP(7, r2 + c);
                TDN_DW_TAP(8, r2 + 2 * c);
                tdn_dw4_store(out, a0, a1, a2, a3, b, ooff, amin, amax, full);
                src += step;
                out += opix;
            }
        }
        else
        {
            for (; ox < hi; ox++)
            {
                int32_t a0 = i0, a1 = i1, a2 = i2, a3 = i3;
                const int8_t *s = src;
                int32_t t = 0;
                for (int32_t ty = 0; ty < kh; ty++)
                {
                    for (int32_t tx = 0; tx < kw; tx++, t++)
                    {
                        TDN_DW_TAP(t, s + tx * c);
                    }
                    s += row;
                }
                tdn_dw4_store(out, a0, a1, a2, a3, b, ooff, amin, amax, full);
                src += step;
                out += opix;
            }
        }
    }
    for (; ox < ow; ox++)
    {
        tdn_dw4_border_body(g, b, ky, tdn_window_at(ox, g->sw, g->pw, g->kw, g->iw), o + ox * opix, full);
    }
}

#if TDN_DSP
/* The key of a 3-tap window along one axis (an input of n >= 3 positions, the window starting at
 * `start`) and its base: start clamped into [0, n - 3], so that the 3 positions read from the base
 * are inside the input. Taps [lo, hi) of the window are inside; the table reads position base + r
 * for tap r + (base - start). Key 0: no tap inside; else (lo, hi, base - start + 2) packed in 7 bits
 * (base - start lies in [-2, 2] when some tap is inside); the uncut window is TDN_DW3_MID. */
#define TDN_DW3_MID ((3 * 8) + 2)
TDN_INLINE int32_t tdn_dw3_axis(int32_t start, int32_t n, int32_t *base)
{
    const int32_t b = start < 0 ? 0 : (start > n - 3 ? n - 3 : start);
    const int32_t lo = start < 0 ? -start : 0, hi = start + 3 > n ? n - start : 3;
    *base = b;
    return hi <= lo ? 0 : (lo * 4 + hi) * 8 + b - start + 2;
}

/* The table of a window cut by the padding (axis keys ky, kx of tdn_dw3_axis): tap (r, k) of the
 * table is tap (r + sy, k + sx) of the kernel when that one is inside the input, else weight 0 (the
 * table then reads an input value that does not count, inside the image: the base is clamped); the
 * bias takes off times the weights of the taps inside. |bias + off * (weights inside)| differs
 * from the interior bias by at most 128 * 9 * 128 < 2^18, so the doubled accumulator still fits
 * (tdn_dw4_prepare3's bound). Kept in b->cut, made on first use. */
static tdn_dw3 *tdn_dw3_cut_table(const tdn_dw_geo *g, tdn_dw4 *b, int32_t ky, int32_t kx)
{
    const int32_t key = ky * 128 + kx;
    if (key == TDN_DW3_MID * 128 + TDN_DW3_MID)
    {
        return &b->k3;
    }
    for (int32_t i = 0; i < TDN_DW3_CUTS; i++)
    {
        if (b->cut_key[i] == key)
        {
            return &b->cut[i];
        }
    }
    const int32_t slot = b->cut_next;
    b->cut_next = (slot + 1) % TDN_DW3_CUTS;
    b->cut_key[slot] = key;
    tdn_dw3 *t = &b->cut[slot];
    /* table row r / column k reads kernel row r + sy / column k + sx, inside when in [lo, hi)
     * (key 0: lo = hi = 0, nothing inside): rows [r0, r1), columns [c0, c1) of the table */
    const int32_t sy = (ky & 7) - 2, ylo = ky >> 5, yhi = (ky >> 3) & 3;
    const int32_t sx = (kx & 7) - 2, xlo = kx >> 5, xhi = (kx >> 3) & 3;
    const int32_t r0 = ylo - sy > 0 ? ylo - sy : 0, r1 = yhi - sy < 3 ? yhi - sy : 3;
    const int32_t c0 = xlo - sx > 0 ? xlo - sx : 0, c1 = xhi - sx < 3 ? xhi - sx : 3;
    const int32_t d = 2 * (3 * sy + sx); /* table tap at reads kernel tap at + d (word index) */
    memset(t->w, 0, sizeof(t->w));      /* the taps in the padding weigh 0 */
    uint32_t se = 0, so = 0; /* the doubled weights inside, summed per int16 lane (|sum| <= 9 * 256) */
    for (int32_t r = r0; r < r1; r++)
    {
        for (int32_t at = 2 * (3 * r + c0), end = 2 * (3 * r + c1); at < end; at += 2)
        {
            const int32_t we = b->k3.w[at + d], wo = b->k3.w[at + d + 1];
            t->w[at] = we;
            t->w[at + 1] = wo;
            se = __sadd16(se, (uint32_t)we);
            so = __sadd16(so, (uint32_t)wo);
        }
    }
    /* 2 * (bias + off * sum) = 2 * bias + off * (sum of the doubled weights) */
    t->bias[0] = (int32_t)((uint32_t)b->bias[0] << 1) + g->off * (int16_t)(se & 0xFFFFu);
    t->bias[2] = (int32_t)((uint32_t)b->bias[2] << 1) + g->off * (int16_t)(se >> 16);
    t->bias[1] = (int32_t)((uint32_t)b->bias[1] << 1) + g->off * (int16_t)(so & 0xFFFFu);
    t->bias[3] = (int32_t)((uint32_t)b->bias[3] << 1) + g->off * (int16_t)(so >> 16);
    memcpy(t->rq, b->k3.rq, sizeof(t->rq));
    t->step = b->k3.step;
    return t;
}

/* The pixel at column ox of a row cut by the padding on x (row axis key ky, img: the row's first
 * input row at the block's channels), through the asm window with its cut table. Out of line: it
 * keeps tdn_dw4_row3 to one copy of the asm and few registers to save per row. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void tdn_dw3_border(const tdn_dw_geo *g, tdn_dw4 *b, int32_t ky, const int8_t *img, int32_t ox, int8_t *o)
{
    int32_t ix0;
    const int32_t kx = tdn_dw3_axis(ox * g->sw - g->pw, g->iw, &ix0);
    tdn_dw3 *t = tdn_dw3_cut_table(g, b, ky, kx);
    t->opix = 4; /* one pixel: the run stops after it */
    t->end = o + 4;
    t->rows = 0;
    tdn_dw3_run(img + ix0 * g->c, o, g->c, g->row, t);
}

/* Output row oy of a block through tdn_dw3 (b->use3, input at least 3 x 3): the interior columns
 * as one run with the row's table (the interior one, or a cut one for rows cut by the padding),
 * each border column through tdn_dw3_border; the same asm window for every pixel. Not inlined into
 * tdn_dw4_row: the C rows' register pressure made every call of it save and spill more. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void tdn_dw4_row3(const tdn_dw_geo *g, tdn_dw4 *b, int32_t oy, int8_t *o, int32_t opix)
{
    const int32_t lo = g->ox_lo, hi = g->ox_hi, iy = oy * g->sh - g->ph;
    int32_t iy0 = iy, ky = TDN_DW3_MID;
    if (oy < g->oy_lo || oy >= g->oy_hi)
    {
        ky = tdn_dw3_axis(iy, g->ih, &iy0);
    }
    const int8_t *img = b->img + iy0 * g->row;
    for (int32_t ox = 0; ox < lo; ox++)
    {
        tdn_dw3_border(g, b, ky, img, ox, o + ox * opix);
    }
    if (lo < hi)
    {
        tdn_dw3 *t = ky == TDN_DW3_MID ? &b->k3 : tdn_dw3_cut_table(g, b, ky, TDN_DW3_MID);
        t->opix = opix;
        t->end = o + hi * opix;
        t->rows = 0;
        tdn_dw3_run(img + g->lo_at, o + lo * opix, g->c, g->row, t);
    }
    for (int32_t ox = hi; ox < g->ow; ox++)
    {
        tdn_dw3_border(g, b, ky, img, ox, o + ox * opix);
    }
}

/* Every output row of a block through tdn_dw3 into out ([oh, ow, c] at the block's channels): the
 * rows cut by the padding on y one by one (tdn_dw4_row3); of the others first the border pixels
 * (tdn_dw3_border), then one asm run of the interior columns per row, in a loop that carries the
 * two pointers and nothing else (a tile's short rows made tdn_dw4_row3's per-row setup weigh). */
static void tdn_dw4_rows3(const tdn_dw_geo *g, tdn_dw4 *b, int8_t *out)
{
    const int32_t c = g->c, ow = g->ow, out_row = ow * c, in_step = g->sh * g->row;
    const int32_t lo = g->ox_lo, hi = g->ox_hi, y0 = g->oy_lo, y1 = g->oy_hi;
    for (int32_t oy = 0; oy < y0; oy++)
    {
        tdn_dw4_row3(g, b, oy, out + oy * out_row, c);
    }
    if (y0 < y1)
    {
        const int8_t *img = b->img + (y0 * g->sh - g->ph) * g->row;
        int8_t *o = out + y0 * out_row;
        if (lo > 0 || hi < ow)
        {
            const int8_t *im = img;
            int8_t *oo = o;
            for (int32_t oy = y0; oy < y1; oy++, im += in_step, oo += out_row)
            {
                for (int32_t ox = 0; ox < lo; ox++)
                {
                    tdn_dw3_border(g, b, TDN_DW3_MID, im, ox, oo + ox * c);
                }
                for (int32_t ox = hi; ox < ow; ox++)
                {
                    tdn_dw3_border(g, b, TDN_DW3_MID, im, ox, oo + ox * c);
                }
            }
        }
        if (lo < hi)
        {
            /* every interior row in one run */
            tdn_dw3 *t = &b->k3;
            const int32_t n = hi - lo;
            t->opix = c;
            t->end = o + hi * c;
            t->rows = y1 - y0 - 1;
            t->in_adv = in_step - n * g->sw * c;
            t->out_adv = out_row - n * c;
            t->out_row = out_row;
            tdn_dw3_run(img + g->lo_at, o + lo * c, c, g->row, t);
        }
    }
    for (int32_t oy = y1; oy < g->oh; oy++)
    {
        tdn_dw4_row3(g, b, oy, out + oy * out_row, c);
    }
}
#endif

static void tdn_dw4_row(const tdn_dw_geo *g, tdn_dw4 *b, int32_t oy, int8_t *o, int32_t opix)
{
#if TDN_DSP
    if (b->use3 && g->ih >= 3 && g->iw >= 3)
    {
        tdn_dw4_row3(g, b, oy, o, opix);
        return;
    }
#endif
    if (g->full)
    {
        tdn_dw4_row_body(g, b, oy, o, opix, 1);
    }
    else
    {
        tdn_dw4_row_body(g, b, oy, o, opix, 0);
    }
}

/* Output row oy of one channel; output pixel ox goes to o[ox * opix]. */
static void tdn_dw1_row(const tdn_dw_geo *g, const tdn_dw1 *b, int32_t oy, int8_t *o, int32_t opix)
{
    const tdn_window ky = tdn_window_at(oy, g->sh, g->ph, g->kh, g->ih);
    const int32_t c = g->c, row = g->iw * c, kw = g->kw;
    const int32_t full_rows = ky.lo == 0 && ky.hi == g->kh;
    for (int32_t ox = 0; ox < g->ow; ox++)
    {
        const tdn_window kx = tdn_window_at(ox, g->sw, g->pw, kw, g->iw);
        /* may point outside the image for border windows; only in-range taps are read */
        const int8_t *src = (const int8_t *)((uintptr_t)g->img +
                                             (uintptr_t)((ky.start * (intptr_t)g->iw + kx.start) * c + b->ch));
        int32_t acc;
        if (full_rows && ox >= g->ox_lo && ox < g->ox_hi)
        {
            acc = b->interior + tdn_dw1_window(src, row, c, b->wk, kw, 1, 0, g->kh, 0, kw, 0);
        }
        else
        {
            acc = b->bias + tdn_dw1_window(src, row, c, b->wk, kw, 1, ky.lo, ky.hi, kx.lo, kx.hi, g->off);
        }
        o[ox * opix] = tdn_rq_s8(acc, &b->rq, g->ooff, g->amin, g->amax);
    }
}

void tdn_dw_fast(const tdn_dw_geo *g, const int8_t *w, const int32_t *bias,
                 const cmsis_nn_per_channel_quant_params *q, int8_t *out)
{
    const int32_t c = g->c, ow = g->ow;
    int32_t ch = 0;
    tdn_dw4 b4;
    for (; ch + 4 <= c; ch += 4)
    {
        tdn_dw4_prepare(&b4, g, w, bias, q, ch);
#if TDN_DSP
        if (b4.use3 && g->ih >= 3 && g->iw >= 3)
        {
            tdn_dw4_rows3(g, &b4, out + ch);
            continue;
        }
#endif
        for (int32_t oy = 0; oy < g->oh; oy++)
        {
            tdn_dw4_row(g, &b4, oy, out + oy * ow * c + ch, c);
        }
    }
    tdn_dw1 b1;
    for (; ch < c; ch++)
    {
        tdn_dw1_prepare(&b1, g, w, bias, q, ch);
        for (int32_t oy = 0; oy < g->oh; oy++)
        {
            tdn_dw1_row(g, &b1, oy, out + oy * ow * c + ch, c);
        }
    }
}

/* ---- in place ------------------------------------------------------------------------------------
 * Output row j of a block is stored over the block's channel slots of pixels [j*ow, (j+1)*ow), i.e.
 * over input rows first(j) = j*ow / iw .. last(j) = ((j+1)*ow - 1) / iw. Input row r is last read by
 * output row min(oh - 1, (r + ph) / sh) (windows move down with oy). So the rows are computed in
 * order into a ring of `depth` rows in ctx->buf and row j is stored as soon as output row
 * (last(j) + ph) / sh is computed; no other channel's slots are touched. A row whose slots are
 * read by no row from j on (ready(j) < j: all but the first rows of a stride-2 layer) is computed
 * straight into them. */

/* The output row after which output row j can be stored. */
static int32_t tdn_inplace_ready(const tdn_dw_geo *g, int32_t j)
{
    const int32_t last_in = ((j + 1) * g->ow - 1) / g->iw;
    const int32_t reader = (last_in + g->ph) / g->sh;
    return reader < g->oh - 1 ? reader : g->oh - 1;
}

/* The most output rows pending at once (the ring depth). */
static int32_t tdn_inplace_depth(const tdn_dw_geo *g)
{
    int32_t pending_from = 0, depth = 1;
    for (int32_t oy = 0; oy < g->oh; oy++)
    {
        depth = oy - pending_from + 1 > depth ? oy - pending_from + 1 : depth;
        while (pending_from <= oy && tdn_inplace_ready(g, pending_from) <= oy)
        {
            pending_from++;
        }
    }
    return depth;
}

/* Store ring row j (ow pixels of group bytes) into the group's slots of output row j. */
static void tdn_inplace_store(const tdn_dw_geo *g, const int8_t *ring_row, int8_t *inout, int32_t j, int32_t ch,
                              int32_t group)
{
    const int32_t c = g->c, ow = g->ow;
    int8_t *dst = inout + j * ow * c + ch;
    if (group == 4)
    {
        /* two pixels a step (LDRD, two STR) */
        int32_t i = 0;
        for (; i + 2 <= ow; i += 2)
        {
            uint32_t v0, v1;
            memcpy(&v0, ring_row + 4 * i, 4);
            memcpy(&v1, ring_row + 4 * i + 4, 4);
            memcpy(dst, &v0, 4);
            memcpy(dst + c, &v1, 4);
            dst += 2 * c;
        }
        if (i < ow)
        {
            memcpy(dst, ring_row + 4 * i, 4);
        }
    }
    else
    {
        for (int32_t i = 0; i < ow; i++)
        {
            *dst = ring_row[i];
            dst += c;
        }
    }
}

int32_t tinydet_depthwise_conv_inplace_s8_get_buffer_size(const cmsis_nn_dims *output_dims)
{
    return output_dims->h * output_dims->w;
}

arm_cmsis_nn_status tinydet_depthwise_conv_inplace_s8(const cmsis_nn_context *ctx,
                                                      const cmsis_nn_dw_conv_params *p,
                                                      const cmsis_nn_per_channel_quant_params *q,
                                                      const cmsis_nn_dims *in_d,
                                                      int8_t *inout,
                                                      const cmsis_nn_dims *f_d,
                                                      const int8_t *w,
                                                      const cmsis_nn_dims *bias_dims,
                                                      const int32_t *bias,
                                                      const cmsis_nn_dims *out_d)
{
    (void)bias_dims;
    const int32_t c = in_d->c, oh = out_d->h, ow = out_d->w;
    /* dilation is not used by tinydet's networks: kept out of this kernel (ARG_ERROR) */
    if (ctx == NULL || ctx->buf == NULL || p->ch_mult != 1 || out_d->c != c || in_d->n != 1 ||
        oh * ow > in_d->h * in_d->w || tdn_dilation(p->dilation.h) != 1 || tdn_dilation(p->dilation.w) != 1 ||
        f_d->h * f_d->w > TINYDET_DW_INPLACE_MAX_TAPS || oh < 1 || ow < 1)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    tdn_dw_geo g;
    tdn_dw_geometry(&g, p, q, in_d, inout, f_d, out_d);
    const int32_t depth = tdn_inplace_depth(&g);
    if (ctx->size < depth * ow)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    /* blocks of 4 channels when the ring of 4-byte pixels fits the buffer (it does for all but
     * the smallest tiles: depth is 2 rows for a 3x3 stride-1 layer), else one channel at a time */
    const int32_t group = ctx->size >= 4 * depth * ow ? 4 : 1;
    int8_t *ring = (int8_t *)ctx->buf;
    const int32_t ring_row = ow * group;
    int32_t ch = 0;
    union
    {
        tdn_dw4 b4;
        tdn_dw1 b1;
    } u; /* one block at a time: keeps the stack at one block's weights */
    tdn_dw4 *const b4 = &u.b4;
    tdn_dw1 *const b1 = &u.b1;
    while (ch < c)
    {
        const int32_t n = (group == 4 && ch + 4 <= c) ? 4 : 1;
        if (n == 4)
        {
            tdn_dw4_prepare(b4, &g, w, bias, q, ch);
        }
        else
        {
            tdn_dw1_prepare(b1, &g, w, bias, q, ch);
        }
        /* pending rows [pending_from, oy]; pending_ready: tdn_inplace_ready(pending_from), kept
         * from one row to the next (the row loop's bookkeeping weighs on small tiles) */
        int32_t pending_from = 0, pending_ready = tdn_inplace_ready(&g, 0), slot = 0;
#if TDN_DSP
        const int32_t row3 = n == 4 && b4->use3 && g.ih >= 3 && g.iw >= 3;
#endif
        for (int32_t oy = 0; oy < oh; oy++)
        {
            /* a row whose slots no row from oy on reads any more goes straight to them (most rows
             * of a stride-2 layer); the others through the ring (slot = oy % depth) */
            const int32_t direct = (oy == pending_from ? pending_ready : tdn_inplace_ready(&g, oy)) < oy;
            int8_t *dst = direct ? inout + oy * ow * c + ch : ring + slot * ring_row;
            const int32_t opix = direct ? c : n;
#if TDN_DSP
            if (row3)
            {
                tdn_dw4_row3(&g, b4, oy, dst, opix);
            }
            else
#endif
            if (n == 4)
            {
                tdn_dw4_row(&g, b4, oy, dst, opix);
            }
            else
            {
                tdn_dw1_row(&g, b1, oy, dst, opix);
            }
            slot = slot + 1 == depth ? 0 : slot + 1;
            while (pending_from <= oy && pending_ready <= oy)
            {
                if (pending_ready >= pending_from) /* not a direct row */
                {
                    tdn_inplace_store(&g, ring + (pending_from % depth) * ring_row, inout, pending_from, ch, n);
                }
                pending_from++;
                pending_ready = pending_from < oh ? tdn_inplace_ready(&g, pending_from) : oh;
            }
        }
        ch += n;
    }
    return ARM_CMSIS_NN_SUCCESS;
}
