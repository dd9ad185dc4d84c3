/*
 * test_records.c - the record layer of the store core: record checksums on
 * every read path, bogus header lengths, the upgrade of a format-1 store
 * written by hand with raw LMDB, namespace entries of __meta with a bad
 * type byte, and instate_store_check(). Records are damaged with raw LMDB
 * while no instate handle is open (one LMDB environment per file per
 * process).
 */
#include "instate.h"
#include "check.h"
#include "instate_dump_int.h" /* instate_crc32c(), to write records by hand */
#include "instate_store_int.h" /* instate__crc32c_record() */

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static instate_store *open_store(const char *name, int readonly)
{
	instate_options o;
	instate_store *s = NULL;
	int rc;

	instate_options_init(&o);
	o.readonly = readonly;
	o.map_size = 1 << 20;
	o.sync = INSTATE_SYNC_NONE; /* many small commits; durability is not tested here */
	rc = instate_store_open(tpath(name), &o, &s);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", name, instate_strerror(rc));
		exit(2);
	}
	return s;
}

static int get1(instate_store *s, instate_ns *ns, const char *k, instate_buf *v,
                instate_meta *m)
{
	instate_txn *t;
	int rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t);
	if (rc)
		return rc;
	rc = instate_get(t, ns, k, strlen(k), v, m);
	instate_txn_abort(t);
	return rc;
}

/* ---- raw LMDB ------------------------------------------------------- */

static MDB_env *raw_open(const char *name, size_t mapsize)
{
	MDB_env *env;

	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
	    (mapsize && mdb_env_set_mapsize(env, mapsize)) ||
	    mdb_env_open(env, tpath(name), MDB_NOSYNC, 0600)) {
		fprintf(stderr, "raw open %s failed\n", name);
		exit(2);
	}
	return env;
}

static void raw_put(MDB_env *env, const char *db, const void *key, size_t klen,
                    const void *val, size_t vlen)
{
	MDB_txn *t;
	MDB_dbi dbi;
	MDB_val k = { klen, (void *)key }, d = { vlen, (void *)val };

	CHECK(mdb_txn_begin(env, NULL, 0, &t) == 0);
	CHECK(mdb_dbi_open(t, db, MDB_CREATE, &dbi) == 0);
	CHECK(mdb_put(t, dbi, &k, &d, 0) == 0);
	CHECK(mdb_txn_commit(t) == 0);
}

/* Copy of a raw record's bytes (n set); NULL if absent. */
static unsigned char *raw_get(MDB_env *env, const char *db, const char *key, size_t *n)
{
	MDB_txn *t;
	MDB_dbi dbi;
	MDB_val k = { strlen(key), (void *)key }, d;
	unsigned char *p = NULL;

	CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &t) == 0);
	if (mdb_dbi_open(t, db, 0, &dbi) == 0 && mdb_get(t, dbi, &k, &d) == 0) {
		p = malloc(d.mv_size + 1);
		memcpy(p, d.mv_data, d.mv_size);
		*n = d.mv_size;
	}
	mdb_txn_abort(t);
	return p;
}

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void be64(unsigned char *p, uint64_t v)
{
	be32(p, (uint32_t)(v >> 32));
	be32(p + 4, (uint32_t)v);
}

/* The record checksum: CRC-32C of the key, the flags byte and bytes 5.. */
static uint32_t rec_crc(const char *key, const unsigned char *p, size_t n)
{
	uint32_t c = instate_crc32c(0, key, strlen(key));

	return instate_crc32c(instate_crc32c(c, p, 1), p + 5, n - 5);
}

/* Change one record in a closed store: flip byte `at` (xor mask), or with
 * mask 0 replace it with the n bytes at repl. */
