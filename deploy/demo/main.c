/*
 * tinydet demo / validation firmware for QEMU (mps2-an500) and the host build.
 *
 * For i = 0, 1, ... while img_<i>.bin exists in the working directory (semihosting on QEMU):
 * the image (int8 NHWC, quantized by the host) is streamed into the model tile by tile through a
 * tinydet_source that reads rows of the file at their offsets (tinydet_board_file_read_at: one
 * semihosting call a row on QEMU, as a camera hands rows over), so the full image never sits in
 * SRAM in patch mode. Writes out_<i>.bin (every output tensor, int8 NHWC, in order) and det_<i>.txt
 * (x1 y1 x2 y2 score label per line, network-input pixels) -- for a classifier cls_<i>.txt instead
 * (class int8_logit score per line, score = the dequantized logit) --, and prints the counters:
 *
 *   tinydet mode=<m> arena=<bytes> layers=<n> counter=<name> instructions_per_tick_x1000=<k>
 *   image <i> rc=<status> ticks=<total> input_ticks=<t> detections=<n> detect_ticks=<decode + NMS>
 *   class <i> top1=<class> logit=<int8> score=<float>   (classifiers; detect_ticks: the scores)
 *   layer <i> <name> <ticks>              (image 0 only)
 *   stack_used <bytes> of <bytes>         (M7 targets: stack painting)
 *
 * Exit status: 0 when every image ran, 3 when the model reported an error, 2 without images.
 */
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "tinydet_board.h"

uint32_t tinydet_model_counter(void)
{
    return tinydet_board_counter();
}

/* The open image file of a tinydet_source (its `user`). */
typedef struct
{
    int handle; /* tinydet_board_file_open */
} image_file;

static int read_rows(void *user, int32_t y, int32_t x, int32_t w, int8_t *dst)
{
    const image_file *f = (const image_file *)user;
    const int32_t at = (y * TINYDET_INPUT_W + x) * TINYDET_INPUT_C;
    return tinydet_board_file_read_at(f->handle, at, dst, (uint32_t)w * TINYDET_INPUT_C);
}

static tinydet_detection dets[TINYDET_MAX_DET > 0 ? TINYDET_MAX_DET : 1];
static float scores[TINYDET_NUM_CLASSES > 0 ? TINYDET_NUM_CLASSES : 1];

/* A classifier's scores into cls_<i>.txt and its top-1 on stdout; returns -1 when unwritable. */
static int write_scores(int i, int top1)
{
    char name[32];
    snprintf(name, sizeof(name), "cls_%d.txt", i);
    FILE *c = fopen(name, "w");
    const int8_t *logits = tinydet_output(TINYDET_MODEL, 0);
    for (int k = 0; c != NULL && k < TINYDET_NUM_CLASSES; k++)
    {
        /* %.9g: the float32 value round-trips exactly */
        fprintf(c, "%d %d %.9g\n", k, (int)logits[k], (double)scores[k]);
    }
    if (c == NULL || fclose(c) != 0)
    {
        printf("image %d: cannot write %s\n", i, name);
        return -1;
    }
    printf("class %d top1=%d logit=%d score=%.9g\n", i, top1, (int)logits[top1], (double)scores[top1]);
    return 0;
}

int main(void)
{
#ifdef TINYDET_HANG
    /* test hook: a firmware that never finishes (the host must time out and keep QEMU's log) */
    for (volatile int spin = 1; spin;)
    {
    }
#endif
#ifdef TINYDET_CRASH
    /* test hook: an undefined instruction (HardFault on the M7, SIGILL on the host) */
    volatile int crash = 1; /* volatile: the model code must still be linked */
    if (crash)
    {
        __builtin_trap();
    }
#endif
    printf("tinydet mode=%s arena=%d layers=%d counter=%s instructions_per_tick_x1000=%lu\n", TINYDET_MODEL_MODE,
           TINYDET_ARENA_BYTES, TINYDET_NUM_LAYERS, tinydet_board_counter_name(),
           (unsigned long)tinydet_board_instructions_per_tick_x1000());
    int images = 0;
    for (int i = 0;; i++)
    {
        char name[32];
        snprintf(name, sizeof(name), "img_%d.bin", i);
        image_file f = {tinydet_board_file_open(name)};
        if (f.handle < 0)
        {
            break;
        }
        tinydet_source src = {read_rows, &f, TINYDET_INPUT_H, TINYDET_INPUT_W, TINYDET_INPUT_C};
        memset(tinydet_layer_ticks, 0, sizeof(tinydet_layer_ticks));
        tinydet_input_ticks = 0;
        const uint32_t t0 = tinydet_board_counter();
        const int rc = tinydet_run(TINYDET_MODEL, &src);
        const uint32_t t1 = tinydet_board_counter();
        tinydet_board_file_close(f.handle);
        if (rc != 0)
        {
            printf("image %d rc=%d: the model stopped (%s)\n", i, rc,
                   rc == TINYDET_ERROR_SOURCE ? "image source unreadable" : "a kernel rejected its arguments at that step");
            return 3;
        }
        snprintf(name, sizeof(name), "out_%d.bin", i);
        FILE *o = fopen(name, "wb");
        for (int k = 0; o != NULL && k < TINYDET_NUM_OUTPUTS; k++)
        {
            const tinydet_output_info *info = &tinydet_outputs[k];
            fwrite(tinydet_output(TINYDET_MODEL, k), 1, (size_t)info->h * (size_t)info->w * (size_t)info->c, o);
        }
        if (o == NULL || fclose(o) != 0)
        {
            printf("image %d: cannot write %s\n", i, name);
            return 3;
        }
        const uint32_t d0 = tinydet_board_counter();
        const int n = tinydet_model_detect(TINYDET_MODEL, dets, TINYDET_MAX_DET);
        const int top1 = TINYDET_IS_CLASSIFIER ? tinydet_model_classify(TINYDET_MODEL, scores, TINYDET_NUM_CLASSES) : -1;
        const uint32_t d1 = tinydet_board_counter();
        if (TINYDET_IS_CLASSIFIER && (top1 < 0 || write_scores(i, top1) != 0))
        {
            return 3;
        }
        snprintf(name, sizeof(name), "det_%d.txt", i);
        FILE *d = fopen(name, "w");
        for (int k = 0; d != NULL && k < n; k++)
        {
            fprintf(d, "%.6f %.6f %.6f %.6f %.7f %ld\n", (double)dets[k].x1, (double)dets[k].y1, (double)dets[k].x2,
                    (double)dets[k].y2, (double)dets[k].score, (long)dets[k].label);
        }
        if (d == NULL || fclose(d) != 0)
        {
            printf("image %d: cannot write %s\n", i, name);
            return 3;
        }
        printf("image %d rc=0 ticks=%lu input_ticks=%lu detections=%d detect_ticks=%lu\n", i,
               (unsigned long)(t1 - t0), (unsigned long)tinydet_input_ticks, n, (unsigned long)(d1 - d0));
        if (i == 0)
        {
            for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
            {
                printf("layer %d %s %lu\n", k, tinydet_layer_names[k], (unsigned long)tinydet_layer_ticks[k]);
            }
        }
        images++;
    }
#ifndef TINYDET_HOST
    printf("stack_used %lu of %lu\n", (unsigned long)tinydet_stack_used_bytes(),
           (unsigned long)tinydet_stack_size_bytes());
#endif
    return images > 0 ? 0 : 2;
}
