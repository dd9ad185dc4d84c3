/*
 * instate_mpack.h - the byte level of the value encoding: a MessagePack
 * writer, a bounds-checked reader and a validator.
 *
 * Part of the core: no lua.h. The Lua binding (lcodec.c) converts Lua values
 * with these primitives; the store and the dump loader use the validator to
 * check values they did not write. docs/FORMAT.md section 1 describes the
 * bytes. Not installed: the public C API is instate.h.
 *
 * Writers take a pointer with enough room (INSTATE_MP_MAX_HEADER bytes for a
 * header or a scalar) and return the pointer past what they wrote. They
 * always choose the shortest MessagePack form.
 */
#ifndef INSTATE_MPACK_H
#define INSTATE_MPACK_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "instate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* INSTATE_MP_MAX_DEPTH, INSTATE_MP_EXT_GRAPH, INSTATE_MP_EXT_REF,
 * INSTATE_MP_EXT_CLASS, INSTATE_MP_CLASS_NAME_MAX, the item types and
 * instate_mp_item are public: instate.h. */

/** Largest header or scalar the writers emit (float64, uint64, ext32). */
#define INSTATE_MP_MAX_HEADER 9

/* ===================================================================== */
/* Writer                                                                */

static inline unsigned char *instate_mp_be16(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
	return p + 2;
}

static inline unsigned char *instate_mp_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
	return p + 4;
}

static inline unsigned char *instate_mp_be64(unsigned char *p, uint64_t v)
{
	instate_mp_be32(p, (uint32_t)(v >> 32));
	return instate_mp_be32(p + 4, (uint32_t)v);
}

static inline unsigned char *instate_mp_put_nil(unsigned char *p)
{
	*p = 0xc0;
	return p + 1;
}

static inline unsigned char *instate_mp_put_bool(unsigned char *p, int b)
{
	*p = b ? 0xc3 : 0xc2;
	return p + 1;
}

/** A non-negative integer: positive fixint, uint8, uint16, uint32 or uint64. */
static inline unsigned char *instate_mp_put_uint(unsigned char *p, uint64_t v)
{
	if (v <= 0x7f) {
		*p = (unsigned char)v;
		return p + 1;
	}
	if (v <= 0xff) {
		p[0] = 0xcc;
		p[1] = (unsigned char)v;
		return p + 2;
	}
	if (v <= 0xffff) {
		*p = 0xcd;
		return instate_mp_be16(p + 1, (uint32_t)v);
	}
	if (v <= 0xffffffffu) {
		*p = 0xce;
		return instate_mp_be32(p + 1, (uint32_t)v);
	}
	*p = 0xcf;
	return instate_mp_be64(p + 1, v);
}

/** Any integer: the unsigned family when >= 0, else negative fixint or int8..int64. */
static inline unsigned char *instate_mp_put_int(unsigned char *p, int64_t v)
{
	if (v >= 0)
		return instate_mp_put_uint(p, (uint64_t)v);
	if (v >= -32) {
		*p = (unsigned char)(v & 0xff);
		return p + 1;
	}
	if (v >= INT8_MIN) {
		p[0] = 0xd0;
		p[1] = (unsigned char)(v & 0xff);
		return p + 2;
	}
	if (v >= INT16_MIN) {
		*p = 0xd1;
		return instate_mp_be16(p + 1, (uint32_t)v & 0xffffu);
	}
	if (v >= INT32_MIN) {
		*p = 0xd2;
		return instate_mp_be32(p + 1, (uint32_t)v);
	}
	*p = 0xd3;
	return instate_mp_be64(p + 1, (uint64_t)v);
}

/**
 * A double, as float32 when narrowing it is bit-exact (so -0.0, infinities
 * and every float32 value stay exact), else float64. NaN always takes
 * float64: narrowing could change its payload.
 */