static void damage(const char *store, const char *db, const char *key, size_t at,
                   unsigned char mask, const void *repl, size_t rn)
{
	MDB_env *env = raw_open(store, 0);
	size_t n;
	unsigned char *p = raw_get(env, db, key, &n);

	CHECK(p != NULL);
	if (p) {
		if (mask) {
			CHECK(at < n);
			p[at] ^= mask;
			raw_put(env, db, key, strlen(key), p, n);
		} else {
			raw_put(env, db, key, strlen(key), repl, rn);
		}
	}
	free(p);
	mdb_env_close(env);
}

/* ---- checksum mismatch on every read path ---------------------------- */

struct report {
	int n;
	char ns[4][32];
	char key[4][32];
};

static int on_bad(void *ud, const char *ns, size_t nslen, const void *key, size_t klen)
{
	struct report *r = ud;

	if (r->n < 4) {
		snprintf(r->ns[r->n], 32, "%.*s", (int)nslen, ns);
		snprintf(r->key[r->n], 32, "%.*s", key ? (int)klen : 6, key ? (const char *)key : "(none)");
	}
	r->n++;
	return 0;
}

static void test_read_paths(void)
{
	instate_store *s;
	instate_ns *ns;
	instate_txn *t;
	instate_cursor *c;
	instate_buf k = { 0 }, v = { 0 };
	instate_meta m = { 123, 456 };
	instate_check_info info;
	struct report rep = { 0 };
	uint64_t n;
	const char *keys[] = { "a", "b", "c", "d", "e" };
	int i;

	s = open_store("paths", 0);
	ns = ns_of(s, "n");
	for (i = 0; i < 5; i++)
		CHECK_RC(put_record(s, ns, keys[i], "value!", 0, 0), 0);
	instate_store_close(s);
	/* one bit of the payload of "c": same length, wrong checksum */
	damage("paths", "n", "c", 7, 0x01, NULL, 0);

	s = open_store("paths", 0);
	ns = ns_of(s, "n");
	v.len = 0;
	CHECK_RC(get1(s, ns, "c", &v, &m), INSTATE_CORRUPT);
	CHECK(v.len == 0 && m.expires_ms == 123 && m.version == 456); /* untouched */
	CHECK_RC(get1(s, ns, "b", &v, NULL), 0);
	CHECK(v.len == 6 && memcmp(v.data, "value!", 6) == 0);

	/* cursor: the damaged key is reported, and the walk goes on past it */
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_cursor_open(t, ns, NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), 0);
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), 0);
	v.len = 0;
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), INSTATE_CORRUPT);
	CHECK(k.len == 1 && k.data[0] == 'c' && v.len == 0);
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), 0);
	CHECK(k.len == 1 && k.data[0] == 'd');
	instate_cursor_close(c);
	CHECK_RC(instate_count(t, ns, &n), INSTATE_CORRUPT);
	/* with a prefix that excludes it: fine */
	CHECK_RC(instate_cursor_open(t, ns, "d", 1, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), 0);
	CHECK_RC(instate_cursor_next(c, &k, &v, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	instate_txn_abort(t);

	/* writes that need the old record refuse it; the txn stays usable */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, "c", 1, "x", 1, NULL, INSTATE_NOOVERWRITE), INSTATE_CORRUPT);
	CHECK_RC(instate_put(t, ns, "c", 1, "x", 1, NULL, INSTATE_KEEPEXPIRY), INSTATE_CORRUPT);
	CHECK_RC(instate_put(t, ns, "c", 1, "x", 1, NULL,
	                     INSTATE_KEEPEXPIRY | INSTATE_IFCHANGED), INSTATE_CORRUPT);
	CHECK_RC(instate_set_expiry(t, ns, "c", 1, 5), INSTATE_CORRUPT);
	CHECK_RC(instate_purge(t, &n), INSTATE_CORRUPT);
	CHECK_RC(instate_put(t, ns, "z", 1, "new", 3, NULL, 0), 0);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(get1(s, ns, "z", &v, NULL), 0);
	CHECK_RC(get1(s, ns, "c", &v, NULL), INSTATE_CORRUPT);

	/* the check names it */
	CHECK_RC(instate_store_check(s, on_bad, &rep, &info), 0);
	CHECK(info.namespaces == 1 && info.records == 6 && info.corrupt == 1);
	CHECK(rep.n == 1 && strcmp(rep.ns[0], "n") == 0 && strcmp(rep.key[0], "c") == 0);

	/* IFCHANGED alone overwrites it (a damaged record is not an equal one) */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, "c", 1, "fixed", 5, NULL, INSTATE_IFCHANGED), 0);
	CHECK_RC(instate_put(t, ns, "c", 1, "fixed", 5, NULL, INSTATE_IFCHANGED), INSTATE_EXISTS);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(get1(s, ns, "c", &v, NULL), 0);
	CHECK(v.len == 5 && memcmp(v.data, "fixed", 5) == 0);
	instate_store_close(s);

	/* delete gets rid of a damaged record; clear counts one as removed */
	damage("paths", "n", "a", 6, 0x80, NULL, 0);
	damage("paths", "n", "b", 6, 0x80, NULL, 0);
	s = open_store("paths", 0);
	ns = ns_of(s, "n");
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_del(t, ns, "a", 1), 0);
	CHECK_RC(instate_get(t, ns, "a", 1, &v, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_clear(t, ns, &n), 0);
	CHECK(n == 5); /* b (damaged), c, d, e, z */
	CHECK_RC(instate_txn_commit(t), 0);
	rep.n = 0;
	CHECK_RC(instate_store_check(s, on_bad, &rep, &info), 0);
	CHECK(info.records == 0 && info.corrupt == 0 && rep.n == 0);
	instate_store_close(s);
	instate_buf_free(&k);
	instate_buf_free(&v);
}

