/* tinydet-specific kernels and tile helpers (see include/tinydet_runtime.h). */
#include <string.h>

#include "tinydet_runtime.h"
#include "nn_internal.h"

/* tinydet_depthwise_conv_inplace_s8 is in nn_dw_fast.c, beside the depthwise rows it shares. */

static cmsis_nn_dw_conv_params tdr_dw_params(const tinydet_conv_args *a)
{
    const cmsis_nn_conv_params *c = &a->conv;
    const cmsis_nn_dw_conv_params p = {c->input_offset, c->output_offset, 1, c->stride, c->padding, c->dilation,
                                       c->activation};
    return p;
}

int32_t tinydet_conv_get_buffer_size(const tinydet_conv_args *a)
{
    if (a->depthwise)
    {
        const cmsis_nn_dw_conv_params p = tdr_dw_params(a);
        return arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &a->input_dims, &a->filter_dims, &a->output_dims);
    }
    return arm_convolve_wrapper_s8_get_buffer_size(&a->conv, &a->input_dims, &a->filter_dims, &a->output_dims);
}

arm_cmsis_nn_status tinydet_conv(const cmsis_nn_context *ctx, const tinydet_conv_args *a, const int8_t *in, int8_t *out)
{
    const cmsis_nn_dims bd = {1, 1, 1, a->output_dims.c};
    const cmsis_nn_per_channel_quant_params q = a->quant;
    if (tinydet_conv_get_buffer_size(a) > ctx->size)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    if (a->depthwise)
    {
        const cmsis_nn_dw_conv_params p = tdr_dw_params(a);
        return arm_depthwise_conv_wrapper_s8(ctx, &p, &q, &a->input_dims, in, &a->filter_dims, a->filter, &bd, a->bias,
                                             &a->output_dims, out);
    }
    return arm_convolve_wrapper_s8(ctx, &a->conv, &q, &a->input_dims, in, &a->filter_dims, a->filter, &bd, a->bias,
                                   &a->output_dims, out);
}

/* The layer restricted to output row y: the input rows that row reads, the rows above the input
 * as top padding, stride 1 vertically, one output row. */
static tinydet_conv_args tdr_row_args(const tinydet_conv_args *a, int32_t y, int32_t *first_row)
{
    const int32_t top = y * a->conv.stride.h - a->conv.padding.h;
    const int32_t y0 = top < 0 ? 0 : top;
    int32_t y1 = top + (a->filter_dims.h - 1) * tdn_dilation(a->conv.dilation.h) + 1;
    if (y1 > a->input_dims.h)
    {
        y1 = a->input_dims.h;
    }
    tinydet_conv_args r = *a;
    r.input_dims.h = y1 > y0 ? y1 - y0 : 0;
    r.conv.padding.h = y0 - top;
    r.conv.stride.h = 1;
    r.output_dims.h = 1;
    *first_row = y0;
    return r;
}

static int32_t tdr_row_bytes(const tinydet_conv_args *a)
{
    return tdn_align4(a->output_dims.w * a->output_dims.c);
}

int32_t tinydet_conv_rows_get_buffer_size(const tinydet_conv_args *a)
{
    int32_t y0;
    /* row 0 has the most input rows the kernel sees only when it is not padded; any row's buffer
     * is the same (the wrappers' buffers do not depend on the number of rows) */
    const tinydet_conv_args r = tdr_row_args(a, 0, &y0);
    return tdn_align4(tinydet_conv_get_buffer_size(&r)) + 2 * tdr_row_bytes(a);
}

/* Rows [y0, y0 + n) of a 1x1 unpadded layer (the projections) in one call: input rows y * stride. */
static tinydet_conv_args tdr_rows_1x1(const tinydet_conv_args *a, int32_t y0, int32_t n, int32_t *first_row)
{
    tinydet_conv_args r = *a;
    r.input_dims.h = (n - 1) * a->conv.stride.h + 1;
    r.output_dims.h = n;
    *first_row = y0 * a->conv.stride.h;
    return r;
}

static int tdr_is_1x1(const tinydet_conv_args *a)
{
    return !a->depthwise && a->filter_dims.h == 1 && a->filter_dims.w == 1 && a->conv.padding.h == 0 &&
           a->conv.padding.w == 0;
}

