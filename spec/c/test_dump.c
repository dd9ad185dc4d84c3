/*
 * test_dump.c - dump file framing, checksums, caps and load through the C API.
 *
 * The first half builds files by hand (docs/FORMAT.md section 3) to test
 * the reader on exactly the bytes the format describes, including damage
 * whose checksums are recomputed so that the structural checks themselves
 * are reached. The second half runs dump and load on real stores.
 */
#include "instate.h"
#include "instate_dump_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

static int failures, checks;

#define CHECK(cond) check((cond), #cond, __FILE__, __LINE__)
#define CHECK_RC(got, want) check_rc((got), (want), #got, __FILE__, __LINE__)

static void check(int ok, const char *what, const char *file, int line)
{
	checks++;
	if (!ok) {
		failures++;
		fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
	}
}

static void check_rc(int got, int want, const char *what, const char *file, int line)
{
	checks++;
	if (got != want) {
		failures++;
		fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", file, line, what,
		        got, instate_strerror(got), want, instate_strerror(want));
	}
}

/* ===================================================================== */
/* A hand-made file builder                                              */

struct bytes {
	unsigned char *p;
	size_t n, cap;
};

static void b_add(struct bytes *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void b_u8(struct bytes *b, unsigned v)
{
	unsigned char c = (unsigned char)v;
	b_add(b, &c, 1);
}

static void b_be(struct bytes *b, uint64_t v, int width)
{
	unsigned char t[8];
	int i;
	for (i = 0; i < width; i++)
		t[i] = (unsigned char)(v >> (8 * (width - 1 - i)));
	b_add(b, t, (size_t)width);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static const unsigned char MAGIC[8] = {0x89, 'I', 'S', 'D', '\r', '\n', 0x1a, '\n'};

static void header(struct bytes *f, uint32_t format, uint32_t flags, uint64_t rev,
                   int64_t created)
{
	size_t at = f->n;
	b_add(f, MAGIC, 8);
	b_be(f, format, 4);
	b_be(f, instate_crc32c(0, f->p + at, 12), 4);
	b_be(f, flags, 4);
	b_be(f, rev, 8);
	b_be(f, (uint64_t)created, 8);
	b_be(f, instate_crc32c(0, f->p + at + 16, 20), 4);
}

/* One block carrying body bytes p[0..n) with the given codec. */
static void block(struct bytes *f, const unsigned char *p, size_t n, int codec,
                  uint32_t raw_len_field)
{
	unsigned char h[16];
	unsigned char *z = NULL;
	size_t stored = n;
	const unsigned char *data = p;

	if (codec == 1) {
		z = malloc(ZSTD_compressBound(n));
		stored = ZSTD_compress(z, ZSTD_compressBound(n), p, n, 3);
		data = z;
	}
	h[0] = 0x42;
	h[1] = (unsigned char)codec;
	h[2] = h[3] = 0;
	put32(h + 4, raw_len_field ? raw_len_field : (uint32_t)n);
	put32(h + 8, (uint32_t)stored);
	put32(h + 12, instate_crc32c(instate_crc32c(0, h, 12), data, stored));
	b_add(f, h, 16);
	b_add(f, data, stored);
	free(z);
}

static void trailer(struct bytes *f, uint64_t sections, uint64_t records, uint64_t body)
{
	b_u8(f, 0x45);
	b_u8(f, 0); b_u8(f, 0); b_u8(f, 0);
	b_be(f, sections, 8);
	b_be(f, records, 8);
	b_be(f, body, 8);
	b_be(f, f->n + 8 + 4, 8);
	b_be(f, instate_crc32c(0, f->p, f->n), 4);
}

/* Frame `body` into blocks of `bs` bytes between a header and a trailer. */
static void frame(struct bytes *f, const struct bytes *body, size_t bs, int codec,
                  uint64_t sections, uint64_t records)
{
	size_t off;
	f->n = 0;
	header(f, INSTATE_DUMP_FORMAT, 0, 42, 1700000000000LL);
	for (off = 0; off < body->n; off += bs)
		block(f, body->p + off, body->n - off < bs ? body->n - off : bs, codec, 0);
	trailer(f, sections, records, body->n);
}

static void sec_start(struct bytes *b, const char *name, int type)
{
	b_u8(b, 0x53);
	b_u8(b, (unsigned)type);
	b_u8(b, (unsigned)strlen(name));
	b_add(b, name, strlen(name));
}

static void sec_end(struct bytes *b, uint64_t n)
{
	b_u8(b, 0x54);
	b_be(b, n, 8);
}

static void rec(struct bytes *b, const char *key, const void *val, size_t vlen,
                int64_t exp, uint32_t version)
{
	b_u8(b, 0x52);
	b_u8(b, (exp ? 1u : 0u) | (version ? 2u : 0u));
	b_be(b, strlen(key), 2);
	b_be(b, vlen, 4);
	if (exp)
		b_be(b, (uint64_t)exp, 8);
	if (version)
		b_be(b, version, 4);
	b_add(b, key, strlen(key));
	b_add(b, val, vlen);
}

/* The small body used below: "a" (kv, 2 records), "b" (state, empty). */
static void small_body(struct bytes *b)
{
	b->n = 0;
	sec_start(b, "a", 1);
	rec(b, "k1", "\x01", 1, 0, 0);
	rec(b, "k2", "\xa3" "abc", 4, 4102444800000LL, 7);
	sec_end(b, 2);
	sec_start(b, "b", 2);
	sec_end(b, 0);
}

struct seen {
	char names[8][8];
	int types[8];
	uint64_t records[8];
	int n;
};

static int seen_fn(void *ud, const char *name, size_t len, instate_ns_type type,
                   uint64_t records)
{
	struct seen *s = ud;
	if (s->n < 8 && len < 8) {
		memcpy(s->names[s->n], name, len);
		s->names[s->n][len] = '\0';
		s->types[s->n] = type;
		s->records[s->n] = records;
	}
	s->n++;
	return 0;
}

static int info_mem(const struct bytes *f, char *err)
{
	instate_dump_info info;
	return instate_dump_info_mem(f->p, f->n, NULL, NULL, &info, err);
}

/* ===================================================================== */

static void test_crc32c(void)
{
	static const char *v = "123456789";
	unsigned char buf[64];
	uint32_t whole, parts;
	size_t i, k;

	CHECK(instate_crc32c(0, v, 9) == 0xE3069283u);
	memset(buf, 0, 32);
	CHECK(instate_crc32c(0, buf, 32) == 0x8A9136AAu);
	memset(buf, 0xff, 32);
	CHECK(instate_crc32c(0, buf, 32) == 0x62A8AB43u);
	for (i = 0; i < 32; i++)
		buf[i] = (unsigned char)i;
	CHECK(instate_crc32c(0, buf, 32) == 0x46DD794Eu);
	/* Any split and any alignment give the same result. */
	for (i = 0; i < 64; i++)
		buf[i] = (unsigned char)(i * 37 + 11);
	whole = instate_crc32c(0, buf + 1, 63);
	for (k = 0; k <= 63; k++) {
		parts = instate_crc32c(instate_crc32c(0, buf + 1, k), buf + 1 + k, 63 - k);
		CHECK(parts == whole);
		/* and combining the CRCs of the two parts gives it too */
		CHECK(instate_crc32c_combine(instate_crc32c(0, buf + 1, k),
		                             instate_crc32c(0, buf + 1 + k, 63 - k), 63 - k) == whole);
	}
	CHECK(instate_crc32c_portable(0, v, 9) == 0xE3069283u);
}

/*
 * Where the CPU has SSE4.2, instate_crc32c() takes the crc32 instruction;
 * it must agree with the portable tables at every alignment and length,
 * on large buffers, and when continued across calls. Elsewhere both are
 * the same code and this still checks the portable path against itself.
 */
static void test_crc32c_paths(void)
{
	size_t n = 3u << 20, len, al, k;
	unsigned char *buf = malloc(n + 8);
	uint32_t x = 2463534242u, a, b, sum = 0;
	int agree = 1;

	for (k = 0; k < n + 8; k++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		buf[k] = (unsigned char)x;
	}
	printf("crc32c: %s\n", instate_crc32c_hardware() ? "SSE4.2" : "portable");
	for (al = 0; al < 8; al++)
		for (len = 0; len <= 300; len++) {
			a = instate_crc32c(0, buf + al, len);
			b = instate_crc32c_portable(0, buf + al, len);
			agree &= a == b;
			sum ^= a;
		}
	CHECK(agree);
	a = instate_crc32c(0, buf + 3, n);
	CHECK(a == instate_crc32c_portable(0, buf + 3, n));
	CHECK(a == instate_crc32c(instate_crc32c(0, buf + 3, 1000001), buf + 3 + 1000001,
	                          n - 1000001));
	/* the combine across lengths with many bits set, and with nothing */
	CHECK(instate_crc32c_combine(instate_crc32c(0, buf + 3, n - 1048575),
	                             instate_crc32c(0, buf + 3 + n - 1048575, 1048575),
	                             1048575) == a);
	CHECK(instate_crc32c_combine(a, 0, 0) == a);
	CHECK(instate_crc32c_combine(0, a, n) == a);  /* nothing before */
	CHECK(sum != 0);
	free(buf);
}

/* docs/FORMAT.md 3.2: option n is zstd level n, 0 is raw. */
static void test_levels(void)
{
	int i;
	for (i = 0; i <= 9; i++)
		CHECK(instate_dump_zstd_level(i) == i);
	CHECK(instate_dump_zstd_level(-1) == 0);
	CHECK(instate_dump_zstd_level(10) == 0);
}

static void test_framing(void)
{
	struct bytes body = {0}, f = {0};
	struct seen s;
	instate_dump_info info;
	char err[INSTATE_ERRMSG_MAX];
	size_t bs;

	small_body(&body);
	/* Items span blocks of any size, down to one byte. */
	for (bs = 1; bs <= body.n; bs++) {
		frame(&f, &body, bs, 0, 2, 2);
		memset(&s, 0, sizeof s);
		CHECK_RC(instate_dump_info_mem(f.p, f.n, seen_fn, &s, &info, err), 0);
		CHECK(s.n == 2 && strcmp(s.names[0], "a") == 0 && strcmp(s.names[1], "b") == 0);
		CHECK(s.types[0] == INSTATE_NS_KV && s.types[1] == INSTATE_NS_STATE);
		CHECK(s.records[0] == 2 && s.records[1] == 0);
		CHECK(info.sections == 2 && info.records == 2 && info.revision == 42);
		CHECK(info.created_ms == 1700000000000LL && info.format == INSTATE_DUMP_FORMAT);
		CHECK(info.bytes == f.n);
	}

	/* An empty body: header and trailer only. */
	body.n = 0;
	frame(&f, &body, 16, 0, 0, 0);
	CHECK(f.n == INSTATE_DUMP_HEADER_SIZE + INSTATE_DUMP_TRAILER_SIZE);
	CHECK_RC(instate_dump_info_mem(f.p, f.n, NULL, NULL, &info, err), 0);
	CHECK(info.sections == 0 && info.records == 0);

	/* zstd blocks: a compressible body of many records. */
	{
		int i;
		char key[16];
		body.n = 0;
		sec_start(&body, "z", 1);
		for (i = 0; i < 3000; i++) {
			snprintf(key, sizeof key, "key%06d", i);
			rec(&body, key, "\xa5" "hello", 6, 0, 0);
		}
		sec_end(&body, 3000);
		frame(&f, &body, 65536, 1, 1, 3000);
		CHECK(f.n < body.n / 4);
		CHECK_RC(instate_dump_info_mem(f.p, f.n, NULL, NULL, &info, err), 0);
		CHECK(info.records == 3000);
	}
	free(body.p);
	free(f.p);
}

/* Damage with recomputed checksums: the structural checks themselves. */
static void test_structure(void)
{
	struct bytes body = {0}, f = {0};
	char err[INSTATE_ERRMSG_MAX];

#define EXPECT_CORRUPT(what) do { \
		CHECK_RC(info_mem(&f, err), INSTATE_CORRUPT); \
		CHECK(strstr(err, "at byte ") != NULL); \
		if (!strstr(err, what)) { failures++; \
			fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, \
			        __LINE__, err, what); } \
	} while (0)

	/* Newer format with an intact prefix: VERSION, not corruption. */
	f.n = 0;
	header(&f, INSTATE_DUMP_FORMAT + 1, 0, 1, 1);
	CHECK_RC(info_mem(&f, err), INSTATE_VERSION);
	CHECK(strstr(err, "format version 2") != NULL);
	f.n = 0;
	header(&f, 0, 0, 1, 1);
	trailer(&f, 0, 0, 0);
	EXPECT_CORRUPT("format version 0");
	f.n = 0;
	header(&f, 1, 2, 1, 1);
	trailer(&f, 0, 0, 0);
	EXPECT_CORRUPT("flags");

	/* Block lengths. */
	small_body(&body);
	f.n = 0;
	header(&f, 1, 0, 1, 1);
	block(&f, body.p, body.n, 0, INSTATE_DUMP_BLOCK_MAX + 1);
	trailer(&f, 2, 2, body.n);
	EXPECT_CORRUPT("bad block length");
	f.n = 0;
	header(&f, 1, 0, 1, 1);
	block(&f, body.p, body.n, 0, (uint32_t)body.n + 1);  /* raw stored != raw_len */
	trailer(&f, 2, 2, body.n);
	EXPECT_CORRUPT("stored length");
	f.n = 0;
	header(&f, 1, 0, 1, 1);
	block(&f, body.p, body.n, 1, 0);  /* zstd not smaller than raw */
	trailer(&f, 2, 2, body.n);
	EXPECT_CORRUPT("stored length");
	f.n = 0;
	header(&f, 1, 0, 1, 1);
	{
		/* A zstd frame that decompresses to fewer bytes than raw_len. */
		unsigned char big[4096];
		memset(big, 'x', sizeof big);
		block(&f, big, sizeof big, 1, sizeof big + 1);
	}
	trailer(&f, 0, 0, 4097);
	EXPECT_CORRUPT("decompress");

	/* Body items. */
	body.n = 0;
	sec_start(&body, "b", 1);
	sec_end(&body, 0);
	sec_start(&body, "a", 1);
	sec_end(&body, 0);
	frame(&f, &body, 64, 0, 2, 0);
	EXPECT_CORRUPT("out of order");

	body.n = 0;
	sec_start(&body, "a", 1);
	sec_end(&body, 0);
	sec_start(&body, "a", 1);
	sec_end(&body, 0);
	frame(&f, &body, 64, 0, 2, 0);
	EXPECT_CORRUPT("out of order");

	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k2", "\x01", 1, 0, 0);
	rec(&body, "k1", "\x01", 1, 0, 0);
	sec_end(&body, 2);
	frame(&f, &body, 64, 0, 1, 2);
	EXPECT_CORRUPT("keys out of order");

	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k", "\xc1", 1, 0, 0);
	sec_end(&body, 1);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("malformed value");

	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k", "\x01\x02", 2, 0, 0);  /* two values */
	sec_end(&body, 1);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("malformed value");

	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k", "", 0, 0, 0);
	sec_end(&body, 1);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("malformed value");

	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k", "\x01", 1, 0, 0);
	sec_end(&body, 2);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("claims 2 records");

	body.n = 0;
	sec_start(&body, "a", 3);
	sec_end(&body, 0);
	frame(&f, &body, 64, 0, 1, 0);
	EXPECT_CORRUPT("section type");

	body.n = 0;
	sec_start(&body, "__meta", 1);
	sec_end(&body, 0);
	frame(&f, &body, 64, 0, 1, 0);
	EXPECT_CORRUPT("invalid section name");

	body.n = 0;
	sec_start(&body, "a", 1);
	b_u8(&body, 0x52);
	b_u8(&body, 4);  /* unknown record flag */
	b_be(&body, 1, 2);
	b_be(&body, 1, 4);
	b_add(&body, "k\x01", 2);
	sec_end(&body, 1);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("record flags");

	body.n = 0;
	sec_start(&body, "a", 1);
	b_u8(&body, 0x52);
	b_u8(&body, 0);
	b_be(&body, 0, 2);  /* empty key */
	b_be(&body, 1, 4);
	b_add(&body, "\x01", 1);
	sec_end(&body, 1);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("key length");

	body.n = 0;
	sec_start(&body, "a", 1);
	b_u8(&body, 0x52);
	b_u8(&body, 0);
	b_be(&body, 1, 2);
	b_be(&body, 0xffffffffu, 4);  /* a value longer than the file */
	b_add(&body, "k\x01", 2);
	frame(&f, &body, 64, 0, 1, 1);
	EXPECT_CORRUPT("ends inside a value");

	body.n = 0;
	sec_start(&body, "a", 1);  /* no section end */
	frame(&f, &body, 64, 0, 1, 0);
	EXPECT_CORRUPT("ends inside a section");

	small_body(&body);
	frame(&f, &body, 64, 0, 3, 2);  /* trailer counts */
	EXPECT_CORRUPT("trailer counts");

	frame(&f, &body, 64, 0, 2, 2);
	b_u8(&f, 0);  /* a byte after the trailer */
	EXPECT_CORRUPT("after the trailer");

	free(body.p);
	free(f.p);
}

