/* Board smoke firmware: runs one small convolution on an embedded input, prints a checksum and
 * the stack high-water mark over the board console, exits 0. Built for every M7 target by
 * tests/test_c_kernels.py (run under QEMU for qemu-mps2-an500). */
#include <stdint.h>
#include <stdio.h>

#include "tinydet_board.h"
#include "tinydet_nn.h"

static const int8_t input[4 * 4 * 4] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16,
                                        17, -18, 19, -20, 21, -22, 23, -24, 25, -26, 27, -28, 29, -30, 31, -32,
                                        33, -34, 35, -36, 37, -38, 39, -40, 41, -42, 43, -44, 45, -46, 47, -48,
                                        49, -50, 51, -52, 53, -54, 55, -56, 57, -58, 59, -60, 61, -62, 63, -64};
static const int8_t filter[2 * 3 * 3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
                                             -1, -2, -3, -4, -5, -6, -7, -8, -9, -10, -11, -12, -13, -14, -15, -16, -17, -18,
                                             1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                             2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
static int32_t mult[2] = {1 << 30, 1 << 30};
static int32_t shift[2] = {-4, -5};
static int8_t output[4 * 4 * 2];
static int16_t scratch[2 * 36];

int main(void)
{
    cmsis_nn_context ctx = {scratch, sizeof(scratch)};
    cmsis_nn_conv_params cp = {3, -1, {1, 1}, {1, 1}, {1, 1}, {-128, 127}};
    cmsis_nn_per_channel_quant_params qp = {mult, shift};
    const cmsis_nn_dims id = {1, 4, 4, 4}, fd = {2, 3, 3, 4}, bd = {1, 1, 1, 2}, od = {1, 4, 4, 2};
    const uint32_t t0 = tinydet_board_counter();
    const arm_cmsis_nn_status st =
        arm_convolve_s8(&ctx, &cp, &qp, &id, input, &fd, filter, &bd, NULL, NULL, &od, output);
    const uint32_t t1 = tinydet_board_counter();
    int32_t sum = 0;
    for (int i = 0; i < (int)sizeof(output); i++)
    {
        sum = sum * 31 + output[i];
    }
    printf("board_smoke status=%d checksum=%ld ticks=%lu counter=%s stack_used=%lu/%lu\n", (int)st, (long)sum,
           (unsigned long)(t1 - t0), tinydet_board_counter_name(), (unsigned long)tinydet_stack_used_bytes(),
           (unsigned long)tinydet_stack_size_bytes());
    return st == ARM_CMSIS_NN_SUCCESS ? 0 : 1;
}