arm_cmsis_nn_status tinydet_conv_rows(const cmsis_nn_context *ctx, const tinydet_conv_args *a, const int8_t *in,
                                      const tinydet_rows *r)
{
    const int32_t oh = a->output_dims.h, oc = a->output_dims.c;
    const int32_t row = a->output_dims.w * oc;
    const size_t in_row = (size_t)a->input_dims.w * (size_t)a->input_dims.c;
    if (ctx->buf == NULL || r->dst_w < a->output_dims.w || oh < 1)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    /* Rows per convolution call: 1 (the rows' own input windows, tdr_row_args), or for 1x1 unpadded
     * layers as many as the scratch beyond the kernel's buffer holds (a conv row and, with the add, a
     * shortcut row each; the plan sizes scratch for one of each): the kernel's per-call setup is paid
     * per chunk instead of per row. A chunk's rows are all read (input, shortcut) before any of them
     * is written: writes only move later than row by row, so the plan's rule still holds. */
    int32_t y0;
    const tinydet_conv_args first = tdr_row_args(a, 0, &y0);
    const int32_t kernel_buf = tdn_align4(tinydet_conv_get_buffer_size(&first));
    const int32_t computed = r->add == NULL || r->conv_out == NULL; /* the rows' convolution runs here */
    const int32_t row_room = tdn_align4(row);
    int32_t chunk = 1;
    if (computed && tdr_is_1x1(a))
    {
        /* contiguous plain rows go to dst in one call; otherwise each chunk row needs a conv row
         * (and, with the add, a shortcut row) in scratch */
        chunk = r->add == NULL && r->dst_w == a->output_dims.w
                    ? oh
                    : (ctx->size - kernel_buf) / ((r->add ? 2 : 1) * row_room);
        chunk = chunk < 1 ? 1 : chunk > oh ? oh : chunk;
    }
    /* plain rows are staged in scratch only when a chunk of several rows meets a dst pitch wider than
     * the output (one row is contiguous in dst; so is a chunk when the pitch is the output's width) */
    const int32_t staged = r->add == NULL && chunk > 1 && r->dst_w != a->output_dims.w;
    const int32_t room = r->add != NULL || staged ? chunk * row_room : 0;
    int8_t *conv_buf = (int8_t *)ctx->buf + ctx->size - (r->add ? 2 : 1) * room;
    int8_t *sc_buf = conv_buf + room;
    cmsis_nn_context conv_ctx;
    conv_ctx.buf = ctx->buf;
    conv_ctx.size = ctx->size - (r->add ? 2 : 1) * room;
    if (conv_ctx.size < 0)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    for (int32_t done = 0; done < oh;)
    {
        const int32_t n = oh - done < chunk ? oh - done : chunk;
        /* rows [ya, ya + n) of the output: the next chunk from the top, or from the bottom with reverse */
        const int32_t ya = r->reverse ? oh - done - n : done;
        int8_t *dst = r->dst + (size_t)ya * (size_t)r->dst_w * (size_t)oc;
        const int8_t *c_rows = conv_buf;
        if (!computed)
        {
            c_rows = r->conv_out + (size_t)ya * (size_t)row;
        }
        else
        {
            int32_t yi;
            const tinydet_conv_args ra = tdr_is_1x1(a) ? tdr_rows_1x1(a, ya, n, &yi) : tdr_row_args(a, ya, &yi);
            const arm_cmsis_nn_status st =
                tinydet_conv(&conv_ctx, &ra, in + (size_t)yi * in_row, r->add == NULL && !staged ? dst : conv_buf);
            if (st != ARM_CMSIS_NN_SUCCESS)
            {
                return st;
            }
            if (r->add == NULL)
            {
                for (int32_t i = 0; staged && i < n; i++)
                {
                    memcpy(dst + (size_t)i * (size_t)r->dst_w * (size_t)oc, conv_buf + (size_t)i * (size_t)row, (size_t)row);
                }
                done += n;
                continue;
            }
        }
        const tinydet_add_params *p = r->add;
        for (int32_t i = 0; i < n; i++)
        {
            memcpy(sc_buf + (size_t)i * (size_t)row,
                   r->shortcut + ((size_t)(ya + i + r->shortcut_y) * (size_t)r->shortcut_w + (size_t)r->shortcut_x) *
                                     (size_t)oc,
                   (size_t)row);
        }
        for (int32_t i = 0; i < n; i++)
        {
            /* within a chunk the order does not matter: all of its shortcut rows are copied already */
            const int8_t *c_row = c_rows + (size_t)i * (size_t)row, *s_row = sc_buf + (size_t)i * (size_t)row;
            arm_elementwise_add_s8(r->conv_first ? c_row : s_row, r->conv_first ? s_row : c_row, p->input_1_offset,
                                   p->input_1_mult, p->input_1_shift, p->input_2_offset, p->input_2_mult,
                                   p->input_2_shift, p->left_shift, dst + (size_t)i * (size_t)r->dst_w * (size_t)oc,
                                   p->out_offset, p->out_mult, p->out_shift, p->activation.min, p->activation.max,
                                   row);
        }
        done += n;
    }
    return ARM_CMSIS_NN_SUCCESS;
}