/* Every single-byte change and every truncation is corruption. */
static void test_every_byte(void)
{
	struct bytes body = {0}, f = {0};
	char err[INSTATE_ERRMSG_MAX];
	size_t i, n, bad = 0;
	static const unsigned char flips[] = {0x01, 0x80, 0xff};
	int k;

	small_body(&body);
	frame(&f, &body, 20, 0, 2, 2);
	CHECK_RC(info_mem(&f, err), 0);
	n = f.n;
	for (i = 0; i < n; i++) {
		for (k = 0; k < 3; k++) {
			f.p[i] ^= flips[k];
			if (info_mem(&f, err) != INSTATE_CORRUPT) {
				if (bad++ < 5)
					fprintf(stderr, "byte %zu ^ 0x%02x not detected\n", i, flips[k]);
			}
			f.p[i] ^= flips[k];
		}
	}
	for (f.n = 0; f.n < n; f.n++)
		if (info_mem(&f, err) != INSTATE_CORRUPT && bad++ < 10)
			fprintf(stderr, "truncation to %zu bytes not detected\n", f.n);
	CHECK(bad == 0);
	free(body.p);
	free(f.p);
}

/* ===================================================================== */
/* Through a store                                                        */

static char tmpdir[64];

static void rm_rf(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", path);
}

