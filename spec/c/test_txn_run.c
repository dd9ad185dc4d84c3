/*
 * test_txn_run.c - the RETRY contract and instate_txn_run(): a write
 * transaction larger than the map is run again, in a new transaction, until
 * the map has grown enough, with every handle freed on every path (make
 * sanitize runs this with leak detection on); a function's own error
 * aborts; a function that keeps returning RETRY stops after
 * INSTATE_TXN_RUN_ATTEMPTS runs. The values are written with the public
 * codec and read back with its parser. Portable C: it runs on Linux and,
 * cross-built with mingw-w64, under Wine.
 */
#include "check.h"
#include "instate_os.h"
#include "os_scratch.h"

#ifdef _WIN32
#include <windows.h>
static int rmdir(const char *path)
{
	return RemoveDirectoryA(path) ? 0 : -1;
}
#else
#include <unistd.h>
#endif

#define RECORDS 300
#define PAYLOAD 10000

typedef struct work {
	instate_ns *ns;
	int runs;           /* calls of the function */
	int retries_seen;   /* writes that returned INSTATE_RETRY */
	int mode;
	int result;         /* mode RESULT: what to return */
	instate_store *s;   /* mode NESTED_RUN */
	instate_buf val;
} work;

enum { PLAIN, IGNORE_RETRY, CHILD_LEFT_OPEN, RESULT, NESTED_RUN, READ };

/* {n = i, payload = <PAYLOAD bytes>} */
static int encode(instate_buf *b, int i)
{
	static unsigned char payload[PAYLOAD];
	instate_mp_writer w;

	memset(payload, 'a' + i % 26, sizeof payload);
	b->len = 0;
	instate_mp_writer_init(&w, b);
	instate_mp_write_map(&w, 2);
	instate_mp_write_str(&w, "n", 1);
	instate_mp_write_int(&w, i);
	instate_mp_write_str(&w, "payload", 7);
	instate_mp_write_bin(&w, payload, sizeof payload);
	return instate_mp_writer_finish(&w);
}

/* The record of key i holds encode(i). */
static int decodes_as(const instate_buf *b, int i)
{
	instate_mp_parser p;
	instate_mp_item it;
	int ok = 1;

	instate_mp_parser_init(&p, b->data, b->len);
	ok &= instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_MAP && it.len == 2;
	ok &= instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_STR && it.len == 1;
	ok &= instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_UINT &&
	      it.v.u == (uint64_t)i;
	ok &= instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_STR && it.len == 7;
	ok &= instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_BIN &&
	      it.len == PAYLOAD && it.data[PAYLOAD - 1] == 'a' + i % 26;
	ok &= instate_mp_parser_next(&p, &it) == INSTATE_NOTFOUND;
	return ok;
}

static int put_all(instate_txn *txn, work *wk)
{
	int i, rc = 0;

	for (i = 0; i < RECORDS && rc == 0; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%04d", i);
		if ((rc = encode(&wk->val, i)) != 0)
			break;
		rc = instate_put(txn, wk->ns, key, strlen(key), wk->val.data, wk->val.len, NULL, 0);
		if (rc == INSTATE_RETRY)
			wk->retries_seen++;
	}
	return rc;
}

static int fn(instate_txn *txn, void *ud)
{
	work *wk = ud;
	instate_txn *child;
	int rc;

	wk->runs++;
	switch (wk->mode) {
	case PLAIN:
		return put_all(txn, wk);
	case IGNORE_RETRY:
		/* a careless function: the commit still sees the RETRY */
		put_all(txn, wk);
		return 0;
	case CHILD_LEFT_OPEN:
		/* a failure inside a nested transaction, which is left open:
		 * the abort of the top level frees it */
		if ((rc = instate_txn_begin(wk->s, txn, 0, &child)) != 0)
			return rc;
		rc = put_all(child, wk);
		return rc ? rc : instate_txn_commit(child);
	case RESULT:
		put_all(txn, wk);
		return wk->result;
	case NESTED_RUN:
		return instate_txn_run(wk->s, 0, fn, ud);
	case READ: {
		uint64_t n = 0;
		rc = instate_count(txn, wk->ns, &n);
		return rc ? rc : (int)n;
	}
	}
	return INSTATE_INVALID;
}

static instate_store *open_small(const char *name)
{
	instate_options o;
	instate_store *s = NULL;
	int rc;

	instate_options_init(&o);
	o.map_size = 1 << 20; /* 3 MB of records need two growths at least */
	o.sync = INSTATE_SYNC_NONE;
	rc = instate_store_open(tpath(name), &o, &s);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", name, instate_strerror(rc));
		exit(2);
	}
	return s;
}

static int all_there(instate_store *s, instate_ns *ns)
{
	instate_txn *t;
	instate_buf b = {0};
	int i, ok = 1;

	if (instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t) != 0)
		return 0;
	for (i = 0; i < RECORDS && ok; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%04d", i);
		ok = instate_get(t, ns, key, strlen(key), &b, NULL) == 0 && decodes_as(&b, i);
	}
	instate_txn_abort(t);
	instate_buf_free(&b);
	return ok;
}