static tinydet_conv_args tdr_conv_args(const cmsis_nn_conv_params *cp, const cmsis_nn_per_channel_quant_params *q,
                                       const cmsis_nn_dims *in_d, const cmsis_nn_dims *f_d, const int8_t *f,
                                       const int32_t *bias, const cmsis_nn_dims *out_d)
{
    tinydet_conv_args a;
    a.depthwise = 0;
    a.conv = *cp;
    a.quant = *q;
    a.input_dims = *in_d;
    a.input_dims.n = 1;
    a.filter_dims = *f_d;
    a.output_dims = *out_d;
    a.output_dims.n = 1;
    a.filter = f;
    a.bias = bias;
    return a;
}

int32_t tinydet_conv_add_s8_get_buffer_size(const cmsis_nn_dims *input_dims,
                                            const cmsis_nn_dims *filter_dims,
                                            const cmsis_nn_dims *output_dims)
{
    /* the one-row convolution's buffer depends on the parameters only through the 1x1 fast path,
     * which needs none: the general buffer covers every case */
    cmsis_nn_dims in1 = *input_dims;
    in1.n = 1;
    return tdn_align4(arm_convolve_s8_get_buffer_size(&in1, filter_dims)) +
           2 * tdn_align4(output_dims->w * output_dims->c);
}