/* ---- bogus header lengths and flags ---------------------------------- */

static void test_bad_headers(void)
{
	instate_store *s;
	instate_ns *ns;
	instate_buf v = { 0 };
	unsigned char r[32];
	size_t n, i;
	struct { const char *what; unsigned char bytes[16]; size_t n; } bad[] = {
		{ "empty", { 0 }, 0 },
		{ "checksum cut", { 0x04, 0, 0 }, 3 },
		{ "expiry cut", { 0x05, 0, 0, 0, 0, 1, 2, 3 }, 8 },
		{ "version cut", { 0x06, 0, 0, 0, 0, 1, 2 }, 7 },
		{ "unknown flag", { 0x0c, 0, 0, 0, 0, 'x' }, 6 },
		{ "no checksum (format 2)", { 0x00, 'h', 'i' }, 3 },
	};

	s = open_store("hdr", 0);
	ns = ns_of(s, "n");
	CHECK_RC(put_record(s, ns, "ok", "fine", 0, 0), 0);
	instate_store_close(s);
	for (i = 0; i < sizeof bad / sizeof *bad; i++) {
		char key[8];
		MDB_env *env = raw_open("hdr", 0);
		snprintf(key, sizeof key, "k%zu", i);
		memcpy(r, bad[i].bytes, bad[i].n);
		/* a right checksum where there is room for one: only the lengths
		 * are wrong */
		if (bad[i].n >= 5 && (r[0] & 0x04))
			be32(r + 1, rec_crc(key, r, bad[i].n));
		raw_put(env, "n", key, strlen(key), r, bad[i].n);
		mdb_env_close(env);
		s = open_store("hdr", 0);
		ns = ns_of(s, "n");
		v.len = 0;
		if (get1(s, ns, key, &v, NULL) != INSTATE_CORRUPT) {
			failed++;
			fprintf(stderr, "%s:%d: header '%s' not corrupt\n", __FILE__, __LINE__, bad[i].what);
		} else {
			passed++;
		}
		CHECK(v.len == 0);
		CHECK_RC(get1(s, ns, "ok", &v, NULL), 0);
		instate_store_close(s);
	}

	/* a sound record under another key: the checksum covers the key */
	{
		MDB_env *env = raw_open("hdr", 0);
		unsigned char *p = raw_get(env, "n", "ok", &n);
		CHECK(p != NULL);
		if (p)
			raw_put(env, "n", "oj", 2, p, n);
		free(p);
		mdb_env_close(env);
		s = open_store("hdr", 0);
		CHECK_RC(get1(s, ns_of(s, "n"), "oj", &v, NULL), INSTATE_CORRUPT);
		CHECK_RC(get1(s, ns_of(s, "n"), "ok", &v, NULL), 0);
		instate_store_close(s);
	}

	/* flag flips in a sound record: the checksum covers the flags */
	s = open_store("hdr", 0);
	ns = ns_of(s, "n");
	CHECK_RC(put_record(s, ns, "f", "payload bytes", 1LL << 50, 9), 0);
	instate_store_close(s);
	for (i = 0; i < 8; i++) {
		damage("hdr", "n", "f", 0, (unsigned char)(1u << i), NULL, 0);
		s = open_store("hdr", 0);
		CHECK_RC(get1(s, ns_of(s, "n"), "f", &v, NULL), INSTATE_CORRUPT);
		instate_store_close(s);
		damage("hdr", "n", "f", 0, (unsigned char)(1u << i), NULL, 0);
	}
	s = open_store("hdr", 0);
	CHECK_RC(get1(s, ns_of(s, "n"), "f", &v, NULL), 0);
	CHECK(v.len == 13);
	instate_store_close(s);
	/* every byte of the record, one bit at a time */
	{
		MDB_env *env = raw_open("hdr", 0);
		unsigned char *p = raw_get(env, "n", "f", &n);
		mdb_env_close(env);
		free(p);
	}
	for (i = 0; i < n; i++) {
		damage("hdr", "n", "f", i, 0x10, NULL, 0);
		s = open_store("hdr", 0);
		CHECK_RC(get1(s, ns_of(s, "n"), "f", &v, NULL), INSTATE_CORRUPT);
		instate_store_close(s);
		damage("hdr", "n", "f", i, 0x10, NULL, 0);
	}
	instate_buf_free(&v);
}