static uint64_t revision(instate_store *s)
{
	uint64_t r = 0;
	instate_store_revision(s, &r);
	return r;
}

static void remove_store(const char *name)
{
	char p[256];
	snprintf(p, sizeof p, "%s/data.mdb", tpath(name));
	instate__os_unlink(p);
	snprintf(p, sizeof p, "%s/lock.mdb", tpath(name));
	instate__os_unlink(p);
	rmdir(tpath(name));
}

int main(void)
{
	static const char *const names[] = {"plain", "careless", "child", "user"};
	instate_store *s;
	instate_stats st;
	work wk;
	int mode, rc;

	if (os_scratch_root("txnrun") != 0)
		return 2;

	/* One transaction three times the map: run until it fits, every
	 * record there once, one revision. The same when the function ignores
	 * the RETRY of its writes, or leaves a nested transaction open. */
	for (mode = PLAIN; mode <= CHILD_LEFT_OPEN; mode++) {
		memset(&wk, 0, sizeof wk);
		s = open_small(names[mode]);
		wk.ns = ns_of(s, "big");
		wk.mode = mode;
		wk.s = s;
		CHECK_RC(instate_txn_run(s, 0, fn, &wk), 0);
		CHECK(wk.runs > 1 && wk.retries_seen == wk.runs - 1);
		CHECK(all_there(s, wk.ns));
		CHECK(revision(s) == 1);
		CHECK_RC(instate_store_stats(s, &st), 0);
		CHECK(st.map_size > 1 << 20);
		fprintf(stderr, "%s: %d runs, map %llu KiB\n", names[mode], wk.runs,
		        (unsigned long long)(st.map_size >> 10));
		instate_buf_free(&wk.val);
		instate_store_close(s);
	}

	/* The function's own error: aborted, returned as is, nothing written;
	 * the store's writer slot is free again (the next run works). */
	memset(&wk, 0, sizeof wk);
	s = open_small(names[RESULT]);
	wk.ns = ns_of(s, "big");
	wk.mode = RESULT;
	wk.result = 42;
	CHECK_RC(instate_store_reserve(s, 8 << 20), 0); /* no growth: one run */
	CHECK_RC(instate_txn_run(s, 0, fn, &wk), 42);
	CHECK(wk.runs == 1 && revision(s) == 0);
	wk.result = INSTATE_CORRUPT;
	CHECK_RC(instate_txn_run(s, 0, fn, &wk), INSTATE_CORRUPT);
	CHECK(wk.runs == 2 && revision(s) == 0);

	/* A function that returns RETRY itself, whatever the map: bounded. */
	wk.runs = 0;
	wk.result = INSTATE_RETRY;
	CHECK_RC(instate_txn_run(s, 0, fn, &wk), INSTATE_RETRY);
	CHECK(wk.runs == INSTATE_TXN_RUN_ATTEMPTS && revision(s) == 0);

	/* A write run inside a write run of the same thread: BUSY, at once. */
	wk.runs = 0;
	wk.mode = NESTED_RUN;
	wk.s = s;
	CHECK_RC(instate_txn_run(s, 0, fn, &wk), INSTATE_BUSY);
	CHECK(wk.runs == 1);

	/* Committed work, then a snapshot run: fn sees it. */
	wk.mode = PLAIN;
	CHECK_RC(instate_txn_run(s, 0, fn, &wk), 0);
	CHECK(all_there(s, wk.ns) && revision(s) == 1);
	wk.mode = READ;
	CHECK_RC(instate_txn_run(s, INSTATE_TXN_READ, fn, &wk), RECORDS);

	/* Misuse */
	CHECK_RC(instate_txn_run(NULL, 0, fn, &wk), INSTATE_INVALID);
	CHECK_RC(instate_txn_run(s, 0, NULL, &wk), INSTATE_INVALID);
	CHECK_RC(instate_txn_run(s, 0x80, fn, &wk), INSTATE_INVALID);
	instate_buf_free(&wk.val);
	instate_store_close(s);

	/* The contract by hand: after a RETRY from a write, the handle is
	 * ended (later writes say so, the commit says RETRY and frees it). */
	s = open_small("byhand");
	memset(&wk, 0, sizeof wk);
	wk.ns = ns_of(s, "big");
	{
		instate_txn *t;
		CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
		rc = put_all(t, &wk);
		CHECK_RC(rc, INSTATE_RETRY);
		CHECK_RC(instate_put(t, wk.ns, "x", 1, "y", 1, NULL, 0), INSTATE_ENDED);
		CHECK_RC(instate_txn_commit(t), INSTATE_RETRY); /* freed */
		CHECK(revision(s) == 0);
	}
	instate_buf_free(&wk.val);
	instate_store_close(s);

	remove_store("plain");
	remove_store("careless");
	remove_store("child");
	remove_store("user");
	remove_store("byhand");
	rmdir(root);
	printf("test_txn_run: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