static inline unsigned char *instate_mp_put_double(unsigned char *p, double d)
{
	uint64_t bits;
	memcpy(&bits, &d, 8);
	/* Narrow only inside float's range: converting a larger finite double
	 * is undefined behaviour. NaN fails both comparisons. */
	if ((d >= -(double)FLT_MAX && d <= (double)FLT_MAX) ||
	    (bits << 1) == 0xffe0000000000000ull) {
		float f = (float)d;
		double back = (double)f;
		uint64_t bbits;
		memcpy(&bbits, &back, 8);
		if (bbits == bits) {
			uint32_t fbits;
			memcpy(&fbits, &f, 4);
			*p = 0xca;
			return instate_mp_be32(p + 1, fbits);
		}
	}
	*p = 0xcb;
	return instate_mp_be64(p + 1, bits);
}

/** Header of a str (UTF-8 text) of len bytes: fixstr, str8, str16 or str32. */
static inline unsigned char *instate_mp_put_str_header(unsigned char *p, uint32_t len)
{
	if (len <= 31) {
		*p = (unsigned char)(0xa0 | len);
		return p + 1;
	}
	if (len <= 0xff) {
		p[0] = 0xd9;
		p[1] = (unsigned char)len;
		return p + 2;
	}
	if (len <= 0xffff) {
		*p = 0xda;
		return instate_mp_be16(p + 1, len);
	}
	*p = 0xdb;
	return instate_mp_be32(p + 1, len);
}

/** Header of a bin (any bytes) of len bytes: bin8, bin16 or bin32. */
static inline unsigned char *instate_mp_put_bin_header(unsigned char *p, uint32_t len)
{
	if (len <= 0xff) {
		p[0] = 0xc4;
		p[1] = (unsigned char)len;
		return p + 2;
	}
	if (len <= 0xffff) {
		*p = 0xc5;
		return instate_mp_be16(p + 1, len);
	}
	*p = 0xc6;
	return instate_mp_be32(p + 1, len);
}

/* A container header: the fix form (fix | n) up to 15, else code16 with a
 * 16-bit count, else code16 + 1 with a 32-bit count. */
static inline unsigned char *instate_mp_put_count_header(unsigned char *p, uint32_t n,
                                                         unsigned fix, unsigned code16)
{
	if (n <= 15) {
		*p = (unsigned char)(fix | n);
		return p + 1;
	}
	if (n <= 0xffff) {
		*p = (unsigned char)code16;
		return instate_mp_be16(p + 1, n);
	}
	*p = (unsigned char)(code16 + 1);
	return instate_mp_be32(p + 1, n);
}

/** Header of an array of n elements: fixarray, array16 or array32. */
static inline unsigned char *instate_mp_put_array_header(unsigned char *p, uint32_t n)
{
	return instate_mp_put_count_header(p, n, 0x90, 0xdc);
}

/** Header of a map of n key/value pairs: fixmap, map16 or map32. */
static inline unsigned char *instate_mp_put_map_header(unsigned char *p, uint32_t n)
{
	return instate_mp_put_count_header(p, n, 0x80, 0xde);
}

/** Size of the map header instate_mp_put_map_header() writes for n pairs. */
static inline size_t instate_mp_map_header_size(uint32_t n)
{
	return n <= 15 ? 1 : n <= 0xffff ? 3 : 5;
}

/** Header of an extension of type `type` with len payload bytes:
 * fixext 1/2/4/8/16 when len fits one exactly, else ext8, ext16 or ext32. */
