/*
 * instate_crc32c.c - CRC-32C (Castagnoli), the checksum of dump files and
 * of store records.
 *
 * CRC-32C rather than zlib's CRC-32 because it detects more errors at these
 * block sizes, is what iSCSI, ext4 and LevelDB use, and x86 computes it in
 * hardware: the SSE4.2 crc32 instruction is chosen at run time when the CPU
 * has it (a checksum of every dumped byte must cost next to nothing next to
 * zstd), with slicing-by-8 over tables built once everywhere else. Both give
 * the same results; the tests compare them.
 */
#include "instate_dump_int.h"
#include "instate_store_int.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define HAVE_HW 1
#include <nmmintrin.h>
#endif

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reflected */

static uint32_t table[8][256];
static uint32_t x2n[32];       /* x^(2^n) mod POLY, for the combine */
static int use_hw;
static instate_os_once table_once = INSTATE_OS_ONCE_INIT;

/* a * b modulo POLY, both reflected (bit 31 is x^0). */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
	uint32_t m = 1u << 31, p = 0;

	for (;;) {
		if (a & m) {
			p ^= b;
			if ((a & (m - 1)) == 0)
				break;
		}
		m >>= 1;
		b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
	}
	return p;
}

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
	x2n[0] = 1u << 30; /* x^1 */
	for (i = 1; i < 32; i++)
		x2n[i] = multmodp(x2n[i - 1], x2n[i - 1]);
#ifdef HAVE_HW
	__builtin_cpu_init();
	use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t n)
{
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
	return crc;
}

#ifdef HAVE_HW
/* The instruction works on little-endian words, which x86 loads natively,
 * aligned or not: no byte-at-a-time lead-in (record keys and values are
 * short and rarely aligned, and each crc32 waits for the previous one). */
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t n)
{
#if defined(__x86_64__)
	{
		uint64_t c = crc;
		while (n >= 8) {
			uint64_t v;
			memcpy(&v, p, 8);
			c = _mm_crc32_u64(c, v);
			p += 8;
			n -= 8;
		}
		crc = (uint32_t)c;
	}
#endif
	while (n >= 4) {
		uint32_t v;
		memcpy(&v, p, 4);
		crc = _mm_crc32_u32(crc, v);
		p += 4;
		n -= 4;
	}
	while (n--)
		crc = _mm_crc32_u8(crc, *p++);
	return crc;
}
#endif

static int table_ready; /* set (release) once table_init has run */

static void table_init_once(void)
{
	table_init();
	__atomic_store_n(&table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t instate_crc32c(uint32_t crc, const void *data, size_t n)
{
	/* Called per record read: skip the once call once set up. */
	if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
		instate__os_once(&table_once, table_init_once);
#ifdef HAVE_HW
	if (use_hw)
		return ~crc_hw(~crc, data, n);
#endif
	return ~crc_sw(~crc, data, n);
}

#ifdef HAVE_HW
__attribute__((target("sse4.2")))
static uint32_t rec_hw(const unsigned char *key, size_t klen, const unsigned char *p, size_t n)
{
	uint32_t c = crc_hw(0xFFFFFFFFu, key, klen);

	c = _mm_crc32_u8(c, p[0]);
	return ~crc_hw(c, p + 5, n - 5);
}
#endif

/* The checksum of a store record (instate_meta.c says which bytes), in one
 * call: it runs on every record read and written. */
uint32_t instate__crc32c_record(const void *key, size_t klen, const unsigned char *p, size_t n)
{
	uint32_t c;

	if (!__atomic_load_n(&table_ready, __ATOMIC_ACQUIRE))
		instate__os_once(&table_once, table_init_once);
#ifdef HAVE_HW
	if (use_hw)
		return rec_hw(key, klen, p, n);
#endif
	c = crc_sw(0xFFFFFFFFu, key, klen);
	c = crc_sw(c, p, 1);
	return ~crc_sw(c, p + 5, n - 5);
}

uint32_t instate_crc32c_portable(uint32_t crc, const void *data, size_t n)
{
	instate__os_once(&table_once, table_init_once);
	return ~crc_sw(~crc, data, n);
}

int instate_crc32c_hardware(void)
{
	instate__os_once(&table_once, table_init_once);
	return use_hw;
}

/*
 * Appending n2 bytes multiplies the register by x^(8 n2) before adding
 * their own CRC; the pre- and post-inversion cancel out as in zlib's
 * crc32_combine(), which this follows.
 */
uint32_t instate_crc32c_combine(uint32_t crc1, uint32_t crc2, size_t n2)
{
	uint32_t p = 1u << 31; /* x^0 */
	unsigned k = 3;        /* x^(2^3) = x^8: one byte */

	instate__os_once(&table_once, table_init_once);
	while (n2) {
		if (n2 & 1)
			p = multmodp(x2n[k & 31], p);
		n2 >>= 1;
		k++;
	}
	return multmodp(p, crc1) ^ crc2;
}
