/*
 * test_store.c - the store core's C API, without Lua: open/close, the
 * registry, namespaces, transactions (nested, failed, BUSY), records, TTL
 * with the fixed clock, cursors, purge, map growth from a 1 MiB map, the
 * layout version check and corrupt files.
 */
#include "instate.h"
#include "check.h"
#include "instate_dump_int.h" /* instate_crc32c(), to write records by hand */

#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *self_exe;

static instate_store *open_store(const char *name, const instate_options *o)
{
	instate_store *s = NULL;
	int rc = instate_store_open(tpath(name), o, &s);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", name, instate_strerror(rc));
		exit(2);
	}
	return s;
}

/* One write transaction putting key=val; returns the commit's code. */
static int put1(instate_store *s, instate_ns *ns, const char *k, const char *v, int64_t exp)
{
	return put_record(s, ns, k, v, exp, 0);
}

/* Read key in a fresh snapshot: 0 and the value in out, or the error. */
static int get1(instate_store *s, instate_ns *ns, const char *k, char *out, size_t cap)
{
	instate_txn *t;
	instate_buf b = { 0 };
	int rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t);
	if (rc)
		return rc;
	rc = instate_get(t, ns, k, strlen(k), &b, NULL);
	if (rc == 0 && out) {
		size_t n = b.len < cap - 1 ? b.len : cap - 1;
		memcpy(out, b.data, n);
		out[n] = '\0';
	}
	instate_txn_abort(t);
	instate_buf_free(&b);
	return rc;
}

static uint64_t count1(instate_store *s, instate_ns *ns)
{
	instate_txn *t;
	uint64_t n = 999999;
	if (instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t) == 0) {
		CHECK_RC(instate_count(t, ns, &n), 0);
		instate_txn_abort(t);
	}
	return n;
}

/* ------------------------------------------------------------------------- */