/* ---- format 1, written by hand --------------------------------------- */

/* A format-1 store: __meta, namespace "a" (kv) and "s" (state), records
 * with the one-byte header of format 1. */
static void write_format1(const char *name, size_t mapsize, int bulk)
{
	MDB_env *env;
	unsigned char v[5], r[64], *big;
	size_t i;

	if (access(tpath(name), F_OK) != 0) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "mkdir -p %s", tpath(name));
		CHECK(system(cmd) == 0);
	}
	env = raw_open(name, mapsize);
	be32(v, 1);
	raw_put(env, "__meta", "format", 6, v, 4);
	be64(r, 5);
	raw_put(env, "__meta", "revision", 8, r, 8);
	be32(v, 2);
	raw_put(env, "__meta", "nsid", 4, v, 4);
	be32(v, 1); v[4] = 1;
	raw_put(env, "__meta", "ns:a", 4, v, 5);
	be32(v, 2); v[4] = 2;
	raw_put(env, "__meta", "ns:s", 4, v, 5);
	/* "k1": no expiry, no version */
	r[0] = 0x00; memcpy(r + 1, "hello", 5);
	raw_put(env, "a", "k1", 2, r, 6);
	/* "k2": expiry far ahead */
	r[0] = 0x01; be64(r + 1, (uint64_t)1 << 50); memcpy(r + 9, "v2", 2);
	raw_put(env, "a", "k2", 2, r, 11);
	/* "k3": expiry and version */
	r[0] = 0x03; be64(r + 1, (uint64_t)1 << 50); be32(r + 9, 7); memcpy(r + 13, "v3", 2);
	raw_put(env, "a", "k3", 2, r, 15);
	/* "k4": version, empty payload */
	r[0] = 0x02; be32(r + 1, 9);
	raw_put(env, "a", "k4", 2, r, 5);
	/* "k5": expired */
	r[0] = 0x01; be64(r + 1, 1000); memcpy(r + 9, "old", 3);
	raw_put(env, "a", "k5", 2, r, 12);
	/* "kbad": damaged already under format 1 (expiry cut short) */
	r[0] = 0x01; r[1] = 0;
	raw_put(env, "a", "kbad", 4, r, 2);
	/* a big one, on overflow pages */
	big = malloc(20001);
	big[0] = 0;
	memset(big + 1, 'B', 20000);
	raw_put(env, "s", "big", 3, big, 20001);
	for (i = 0; bulk && i < (size_t)bulk; i++) {
		char key[16];
		snprintf(key, sizeof key, "bulk%05zu", i);
		memset(big + 1, 'a' + (int)(i % 26), 200);
		raw_put(env, "s", key, strlen(key), big, 201);
	}
	free(big);
	mdb_env_close(env);
}

