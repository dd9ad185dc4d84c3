/*
 * test_dump.c - dump file framing, checksums, caps and load through the C API.
 *
 * The first half builds files by hand (docs/FORMAT.md section 3) to test
 * the reader on exactly the bytes the format describes, including damage
 * whose checksums are recomputed so that the structural checks themselves
 * are reached. The second half runs dump and load on real stores.
 */
#define _DEFAULT_SOURCE /* flock */
#include "instate.h"
#include "instate_dump_int.h"

#include <dirent.h>
#include <errno.h>
#include <lmdb.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

	/* Values are opaque bytes: what is not MessagePack is well formed. */
	body.n = 0;
	sec_start(&body, "a", 1);
	rec(&body, "k1", "\xc1", 1, 0, 0);          /* never used */
	rec(&body, "k2", "\x01\x02", 2, 0, 0);      /* two values */
	rec(&body, "k3", "", 0, 0, 0);              /* none */
	rec(&body, "k4", "\x92\x01", 2, 0, 0);      /* a truncated array */
	sec_end(&body, 4);
	frame(&f, &body, 64, 0, 1, 4);
	CHECK_RC(info_mem(&f, err), 0);

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


/* ===================================================================== */
/* Opaque values, hostile files, the store's own files, stale temps       */

static int values_equal(instate_store *s, const char *ns, const char *key, const void *val,
                        size_t len)
{
	instate_buf v = {0};
	int ok = get(s, ns, key, &v, NULL) == 0 && v.len == len &&
	         (len == 0 || memcmp(v.data, val, len) == 0);
	instate_buf_free(&v);
	return ok;
}

/* The file layer does not depend on the codec: any bytes round-trip. */
static void test_opaque_values(void)
{
	static const struct { const char *key; const char *val; size_t len; } vals[] = {
		{"c1", "\xc1", 1},             /* never used in MessagePack */
		{"empty", "", 0},
		{"nul", "\0\0\0", 3},
		{"trunc", "\x92\x01", 2},      /* an array missing an element */
		{"two", "\x01\x02", 2},        /* two values */
		{"text", "hello, world", 12},
		{"str32", "\xdb\xff\xff\xff\xff", 5},  /* a string longer than the file */
	};
	instate_store *a = open_store("op-a", 0), *b;
	instate_dump_options o;
	instate_dump_info info;
	char err[INSTATE_ERRMSG_MAX], path[128], name[16];
	size_t i, n = sizeof vals / sizeof *vals, blen = 600000;
	unsigned char *big = malloc(blen);
	uint32_t x = 7;
	int level;

	for (i = 0; i < blen; i++) {
		x = x * 1103515245u + 12345u;
		big[i] = (unsigned char)(i % 3 ? x >> 16 : 0xc1);
	}
	for (i = 0; i < n; i++)
		put(a, "raw", INSTATE_NS_KV, vals[i].key, vals[i].val, vals[i].len, 0, 0);
	put(a, "vars", INSTATE_NS_STATE, "big", big, blen, 4102444800000LL, 3);
	snprintf(path, sizeof path, "%s/opaque.dump", tmpdir);
	for (level = 0; level <= 9; level += level ? 8 : 1) {
		instate_dump_options_init(&o);
		o.compression = level;
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK(info.records == n + 1);
		CHECK_RC(instate_dump_info_read(path, NULL, NULL, &info, err), 0);
		CHECK(info.records == n + 1);
		snprintf(name, sizeof name, "op-b%d", level);
		b = open_store(name, 0);
		CHECK_RC(instate_load(b, path, NULL, &info, err), 0);
		CHECK(info.records == n + 1);
		for (i = 0; i < n; i++)
			CHECK(values_equal(b, "raw", vals[i].key, vals[i].val, vals[i].len));
		CHECK(values_equal(b, "vars", "big", big, blen));
		instate_store_close(b);
	}
	free(big);
	instate_store_close(a);
}

/*
 * A hostile file (docs/FORMAT.md 3.5): a section "a" of `nrec` records of
 * `vlen` zero bytes each, then its end; the body cut after `cut` bytes if
 * cut is nonzero (inside a record if it falls there). 1 MiB zstd blocks: a
 * few dozen file bytes per MiB of body. block_off[i] gets the file offset
 * of block i.
 */