static void test_options_and_open(void)
{
	instate_options o;
	instate_store *s, *s2, *bad;
	struct stat st;
	uint64_t rev = 99;

	instate_options_init(&o);
	CHECK(o.map_size == 64u << 20 && o.max_size == (uint64_t)1 << 40);
	CHECK(o.file_mode == 0600 && o.max_namespaces == 128 && o.max_readers == 510);
	CHECK(o.sync == INSTATE_SYNC_FULL && !o.readonly && !o.single_file);

	s = open_store("a", NULL);
	CHECK(strcmp(instate_store_path(s), tpath("a")) == 0);
	CHECK(stat(tpath("a"), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700);
	CHECK(stat(tpath("a/data.mdb"), &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK_RC(instate_store_revision(s, &rev), 0);
	CHECK(rev == 0);

	/* A second handle shares the environment; closing one keeps the other. */
	s2 = open_store("a", NULL);
	CHECK_RC(put1(s2, ns_of(s2, "kv"), "k", "v", 0), 0);
	instate_store_close(s2);
	{
		char v[16];
		CHECK_RC(get1(s, ns_of(s, "kv"), "k", v, sizeof v), 0);
		CHECK(strcmp(v, "v") == 0);
	}

	/* readonly vs read-write in one process */
	o.readonly = 1;
	bad = (instate_store *)&o;
	CHECK_RC(instate_store_open(tpath("a"), &o, &bad), INSTATE_CONFLICT);
	CHECK(bad == NULL);
	instate_store_close(s);

	/* now only read-only: allowed, reads, refuses writes */
	s = open_store("a", &o);
	{
		instate_txn *t = NULL;
		char v[16];
		CHECK_RC(instate_txn_begin(s, NULL, 0, &t), INSTATE_READONLY);
		CHECK(t == NULL);
		CHECK_RC(get1(s, ns_of(s, "kv"), "k", v, sizeof v), 0);
		CHECK_RC(instate_store_reserve(s, 1 << 20), INSTATE_READONLY);
		o.readonly = 0;
		CHECK_RC(instate_store_open(tpath("a"), &o, &bad), INSTATE_CONFLICT);
		o.readonly = 1;
	}
	instate_store_close(s);
	instate_store_close(NULL);

	/* read-only open of a missing store */
	CHECK_RC(instate_store_open(tpath("missing"), &o, &bad), ENOENT);
	CHECK(access(tpath("missing"), F_OK) != 0);
	o.single_file = 1;
	CHECK_RC(instate_store_open(tpath("missing.db"), &o, &bad), ENOENT);

	/* bad options and paths */
	instate_options_init(&o);
	o.sync = (instate_sync)7;
	CHECK_RC(instate_store_open(tpath("b"), &o, &bad), INSTATE_INVALID);
	instate_options_init(&o);
	o.max_size = o.map_size - 1;
	CHECK_RC(instate_store_open(tpath("b"), &o, &bad), INSTATE_INVALID);
	instate_options_init(&o);
	o.file_mode = 010000;
	CHECK_RC(instate_store_open(tpath("b"), &o, &bad), INSTATE_INVALID);
	CHECK_RC(instate_store_open("", NULL, &bad), INSTATE_INVALID);
	CHECK_RC(instate_store_open(NULL, NULL, &bad), INSTATE_INVALID);
	{
		FILE *f = fopen(tpath("plainfile"), "w");
		fputs("x", f);
		fclose(f);
	}
	CHECK_RC(instate_store_open(tpath("plainfile"), NULL, &bad), ENOTDIR);
	/* missing parents are made (mkdir -p), mode 0700; read-only makes none */
	CHECK_RC(instate_store_open(tpath("nodir/sub"), NULL, &bad), 0);
	instate_store_close(bad);
	{
		struct stat ds;
		CHECK(stat(tpath("nodir"), &ds) == 0 && (ds.st_mode & 0777) == 0700);
	}
	CHECK_RC(instate_store_open(tpath("plainfile/sub"), NULL, &bad), ENOTDIR);
	instate_options_init(&o);
	o.readonly = 1;
	CHECK_RC(instate_store_open(tpath("nodir2/sub"), &o, &bad), ENOENT);
	instate_options_init(&o);
	o.single_file = 1;
	CHECK_RC(instate_store_open(tpath("a"), &o, &bad), EISDIR);
}

static void test_single_file_and_corrupt(void)
{
	instate_options o;
	instate_store *s, *bad;
	struct stat st;
	FILE *f;
	char buf[4096];

	instate_options_init(&o);
	o.single_file = 1;
	o.file_mode = 0640;
	s = open_store("one.db", &o);
	CHECK(stat(tpath("one.db"), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0777) == 0640);
	CHECK(stat(tpath("one.db-lock"), &st) == 0);
	CHECK_RC(put1(s, ns_of(s, "x"), "k", "v", 0), 0);
	instate_store_close(s);
	s = open_store("one.db", &o);
	CHECK_RC(get1(s, ns_of(s, "x"), "k", NULL, 0), 0);
	instate_store_close(s);

	/* garbage: too short, and a full page of noise */
	f = fopen(tpath("garbage.db"), "w");
	fputs("this is not a store", f);
	fclose(f);
	CHECK_RC(instate_store_open(tpath("garbage.db"), &o, &bad), INSTATE_CORRUPT);
	memset(buf, 0x5a, sizeof buf);
	f = fopen(tpath("noise.db"), "w");
	fwrite(buf, 1, sizeof buf, f);
	fwrite(buf, 1, sizeof buf, f);
	fclose(f);
	CHECK_RC(instate_store_open(tpath("noise.db"), &o, &bad), INSTATE_CORRUPT);
	o.readonly = 1;
	CHECK_RC(instate_store_open(tpath("noise.db"), &o, &bad), INSTATE_CORRUPT);

	/* an LMDB file that is not a store (no __meta), opened read-only */
	{
		MDB_env *env;
		MDB_txn *t;
		MDB_dbi dbi;
		MDB_val k = { 1, "k" }, d = { 1, "v" };
		mdb_env_create(&env);
		CHECK(mdb_env_open(env, tpath("plain.mdb"), MDB_NOSUBDIR, 0600) == 0);
		mdb_txn_begin(env, NULL, 0, &t);
		mdb_dbi_open(t, NULL, 0, &dbi);
		mdb_put(t, dbi, &k, &d, 0);
		mdb_txn_commit(t);
		mdb_env_close(env);
	}
	CHECK_RC(instate_store_open(tpath("plain.mdb"), &o, &bad), INSTATE_CORRUPT);
}

static void test_layout_version(void)
{
	instate_store *s, *bad = NULL;
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi dbi;
	MDB_val k = { 6, "format" }, d;
	unsigned char v[4];

	s = open_store("ver", NULL);
	instate_store_close(s);
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 4);
	CHECK(mdb_env_open(env, tpath("ver"), 0, 0600) == 0);
	CHECK(mdb_txn_begin(env, NULL, 0, &t) == 0);
	CHECK(mdb_dbi_open(t, "__meta", 0, &dbi) == 0);
	CHECK(mdb_get(t, dbi, &k, &d) == 0 && d.mv_size == 4 &&
	      memcmp(d.mv_data, "\0\0\0\2", 4) == 0);
	v[0] = v[1] = v[2] = 0;
	v[3] = INSTATE_STORE_FORMAT + 1;
	d.mv_data = v;
	d.mv_size = 4;
	CHECK(mdb_put(t, dbi, &k, &d, 0) == 0);
	CHECK(mdb_txn_commit(t) == 0);
	mdb_env_close(env);
	CHECK_RC(instate_store_open(tpath("ver"), NULL, &bad), INSTATE_VERSION);
	CHECK(bad == NULL);
}

static int collect(void *ud, const char *name, size_t len, instate_ns_type type)
{
	char *out = ud;
	char tmp[300];
	snprintf(tmp, sizeof tmp, "%.*s:%d,", (int)len, name, (int)type);
	strcat(out, tmp);
	return 0;
}

static int stop_at_second(void *ud, const char *name, size_t len, instate_ns_type type)
{
	int *n = ud;
	return ++*n == 2 ? 42 : 0;
}

static void test_namespaces(void)
{
	instate_store *s = open_store("ns", NULL);
	instate_ns *ns = NULL, *ns2 = NULL, *map = NULL;
	instate_txn *t;
	char longname[300], list[1024] = "";
	size_t len;
	int existed = -1, n = 0;

	memset(longname, 'n', sizeof longname);
	CHECK_RC(instate_ns_get(s, "", 0, INSTATE_NS_KV, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, longname, 256, INSTATE_NS_KV, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, longname, 255, INSTATE_NS_KV, &ns), 0);
	CHECK_RC(instate_ns_get(s, "a\0b", 3, INSTATE_NS_KV, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "__meta", 6, INSTATE_NS_KV, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "__x", 3, INSTATE_NS_ANY, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "_x", 2, INSTATE_NS_ANY, &ns), 0);
	/* the one reserved family a namespace may have: map variables' */
	CHECK_RC(instate_ns_get(s, "__map.", 6, INSTATE_NS_STATE, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "__map", 5, INSTATE_NS_STATE, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "__map.x\0", 8, INSTATE_NS_STATE, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "__Map.x", 7, INSTATE_NS_STATE, &ns), INSTATE_INVALID);
	CHECK_RC(instate_ns_get(s, "x", 1, (instate_ns_type)9, &ns), INSTATE_INVALID);

	/* a new namespace gets the requested type once written */
	CHECK_RC(instate_ns_get(s, "vars", 4, INSTATE_NS_STATE, &ns), 0);
	CHECK(strcmp(instate_ns_name(ns, &len), "vars") == 0 && len == 4);
	CHECK(instate_ns_type_of(ns) == INSTATE_NS_STATE);
	CHECK_RC(put1(s, ns, "v", "1", 0), 0);
	CHECK_RC(instate_ns_get(s, "vars", 4, INSTATE_NS_KV, &ns2), INSTATE_TYPE);
	CHECK_RC(instate_ns_get(s, "vars", 4, INSTATE_NS_ANY, &ns2), 0);
	CHECK(ns2 == ns && instate_ns_type_of(ns2) == INSTATE_NS_STATE);
	CHECK_RC(put1(s, ns_of(s, "b"), "k", "v", 0), 0);
	CHECK_RC(put1(s, ns_of(s, "a"), "k", "v", 0), 0);
	CHECK_RC(instate_ns_get(s, "__map.state.w", 13, INSTATE_NS_STATE, &map), 0);
	CHECK_RC(put1(s, map, "i1", "1", 0), 0);

	/* listing, in name byte order; a callback's nonzero result stops it;
	 * a map namespace is listed as any other (the names after it too) */
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_ns_list(t, collect, list), 0);
	CHECK(strcmp(list, "__map.state.w:2,a:1,b:1,vars:2,") == 0);
	CHECK_RC(instate_ns_list(t, stop_at_second, &n), 42);
	CHECK_RC(instate_ns_list(t, NULL, NULL), INSTATE_INVALID);
	instate_txn_abort(t);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_drop(t, map, &existed), 0);
	CHECK(existed == 1);
	CHECK_RC(instate_txn_commit(t), 0);

	/* drop: records and entry gone, type forgotten, usable again */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_drop(t, ns, &existed), 0);
	CHECK(existed == 1);
	CHECK_RC(instate_get(t, ns, "v", 1, NULL, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_drop(t, ns, &existed), 0);
	CHECK(existed == 0);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(get1(s, ns, "v", NULL, 0), INSTATE_NOTFOUND);
	list[0] = '\0';
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_ns_list(t, collect, list), 0);
	CHECK(strcmp(list, "a:1,b:1,") == 0);
	instate_txn_abort(t);
	CHECK_RC(instate_ns_get(s, "vars", 4, INSTATE_NS_KV, &ns2), 0);
	CHECK(instate_ns_type_of(ns2) == INSTATE_NS_KV);
	CHECK_RC(put1(s, ns2, "w", "2", 0), 0);
	CHECK(count1(s, ns2) == 1);
	CHECK_RC(instate_ns_get(s, "vars", 4, INSTATE_NS_STATE, &ns2), INSTATE_TYPE);

	/* an unwritten namespace reads as empty and is not listed */
	ns = ns_of(s, "ghost");
	CHECK_RC(get1(s, ns, "k", NULL, 0), INSTATE_NOTFOUND);
	CHECK(count1(s, ns) == 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_del(t, ns, "k", 1), INSTATE_NOTFOUND);
	CHECK_RC(instate_drop(t, ns, &existed), 0);
	CHECK(existed == 0);
	CHECK_RC(instate_txn_commit(t), 0);
	list[0] = '\0';
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_ns_list(t, collect, list), 0);
	CHECK(strcmp(list, "a:1,b:1,vars:1,") == 0);
	instate_txn_abort(t);
	instate_store_close(s);

	/* the namespace table limit */
	{
		instate_options o;
		instate_store *s2;
		char name[8];
		int i, rc = 0;
		instate_options_init(&o);
		o.max_namespaces = 2;
		s2 = open_store("nsfull", &o);
		CHECK_RC(instate_txn_begin(s2, NULL, 0, &t), 0);
		for (i = 0; i < 10 && rc == 0; i++) {
			snprintf(name, sizeof name, "n%d", i);
			rc = instate_put(t, ns_of(s2, name), "k", 1, "v", 1, NULL, 0);
		}
		CHECK_RC(rc, INSTATE_NAMESPACES_FULL);
		CHECK(i == 3); /* exactly max_namespaces fit */
		/* a failed write leaves the transaction failed */
		CHECK_RC(instate_get(t, ns_of(s2, "n0"), "k", 1, NULL, NULL), INSTATE_ENDED);
		CHECK_RC(instate_put(t, ns_of(s2, "n0"), "k", 1, "v", 1, NULL, 0), INSTATE_ENDED);
		CHECK_RC(instate_txn_commit(t), INSTATE_NAMESPACES_FULL);
		CHECK_RC(get1(s2, ns_of(s2, "n0"), "k", NULL, 0), INSTATE_NOTFOUND);
		/* and the slot was given back */
		CHECK_RC(put1(s2, ns_of(s2, "n0"), "k", "v", 0), 0);
		CHECK_RC(put1(s2, ns_of(s2, "n1"), "k", "v", 0), 0);
		CHECK_RC(put1(s2, ns_of(s2, "n2"), "k", "v", 0), INSTATE_NAMESPACES_FULL);
		/* a dropped namespace frees its place */
		CHECK_RC(instate_txn_begin(s2, NULL, 0, &t), 0);
		CHECK_RC(instate_drop(t, ns_of(s2, "n0"), NULL), 0);
		CHECK_RC(instate_put(t, ns_of(s2, "n2"), "k", 1, "v", 1, NULL, 0), 0);
		CHECK_RC(instate_txn_commit(t), 0);
		CHECK_RC(get1(s2, ns_of(s2, "n2"), "k", NULL, 0), 0);
		instate_store_close(s2);
	}
}