static void read_format1(instate_store *s, int upgraded)
{
	instate_ns *a = ns_of(s, "a"), *st;
	instate_buf v = { 0 };
	instate_meta m;
	instate_txn *t;
	uint64_t rev, n;

	CHECK_RC(get1(s, a, "k1", &v, &m), 0);
	CHECK(v.len == 5 && memcmp(v.data, "hello", 5) == 0 && m.expires_ms == 0 && m.version == 0);
	CHECK_RC(get1(s, a, "k2", &v, &m), 0);
	CHECK(v.len == 2 && memcmp(v.data, "v2", 2) == 0 && m.expires_ms == (int64_t)1 << 50);
	CHECK_RC(get1(s, a, "k3", &v, &m), 0);
	CHECK(v.len == 2 && m.expires_ms == (int64_t)1 << 50 && m.version == 7);
	CHECK_RC(get1(s, a, "k4", &v, &m), 0);
	CHECK(v.len == 0 && m.version == 9);
	CHECK_RC(get1(s, a, "k5", &v, &m), INSTATE_NOTFOUND);
	CHECK_RC(get1(s, a, "kbad", &v, &m), INSTATE_CORRUPT);
	CHECK_RC(instate_ns_get(s, "s", 1, INSTATE_NS_STATE, &st), 0);
	CHECK_RC(get1(s, st, "big", &v, NULL), 0);
	CHECK(v.len == 20000 && v.data[0] == 'B' && v.data[19999] == 'B');
	CHECK_RC(instate_store_revision(s, &rev), 0);
	/* the upgrade is not a write of the user's: the revision stays */
	CHECK(rev == 5);
	(void)upgraded;
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_count(t, a, &n), INSTATE_CORRUPT); /* kbad */
	instate_txn_abort(t);
	instate_buf_free(&v);
}

static void test_format1(void)
{
	instate_store *s;
	instate_ns *a;
	instate_check_info info;
	struct report rep = { 0 };
	MDB_env *env;
	size_t n;
	unsigned char *p;
	const char *keys[] = { "k1", "k2", "k3", "k4", "k5" };
	int i;

	write_format1("f1", 1 << 20, 0);

	/* read-only: reads as it is, nothing rewritten */
	s = open_store("f1", 1);
	read_format1(s, 0);
	CHECK_RC(instate_store_check(s, on_bad, &rep, &info), 0);
	CHECK(info.namespaces == 2 && info.records == 7 && info.corrupt == 1 && rep.n == 1);
	CHECK(strcmp(rep.ns[0], "a") == 0 && strcmp(rep.key[0], "kbad") == 0);
	instate_store_close(s);
	env = raw_open("f1", 0);
	p = raw_get(env, "__meta", "format", &n);
	CHECK(p && n == 4 && get_be32(p) == 1);
	free(p);
	p = raw_get(env, "a", "k1", &n);
	CHECK(p && n == 6 && p[0] == 0);
	free(p);
	mdb_env_close(env);

	/* read-write: upgraded at open, every record with a checksum */
	s = open_store("f1", 0);
	read_format1(s, 1);
	instate_store_close(s);
	env = raw_open("f1", 0);
	p = raw_get(env, "__meta", "format", &n);
	CHECK(p && n == 4 && get_be32(p) == 2);
	free(p);
	for (i = 0; i < 5; i++) {
		p = raw_get(env, "a", keys[i], &n);
		CHECK(p && n >= 5 && (p[0] & 0x04) && get_be32(p + 1) == rec_crc(keys[i], p, n));
		free(p);
	}
	p = raw_get(env, "a", "k3", &n);
	CHECK(p && n == 19 && p[0] == 0x07 && memcmp(p + 17, "v3", 2) == 0);
	free(p);
	p = raw_get(env, "s", "big", &n);
	CHECK(p && n == 20005 && p[0] == 0x04 && get_be32(p + 1) == rec_crc("big", p, n));
	free(p);
	p = raw_get(env, "a", "kbad", &n);
	CHECK(p && n == 2 && p[0] == 0x01); /* left as it was: still corrupt */
	free(p);
	mdb_env_close(env);

	/* and reads and writes on as format 2 */
	s = open_store("f1", 0);
	read_format1(s, 1);
	a = ns_of(s, "a");
	CHECK_RC(put_record(s, a, "k1", "again", 0, 0), 0);
	rep.n = 0;
	CHECK_RC(instate_store_check(s, on_bad, &rep, &info), 0);
	CHECK(info.records == 7 && info.corrupt == 1 && rep.n == 1);
	instate_store_close(s);
}

