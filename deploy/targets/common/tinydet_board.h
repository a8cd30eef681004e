/*
 * tinydet_board.h - what every target's board glue provides (deploy/targets/<name>/board.c).
 * Targets share the runtime and differ only in startup, linker script and this glue.
 */
#ifndef TINYDET_BOARD_H
#define TINYDET_BOARD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called by the reset handler before main(): console / counter setup. */
void tinydet_board_init(void);

/* Command line for main(argc, argv): QEMU passes the semihosting command line
 * (`-semihosting-config ...,arg=prog,arg=a1`, see toolchain.run_qemu(args=...)); boards have none
 * (argc 0, argv = {NULL}). */
int tinydet_board_args(char ***argv);

/* Console output (semihosting on QEMU, UART on boards); no buffering, usable from fault handlers. */
void tinydet_board_puts(const char *s);

/* Serial link of the board protocol (docs/board_protocol.md, deploy/demo/serve_main.c), blocking:
 * QEMU: CMSDK UART0 (QEMU's first -serial); STM32: the console USART (ST-LINK virtual COM port). */
int tinydet_board_serial_read(void); /* the next received byte, 0..255 */
void tinydet_board_serial_write(const uint8_t *data, uint32_t size);

/* Read-only files of the demo firmware's image source, one call per operation and no buffering,
 * so that reading a row costs about what a camera's row hand-over would (QEMU: semihosting
 * SYS_OPEN / SYS_READ at an offset / SYS_CLOSE; host: stdio; boards: no files, open gives -1).
 * open: a handle >= 0, or -1; read_at: n bytes at byte offset `at` into dst, 0 on success. */
int tinydet_board_file_open(const char *name);
int tinydet_board_file_read_at(int handle, int32_t at, void *dst, uint32_t n);
void tinydet_board_file_close(int handle);

/* Monotonic 32-bit counter for per-layer measurements and its meaning:
 * tinydet_board_counter_name() says the source, tinydet_board_instructions_per_tick() (x1000, as
 * an integer to keep floats out) how to convert ticks into instructions where that is exact
 * (QEMU with -icount shift=0), or 0 where it counts cycles of real hardware. */
uint32_t tinydet_board_counter(void);
const char *tinydet_board_counter_name(void);
uint32_t tinydet_board_instructions_per_tick_x1000(void);

/* End the program with an exit status (QEMU: status reaches the host; boards: printed, then halt). */
void tinydet_board_exit(int code) __attribute__((noreturn));

/* Stack painting (common/startup_cm7.c): bytes of stack used so far (high-water mark) and size. */
uint32_t tinydet_stack_used_bytes(void);
uint32_t tinydet_stack_size_bytes(void);

#ifdef __cplusplus
}
#endif
#endif
