/* Decode + NMS of a detector's int8 head maps (include/tinydet_detect.h).
 *
 * Every float operation is the one tinydet.models.decode / tinydet.ops.boxes do in float32, in the
 * same order, so boxes, scores and labels come out identical (C99 keeps float expressions in float:
 * no contraction into fused multiply-adds under -std=c99). */
#include <stddef.h>

#include "tinydet_detect.h"

/* candidate a ranks before b: the higher score, then the earlier slot (numpy's stable argsort(-score)) */
static int tdd_before(const tinydet_candidate *a, const tinydet_candidate *b)
{
    return a->score > b->score || (a->score == b->score && a->index < b->index);
}

/* Bounded heap of the best candidates: the root is the worst kept one. */
static void tdd_sift_down(tinydet_candidate *h, int32_t n, int32_t i)
{
    const tinydet_candidate c = h[i];
    for (;;)
    {
        int32_t k = 2 * i + 1;
        if (k >= n)
        {
            break;
        }
        if (k + 1 < n && tdd_before(&h[k], &h[k + 1]))
        {
            k++; /* the worse child */
        }
        if (!tdd_before(&c, &h[k]))
        {
            break;
        }
        h[i] = h[k];
        i = k;
    }
    h[i] = c;
}

static void tdd_push(tinydet_candidate *h, int32_t *n, int32_t cap, const tinydet_candidate *c)
{
    if (*n < cap)
    {
        int32_t i = (*n)++;
        while (i > 0 && tdd_before(&h[(i - 1) / 2], c))
        {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = *c;
    }
    else if (tdd_before(c, &h[0]))
    {
        h[0] = *c;
        tdd_sift_down(h, *n, 0);
    }
}

static float tdd_clip(float v, float hi)
{
    return v < 0.0f ? 0.0f : (v > hi ? hi : v);
}

/* The clipped box of slot `index` (decode's formulas, float32). */
static void tdd_box(const tinydet_detector *d, const int8_t *base, int32_t index, float box[4])
{
    const tinydet_head *hd = d->heads;
    int32_t rest = index;
    while (rest >= d->num_anchors * hd->h * hd->w)
    {
        rest -= d->num_anchors * hd->h * hd->w;
        hd++;
    }
    const int32_t per = 5 + d->num_classes;
    const int32_t cells = hd->h * hd->w;
    const int32_t an = rest / cells, cell = rest % cells, gy = cell / hd->w, gx = cell % hd->w;
    const int8_t *v = base + hd->offset + (size_t)cell * (size_t)(d->num_anchors * per) + (size_t)(an * per);
    const float *sig = hd->sigmoid + 128;
    const float px = sig[v[0]], py = sig[v[1]], pw = sig[v[2]] * 2.0f, ph = sig[v[3]] * 2.0f;
    const float cx = (px * 2.0f - 0.5f + (float)gx) * hd->stride;
    const float cy = (py * 2.0f - 0.5f + (float)gy) * hd->stride;
    const float bw = hd->anchors[2 * an] * (pw * pw);
    const float bh = hd->anchors[2 * an + 1] * (ph * ph);
    box[0] = tdd_clip(cx - bw / 2.0f, d->input_w);
    box[1] = tdd_clip(cy - bh / 2.0f, d->input_h);
    box[2] = tdd_clip(cx + bw / 2.0f, d->input_w);
    box[3] = tdd_clip(cy + bh / 2.0f, d->input_h);
}

/* Candidates above the threshold, the best max_candidates of them, best first; returns the count. */
static int32_t tdd_candidates(const tinydet_detector *d, const int8_t *base)
{
    tinydet_candidate *heap = d->candidates;
    const int32_t per = 5 + d->num_classes;
    int32_t n = 0, index = 0;
    for (int32_t s = 0; s < d->num_heads; s++)
    {
        const tinydet_head *hd = &d->heads[s];
        const int8_t *map = base + hd->offset;
        const float *sig = hd->sigmoid + 128;
        const int32_t pixel = d->num_anchors * per, cells = hd->h * hd->w;
        for (int32_t an = 0; an < d->num_anchors; an++)
        {
            const int8_t *v = map + an * per;
            for (int32_t cell = 0; cell < cells; cell++, index++, v += pixel)
            {
                /* score <= sig(obj): a slot below the int8 threshold cannot pass */
                if (v[4] < hd->objectness_min)
                {
                    continue;
                }
                const float obj = sig[v[4]];
                float best = sig[v[5]] * obj;
                int32_t label = 0;
                for (int32_t k = 1; k < d->num_classes; k++)
                {
                    const float sc = sig[v[5 + k]] * obj;
                    if (sc > best)
                    {
                        best = sc;
                        label = k;
                    }
                }
                if (best > d->conf_thresh)
                {
                    const tinydet_candidate c = {best, index, label};
                    tdd_push(heap, &n, d->max_candidates, &c);
                }
            }
        }
    }
    /* heap sort: the worst goes to the end, leaving the best first */
    for (int32_t end = n - 1; end > 0; end--)
    {
        const tinydet_candidate worst = heap[0];
        heap[0] = heap[end];
        heap[end] = worst;
        tdd_sift_down(heap, end, 0);
    }
    return n;
}

int tinydet_detect(const tinydet_detector *d, const int8_t *base, tinydet_detection *dets, int max)
{
    const int32_t n = tdd_candidates(d, base);
    /* batched NMS offsets each class by label * (largest coordinate + 1) (tinydet.ops.boxes) */
    float top = 0.0f;
    for (int32_t i = 0; i < n; i++)
    {
        float b[4];
        tdd_box(d, base, d->candidates[i].index, b);
        for (int k = 0; k < 4; k++)
        {
            top = b[k] > top ? b[k] : top;
        }
    }
    const float unit = top + 1.0f;
    int kept = 0;
    for (int32_t i = 0; i < n && kept < max; i++)
    {
        const tinydet_candidate *c = &d->candidates[i];
        float b[4];
        tdd_box(d, base, c->index, b);
        const float off = (float)c->label * unit;
        const float ax1 = b[0] + off, ay1 = b[1] + off, ax2 = b[2] + off, ay2 = b[3] + off;
        int suppressed = 0;
        /* greedy NMS, lazily: a candidate survives when no kept detection overlaps it more than
         * nms_iou (the same pairs the eager form compares) */
        for (int k = 0; k < kept && !suppressed; k++)
        {
            const tinydet_detection *e = &dets[k];
            /* other classes never overlap after the offsets; boxes apart before the offset stay
             * apart after it (x -> x + off is monotonic in float): both have IoU 0 */
            if (e->label != c->label || (e->x2 < b[2] ? e->x2 : b[2]) <= (e->x1 > b[0] ? e->x1 : b[0]) ||
                (e->y2 < b[3] ? e->y2 : b[3]) <= (e->y1 > b[1] ? e->y1 : b[1]))
            {
                continue;
            }
            const float bx1 = e->x1 + off, by1 = e->y1 + off, bx2 = e->x2 + off, by2 = e->y2 + off;
            float w = (bx2 < ax2 ? bx2 : ax2) - (bx1 > ax1 ? bx1 : ax1);
            float h = (by2 < ay2 ? by2 : ay2) - (by1 > ay1 ? by1 : ay1);
            w = w > 0.0f ? w : 0.0f;
            h = h > 0.0f ? h : 0.0f;
            const float inter = w * h;
            const float uni = (bx2 - bx1) * (by2 - by1) + (ax2 - ax1) * (ay2 - ay1) - inter;
            /* box_iou: an empty intersection (or a non-positive union) is IoU 0 */
            suppressed = inter > 0.0f && uni > 0.0f && inter / uni > d->nms_iou;
        }
        if (!suppressed)
        {
            dets[kept].x1 = b[0];
            dets[kept].y1 = b[1];
            dets[kept].x2 = b[2];
            dets[kept].y2 = b[3];
            dets[kept].score = c->score;
            dets[kept].label = c->label;
            kept++;
        }
    }
    return kept;
}