static instate_store *open_store(const char *name, uint64_t map_size)
{
	char path[128];
	instate_options o;
	instate_store *s = NULL;

	instate_options_init(&o);
	o.sync = INSTATE_SYNC_NONE;
	if (map_size)
		o.map_size = map_size;
	snprintf(path, sizeof path, "%s/%s", tmpdir, name);
	CHECK_RC(instate_store_open(path, &o, &s), 0);
	return s;
}

static void put(instate_store *s, const char *ns_name, instate_ns_type type, const char *key,
                const void *val, size_t vlen, int64_t exp, uint32_t version)
{
	instate_txn *t;
	instate_ns *ns;
	instate_meta m;
	m.expires_ms = exp;
	m.version = version;
	CHECK_RC(instate_ns_get(s, ns_name, strlen(ns_name), type, &ns), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, key, strlen(key), val, vlen, &m, 0), 0);
	CHECK_RC(instate_txn_commit(t), 0);
}

static int get(instate_store *s, const char *ns_name, const char *key, instate_buf *val,
               instate_meta *m)
{
	instate_txn *t;
	instate_ns *ns;
	int rc;
	if ((rc = instate_ns_get(s, ns_name, strlen(ns_name), INSTATE_NS_ANY, &ns)) != 0)
		return rc;
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	rc = instate_get(t, ns, key, strlen(key), val, m);
	instate_txn_abort(t);
	return rc;
}

