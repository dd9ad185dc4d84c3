/*
 * test_codec_api.c - the public value codec of instate.h (instate_mp_writer,
 * instate_mp_parser), without Lua: exact bytes, round trips, misuse of the
 * writer, and hostile input to the parser (truncation at every byte, huge
 * lengths, depth, random damage), which must give CORRUPT with the byte
 * offset, never a crash (make sanitize runs this under ASan/UBSan).
 * The same values against the Lua codec: test_lua_codec_api.c.
 */
#include "instate.h"
#include "instate_mpack.h" /* instate_mp_validate(), the reference to agree with */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __LINE__)
static int check(int ok, const char *what, int line)
{
	if (ok)
		passed++;
	else {
		failed++;
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, line, what);
	}
	return ok;
}
#define CHECK_RC(expr, want) do { \
	int rc_ = (expr); \
	if (rc_ == (want)) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s)\n", __FILE__, \
	       __LINE__, #expr, rc_, instate_strerror(rc_), (want), instate_strerror(want)); } \
} while (0)
#define CHECK_STR(got, want) do { \
	const char *g_ = (got), *w_ = (want); \
	if (strcmp(g_, w_) == 0) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: got \"%s\", want \"%s\"\n", __FILE__, __LINE__, \
	       g_, w_); } \
} while (0)

static int bytes_eq(const instate_buf *b, const char *hex)
{
	unsigned char want[256];
	size_t n = 0;
	unsigned v;

	while (*hex) {
		if (*hex == ' ' || *hex == '|') {
			hex++;
			continue;
		}
		if (sscanf(hex, "%2x", &v) != 1)
			return 0;
		want[n++] = (unsigned char)v;
		hex += 2;
	}
	if (b->len != n || memcmp(b->data, want, n) != 0) {
		size_t i;
		fprintf(stderr, "  bytes:");
		for (i = 0; i < b->len; i++)
			fprintf(stderr, " %02x", (unsigned char)b->data[i]);
		fprintf(stderr, "\n  want:  %s\n", hex - 0);
		return 0;
	}
	return 1;
}

/* ===================================================================== */
/* Copy: parse a value and write every item again. The writer chooses the
 * shortest forms and the GRAPH framing itself, so for instate's own bytes
 * the copy is the same bytes. */

static int copy_value(const void *p, size_t n, instate_buf *out, instate_mp_parser *ps)
{
	instate_mp_writer w;
	instate_mp_item it;
	int rc;

	out->len = 0;
	instate_mp_writer_init(&w, out);
	instate_mp_parser_init(ps, p, n);
	while ((rc = instate_mp_parser_next(ps, &it)) == 0) {
		switch (it.type) {
		case INSTATE_MP_NIL: instate_mp_write_nil(&w); break;
		case INSTATE_MP_BOOL: instate_mp_write_bool(&w, it.v.b); break;
		case INSTATE_MP_UINT: instate_mp_write_uint(&w, it.v.u); break;
		case INSTATE_MP_INT: instate_mp_write_int(&w, it.v.i); break;
		case INSTATE_MP_FLOAT:
		case INSTATE_MP_DOUBLE: instate_mp_write_double(&w, it.v.d); break;
		case INSTATE_MP_STR: instate_mp_write_str(&w, (const char *)it.data, it.len); break;
		case INSTATE_MP_BIN: instate_mp_write_bin(&w, it.data, it.len); break;
		case INSTATE_MP_ARRAY: instate_mp_write_array(&w, it.len); break;
		case INSTATE_MP_MAP: instate_mp_write_map(&w, it.len); break;
		case INSTATE_MP_EXT:
			if (it.ext == INSTATE_MP_EXT_REF)
				instate_mp_write_ref(&w, it.v.u);
			else
				instate_mp_write_ext(&w, (int8_t)it.ext, it.data, it.len);
			break;
		}
	}
	if (rc != INSTATE_NOTFOUND)
		return rc;
	return instate_mp_writer_finish(&w);
}

/* ===================================================================== */
/* Writer: exact bytes                                                    */

