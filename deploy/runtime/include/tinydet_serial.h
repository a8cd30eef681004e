/*
 * tinydet_serial.h - the board protocol's framing (docs/board_protocol.md; the host side is
 * tinydet/board/protocol.py): magic "TD", type (u8), payload length (u32 LE), payload, CRC-32
 * (u32 LE; CRC-32/ISO-HDLC, the zlib / Ethernet CRC) over type, length and payload.
 *
 * Byte I/O is the caller's (a tinydet_serial_io over the board's UART), so the same code serves
 * QEMU's CMSDK UART and the STM32 USARTs. No allocation: frames are read into the caller's buffer
 * and written piece by piece (begin / put / end), so a result frame needs no staging buffer.
 */
#ifndef TINYDET_SERIAL_H
#define TINYDET_SERIAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TINYDET_SERIAL_MAGIC0 0x54u /* 'T' */
#define TINYDET_SERIAL_MAGIC1 0x44u /* 'D' */

/* Frame types: requests (host -> device) below 0x80, answers (device -> host) from 0x80. */
enum
{
    TINYDET_MSG_HELLO = 0x01,  /* empty; answered by INFO */
    TINYDET_MSG_IMAGE = 0x02,  /* int8 NHWC image, exactly H * W * C bytes; answered by RESULT */
    TINYDET_MSG_INFO = 0x81,   /* model and board description */
    TINYDET_MSG_RESULT = 0x82, /* detections, counters, memory high-water marks */
    TINYDET_MSG_ERROR = 0xEE   /* u16 code, u8 offending type, ASCII message */
};

/* Error codes carried by TINYDET_MSG_ERROR (and returned by tinydet_serial_read_frame). */
enum
{
    TINYDET_SERIAL_OK = 0,
    TINYDET_SERIAL_BAD_CRC = 1,      /* CRC mismatch: the frame was dropped */
    TINYDET_SERIAL_UNKNOWN_TYPE = 2, /* a type the device does not serve */
    TINYDET_SERIAL_BAD_LENGTH = 3,   /* payload size wrong for its type */
    TINYDET_SERIAL_TOO_LONG = 4,     /* longer than the device's receive buffer: skipped */
    TINYDET_SERIAL_MODEL_ERROR = 5   /* tinydet_run failed */
};

typedef struct
{
    int (*read_byte)(void *user);                                  /* blocking; 0..255 */
    void (*write)(void *user, const uint8_t *data, uint32_t size); /* blocking */
    void *user;
} tinydet_serial_io;

/* CRC-32/ISO-HDLC update: crc = tinydet_crc32(0, p, n) gives zlib.crc32(p); chain calls to extend. */
uint32_t tinydet_crc32(uint32_t crc, const uint8_t *data, uint32_t size);

/* Reads the next frame into buf[0..capacity): scans for the magic (bytes before it are dropped),
 * then header, payload and CRC. Returns TINYDET_SERIAL_OK with *type / *size set, or
 * TINYDET_SERIAL_BAD_CRC / TINYDET_SERIAL_TOO_LONG (the frame is consumed or skipped; *type is the
 * received type) so the caller can answer with an error frame and keep serving. */
int tinydet_serial_read_frame(const tinydet_serial_io *io, uint8_t *buf, uint32_t capacity, uint8_t *type,
                              uint32_t *size);

/* Writes one frame in pieces: begin (magic, type, length), put (exactly `size` bytes in total), end (CRC). */
typedef struct
{
    const tinydet_serial_io *io;
    uint32_t crc;
} tinydet_serial_writer;

void tinydet_serial_begin(tinydet_serial_writer *w, const tinydet_serial_io *io, uint8_t type, uint32_t size);
void tinydet_serial_put(tinydet_serial_writer *w, const void *data, uint32_t size);
void tinydet_serial_put_u32(tinydet_serial_writer *w, uint32_t v); /* little endian */
void tinydet_serial_end(tinydet_serial_writer *w);

/* A complete error frame: code (u16), the offending frame's type (u8), message (no NUL sent). */
void tinydet_serial_error(const tinydet_serial_io *io, uint16_t code, uint8_t type, const char *message);

#ifdef __cplusplus
}
#endif
#endif /* TINYDET_SERIAL_H */
