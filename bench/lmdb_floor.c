/*
 * lmdb_floor - the raw LMDB floor for bench/store.lua and bench/defstate.lua.
 *
 * Runs the same workloads as the store benchmark straight on LMDB, with the
 * values already encoded, so the difference to instate is the cost of the
 * binding, the codec, the record header and the namespace bookkeeping.
 *
 *   lmdb_floor <mode> <dbdir> <recordsfile> [arg]
 *
 * recordsfile: repeated [u32 LE klen][key][u32 LE vlen][value].
 * modes:
 *   put            every record in one write transaction, durable commit
 *   get            look up every key (one read transaction)
 *   scan           one cursor pass over the whole database
 *   update STEP    rewrite every STEP-th record in one write transaction
 *   commit COUNT   COUNT durable single-record write transactions
 *   txns K         the records in order, K to a durable write transaction
 *                  (an autosave's changed records, save after save); also
 *                  prints p50= and p99= of one transaction, in seconds
 *   serve          one durable single-record write transaction of the next
 *                  record (cycling) per line read on stdin, answered by a
 *                  line t=<seconds of that commit> (flushed); ends at EOF.
 *                  A benchmark then samples the floor between its own
 *                  saves, one commit at a time (bench_compat.floor_server)
 * Prints one line: seconds=<float> ops=<int>. Only the timed part is the
 * database work: reading the records file happens before the clock starts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>

typedef struct record {
	MDB_val key;
	MDB_val val;
} record;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t get_u32le(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Read the whole records file; the records point into *blob. */
static int load_records(const char *path, char **blob, record **recs, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *data = NULL;
	record *r = NULL;
	size_t size, pos = 0, count = 0, cap = 0;
	long end;

	if (!f)
		return errno;
	if (fseek(f, 0, SEEK_END) != 0 || (end = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto fail;
	size = (size_t)end;
	if (!(data = malloc(size ? size : 1)) || fread(data, 1, size, f) != size)
		goto fail;
	while (pos < size) {
		uint32_t klen, vlen;
		if (size - pos < 4 || (klen = get_u32le((unsigned char *)data + pos)) > size - pos - 4)
			goto corrupt;
		pos += 4;
		if (count == cap) {
			record *nr;
			cap = cap ? cap * 2 : 1024;
			if (!(nr = realloc(r, cap * sizeof *r)))
				goto fail;
			r = nr;
		}
		r[count].key.mv_data = data + pos;
		r[count].key.mv_size = klen;
		pos += klen;
		if (size - pos < 4 || (vlen = get_u32le((unsigned char *)data + pos)) > size - pos - 4)
			goto corrupt;
		pos += 4;
		r[count].val.mv_data = data + pos;
		r[count].val.mv_size = vlen;
		pos += vlen;
		count++;
	}
	fclose(f);
	*blob = data;
	*recs = r;
	*n = count;
	return 0;
corrupt:
	errno = EINVAL;
fail:
	{
		int rc = errno ? errno : EIO;
		fclose(f);
		free(data);
		free(r);
		return rc;
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The q-th quantile (0..1) of n sorted samples, nearest rank. */
static double quantile(const double *t, size_t n, double q)
{
	size_t i = (size_t)(q * (double)n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return t[i - 1];
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "lmdb_floor: %s: %s\n", what, mdb_strerror(rc));
	return 1;
}

/* One record put in a durable transaction of its own: 0, or what die()
 * returns. */
static int commit_one(MDB_env *env, MDB_dbi dbi, record *r)
{
	MDB_txn *txn;
	int rc;

	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
		return die("mdb_txn_begin", rc);
	if ((rc = mdb_put(txn, dbi, &r->key, &r->val, 0)) != 0) {
		mdb_txn_abort(txn);
		return die("mdb_put", rc);
	}
	if ((rc = mdb_txn_commit(txn)) != 0)
		return die("mdb_txn_commit", rc);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode, *dir, *file;
	char *blob = NULL;
	record *recs = NULL;
	size_t n = 0, i, ops = 0;
	long arg = 0;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	double t0, t1;
	int rc;

	if (argc < 4) {
		fprintf(stderr, "usage: lmdb_floor put|get|scan|update STEP|commit COUNT|txns K|serve "
		                "<dbdir> <recordsfile> [arg]\n");
		return 2;
	}
	mode = argv[1];
	dir = argv[2];
	file = argv[3];
	if (argc > 4)
		arg = strtol(argv[4], NULL, 10);
	if ((strcmp(mode, "update") == 0 || strcmp(mode, "commit") == 0 ||
	     strcmp(mode, "txns") == 0) && arg <= 0) {
		fprintf(stderr, "lmdb_floor: %s needs a positive argument\n", mode);
		return 2;
	}
	if ((rc = load_records(file, &blob, &recs, &n)) != 0) {
		fprintf(stderr, "lmdb_floor: %s: %s\n", file, strerror(rc));
		return 1;
	}
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "lmdb_floor: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	if ((rc = mdb_env_create(&env)) != 0)
		return die("mdb_env_create", rc);
	/* Large enough for any run of the benchmark: the floor never grows. */
	mdb_env_set_mapsize(env, (size_t)4 << 30);
	mdb_env_set_maxdbs(env, 4);
	if ((rc = mdb_env_open(env, dir, MDB_NOTLS, 0600)) != 0)
		return die(dir, rc);
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
		return die("mdb_txn_begin", rc);
	if ((rc = mdb_dbi_open(txn, "data", MDB_CREATE, &dbi)) != 0)
		return die("mdb_dbi_open", rc);
	if ((rc = mdb_txn_commit(txn)) != 0)
		return die("mdb_txn_commit", rc);

	t0 = now();
	if (strcmp(mode, "put") == 0) {
		if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
			return die("mdb_txn_begin", rc);
		for (i = 0; i < n; i++)
			if ((rc = mdb_put(txn, dbi, &recs[i].key, &recs[i].val, 0)) != 0)
				return die("mdb_put", rc);
		if ((rc = mdb_txn_commit(txn)) != 0)
			return die("mdb_txn_commit", rc);
		ops = n;
	} else if (strcmp(mode, "get") == 0) {
		size_t total = 0;
		if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0)
			return die("mdb_txn_begin", rc);
		for (i = 0; i < n; i++) {
			MDB_val v;
			if ((rc = mdb_get(txn, dbi, &recs[i].key, &v)) != 0)
				return die("mdb_get", rc);
			total += v.mv_size;
		}
		mdb_txn_abort(txn);
		ops = n;
		if (total == 0 && n > 0)
			fprintf(stderr, "lmdb_floor: every value was empty\n");
	} else if (strcmp(mode, "scan") == 0) {
		MDB_cursor *c;
		MDB_val k, v;
		if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0)
			return die("mdb_txn_begin", rc);
		if ((rc = mdb_cursor_open(txn, dbi, &c)) != 0)
			return die("mdb_cursor_open", rc);
		while ((rc = mdb_cursor_get(c, &k, &v, ops ? MDB_NEXT : MDB_FIRST)) == 0)
			ops++;
		if (rc != MDB_NOTFOUND)
			return die("mdb_cursor_get", rc);
		mdb_cursor_close(c);
		mdb_txn_abort(txn);
	} else if (strcmp(mode, "update") == 0) {
		if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
			return die("mdb_txn_begin", rc);
		for (i = 0; i < n; i += (size_t)arg, ops++)
			if ((rc = mdb_put(txn, dbi, &recs[i].key, &recs[i].val, 0)) != 0)
				return die("mdb_put", rc);
		if ((rc = mdb_txn_commit(txn)) != 0)
			return die("mdb_txn_commit", rc);
	} else if (strcmp(mode, "commit") == 0) {
		for (ops = 0; ops < (size_t)arg; ops++) {
			record *r = &recs[ops % (n ? n : 1)];
			if (n == 0)
				break;
			if ((rc = commit_one(env, dbi, r)) != 0)
				return rc;
		}
	} else if (strcmp(mode, "txns") == 0) {
		size_t ntx = (n + (size_t)arg - 1) / (size_t)arg, k = 0;
		double *t = malloc((ntx ? ntx : 1) * sizeof *t), q0;
		if (!t)
			return die("malloc", ENOMEM);
		for (i = 0; i < n; k++) {
			size_t end = i + (size_t)arg < n ? i + (size_t)arg : n;
			q0 = now();
			if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
				return die("mdb_txn_begin", rc);
			for (; i < end; i++)
				if ((rc = mdb_put(txn, dbi, &recs[i].key, &recs[i].val, 0)) != 0)
					return die("mdb_put", rc);
			if ((rc = mdb_txn_commit(txn)) != 0)
				return die("mdb_txn_commit", rc);
			t[k] = now() - q0;
		}
		ops = k;
		t1 = now();
		qsort(t, k, sizeof *t, cmp_double);
		printf("p50=%.6f p99=%.6f ", k ? quantile(t, k, 0.5) : 0.0, k ? quantile(t, k, 0.99) : 0.0);
		free(t);
		mdb_env_close(env);
		free(recs);
		free(blob);
		printf("seconds=%.6f ops=%zu\n", t1 - t0, ops);
		return 0;
	} else if (strcmp(mode, "serve") == 0) {
		char line[64];
		while (n > 0 && fgets(line, sizeof line, stdin)) {
			record *r = &recs[ops % n];
			double q0 = now();
			if ((rc = commit_one(env, dbi, r)) != 0)
				return rc;
			printf("t=%.6f\n", now() - q0);
			fflush(stdout);
			ops++;
		}
	} else {
		fprintf(stderr, "lmdb_floor: unknown mode '%s'\n", mode);
		return 2;
	}
	t1 = now();

	mdb_env_close(env);
	free(recs);
	free(blob);
	printf("seconds=%.6f ops=%zu\n", t1 - t0, ops);
	return 0;
}