static void test_scalars(void)
{
	instate_buf b = {0};
	instate_mp_writer w;
	double nan_payload;
	uint64_t bits = 0x7ff8000000000123ull;

#define ONE(call, hex) do { \
	b.len = 0; instate_mp_writer_init(&w, &b); \
	CHECK_RC(call, 0); CHECK_RC(instate_mp_writer_finish(&w), 0); \
	CHECK(bytes_eq(&b, hex)); \
} while (0)
	ONE(instate_mp_write_nil(&w), "c0");
	ONE(instate_mp_write_bool(&w, 0), "c2");
	ONE(instate_mp_write_bool(&w, 7), "c3");
	ONE(instate_mp_write_int(&w, 0), "00");
	ONE(instate_mp_write_int(&w, 127), "7f");
	ONE(instate_mp_write_int(&w, 128), "cc 80");
	ONE(instate_mp_write_int(&w, -1), "ff");
	ONE(instate_mp_write_int(&w, -32), "e0");
	ONE(instate_mp_write_int(&w, -33), "d0 df");
	ONE(instate_mp_write_int(&w, INT64_MIN), "d3 80 00 00 00 00 00 00 00");
	ONE(instate_mp_write_int(&w, INT64_MAX), "cf 7f ff ff ff ff ff ff ff");
	ONE(instate_mp_write_uint(&w, UINT64_MAX), "cf ff ff ff ff ff ff ff ff");
	ONE(instate_mp_write_uint(&w, 76561197960287930ull), "cf 01 10 00 01 00 00 56 ba");
	/* floats stay floats, bit for bit (docs/FORMAT.md) */
	ONE(instate_mp_write_double(&w, 1.0), "ca 3f 80 00 00");
	ONE(instate_mp_write_double(&w, -0.0), "ca 80 00 00 00");
	ONE(instate_mp_write_double(&w, HUGE_VAL), "ca 7f 80 00 00");
	ONE(instate_mp_write_double(&w, 0.1), "cb 3f b9 99 99 99 99 99 9a");
	memcpy(&nan_payload, &bits, 8);
	ONE(instate_mp_write_double(&w, nan_payload), "cb 7f f8 00 00 00 00 01 23");
	ONE(instate_mp_write_str(&w, "", 0), "a0");
	ONE(instate_mp_write_str(&w, "h\0i", 3), "a3 68 00 69");
	ONE(instate_mp_write_bin(&w, "hi", 2), "c4 02 68 69");
	ONE(instate_mp_write_string(&w, "hi", 2), "a2 68 69");
	ONE(instate_mp_write_string(&w, NULL, 0), "a0"); /* "" is a str, as Lua writes it */
	ONE(instate_mp_write_string(&w, "\xff", 1), "c4 01 ff");
	ONE(instate_mp_write_string(&w, "\xed\xa0\x80", 3), "c4 03 ed a0 80"); /* a surrogate */
	ONE(instate_mp_write_ext(&w, 5, "ab", 2), "d5 05 61 62");
	ONE(instate_mp_write_ext(&w, -1, "abc", 3), "c7 03 ff 61 62 63");
	ONE(instate_mp_write_map(&w, 0), "80");
	ONE(instate_mp_write_array(&w, 0), "90");
#undef ONE
	instate_buf_free(&b);
}

static void test_tables(void)
{
	instate_buf b = {0};
	instate_mp_writer w;
	int i;

	/* {b = 1, a = 2} as Lua's canonical encoding writes it */
	instate_mp_writer_init(&w, &b);
	instate_mp_write_map(&w, 2);
	instate_mp_write_str(&w, "a", 1);
	instate_mp_write_int(&w, 2);
	instate_mp_write_str(&w, "b", 1);
	instate_mp_write_int(&w, 1);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(bytes_eq(&b, "82 a1 61 02 a1 62 01"));
	CHECK(w.tables == 1 && w.refs == 0);

	/* t = {}; t[1] = t: GRAPH[ [REF 0] ] */
	b.len = 0;
	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 1);
	CHECK_RC(instate_mp_write_ref(&w, 0), 0);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(bytes_eq(&b, "d6 01 | 91 d4 02 00"));
	CHECK_RC(instate_mp_writer_finish(&w), 0); /* twice: wrapped once */
	CHECK(b.len == 6);

	/* s = {}; v = {s, s}: GRAPH[ [{}, REF 1] ] */
	b.len = 0;
	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 2);
	instate_mp_write_map(&w, 0);
	instate_mp_write_ref(&w, 1);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(bytes_eq(&b, "c7 05 01 | 92 80 d4 02 01"));

	/* s = {1}; {z = s, a = s} canonical: c7 0a 01 | 82 a1 61 91 01 a1 7a d4 02 01 */
	b.len = 0;
	instate_mp_writer_init(&w, &b);
	instate_mp_write_map(&w, 2);
	instate_mp_write_str(&w, "a", 1);
	instate_mp_write_array(&w, 1);
	instate_mp_write_int(&w, 1);
	instate_mp_write_str(&w, "z", 1);
	instate_mp_write_ref(&w, 1);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(bytes_eq(&b, "c7 0a 01 | 82 a1 61 91 01 a1 7a d4 02 01"));

	/* a value appended after bytes already in the buffer; a large one */
	b.len = 0;
	memcpy(b.data, "XY", 2);
	b.len = 2;
	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 70000);
	for (i = 0; i < 70000; i++)
		instate_mp_write_int(&w, i);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(memcmp(b.data, "XY\xdd\x00\x01\x11\x70", 7) == 0);
	CHECK_RC(instate_mp_validate(b.data + 2, b.len - 2, NULL, NULL, 0), 0);

	/* 200 levels is the limit, inclusive */
	b.len = 0;
	instate_mp_writer_init(&w, &b);
	for (i = 0; i < INSTATE_MP_MAX_DEPTH; i++)
		CHECK_RC(instate_mp_write_array(&w, i + 1 < INSTATE_MP_MAX_DEPTH), 0);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(b.len == INSTATE_MP_MAX_DEPTH);
	CHECK_RC(instate_mp_validate(b.data, b.len, NULL, NULL, 0), 0);
	instate_buf_free(&b);
}

