/*
 * Stand-alone demo firmware for a board (STM32F746G-DISCO; builds for every M7 target): runs the
 * generated model on ONE test image embedded in Flash (demo_image.h, written by
 * tinydet.deploy.build.build_board_demo) and prints the detections on the board console (UART to
 * the ST-LINK virtual COM port, 115200 8N1; semihosting on QEMU):
 *
 *   tinydet demo: <W>x<H> arena=<bytes> counter=<name> instructions_per_tick_x1000=<k>
 *   det <k> label=<class> score=<permille> box=<x1>,<y1>,<x2>,<y2>   (network-input pixels)
 *   layer <i> <name> <ticks>                                           (one line per layer)
 *   tinydet demo: <n> detections, <ticks> ticks, input <ticks>, detect <ticks>, stack <bytes> B
 *
 * Ticks are the board counter's: on the STM32 targets the DWT cycle counter (CYCCNT, core cycles;
 * instructions_per_tick_x1000=0), on QEMU instructions. The per-layer lines are what
 * tinydet.deploy.cycles.parse_board_log reads to calibrate the cycle model against a board (see
 * that module's docstring): layer ticks include the layer's kernel calls and the tile loop's work
 * for it; "input" is the time spent reading the image source; "detect" is decode + NMS.
 *
 * The image is read through the same tinydet_source interface as a camera would be (rows on
 * demand), so patch mode never copies the whole image into SRAM. Integer printing only: newlib-nano
 * has no float printf.
 */
#include <stdio.h>

#include "demo_image.h"
#include "model.h"
#include "tinydet_board.h"

uint32_t tinydet_model_counter(void)
{
    return tinydet_board_counter();
}

static tinydet_detection dets[TINYDET_MAX_DET > 0 ? TINYDET_MAX_DET : 1];

int main(void)
{
    char line[128];
    tinydet_memory_image img = {tinydet_demo_image, TINYDET_INPUT_H, TINYDET_INPUT_W, TINYDET_INPUT_C};
    tinydet_source src = {tinydet_read_memory, &img, TINYDET_INPUT_H, TINYDET_INPUT_W, TINYDET_INPUT_C};
    snprintf(line, sizeof(line), "tinydet demo: %dx%d arena=%d counter=%s instructions_per_tick_x1000=%lu\n",
             TINYDET_INPUT_W, TINYDET_INPUT_H, TINYDET_ARENA_BYTES, tinydet_board_counter_name(),
             (unsigned long)tinydet_board_instructions_per_tick_x1000());
    tinydet_board_puts(line);
    for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
    {
        tinydet_layer_ticks[k] = 0;
    }
    tinydet_input_ticks = 0;
    const uint32_t t0 = tinydet_board_counter();
    const int rc = tinydet_run(TINYDET_MODEL, &src);
    const uint32_t t1 = tinydet_board_counter();
    if (rc != 0)
    {
        snprintf(line, sizeof(line), "tinydet demo: model error %d\n", rc);
        tinydet_board_puts(line);
        return 3;
    }
    const uint32_t d0 = tinydet_board_counter();
    const int n = tinydet_model_detect(TINYDET_MODEL, dets, TINYDET_MAX_DET);
    const uint32_t d1 = tinydet_board_counter();
    for (int k = 0; k < n; k++)
    {
        snprintf(line, sizeof(line), "det %d label=%ld score=%ld box=%ld,%ld,%ld,%ld\n", k, (long)dets[k].label,
                 (long)(dets[k].score * 1000.0f + 0.5f), (long)(dets[k].x1 + 0.5f), (long)(dets[k].y1 + 0.5f),
                 (long)(dets[k].x2 + 0.5f), (long)(dets[k].y2 + 0.5f));
        tinydet_board_puts(line);
    }
    for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
    {
        snprintf(line, sizeof(line), "layer %d %s %lu\n", k, tinydet_layer_names[k],
                 (unsigned long)tinydet_layer_ticks[k]);
        tinydet_board_puts(line);
    }
    snprintf(line, sizeof(line), "tinydet demo: %d detections, %lu ticks, input %lu, detect %lu, stack %lu B\n", n,
             (unsigned long)(t1 - t0), (unsigned long)tinydet_input_ticks, (unsigned long)(d1 - d0),
             (unsigned long)tinydet_stack_used_bytes());
    tinydet_board_puts(line);
    return 0;
}
