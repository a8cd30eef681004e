/*
 * Serve firmware: the generated model behind the board protocol (docs/board_protocol.md) on the
 * board's serial link (QEMU mps2-an500: CMSDK UART0; STM32: the ST-LINK virtual COM port USART).
 * `tinydet board run` is the host side.
 *
 *   HELLO        -> INFO   (input size, layer names, counter, arena)
 *   IMAGE (HWC)  -> RESULT (detections, per-layer ticks, stack and SRAM high-water marks)
 *   anything bad -> ERROR  (code, offending type, message), then the next frame is served
 *
 * The image is received into one static buffer (H * W * C bytes, beside the planned arena) and
 * read by the executor through the same tinydet_source as the embedded-image demo. Nothing is
 * printed on the console: on the STM32 boards the console and the link are the same USART.
 */
#include <string.h>

#include "model.h"
#include "tinydet_board.h"
#include "tinydet_serial.h"

#define IMAGE_BYTES ((uint32_t)TINYDET_INPUT_H * TINYDET_INPUT_W * TINYDET_INPUT_C)

uint32_t tinydet_model_counter(void)
{
    return tinydet_board_counter();
}

static int8_t image[IMAGE_BYTES];
static tinydet_detection dets[TINYDET_MAX_DET > 0 ? TINYDET_MAX_DET : 1];

static int link_read(void *user)
{
    (void)user;
    return tinydet_board_serial_read();
}

static void link_write(void *user, const uint8_t *data, uint32_t size)
{
    (void)user;
    tinydet_board_serial_write(data, size);
}

static void put_u16(tinydet_serial_writer *w, uint32_t v)
{
    const uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    tinydet_serial_put(w, b, 2);
}

static void put_string(tinydet_serial_writer *w, const char *s)
{
    tinydet_serial_put(w, s, (uint32_t)strlen(s) + 1u); /* with its NUL: the host splits on it */
}

static void send_info(const tinydet_serial_io *io)
{
    const char *counter = tinydet_board_counter_name();
    uint32_t size = 2u * 4u + 4u * 4u + (uint32_t)strlen(counter) + 1u + (uint32_t)strlen(TINYDET_MODEL_MODE) + 1u;
    for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
    {
        size += (uint32_t)strlen(tinydet_layer_names[k]) + 1u;
    }
    tinydet_serial_writer w;
    tinydet_serial_begin(&w, io, TINYDET_MSG_INFO, size);
    put_u16(&w, TINYDET_INPUT_H);
    put_u16(&w, TINYDET_INPUT_W);
    put_u16(&w, TINYDET_INPUT_C);
    put_u16(&w, TINYDET_NUM_LAYERS);
    tinydet_serial_put_u32(&w, TINYDET_ARENA_BYTES);
    tinydet_serial_put_u32(&w, TINYDET_SCRATCH_BYTES);
    tinydet_serial_put_u32(&w, tinydet_board_instructions_per_tick_x1000());
    tinydet_serial_put_u32(&w, IMAGE_BYTES);
    put_string(&w, counter);
    put_string(&w, TINYDET_MODEL_MODE);
    for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
    {
        put_string(&w, tinydet_layer_names[k]);
    }
    tinydet_serial_end(&w);
}

static void serve_image(const tinydet_serial_io *io)
{
    tinydet_memory_image img = {image, TINYDET_INPUT_H, TINYDET_INPUT_W, TINYDET_INPUT_C};
    tinydet_source src = {tinydet_read_memory, &img, TINYDET_INPUT_H, TINYDET_INPUT_W, TINYDET_INPUT_C};
    memset(tinydet_layer_ticks, 0, sizeof(tinydet_layer_ticks));
    tinydet_input_ticks = 0;
    const uint32_t t0 = tinydet_board_counter();
    const int rc = tinydet_run(TINYDET_MODEL, &src);
    const uint32_t t1 = tinydet_board_counter();
    if (rc != 0)
    {
        tinydet_serial_error(io, TINYDET_SERIAL_MODEL_ERROR, TINYDET_MSG_IMAGE,
                             rc == TINYDET_ERROR_SOURCE ? "model: image source unreadable"
                                                        : "model: a kernel rejected its arguments");
        return;
    }
    const int n = tinydet_model_detect(TINYDET_MODEL, dets, TINYDET_MAX_DET);
    const uint32_t t2 = tinydet_board_counter();
    const uint32_t size = 7u * 4u + 2u * 2u + 4u * TINYDET_NUM_LAYERS + 24u * (uint32_t)n;
    tinydet_serial_writer w;
    tinydet_serial_begin(&w, io, TINYDET_MSG_RESULT, size);
    tinydet_serial_put_u32(&w, t1 - t0);
    tinydet_serial_put_u32(&w, tinydet_input_ticks);
    tinydet_serial_put_u32(&w, t2 - t1);
    tinydet_serial_put_u32(&w, tinydet_stack_used_bytes());
    tinydet_serial_put_u32(&w, tinydet_stack_size_bytes());
    tinydet_serial_put_u32(&w, TINYDET_ARENA_BYTES);
    tinydet_serial_put_u32(&w, IMAGE_BYTES); /* the receive buffer, SRAM beside the arena */
    put_u16(&w, TINYDET_NUM_LAYERS);
    put_u16(&w, (uint32_t)n);
    for (int k = 0; k < TINYDET_NUM_LAYERS; k++)
    {
        tinydet_serial_put_u32(&w, tinydet_layer_ticks[k]);
    }
    for (int k = 0; k < n; k++)
    {
        /* IEEE-754 binary32, little endian: the Cortex-M7's own layout */
        const float box[5] = {dets[k].x1, dets[k].y1, dets[k].x2, dets[k].y2, dets[k].score};
        tinydet_serial_put(&w, box, sizeof(box));
        tinydet_serial_put_u32(&w, (uint32_t)dets[k].label);
    }
    tinydet_serial_end(&w);
}

int main(void)
{
    const tinydet_serial_io io = {link_read, link_write, 0};
    for (;;)
    {
        uint8_t type = 0;
        uint32_t size = 0;
        const int rc = tinydet_serial_read_frame(&io, (uint8_t *)image, IMAGE_BYTES, &type, &size);
        if (rc == TINYDET_SERIAL_BAD_CRC)
        {
            tinydet_serial_error(&io, TINYDET_SERIAL_BAD_CRC, type, "frame dropped: CRC mismatch");
        }
        else if (rc == TINYDET_SERIAL_TOO_LONG)
        {
            tinydet_serial_error(&io, TINYDET_SERIAL_TOO_LONG, type, "frame skipped: longer than the image buffer");
        }
        else if (type == TINYDET_MSG_HELLO)
        {
            send_info(&io);
        }
        else if (type == TINYDET_MSG_IMAGE && size == IMAGE_BYTES)
        {
            serve_image(&io);
        }
        else if (type == TINYDET_MSG_IMAGE)
        {
            tinydet_serial_error(&io, TINYDET_SERIAL_BAD_LENGTH, type, "image: payload is not H * W * C bytes");
        }
        else
        {
            tinydet_serial_error(&io, TINYDET_SERIAL_UNKNOWN_TYPE, type, "unknown frame type");
        }
    }
}