static uint64_t count(instate_store *s, const char *ns_name)
{
	instate_txn *t;
	instate_ns *ns;
	uint64_t n = 0;
	if (instate_ns_get(s, ns_name, strlen(ns_name), INSTATE_NS_ANY, &ns) != 0)
		return 0;
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_count(t, ns, &n), 0);
	instate_txn_abort(t);
	return n;
}

static uint64_t revision(instate_store *s)
{
	uint64_t r = 0;
	CHECK_RC(instate_store_revision(s, &r), 0);
	return r;
}

static int read_file(const char *path, struct bytes *b)
{
	unsigned char buf[4096];
	ssize_t k;
	int fd = open(path, O_RDONLY);
	b->n = 0;
	if (fd < 0)
		return errno;
	while ((k = read(fd, buf, sizeof buf)) > 0)
		b_add(b, buf, (size_t)k);
	close(fd);
	return 0;
}

static void write_file(const char *path, const struct bytes *b)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, b->p, b->n) != (ssize_t)b->n)
		abort();
	close(fd);
}

static void test_roundtrip(void)
{
	instate_store *a = open_store("rt-a", 0), *b;
	instate_dump_options o;
	instate_dump_info info;
	instate_buf v = {0};
	instate_meta m;
	char err[INSTATE_ERRMSG_MAX], path[128], name[16];
	int level;
	struct seen s;

	put(a, "kv", INSTATE_NS_KV, "one", "\x01", 1, 0, 0);
	put(a, "kv", INSTATE_NS_KV, "two", "\xa3" "two", 4, 4102444800000LL, 9);
	put(a, "vars", INSTATE_NS_STATE, "hp", "\x64", 1, 0, 3);
	snprintf(path, sizeof path, "%s/rt.dump", tmpdir);
	for (level = 0; level <= 9; level++) {
		instate_dump_options_init(&o);
		o.compression = level;
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK(info.records == 3 && info.sections == 2 && info.dropped == 0);
		CHECK(info.revision == revision(a));
		memset(&s, 0, sizeof s);
		CHECK_RC(instate_dump_info_read(path, seen_fn, &s, &info, err), 0);
		CHECK(s.n == 2 && strcmp(s.names[0], "kv") == 0 && s.types[1] == INSTATE_NS_STATE);
		snprintf(name, sizeof name, "rt-b%d", level);
		b = open_store(name, 0);
		CHECK_RC(instate_load(b, path, NULL, &info, err), 0);
		CHECK(info.records == 3 && info.sections == 2 && info.expired == 0);
		CHECK_RC(get(b, "kv", "two", &v, &m), 0);
		CHECK(v.len == 4 && memcmp(v.data, "\xa3two", 4) == 0);
		CHECK(m.expires_ms == 4102444800000LL && m.version == 9);
		CHECK_RC(get(b, "vars", "hp", &v, &m), 0);
		CHECK(m.version == 3 && m.expires_ms == 0);
		/* the loaded store's revision is at least the dump's */
		CHECK(revision(b) >= revision(a));
		instate_store_close(b);
	}
	/* compression out of range */
	instate_dump_options_init(&o);
	o.compression = 10;
	CHECK_RC(instate_dump(a, path, &o, &info, err), INSTATE_INVALID);
	o.compression = -1;
	CHECK_RC(instate_dump(a, path, &o, &info, err), INSTATE_INVALID);
	instate_buf_free(&v);
	instate_store_close(a);
}

