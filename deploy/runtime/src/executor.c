/* The executor of generated models (include/tinydet_executor.h): walks the step tables. */
#include <string.h>

#include "tinydet_executor.h"

/* The kernel arguments of step S of layer L: CMSIS padding and output size from the step's pads. */
static int tde_conv_args(const tinydet_layer *L, const tinydet_step *S, tinydet_conv_args *a)
{
    a->depthwise = L->depthwise;
    a->conv.input_offset = L->input_offset;
    a->conv.output_offset = L->output_offset;
    a->conv.stride.w = L->stride_w;
    a->conv.stride.h = L->stride_h;
    a->conv.dilation.w = 1;
    a->conv.dilation.h = 1;
    a->conv.activation.min = L->act_min;
    a->conv.activation.max = L->act_max;
    a->quant.multiplier = (int32_t *)L->mult;
    a->quant.shift = (int32_t *)L->shift;
    a->input_dims.n = 1;
    a->input_dims.h = S->in_h;
    a->input_dims.w = S->in_w;
    a->input_dims.c = L->in_channels;
    a->filter_dims.n = L->depthwise ? 1 : L->out_channels;
    a->filter_dims.h = L->kernel_h;
    a->filter_dims.w = L->kernel_w;
    a->filter_dims.c = L->depthwise ? L->out_channels : L->in_channels;
    a->output_dims.n = 1;
    a->output_dims.c = L->out_channels;
    a->filter = L->weights;
    a->bias = L->bias;
    return tinydet_tile_geometry(S->in_h, S->in_w, L->kernel_h, L->kernel_w, &a->conv.stride, NULL, &S->pad, &a->conv.padding,
                                 &a->output_dims);
}

/* The residual rows of a step: the shortcut region around the output (shortcut_crop) and dst. */
static tinydet_rows tde_rows(const tinydet_model *m, const tinydet_layer *L, const tinydet_step *S,
                             const tinydet_conv_args *a, const int8_t *conv_out, int32_t dst)
{
    tinydet_rows r;
    r.add = L->add;
    r.conv_out = conv_out;
    r.shortcut = S->shortcut >= 0 ? m->arena + S->shortcut : NULL;
    r.shortcut_w = a->output_dims.w + S->shortcut_crop.left + S->shortcut_crop.right;
    r.shortcut_y = S->shortcut_crop.top;
    r.shortcut_x = S->shortcut_crop.left;
    r.conv_first = L->conv_first;
    r.reverse = S->reverse;
    r.dst = m->arena + dst;
    r.dst_w = S->out_pitch;
    return r;
}

/* The classifier's global average pool: the step's whole input map -> C values. */
static arm_cmsis_nn_status tde_avgpool(const tinydet_model *m, const tinydet_layer *L, const tinydet_step *S)
{
    const cmsis_nn_context ctx = {m->scratch, m->scratch_bytes};
    const cmsis_nn_dims in = {1, S->in_h, S->in_w, L->in_channels};
    const cmsis_nn_activation act = {L->act_min, L->act_max};
    return tinydet_global_avgpool_s8(&ctx, &in, m->arena + S->input, &act, m->arena + S->output);
}

/* The classifier's fully connected layer on the step's input (depth = its pixels x channels). */
static arm_cmsis_nn_status tde_fc(const tinydet_model *m, const tinydet_layer *L, const tinydet_step *S)
{
    const cmsis_nn_context ctx = {m->scratch, m->scratch_bytes};
    const cmsis_nn_fc_params p = {L->input_offset, 0, L->output_offset, {L->act_min, L->act_max}};
    const cmsis_nn_per_channel_quant_params q = {(int32_t *)L->mult, (int32_t *)L->shift};
    if (S->in_h * S->in_w != 1)
    {
        return ARM_CMSIS_NN_ARG_ERROR; /* the lowering only feeds it a pooled 1x1 map */
    }
    return tinydet_fully_connected_s8(&ctx, &p, &q, L->in_channels, L->out_channels, m->arena + S->input, L->weights,
                                      L->bias, m->arena + S->output);
}

