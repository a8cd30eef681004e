/*
 * tinydet_executor.h - runs a generated model: the tables model.c holds (layers, steps, tiles,
 * outputs, detector) and the executor that walks them.
 *
 * Generated code is data only: it includes this header and defines one const tinydet_model with
 * C99 designated initializers; the behaviour (step dispatch, the patch-mode tile loop, layer mode)
 * lives in src/executor.c. The runtime never includes generated code.
 */
#ifndef TINYDET_EXECUTOR_H
#define TINYDET_EXECUTOR_H

#include <stdint.h>

#include "tinydet_detect.h"
#include "tinydet_runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One convolution / depthwise convolution (+ an optional fused residual add) with its const data. */
typedef struct
{
    const char *name;
    const int8_t *weights; /* OHWI (convolution) or [1, KH, KW, C] (depthwise) */
    const int32_t *bias, *mult, *shift;
    int32_t in_channels, out_channels, kernel_h, kernel_w, stride_h, stride_w;
    int32_t input_offset, output_offset, act_min, act_max;
    int32_t depthwise;
    const tinydet_add_params *add; /* residual add after the convolution, or NULL */
    int32_t conv_first;            /* the add's first operand is the convolution */
    int32_t op;                    /* TINYDET_OP_*; 0 (the default of designated initializers): convolution */
} tinydet_layer;

/* What a layer computes (tinydet.deploy.lower.LayerRow.op). A global average pool has no const data
 * (NULL arrays) and in_channels = out_channels; a fully connected layer has weights [C_out][depth]
 * (in_channels = depth) and a multiplier/shift per output (a per-tensor graph's one value repeated). */
enum
{
    TINYDET_OP_CONV = 0,    /* convolution or depthwise convolution (+ residual add) */
    TINYDET_OP_AVGPOOL = 1, /* global average pool of the step's input map (arm_avgpool_s8) */
    TINYDET_OP_FC = 2       /* fully connected on the step's input (arm_fully_connected_s8) */
};

/* A weightless op of a detector neck (tinydet.deploy.lower.NeckRow): its kernel and parameters. */
enum
{
    TINYDET_NECK_MAXPOOL = 1,  /* arm_max_pool_s8; padding from the step's pad */
    TINYDET_NECK_UPSAMPLE = 2, /* tinydet_upsample_nearest_s8 by (factor_h, factor_w) */
    TINYDET_NECK_CONCAT = 3,   /* tinydet_concat_s8 of num_inputs tensors (parts) */
    TINYDET_NECK_ADD = 4       /* arm_elementwise_add_s8 of two tensors (add: TFLite ADD rescaling) */
};

#define TINYDET_NECK_MAX_INPUTS 8 /* inputs of one concat */

typedef struct
{
    const char *name;
    int32_t kind;     /* TINYDET_NECK_* */
    int32_t channels; /* of the output (max pool, upsample, add: also of the input) */
    int32_t kernel_h, kernel_w, stride_h, stride_w; /* max pool */
    int32_t factor_h, factor_w;                     /* upsample */
    int32_t act_min, act_max;                       /* max pool clamp */
    const tinydet_add_params *add;                  /* add */
    const tinydet_concat_part *parts;               /* concat: one per input, in order */
    int32_t num_inputs;
} tinydet_neck_op;

/* How a step stores its output (tinydet/schedule/arena.py: ArenaStep.mode). */
enum
{
    TINYDET_STEP_NORMAL = 0,         /* output at `output`; with an add, the sum goes to `result` */
    TINYDET_STEP_INPLACE_DW = 1,     /* depthwise over its own input, one channel at a time via `temp` */
    TINYDET_STEP_FUSED_RESIDUAL = 2, /* row by row into the shortcut's slot */
    TINYDET_STEP_SINK = 3,           /* a tile's last stage-1 layer: rows into the stage-1 map */
    TINYDET_STEP_FUSED_IR = 4,       /* a fused inverted residual (`fused`), row by row */
    TINYDET_STEP_STAGED_DW = 5       /* an in-place depthwise computed whole into the free bytes at
                                      * `temp` (the ordinary kernel), then copied to `output` */
};