/*
 * Option n is zstd level n in the file itself: each zstd block's stored
 * bytes are exactly what zstd makes of its raw bytes at that level.
 */
static void test_level_in_file(void)
{
	instate_store *a = open_store("lv", 0);
	instate_txn *t;
	instate_ns *ns;
	instate_dump_options o;
	instate_dump_info info;
	struct bytes f = {0};
	char err[INSTATE_ERRMSG_MAX], path[128], key[32], val[64];
	static const int levels[] = {1, 3, 9};
	size_t i, at;
	int li;

	CHECK_RC(instate_ns_get(a, "lv", 2, INSTATE_NS_KV, &ns), 0);
	CHECK_RC(instate_txn_begin(a, NULL, 0, &t), 0);
	for (i = 0; i < 30000; i++) {
		int n = snprintf(key, sizeof key, "entity:%06zu", i);
		int m = snprintf(val + 1, sizeof val - 1, "item-%zu hp %zu", i, (i * 2654435761u) % 101);
		val[0] = (char)(0xa0 | m);  /* a MessagePack fixstr */
		CHECK_RC(instate_put(t, ns, key, (size_t)n, val, (size_t)m + 1, NULL, 0), 0);
	}
	CHECK_RC(instate_txn_commit(t), 0);
	snprintf(path, sizeof path, "%s/lv.dump", tmpdir);
	for (li = 0; li < 3; li++) {
		size_t blocks = 0;
		instate_dump_options_init(&o);
		o.compression = levels[li];
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK_RC(read_file(path, &f), 0);
		for (at = INSTATE_DUMP_HEADER_SIZE; at + INSTATE_DUMP_BLOCK_HEADER_SIZE < f.n &&
		     f.p[at] == 0x42;) {
			const unsigned char *h = f.p + at;
			size_t raw_len = (size_t)h[4] << 24 | (size_t)h[5] << 16 | (size_t)h[6] << 8 | h[7];
			size_t stored = (size_t)h[8] << 24 | (size_t)h[9] << 16 | (size_t)h[10] << 8 | h[11];
			unsigned char *raw = malloc(raw_len), *z = malloc(ZSTD_compressBound(raw_len));
			size_t zn;
			CHECK(h[1] == 1);
			CHECK(ZSTD_decompress(raw, raw_len, h + 16, stored) == raw_len);
			zn = ZSTD_compress(z, ZSTD_compressBound(raw_len), raw, raw_len, levels[li]);
			CHECK(zn == stored && memcmp(z, h + 16, stored) == 0);
			free(raw);
			free(z);
			at += INSTATE_DUMP_BLOCK_HEADER_SIZE + stored;
			blocks++;
		}
		CHECK(blocks >= 2);  /* more than one block, so reuse of the context is covered */
		CHECK(at + INSTATE_DUMP_TRAILER_SIZE == f.n);
	}
	free(f.p);
	instate_store_close(a);
}