/* ===================================================================== */
/* Writer: misuse                                                         */

static void test_writer_errors(void)
{
	instate_buf b = {0};
	instate_mp_writer w;
	int i;

	b.len = 0;
	instate_mp_writer_init(&w, &b);
	instate_mp_write_map(&w, 1);
	CHECK_RC(instate_mp_write_nil(&w), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w), "nil map key at byte 1 (depth 1)");
	/* sticky: everything after fails the same and writes nothing */
	CHECK_RC(instate_mp_write_int(&w, 1), INSTATE_INVALID);
	CHECK_RC(instate_mp_writer_finish(&w), INSTATE_INVALID);
	CHECK(b.len == 0);
	CHECK_STR(instate_mp_writer_error(&w), "nil map key at byte 1 (depth 1)");

	instate_mp_writer_init(&w, &b);
	instate_mp_write_map(&w, 2);
	instate_mp_write_int(&w, 1);
	instate_mp_write_nil(&w); /* a nil value is fine */
	CHECK_RC(instate_mp_write_double(&w, NAN), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w), "NaN map key at byte 3 (depth 1)");

	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 1);
	instate_mp_write_double(&w, NAN); /* a NaN value is fine */
	CHECK_RC(instate_mp_writer_finish(&w), 0);

	b.len = 0;
	instate_mp_writer_init(&w, &b);
	CHECK_RC(instate_mp_write_ref(&w, 0), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w),
	          "reference to table 0 at byte 0, but only 0 tables begun");
	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 2);
	instate_mp_write_ref(&w, 0);
	CHECK_RC(instate_mp_write_ref(&w, 1), INSTATE_INVALID);

	instate_mp_writer_init(&w, &b);
	instate_mp_write_int(&w, 1);
	CHECK_RC(instate_mp_write_int(&w, 2), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w), "an item after the complete value at byte 1");

	b.len = 0;
	instate_mp_writer_init(&w, &b);
	CHECK_RC(instate_mp_writer_finish(&w), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w), "no value written");

	instate_mp_writer_init(&w, &b);
	instate_mp_write_array(&w, 2);
	instate_mp_write_map(&w, 2);
	instate_mp_write_int(&w, 1);
	CHECK_RC(instate_mp_writer_finish(&w), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w),
	          "incomplete value: the map at depth 1 still needs 3 items (2 tables open)");
	CHECK(b.len == 0);

	instate_mp_writer_init(&w, &b);
	CHECK_RC(instate_mp_write_str(&w, "\xc0\x80", 2), INSTATE_INVALID); /* overlong NUL */
	CHECK_STR(instate_mp_writer_error(&w), "a str of invalid UTF-8 at byte 0");
	instate_mp_writer_init(&w, &b);
	CHECK_RC(instate_mp_write_ext(&w, INSTATE_MP_EXT_REF, "\0", 1), INSTATE_INVALID);
	instate_mp_writer_init(&w, &b);
	CHECK_RC(instate_mp_write_ext(&w, INSTATE_MP_EXT_GRAPH, "\0", 1), INSTATE_INVALID);
	instate_mp_writer_init(&w, &b);
