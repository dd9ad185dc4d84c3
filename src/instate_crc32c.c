/*
 * instate_crc32c.c - CRC-32C (Castagnoli), the checksum of dump files.
 *
 * Slicing-by-8 over tables built once. CRC-32C rather than zlib's CRC-32
 * because it detects more errors at these block sizes and is what iSCSI,
 * ext4 and LevelDB use; no dependency is worth it for 60 lines.
 */
#include "instate_dump_int.h"

#include <pthread.h>

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reflected */

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = (c >> 1) ^ (POLY & (0u - (c & 1)));
		table[0][i] = c;
	}
	for (i = 0; i < 256; i++) {
		c = table[0][i];
		for (j = 1; j < 8; j++) {
			c = table[0][c & 0xff] ^ (c >> 8);
			table[j][i] = c;
		}
	}
}

uint32_t instate_crc32c(uint32_t crc, const void *data, size_t n)
{
	const unsigned char *p = data;

	pthread_once(&table_once, table_init);
	crc = ~crc;
	while (n && ((uintptr_t)p & 7)) {
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		n--;
	}
	/* Bytes are combined explicitly, so the result does not depend on the
	 * host's byte order. */
	while (n >= 8) {
		uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
		                     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
		              (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
		crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
		      table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
		      table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
		      table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
		p += 8;
		n -= 8;
	}
	while (n--)
		crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