static void test_corrupt_store_untouched(void)
{
	instate_store *a = open_store("cu-a", 0), *b = open_store("cu-b", 0);
	instate_dump_options o;
	instate_load_options lo;
	instate_dump_info info;
	struct bytes f = {0};
	char err[INSTATE_ERRMSG_MAX], path[128], bad[128];
	uint64_t rev;
	size_t i, n, missed = 0;

	put(a, "x", INSTATE_NS_KV, "k1", "\x01", 1, 0, 0);
	put(a, "x", INSTATE_NS_KV, "k2", "\x02", 1, 4102444800000LL, 2);
	put(b, "x", INSTATE_NS_KV, "mine", "\x03", 1, 0, 0);
	snprintf(path, sizeof path, "%s/cu.dump", tmpdir);
	snprintf(bad, sizeof bad, "%s/cu-bad.dump", tmpdir);
	instate_dump_options_init(&o);
	o.compression = 0;
	CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
	CHECK_RC(read_file(path, &f), 0);
	n = f.n;
	rev = revision(b);
	instate_load_options_init(&lo);
	lo.replace = 1;
	for (i = 0; i < n; i++) {
		f.p[i] ^= 0x10;
		write_file(bad, &f);
		if (instate_load(b, bad, &lo, &info, err) != INSTATE_CORRUPT && missed++ < 5)
			fprintf(stderr, "load: byte %zu not detected\n", i);
		f.p[i] ^= 0x10;
	}
	for (f.n = 0; f.n < n; f.n++) {
		write_file(bad, &f);
		if (instate_load(b, bad, &lo, &info, err) != INSTATE_CORRUPT && missed++ < 10)
			fprintf(stderr, "load: truncation to %zu not detected\n", f.n);
	}
	CHECK(missed == 0);
	CHECK(revision(b) == rev);
	CHECK(count(b, "x") == 1);

	/* delete policy removes the file; ignore keeps it */
	f.n = n;
	f.p[n / 2] ^= 1;
	write_file(bad, &f);
	lo.on_corrupt = INSTATE_CORRUPT_IGNORE;
	CHECK_RC(instate_load(b, bad, &lo, &info, err), INSTATE_CORRUPT);
	CHECK(access(bad, F_OK) == 0 && !info.deleted);
	lo.on_corrupt = INSTATE_CORRUPT_DELETE;
	CHECK_RC(instate_load(b, bad, &lo, &info, err), INSTATE_CORRUPT);
	CHECK(access(bad, F_OK) != 0 && info.deleted);
	/* a missing file: NOTFOUND, not deleted, policy not consulted */
	CHECK_RC(instate_load(b, bad, &lo, &info, err), INSTATE_NOTFOUND);
	CHECK(!info.deleted);
	CHECK_RC(instate_dump_info_read(bad, NULL, NULL, &info, err), INSTATE_NOTFOUND);
	/* max_bytes */
	instate_load_options_init(&lo);
	lo.max_bytes = n - 1;
	CHECK_RC(instate_load(b, path, &lo, &info, err), INSTATE_CORRUPT);
	CHECK(strstr(err, "max_bytes") != NULL);
	lo.max_bytes = n;
	CHECK_RC(instate_load(b, path, &lo, &info, err), 0);
	CHECK(count(b, "x") == 3);
	CHECK(revision(b) == rev + 1 || revision(b) >= revision(a));
	free(f.p);
	instate_store_close(a);
	instate_store_close(b);
}