/* [a, a + na) and [b, b + nb) do not overlap (neck kernels read and write separate buffers). */
static int tde_disjoint(int32_t a, int32_t na, int32_t b, int32_t nb)
{
    return a + na <= b || b + nb <= a;
}

/* A neck op on the whole map: the in_h x in_w inputs at S->inputs, the output at S->output. Buffers
 * that the plan makes overlap where the kernel needs them apart are refused (ARM_CMSIS_NN_ARG_ERROR)
 * rather than run into garbage. */
static arm_cmsis_nn_status tde_neck_step(const tinydet_model *m, const tinydet_step *S)
{
    const tinydet_neck_op *N = S->neck;
    int8_t *arena = m->arena;
    const int32_t c = N->channels, in_px = S->in_h * S->in_w;
    cmsis_nn_dims in = {1, S->in_h, S->in_w, c}, out = {1, S->in_h, S->in_w, c};
    switch (N->kind)
    {
    case TINYDET_NECK_MAXPOOL:
    {
        const cmsis_nn_tile stride = {N->stride_w, N->stride_h};
        cmsis_nn_pool_params p = {stride, {0, 0}, {N->act_min, N->act_max}};
        const cmsis_nn_dims filter = {1, N->kernel_h, N->kernel_w, 1};
        const cmsis_nn_context ctx = {NULL, 0};
        if (tinydet_tile_geometry(S->in_h, S->in_w, N->kernel_h, N->kernel_w, &stride, NULL, &S->pad, &p.padding,
                                  &out) != 0 ||
            !tde_disjoint(S->input, in_px * c, S->output, out.h * out.w * c))
        {
            return ARM_CMSIS_NN_ARG_ERROR;
        }
        return arm_max_pool_s8(&ctx, &p, &in, arena + S->input, &filter, &out, arena + S->output);
    }
    case TINYDET_NECK_UPSAMPLE:
    {
        const cmsis_nn_tile factor = {N->factor_w, N->factor_h};
        out.h = S->in_h * N->factor_h;
        out.w = S->in_w * N->factor_w;
        if (!tde_disjoint(S->input, in_px * c, S->output, out.h * out.w * c))
        {
            return ARM_CMSIS_NN_ARG_ERROR;
        }
        return tinydet_upsample_nearest_s8(&factor, &in, arena + S->input, &out, arena + S->output);
    }
    case TINYDET_NECK_ADD:
    {
        /* element by element: the output may be either input's buffer (in place), or apart */
        const tinydet_add_params *a = N->add;
        const int32_t n = in_px * c;
        for (int32_t i = 0; i < 2; i++)
        {
            if (S->inputs[i] != S->output && !tde_disjoint(S->inputs[i], n, S->output, n))
            {
                return ARM_CMSIS_NN_ARG_ERROR;
            }
        }
        return arm_elementwise_add_s8(arena + S->inputs[0], arena + S->inputs[1], a->input_1_offset, a->input_1_mult,
                                      a->input_1_shift, a->input_2_offset, a->input_2_mult, a->input_2_shift,
                                      a->left_shift, arena + S->output, a->out_offset, a->out_mult, a->out_shift,
                                      a->activation.min, a->activation.max, n);
    }
    case TINYDET_NECK_CONCAT:
    {
        const int8_t *src[TINYDET_NECK_MAX_INPUTS];
        if (N->num_inputs < 1 || N->num_inputs > TINYDET_NECK_MAX_INPUTS)
        {
            return ARM_CMSIS_NN_ARG_ERROR;
        }
        for (int32_t i = 0; i < N->num_inputs; i++)
        {
            if (!tde_disjoint(S->inputs[i], in_px * N->parts[i].channels, S->output, in_px * c))
            {
                return ARM_CMSIS_NN_ARG_ERROR;
            }
            src[i] = arena + S->inputs[i];
        }
        return tinydet_concat_s8(N->num_inputs, src, N->parts, &out, arena + S->output);
    }
    default:
        return ARM_CMSIS_NN_ARG_ERROR;
    }
}

/* A fused inverted residual (tinydet_fused_ir_s8): the expansion runs on one input row, the
 * projection on one pixel, the depthwise on the block's geometry (the step's input size and pads). */
