/*
 * instate_dump_int.h - internals of the dump file code shared with its
 * tests and fuzz target. Not installed; the public API is instate.h and the
 * format is docs/FORMAT.md section 3.
 */
#ifndef INSTATE_DUMP_INT_H
#define INSTATE_DUMP_INT_H

#include "instate.h"

#include <stddef.h>
#include <stdint.h>

/* Sizes fixed by the format. */
#define INSTATE_DUMP_HEADER_SIZE 40
#define INSTATE_DUMP_BLOCK_HEADER_SIZE 16
#define INSTATE_DUMP_TRAILER_SIZE 40
#define INSTATE_DUMP_BLOCK_MAX 1048576u     /* largest raw_len a reader accepts */
#define INSTATE_DUMP_BLOCK_TARGET 262144u   /* raw_len this writer uses */

/* With max_bytes M, a body (the bytes a file decompresses to) is bounded
 * by this many times M, on both sides (docs/FORMAT.md 3.5 and 3.6). */
#define INSTATE_DUMP_BODY_RATIO 16u

/*
 * CRC-32C (Castagnoli) of n bytes at p, continuing from crc: start with
 * crc = 0, feed the previous result to continue a running checksum.
 */
uint32_t instate_crc32c(uint32_t crc, const void *p, size_t n);

/* The same, always by the portable tables (for comparing with the SSE4.2
 * path that instate_crc32c() takes when instate_crc32c_hardware() is 1). */
uint32_t instate_crc32c_portable(uint32_t crc, const void *p, size_t n);
int instate_crc32c_hardware(void);

/*
 * The CRC-32C of A followed by B from crc1 = CRC of A, crc2 = CRC of B
 * (each started from 0) and n2 = the length of B, without reading B again.
 */
uint32_t instate_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t n2);

/* zstd level of dump compression option `level` (1..9); 0 for raw. */
int instate_dump_zstd_level(int level);

/*
 * Read and verify a dump held in memory (the fuzz target's entry point and
 * the reader that instate_dump_info_read() runs on a file). Same results as
 * instate_dump_info_read().
 */
int instate_dump_info_mem(const void *data, size_t n,
                          int (*fn)(void *ud, const char *name, size_t len,
                                    instate_ns_type type, uint64_t records),
                          void *ud, instate_dump_info *info, char *err);

#endif /* INSTATE_DUMP_INT_H */