static void test_expiry_and_type(void)
{
	instate_store *a = open_store("ex-a", 0), *b = open_store("ex-b", 0);
	instate_dump_info info;
	instate_load_options lo;
	char err[INSTATE_ERRMSG_MAX], path[128];
	int64_t t0 = 1800000000000LL;
	uint64_t rev;

	instate_clock_set(t0);
	put(a, "x", INSTATE_NS_KV, "short", "\x01", 1, t0 + 1000, 0);
	put(a, "x", INSTATE_NS_KV, "long", "\x02", 1, t0 + 100000, 0);
	put(a, "x", INSTATE_NS_KV, "never", "\x03", 1, 0, 0);
	snprintf(path, sizeof path, "%s/ex.dump", tmpdir);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	CHECK(info.records == 3 && info.created_ms == t0);
	instate_clock_set(t0 + 5000);
	CHECK_RC(instate_load(b, path, NULL, &info, err), 0);
	CHECK(info.records == 2 && info.expired == 1);
	CHECK(count(b, "x") == 2);
	/* a dump skips records already expired */
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	CHECK(info.records == 2);
	instate_clock_set(0);

	/* a section whose type clashes with the namespace: corrupt, untouched */
	put(b, "y", INSTATE_NS_STATE, "k", "\x01", 1, 0, 0);
	put(a, "y", INSTATE_NS_KV, "k", "\x02", 1, 0, 0);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	rev = revision(b);
	CHECK_RC(instate_load(b, path, NULL, &info, err), INSTATE_CORRUPT);
	CHECK(strstr(err, "type") != NULL);
	CHECK(revision(b) == rev);
	/* ... unless that section is not selected */
	{
		const char *names[] = {"x"};
		instate_load_options_init(&lo);
		lo.namespaces = names;
		lo.n_namespaces = 1;
		CHECK_RC(instate_load(b, path, &lo, &info, err), 0);
		CHECK(info.sections == 1);
	}
	instate_store_close(a);
	instate_store_close(b);
}

static void test_busy(void)
{
	instate_store *a = open_store("busy", 0);
	instate_txn *t;
	instate_dump_info info;
	char err[INSTATE_ERRMSG_MAX], path[128];

	snprintf(path, sizeof path, "%s/busy.dump", tmpdir);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	CHECK_RC(instate_txn_begin(a, NULL, 0, &t), 0);
	CHECK_RC(instate_load(a, path, NULL, &info, err), INSTATE_BUSY);
	instate_txn_abort(t);
	CHECK_RC(instate_load(a, path, NULL, &info, err), 0);
	instate_store_close(a);
}

/* A load that outgrows the map reruns from the start of the file. */
static void test_map_growth(void)
{
	instate_store *a = open_store("grow-a", 0), *b = open_store("grow-b", 256 * 1024);
	instate_dump_info info;
	char err[INSTATE_ERRMSG_MAX], path[128], key[16];
	unsigned char *val = calloc(1, 60005);
	int i;

	/* bin32 of zeros: compresses to almost nothing, so the file is tiny
	 * and the reserve made from its size is not enough. */
	val[0] = 0xc6;
	val[1] = 0; val[2] = 0; val[3] = 0xea; val[4] = 0x60;
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "k%04d", i);
		put(a, "big", INSTATE_NS_KV, key, val, 60005, 0, 0);
	}
	snprintf(path, sizeof path, "%s/grow.dump", tmpdir);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	CHECK(info.bytes < 200000);
	CHECK_RC(instate_load(b, path, NULL, &info, err), 0);
	CHECK(info.records == 200);
	CHECK(count(b, "big") == 200);
	free(val);
	instate_store_close(a);
	instate_store_close(b);
}

static void test_caps(void)
{
	instate_store *a = open_store("caps", 0);
	instate_dump_options o;
	instate_dump_info info;
	struct stat st;
	char err[INSTATE_ERRMSG_MAX], path[128], key[16];
	unsigned char val[1100];
	int i, level;

	/* records of key 4 bytes + values 11..1011 bytes (bin8/bin16); the
	 * first half of each value is noise, the rest compresses well */
	uint32_t x = 12345;
	memset(val, 'v', sizeof val);
	for (i = 1; i <= 100; i++) {
		int j;
		for (j = 3; j < (i * 10) / 2; j++) {
			x = x * 1103515245u + 12345u;
			val[j] = (unsigned char)(x >> 16);
		}
		size_t vlen = (size_t)i * 10 + 1;
		snprintf(key, sizeof key, "k%03d", i);
		if (vlen - 2 < 256) {
			val[0] = 0xc4;
			val[1] = (unsigned char)(vlen - 2);
		} else {
			vlen += 1;
			val[0] = 0xc5;
			val[1] = (unsigned char)((vlen - 3) >> 8);
			val[2] = (unsigned char)(vlen - 3);
		}
		put(a, "c", INSTATE_NS_KV, key, val, vlen, 0, 0);
	}
	snprintf(path, sizeof path, "%s/caps.dump", tmpdir);

	instate_dump_options_init(&o);
	o.max_record_bytes = 4 + 502;  /* keeps k001..k050 */
	CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
	CHECK(info.records == 50 && info.dropped == 50);

	instate_dump_options_init(&o);
	o.max_records_per_section = 7;
	CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
	CHECK(info.records == 7 && info.dropped == 93);

	{
		uint64_t kept_raw = 0;
	for (level = 0; level <= 9; level += 9) {
		instate_dump_options_init(&o);
		o.compression = level;
		o.max_bytes = 20000;
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == info.bytes);
		CHECK(info.bytes <= 20000);
		CHECK(info.records + info.dropped == 100 && info.dropped > 0);
		if (level == 0) {
			/* raw: the largest are left out, and the next one would not fit */
			uint64_t k = info.records + 1, vlen = k * 10 + 1;
			if (vlen - 2 >= 256)
				vlen++;
			CHECK(info.bytes + 8 + 4 + vlen > 20000);
			kept_raw = info.records;
		} else {
			/* the measured compression ratio lets more records in */
			CHECK(info.records > kept_raw);
		}
	}
	}
	/* compressible enough to fit whole: nothing is left out */
	instate_dump_options_init(&o);
	o.compression = 9;
	o.max_bytes = 45000;
	CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
	CHECK(info.dropped == 0 && info.bytes <= 45000);
	/* dropped are the largest: the kept set is a prefix by size */
	{
		instate_store *b = open_store("caps-b", 0);
		instate_buf v = {0};
		int kept = 0, gap = 0;
		instate_dump_options_init(&o);
		o.compression = 0;
		o.max_bytes = 30000;
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK_RC(instate_load(b, path, NULL, &info, err), 0);
		for (i = 1; i <= 100; i++) {
			snprintf(key, sizeof key, "k%03d", i);
			if (get(b, "c", key, &v, NULL) == 0) {
				kept++;
				if (gap)
					CHECK(!"a smaller record was dropped before a larger one");
			} else
				gap = 1;
		}
		CHECK(kept == (int)info.records && kept > 10 && kept < 100);
		instate_buf_free(&v);
		instate_store_close(b);
	}
	/* even an empty dump is too large */
	instate_dump_options_init(&o);
	o.max_bytes = 60;
	CHECK_RC(instate_dump(a, path, &o, &info, err), INSTATE_LIMIT);
	instate_store_close(a);
}