static inline unsigned char *instate_mp_put_ext_header(unsigned char *p, int8_t type, uint32_t len)
{
	unsigned char t = (unsigned char)type;
	switch (len) {
	case 1: p[0] = 0xd4; p[1] = t; return p + 2;
	case 2: p[0] = 0xd5; p[1] = t; return p + 2;
	case 4: p[0] = 0xd6; p[1] = t; return p + 2;
	case 8: p[0] = 0xd7; p[1] = t; return p + 2;
	case 16: p[0] = 0xd8; p[1] = t; return p + 2;
	default: break;
	}
	if (len <= 0xff) {
		p[0] = 0xc7;
		p[1] = (unsigned char)len;
		p[2] = t;
		return p + 3;
	}
	if (len <= 0xffff) {
		*p = 0xc8;
		p = instate_mp_be16(p + 1, len);
	} else {
		*p = 0xc9;
		p = instate_mp_be32(p + 1, len);
	}
	*p = t;
	return p + 1;
}

/** Size of the header instate_mp_put_ext_header() writes for len bytes. */
static inline size_t instate_mp_ext_header_size(uint32_t len)
{
	if (len == 1 || len == 2 || len == 4 || len == 8 || len == 16)
		return 2;
	return len <= 0xff ? 3 : len <= 0xffff ? 4 : 6;
}

/** A reference to table `id` (ext type 2): fixext 1, 2, 4 or 8, big-endian id. */
static inline unsigned char *instate_mp_put_ref(unsigned char *p, uint64_t id)
{
	if (id <= 0xff) {
		p = instate_mp_put_ext_header(p, INSTATE_MP_EXT_REF, 1);
		*p = (unsigned char)id;
		return p + 1;
	}
	if (id <= 0xffff) {
		p = instate_mp_put_ext_header(p, INSTATE_MP_EXT_REF, 2);
		return instate_mp_be16(p, (uint32_t)id);
	}
	if (id <= 0xffffffffu) {
		p = instate_mp_put_ext_header(p, INSTATE_MP_EXT_REF, 4);
		return instate_mp_be32(p, (uint32_t)id);
	}
	p = instate_mp_put_ext_header(p, INSTATE_MP_EXT_REF, 8);
	return instate_mp_be64(p, id);
}

/**
 * @brief Whether p[0..n) is well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF): what strict MessagePack readers
 * require of a str. Runs 8 bytes at a time over ASCII. Inline: the encoder
 * calls it for every string, most of them short keys.
 * @return 1 if valid, else 0.
 */
static inline int instate_mp_utf8_valid(const void *s, size_t n)
{
	const unsigned char *p = s, *e = p + n;

	while (p < e) {
		unsigned c = *p;
		if (c < 0x80) {
			/* Most strings are ASCII: test 8 bytes per step. */
			while ((size_t)(e - p) >= 8) {
				uint64_t w;
				memcpy(&w, p, 8);
				if (w & 0x8080808080808080ull)
					break;
				p += 8;
			}
			while (p < e && *p < 0x80)
				p++;
			continue;
		}
		if (c < 0xc2) /* a stray continuation byte, or an overlong 2-byte form */
			return 0;
		if (c < 0xe0) {
			if (e - p < 2 || (p[1] & 0xc0) != 0x80)
				return 0;
			p += 2;
		} else if (c < 0xf0) {
			unsigned lo = c == 0xe0 ? 0xa0 : 0x80;  /* no overlongs */
			unsigned hi = c == 0xed ? 0x9f : 0xbf;  /* no surrogates */
			if (e - p < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
				return 0;
			p += 3;
		} else if (c < 0xf5) {
			unsigned lo = c == 0xf0 ? 0x90 : 0x80;  /* no overlongs */
			unsigned hi = c == 0xf4 ? 0x8f : 0xbf;  /* nothing above U+10FFFF */
			if (e - p < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
			    (p[3] & 0xc0) != 0x80)
				return 0;
			p += 4;
		} else {
			return 0;
		}
	}
	return 1;
}

/* ===================================================================== */
/* Reader                                                                */

/**
 * A cursor over n bytes. Zero it, set p and n, then read items. On error
 * the reader keeps the first message: err holds "corrupt MessagePack at
 * byte N: ..." and err_off holds N (offsets count from 0).
 */
typedef struct instate_mp_reader {
	const unsigned char *p;
	size_t n;
	size_t pos;       /**< offset of the next item */
	size_t err_off;
	int graph;        /**< inside a GRAPH (set by instate_mp_begin()) */
	size_t graph_off; /**< where that GRAPH begins */
	uint64_t refs;    /**< REFs accepted by instate_mp_check_ext() */
	char err[INSTATE_MP_ERRMAX];
} instate_mp_reader;

/**
 * @brief Record a corruption at byte `off` with a printf-style message.
 * @return #INSTATE_CORRUPT, so callers can `return instate_mp_corrupt(...)`.
 */
int instate_mp_corrupt(instate_mp_reader *r, size_t off, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 3, 4), cold))
#endif
	;

