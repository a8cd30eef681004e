/*
 * tinydet_detect.h - decode + NMS of a detector's int8 head maps: tinydet.models.decode.postprocess
 * (decode, max_candidates, per-class NMS, max_det) with identical boxes, scores and labels.
 *
 * Fast at any threshold: each map's sigmoid is a 256-entry table (the int8 value's sigmoid,
 * computed by the generator with the Python decode's own function), a slot is skipped on its int8
 * objectness alone (score = sig(obj) * sig(cls) <= sig(obj)), the best max_candidates are kept in a
 * bounded heap (ties: the earlier slot first, as numpy's stable argsort), and NMS compares each
 * candidate with the detections kept so far only. No exponentials, no allocation: the candidate
 * buffer comes with the tables.
 */
#ifndef TINYDET_DETECT_H
#define TINYDET_DETECT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One head map: int8 NHWC [h, w, num_anchors * (5 + num_classes)] at `offset` from the base
 * pointer given to tinydet_detect; channel a * (5 + C) + k as in docs/CONTRACTS.md. */
typedef struct
{
    int32_t offset;
    int32_t h, w;
    float stride;
    const float *anchors;   /* [num_anchors][2]: w, h in input pixels */
    const float *sigmoid;   /* [256]: sigmoid((q - zero_point) * scale) at index q + 128 */
    int32_t objectness_min; /* the smallest q with sigmoid > conf_thresh (128: no slot can pass) */
} tinydet_head;

/* A decoded slot that passed the threshold: its score, slot index (heads, then anchors, rows,
 * columns, as the Python decode flattens them) and best class. */
typedef struct
{
    float score;
    int32_t index;
    int32_t label;
} tinydet_candidate;

typedef struct
{
    float x1, y1, x2, y2, score;
    int32_t label;
} tinydet_detection;

typedef struct
{
    const tinydet_head *heads;
    int32_t num_heads, num_anchors, num_classes;
    float conf_thresh, nms_iou; /* nms_iou in [0, 1] */
    float input_h, input_w;     /* boxes are clipped to [0, input_w] x [0, input_h] */
    tinydet_candidate *candidates;
    int32_t max_candidates; /* >= 1 */
} tinydet_detector;

/* Detections of the maps at base (+ head offsets) into dets[0..max), best first; returns the count. */
int tinydet_detect(const tinydet_detector *d, const int8_t *base, tinydet_detection *dets, int max);

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_DETECT_H */