static arm_cmsis_nn_status tde_fused_ir(const tinydet_model *m, const tinydet_step *S)
{
    const tinydet_fused_step *F = S->fused;
    const tinydet_layer *P = &m->layers[F->project];
    int8_t *arena = m->arena;
    tinydet_step one = *S;
    tinydet_conv_args e, d, p;
    one.pad = (tinydet_pad){0, 0, 0, 0};
    one.in_h = 1;
    if (tde_conv_args(&m->layers[F->dw], S, &d) != 0 ||
        (F->expand >= 0 && tde_conv_args(&m->layers[F->expand], &one, &e) != 0))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    one.in_w = 1;
    if (tde_conv_args(P, &one, &p) != 0 || (P->add != NULL && S->shortcut < 0))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    if (F->input_from >= 0)
    {
        const int32_t c_in = F->expand >= 0 ? e.input_dims.c : d.input_dims.c;
        tinydet_move(arena + S->input, arena + F->input_from, (size_t)S->in_h * (size_t)S->in_w * (size_t)c_in);
    }
    const tinydet_rows r = tde_rows(m, P, S, &d, NULL, F->move_from >= 0 ? F->move_from : S->output);
    const tinydet_fused_ir f = {F->expand >= 0 ? &e : NULL, &d, &p, P->add, P->conv_first, arena + S->input,
                                arena + S->temp, F->ring_rows, arena + F->pixel, r.shortcut, r.shortcut_w,
                                r.shortcut_y, r.shortcut_x, r.dst, r.dst_w};
    const cmsis_nn_context scratch = {m->scratch, m->scratch_bytes};
    const arm_cmsis_nn_status st = tinydet_fused_ir_s8(&scratch, &f);
    if (st == ARM_CMSIS_NN_SUCCESS && F->move_from >= 0)
    {
        tinydet_move(arena + S->output, arena + F->move_from,
                     (size_t)d.output_dims.h * (size_t)d.output_dims.w * (size_t)P->out_channels);
    }
    return st;
}