/* Out of line: the cold half of instate_mp_read(). */
int instate_mp_truncated(instate_mp_reader *r, size_t off, const char *what, size_t need,
                         size_t left);

/**
 * @brief Read the item at r->pos and step past its header and payload (not
 * past the elements of an array or map).
 *
 * Every length is checked against the bytes left before it is returned: a
 * str, bin or ext payload must be present in full; an array of n elements
 * needs at least n more bytes and a map of n pairs at least 2n, so a caller
 * may allocate for len without trusting the input further.
 *
 * @return 0, or #INSTATE_CORRUPT (truncated input, the never-used byte 0xc1,
 *   a length that cannot fit) with the message in r->err.
 */
static inline int instate_mp_read(instate_mp_reader *r, instate_mp_item *it)
{
	size_t off = r->pos, left = r->n - off;
	const unsigned char *p = r->p + off;
	unsigned c;
	size_t hdr;
	uint64_t len;

	if (left == 0)
		return instate_mp_corrupt(r, off, "truncated input (a value expected, 0 bytes left)");
	c = p[0];
	if (c <= 0x7f) {
		it->type = INSTATE_MP_UINT;
		it->v.u = c;
		r->pos = off + 1;
		return 0;
	}
	if (c >= 0xe0) {
		it->type = INSTATE_MP_INT;
		it->v.i = (int64_t)c - 256;
		r->pos = off + 1;
		return 0;
	}
	if (c <= 0xbf) {
		len = c <= 0x9f ? c & 0x0f : c & 0x1f;
		hdr = 1;
		if (c <= 0x8f) {
			it->type = INSTATE_MP_MAP;
			goto map;
		}
		if (c <= 0x9f) {
			it->type = INSTATE_MP_ARRAY;
			goto array;
		}
		it->type = INSTATE_MP_STR;
		goto bytes;
	}

	/* 0xc0..0xdf: the first payload byte of each form follows at p + hdr */
	switch (c) {
	case 0xc0:
		it->type = INSTATE_MP_NIL;
		r->pos = off + 1;
		return 0;
	case 0xc2:
	case 0xc3:
		it->type = INSTATE_MP_BOOL;
		it->v.b = c == 0xc3;
		r->pos = off + 1;
		return 0;
	case 0xc4: case 0xc5: case 0xc6:
	case 0xd9: case 0xda: case 0xdb:
	case 0xdc: case 0xdd:
	case 0xde: case 0xdf: {
		static const char *const names[] = {
			"bin8", "bin16", "bin32", "str8", "str16", "str32",
			"array16", "array32", "map16", "map32"};
		unsigned k, w;
		if (c <= 0xc6) {
			k = c - 0xc4;
			w = 1u << k;
			it->type = INSTATE_MP_BIN;
		} else if (c <= 0xdb) {
			k = c - 0xd9 + 3;
			w = 1u << (c - 0xd9);
			it->type = INSTATE_MP_STR;
		} else if (c <= 0xdd) {
			k = c - 0xdc + 6;
			w = 2u << (c - 0xdc);
			it->type = INSTATE_MP_ARRAY;
		} else {
			k = c - 0xde + 8;
			w = 2u << (c - 0xde);
			it->type = INSTATE_MP_MAP;
		}
		if (left - 1 < w)
			return instate_mp_truncated(r, off, names[k], w, left - 1);
		len = w == 1 ? p[1]
		    : w == 2 ? ((uint32_t)p[1] << 8 | p[2])
		    : ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
		hdr = 1 + w;
		if (it->type == INSTATE_MP_MAP)
			goto map;
		if (it->type == INSTATE_MP_ARRAY)
			goto array;
		goto bytes;
	}
	case 0xc7: case 0xc8: case 0xc9: {
		unsigned w = 1u << (c - 0xc7);
		static const char *const names[] = {"ext8", "ext16", "", "ext32"};
		if (left - 1 < w + 1)
			return instate_mp_truncated(r, off, names[w - 1], w + 1, left - 1);
		len = w == 1 ? p[1]
		    : w == 2 ? ((uint32_t)p[1] << 8 | p[2])
		    : ((uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4]);
		it->ext = (int)(signed char)p[1 + w];
		hdr = 2 + w;
		it->type = INSTATE_MP_EXT;
		goto bytes;
	}
	case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
		if (left < 2)
			return instate_mp_truncated(r, off, "fixext", 1, left - 1);
		it->ext = (int)(signed char)p[1];
		len = 1u << (c - 0xd4);
		hdr = 2;
		it->type = INSTATE_MP_EXT;
		goto bytes;
	case 0xca: case 0xcb:
	case 0xcc: case 0xcd: case 0xce: case 0xcf:
	case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
		static const char *const names[] = {
			"float32", "float64", "uint8", "uint16", "uint32", "uint64",
			"int8", "int16", "int32", "int64"};
		static const unsigned char widths[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
		unsigned k = c - 0xca, w = widths[k], i;
		uint64_t v = 0;
		if (left - 1 < w)
			return instate_mp_truncated(r, off, names[k], w, left - 1);
		for (i = 1; i <= w; i++)
			v = v << 8 | p[i];
		r->pos = off + 1 + w;
		if (c == 0xca) {
			uint32_t b32 = (uint32_t)v;
			float f;
			memcpy(&f, &b32, 4);
			it->type = INSTATE_MP_FLOAT;
			it->v.d = (double)f;
		} else if (c == 0xcb) {
			it->type = INSTATE_MP_DOUBLE;
			memcpy(&it->v.d, &v, 8);
		} else if (c <= 0xcf) {
			it->type = INSTATE_MP_UINT;
			it->v.u = v;
		} else {
			/* sign-extend from w bytes */
			unsigned shift = 64 - 8 * w;
			it->type = INSTATE_MP_INT;
			it->v.i = (int64_t)(v << shift) >> shift;
		}
		return 0;
	}
	default: /* 0xc1 */
		return instate_mp_corrupt(r, off, "invalid byte 0x%02x", c);
	}

bytes:
	if (len > left - hdr)
		return instate_mp_truncated(r, off,
			it->type == INSTATE_MP_STR ? "str" : it->type == INSTATE_MP_BIN ? "bin" : "ext",
			(size_t)len, left - hdr);
	it->len = (uint32_t)len;
	it->data = p + hdr;
	r->pos = off + hdr + (size_t)len;
	return 0;
array:
	if (len > left - hdr)
		return instate_mp_corrupt(r, off,
			"array of %lu elements needs at least %lu bytes, %lu left",
			(unsigned long)len, (unsigned long)len, (unsigned long)(left - hdr));
	it->len = (uint32_t)len;
	r->pos = off + hdr;
	return 0;
map:
	if (len > (left - hdr) / 2)
		/* 2 * len needs 33 bits: long is 32 on Windows */
		return instate_mp_corrupt(r, off,
			"map of %lu pairs needs at least %llu bytes, %lu left",
			(unsigned long)len, (unsigned long long)(2 * len), (unsigned long)(left - hdr));
	it->len = (uint32_t)len;
	r->pos = off + hdr;
	return 0;
}