arm_cmsis_nn_status tinydet_conv_add_s8(const cmsis_nn_context *ctx,
                                        const cmsis_nn_conv_params *conv_params,
                                        const cmsis_nn_per_channel_quant_params *quant_params,
                                        const cmsis_nn_dims *input_dims,
                                        const int8_t *input_data,
                                        const cmsis_nn_dims *filter_dims,
                                        const int8_t *filter_data,
                                        const cmsis_nn_dims *bias_dims,
                                        const int32_t *bias_data,
                                        const cmsis_nn_dims *output_dims,
                                        const tinydet_add_params *a,
                                        int8_t *shortcut)
{
    const int32_t image_bytes = output_dims->h * output_dims->w * output_dims->c;
    const int32_t in_bytes = input_dims->h * input_dims->w * input_dims->c;
    cmsis_nn_dims in1 = *input_dims, out1 = *output_dims;
    in1.n = 1;
    out1.n = 1;
    for (int32_t b = 0; b < input_dims->n; b++)
    {
        const arm_cmsis_nn_status st =
            tinydet_conv_add_region_s8(ctx, conv_params, quant_params, &in1, input_data + b * in_bytes, filter_dims,
                                       filter_data, bias_dims, bias_data, &out1, a, &out1, 0, 0,
                                       shortcut + b * image_bytes);
        if (st != ARM_CMSIS_NN_SUCCESS)
        {
            return st;
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}

arm_cmsis_nn_status tinydet_conv_add_region_s8(const cmsis_nn_context *ctx,
                                               const cmsis_nn_conv_params *conv_params,
                                               const cmsis_nn_per_channel_quant_params *quant_params,
                                               const cmsis_nn_dims *input_dims,
                                               const int8_t *input_data,
                                               const cmsis_nn_dims *filter_dims,
                                               const int8_t *filter_data,
                                               const cmsis_nn_dims *bias_dims,
                                               const int32_t *bias_data,
                                               const cmsis_nn_dims *output_dims,
                                               const tinydet_add_params *add,
                                               const cmsis_nn_dims *shortcut_dims,
                                               int32_t shortcut_y,
                                               int32_t shortcut_x,
                                               int8_t *shortcut)
{
    (void)bias_dims;
    const int32_t oh = output_dims->h, ow = output_dims->w, oc = output_dims->c;
    if (ctx == NULL || ctx->buf == NULL || input_dims->n != 1 || shortcut_dims->c != oc || shortcut_y < 0 ||
        shortcut_x < 0 || shortcut_y + oh > shortcut_dims->h || shortcut_x + ow > shortcut_dims->w ||
        tinydet_conv_add_s8_get_buffer_size(input_dims, filter_dims, output_dims) > ctx->size)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const tinydet_conv_args conv =
        tdr_conv_args(conv_params, quant_params, input_dims, filter_dims, filter_data, bias_data, output_dims);
    /* the output goes compactly to the start of the buffer: every write lands at or before the
     * shortcut row it reads (shortcut row stride >= output row stride), rows first to last */
    tinydet_rows rows;
    rows.add = add;
    rows.conv_out = NULL;
    rows.shortcut = shortcut;
    rows.shortcut_w = shortcut_dims->w;
    rows.shortcut_y = shortcut_y;
    rows.shortcut_x = shortcut_x;
    rows.conv_first = 1;
    rows.reverse = 0;
    rows.dst = shortcut;
    rows.dst_w = ow;
    return tinydet_conv_rows(ctx, &conv, input_data, &rows);
}

#if defined(__thumb2__)
/* 32-byte blocks from S to D (both advanced by the LDM/STM write-back) until S reaches STOP: "ia"
 * moves up (increment after), "db" down (decrement before). */
#define TDR_MOVE_BLOCKS(MODE, S, D, STOP)                                                          \
    __asm volatile("1:\n\t"                                                                        \
                   "ldm" MODE " %[s]!, {r4, r5, r6, r8, r9, r10, r11, r12}\n\t"                    \
                   "stm" MODE " %[d]!, {r4, r5, r6, r8, r9, r10, r11, r12}\n\t"                    \
                   "cmp %[s], %[stop]\n\t"                                                         \
                   "bne 1b"                                                                         \
                   : [s] "+r"(S), [d] "+r"(D)                                                       \
                   : [stop] "r"(STOP)                                                               \
                   : "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "cc", "memory")
#endif

#if defined(__GNUC__) && !defined(__clang__)
/* keep gcc from turning the loops back into a memmove call */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
void tinydet_move(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    uint32_t a, b;
#if defined(__thumb2__)
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0 && n >= 32 && d != s)
    {
        /* both word aligned (the arena's slots are): 32 bytes per LDM/STM pair. Forward (dst below src)
         * each block is loaded before it is stored and the stores stay below the unread bytes;
         * backward (LDMDB/STMDB) mirrored. A forward copy's last n % 32 bytes take the loops below. */
        const size_t blocks = n >> 5;
        if (d < s)
        {
            const uint8_t *const end = s + (blocks << 5);
            TDR_MOVE_BLOCKS("ia", s, d, end);
            n &= 31;
        }
        else
        {
            /* the top n % 32 bytes first (they lie above the blocks), then the blocks downwards */
            const uint8_t *st = s + n;
            uint8_t *dt = d + n;
            for (size_t r = n & 31; r > 0; r--)
            {
                *--dt = *--st;
            }
            const uint8_t *se = s + (blocks << 5);
            uint8_t *de = d + (blocks << 5);
            TDR_MOVE_BLOCKS("db", se, de, s);
            return;
        }
    }
#endif
    if (d < s)
    {
        /* forward: each step loads its 8 bytes before storing, and stores only below what is unread */
        const uint8_t *const words_end = s + (n & ~(size_t)7);
        for (; s != words_end; d += 8, s += 8)
        {
            memcpy(&a, s, 4);
            memcpy(&b, s + 4, 4);
            memcpy(d, &a, 4);
            memcpy(d + 4, &b, 4);
        }
        for (n &= 7; n > 0; n--)
        {
            *d++ = *s++;
        }
    }
    else if (d > s)
    {
        /* backward, mirrored */
        d += n;
        s += n;
        for (; n >= 8; n -= 8)
        {
            d -= 8;
            s -= 8;
            memcpy(&a, s, 4);
            memcpy(&b, s + 4, 4);
            memcpy(d, &a, 4);
            memcpy(d + 4, &b, 4);
        }
        while (n-- > 0)
        {
            *--d = *--s;
        }
    }
}

int tinydet_read_memory(void *user, int32_t y, int32_t x, int32_t w, int8_t *dst)
{
    const tinydet_memory_image *im = (const tinydet_memory_image *)user;
    if (y < 0 || y >= im->h || x < 0 || w < 0 || x + w > im->w)
    {
        return -1;
    }
    memcpy(dst, im->data + ((size_t)y * (size_t)im->w + (size_t)x) * (size_t)im->c, (size_t)w * (size_t)im->c);
    return 0;
}

int tinydet_tile_read(const tinydet_source *src, const tinydet_rect *r, int8_t *dst)
{
    if (r->y < 0 || r->x < 0 || r->h < 0 || r->w < 0 || r->y + r->h > src->h || r->x + r->w > src->w)
    {
        return -1;
    }
    for (int32_t i = 0; i < r->h; i++)
    {
        if (src->read(src->user, r->y + i, r->x, r->w, dst + (size_t)i * (size_t)r->w * (size_t)src->c) != 0)
        {
            return -1;
        }
    }
    return 0;
}

int tinydet_tile_geometry(int32_t in_h, int32_t in_w, int32_t k_h, int32_t k_w, const cmsis_nn_tile *stride,
                          const cmsis_nn_tile *dilation, const tinydet_pad *pad, cmsis_nn_tile *padding,
                          cmsis_nn_dims *output_dims)
{
    const int32_t dh = dilation ? tdn_dilation(dilation->h) : 1;
    const int32_t dw = dilation ? tdn_dilation(dilation->w) : 1;
    const int32_t span_h = in_h + pad->top + pad->bottom - dh * (k_h - 1) - 1;
    const int32_t span_w = in_w + pad->left + pad->right - dw * (k_w - 1) - 1;
    if (span_h < 0 || span_w < 0)
    {
        return -1;
    }
    padding->h = pad->top;
    padding->w = pad->left;
    output_dims->h = span_h / stride->h + 1;
    output_dims->w = span_w / stride->w + 1;
    return 0;
}
