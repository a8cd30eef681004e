/*
 * Host driver for tests/test_detect.py: runs the runtime's tinydet_detect (src/detect.c) on cases
 * read from din.bin and writes the detections to dout.bin. Little-endian int32 / float32:
 *
 *   case := num_heads num_anchors num_classes max_candidates max_det input_h input_w (int32)
 *           conf nms_iou (float32)
 *           per head: offset h w objectness_min (int32) stride (float32) anchors[2A] sigmoid[256] (float32)
 *           map_bytes (int32) maps[map_bytes] (int8, padded to 4)
 *   out  := count (int32), then count x {x1 y1 x2 y2 score (float32), label (int32)}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinydet_detect.h"

#define MAX_HEADS 8

static int rd(FILE *f, void *dst, size_t n)
{
    return fread(dst, 1, n, f) == n ? 0 : -1;
}

int main(void)
{
    FILE *in = fopen("din.bin", "rb"), *out = fopen("dout.bin", "wb");
    if (in == NULL || out == NULL)
    {
        return 2;
    }
    int32_t hdr[7];
    while (rd(in, hdr, sizeof(hdr)) == 0)
    {
        float th[2];
        tinydet_head heads[MAX_HEADS];
        float *tables[MAX_HEADS];
        if (hdr[0] > MAX_HEADS || rd(in, th, sizeof(th)) != 0)
        {
            return 3;
        }
        for (int32_t s = 0; s < hdr[0]; s++)
        {
            int32_t g[4];
            float *t = malloc(sizeof(float) * (size_t)(1 + 2 * hdr[1] + 256));
            if (t == NULL || rd(in, g, sizeof(g)) != 0 || rd(in, t, sizeof(float) * (size_t)(1 + 2 * hdr[1] + 256)) != 0)
            {
                return 3;
            }
            heads[s].offset = g[0];
            heads[s].h = g[1];
            heads[s].w = g[2];
            heads[s].objectness_min = g[3];
            heads[s].stride = t[0];
            heads[s].anchors = t + 1;
            heads[s].sigmoid = t + 1 + 2 * hdr[1];
            tables[s] = t;
        }
        int32_t n;
        if (rd(in, &n, sizeof(n)) != 0)
        {
            return 3;
        }
        int8_t *maps = malloc((size_t)n + 4);
        tinydet_candidate *cands = malloc(sizeof(tinydet_candidate) * (size_t)hdr[3]);
        tinydet_detection *dets = malloc(sizeof(tinydet_detection) * (size_t)(hdr[4] > 0 ? hdr[4] : 1));
        if (maps == NULL || cands == NULL || dets == NULL || rd(in, maps, (size_t)((n + 3) & ~3)) != 0)
        {
            return 3;
        }
        const tinydet_detector d = {heads, hdr[0], hdr[1], hdr[2], th[0], th[1], (float)hdr[5], (float)hdr[6],
                                    cands, hdr[3]};
        const int32_t count = tinydet_detect(&d, maps, dets, hdr[4]);
        fwrite(&count, sizeof(count), 1, out);
        for (int32_t k = 0; k < count; k++)
        {
            fwrite(&dets[k].x1, sizeof(float), 5, out);
            fwrite(&dets[k].label, sizeof(int32_t), 1, out);
        }
        for (int32_t s = 0; s < hdr[0]; s++)
        {
            free(tables[s]);
        }
        free(maps);
        free(cands);
        free(dets);
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 4;
}
