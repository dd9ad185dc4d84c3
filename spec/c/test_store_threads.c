/*
 * test_store_threads.c - several threads, each with its own handle on one
 * store opened with a 1 MiB map: writers queue for the writer slot (never
 * BUSY across threads), readers never see half a transaction, a thread
 * forces map growth with instate_store_reserve() meanwhile, and the final
 * counts are exact.
 */
#include "instate.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WRITERS 3
#define READERS 2
#define ITERS 2000
#define FILLER 4000

static char path[64];
static int failures, writers_done, busy_seen, retries, reads, scans;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static void sleep_us(long us)
{
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
}

static void fail(const char *what, int rc)
{
	pthread_mutex_lock(&mu);
	failures++;
	fprintf(stderr, "%s: %d %s\n", what, rc, instate_strerror(rc));
	pthread_mutex_unlock(&mu);
}

static instate_store *open_shared(void)
{
	instate_options o;
	instate_store *s = NULL;
	int rc;

	instate_options_init(&o);
	o.map_size = 1 << 20;
	o.sync = INSTATE_SYNC_NONE;
	rc = instate_store_open(path, &o, &s);
	if (rc) {
		fail("open", rc);
		exit(2);
	}
	return s;
}

static instate_ns *ns_of(instate_store *s, const char *name)
{
	instate_ns *ns = NULL;
	int rc = instate_ns_get(s, name, strlen(name), INSTATE_NS_ANY, &ns);
	if (rc)
		fail("ns_get", rc);
	return ns;
}

static void *writer(void *arg)
{
	int id = (int)(intptr_t)arg, i, rc;
	instate_store *s = open_shared();
	instate_ns *pairs = ns_of(s, "pairs"), *fill = ns_of(s, "fill");
	instate_buf b = { 0 };
	char *filler = malloc(FILLER);
	size_t bigsize = 0;

	memset(filler, 'a' + id, FILLER);
	for (i = 0; i < ITERS; i++) {
		do {
			instate_txn *t;
			char ka[16], kb[16], kf[32], val[32];
			uint64_t total = 0;

			rc = instate_txn_begin(s, NULL, 0, &t);
			if (rc == INSTATE_BUSY)
				__atomic_add_fetch(&busy_seen, 1, __ATOMIC_RELAXED);
			if (rc) {
				fail("writer begin", rc);
				goto out;
			}
			rc = instate_get(t, pairs, "total", 5, &b, NULL);
			if (rc == 0 && b.len == sizeof total)
				memcpy(&total, b.data, sizeof total);
			else if (rc != INSTATE_NOTFOUND)
				fail("get total", rc);
			total++;
			snprintf(ka, sizeof ka, "a%d", id);
			snprintf(kb, sizeof kb, "b%d", id);
			snprintf(kf, sizeof kf, "f%d-%05d", id, i);
			snprintf(val, sizeof val, "%d:%d:%llu", id, i, (unsigned long long)total);
			rc = instate_put(t, pairs, ka, strlen(ka), val, strlen(val), NULL, 0);
			if (rc == 0)
				rc = instate_put(t, fill, kf, strlen(kf), filler, FILLER, NULL, 0);
			if (rc == 0)
				rc = instate_put(t, pairs, "total", 5, &total, sizeof total, NULL, 0);
			/* early on, one value larger than the whole map: MAP_FULL
			 * mid-transaction, growth, RETRY, under concurrent readers */
			if (rc == 0 && id == 0 && i == 5) {
				instate_stats st;
				char *big;
				if (!bigsize && instate_store_stats(s, &st) == 0)
					bigsize = st.map_size;
				if ((big = calloc(1, bigsize))) {
					rc = instate_put(t, fill, "big", 3, big, bigsize, NULL, 0);
					free(big);
				}
			}
			/* the second half of the pair last: a reader seeing a
			 * and b differ would have seen half a transaction */
			if (rc == 0)
				rc = instate_put(t, pairs, kb, strlen(kb), val, strlen(val), NULL, 0);
			if (rc == 0) {
				rc = instate_txn_commit(t);
			} else {
				instate_txn_abort(t);
			}
			if (rc == INSTATE_RETRY)
				__atomic_add_fetch(&retries, 1, __ATOMIC_RELAXED);
			else if (rc)
				fail("writer", rc);
		} while (rc == INSTATE_RETRY);
	}
out:
	__atomic_add_fetch(&writers_done, 1, __ATOMIC_RELAXED);
	instate_buf_free(&b);
	free(filler);
	instate_store_close(s);
	return NULL;
}