static void test_records(void)
{
	instate_store *s = open_store("rec", NULL);
	instate_ns *ns = ns_of(s, "kv");
	instate_txn *t, *r;
	instate_buf b = { 0 };
	instate_meta m, in = { 0, 7 };
	char key[600];

	memset(key, 'k', sizeof key);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, key, 0, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_put(t, ns, key, 512, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_put(t, ns, NULL, 1, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_put(t, ns, key, 511, "long", 4, NULL, 0), 0);
	CHECK_RC(instate_get(t, ns, key, 512, &b, NULL), INSTATE_INVALID);
	CHECK_RC(instate_put(t, ns, "k", 1, "v", 1, NULL, 0x80), INSTATE_INVALID);
	/* invalid arguments do not fail the transaction */
	CHECK_RC(instate_put(t, ns, "a", 1, "alpha", 5, &in, 0), 0);
	CHECK_RC(instate_put(t, ns, "a", 1, "x", 1, NULL, INSTATE_NOOVERWRITE), INSTATE_EXISTS);
	CHECK_RC(instate_put(t, ns, "e", 1, "", 0, NULL, INSTATE_NOOVERWRITE), 0);
	CHECK_RC(instate_del(t, ns, "zz", 2), INSTATE_NOTFOUND);
	CHECK_RC(instate_get(t, ns, "a", 1, &b, &m), 0);
	CHECK(b.len == 5 && memcmp(b.data, "alpha", 5) == 0 && m.version == 7 && m.expires_ms == 0);
	/* IFCHANGED: an equal record (value, version, expiry) is left alone */
	{
		instate_meta v8 = { 0, 8 }, exp = { (int64_t)1 << 50, 7 };
		CHECK_RC(instate_put(t, ns, "a", 1, "alpha", 5, &in, INSTATE_IFCHANGED), INSTATE_EXISTS);
		CHECK_RC(instate_put(t, ns, "a", 1, "alphb", 5, &in, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_put(t, ns, "a", 1, "alph", 4, &in, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_put(t, ns, "a", 1, "alph", 4, &v8, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_put(t, ns, "a", 1, "alph", 4, &exp, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_put(t, ns, "a", 1, "alph", 4, &exp, INSTATE_IFCHANGED), INSTATE_EXISTS);
		CHECK_RC(instate_put(t, ns, "new", 3, "", 0, NULL, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_put(t, ns, "new", 3, "", 0, NULL, INSTATE_IFCHANGED), INSTATE_EXISTS);
		CHECK_RC(instate_get(t, ns, "a", 1, &b, &m), 0);
		CHECK(b.len == 4 && m.version == 7 && m.expires_ms == exp.expires_ms);
		/* EXISTS did not fail the transaction */
		CHECK_RC(instate_put(t, ns, "a", 1, "alpha", 5, &in, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_del(t, ns, "new", 3), 0);
	}
	CHECK_RC(instate_txn_commit(t), 0);

	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &r), 0);
	CHECK(instate_txn_readonly(r));
	{
		instate_stats st;
		CHECK_RC(instate_store_stats(s, &st), 0);
		CHECK(st.readers == 1 && st.namespaces == 1 && st.revision == 1);
	}
	CHECK_RC(instate_get(r, ns, key, 511, &b, &m), 0);
	CHECK(b.len == 4 && memcmp(b.data, "long", 4) == 0 && m.version == 0);
	CHECK_RC(instate_get(r, ns, "e", 1, &b, NULL), 0);
	CHECK(b.len == 0);
	CHECK_RC(instate_get(r, ns, "nope", 4, &b, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_get(r, ns, "a", 1, NULL, NULL), 0);
	CHECK_RC(instate_put(r, ns, "a", 1, "x", 1, NULL, 0), INSTATE_READONLY);
	CHECK_RC(instate_del(r, ns, "a", 1), INSTATE_READONLY);
	CHECK_RC(instate_clear(r, ns, NULL), INSTATE_READONLY);
	CHECK_RC(instate_purge(r, NULL), INSTATE_READONLY);
	CHECK_RC(instate_set_expiry(r, ns, "a", 1, 0), INSTATE_READONLY);
	/* a write txn alongside a snapshot: the snapshot does not move */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK(!instate_txn_readonly(t));
	CHECK_RC(instate_del(t, ns, "a", 1), 0);
	CHECK_RC(instate_get(t, ns, "a", 1, NULL, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(instate_get(r, ns, "a", 1, &b, NULL), 0);
	CHECK_RC(instate_txn_commit(r), 0);
	CHECK_RC(get1(s, ns, "a", NULL, 0), INSTATE_NOTFOUND);

	/* count and clear */
	CHECK(count1(s, ns) == 2);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	{
		uint64_t removed = 9;
		CHECK_RC(instate_clear(t, ns, &removed), 0);
		CHECK(removed == 2);
		CHECK_RC(instate_clear(t, ns_of(s, "never"), &removed), 0);
		CHECK(removed == 0);
	}
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK(count1(s, ns) == 0);
	CHECK_RC(put1(s, ns, "after", "clear", 0), 0);
	CHECK(count1(s, ns) == 1);
	instate_buf_free(&b);
	instate_store_close(s);
}

static void test_transactions(void)
{
	instate_store *s = open_store("txn", NULL), *s2 = open_store("txn", NULL);
	instate_ns *ns = ns_of(s, "kv");
	instate_txn *t, *c, *c2, *x = NULL;
	uint64_t rev0, rev;
	char list[512] = "";

	CHECK_RC(instate_store_revision(s, &rev0), 0);
	/* BUSY: a second write txn on this thread, whatever the handle */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK(instate_txn_revision(t) == rev0 + 1);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &x), INSTATE_BUSY);
	CHECK_RC(instate_txn_begin(s2, NULL, 0, &x), INSTATE_BUSY);
	CHECK_RC(instate_store_reserve(s, 1), INSTATE_BUSY);
	CHECK(x == NULL);
	/* a read txn is fine meanwhile */
	CHECK_RC(instate_txn_begin(s2, NULL, INSTATE_TXN_READ, &x), 0);
	CHECK(instate_txn_revision(x) == rev0);
	CHECK_RC(instate_txn_begin(s, x, 0, &c), INSTATE_INVALID);
	instate_txn_abort(x);
	CHECK_RC(instate_txn_begin(s, t, INSTATE_TXN_READ, &c), INSTATE_INVALID);

	/* nested: an aborted child drops only its writes */
	CHECK_RC(instate_put(t, ns, "p", 1, "parent", 6, NULL, 0), 0);
	CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
	CHECK(instate_txn_revision(c) == rev0 + 1);
	CHECK_RC(instate_put(t, ns, "q", 1, "x", 1, NULL, 0), INSTATE_BUSY);
	CHECK_RC(instate_txn_begin(s, t, 0, &c2), INSTATE_BUSY);
	CHECK_RC(instate_put(c, ns, "c", 1, "child", 5, NULL, 0), 0);
	CHECK_RC(instate_del(c, ns, "p", 1), 0);
	CHECK_RC(instate_put(c, ns_of(s, "childns"), "k", 1, "v", 1, NULL, 0), 0);
	instate_txn_abort(c);
	CHECK_RC(instate_get(t, ns, "c", 1, NULL, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_get(t, ns, "p", 1, NULL, NULL), 0);
	CHECK_RC(instate_get(t, ns_of(s, "childns"), "k", 1, NULL, NULL), INSTATE_NOTFOUND);
	/* nested commit merges; grandchildren too */
	CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
	CHECK_RC(instate_put(c, ns, "c2", 2, "kept", 4, NULL, 0), 0);
	CHECK_RC(instate_txn_begin(s, c, 0, &c2), 0);
	CHECK_RC(instate_put(c2, ns_of(s, "deep"), "d", 1, "v", 1, NULL, 0), 0);
	CHECK_RC(instate_txn_commit(c2), 0);
	CHECK_RC(instate_txn_commit(c), 0);
	CHECK_RC(instate_get(t, ns, "c2", 2, NULL, NULL), 0);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(instate_store_revision(s2, &rev), 0);
	CHECK(rev == rev0 + 1);
	CHECK_RC(get1(s2, ns, "p", NULL, 0), 0);
	CHECK_RC(get1(s2, ns, "c2", NULL, 0), 0);
	CHECK_RC(get1(s2, ns_of(s2, "deep"), "d", NULL, 0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &x), 0);
	CHECK_RC(instate_ns_list(x, collect, list), 0);
	CHECK(strcmp(list, "deep:1,kv:1,") == 0);
	instate_txn_abort(x);

	/* the child's namespace is gone and usable again */
	CHECK_RC(put1(s, ns_of(s, "childns"), "k", "v", 0), 0);
	CHECK_RC(get1(s2, ns_of(s2, "childns"), "k", NULL, 0), 0);

	/* a namespace created in an aborted top-level txn */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns_of(s, "tmp"), "k", 1, "v", 1, NULL, 0), 0);
	instate_txn_abort(t);
	CHECK_RC(get1(s, ns_of(s, "tmp"), "k", NULL, 0), INSTATE_NOTFOUND);
	list[0] = '\0';
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &x), 0);
	CHECK_RC(instate_ns_list(x, collect, list), 0);
	CHECK(strcmp(list, "childns:1,deep:1,kv:1,") == 0);
	instate_txn_abort(x);
	CHECK_RC(put1(s, ns_of(s, "tmp"), "k", "v2", 0), 0);
	{
		char v[8];
		CHECK_RC(get1(s2, ns_of(s2, "tmp"), "k", v, sizeof v), 0);
		CHECK(strcmp(v, "v2") == 0);
	}

	/* revision: +1 per committed write txn, even empty; not on abort */
	CHECK_RC(instate_store_revision(s, &rev0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	instate_txn_abort(t);
	CHECK_RC(instate_store_revision(s, &rev), 0);
	CHECK(rev == rev0 + 1);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &x), 0);
	CHECK(instate_txn_revision(x) == rev);
	CHECK_RC(instate_txn_commit(x), 0);

	/* commit with an open child: BUSY, and everything is aborted */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, "lost", 4, "v", 1, NULL, 0), 0);
	CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
	CHECK_RC(instate_txn_commit(t), INSTATE_BUSY);
	CHECK_RC(get1(s, ns, "lost", NULL, 0), INSTATE_NOTFOUND);
	CHECK_RC(instate_store_revision(s, &rev0), 0);
	CHECK(rev0 == rev);

	/* aborting a parent aborts its open children */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
	CHECK_RC(instate_put(c, ns, "lost", 4, "v", 1, NULL, 0), 0);
	instate_txn_abort(t);
	instate_txn_abort(NULL);
	CHECK_RC(get1(s, ns, "lost", NULL, 0), INSTATE_NOTFOUND);

	/* a parent's cursor across a child, then aborted with the child open */
	{
		instate_cursor *pc, *cc;
		instate_buf kb = { 0 };
		CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
		CHECK_RC(instate_cursor_open(t, ns, NULL, 0, &pc), 0);
		CHECK_RC(instate_cursor_next(pc, &kb, NULL, NULL), 0);
		CHECK(kb.len == 2 && memcmp(kb.data, "c2", 2) == 0);
		CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
		CHECK_RC(instate_cursor_next(pc, &kb, NULL, NULL), INSTATE_BUSY);
		CHECK_RC(instate_put(c, ns, "ca", 2, "v", 1, NULL, 0), 0);
		CHECK_RC(instate_txn_commit(c), 0);
		CHECK_RC(instate_cursor_next(pc, &kb, NULL, NULL), 0);
		CHECK(kb.len == 2 && memcmp(kb.data, "ca", 2) == 0); /* the child's */
		CHECK_RC(instate_txn_begin(s, t, 0, &c), 0);
		CHECK_RC(instate_cursor_open(c, ns, "p", 1, &cc), 0);
		CHECK_RC(instate_cursor_next(cc, &kb, NULL, NULL), 0);
		CHECK(kb.len == 1 && kb.data[0] == 'p');
		instate_txn_abort(t);
		CHECK_RC(instate_cursor_next(pc, &kb, NULL, NULL), INSTATE_ENDED);
		CHECK_RC(instate_cursor_next(cc, &kb, NULL, NULL), INSTATE_ENDED);
		instate_cursor_close(cc);
		instate_cursor_close(pc);
		instate_buf_free(&kb);
		CHECK_RC(get1(s, ns, "ca", NULL, 0), INSTATE_NOTFOUND);
	}

	/* the slot is free again */
	CHECK_RC(put1(s2, ns, "free", "yes", 0), 0);
	instate_store_close(s2);
	instate_store_close(s);
}

static void test_ttl_and_purge(void)
{
	instate_store *s = open_store("ttl", NULL);
	instate_ns *ns = ns_of(s, "cache"), *ns2 = ns_of(s, "other");
	instate_txn *t;
	instate_cursor *c;
	instate_buf k = { 0 };
	instate_meta m;
	uint64_t n = 0;
	const int64_t T = 1700000000000LL;
	int64_t now;

	now = instate_clock_now();
	CHECK(now > T && now < T * 2);
	instate_clock_set(T);
	CHECK(instate_clock_now() == T);

	CHECK_RC(put1(s, ns, "short", "1", T + 1000), 0);
	CHECK_RC(put1(s, ns, "long", "2", T + 100000), 0);
	CHECK_RC(put1(s, ns, "forever", "3", 0), 0);
	CHECK_RC(put1(s, ns2, "short2", "4", T + 500), 0);
	CHECK(count1(s, ns) == 3);
	instate_clock_set(T + 999);
	CHECK_RC(get1(s, ns, "short", NULL, 0), 0);
	instate_clock_set(T + 1000); /* expiry is inclusive */
	CHECK_RC(get1(s, ns, "short", NULL, 0), INSTATE_NOTFOUND);
	CHECK(count1(s, ns) == 2);

	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_get(t, ns, "long", 4, NULL, &m), 0);
	CHECK(m.expires_ms == T + 100000);
	CHECK_RC(instate_del(t, ns, "short", 5), INSTATE_NOTFOUND);
	CHECK_RC(instate_set_expiry(t, ns, "short", 5, 0), INSTATE_NOTFOUND);
	CHECK_RC(instate_set_expiry(t, ns, "nothere", 7, 0), INSTATE_NOTFOUND);
	CHECK_RC(instate_set_expiry(t, ns, "long", 4, -5), INSTATE_INVALID);
	/* the count hint is LMDB's: the expired record is in it, the other
	 * namespace's are not; a namespace never made reads as 0 */
	CHECK_RC(instate_count(t, ns, &n), 0);
	CHECK(n == 2);
	CHECK_RC(instate_count_hint(t, ns, &n), 0);
	CHECK(n == 3);
	CHECK_RC(instate_count_hint(t, ns_of(s, "never-written"), &n), 0);
	CHECK(n == 0);
	CHECK_RC(instate_count_hint(t, NULL, &n), INSTATE_INVALID);
	CHECK_RC(instate_count_hint(t, ns, NULL), INSTATE_INVALID);
	/* the cursor skips the expired record */
	CHECK_RC(instate_cursor_open(t, ns, NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, &m), 0);
	CHECK(k.len == 7 && memcmp(k.data, "forever", 7) == 0 && m.expires_ms == 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	CHECK(k.len == 4 && memcmp(k.data, "long", 4) == 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	/* NOOVERWRITE writes over an expired record */
	{
		instate_meta keep = { T + 5000, 3 };
		CHECK_RC(instate_put(t, ns, "short", 5, "new", 3, &keep, INSTATE_NOOVERWRITE), 0);
		CHECK_RC(instate_get(t, ns, "short", 5, NULL, &m), 0);
		CHECK(m.expires_ms == T + 5000 && m.version == 3);
		/* KEEPEXPIRY keeps the old expiry, not the new one */
		keep.expires_ms = T + 9;
		CHECK_RC(instate_put(t, ns, "short", 5, "newer", 5, &keep, INSTATE_KEEPEXPIRY), 0);
		CHECK_RC(instate_get(t, ns, "short", 5, &k, &m), 0);
		CHECK(m.expires_ms == T + 5000 && k.len == 5 && memcmp(k.data, "newer", 5) == 0);
		CHECK_RC(instate_put(t, ns, "fresh", 5, "f", 1, &keep, INSTATE_KEEPEXPIRY), 0);
		CHECK_RC(instate_get(t, ns, "fresh", 5, NULL, &m), 0);
		CHECK(m.expires_ms == 0);		/* an expired record is not equal to anything: IFCHANGED writes */
		keep.expires_ms = T - 1;
		CHECK_RC(instate_put(t, ns, "gone", 4, "g", 1, &keep, 0), 0);
		CHECK_RC(instate_put(t, ns, "gone", 4, "g", 1, &keep, INSTATE_IFCHANGED), 0);
		CHECK_RC(instate_del(t, ns, "gone", 4), INSTATE_NOTFOUND);
	}
	/* set_expiry: adds, changes and removes the expiry, keeps value and version */
	CHECK_RC(instate_set_expiry(t, ns, "forever", 7, T + 2000), 0);
	CHECK_RC(instate_get(t, ns, "forever", 7, &k, &m), 0);
	CHECK(m.expires_ms == T + 2000 && k.len == 1 && k.data[0] == '3');
	CHECK_RC(instate_set_expiry(t, ns, "short", 5, 0), 0);
	CHECK_RC(instate_get(t, ns, "short", 5, &k, &m), 0);
	CHECK(m.expires_ms == 0 && m.version == 3 && k.len == 5);
	CHECK_RC(instate_txn_commit(t), 0);

	/* purge removes expired records of every namespace, and counts them */
	instate_clock_set(T + 3000);
	CHECK(count1(s, ns) == 3); /* short, long, fresh */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	n = 99;
	CHECK_RC(instate_purge(t, &n), 0);
	CHECK(n == 3); /* forever (now expired), short2 and gone */
	CHECK_RC(instate_purge(t, &n), 0);
	CHECK(n == 0);
	CHECK_RC(instate_txn_commit(t), 0);
	instate_clock_set(T);
	/* back in time: purged records stay gone, but long lives */
	CHECK_RC(get1(s, ns, "forever", NULL, 0), INSTATE_NOTFOUND);
	CHECK_RC(get1(s, ns2, "short2", NULL, 0), INSTATE_NOTFOUND);
	CHECK_RC(get1(s, ns, "long", NULL, 0), 0);
	instate_clock_set(0);
	CHECK(instate_clock_now() > T);
	instate_buf_free(&k);
	instate_store_close(s);
}

static void test_cursors(void)
{
	instate_store *s = open_store("cur", NULL);
	instate_ns *ns = ns_of(s, "kv");
	instate_txn *t;
	instate_cursor *c = NULL;
	instate_buf k = { 0 }, v = { 0 };
	const char *keys[] = { "a1", "b", "b1", "b2", "ba", "c1", "\xff" };
	char got[256];
	size_t i;
	int rc;

	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	for (i = 0; i < sizeof keys / sizeof *keys; i++)
		CHECK_RC(instate_put(t, ns, keys[i], strlen(keys[i]), keys[i], strlen(keys[i]),
		                     NULL, 0), 0);
	/* a cursor in a write txn sees the txn's own writes */
	CHECK_RC(instate_cursor_open(t, ns, "b", 1, &c), 0);
	got[0] = '\0';
	while ((rc = instate_cursor_next(c, &k, &v, NULL)) == 0) {
		CHECK(k.len == v.len && memcmp(k.data, v.data, k.len) == 0);
		strncat(got, k.data, k.len);
		strcat(got, ",");
	}
	CHECK_RC(rc, INSTATE_NOTFOUND);
	CHECK(strcmp(got, "b,b1,b2,ba,") == 0);
	instate_cursor_close(c);
	CHECK_RC(instate_txn_commit(t), 0);

	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_cursor_open(t, ns, NULL, 0, &c), 0);
	got[0] = '\0';
	while ((rc = instate_cursor_next(c, &k, NULL, NULL)) == 0) {
		strncat(got, k.data, k.len);
		strcat(got, ",");
	}
	CHECK(strcmp(got, "a1,b,b1,b2,ba,c1,\xff,") == 0);
	instate_cursor_close(c);
	CHECK_RC(instate_cursor_open(t, ns, "b1", 2, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	CHECK(k.len == 2 && memcmp(k.data, "b1", 2) == 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	CHECK_RC(instate_cursor_open(t, ns, "zz", 2, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	CHECK_RC(instate_cursor_open(t, ns_of(s, "none"), NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	CHECK_RC(instate_cursor_open(t, ns, keys[0], INSTATE_KEY_MAX + 1, &c), INSTATE_INVALID);
	/* a cursor outliving its transaction reports ENDED, and closes safely */
	CHECK_RC(instate_cursor_open(t, ns, NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	instate_txn_abort(t);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_ENDED);
	instate_cursor_close(c);
	instate_cursor_close(NULL);
	instate_buf_free(&k);
	instate_buf_free(&v);
	instate_store_close(s);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_growth(void)
{
	instate_options o;
	instate_store *s;
	instate_ns *ns;
	instate_txn *t, *r;
	instate_stats st;
	instate_cursor *c;
	instate_buf k = { 0 };
	char *val;
	const size_t vlen = 10000, per_txn = 100, total = 20000; /* 200 MB */
	size_t i, j, n;
	int rc, retries = 0;
	uint64_t rev;
	double t0;

	val = malloc(vlen);
	memset(val, 'v', vlen);
	instate_options_init(&o);
	o.map_size = 1 << 20;
	o.sync = INSTATE_SYNC_NONE;

	/* many small committed transactions */
	t0 = now_s();
	s = open_store("grow1", &o);
	ns = ns_of(s, "big");
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size == 1 << 20);
	/* a snapshot and a cursor kept open across every growth */
	CHECK_RC(put1(s, ns, "k000000", "first", 0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &r), 0);
	CHECK_RC(instate_cursor_open(r, ns, NULL, 0, &c), 0);
	for (i = 0; i < total / per_txn; i++) {
		do {
			CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
			for (j = 0, rc = 0; j < per_txn && rc == 0; j++) {
				char key[16];
				snprintf(key, sizeof key, "k%06zu", i * per_txn + j + 1);
				rc = instate_put(t, ns, key, strlen(key), val, vlen, NULL, 0);
			}
			rc = rc ? rc : instate_txn_commit(t);
			if (rc)
				instate_txn_abort(t);
			retries += rc == INSTATE_RETRY;
		} while (rc == INSTATE_RETRY);
		if (rc) {
			CHECK_RC(rc, 0);
			break;
		}
	}
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	CHECK(k.len == 7 && memcmp(k.data, "k000000", 7) == 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	instate_txn_abort(r);
	CHECK(count1(s, ns) == total + 1);
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size >= 200u << 20 && st.used_bytes >= 200u << 20);
	CHECK(st.used_bytes <= st.map_size && st.max_size == (uint64_t)1 << 40);
	CHECK(st.namespaces == 1 && st.revision == total / per_txn + 1 && st.page_size >= 4096);
	CHECK(st.readers == 0 && st.max_readers >= 510 && !st.readonly);
	fprintf(stderr, "growth, small txns: %zu MB in %.2f s, map %llu MB, %d retries\n",
	        total * vlen >> 20, now_s() - t0, (unsigned long long)(st.map_size >> 20),
	        retries);
	instate_store_close(s);

	/* one large transaction, run again on RETRY */
	t0 = now_s();
	retries = 0;
	s = open_store("grow2", &o);
	ns = ns_of(s, "big");
	CHECK_RC(put1(s, ns, "k000000", "first", 0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &r), 0);
	CHECK_RC(instate_cursor_open(r, ns, NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	for (;;) {
		instate_txn *child;
		CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
		rc = instate_txn_begin(s, t, 0, &child);
		for (i = 1, rc = 0; i <= total && rc == 0; i++) {
			char key[16];
			snprintf(key, sizeof key, "k%06zu", i);
			rc = instate_put(child, ns, key, strlen(key), val, vlen, NULL, 0);
		}
		if (rc == 0)
			rc = instate_txn_commit(child);
		else {
			/* ended: everything after RETRY says so */
			CHECK_RC(instate_put(child, ns, "x", 1, "y", 1, NULL, 0), INSTATE_ENDED);
			CHECK_RC(instate_put(t, ns, "x", 1, "y", 1, NULL, 0), INSTATE_ENDED);
			instate_txn_abort(child);
		}
		if (rc == 0)
			rc = instate_txn_commit(t);
		else
			CHECK_RC(instate_txn_commit(t), rc);
		if (rc != INSTATE_RETRY)
			break;
		retries++;
	}
	CHECK_RC(rc, 0);
	CHECK(retries > 0);
	/* the old snapshot's cursor survived the remaps */
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	instate_txn_abort(r);
	CHECK_RC(instate_store_revision(s, &rev), 0);
	CHECK(rev == 2);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &r), 0);
	CHECK_RC(instate_cursor_open(r, ns, "k0199", 5, &c), 0);
	for (n = 0; (rc = instate_cursor_next(c, &k, NULL, NULL)) == 0; n++)
		;
	CHECK(n == 100);
	instate_cursor_close(c);
	instate_txn_abort(r);
	CHECK(count1(s, ns) == total + 1);
	CHECK_RC(instate_store_stats(s, &st), 0);
	fprintf(stderr, "growth, one txn: %zu MB in %.2f s, map %llu MB, %d retries\n",
	        total * vlen >> 20, now_s() - t0, (unsigned long long)(st.map_size >> 20),
	        retries);
	instate_store_close(s);

	/* reserve grows ahead; max_size is a hard limit */
	o.max_size = 4 << 20;
	s = open_store("grow3", &o);
	ns = ns_of(s, "x");
	CHECK_RC(instate_store_reserve(s, 3 << 20), 0);
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size == 4 << 20 && st.max_size == 4 << 20);
	CHECK_RC(instate_store_reserve(s, 5 << 20), INSTATE_MAP_FULL);
	for (i = 0, rc = 0; i < 1000 && rc == 0; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%06zu", i);
		CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
		rc = instate_put(t, ns, key, strlen(key), val, vlen, NULL, 0);
		if (rc == 0)
			rc = instate_txn_commit(t);
		else
			instate_txn_abort(t);
	}
	CHECK_RC(rc, INSTATE_MAP_FULL);
	CHECK(i > 100);
	/* what was committed is intact, and smaller writes still fit */
	CHECK(count1(s, ns) == i - 1);
	instate_store_close(s);
	instate_buf_free(&k);
	free(val);
}

/* Another process grows the map past ours and creates a namespace, with
 * raw LMDB and the layout of docs/FORMAT.md. */
static int other_process_writes(const char *dir)
{
	MDB_env *env;
	MDB_txn *t;
	MDB_dbi meta, dbi;
	MDB_val k, d;
	unsigned char v[5] = { 0, 0, 0, 0, 1 }, *nsid;
	static unsigned char rec[5 + 50000];
	uint32_t crc;
	int i, rc;

	/* flags: checksum, no expiry, no version; then the CRC-32C of the key,
	 * the flags byte and the payload, big-endian (docs/FORMAT.md section 2) */
	rec[0] = 0x04;
	memset(rec + 5, 'p', sizeof rec - 5);

	if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
	    mdb_env_set_mapsize(env, 64 << 20) || mdb_env_open(env, dir, 0, 0600))
		return 1;
	if ((rc = mdb_txn_begin(env, NULL, 0, &t)) || (rc = mdb_dbi_open(t, "__meta", 0, &meta)) ||
	    (rc = mdb_dbi_open(t, "xp", MDB_CREATE, &dbi)))
		return 2;
	k.mv_data = "nsid";
	k.mv_size = 4;
	if (mdb_get(t, meta, &k, &d) || d.mv_size != 4)
		return 3;
	nsid = d.mv_data;
	memcpy(v, nsid, 4);
	v[3]++; /* small counters in this test */
	d.mv_data = v;
	d.mv_size = 4;
	if (mdb_put(t, meta, &k, &d, 0))
		return 4;
	k.mv_data = "ns:xp";
	k.mv_size = 5;
	d.mv_size = 5;
	if (mdb_put(t, meta, &k, &d, 0))
		return 5;
	for (i = 0; i < 400; i++) { /* 20 MB */
		char key[16];
		snprintf(key, sizeof key, "p%04d", i);
		k.mv_data = key;
		k.mv_size = strlen(key);
		crc = instate_crc32c(instate_crc32c(instate_crc32c(0, key, k.mv_size), rec, 1),
		                     rec + 5, sizeof rec - 5);
		rec[1] = (unsigned char)(crc >> 24);
		rec[2] = (unsigned char)(crc >> 16);
		rec[3] = (unsigned char)(crc >> 8);
		rec[4] = (unsigned char)crc;
		d.mv_data = rec;
		d.mv_size = sizeof rec;
		if (mdb_put(t, dbi, &k, &d, 0))
			return 6;
	}
	if (mdb_txn_commit(t))
		return 7;
	mdb_env_close(env);
	return 0;
}

static void test_other_process(void)
{
	instate_options o;
	instate_store *s;
	instate_ns *ns;
	instate_txn *r, *t;
	instate_cursor *c;
	instate_buf k = { 0 }, v = { 0 };
	instate_stats st;
	pid_t pid;
	int status = -1;

	instate_options_init(&o);
	o.map_size = 1 << 20;
	s = open_store("xproc", &o);
	ns = ns_of(s, "mine");
	CHECK_RC(put1(s, ns, "m1", "one", 0), 0);
	CHECK_RC(put1(s, ns, "m2", "two", 0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &r), 0);
	CHECK_RC(instate_cursor_open(r, ns, NULL, 0, &c), 0);
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);

	/* exec: a fresh process, which owes nothing to this one's state */
	pid = fork();
	if (pid == 0) {
		execl(self_exe, self_exe, "--other-process", tpath("xproc"), (char *)NULL);
		_exit(127);
	}
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* the new snapshot adopts the bigger map and sees the new namespace */
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_get(t, ns_of(s, "xp"), "p0399", 5, &v, NULL), 0);
	CHECK(v.len == 50000 && v.data[0] == 'p');
	instate_txn_abort(t);
	CHECK_RC(instate_store_stats(s, &st), 0);
	CHECK(st.map_size >= 20 << 20 && st.namespaces == 2);
	/* the old snapshot and its cursor carry on */
	CHECK_RC(instate_cursor_next(c, &k, NULL, NULL), 0);
	CHECK(k.len == 2 && memcmp(k.data, "m2", 2) == 0);
	CHECK_RC(instate_get(r, ns_of(s, "xp"), "p0399", 5, NULL, NULL), INSTATE_NOTFOUND);
	instate_cursor_close(c);
	instate_txn_abort(r);
	/* and writes go on */
	CHECK_RC(put1(s, ns_of(s, "xp"), "p9999", "mine", 0), 0);
	CHECK(count1(s, ns_of(s, "xp")) == 401);
	instate_buf_free(&k);
	instate_buf_free(&v);
	instate_store_close(s);
}

/* --owner-probe PATH PARENT: exit 3 when the store is owned by PARENT
 * (LOCKED naming it), 0 when this process could take the lock, else 1. */
static int owner_probe(const char *path, const char *parent)
{
	instate_store *s;
	uint64_t pid = 0;
	int rc;

	if (instate_store_open(path, NULL, &s))
		return 1;
	rc = instate_store_lock_owner(s, &pid);
	instate_store_close(s);
	if (rc == INSTATE_LOCKED)
		return pid == strtoull(parent, NULL, 10) ? 3 : 4;
	return rc == 0 ? 0 : 1;
}

/* --owner-hold PATH: take the lock and wait to be killed. */
static int owner_hold(const char *path)
{
	instate_store *s;

	if (instate_store_open(path, NULL, &s) || instate_store_lock_owner(s, NULL))
		return 1;
	for (;;)
		pause();
}

static int run_probe(const char *path)
{
	char parent[32];
	pid_t pid;
	int status = -1;

	snprintf(parent, sizeof parent, "%ld", (long)getpid());
	pid = fork();
	if (pid == 0) {
		execl(self_exe, self_exe, "--owner-probe", path, parent, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static void test_owner_lock(void)
{
	instate_options o;
	instate_store *s1, *s2, *ro;
	uint64_t pid = 0;
	char buf[64];
	FILE *f;
	pid_t child;
	struct timespec tick = { 0, 10000000 };
	int i, status, rc = -1;

	instate_options_init(&o);
	s1 = open_store("owner", &o);
	CHECK_RC(instate_store_lock_owner(s1, &pid), 0);
	CHECK(pid == (uint64_t)getpid());
	/* the lock file names this process */
	f = fopen(tpath("owner/owner.lock"), "r");
	CHECK(f && fgets(buf, sizeof buf, f) && strtoull(buf, NULL, 10) == (uint64_t)getpid());
	if (f)
		fclose(f);
	CHECK_RC(instate_store_lock_owner(s1, NULL), 0); /* again: nothing */
	/* one process is one owner: another handle takes it too */
	s2 = open_store("owner", &o);
	CHECK_RC(instate_store_lock_owner(s2, &pid), 0);
	CHECK(run_probe(tpath("owner")) == 3);
	/* held while either owning handle is open */
	instate_store_close(s1);
	CHECK(run_probe(tpath("owner")) == 3);
	instate_store_close(s2);
	CHECK(run_probe(tpath("owner")) == 0);
	/* emptied at a clean release */
	f = fopen(tpath("owner/owner.lock"), "r");
	CHECK(f && fgetc(f) == EOF);
	if (f)
		fclose(f);

	/* a read-only handle cannot own */
	o.readonly = 1;
	ro = open_store("owner", &o);
	CHECK_RC(instate_store_lock_owner(ro, &pid), INSTATE_READONLY);
	instate_store_close(ro);
	o.readonly = 0;

	/* a killed owner's lock is gone with it */
	child = fork();
	if (child == 0) {
		execl(self_exe, self_exe, "--owner-hold", tpath("owner"), (char *)NULL);
		_exit(127);
	}
	CHECK(child > 0);
	s1 = open_store("owner", &o);
	for (i = 0; i < 500; i++) {
		rc = instate_store_lock_owner(s1, &pid);
		if (rc != 0)
			break;
		/* not taken by the child yet: let it go again */
		instate_store_close(s1);
		s1 = open_store("owner", &o);
		nanosleep(&tick, NULL);
	}
	CHECK_RC(rc, INSTATE_LOCKED);
	CHECK(pid == (uint64_t)child);
	kill(child, SIGKILL);
	CHECK(waitpid(child, &status, 0) == child && WIFSIGNALED(status));
	CHECK_RC(instate_store_lock_owner(s1, &pid), 0);
	CHECK(pid == (uint64_t)getpid());
	instate_store_close(s1);

	/* the lock file must be the store's own: not a symlink */
	s1 = open_store("owner2", &o);
	CHECK(symlink(tpath("elsewhere"), tpath("owner2/owner.lock")) == 0);
	CHECK_RC(instate_store_lock_owner(s1, NULL), INSTATE_ACCESS);
	instate_store_close(s1);
	/* and beside a single-file store */
	o.single_file = 1;
	s1 = open_store("owner3.db", &o);
	CHECK_RC(instate_store_lock_owner(s1, NULL), 0);
	f = fopen(tpath("owner3.db-owner"), "r");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	instate_store_close(s1);
	CHECK(strcmp(instate_strerror(INSTATE_LOCKED), "another process owns the store") == 0);
}

int main(int argc, char **argv)
{
	char cmd[128];

	if (argc == 3 && strcmp(argv[1], "--other-process") == 0)
		return other_process_writes(argv[2]);
	if (argc == 4 && strcmp(argv[1], "--owner-probe") == 0)
		return owner_probe(argv[2], argv[3]);
	if (argc == 3 && strcmp(argv[1], "--owner-hold") == 0)
		return owner_hold(argv[2]);
	self_exe = argv[0];
	strcpy(root, "/tmp/instate-test-store.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 2;
	}
	test_options_and_open();
	test_single_file_and_corrupt();
	test_layout_version();
	test_namespaces();
	test_records();
	test_transactions();
	test_ttl_and_purge();
	test_cursors();
	test_growth();
	test_other_process();
	test_owner_lock();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