#if SIZE_MAX > 0xffffffffu
	CHECK_RC(instate_mp_write_bin(&w, "x", (size_t)0x100000000ull), INSTATE_LIMIT);
	CHECK_STR(instate_mp_writer_error(&w), "a bin of 4294967296 bytes at byte 0 (at most 2^32 - 1)");
#endif

	b.len = 0;
	instate_mp_writer_init(&w, &b);
	for (i = 0; i < INSTATE_MP_MAX_DEPTH; i++)
		instate_mp_write_array(&w, 1);
	CHECK_RC(instate_mp_write_array(&w, 0), INSTATE_INVALID);
	CHECK_STR(instate_mp_writer_error(&w), "tables nested deeper than 200 levels at byte 200");
	CHECK_RC(instate_mp_writer_finish(&w), INSTATE_INVALID);
	CHECK(b.len == 0);
	instate_buf_free(&b);
}

/* ===================================================================== */
/* Parser                                                                 */

static void test_parser(void)
{
	/* {"a": [1, -2, 1.5, "x", bin, nil, true], "b": GRAPH-less ext 5} */
	static const unsigned char v[] = {
		0x82, 0xa1, 'a', 0x97, 0x01, 0xfe, 0xca, 0x3f, 0xc0, 0x00, 0x00, 0xa1, 'x',
		0xc4, 0x01, 0xff, 0xc0, 0xc3, 0xa1, 'b', 0xd4, 0x05, 0x07};
	static const unsigned char g[] = {0xc7, 0x05, 0x01, 0x92, 0x80, 0xd4, 0x02, 0x01};
	instate_mp_parser p;
	instate_mp_item it;

	instate_mp_parser_init(&p, v, sizeof v);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_MAP && it.len == 2 && p.item_depth == 0 && p.tables == 1);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_STR && it.len == 1 && it.data[0] == 'a' && p.item_key);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_ARRAY && it.len == 7 && !p.item_key && p.item_depth == 1);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_UINT && it.v.u == 1 && p.item_depth == 2 && p.item_off == 4);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_INT && it.v.i == -2);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_FLOAT && it.v.d == 1.5);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_STR && it.len == 1);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_BIN && it.len == 1 && it.data[0] == 0xff);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_NIL);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_BOOL && it.v.b == 1 && p.item_depth == 2);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_STR && p.item_key && p.item_depth == 1);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_EXT && it.ext == 5 && it.len == 1 && it.data[0] == 7);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_NOTFOUND);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_NOTFOUND);
	CHECK_STR(instate_mp_parser_error(&p, NULL), "");

	/* skip the array: the next item is the key "b" */
	instate_mp_parser_init(&p, v, sizeof v);
	instate_mp_parser_next(&p, &it);
	instate_mp_parser_next(&p, &it);
	instate_mp_parser_next(&p, &it);
	CHECK_RC(instate_mp_parser_skip(&p), 0);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_STR && it.data[0] == 'b' && p.item_off == 18);
	CHECK_RC(instate_mp_parser_skip(&p), 0); /* a scalar: nothing */
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_EXT);
	/* skip of the top-level table: the value is done */
	instate_mp_parser_init(&p, v, sizeof v);
	instate_mp_parser_next(&p, &it);
	CHECK_RC(instate_mp_parser_skip(&p), 0);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_NOTFOUND);

	/* a graph: stepped into, the REF reported with its table id */
	instate_mp_parser_init(&p, g, sizeof g);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_ARRAY && it.len == 2 && p.graph && p.item_off == 3);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_MAP && it.len == 0 && p.tables == 2);
	CHECK_RC(instate_mp_parser_next(&p, &it), 0);
	CHECK(it.type == INSTATE_MP_EXT && it.ext == INSTATE_MP_EXT_REF && it.v.u == 1);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_NOTFOUND);

	/* an empty input; a NULL one */
	instate_mp_parser_init(&p, v, 0);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_CORRUPT);
	CHECK_STR(instate_mp_parser_error(&p, NULL),
	          "corrupt MessagePack at byte 0: truncated input (a value expected, 0 bytes left)");
	instate_mp_parser_init(&p, NULL, 5);
	CHECK_RC(instate_mp_parser_next(&p, &it), INSTATE_CORRUPT);
}

/* The parser's verdict on p[0..n): 0 (read whole) or CORRUPT; *foreign is
 * the offset of the first extension item of a type not instate's, or
 * SIZE_MAX. */
