/*
 * test_writer.c - batches and the background writer: batches commit in
 * submission order, one transaction each; an error of a background commit
 * is reported once, by the next submit or flush, and the batches after it
 * are not committed (the store holds a prefix); flush waits; close waits
 * for pending batches; many threads submitting; a sync write while the
 * writer works neither deadlocks nor is BUSY; flush inside this thread's
 * write transaction is BUSY instead of a deadlock.
 */
#include "check.h"

#include <pthread.h>

static instate_store *open_store(const char *name, uint64_t max_size)
{
	instate_options o;
	instate_store *s = NULL;
	int rc;

	instate_options_init(&o);
	o.sync = INSTATE_SYNC_NONE;
	if (max_size) {
		o.map_size = max_size;
		o.max_size = max_size;
	}
	rc = instate_store_open(tpath(name), &o, &s);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", name, instate_strerror(rc));
		exit(2);
	}
	return s;
}

/* The value of key as an integer (its decimal bytes), -1 if absent. */
/* The number stored at key in transaction t, -1 if absent. */
static long txn_long(instate_txn *t, instate_ns *ns, const char *key)
{
	instate_buf b = { 0 };
	char tmp[32];
	long v = -1;

	if (instate_get(t, ns, key, strlen(key), &b, NULL) == 0 && b.len < sizeof tmp) {
		memcpy(tmp, b.data, b.len);
		tmp[b.len] = '\0';
		v = atol(tmp);
	}
	instate_buf_free(&b);
	return v;
}

static long get_long(instate_store *s, instate_ns *ns, const char *key)
{
	instate_txn *t;
	long v;

	if (instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t))
		return -2;
	v = txn_long(t, ns, key);
	instate_txn_abort(t);
	return v;
}

static instate_batch *batch_of(instate_ns *ns, const char *key, long v)
{
	instate_batch *b;
	char val[32];

	if (instate_batch_new(&b))
		exit(2);
	snprintf(val, sizeof val, "%ld", v);
	if (instate_batch_put(b, ns, key, strlen(key), val, strlen(val), NULL, INSTATE_IFCHANGED))
		exit(2);
	return b;
}

/* Batches: argument checks, apply in a caller's transaction, skips. */
static void test_batch(void)
{
	instate_store *s = open_store("batch", 0);
	instate_ns *ns = ns_of(s, "b");
	instate_batch *b;
	instate_txn *t;
	size_t written = 99, bad = 99;
	char big[INSTATE_KEY_MAX + 1];

	memset(big, 'k', sizeof big);
	CHECK_RC(instate_batch_new(&b), 0);
	CHECK(instate_batch_count(b) == 0);
	CHECK_RC(instate_batch_put(b, ns, "", 0, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_batch_put(b, ns, big, sizeof big, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_batch_put(b, NULL, "k", 1, "v", 1, NULL, 0), INSTATE_INVALID);
	CHECK_RC(instate_batch_put(b, ns, "k", 1, "v", 1, NULL, 0x100), INSTATE_INVALID);
	CHECK(instate_batch_count(b) == 0);
	CHECK_RC(instate_batch_put(b, ns, "a", 1, "1", 1, NULL, INSTATE_IFCHANGED), 0);
	CHECK_RC(instate_batch_put(b, ns, "b", 1, "2", 1, NULL, 0), 0);
	CHECK_RC(instate_batch_del(b, ns, "zz", 2), 0);   /* absent: skipped */
	CHECK(instate_batch_count(b) == 3);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_batch_apply(b, t, &written, &bad), 0);
	CHECK(written == 2);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK(get_long(s, ns, "a") == 1 && get_long(s, ns, "b") == 2);
	/* again: "a" is unchanged (IFCHANGED), "b" rewritten */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_batch_apply(b, t, &written, &bad), 0);
	CHECK(written == 1);
	instate_txn_abort(t);
	/* truncate: the first ops stay whole */
	CHECK_RC(instate_batch_put(b, ns, "c", 1, "333", 3, NULL, 0), 0);
	instate_batch_truncate(b, 5);                      /* more than it holds */
	CHECK(instate_batch_count(b) == 4);
	instate_batch_truncate(b, 2);
	CHECK(instate_batch_count(b) == 2);
	CHECK_RC(instate_batch_put(b, ns, "d", 1, "4", 1, NULL, 0), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_batch_apply(b, t, &written, &bad), 0);
	CHECK(written == 2);                               /* b rewritten, d new */
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK(get_long(s, ns, "d") == 4 && get_long(s, ns, "c") == -1);
	instate_batch_clear(b);
	CHECK(instate_batch_count(b) == 0);
	CHECK_RC(instate_batch_del(b, ns, "a", 1), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_batch_apply(b, t, &written, NULL), 0);
	CHECK(written == 1);
	CHECK_RC(instate_txn_commit(t), 0);
	CHECK(get_long(s, ns, "a") == -1);
	/* a read transaction: the failing op is named */
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	bad = 99;
	CHECK(instate_batch_apply(b, t, &written, &bad) != 0);
	CHECK(bad == 0);
	instate_txn_abort(t);
	instate_batch_free(b);
	instate_batch_free(NULL);
	instate_store_close(s);
}