/** Big-endian unsigned value of a REF payload (1, 2, 4 or 8 bytes). */
static inline uint64_t instate_mp_ref_id(const instate_mp_item *it)
{
	uint64_t v = 0;
	uint32_t i;
	for (i = 0; i < it->len; i++)
		v = v << 8 | it->data[i];
	return v;
}

/**
 * @brief Start reading a whole encoded value: if it is a GRAPH extension,
 * check that the extension spans the whole input and step into its payload.
 * @param[out] graph 1 inside a GRAPH (references allowed), else 0.
 * @return 0 or #INSTATE_CORRUPT. r->pos is then at the top-level value.
 */
int instate_mp_begin(instate_mp_reader *r, int *graph);

/**
 * @brief After the top-level value: anything left is trailing garbage, and
 * a GRAPH must have held at least one REF (without one it is another
 * library's extension type 1, which this format does not read).
 * @return 0 or #INSTATE_CORRUPT.
 */
int instate_mp_finish(instate_mp_reader *r);

/**
 * @brief Check an extension item found at byte `off` inside a value: only a
 * REF inside a graph to one of the `tables` tables begun so far is valid.
 * @param[out] id the referenced table (0 = the first table begun).
 * @return 0 or #INSTATE_CORRUPT (unsupported type, REF outside a graph,
 *   REF to a table not begun yet, nested GRAPH, bad REF width).
 */