/* The upgrade rewrites every record: it grows a full map as it goes. */
static void test_format1_growth(void)
{
	instate_store *s;
	instate_options o;
	instate_stats st;
	instate_buf v = { 0 };
	MDB_env *env;
	unsigned char *p;
	size_t n;

	write_format1("f1grow", 1 << 20, 2000); /* ~ 0.6 MB in a 1 MiB map */
	instate_options_init(&o);
	o.map_size = 1 << 20;
	o.max_size = 1 << 20;
	CHECK_RC(instate_store_open(tpath("f1grow"), &o, &s), INSTATE_MAP_FULL);
	o.max_size = 64 << 20;
	CHECK_RC(instate_store_open(tpath("f1grow"), &o, &s), 0);
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size > (1 << 20));
	CHECK_RC(get1(s, ns_of(s, "s"), "bulk01999", &v, NULL), 0);
	CHECK(v.len == 200);
	instate_store_close(s);
	env = raw_open("f1grow", 0);
	p = raw_get(env, "s", "bulk00000", &n);
	CHECK(p && n == 205 && p[0] == 0x04 && get_be32(p + 1) == rec_crc("bulk00000", p, n));
	free(p);
	mdb_env_close(env);
	instate_buf_free(&v);
}

/* ---- namespace entries ----------------------------------------------- */

static int count_ns(void *ud, const char *name, size_t len, instate_ns_type type)
{
	(void)name; (void)len; (void)type;
	(*(int *)ud)++;
	return 0;
}