/* Order: a stream of batches on one key and a counter of batches; each
 * batch commits as one transaction, the last one wins, revisions count the
 * batches that changed something. */
static void test_order(void)
{
	instate_store *s = open_store("order", 0);
	instate_ns *ns = ns_of(s, "o");
	instate_writer *w;
	uint64_t ticket = 0, rev0 = 0, rev = 0;
	char err[INSTATE_ERRMSG_MAX];
	long i;

	CHECK_RC(instate_store_revision(s, &rev0), 0);
	CHECK_RC(instate_writer_open(s, &w), 0);
	for (i = 1; i <= 500; i++) {
		instate_batch *b = batch_of(ns, "x", i);
		char key[32];
		snprintf(key, sizeof key, "k%03ld", i);
		/* a second op in the same batch: never seen without the first */
		CHECK_RC(instate_batch_put(b, ns, key, strlen(key), "1", 1, NULL, 0), 0);
		CHECK_RC(instate_writer_submit(w, b, &ticket, err), 0);
		CHECK(ticket == (uint64_t)i);
		if (i % 100 == 0) {
			/* a snapshot racing the writer sees whole batches: x == n
			 * keys (one snapshot: a commit between two reads would
			 * show the next batch's key) */
			instate_txn *t;
			long x;
			char k2[32];
			CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
			x = txn_long(t, ns, "x");
			if (x > 0) {
				snprintf(k2, sizeof k2, "k%03ld", x);
				CHECK(txn_long(t, ns, k2) == 1);
				if (x < 500) {
					snprintf(k2, sizeof k2, "k%03ld", x + 1);
					CHECK(txn_long(t, ns, k2) == -1);
				}
			}
			instate_txn_abort(t);
		}
	}
	CHECK_RC(instate_writer_flush(w, &rev, err), 0);
	CHECK(rev == rev0 + 500);
	CHECK(get_long(s, ns, "x") == 500);
	/* an unchanged batch commits nothing */
	CHECK_RC(instate_writer_submit(w, batch_of(ns, "x", 500), &ticket, err), 0);
	CHECK(ticket == 501);
	CHECK_RC(instate_writer_flush(w, &rev, err), 0);
	CHECK(rev == rev0 + 500);
	{
		instate_writer_info info;
		instate_writer_info_get(w, &info);
		CHECK(info.submitted == 501 && info.done == 501 && info.error == 0);
	}
	CHECK_RC(instate_writer_submit(w, NULL, &ticket, err), INSTATE_INVALID);
	CHECK_RC(instate_writer_close(w, err), 0);
	CHECK_RC(instate_writer_close(NULL, err), 0);
	instate_store_close(s);
}

/* MAP_FULL in the background: reported once by the next submit (which
 * takes nothing), the batches after the failed one are not committed, and
 * after the report batches commit again. */
