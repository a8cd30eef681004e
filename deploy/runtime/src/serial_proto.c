/* Board protocol framing; see tinydet_serial.h and docs/board_protocol.md. */
#include "tinydet_serial.h"

#include <string.h>

uint32_t tinydet_crc32(uint32_t crc, const uint8_t *data, uint32_t size)
{
    /* bitwise, reflected polynomial 0xEDB88320: no 1 kB table in Flash for a few kB per frame */
    crc = ~crc;
    for (uint32_t i = 0; i < size; i++)
    {
        crc ^= data[i];
        for (int b = 0; b < 8; b++)
        {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void set_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int tinydet_serial_read_frame(const tinydet_serial_io *io, uint8_t *buf, uint32_t capacity, uint8_t *type,
                              uint32_t *size)
{
    /* magic: a lone 'T' followed by anything but 'D' restarts the scan at that byte */
    int prev = -1;
    for (;;)
    {
        const int c = io->read_byte(io->user);
        if (prev == (int)TINYDET_SERIAL_MAGIC0 && c == (int)TINYDET_SERIAL_MAGIC1)
        {
            break;
        }
        prev = c;
    }
    uint8_t head[5];
    for (int i = 0; i < 5; i++)
    {
        head[i] = (uint8_t)io->read_byte(io->user);
    }
    *type = head[0];
    *size = get_u32(head + 1);
    if (*size > capacity)
    {
        /* not read: the next scan for the magic skips it (its bytes cannot pass a CRC check) */
        return TINYDET_SERIAL_TOO_LONG;
    }
    for (uint32_t i = 0; i < *size; i++)
    {
        buf[i] = (uint8_t)io->read_byte(io->user);
    }
    uint8_t tail[4];
    for (int i = 0; i < 4; i++)
    {
        tail[i] = (uint8_t)io->read_byte(io->user);
    }
    const uint32_t crc = tinydet_crc32(tinydet_crc32(0, head, 5), buf, *size);
    return crc == get_u32(tail) ? TINYDET_SERIAL_OK : TINYDET_SERIAL_BAD_CRC;
}

void tinydet_serial_begin(tinydet_serial_writer *w, const tinydet_serial_io *io, uint8_t type, uint32_t size)
{
    const uint8_t magic[2] = {TINYDET_SERIAL_MAGIC0, TINYDET_SERIAL_MAGIC1};
    uint8_t head[5];
    head[0] = type;
    set_u32(head + 1, size);
    io->write(io->user, magic, 2);
    io->write(io->user, head, 5);
    w->io = io;
    w->crc = tinydet_crc32(0, head, 5);
}

void tinydet_serial_put(tinydet_serial_writer *w, const void *data, uint32_t size)
{
    w->io->write(w->io->user, (const uint8_t *)data, size);
    w->crc = tinydet_crc32(w->crc, (const uint8_t *)data, size);
}

void tinydet_serial_put_u32(tinydet_serial_writer *w, uint32_t v)
{
    uint8_t b[4];
    set_u32(b, v);
    tinydet_serial_put(w, b, 4);
}

void tinydet_serial_end(tinydet_serial_writer *w)
{
    uint8_t b[4];
    set_u32(b, w->crc);
    w->io->write(w->io->user, b, 4);
}

void tinydet_serial_error(const tinydet_serial_io *io, uint16_t code, uint8_t type, const char *message)
{
    const uint32_t n = (uint32_t)strlen(message);
    const uint8_t head[3] = {(uint8_t)code, (uint8_t)(code >> 8), type};
    tinydet_serial_writer w;
    tinydet_serial_begin(&w, io, TINYDET_MSG_ERROR, 3u + n);
    tinydet_serial_put(&w, head, 3);
    tinydet_serial_put(&w, message, n);
    tinydet_serial_end(&w);
}