int instate_mp_check_ext(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                         int graph, uint64_t tables, uint64_t *id);

/**
 * @brief Step into a CLASS extension item `it` read at byte `off` (r->pos
 * is past its payload): check that the payload begins with a name (a str of
 * 1..#INSTATE_MP_CLASS_NAME_MAX bytes) followed by an array or map header,
 * and leave r->pos at that header with r->n cut to the payload's end, so
 * that nothing inside can read past it.
 * @param[out] name, namelen the class name (inside the input).
 * @param[out] saved_n the input length to give back to instate_mp_class_end().
 * @return 0 or #INSTATE_CORRUPT.
 */
int instate_mp_class_begin(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                           const unsigned char **name, uint32_t *namelen, size_t *saved_n);

/**
 * @brief After the table of a CLASS extension begun at byte `off`: the
 * payload must be used up exactly. Restores r->n to saved_n.
 * @return 0 or #INSTATE_CORRUPT.
 */
int instate_mp_class_end(instate_mp_reader *r, size_t off, size_t saved_n);

/**
 * @brief Check a whole CLASS extension item `it` (read at `off`) as the
 * validator does: its name, then one table and nothing else, the table
 * checked at `depth` like any value, its tables counted on from *tables
 * (updated on success, so that later references count them). Leaves r
 * after the extension, or with the error set.
 * @return 0 or #INSTATE_CORRUPT.
 */
int instate_mp_check_class(instate_mp_reader *r, size_t off, const instate_mp_item *it,
                           int depth, int is_key, uint64_t *tables);

/**
 * @brief Check that p[0..n) is exactly one value that the decoder accepts.
 *
 * Checks structure, every length against the bytes left, nesting depth
 * (#INSTATE_MP_MAX_DEPTH), map keys (no nil, no NaN), extension types
 * (GRAPH only at the top and holding at least one REF, REF only inside a
 * GRAPH and only to a table already begun, CLASS as instate_mp_class_begin()
 * describes, nothing else; a class name is not looked up) and that no byte
 * trails the value.
 *
 * @param[out] err_off the offset of the fault (may be NULL).
 * @param[out] err the message "corrupt MessagePack at byte N: ..." (may be
 *   NULL), truncated to errlen bytes with its NUL.
 * @return 0 or #INSTATE_CORRUPT. Allocates nothing; recursion is bounded by
 *   the depth limit.
 */
int instate_mp_validate(const void *p, size_t n, size_t *err_off, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* INSTATE_MPACK_H */