static void test_error(void)
{
	instate_store *s = open_store("full", 1 << 20);
	instate_ns *ns = ns_of(s, "e");
	instate_writer *w;
	instate_batch *b, *big;
	instate_txn *hold;
	char err[INSTATE_ERRMSG_MAX];
	char *blob = malloc(2 << 20);
	uint64_t ticket;
	int rc;

	memset(blob, 'x', 2 << 20);
	CHECK_RC(instate_writer_open(s, &w), 0);
	/* Hold the writer slot while submitting, so that the writer starts on
	 * batch 1 only once all four are queued. */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &hold), 0);
	CHECK_RC(instate_writer_submit(w, batch_of(ns, "n", 1), &ticket, err), 0);
	CHECK_RC(instate_batch_new(&big), 0);
	CHECK_RC(instate_batch_put(big, ns, "huge", 4, blob, 2 << 20, NULL, 0), 0);
	CHECK_RC(instate_writer_submit(w, big, &ticket, err), 0);
	CHECK(ticket == 2);
	/* submitted after the failing one, before its report: dropped */
	CHECK_RC(instate_writer_submit(w, batch_of(ns, "n", 3), &ticket, err), 0);
	CHECK_RC(instate_writer_submit(w, batch_of(ns, "after", 4), &ticket, err), 0);
	instate_txn_abort(hold);
	{
		/* wait for all four without reporting */
		instate_writer_info info;
		int spins = 0;
		do {
			instate_writer_info_get(w, &info);
		} while (info.done < 4 && ++spins < 100000000);
		CHECK(info.done == 4);
		CHECK(info.error == INSTATE_MAP_FULL);
	}
	b = batch_of(ns, "n", 5);
	err[0] = '\0';
	rc = instate_writer_submit(w, b, &ticket, err);
	CHECK_RC(rc, INSTATE_MAP_FULL);
	CHECK(strstr(err, "async batch 2 failed: cannot save 'huge' in namespace 'e'") == err);
	CHECK(get_long(s, ns, "n") == 1);
	CHECK(get_long(s, ns, "after") == -1);
	/* reported once: the batch we still own goes in now and commits */
	CHECK_RC(instate_writer_submit(w, b, &ticket, err), 0);
	CHECK(ticket == 5);
	CHECK_RC(instate_writer_flush(w, NULL, err), 0);
	CHECK(get_long(s, ns, "n") == 5);

	/* reported by flush too, and by close */
	big = NULL;
	CHECK_RC(instate_batch_new(&big), 0);
	CHECK_RC(instate_batch_put(big, ns, "huge", 4, blob, 2 << 20, NULL, 0), 0);
	CHECK_RC(instate_writer_submit(w, big, &ticket, err), 0);
	CHECK_RC(instate_writer_flush(w, NULL, err), INSTATE_MAP_FULL);
	CHECK(strstr(err, "async batch 6 failed") == err);
	CHECK_RC(instate_writer_flush(w, NULL, err), 0);
	CHECK_RC(instate_batch_new(&big), 0);
	CHECK_RC(instate_batch_put(big, ns, "huge", 4, blob, 2 << 20, NULL, 0), 0);
	CHECK_RC(instate_writer_submit(w, big, &ticket, err), 0);
	CHECK_RC(instate_writer_close(w, err), INSTATE_MAP_FULL);
	CHECK(strstr(err, "async batch 7 failed") == err);
	free(blob);
	instate_store_close(s);
}

/* Close with batches pending commits all of them first. */
static void test_close_pending(void)
{
	instate_store *s = open_store("close", 0);
	instate_ns *ns = ns_of(s, "c");
	instate_writer *w;
	char err[INSTATE_ERRMSG_MAX];
	long i;

	CHECK_RC(instate_writer_open(s, &w), 0);
	for (i = 1; i <= 300; i++)
		CHECK_RC(instate_writer_submit(w, batch_of(ns, "c", i), NULL, err), 0);
	CHECK_RC(instate_writer_close(w, err), 0);
	CHECK(get_long(s, ns, "c") == 300);

	/* the store handle closed first: the writer keeps the environment */
	CHECK_RC(instate_writer_open(s, &w), 0);
	for (i = 301; i <= 600; i++)
		CHECK_RC(instate_writer_submit(w, batch_of(ns, "c", i), NULL, err), 0);
	instate_store_close(s);
	CHECK_RC(instate_writer_close(w, err), 0);
	s = open_store("close", 0);
	ns = ns_of(s, "c");
	CHECK(get_long(s, ns, "c") == 600);
	instate_store_close(s);

	/* a read-only store has no writer */
	{
		instate_options o;
		instate_store *r;
		instate_options_init(&o);
		o.readonly = 1;
		CHECK_RC(instate_store_open(tpath("close"), &o, &r), 0);
		w = (instate_writer *)&o;
		CHECK_RC(instate_writer_open(r, &w), INSTATE_READONLY);
		CHECK(w == NULL);
		instate_store_close(r);
	}
}

/* Many threads submitting at once: each thread's batches commit in its own
 * order, none is lost, tickets are unique. */
#define SUBMITTERS 4
#define PER_THREAD 400

static instate_writer *shared_w;
static instate_ns *shared_ns;

static void *submitter(void *arg)
{
	long id = (long)(intptr_t)arg, i;
	char key[32], err[INSTATE_ERRMSG_MAX];

	snprintf(key, sizeof key, "t%ld", id);
	for (i = 1; i <= PER_THREAD; i++) {
		instate_batch *b = batch_of(shared_ns, key, i);
		char k2[32];
		snprintf(k2, sizeof k2, "t%ld.%ld", id, i);
		instate_batch_put(b, shared_ns, k2, strlen(k2), "1", 1, NULL, 0);
		if (instate_writer_submit(shared_w, b, NULL, err)) {
			instate_batch_free(b);
			return (void *)1;
		}
		if (i % 97 == 0 && instate_writer_flush(shared_w, NULL, err))
			return (void *)1;
	}
	return NULL;
}