static void *reader(void *arg)
{
	instate_store *s = open_shared();
	instate_ns *pairs = ns_of(s, "pairs");
	instate_buf a = { 0 }, b = { 0 }, k = { 0 };
	int id, rc, rb, n = 0;

	(void)arg;
	while (__atomic_load_n(&writers_done, __ATOMIC_RELAXED) < WRITERS) {
		instate_txn *t;
		instate_cursor *c;
		char kb[16];

		rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t);
		if (rc) {
			fail("reader begin", rc);
			break;
		}
		for (id = 0; id < WRITERS; id++) {
			char ka[16];
			snprintf(ka, sizeof ka, "a%d", id);
			snprintf(kb, sizeof kb, "b%d", id);
			rc = instate_get(t, pairs, ka, strlen(ka), &a, NULL);
			rb = instate_get(t, pairs, kb, strlen(kb), &b, NULL);
			if (rc != rb || (rc == 0 && (a.len != b.len || memcmp(a.data, b.data, a.len))))
				fail("reader saw half a transaction", rc);
			/* let a remap happen inside the snapshot */
			if ((n++ & 15) == 0)
				sleep_us(100);
		}
		/* a cursor over the a* keys, checking each against b* */
		rc = instate_cursor_open(t, pairs, "a", 1, &c);
		while (rc == 0 && (rc = instate_cursor_next(c, &k, &a, NULL)) == 0) {
			snprintf(kb, sizeof kb, "b%.*s", (int)k.len - 1, k.data + 1);
			if (instate_get(t, pairs, kb, strlen(kb), &b, NULL) != 0 || a.len != b.len ||
			    memcmp(a.data, b.data, a.len))
				fail("cursor saw half a transaction", 0);
			sleep_us(50);
		}
		if (rc != INSTATE_NOTFOUND)
			fail("reader cursor", rc);
		instate_cursor_close(c);
		instate_txn_abort(t);
		__atomic_add_fetch(&scans, 1, __ATOMIC_RELAXED);
	}
	__atomic_add_fetch(&reads, n, __ATOMIC_RELAXED);
	instate_buf_free(&a);
	instate_buf_free(&b);
	instate_buf_free(&k);
	instate_store_close(s);
	return NULL;
}

static void *grower(void *arg)
{
	instate_store *s = open_shared();
	instate_stats st;
	uint64_t want = 1 << 20;
	int rc;

	(void)arg;
	while (__atomic_load_n(&writers_done, __ATOMIC_RELAXED) < WRITERS) {
		want += 2 << 20;
		rc = instate_store_reserve(s, want);
		if (rc)
			fail("reserve", rc);
		sleep_us(2000);
	}
	rc = instate_store_stats(s, &st);
	if (rc || st.map_size < want)
		fail("reserve did not grow the map", rc);
	instate_store_close(s);
	return NULL;
}

int main(void)
{
	pthread_t w[WRITERS], r[READERS], g;
	instate_store *s;
	instate_txn *t;
	instate_buf b = { 0 };
	uint64_t total = 0, n = 0, rev = 0;
	char cmd[128];
	int i, rc, checks = 0;

	strcpy(path, "/tmp/instate-test-threads.XXXXXX");
	if (!mkdtemp(path)) {
		perror("mkdtemp");
		return 2;
	}
	s = open_shared(); /* keeps the environment for the final checks */
	for (i = 0; i < READERS; i++)
		pthread_create(&r[i], NULL, reader, NULL);
	for (i = 0; i < WRITERS; i++)
		pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i);
	pthread_create(&g, NULL, grower, NULL);
	for (i = 0; i < WRITERS; i++)
		pthread_join(w[i], NULL);
	for (i = 0; i < READERS; i++)
		pthread_join(r[i], NULL);
	pthread_join(g, NULL);

	rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t);
	if (rc == 0) {
		checks++;
		rc = instate_get(t, ns_of(s, "pairs"), "total", 5, &b, NULL);
		if (rc == 0 && b.len == sizeof total)
			memcpy(&total, b.data, sizeof total);
		if (total != WRITERS * ITERS)
			fail("final total", (int)total);
		checks++;
		rc = instate_count(t, ns_of(s, "fill"), &n);
		if (rc || n != WRITERS * ITERS + 1)
			fail("final filler count", rc ? rc : (int)n);
		checks++;
		if (instate_txn_revision(t) != WRITERS * ITERS)
			fail("final revision", (int)instate_txn_revision(t));
		instate_txn_abort(t);
	} else {
		fail("final begin", rc);
	}
	checks++;
	if (!retries)
		fail("no transaction was run again after MAP_FULL", 0);
	checks++;
	if (busy_seen)
		fail("BUSY across threads", busy_seen);
	checks++;
	if (instate_store_revision(s, &rev) || rev != WRITERS * ITERS)
		fail("store revision", (int)rev);
	instate_buf_free(&b);
	{
		instate_stats st;
		instate_store_stats(s, &st);
		fprintf(stderr, "threads: %d writes, %d retries, %d reads, %d scans, map %llu MB\n",
		        WRITERS * ITERS, retries, reads, scans,
		        (unsigned long long)(st.map_size >> 20));
	}
	instate_store_close(s);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", path);
	printf("%d passed, %d failed\n", failures ? 0 : checks + 1, failures);
	return failures ? 1 : 0;
}