static void test_ns_type_byte(void)
{
	instate_store *s;
	instate_ns *ns;
	instate_txn *t;
	instate_check_info info;
	struct report rep = { 0 };
	instate_buf v = { 0 };
	unsigned char e[5];
	MDB_env *env;
	size_t n;
	unsigned char *p;
	int listed = 0;

	s = open_store("nstype", 0);
	CHECK_RC(put_record(s, ns_of(s, "good"), "k", "v", 0, 0), 0);
	CHECK_RC(put_record(s, ns_of(s, "x"), "k", "v", 0, 0), 0);
	instate_store_close(s);
	env = raw_open("nstype", 0);
	p = raw_get(env, "__meta", "ns:x", &n);
	CHECK(p && n == 5 && p[4] == 1);
	memcpy(e, p, 5);
	free(p);
	e[4] = 3;
	raw_put(env, "__meta", "ns:x", 4, e, 5);
	mdb_env_close(env);

	/* the store opens; the damaged namespace is corrupt, the others work */
	s = open_store("nstype", 0);
	CHECK_RC(instate_ns_get(s, "x", 1, INSTATE_NS_KV, &ns), INSTATE_CORRUPT);
	CHECK_RC(instate_ns_get(s, "x", 1, INSTATE_NS_ANY, &ns), INSTATE_CORRUPT);
	CHECK_RC(instate_ns_get(s, "x", 1, INSTATE_NS_STATE, &ns), INSTATE_CORRUPT);
	CHECK_RC(get1(s, ns_of(s, "good"), "k", &v, NULL), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_ns_list(t, count_ns, &listed), INSTATE_CORRUPT);
	CHECK(listed == 1); /* "good" came first */
	instate_txn_abort(t);
	CHECK_RC(instate_store_check(s, on_bad, &rep, &info), 0);
	CHECK(info.namespaces == 2 && info.records == 2 && info.corrupt == 1);
	CHECK(rep.n == 1 && strcmp(rep.ns[0], "x") == 0 && strcmp(rep.key[0], "(none)") == 0);
	instate_store_close(s);

	/* a short entry too */
	env = raw_open("nstype", 0);
	raw_put(env, "__meta", "ns:x", 4, e, 4);
	mdb_env_close(env);
	s = open_store("nstype", 0);
	CHECK_RC(instate_ns_get(s, "x", 1, INSTATE_NS_ANY, &ns), INSTATE_CORRUPT);
	CHECK_RC(get1(s, ns_of(s, "good"), "k", &v, NULL), 0);
	instate_store_close(s);
	instate_buf_free(&v);
}

/* ---- the check's cost ------------------------------------------------ */

static void test_check_speed(void)
{
	instate_store *s;
	instate_ns *ns;
	instate_txn *t;
	instate_check_info info;
	struct timespec a, b;
	char key[32], val[64];
	int i;

	s = open_store("speed", 0);
	ns = ns_of(s, "players");
	CHECK_RC(instate_store_reserve(s, 64 << 20), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	for (i = 0; i < 100000; i++) {
		int kl = snprintf(key, sizeof key, "player:%06d", i);
		memset(val, 'a' + i % 26, sizeof val);
		CHECK_RC(instate_put(t, ns, key, (size_t)kl, val, sizeof val, NULL, 0), 0);
	}
	CHECK_RC(instate_txn_commit(t), 0);
	clock_gettime(CLOCK_MONOTONIC, &a);
	CHECK_RC(instate_store_check(s, NULL, NULL, &info), 0);
	clock_gettime(CLOCK_MONOTONIC, &b);
	CHECK(info.records == 100000 && info.corrupt == 0);
	printf("store_check: 100000 records of 64 bytes in %.1f ms\n",
	       (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
	instate_store_close(s);
}

/* The one-call record checksum equals the portable CRC of its parts. */
static void test_record_crc(void)
{
	unsigned char rec[300], key[40];
	size_t n, kl, i;

	for (i = 0; i < sizeof rec; i++)
		rec[i] = (unsigned char)(i * 37 + 11);
	for (i = 0; i < sizeof key; i++)
		key[i] = (unsigned char)(i * 91 + 3);
	for (n = 5; n <= sizeof rec; n += 7)
		for (kl = 1; kl <= sizeof key; kl += 5) {
			uint32_t c = instate_crc32c_portable(0, key, kl);
			c = instate_crc32c_portable(c, rec, 1);
			c = instate_crc32c_portable(c, rec + 5, n - 5);
			if (instate__crc32c_record(key, kl, rec, n) != c) {
				failed++;
				fprintf(stderr, "record crc differs at n=%zu klen=%zu\n", n, kl);
				return;
			}
		}
	passed++;
}

int main(void)
{
	char cmd[128];

	snprintf(root, sizeof root, "/tmp/instate-rec.XXXXXX");
	if (!mkdtemp(root))
		return 2;
	test_record_crc();
	test_read_paths();
	test_bad_headers();
	test_format1();
	test_format1_growth();
	test_ns_type_byte();
	test_check_speed();
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