static int parse_all(const void *data, size_t n, size_t *off, char *msg, size_t msglen,
                     size_t *foreign)
{
	instate_mp_parser p;
	instate_mp_item it;
	int rc;
	unsigned long steps = 0;

	instate_mp_parser_init(&p, data, n);
	*foreign = SIZE_MAX;
	while ((rc = instate_mp_parser_next(&p, &it)) == 0) {
		if (it.type == INSTATE_MP_EXT && it.ext != INSTATE_MP_EXT_REF && *foreign == SIZE_MAX)
			*foreign = p.item_off;
		if (++steps > n + 1) /* each item takes at least one byte */
			return -1;
	}
	if (rc == INSTATE_NOTFOUND)
		return 0;
	snprintf(msg, msglen, "%s", instate_mp_parser_error(&p, off));
	return rc;
}

/* The parser and instate_mp_validate() (what instate.decode checks) agree,
 * with the same offset and message, but on extension types other than
 * instate's, which the parser returns and the validator refuses: there the
 * parser must have returned that item, and found any fault only after it
 * (a GRAPH without a REF is reported, at its start, once all is read). */
static int agree(const unsigned char *d, size_t n)
{
	char m1[INSTATE_MP_ERRMAX] = "", m2[INSTATE_MP_ERRMAX] = "";
	size_t o1 = 0, o2 = 0, foreign;
	int r1 = parse_all(d, n, &o1, m1, sizeof m1, &foreign);
	int r2 = instate_mp_validate(d, n, &o2, m2, sizeof m2);
	int ok;

	if (r2 && strstr(m2, "unsupported extension type"))
		ok = (r1 == 0 || (r1 == INSTATE_CORRUPT &&
		      (o1 > o2 || strstr(m1, "graph extension without a reference")))) &&
		     foreign == o2;
	else
		ok = r1 == r2 && (!r1 || (o1 == o2 && strcmp(m1, m2) == 0));
	if (!ok)
		fprintf(stderr, "  parser %d at %lu '%s'; validator %d at %lu '%s'\n", r1,
		        (unsigned long)o1, m1, r2, (unsigned long)o2, m2);
	return ok;
}