static void bomb(struct bytes *f, uint32_t vlen, uint64_t nrec, uint64_t cut,
                 uint64_t *block_off)
{
	static const unsigned char start[4] = {0x53, 1, 1, 'a'};
	const size_t bs = INSTATE_DUMP_BLOCK_MAX;
	const uint64_t rlen = 8 + 8 + (uint64_t)vlen, end_at = 4 + nrec * rlen;
	uint64_t body_len = cut ? cut : end_at + 9, off = 0, r, j;
	unsigned char *raw = malloc(bs), end[9];
	size_t nb = 0;

	end[0] = 0x54;
	for (j = 0; j < 8; j++)
		end[1 + j] = (unsigned char)(nrec >> (56 - 8 * j));
	f->n = 0;
	header(f, INSTATE_DUMP_FORMAT, 0, 1, 1);
	while (off < body_len) {
		size_t n = body_len - off < bs ? (size_t)(body_len - off) : bs;
		memset(raw, 0, n);
		for (j = off; j < 4 && j < off + n; j++)
			raw[j - off] = start[j];
		for (r = off < 4 ? 0 : (off - 4) / rlen; r < nrec && 4 + r * rlen < off + n; r++) {
			unsigned char h[17];  /* snprintf's NUL lands in h[16] */
			uint64_t at = 4 + r * rlen;
			h[0] = 0x52;
			h[1] = 0;
			h[2] = 0;
			h[3] = 8;
			put32(h + 4, vlen);
			snprintf((char *)h + 8, 9, "r%07u", (unsigned)r);
			for (j = 0; j < 16; j++)
				if (at + j >= off && at + j < off + n)
					raw[at + j - off] = h[j];
		}
		for (j = 0; j < 9; j++)
			if (end_at + j >= off && end_at + j < off + n)
				raw[end_at + j - off] = end[j];
		if (block_off)
			block_off[nb] = f->n;
		block(f, raw, n, 1, 0);
		nb++;
		off += n;
	}
	trailer(f, 1, nrec, body_len);
	free(raw);
}

/* What a child process reports of one call. */
struct peak {
	int rc;
	char err[INSTATE_ERRMSG_MAX];
	long grew_kb;        /* VmHWM growth during the call */
	long long wrote;     /* bytes written during the call (/proc/self/io wchar) */
	uint64_t records;    /* records in the store "hostile" after the call */
};

static long long proc_field(const char *file, const char *field)
{
	char line[256];
	long long v = -1;
	size_t n = strlen(field);
	FILE *p = fopen(file, "r");

	if (!p)
		return -1;
	while (fgets(line, sizeof line, p))
		if (strncmp(line, field, n) == 0) {
			v = atoll(line + n);
			break;
		}
	fclose(p);
	return v;
}

struct hostile_call {
	const char *path;
	int load;            /* 1: instate_load into the store "hostile"; 0: dump_info */
	uint64_t max_bytes;
};

/*
 * Run the call in a child process (which opens the store itself: an LMDB
 * environment is not used across fork) and measure its peak memory.
 */
static void in_child(const struct hostile_call *c, struct peak *out)
{
	int fds[2];
	pid_t pid;
	ssize_t k;
	size_t got = 0;

	memset(out, 0, sizeof *out);
	out->rc = -1;
	if (pipe(fds) != 0)
		abort();
	pid = fork();
	if (pid == 0) {
		struct peak p;
		instate_store *s = NULL;
		instate_dump_info info;
		long long hwm0, w0;
		int fd;
		close(fds[0]);
		memset(&p, 0, sizeof p);
		if (c->load)
			s = open_store("hostile", 0);
		/* start the high-water mark from here (Linux >= 4.0) */
		if ((fd = open("/proc/self/clear_refs", O_WRONLY)) >= 0) {
			if (write(fd, "5", 1) != 1)
				p.grew_kb = 0;
			close(fd);
		}
		hwm0 = proc_field("/proc/self/status", "VmHWM:");
		w0 = proc_field("/proc/self/io", "wchar:");
		if (c->load) {
			instate_load_options lo;
			instate_load_options_init(&lo);
			lo.max_bytes = c->max_bytes;
			p.rc = instate_load(s, c->path, &lo, &info, p.err);
		} else {
			p.rc = instate_dump_info_read(c->path, NULL, NULL, &info, p.err);
		}
		p.grew_kb = (long)(proc_field("/proc/self/status", "VmHWM:") - hwm0);
		p.wrote = proc_field("/proc/self/io", "wchar:") - w0;
		if (s) {
			p.records = count(s, "a");
			instate_store_close(s);
		}
		if (write(fds[1], &p, sizeof p) != (ssize_t)sizeof p)
			_exit(2);
		_exit(0);
	}
	close(fds[1]);
	while (got < sizeof *out && (k = read(fds[0], (char *)out + got, sizeof *out - got)) > 0)
		got += (size_t)k;
	close(fds[0]);
	waitpid(pid, NULL, 0);
	CHECK(got == sizeof *out);
}

