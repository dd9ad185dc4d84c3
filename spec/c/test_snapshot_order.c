/*
 * test_snapshot_order.c - snapshots begun one after another in a thread
 * never go back in time: each sees a revision, and data, at least as new as
 * the one before, while a writer commits as fast as it can.
 *
 * LMDB picks a read transaction's meta page by the txnid it read first; a
 * reader preempted between the two can copy the meta page of a commit two
 * ahead, written but not yet published, and the next snapshot (taken before
 * the publication) sees the commit in between: one revision back. The
 * store's begin must hide that. To make the race likely rather than rare,
 * this program interposes pwrite() (POSIX builds) and, after each write of
 * an LMDB meta page, waits a little before returning, which widens the
 * window between the write and the publication. Last, the case where the
 * newer revision is never published: a snapshot waits, then gives up.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#ifndef _WIN32
#define _GNU_SOURCE /* RTLD_NEXT */
#endif
#include "check.h"
#include "instate_store_int.h" /* rev_seen, for the give-up case */

#include <pthread.h>
#include <time.h>

#ifndef _WIN32
#include <dlfcn.h>
#include <sys/types.h>
#include <unistd.h>
#endif

#define READERS 6
#define COMMITS 5000

static int writer_done;
static long stale_total, reads_total;
static char first_stale[128];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#ifndef _WIN32
/* LMDB writes its two meta pages, pages 0 and 1 of the data file, at
 * offsets below 2 pages of 64 KiB at most; data pages come after. */
static ssize_t meta_pause(ssize_t r, off_t off)
{
	if (r > 0 && off < 2 * 65536 && !__atomic_load_n(&writer_done, __ATOMIC_RELAXED)) {
		struct timespec ts = { 0, 20 * 1000 };
		nanosleep(&ts, NULL);
	}
	return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	return meta_pause(real(fd, buf, n, off), off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
	return meta_pause(real(fd, buf, n, off), off);
}
#endif

static instate_store *open_shared(void)
{
	instate_options o;
	instate_store *s = NULL;
	int rc;

	instate_options_init(&o);
	o.sync = INSTATE_SYNC_NONE;
	rc = instate_store_open(tpath("store"), &o, &s);
	if (rc) {
		fprintf(stderr, "open: %s\n", instate_strerror(rc));
		exit(2);
	}
	return s;
}

/* COMMITS transactions, each setting n to its revision. */
static void *writer(void *arg)
{
	instate_store *s = open_shared();
	instate_ns *ns = ns_of(s, "order");
	int i, rc = 0;

	(void)arg;
	for (i = 0; i < COMMITS && rc == 0; i++) {
		instate_txn *t;
		uint64_t rev;

		if ((rc = instate_txn_begin(s, NULL, 0, &t)) != 0)
			break;
		rev = instate_txn_revision(t);
		rc = instate_put(t, ns, "n", 1, &rev, sizeof rev, NULL, 0);
		if (rc == 0)
			rc = instate_txn_commit(t);
		else
			instate_txn_abort(t);
	}
	CHECK_RC(rc, 0);
	__atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
	instate_store_close(s);
	return NULL;
}

/* Snapshots back to back: the revision and n never decrease, and n is the
 * snapshot's revision (the writer's last commit in it). */
static void *reader(void *arg)
{
	instate_store *s = open_shared();
	instate_ns *ns = ns_of(s, "order");
	instate_buf b = { 0 };
	uint64_t last = 0;
	long stale = 0, reads = 0, bad = 0;
	int rc = 0;

	(void)arg;
	while (!__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE)) {
		instate_txn *t;
		uint64_t rev, n = 0;

		if ((rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t)) != 0)
			break;
		rev = instate_txn_revision(t);
		rc = instate_get(t, ns, "n", 1, &b, NULL);
		instate_txn_abort(t);
		if (rc == 0 && b.len == sizeof n)
			memcpy(&n, b.data, sizeof n);
		else if (rc != INSTATE_NOTFOUND)
			break;
		rc = 0;
		reads++;
		if (n != rev)
			bad++;
		if (rev < last) {
			pthread_mutex_lock(&mu);
			if (!first_stale[0])
				snprintf(first_stale, sizeof first_stale,
				         "revision %llu after %llu", (unsigned long long)rev,
				         (unsigned long long)last);
			pthread_mutex_unlock(&mu);
			stale++;
		}
		last = rev;
	}
	CHECK_RC(rc, 0);
	CHECK(bad == 0);
	pthread_mutex_lock(&mu);
	stale_total += stale;
	reads_total += reads;
	pthread_mutex_unlock(&mu);
	instate_buf_free(&b);
	instate_store_close(s);
	return NULL;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A newer revision seen than the store will ever publish (a writer of
 * another process killed between its meta write and the publication):
 * the snapshot waits about 2 s, then takes the store's revision as the
 * truth, and the next one begins at once. */
static void give_up(instate_store *s)
{
	instate_txn *t = NULL;
	uint64_t rev = 0, got = 0;
	double t0, waited;

	CHECK_RC(instate_store_revision(s, &rev), 0);
	__atomic_store_n(&s->env->rev_seen, rev + 5, __ATOMIC_RELEASE);
	t0 = now_s();
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	waited = now_s() - t0;
	CHECK(t && instate_txn_revision(t) == rev);
	instate_txn_abort(t);
	CHECK(waited > 1.0 && waited < 60.0);
	t0 = now_s();
	CHECK_RC(instate_store_revision(s, &got), 0);
	CHECK(got == rev);
	CHECK(now_s() - t0 < 0.5);
}

int main(void)
{
	pthread_t w, r[READERS];
	instate_store *s;
	char cmd[128];
	int i;

	snprintf(root, sizeof root, "/tmp/instate-order.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 2;
	}
	s = open_shared(); /* the environment stays open across the threads */
	for (i = 0; i < READERS; i++)
		pthread_create(&r[i], NULL, reader, NULL);
	pthread_create(&w, NULL, writer, NULL);
	pthread_join(w, NULL);
	for (i = 0; i < READERS; i++)
		pthread_join(r[i], NULL);
	give_up(s);
	instate_store_close(s);

	if (stale_total)
		fprintf(stderr, "stale snapshots: %ld of %ld, the first %s\n", stale_total,
		        reads_total, first_stale);
	CHECK(stale_total == 0);
	CHECK(reads_total > READERS);

	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