static void test_hostile(void)
{
	static const unsigned char cases[][12] = {
		{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},            /* array32 of 2^32-1 */
		{0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01},      /* map32 */
		{0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},             /* str32 */
		{0xc6, 0x7f, 0xff, 0xff, 0xff, 'a'},             /* bin32 */
		{0xc9, 0xff, 0xff, 0xff, 0xff, 0x05, 'a'},       /* ext32 */
		{0xc1},                                          /* never used */
		{0x81, 0xc0, 0x01},                              /* nil key */
		{0x81, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x01},/* NaN key */
		{0x91, 0xd4, 0x02, 0x00},                        /* REF outside a graph */
		{0xd6, 0x01, 0x91, 0xd4, 0x02, 0x01},            /* REF to a table not begun */
		{0xd6, 0x01, 0x93, 0x01, 0x02, 0x03},            /* GRAPH without a REF */
		{0x92, 0xd6, 0x01, 0x91, 0xd4, 0x02, 0x00},      /* GRAPH inside */
		{0x01, 0x02},                                    /* trailing byte */
	};
	static const size_t lens[] = {6, 7, 6, 6, 7, 1, 3, 11, 4, 6, 6, 7, 2};
	static const char *const msgs[] = {
		"corrupt MessagePack at byte 0: array of 4294967295 elements needs at least 4294967295 bytes, 1 left",
		"corrupt MessagePack at byte 0: map of 4294967295 pairs needs at least 8589934590 bytes, 2 left",
		"corrupt MessagePack at byte 0: truncated str (need 4294967295 bytes, 1 left)",
		"corrupt MessagePack at byte 0: truncated bin (need 2147483647 bytes, 1 left)",
		"corrupt MessagePack at byte 0: truncated ext (need 4294967295 bytes, 1 left)",
		"corrupt MessagePack at byte 0: invalid byte 0xc1",
		"corrupt MessagePack at byte 1: nil map key",
		"corrupt MessagePack at byte 1: NaN map key",
		"corrupt MessagePack at byte 1: reference outside a graph extension",
		"corrupt MessagePack at byte 3: reference to table 1, but only 1 tables begun",
		"corrupt MessagePack at byte 0: graph extension without a reference",
		"corrupt MessagePack at byte 1: graph extension not at the top level",
		"corrupt MessagePack at byte 1: 1 trailing bytes after the value",
	};
	instate_buf b = {0}, out = {0};
	instate_mp_writer w;
	instate_mp_parser p;
	unsigned char *deep;
	char msg[INSTATE_MP_ERRMAX];
	size_t i, j, off, foreign;
	int all_corrupt;
	unsigned seed = 12345;

	for (i = 0; i < sizeof lens / sizeof *lens; i++) {
		CHECK_RC(parse_all(cases[i], lens[i], &off, msg, sizeof msg, &foreign),
		         INSTATE_CORRUPT);
		CHECK_STR(msg, msgs[i]);
		CHECK(agree(cases[i], lens[i]));
	}

	/* 201 levels: corrupt at byte 200, where the 201st begins; 200 is fine */
	deep = malloc(202);
	memset(deep, 0x91, 201);
	deep[201] = 0x01;
	CHECK_RC(parse_all(deep, 202, &off, msg, sizeof msg, &foreign), INSTATE_CORRUPT);
	CHECK(off == 200);
	CHECK_STR(msg, "corrupt MessagePack at byte 200: tables nested deeper than 200 levels");
	CHECK_RC(parse_all(deep + 1, 201, &off, msg, sizeof msg, &foreign), 0);
	free(deep);

	/* A value with every kind of item, a graph, maps, big headers */
	instate_mp_writer_init(&w, &b);
	instate_mp_write_map(&w, 5);
	instate_mp_write_str(&w, "list", 4);
	instate_mp_write_array(&w, 20);
	for (i = 0; i < 4; i++) {
		instate_mp_write_int(&w, -(int64_t)((uint64_t)1 << (i * 16)));
		instate_mp_write_uint(&w, (uint64_t)1 << (i * 16 + 8));
		instate_mp_write_double(&w, i ? 1.0 / (double)i : -0.0);
		instate_mp_write_bool(&w, (int)i & 1);
		instate_mp_write_nil(&w);
	}
	instate_mp_write_int(&w, 7);
	instate_mp_write_map(&w, 1);
	instate_mp_write_double(&w, 2.5);
	instate_mp_write_ref(&w, 1);
	instate_mp_write_bin(&w, "\xff\x00\x01", 3);
	{
		char big[300];
		memset(big, 'z', sizeof big);
		instate_mp_write_str(&w, big, sizeof big);
	}
	instate_mp_write_ext(&w, 9, "12345678", 8);
	instate_mp_write_array(&w, 0);
	instate_mp_write_ref(&w, 0); /* a table key: the value itself */
	instate_mp_write_str(&w, "self", 4);
	CHECK_RC(instate_mp_writer_finish(&w), 0);
	CHECK(w.tables == 4 && w.refs == 2);
	/* the copy of it is its bytes */
	CHECK_RC(copy_value(b.data, b.len, &out, &p), 0);
	CHECK(out.len == b.len && memcmp(out.data, b.data, b.len) == 0);

	/* every proper prefix is corrupt (MessagePack is prefix-free), with an
	 * offset inside it; the parser agrees with the validator all along */
	all_corrupt = 1;
	for (i = 0; i < b.len; i++) {
		unsigned char *cut = malloc(i ? i : 1); /* exact size: ASan sees overreads */
		memcpy(cut, b.data, i);
		if (parse_all(cut, i, &off, msg, sizeof msg, &foreign) != INSTATE_CORRUPT ||
		    off > i) {
			fprintf(stderr, "  prefix of %lu bytes: not corrupt\n", (unsigned long)i);
			all_corrupt = 0;
		}
		if (!agree(cut, i))
			all_corrupt = 0;
		free(cut);
	}
	CHECK(all_corrupt);

	/* random damage: one to four bytes changed, 20000 times */
	all_corrupt = 1;
	for (i = 0; i < 20000; i++) {
		unsigned char *d = malloc(b.len);
		memcpy(d, b.data, b.len);
		for (j = 0; j < 1 + i % 4; j++) {
			seed = seed * 1103515245u + 12345u;
			d[(seed >> 8) % b.len] = (unsigned char)(seed >> 20);
		}
		if (!agree(d, b.len))
			all_corrupt = 0;
		free(d);
	}
	CHECK(all_corrupt);
	instate_buf_free(&b);
	instate_buf_free(&out);
}

int main(void)
{
	test_scalars();
	test_tables();
	test_writer_errors();
	test_parser();
	test_hostile();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