/*
 * Memory and bytes written are bounded by max_bytes and the block size,
 * whatever the file claims: a body bounded by INSTATE_DUMP_BODY_RATIO times
 * max_bytes, and values that are only checked (never held) by dump_info.
 */
static void test_hostile_files(void)
{
	struct bytes f = {0};
	struct peak p;
	struct hostile_call c;
	uint64_t off[300], limit;
	char path[128], want[64];

	snprintf(path, sizeof path, "%s/bomb.dump", tmpdir);
	c.path = path;

	/* the same file shape, small: valid, and it loads */
	bomb(&f, 512 * 1024, 2, 0, NULL);
	write_file(path, &f);
	c.load = 1;
	c.max_bytes = 1000000;
	in_child(&c, &p);
	CHECK_RC(p.rc, 0);
	CHECK(p.records == 2);

	/* 256 MiB of records of 512 KiB in a file of a few dozen KB */
	bomb(&f, 512 * 1024, 512, 0, off);
	CHECK(f.n < 40000);
	write_file(path, &f);
	in_child(&c, &p);
	CHECK_RC(p.rc, INSTATE_CORRUPT);
	CHECK(strstr(p.err, "max_bytes") != NULL);
	/* found in the block that takes the body past 16 x 1000000 bytes */
	limit = INSTATE_DUMP_BODY_RATIO * c.max_bytes;
	snprintf(want, sizeof want, "at byte %llu:",
	         (unsigned long long)off[limit / INSTATE_DUMP_BLOCK_MAX]);
	if (!strstr(p.err, want)) {
		failures++;
		fprintf(stderr, "%s:%d: \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, p.err, want);
	}
	CHECK(p.grew_kb >= 0 && p.grew_kb < 64 * 1024);
	CHECK(p.wrote >= 0 && p.wrote < 32 << 20);
	CHECK(p.records == 2);  /* what the small file loaded, untouched */
	fprintf(stderr, "a %zu-byte file of a 256 MiB body: load{max_bytes = 1e6} peak grew "
	        "%ld KiB, wrote %lld bytes\n", f.n, p.grew_kb, p.wrote);

	/* one record claiming 4 GiB, cut after 256 MiB */
	bomb(&f, 0xfffffff0u, 1, 256u << 20, off);
	write_file(path, &f);
	c.load = 0;
	in_child(&c, &p);
	CHECK_RC(p.rc, INSTATE_CORRUPT);
	CHECK(strstr(p.err, "ends inside a value") != NULL);
	CHECK(p.grew_kb >= 0 && p.grew_kb < 16 * 1024);
	fprintf(stderr, "a %zu-byte file claiming a 4 GiB value: dump_info peak grew %ld KiB\n",
	        f.n, p.grew_kb);
	c.load = 1;
	in_child(&c, &p);
	CHECK_RC(p.rc, INSTATE_CORRUPT);
	CHECK(strstr(p.err, "at byte 40:") != NULL && strstr(p.err, "max_bytes") != NULL);
	CHECK(p.grew_kb >= 0 && p.grew_kb < 16 * 1024);
	free(f.p);
}

/* A dump made with max_bytes = M loads with max_bytes = M, however well it
 * compresses: the writer bounds the body as the reader does. */
static void test_max_bytes_body(void)
{
	instate_store *a = open_store("mb-a", 0), *b = open_store("mb-b", 0);
	instate_dump_options o;
	instate_load_options lo;
	instate_dump_info info;
	struct bytes f = {0};
	unsigned char *zeros = calloc(1, 100000);
	char err[INSTATE_ERRMSG_MAX], path[128], key[16];
	uint64_t body;
	int i;

	for (i = 0; i < 100; i++) {
		snprintf(key, sizeof key, "z%03d", i);
		put(a, "z", INSTATE_NS_KV, key, zeros, 100000, 0, 0);
	}
	snprintf(path, sizeof path, "%s/mb.dump", tmpdir);
	instate_dump_options_init(&o);
	o.max_bytes = 50000;
	CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
	CHECK(info.bytes <= 50000 && info.dropped > 0 && info.records > 0);
	CHECK_RC(read_file(path, &f), 0);
	body = 0;
	for (i = 0; i < 8; i++)
		body = body << 8 | f.p[f.n - 40 + 20 + i];
	CHECK(body <= INSTATE_DUMP_BODY_RATIO * 50000);
	instate_load_options_init(&lo);
	lo.max_bytes = 50000;
	CHECK_RC(instate_load(b, path, &lo, &info, err), 0);
	CHECK(count(b, "z") == info.records);
	free(f.p);
	free(zeros);
	instate_store_close(a);
	instate_store_close(b);
}

/*
 * A store error is returned as is and never applies the file policy: here
 * another process leaves a damaged namespace entry in the store's __meta,
 * so the store reports CORRUPT for the section's namespace.
 */
static void test_store_error_keeps_file(void)
{
	instate_store *a = open_store("se-a", 0), *b = open_store("se-b", 0);
	instate_load_options lo;
	instate_dump_info info;
	instate_options ro;
	char err[INSTATE_ERRMSG_MAX], path[128], dir[128];
	int status = -1;
	pid_t pid;

	put(a, "a", INSTATE_NS_KV, "k", "\x01", 1, 0, 0);
	snprintf(path, sizeof path, "%s/se.dump", tmpdir);
	CHECK_RC(instate_dump(a, path, NULL, &info, err), 0);
	instate_store_close(a);
	snprintf(dir, sizeof dir, "%s/se-b", tmpdir);
	pid = fork();
	if (pid == 0) {
		MDB_env *env;
		MDB_txn *t;
		MDB_dbi dbi;
		MDB_val k = {4, "ns:a"}, d = {2, "xy"};
		int rc = mdb_env_create(&env);
		if (!rc)
			rc = mdb_env_set_maxdbs(env, 4);
		if (!rc)
			rc = mdb_env_open(env, dir, 0, 0600);
		if (!rc)
			rc = mdb_txn_begin(env, NULL, 0, &t);
		if (!rc)
			rc = mdb_dbi_open(t, "__meta", 0, &dbi);
		if (!rc)
			rc = mdb_put(t, dbi, &k, &d, 0);
		if (!rc)
			rc = mdb_txn_commit(t);
		_exit(rc ? 1 : 0);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	instate_load_options_init(&lo);
	lo.on_corrupt = INSTATE_CORRUPT_DELETE;
	CHECK_RC(instate_load(b, path, &lo, &info, err), INSTATE_CORRUPT);
	CHECK(access(path, F_OK) == 0 && !info.deleted && !info.file_corrupt);
	CHECK(strstr(err, "corrupt dump") == NULL);
	CHECK(strstr(err, "the store failed on namespace \"a\"") != NULL);
	lo.on_corrupt = INSTATE_CORRUPT_IGNORE;
	CHECK_RC(instate_load(b, path, &lo, &info, err), INSTATE_CORRUPT);
	CHECK(!info.file_corrupt);
	instate_store_close(b);

	/* a read-only store: READONLY, the file kept */
	instate_options_init(&ro);
	ro.readonly = 1;
	snprintf(dir, sizeof dir, "%s/se-a", tmpdir);
	CHECK_RC(instate_store_open(dir, &ro, &a), 0);
	lo.on_corrupt = INSTATE_CORRUPT_DELETE;
	CHECK_RC(instate_load(a, path, &lo, &info, err), INSTATE_READONLY);
	CHECK(access(path, F_OK) == 0 && !info.deleted);
	instate_store_close(a);
	/* and a corrupt file still follows the policy, saying so */
	b = open_store("se-c", 0);
	{
		struct bytes g = {0};
		char bad[128];
		snprintf(bad, sizeof bad, "%s/se-bad.dump", tmpdir);
		if (read_file(path, &g) != 0 || g.n < 100)
			abort();
		g.p[g.n / 2] ^= 1;
		write_file(bad, &g);
		CHECK_RC(instate_load(b, bad, &lo, &info, err), INSTATE_CORRUPT);
		CHECK(info.file_corrupt && info.deleted && access(bad, F_OK) != 0);
		free(g.p);
	}
	instate_store_close(b);
}

static int same_file(const char *p, const struct stat *was)
{
	struct stat st;
	return stat(p, &st) == 0 && st.st_ino == was->st_ino && st.st_size == was->st_size &&
	       st.st_mtime == was->st_mtime;
}

static void own_files_of(instate_store *s, const char *data, const char *lock,
                         const char *dump)
{
	instate_load_options lo;
	instate_dump_info info;
	struct stat sd, sl;
	char err[INSTATE_ERRMSG_MAX];
	const char *files[2];
	int i;

	files[0] = data;
	files[1] = lock;
	CHECK(stat(data, &sd) == 0 && stat(lock, &sl) == 0);
	instate_load_options_init(&lo);
	lo.on_corrupt = INSTATE_CORRUPT_DELETE;
	for (i = 0; i < 2; i++) {
		CHECK_RC(instate_load(s, files[i], &lo, &info, err), INSTATE_INVALID);
		CHECK(strstr(err, files[i]) != NULL && strstr(err, "the store's own") != NULL);
		CHECK(!info.deleted);
		CHECK_RC(instate_dump(s, files[i], NULL, &info, err), INSTATE_INVALID);
		CHECK(strstr(err, files[i]) != NULL && strstr(err, "the store's own") != NULL);
	}
	CHECK(same_file(data, &sd) && same_file(lock, &sl));
	/* through a symbolic link, too */
	unlink(dump);
	CHECK(symlink(data, dump) == 0);
	CHECK_RC(instate_load(s, dump, &lo, &info, err), INSTATE_INVALID);
	CHECK_RC(instate_dump(s, dump, NULL, &info, err), INSTATE_INVALID);
	CHECK(same_file(data, &sd));
	unlink(dump);
	CHECK(values_equal(s, "x", "k", "\x01", 1));
	CHECK_RC(instate_dump(s, dump, NULL, &info, err), 0);
	CHECK_RC(instate_load(s, dump, &lo, &info, err), 0);
}

/* load never reads (nor deletes) the store's own files; dump never writes
 * over them. */
/* ---- progress -------------------------------------------------------- */

struct prog {
	uint64_t done[512], total[512];
	int n;
	int stop_at;  /* call number (1-based) that returns stop_rc; 0 = never */
	int stop_rc;
};

static int prog_fn(void *ud, uint64_t done, uint64_t total)
{
	struct prog *p = ud;
	if (p->n < 512) {
		p->done[p->n] = done;
		p->total[p->n] = total;
	}
	p->n++;
	return p->n == p->stop_at ? p->stop_rc : 0;
}

/* Calls are per block, done never decreases, the last is done == total. */
static void check_calls(const struct prog *p, uint64_t total)
{
	int i;
	CHECK(p->n >= 3 && p->n < 512);
	for (i = 0; i < p->n && i < 512; i++) {
		CHECK(p->total[i] == total);
		CHECK(p->done[i] <= p->total[i]);
		if (i)
			CHECK(p->done[i] > p->done[i - 1]);
	}
	CHECK(p->n > 0 && p->done[p->n - 1] == total);
}

static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void test_progress(void)
{
	instate_store *a = open_store("pg-a", 0), *b = open_store("pg-b", 0);
	instate_dump_options o;
	instate_load_options lo;
	instate_dump_info info;
	instate_txn *t;
	instate_ns *ns;
	struct stat was;
	struct prog p;
	char err[INSTATE_ERRMSG_MAX], dir[128], path[160], key[32];
	static unsigned char val[1000];
	static const char *const vars_only[] = {"vars"};
	int i, level;

	/* 2000 records of 1000 bytes: about 8 blocks */
	CHECK_RC(instate_ns_get(a, "kv", 2, INSTATE_NS_KV, &ns), 0);
	CHECK_RC(instate_txn_begin(a, NULL, 0, &t), 0);
	for (i = 0; i < 2000; i++) {
		instate_meta m = {0, 0};
		val[i % 1000] = (unsigned char)i;
		snprintf(key, sizeof key, "k%05d", i);
		CHECK_RC(instate_put(t, ns, key, strlen(key), val, sizeof val, &m, 0), 0);
	}
	CHECK_RC(instate_txn_commit(t), 0);
	put(a, "vars", INSTATE_NS_STATE, "hp", "\x64", 1, 0, 1);
	snprintf(dir, sizeof dir, "%s/pg", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof path, "%s/pg.dump", dir);

	for (level = 0; level <= 1; level++) {
		/* dump: records, the total counted up front */
		memset(&p, 0, sizeof p);
		instate_dump_options_init(&o);
		o.compression = level;
		o.progress = prog_fn;
		o.progress_ud = &p;
		CHECK_RC(instate_dump(a, path, &o, &info, err), 0);
		CHECK(info.records == 2001);
		check_calls(&p, 2001);
		/* load: file bytes, the file size as the total */
		memset(&p, 0, sizeof p);
		instate_load_options_init(&lo);
		lo.progress = prog_fn;
		lo.progress_ud = &p;
		CHECK_RC(instate_load(b, path, &lo, &info, err), 0);
		CHECK(info.records == 2001);
		check_calls(&p, info.bytes);
	}
	CHECK(count(b, "kv") == 2000);

	/* a stop at any call, the last included: the callback's value, the
	 * old file intact, no temporary file left */
	CHECK(stat(path, &was) == 0);
	for (i = 1; i <= 3; i++) {
		memset(&p, 0, sizeof p);
		instate_dump_options_init(&o);
		o.progress = prog_fn;
		o.progress_ud = &p;
		if (i == 3) {
			o.namespaces = vars_only;
			o.n_namespaces = 1;
		}
		p.stop_at = i == 3 ? 1 : i;
		p.stop_rc = i == 2 ? INSTATE_RETRY : 42;
		CHECK_RC(instate_dump(a, path, &o, &info, err), p.stop_rc);
		CHECK(strstr(err, "stopped by the progress callback") != NULL);
		CHECK(strstr(err, path) != NULL);
		CHECK(p.n == p.stop_at);  /* nothing called after the stop */
		if (p.n != p.stop_at)
			fprintf(stderr, "progress: %d calls, stop at %d\n", p.n, p.stop_at);
		CHECK(same_file(path, &was));
		CHECK(dir_entries(dir) == 1);
	}
	/* the load: the store unchanged, the file kept even with DELETE,
	 * no retry after a RETRY */
	{
		instate_store *c = open_store("pg-c", 0);
		uint64_t rev = revision(c);
		put(c, "kv", INSTATE_NS_KV, "k00001", "\x01", 1, 0, 0);
		rev = revision(c);
		for (i = 1; i <= 3; i++) {
			memset(&p, 0, sizeof p);
			instate_load_options_init(&lo);
			lo.progress = prog_fn;
			lo.progress_ud = &p;
			lo.on_corrupt = INSTATE_CORRUPT_DELETE;
			lo.replace = 1;
			p.stop_at = i == 3 ? 1000 : i;
			p.stop_rc = i == 2 ? INSTATE_RETRY : INSTATE_CORRUPT;
			if (i == 3) {
				/* the last call, found by a first full run */
				struct prog q;
				memset(&q, 0, sizeof q);
				lo.progress_ud = &q;
				CHECK_RC(instate_load(b, path, &lo, &info, err), 0);
				p.stop_at = q.n;
				lo.progress_ud = &p;
			}
			CHECK_RC(instate_load(c, path, &lo, &info, err), p.stop_rc);
			CHECK(strstr(err, "stopped by the progress callback") != NULL);
			CHECK(p.n == p.stop_at);
			CHECK(!info.file_corrupt && !info.deleted && access(path, F_OK) == 0);
			CHECK(revision(c) == rev);
			CHECK(count(c, "kv") == 1);
		}
		instate_store_close(c);
	}
	instate_store_close(a);
	instate_store_close(b);
}

static void test_own_files(void)
{
	instate_store *s = open_store("own", 0);
	instate_options o;
	char data[160], lock[200], dump[160], single[160];

	put(s, "x", INSTATE_NS_KV, "k", "\x01", 1, 0, 0);
	snprintf(data, sizeof data, "%s/own/data.mdb", tmpdir);
	snprintf(lock, sizeof lock, "%s/own/lock.mdb", tmpdir);
	snprintf(dump, sizeof dump, "%s/own.dump", tmpdir);
	own_files_of(s, data, lock, dump);
	instate_store_close(s);

	instate_options_init(&o);
	o.single_file = 1;
	o.sync = INSTATE_SYNC_NONE;
	snprintf(single, sizeof single, "%s/single.db", tmpdir);
	CHECK_RC(instate_store_open(single, &o, &s), 0);
	put(s, "x", INSTATE_NS_KV, "k", "\x01", 1, 0, 0);
	snprintf(lock, sizeof lock, "%s-lock", single);
	own_files_of(s, single, lock, dump);
	instate_store_close(s);
}

static int exists(const char *dir, const char *name)
{
	char p[256];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return access(p, F_OK) == 0;
}

static void put_file(const char *dir, const char *name, const void *data, size_t n)
{
	struct bytes b;
	char p[256];
	b.p = (unsigned char *)data;
	b.n = n;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	write_file(p, &b);
}

/*
 * Temporary files left by killed dumps of this target are removed by the
 * next dump; a temporary file a live dump holds (locked), other targets'
 * and users' files are kept.
 */
static void test_stale_temps(void)
{
	instate_store *s = open_store("st-s", 0);
	instate_dump_info info;
	struct bytes whole = {0};
	char err[INSTATE_ERRMSG_MAX], dir[128], path[160], live[200];
	int fd, n;
	DIR *d;
	struct dirent *de;

	snprintf(dir, sizeof dir, "%s/st", tmpdir);
	mkdir(dir, 0700);
	snprintf(path, sizeof path, "%s/x.dump", dir);
	put(s, "x", INSTATE_NS_KV, "k", "\x01", 1, 0, 0);
	CHECK_RC(instate_dump(s, path, NULL, &info, err), 0);
	CHECK_RC(read_file(path, &whole), 0);
	put_file(dir, "x.dump.tmp-Ab12Cd", whole.p, 50);        /* killed mid-write */
	put_file(dir, "x.dump.tmp-000000", "", 0);               /* killed at once */
	put_file(dir, "x.dump.tmp-q9Zz0a", whole.p, whole.n);    /* killed before rename */
	put_file(dir, "x.dump.Zz9Yy8", whole.p, 60);             /* an older version's */
	put_file(dir, "x.dump.backup", whole.p, whole.n);        /* a user's copy */
	put_file(dir, "x.dump.tmp-notes1", "my notes", 8);       /* not a dump */
	put_file(dir, "y.dump.tmp-Ab12Cd", whole.p, 50);         /* another target's */
	put_file(dir, "x.dump.tmp-Ab12C", whole.p, 50);          /* not the pattern */
	put_file(dir, "x.dump.tmp-LiveOn", whole.p, 50);         /* a live dump's */
	snprintf(live, sizeof live, "%s/x.dump.tmp-LiveOn", dir);
	fd = open(live, O_RDWR);
	CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);

	CHECK_RC(instate_dump(s, path, NULL, &info, err), 0);
	CHECK(!exists(dir, "x.dump.tmp-Ab12Cd"));
	CHECK(!exists(dir, "x.dump.tmp-000000"));
	CHECK(!exists(dir, "x.dump.tmp-q9Zz0a"));
	CHECK(!exists(dir, "x.dump.Zz9Yy8"));
	CHECK(exists(dir, "x.dump.backup"));
	CHECK(exists(dir, "x.dump.tmp-notes1"));
	CHECK(exists(dir, "y.dump.tmp-Ab12Cd"));
	CHECK(exists(dir, "x.dump.tmp-Ab12C"));
	CHECK(exists(dir, "x.dump.tmp-LiveOn"));
	CHECK(exists(dir, "x.dump"));
	close(fd);
	CHECK_RC(instate_dump(s, path, NULL, &info, err), 0);
	CHECK(!exists(dir, "x.dump.tmp-LiveOn"));
	/* what remains: the dump and the files that are not its temporaries */
	n = 0;
	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL)
			n += de->d_name[0] != '.';
		closedir(d);
	}
	CHECK(n == 5);
	free(whole.p);
	instate_store_close(s);
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
	test_opaque_values();
	test_hostile_files();
	test_max_bytes_body();
	test_store_error_keeps_file();
	test_own_files();
	test_progress();
	test_stale_temps();
	rm_rf(tmpdir);

	printf("%d checks, %d failures\n", checks, failures);
	return failures ? 1 : 0;
}
