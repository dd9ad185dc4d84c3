/*
 * lfingerprint.h - the fingerprint's formula (docs/DESIGN.md, defstate:
 * fingerprints): the tags and mixing functions the walk of a value
 * (lfingerprint.c) and the decoder's pass over its bytes (lcodec.c) both
 * hash with, so that the two give the same number for the same value.
 * Static inline: each user compiles them into its own loop.
 */
#ifndef LFINGERPRINT_H
#define LFINGERPRINT_H

#include "linstate.h"

#include <math.h>
#include <string.h>

/* Tags: each kind of value hashes in its own domain. */
#define TAG_NIL   UINT64_C(0x6e696c0000000001)
#define TAG_FALSE UINT64_C(0x626f6f6c00000002)
#define TAG_TRUE  UINT64_C(0x626f6f6c00000003)
#define TAG_INT   UINT64_C(0x696e740000000004)
#define TAG_FLT   UINT64_C(0x666c740000000005)
#define TAG_STR   UINT64_C(0x7374720000000006)
#define TAG_TAB   UINT64_C(0x7461620000000007)
#define TAG_REF   UINT64_C(0x7265660000000008)
#define TAG_GRAPH UINT64_C(0x6772610000000009)

/* MurmurHash3's finalizer: a bijection of 64-bit words, every input bit
 * reaching every output bit. */
static inline uint64_t fmix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/* Hash of the ordered pair (a, b): a bijection of b for a fixed a and of
 * a for a fixed b (the multiplier is odd). */
static inline uint64_t mix2(uint64_t a, uint64_t b)
{
	return fmix(a * UINT64_C(0x9e3779b97f4a7c15) ^ b);
}

/* Strings. Up to 16 bytes (map keys, names: nearly every string of game
 * state) in two words read with loads that stay inside the string
 * (overlapping when n is not a multiple of the width), as the decoder's
 * string cache reads them: for a given length the words hold every byte,
 * so the pair (n, words) is the string. Then (first ^ seed(n)) * odd ^
 * second and MurmurHash3's finalizer: a bijection of the first word for a
 * fixed second one and of the second for a fixed first, so two strings of
 * at most 8 bytes and the same length never collide, and others collide
 * with a chance of 2^-64. Longer strings: one round per 8-byte word, the
 * last word read overlapping, the length first. */
static inline uint64_t rotl(uint64_t x, int r)
{
	return x << r | x >> (64 - r);
}


#define PRIME1 UINT64_C(0x9e3779b185ebca87)
#define PRIME2 UINT64_C(0xc2b2ae3d27d4eb4f)

static inline uint64_t str_round(uint64_t h, uint64_t w)
{
	return rotl(h ^ w * PRIME2, 31) * PRIME1;
}

/* The hash of a string of n <= 16 bytes whose linstate_str_words() are
 * a, b (the decoder has them already). */
static inline uint64_t hash_words(size_t n, uint64_t a, uint64_t b)
{
	uint64_t h = TAG_STR ^ (uint64_t)n * UINT64_C(0x9e3779b97f4a7c15);

	return fmix((a ^ h) * PRIME1 ^ b);
}

static inline uint64_t hash_bytes(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	uint64_t h = TAG_STR ^ (uint64_t)n * UINT64_C(0x9e3779b97f4a7c15), a, b;

	if (n <= 16) {
		linstate_str_words(s, n, &a, &b);
		return hash_words(n, a, b);
	}
	for (; n > 8; s += 8, n -= 8)
		h = str_round(h, linstate_load64(s));
	return fmix(str_round(h, linstate_load64(s + n - 8)));
}

/* An integer as the codec writes it: its value under its tag. */
static inline uint64_t fp_int(lua_Integer i)
{
	return mix2(TAG_INT, (uint64_t)i);
}

/* A float as the codec writes it: the bits of its double. */
static inline uint64_t fp_flt(double d)
{
	uint64_t bits;

	memcpy(&bits, &d, sizeof bits);
	return mix2(TAG_FLT, bits);
}

/* The number at idx, as enc_value() in lcodec.c decides integer or float:
 * an integer it writes as an integer hashes its value, anything else the
 * bits of its double. */
static inline uint64_t fp_number(lua_State *L, int idx)
{
	lua_Integer i;

	if (lua_isinteger(L, idx) && lcompat_int_exact(i = lua_tointeger(L, idx)))
		return fp_int(i);
	return fp_flt((double)lua_tonumber(L, idx));
}

/* fp_number() of the number lua_pushnumber(L, d) would push, d not a NaN
 * (LuaJIT's push replaces a NaN by its canonical one: those are pushed).
 * On 5.3 and 5.4 that is a float; elsewhere lcompat's lua_isinteger()
 * and lua_tointeger() decide, as they do in fp_number(). */
static inline uint64_t fp_double(double d)
{
#if LUA_VERSION_NUM >= 503
	return fp_flt(d);
#else
	lua_Integer i;

	if (lcompat_num2int((lua_Number)d, &i) && !(i == 0 && signbit(d)) && lcompat_int_exact(i))
		return fp_int(i);
	return fp_flt(d);
#endif
}

/* A table's hash from its entry count and the sum of its entries'
 * mix2(key, value), with mt its metatable's identity (0: none). */
static inline uint64_t fp_tab(uint64_t count, uint64_t sum, uint64_t mt)
{
	return mix2(mix2(mix2(TAG_TAB, count), sum), mt);
}

/* Push the fingerprint h, a number either way (nothing allocated): the
 * integer of its 64 bits where integers have 64 bits, else its top 53
 * bits as a double (an integer below 2^53, exact, never a NaN), so the
 * chance of a collision there is 2^-53 per comparison. old is unused: a
 * number costs nothing to push again. */
static inline void push_print(lua_State *L, uint64_t h, int old)
{
	(void)old;
#if LUA_VERSION_NUM >= 503
	lua_pushinteger(L, (lua_Integer)h);
#else
	lua_pushnumber(L, (lua_Number)(h >> 11));
#endif
}

#endif