static void test_threads(void)
{
	instate_store *s = open_store("threads", 0);
	pthread_t th[SUBMITTERS];
	char err[INSTATE_ERRMSG_MAX];
	instate_writer_info info;
	long i;

	shared_ns = ns_of(s, "t");
	CHECK_RC(instate_writer_open(s, &shared_w), 0);
	for (i = 0; i < SUBMITTERS; i++)
		pthread_create(&th[i], NULL, submitter, (void *)(intptr_t)i);
	for (i = 0; i < SUBMITTERS; i++) {
		void *r;
		pthread_join(th[i], &r);
		CHECK(r == NULL);
	}
	CHECK_RC(instate_writer_flush(shared_w, NULL, err), 0);
	instate_writer_info_get(shared_w, &info);
	CHECK(info.submitted == SUBMITTERS * PER_THREAD && info.done == info.submitted);
	for (i = 0; i < SUBMITTERS; i++) {
		char key[32];
		long j, missing = 0;
		snprintf(key, sizeof key, "t%ld", i);
		CHECK(get_long(s, shared_ns, key) == PER_THREAD);
		for (j = 1; j <= PER_THREAD; j++) {
			char k2[32];
			snprintf(k2, sizeof k2, "t%ld.%ld", i, j);
			if (get_long(s, shared_ns, k2) != 1)
				missing++;
		}
		CHECK(missing == 0);
	}
	CHECK_RC(instate_writer_close(shared_w, err), 0);
	instate_store_close(s);
}

/* Other write transactions of the process. A sync write from the
 * submitting thread while the writer commits waits for the slot: never
 * BUSY, never a deadlock. Flush or close from a thread holding a write
 * transaction, with batches pending, is BUSY (the writer waits for that
 * very transaction); with nothing pending it just returns. */
static void test_sync_writes(void)
{
	instate_store *s = open_store("sync", 0);
	instate_ns *ns = ns_of(s, "s");
	instate_writer *w;
	instate_txn *t;
	char err[INSTATE_ERRMSG_MAX];
	long i;
	int busy = 0, ok = 0;

	CHECK_RC(instate_writer_open(s, &w), 0);
	for (i = 1; i <= 200; i++) {
		int rc;
		CHECK_RC(instate_writer_submit(w, batch_of(ns, "bg", i), NULL, err), 0);
		rc = put_record(s, ns, "fg", "1", 0, 0);
		if (rc == INSTATE_BUSY)
			busy++;
		else if (rc == 0)
			ok++;
	}
	CHECK(busy == 0 && ok == 200);
	CHECK_RC(instate_writer_flush(w, NULL, err), 0);

	/* flush inside this thread's write transaction */
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_writer_flush(w, NULL, err), 0);        /* nothing pending */
	CHECK_RC(instate_writer_submit(w, batch_of(ns, "bg", 1000), NULL, err), 0);
	CHECK_RC(instate_writer_flush(w, NULL, err), INSTATE_BUSY);
	CHECK(strstr(err, "inside a write transaction") != NULL);
	CHECK_RC(instate_writer_close(w, err), INSTATE_BUSY);
	CHECK_RC(instate_put(t, ns, "in-txn", 6, "7", 1, NULL, 0), 0);
	CHECK_RC(instate_txn_commit(t), 0);
	/* the writer goes on once the transaction has ended */
	CHECK_RC(instate_writer_flush(w, NULL, err), 0);
	CHECK(get_long(s, ns, "bg") == 1000);
	CHECK(get_long(s, ns, "in-txn") == 7);
	CHECK_RC(instate_writer_close(w, err), 0);
	instate_store_close(s);
}

/* Two handles of one store, each with a writer: both commit; a flush of
 * one does not wait for the other. */
static void test_two_handles(void)
{
	instate_store *a = open_store("two", 0), *b = open_store("two", 0);
	instate_ns *na = ns_of(a, "n"), *nb = ns_of(b, "n");
	instate_writer *wa, *wb;
	char err[INSTATE_ERRMSG_MAX];
	long i;

	CHECK_RC(instate_writer_open(a, &wa), 0);
	CHECK_RC(instate_writer_open(b, &wb), 0);
	for (i = 1; i <= 100; i++) {
		CHECK_RC(instate_writer_submit(wa, batch_of(na, "a", i), NULL, err), 0);
		CHECK_RC(instate_writer_submit(wb, batch_of(nb, "b", i), NULL, err), 0);
	}
	CHECK_RC(instate_writer_flush(wa, NULL, err), 0);
	CHECK(get_long(b, nb, "a") == 100);
	CHECK_RC(instate_writer_close(wb, err), 0);
	CHECK(get_long(a, na, "b") == 100);
	CHECK_RC(instate_writer_close(wa, err), 0);
	instate_store_close(b);
	/* closing one handle left the other's store working */
	CHECK(get_long(a, na, "a") == 100);
	instate_store_close(a);
}

int main(void)
{
	snprintf(root, sizeof root, "/tmp/instate-writer-XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 2;
	}
	test_batch();
	test_order();
	test_error();
	test_close_pending();
	test_threads();
	test_sync_writes();
	test_two_handles();
	{
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", root);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup of %s failed\n", root);
	}
	printf("test_writer: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