static void test_failed_dump_leaves_old_file(void)
{
	instate_store *a = open_store("fd", 0);
	instate_dump_info info;
	struct bytes before = {0}, after = {0};
	char err[INSTATE_ERRMSG_MAX], dir[128], path[160], cmd[200];
	FILE *p;
	int entries;

	snprintf(dir, sizeof dir, "%s/ro", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof path, "%s/x.dump", dir);
	put(a, "x", INSTATE_NS_KV, "k", "\x01", 1, 0, 0);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	CHECK_RC(read_file(path, &before), 0);
	put(a, "x", INSTATE_NS_KV, "k2", "\x02", 1, 0, 0);
	chmod(dir, 0500);
	if (access(dir, W_OK) == 0) {
		fprintf(stderr, "(running as root: read-only directory case skipped)\n");
	} else {
		CHECK(instate_dump(a, path, NULL, &info, err) == EACCES);
		CHECK(strstr(err, "temporary") != NULL);
	}
	chmod(dir, 0700);
	CHECK_RC(read_file(path, &after), 0);
	CHECK(after.n == before.n && memcmp(after.p, before.p, before.n) == 0);
	snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	CHECK(p && fscanf(p, "%d", &entries) == 1 && entries == 1);
	if (p)
		pclose(p);
	/* A write failing half way (file size limit): EFBIG, old file intact,
	 * no temporary file left. Works as root too. */
	{
		struct rlimit old, lim;
		unsigned char big[3000];
		int i;
		char key[16];
		for (i = 0; i < (int)sizeof big; i++)
			big[i] = (unsigned char)(i * 7919 >> 3);
		big[0] = 0xc5; big[1] = (sizeof big - 3) >> 8; big[2] = (sizeof big - 3) & 0xff;
		for (i = 0; i < 200; i++) {
			snprintf(key, sizeof key, "big%03d", i);
			put(a, "x", INSTATE_NS_KV, key, big, sizeof big, 0, 0);
		}
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &old);
		lim = old;
		lim.rlim_cur = 100000;
		CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
		instate_dump_options o;
		instate_dump_options_init(&o);
		o.compression = 0;  /* 600 KB of records against a 100 KB limit */
		CHECK(instate_dump(a, path, &o, &info, err) == EFBIG);
		setrlimit(RLIMIT_FSIZE, &old);
		signal(SIGXFSZ, SIG_DFL);
		CHECK_RC(read_file(path, &after), 0);
		CHECK(after.n == before.n && memcmp(after.p, before.p, before.n) == 0);
		p = popen(cmd, "r");
		CHECK(p && fscanf(p, "%d", &entries) == 1 && entries == 1);
		if (p)
			pclose(p);
	}
	snprintf(path, sizeof path, "%s/missing/x.dump", tmpdir);
	CHECK(instate_dump(a, path, NULL, &info, err) == ENOENT);
	free(before.p);
	free(after.p);
	instate_store_close(a);
}

int main(void)
{
	char templ[] = "/tmp/instate-test-dump.XXXXXX";

	test_crc32c();
	test_crc32c_paths();
	test_levels();
	test_framing();
	test_structure();
	test_every_byte();

	if (!mkdtemp(templ)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tmpdir, sizeof tmpdir, "%s", templ);
	test_roundtrip();
	test_level_in_file();
	test_corrupt_store_untouched();
	test_expiry_and_type();
	test_busy();
	test_map_growth();
	test_caps();
	test_failed_dump_leaves_old_file();
	rm_rf(tmpdir);

	printf("%d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}