static arm_cmsis_nn_status tde_step(const tinydet_model *m, const tinydet_step *S)
{
    if (S->neck != NULL)
    {
        return tde_neck_step(m, S);
    }
    if (S->fused != NULL)
    {
        return tde_fused_ir(m, S);
    }
    const tinydet_layer *L = &m->layers[S->layer];
    int8_t *arena = m->arena;
    switch (L->op)
    {
    case TINYDET_OP_CONV:
        break;
    case TINYDET_OP_AVGPOOL:
        return tde_avgpool(m, L, S);
    case TINYDET_OP_FC:
        return tde_fc(m, L, S);
    default:
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    tinydet_conv_args a;
    if (tde_conv_args(L, S, &a) != 0 || (L->add != NULL && S->shortcut < 0))
    {
        return ARM_CMSIS_NN_ARG_ERROR;
    }
    const cmsis_nn_context scratch = {m->scratch, m->scratch_bytes};
    switch (S->mode)
    {
    case TINYDET_STEP_INPLACE_DW:
    {
        /* the planner's one-channel temp in the arena is the kernel's buffer */
        const cmsis_nn_dims bd = {1, 1, 1, L->out_channels};
        const cmsis_nn_dw_conv_params p = {a.conv.input_offset, a.conv.output_offset, 1, a.conv.stride,
                                           a.conv.padding, a.conv.dilation, a.conv.activation};
        const cmsis_nn_context ctx = {arena + S->temp, a.output_dims.h * a.output_dims.w};
        const arm_cmsis_nn_status st = tinydet_depthwise_conv_inplace_s8(
            &ctx, &p, &a.quant, &a.input_dims, arena + S->input, &a.filter_dims, a.filter, &bd, a.bias, &a.output_dims);
        if (st == ARM_CMSIS_NN_SUCCESS && S->output != S->input)
        {
            /* the plan keeps the output at the slot's far end (slot stacked from the arena top) */
            tinydet_move(arena + S->output, arena + S->input,
                    (size_t)a.output_dims.h * (size_t)a.output_dims.w * (size_t)L->out_channels);
        }
        return st;
    }
    case TINYDET_STEP_STAGED_DW:
    {
        /* the arena has the output's bytes free at this step: the ordinary depthwise (faster than
         * the in-place one) into them, then into the in-place slot, where the plan keeps it */
        const arm_cmsis_nn_status st = tinydet_conv(&scratch, &a, arena + S->input, arena + S->temp);
        if (st == ARM_CMSIS_NN_SUCCESS)
        {
            tinydet_move(arena + S->output, arena + S->temp,
                         (size_t)a.output_dims.h * (size_t)a.output_dims.w * (size_t)L->out_channels);
        }
        return st;
    }
    case TINYDET_STEP_FUSED_RESIDUAL:
    case TINYDET_STEP_SINK:
    {
        /* row by row into the shortcut's slot / the stage-1 map (with or without the add) */
        const tinydet_rows r = tde_rows(m, L, S, &a, NULL, S->output);
        return tinydet_conv_rows(&scratch, &a, arena + S->input, &r);
    }
    default:
    {
        const arm_cmsis_nn_status st = tinydet_conv(&scratch, &a, arena + S->input, arena + S->output);
        if (st != ARM_CMSIS_NN_SUCCESS || L->add == NULL)
        {
            return st;
        }
        /* unfused residual: the sum goes into the shortcut's slot (result) */
        const tinydet_rows r = tde_rows(m, L, S, &a, arena + S->output, S->result);
        return tinydet_conv_rows(&scratch, &a, NULL, &r);
    }
    }
}

static int tde_steps(const tinydet_model *m, const tinydet_step *steps, int32_t n)
{
    for (int32_t i = 0; i < n; i++)
    {
        const uint32_t t0 = m->counter();
        const arm_cmsis_nn_status st = tde_step(m, &steps[i]);
        m->layer_ticks[steps[i].counter] += m->counter() - t0;
        if (st != ARM_CMSIS_NN_SUCCESS)
        {
            return -1 - (int)i;
        }
    }
    return 0;
}

static int tde_read(const tinydet_model *m, const tinydet_source *src, const tinydet_rect *r, int32_t offset)
{
    const uint32_t t0 = m->counter();
    const int rc = tinydet_tile_read(src, r, m->arena + offset);
    *m->input_ticks += m->counter() - t0;
    return rc;
}

int tinydet_run(const tinydet_model *m, const tinydet_source *src)
{
    for (int32_t t = 0; t < m->num_tiles; t++)
    {
        const tinydet_tile *T = &m->tiles[t];
        if (tde_read(m, src, &T->rect, T->input) != 0)
        {
            return TINYDET_ERROR_SOURCE;
        }
        const int rc = tde_steps(m, m->tile_steps + T->first_step, T->num_steps);
        if (rc != 0)
        {
            return rc - T->first_step;
        }
    }
    if (m->num_tiles == 0)
    {
        const tinydet_rect all = {0, 0, m->input_h, m->input_w};
        if (tde_read(m, src, &all, m->input) != 0)
        {
            return TINYDET_ERROR_SOURCE;
        }
    }
    return tde_steps(m, m->steps, m->num_steps);
}

const int8_t *tinydet_output(const tinydet_model *m, int i)
{
    return m->arena + m->outputs[i].offset;
}

int tinydet_model_detect(const tinydet_model *m, tinydet_detection *dets, int max)
{
    return m->detector != NULL ? tinydet_detect(m->detector, m->arena, dets, max) : 0;
}

int tinydet_model_classify(const tinydet_model *m, float *scores, int max)
{
    if (m->detector != NULL || m->num_outputs != 1)
    {
        return -1;
    }
    const tinydet_output_info *o = &m->outputs[0];
    const int8_t *q = m->arena + o->offset;
    const int32_t n = o->h * o->w * o->c;
    int best = 0;
    for (int32_t k = 0; k < n; k++)
    {
        if (k < max)
        {
            scores[k] = (float)(q[k] - o->zp) * o->scale;
        }
        if (q[k] > q[best])
        {
            best = (int)k;
        }
    }
    return best;
}