/* A fused inverted residual (tinydet.deploy.lower.FusedRow): expand (1x1) -> depthwise -> project
 * (1x1) [+ shortcut] row by row of the output through a ring of expanded rows at the step's `temp`
 * and one depthwise pixel at `pixel` (tinydet_fused_ir_s8). The step holds the block input (`input`,
 * in_h x in_w), the depthwise pads (`pad`), the output and the shortcut; `layer` is the projection. */
typedef struct
{
    int32_t expand, dw, project; /* indices into tinydet_model.layers; expand -1: none */
    int32_t ring_rows;           /* expanded rows the ring holds */
    int32_t pixel;               /* arena offset of the depthwise output pixel */
    int32_t input_from;          /* >= 0: the input is first moved from here to `input` */
    int32_t move_from;           /* >= 0: the output is streamed here, then moved to `output` */
} tinydet_fused_step;

/* One layer execution on a map or a tile's region of it. */
typedef struct
{
    int32_t layer;   /* index into tinydet_model.layers */
    int32_t counter; /* index into tinydet_model.layer_ticks */
    int32_t mode;    /* TINYDET_STEP_* */
    int32_t reverse; /* fused / unfused residual: rows last to first */
    int32_t in_h, in_w;
    tinydet_pad pad;           /* zero padding of the input per side; bottom/right may be negative (unread) */
    int32_t out_pitch;         /* pixels between output rows (the stage-1 map width for a sink) */
    tinydet_pad shortcut_crop; /* where the output sits in the shortcut region (top/left) and its excess */
    int32_t input, output, temp, shortcut, result; /* arena byte offsets; -1: none */
    const tinydet_neck_op *neck; /* a neck op (layer unused), or NULL */
    const int32_t *inputs;       /* neck op: arena offsets of its num_inputs inputs (inputs[0] == input) */
    const tinydet_fused_step *fused; /* a fused inverted residual, or NULL */
} tinydet_step;

typedef struct
{
    tinydet_rect rect;             /* the tile's input-image region */
    int32_t input;                 /* arena offset of its input buffer */
    int32_t first_step, num_steps; /* its steps in tinydet_model.tile_steps */
} tinydet_tile;

/* An int8 NHWC output tensor in the arena. */
typedef struct
{
    const char *name;
    int32_t offset, h, w, c, zp;
    float scale;
} tinydet_output_info;

typedef struct
{
    int8_t *arena;
    int8_t *scratch; /* kernel scratch beside the arena (DESIGN.md counts it apart from the peak) */
    int32_t scratch_bytes;
    const tinydet_layer *layers;
    const tinydet_tile *tiles; /* patch mode: stage 1 per tile, then `steps` (stage 2) */
    int32_t num_tiles;         /* 0: layer mode (the whole image at `input`, then `steps`) */
    const tinydet_step *tile_steps;
    const tinydet_step *steps;
    int32_t num_steps;
    int32_t input; /* layer mode: arena offset of the image */
    int32_t input_h, input_w;
    const tinydet_output_info *outputs;
    int32_t num_outputs;
    const tinydet_detector *detector; /* NULL: not a detector */
    uint32_t *layer_ticks;            /* += counter ticks per layer */
    uint32_t *input_ticks;            /* += ticks reading the image source */
    uint32_t (*counter)(void);
} tinydet_model;

#define TINYDET_ERROR_SOURCE (-100000)

/* Runs the network on the int8 NHWC image behind src. Patch mode reads each tile's input region
 * from src; layer mode reads the whole image into the arena. Returns 0, -(1 + step index) when a
 * kernel rejects its arguments (the index counts a tile's steps or stage 2's), or
 * TINYDET_ERROR_SOURCE when src cannot be read. */
int tinydet_run(const tinydet_model *m, const tinydet_source *src);

/* int8 NHWC output i (valid after tinydet_run, until the next run). */
const int8_t *tinydet_output(const tinydet_model *m, int i);

/* tinydet_detect on the model's outputs (0 detections for a model without a detector). */
int tinydet_model_detect(const tinydet_model *m, tinydet_detection *dets, int max);

/* A classifier's scores: output 0 (its int8 logits) dequantized, scores[k] = (q[k] - zp) * scale
 * for k < max (the int8 graph's DequantizeLinear, in float32); returns the top-1 class (the first of
 * the largest int8 logits), or -1 for a model that is a detector or has not exactly one output. */
int tinydet_model_classify(const tinydet_model *m, float *scores, int max);

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_EXECUTOR_H */
