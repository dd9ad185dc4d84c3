/*
 * test_mpack.c - the MessagePack writer, reader and validator of the core
 * (src/instate_mpack.h), without Lua.
 */
#include "instate_mpack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
static int check(int ok, const char *what, const char *file, int line)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
	}
	return ok;
}

static void hexdump(const unsigned char *p, size_t n)
{
	size_t i;
	for (i = 0; i < n; i++)
		fprintf(stderr, "%02x ", p[i]);
	fprintf(stderr, "\n");
}

/* The bytes written between buf and end equal the n expected bytes. */
#define CHECK_BYTES(buf, end, exp, n) check_bytes((buf), (end), (const unsigned char *)(exp), (n), __LINE__)
static void check_bytes(const unsigned char *buf, const unsigned char *end,
                        const unsigned char *exp, size_t n, int line)
{
	if ((size_t)(end - buf) == n && memcmp(buf, exp, n) == 0) {
		passed++;
		return;
	}
	failed++;
	fprintf(stderr, "%s:%d: bytes differ\n  got:  ", __FILE__, line);
	hexdump(buf, (size_t)(end - buf));
	fprintf(stderr, "  want: ");
	hexdump(exp, n);
}

static void test_integers(void)
{
	unsigned char b[16];
	CHECK_BYTES(b, instate_mp_put_int(b, 0), "\x00", 1);
	CHECK_BYTES(b, instate_mp_put_int(b, 127), "\x7f", 1);
	CHECK_BYTES(b, instate_mp_put_int(b, 128), "\xcc\x80", 2);
	CHECK_BYTES(b, instate_mp_put_int(b, 255), "\xcc\xff", 2);
	CHECK_BYTES(b, instate_mp_put_int(b, 256), "\xcd\x01\x00", 3);
	CHECK_BYTES(b, instate_mp_put_int(b, 65535), "\xcd\xff\xff", 3);
	CHECK_BYTES(b, instate_mp_put_int(b, 65536), "\xce\x00\x01\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_int(b, 4294967295LL), "\xce\xff\xff\xff\xff", 5);
	CHECK_BYTES(b, instate_mp_put_int(b, 4294967296LL), "\xcf\x00\x00\x00\x01\x00\x00\x00\x00", 9);
	CHECK_BYTES(b, instate_mp_put_int(b, INT64_MAX), "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
	CHECK_BYTES(b, instate_mp_put_int(b, -1), "\xff", 1);
	CHECK_BYTES(b, instate_mp_put_int(b, -32), "\xe0", 1);
	CHECK_BYTES(b, instate_mp_put_int(b, -33), "\xd0\xdf", 2);
	CHECK_BYTES(b, instate_mp_put_int(b, -128), "\xd0\x80", 2);
	CHECK_BYTES(b, instate_mp_put_int(b, -129), "\xd1\xff\x7f", 3);
	CHECK_BYTES(b, instate_mp_put_int(b, -32768), "\xd1\x80\x00", 3);
	CHECK_BYTES(b, instate_mp_put_int(b, -32769), "\xd2\xff\xff\x7f\xff", 5);
	CHECK_BYTES(b, instate_mp_put_int(b, INT32_MIN), "\xd2\x80\x00\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_int(b, (int64_t)INT32_MIN - 1),
	            "\xd3\xff\xff\xff\xff\x7f\xff\xff\xff", 9);
	CHECK_BYTES(b, instate_mp_put_int(b, INT64_MIN), "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
	CHECK_BYTES(b, instate_mp_put_uint(b, UINT64_MAX), "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
}

static void test_floats(void)
{
	unsigned char b[16];
	double nan_payload;
	uint64_t bits = 0x7ff8000000000001ull;

	memcpy(&nan_payload, &bits, 8);
	CHECK_BYTES(b, instate_mp_put_double(b, 1.5), "\xca\x3f\xc0\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, 1.0), "\xca\x3f\x80\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, -0.0), "\xca\x80\x00\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, INFINITY), "\xca\x7f\x80\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, -INFINITY), "\xca\xff\x80\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, 3.4028234663852886e38), "\xca\x7f\x7f\xff\xff", 5);
	CHECK_BYTES(b, instate_mp_put_double(b, 0.1), "\xcb\x3f\xb9\x99\x99\x99\x99\x99\x9a", 9);
	CHECK_BYTES(b, instate_mp_put_double(b, 1e300), "\xcb\x7e\x37\xe4\x3c\x88\x00\x75\x9c", 9);
	CHECK_BYTES(b, instate_mp_put_double(b, 16777217.0), "\xcb\x41\x70\x00\x00\x10\x00\x00\x00", 9);
	CHECK_BYTES(b, instate_mp_put_double(b, nan_payload), "\xcb\x7f\xf8\x00\x00\x00\x00\x00\x01", 9);
}

static void test_headers(void)
{
	unsigned char b[16];
	CHECK_BYTES(b, instate_mp_put_nil(b), "\xc0", 1);
	CHECK_BYTES(b, instate_mp_put_bool(b, 0), "\xc2", 1);
	CHECK_BYTES(b, instate_mp_put_bool(b, 1), "\xc3", 1);
	CHECK_BYTES(b, instate_mp_put_str_header(b, 0), "\xa0", 1);
	CHECK_BYTES(b, instate_mp_put_str_header(b, 31), "\xbf", 1);
	CHECK_BYTES(b, instate_mp_put_str_header(b, 32), "\xd9\x20", 2);
	CHECK_BYTES(b, instate_mp_put_str_header(b, 256), "\xda\x01\x00", 3);
	CHECK_BYTES(b, instate_mp_put_str_header(b, 65536), "\xdb\x00\x01\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_bin_header(b, 0), "\xc4\x00", 2);
	CHECK_BYTES(b, instate_mp_put_bin_header(b, 256), "\xc5\x01\x00", 3);
	CHECK_BYTES(b, instate_mp_put_bin_header(b, 65536), "\xc6\x00\x01\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_array_header(b, 15), "\x9f", 1);
	CHECK_BYTES(b, instate_mp_put_array_header(b, 16), "\xdc\x00\x10", 3);
	CHECK_BYTES(b, instate_mp_put_array_header(b, 65536), "\xdd\x00\x01\x00\x00", 5);
	CHECK_BYTES(b, instate_mp_put_map_header(b, 0), "\x80", 1);
	CHECK_BYTES(b, instate_mp_put_map_header(b, 16), "\xde\x00\x10", 3);
	CHECK_BYTES(b, instate_mp_put_map_header(b, 65536), "\xdf\x00\x01\x00\x00", 5);
	CHECK(instate_mp_map_header_size(15) == 1 && instate_mp_map_header_size(16) == 3 &&
	      instate_mp_map_header_size(65536) == 5);
	CHECK_BYTES(b, instate_mp_put_ext_header(b, 1, 4), "\xd6\x01", 2);
	CHECK_BYTES(b, instate_mp_put_ext_header(b, 1, 16), "\xd8\x01", 2);
	CHECK_BYTES(b, instate_mp_put_ext_header(b, 1, 5), "\xc7\x05\x01", 3);
	CHECK_BYTES(b, instate_mp_put_ext_header(b, -1, 300), "\xc8\x01\x2c\xff", 4);
	CHECK_BYTES(b, instate_mp_put_ext_header(b, 1, 70000), "\xc9\x00\x01\x11\x70\x01", 6);
	CHECK(instate_mp_ext_header_size(4) == 2 && instate_mp_ext_header_size(5) == 3 &&
	      instate_mp_ext_header_size(300) == 4 && instate_mp_ext_header_size(70000) == 6);
	CHECK_BYTES(b, instate_mp_put_ref(b, 0), "\xd4\x02\x00", 3);
	CHECK_BYTES(b, instate_mp_put_ref(b, 301), "\xd5\x02\x01\x2d", 4);
	CHECK_BYTES(b, instate_mp_put_ref(b, 70001), "\xd6\x02\x00\x01\x11\x71", 6);
	CHECK_BYTES(b, instate_mp_put_ref(b, 0x100000000ull),
	            "\xd7\x02\x00\x00\x00\x01\x00\x00\x00\x00", 10);
}

static void test_utf8(void)
{
	static const char *valid[] = {"", "abc", "\0", "h\xc3\xa9llo", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
	                              "\xf4\x8f\xbf\xbf", "\xed\x9f\xbf", "\xee\x80\x80",
	                              "0123456789abcdef\xc3\xa9", NULL};
	static const char *invalid[] = {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80",
	                                "\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
	                                "\xe2\x82", "\xc3", "\xff", "abcdefgh\xff", "01234567abcdefg\x80",
	                                "\xc3\x28", NULL};
	int i;

	for (i = 0; valid[i]; i++)
		CHECK(instate_mp_utf8_valid(valid[i], i == 2 ? 1 : strlen(valid[i])));
	for (i = 0; invalid[i]; i++)
		if (!CHECK(!instate_mp_utf8_valid(invalid[i], strlen(invalid[i]))))
			fprintf(stderr, "  invalid case %d accepted\n", i);
}

static void test_reader(void)
{
	instate_mp_reader r;
	instate_mp_item it;
	static const unsigned char data[] =
		"\x93\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xd0\x80\xd9\x03" "abc" "\xd6\x02\x00\x00\x00\x07";

	memset(&r, 0, sizeof r);
	r.p = data;
	r.n = sizeof data - 1;
	CHECK(instate_mp_read(&r, &it) == 0 && it.type == INSTATE_MP_ARRAY && it.len == 3);
	CHECK(instate_mp_read(&r, &it) == 0 && it.type == INSTATE_MP_UINT && it.v.u == UINT64_MAX);
	CHECK(instate_mp_read(&r, &it) == 0 && it.type == INSTATE_MP_INT && it.v.i == -128);
	CHECK(instate_mp_read(&r, &it) == 0 && it.type == INSTATE_MP_STR && it.len == 3 &&
	      memcmp(it.data, "abc", 3) == 0);
	CHECK(instate_mp_read(&r, &it) == 0 && it.type == INSTATE_MP_EXT && it.ext == 2 && it.len == 4 &&
	      instate_mp_ref_id(&it) == 7);
	CHECK(r.pos == r.n);
	CHECK(instate_mp_read(&r, &it) == INSTATE_CORRUPT);
	CHECK(strstr(r.err, "at byte 23: truncated input") != NULL);
}

/* validate() on n bytes: 0 expected when msg is NULL, else CORRUPT with msg
 * inside the message and the offset off. */
#define VALID(s) expect_validate((const unsigned char *)(s), sizeof(s) - 1, NULL, 0, __LINE__)
#define INVALID(s, off, msg) expect_validate((const unsigned char *)(s), sizeof(s) - 1, (msg), (off), __LINE__)
static void expect_validate(const unsigned char *p, size_t n, const char *msg, size_t off, int line)
{
	char err[INSTATE_ERRMSG_MAX] = "";
	size_t eoff = (size_t)-1;
	int rc = instate_mp_validate(p, n, &eoff, err, sizeof err);

	if (!msg) {
		if (rc == 0) {
			passed++;
		} else {
			failed++;
			fprintf(stderr, "%s:%d: rejected: %s\n", __FILE__, line, err);
		}
		return;
	}
	if (rc == INSTATE_CORRUPT && eoff == off && strstr(err, msg) &&
	    strncmp(err, "corrupt MessagePack at byte ", 28) == 0) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "%s:%d: rc %d offset %lu message '%s'; wanted offset %lu and '%s'\n",
		        __FILE__, line, rc, (unsigned long)eoff, err, (unsigned long)off, msg);
	}
}

static void test_validate(void)
{
	unsigned char deep[256];
	size_t i;

	VALID("\xc0");
	VALID("\x93\x01\xa1x\xc4\x01\xff");
	VALID("\x82\xc3\x01\x91\x01\x90");        /* bool key, table key */
	VALID("\xd6\x01\x91\xd4\x02\x00");        /* a self cycle */
	VALID("\xc7\x05\x01\x92\x80\xd4\x02\x01"); /* shared table */
	/* a graph without a reference: another library's extension type 1 */
	INVALID("\xd4\x01\x01", 0, "graph extension without a reference");
	INVALID("\xc7\x03\x01\x92\x80\x80", 0, "graph extension without a reference");
	INVALID("", 0, "truncated input (a value expected, 0 bytes left)");
	INVALID("\xc1", 0, "invalid byte 0xc1");
	INVALID("\x01\x02", 1, "1 trailing bytes after the value");
	INVALID("\x92\x01", 0, "array of 2 elements needs at least 2 bytes, 1 left");
	INVALID("\x81\x01", 0, "map of 1 pairs needs at least 2 bytes, 1 left");
	INVALID("\x91\xa5" "ab", 1, "truncated str (need 5 bytes, 2 left)");
	INVALID("\xcd\x01", 0, "truncated uint16 (need 2 bytes, 1 left)");
	INVALID("\x81\xc0\x01", 1, "nil map key");
	INVALID("\x81\xca\x7f\xc0\x00\x00\x01", 1, "NaN map key");
	INVALID("\xd6\xff\x00\x00\x00\x00", 0, "unsupported extension type -1");
	INVALID("\xd4\x02\x00", 0, "reference outside a graph extension");
	INVALID("\xd6\x01\x91\xd4\x02\x01", 3, "reference to table 1, but only 1 tables begun");
	INVALID("\xc7\x04\x01\x91\xd4\x01\x00", 4, "graph extension not at the top level");
	INVALID("\xd6\x01\x91\xd4\x02\x00\x00", 6, "1 trailing bytes after the value");
	INVALID("\xc7\x07\x01\x91\xc7\x03\x02\x00\x00\x00", 4, "reference of 3 bytes");
	INVALID("\xdd\xff\xff\xff\xff", 0, "array of 4294967295 elements needs at least 4294967295 bytes, 0 left");
	/* CLASS (ext type 3): a name, then a table, nothing else; names are not looked up */
	VALID("\xc7\x03\x03\xa1V\x80");
	VALID("\xd7\x03\xa1V\x95\x01\x02\x03\x04\x05");   /* fixext 8 */
	VALID("\xc7\x0c\x01\xc7\x09\x03\xa4Vec2\x91\xd4\x02\x00"); /* a cycle through it */
	VALID("\x81\xc7\x03\x03\xa1K\x80\x01");              /* an instance as a key */
	INVALID("\xd4\x03\x01", 0, "class extension without a name (a str of 1..255 bytes)");
	INVALID("\xc7\x02\x03\xa0\x80", 0, "class extension without a name (a str of 1..255 bytes)");
	INVALID("\xc7\x02\x03\xa1V", 0, "class extension without a table after its name");
	INVALID("\xc7\x04\x03\xa1V\x80\x01", 0, "1 bytes left over in a class extension");
	INVALID("\xc7\x04\x03\xa1V\x91\xd4\x02\x00", 6, "truncated fixext (need 1 bytes, 0 left)");
	INVALID("\xc7\x06\x03\xa1V\x91\xd4\x02", 0, "truncated ext (need 6 bytes, 5 left)");
	INVALID("\xc7\x06\x03\xa1V\x91\xd4\x02\x00", 6, "reference outside a graph extension");

	/* depth: 200 levels pass, 201 fail at the 201st header */
	for (i = 0; i < 200; i++)
		deep[i] = 0x91;
	deep[199] = 0x90;
	CHECK(instate_mp_validate(deep, 200, NULL, NULL, 0) == 0);
	deep[199] = 0x91;
	deep[200] = 0x90;
	{
		size_t off = 0;
		char err[128];
		CHECK(instate_mp_validate(deep, 201, &off, err, sizeof err) == INSTATE_CORRUPT);
		CHECK(off == 200 && strstr(err, "tables nested deeper than 200 levels"));
		/* a short err buffer is truncated, never overrun */
		CHECK(instate_mp_validate(deep, 201, NULL, err, 8) == INSTATE_CORRUPT && strlen(err) == 7);
	}
}

/* Every strict prefix of a valid value is corrupt; random bytes never crash. */
static void test_hostile(void)
{
	static const unsigned char good[] =
		"\xc7\x34\x01\x86\xa1x\xca\x3f\xc0\x00\x00\xa1y\xfd\xa4name\xa8item-123"
		"\xa4tags\x93\xa1" "a\xa1" "b\x91\xd4\x02\x01\xa2hp\xcd\x01\x00\xa5" "alive\xc3";
	size_t n = sizeof good - 1, i;
	unsigned char buf[64];
	unsigned seed = 12345;
	int k, bad = 0;

	CHECK(instate_mp_validate(good, n, NULL, NULL, 0) == 0);
	for (i = 0; i < n; i++)
		if (instate_mp_validate(good, i, NULL, NULL, 0) != INSTATE_CORRUPT)
			bad++;
	CHECK(bad == 0);
	for (k = 0; k < 200000; k++) {
		size_t len = (size_t)(seed % sizeof buf), j;
		memcpy(buf, good, len < n ? len : n);
		for (j = 0; j < len; j++) {
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 16) % 4 == 0 || j >= n)
				buf[j] = (unsigned char)(seed >> 8);
		}
		/* a heap copy of exactly len bytes lets ASan catch any over-read */
		{
			unsigned char *h = malloc(len ? len : 1);
			char err[INSTATE_ERRMSG_MAX];
			int rc;
			memcpy(h, buf, len);
			rc = instate_mp_validate(h, len, NULL, err, sizeof err);
			if (rc != 0 && rc != INSTATE_CORRUPT)
				bad++;
			free(h);
		}
		seed = seed * 1103515245u + 12345u;
	}
	CHECK(bad == 0);
}

int main(void)
{
	test_integers();
	test_floats();
	test_headers();
	test_utf8();
	test_reader();
	test_validate();
	test_hostile();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
