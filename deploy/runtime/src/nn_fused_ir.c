/* Fused inverted residual, row by row (include/tinydet_runtime.h, tinydet_fused_ir_s8). Built on the
 * layers' own kernel entry points, so it runs the same arithmetic with either kernel library. */
#include <string.h>

#include "tinydet_runtime.h"

#define TDF_ALIGN4(n) (((n) + 3) & ~3)

static int32_t tdf_max(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static int32_t tdf_min(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

/* The depthwise kernel's scratch on one output pixel's window (k x k x C_e at most). */
static int32_t tdf_dw_buffer(const tinydet_conv_args *dw)
{
    const cmsis_nn_dw_conv_params p = {dw->conv.input_offset, dw->conv.output_offset, 1, dw->conv.stride,
                                       dw->conv.padding, dw->conv.dilation, dw->conv.activation};
    const cmsis_nn_dims in = {1, dw->filter_dims.h, dw->filter_dims.w, dw->input_dims.c};
    const cmsis_nn_dims out = {1, 1, 1, dw->output_dims.c};
    return arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &dw->filter_dims, &out);
}

static int32_t tdf_kernel_buffer(const tinydet_fused_ir *f)
{
    int32_t n = tdf_max(tdf_dw_buffer(f->dw), tinydet_conv_get_buffer_size(f->project));
    if (f->expand != NULL)
    {
        n = tdf_max(n, tinydet_conv_get_buffer_size(f->expand));
    }
    return TDF_ALIGN4(n);
}

int32_t tinydet_fused_ir_get_buffer_size(const tinydet_fused_ir *f)
{
    const tinydet_conv_args *dw = f->dw;
    return tdf_kernel_buffer(f) + TDF_ALIGN4(dw->filter_dims.h * dw->filter_dims.w * dw->input_dims.c) +
           TDF_ALIGN4(f->project->output_dims.c);
}

/* Output pixel x of the depthwise over `rows` window rows at src (row pitch w pixels), the window's
 * top `pad_top` rows in the padding: its k x k window (the columns inside the input) is copied into
 * win, then the kernel runs on that 1-pixel image with the window's own pads. */
static arm_cmsis_nn_status tdf_dw_pixel(const cmsis_nn_context *kctx, const tinydet_conv_args *dw, const int8_t *src,
                                        int32_t rows, int32_t pad_top, int32_t x, int8_t *win, int8_t *pixel)
{
    const int32_t w = dw->input_dims.w, c = dw->input_dims.c;
    const int32_t left = x * dw->conv.stride.w - dw->conv.padding.w;
    const int32_t c0 = tdf_max(left, 0), c1 = tdf_min(left + dw->filter_dims.w, w);
    if (c1 <= c0)
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    for (int32_t r = 0; r < rows; r++)
    {
        memcpy(win + r * (c1 - c0) * c, src + (r * w + c0) * c, (size_t)((c1 - c0) * c));
    }
    const cmsis_nn_tile pad = {c0 - left, pad_top};
    const cmsis_nn_dw_conv_params p = {dw->conv.input_offset, dw->conv.output_offset, 1, dw->conv.stride, pad,
                                       dw->conv.dilation, dw->conv.activation};
    const cmsis_nn_dims in = {1, rows, c1 - c0, c}, out = {1, 1, 1, dw->output_dims.c};
    const cmsis_nn_dims bias = {1, 1, 1, dw->output_dims.c};
    return arm_depthwise_conv_wrapper_s8(kctx, &p, &dw->quant, &in, win, &dw->filter_dims, dw->filter, &bias,
                                         dw->bias, &out, pixel);
}

arm_cmsis_nn_status tinydet_fused_ir_s8(const cmsis_nn_context *ctx, const tinydet_fused_ir *f)
{
    const tinydet_conv_args *dw = f->dw, *pr = f->project;
    const int32_t h = dw->input_dims.h, w = dw->input_dims.w, ce = dw->input_dims.c, c_out = pr->output_dims.c;
    const int32_t kh = dw->filter_dims.h, sh = dw->conv.stride.h, pt = dw->conv.padding.h;
    const int32_t row_e = w * ce, row_x = w * (f->expand != NULL ? f->expand->input_dims.c : ce);
    const int32_t kbytes = tdf_kernel_buffer(f);
    if (ctx->buf == NULL || ctx->size < tinydet_fused_ir_get_buffer_size(f) || dw->output_dims.c != ce ||
        pr->input_dims.c != ce || (f->add != NULL && f->shortcut == NULL))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const cmsis_nn_context kctx = {ctx->buf, kbytes};
    int8_t *win = (int8_t *)ctx->buf + kbytes;
    int8_t *conv_px = win + TDF_ALIGN4(kh * dw->filter_dims.w * ce);
    int32_t base = 0, held = 0; /* the ring holds input rows [base, base + held) from its start */
    for (int32_t y = 0; y < dw->output_dims.h; y++)
    {
        const int32_t top = y * sh - pt, r0 = tdf_max(top, 0), r1 = tdf_min(top + kh, h);
        if (r1 <= r0)
        {
            return ARM_CMSIS_NN_ARG_ERROR;
        }
        const int8_t *src = f->input + r0 * row_x;
        if (f->expand != NULL)
        {
            if (r1 - r0 > f->ring_rows)
            {
                return ARM_CMSIS_NN_ARG_ERROR; /* a window the ring cannot hold */
            }
            const int32_t drop = tdf_min(tdf_max(r0 - base, 0), held);
            if (drop > 0 && drop < held)
            {
                tinydet_move(f->ring, f->ring + drop * row_e, (size_t)((held - drop) * row_e));
            }
            held -= drop;
            base = held > 0 ? base + drop : r0;
            for (int32_t r = base + held; r < r1; r++, held++)
            {
                const arm_cmsis_nn_status st = tinydet_conv(&kctx, f->expand, f->input + r * row_x,
                                                            f->ring + held * row_e);
                if (st != ARM_CMSIS_NN_SUCCESS)
                {
                    return st;
                }
            }
            src = f->ring + (r0 - base) * row_e;
        }
        for (int32_t x = 0; x < dw->output_dims.w; x++)
        {
            int8_t *out = f->dst + (y * f->dst_w + x) * c_out;
            arm_cmsis_nn_status st = tdf_dw_pixel(&kctx, dw, src, r1 - r0, r0 - top, x, win, f->pixel);
            if (st == ARM_CMSIS_NN_SUCCESS)
            {
                st = tinydet_conv(&kctx, pr, f->pixel, f->add != NULL ? conv_px : out);
            }
            if (st != ARM_CMSIS_NN_SUCCESS)
            {
                return st;
            }
            if (f->add != NULL)
            {
                const tinydet_add_params *a = f->add;
                const int8_t *sc = f->shortcut + ((y + f->shortcut_y) * f->shortcut_w + x + f->shortcut_x) * c_out;
                st = arm_elementwise_add_s8(f->conv_first ? conv_px : sc, f->conv_first ? sc : conv_px,
                                            a->input_1_offset, a->input_1_mult, a->input_1_shift, a->input_2_offset,
                                            a->input_2_mult, a->input_2_shift, a->left_shift, out, a->out_offset,
                                            a->out_mult, a->out_shift, a->activation.min, a->activation.max, c_out);
                if (st != ARM_CMSIS_NN_SUCCESS)
                {
                    return st;
                }
            }
        }
    }
    return ARM_CMSIS_NN_SUCCESS;
}
