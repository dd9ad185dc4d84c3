/*
 * test_env.c - the environment under faults and hostile files: a failed
 * meta-page write (EIO) that leaves LMDB in its fatal state (alone, under
 * a live snapshot, and with reader threads while it is reopened), a full
 * filesystem (a small tmpfs mounted here, as root), symlinks and files
 * owned by another user, a data file replaced under a live environment, a
 * second open with another sync mode, processes racing to grow a 64 KiB
 * map, reader slots of kill -9'd processes, and readers in threads while
 * the map grows.
 *
 * The EIO fault comes from pwrite() defined in this executable: it
 * interposes on libc's for liblmdb (the linker exports a definition that a
 * shared library refers to), fails while `fail_meta_writes` is set and the
 * write is to one of LMDB's two meta pages, and calls the real one
 * otherwise.
 */
#define _GNU_SOURCE
#include "instate.h"
#include "check.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the pwrite fault ------------------------------------------------- */

static volatile int fail_meta_writes;
static pthread_mutex_t rmu_eio = PTHREAD_MUTEX_INITIALIZER;

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	static ssize_t (*real)(int, const void *, size_t, off_t);

	if (!real)
		real = (ssize_t (*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
	/* LMDB writes a meta page (page 0 or 1) alone, after the data pages. */
	if (fail_meta_writes && off < 2 * 4096 && n <= 4096) {
		errno = EIO;
		return -1;
	}
	return real(fd, buf, n, off);
}

/* fdatasync calls, to tell a durable commit from a sync = none one. */
static int datasyncs;

int fdatasync(int fd)
{
	static int (*real)(int);

	if (!real)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	__atomic_add_fetch(&datasyncs, 1, __ATOMIC_RELAXED);
	return real(fd);
}

/* ---- helpers ---------------------------------------------------------- */

static instate_store *open_at(const char *path, const instate_options *o)
{
	instate_store *s = NULL;
	int rc = instate_store_open(path, o, &s);
	if (rc) {
		fprintf(stderr, "open %s: %s\n", path, instate_strerror(rc));
		exit(2);
	}
	return s;
}

/* One write transaction putting key=val (vlen bytes), run again on RETRY. */
static int putn(instate_store *s, const char *nsname, const char *k, const void *v, size_t vlen)
{
	for (;;) {
		instate_txn *t;
		instate_ns *ns;
		int rc = instate_ns_get(s, nsname, strlen(nsname), INSTATE_NS_ANY, &ns);
		if (rc)
			return rc;
		rc = instate_txn_begin(s, NULL, 0, &t);
		if (rc)
			return rc;
		rc = instate_put(t, ns, k, strlen(k), v, vlen, NULL, 0);
		if (rc == 0)
			rc = instate_txn_commit(t);
		else
			instate_txn_abort(t);
		if (rc != INSTATE_RETRY)
			return rc;
	}
}

static int put1(instate_store *s, const char *k, const char *v)
{
	return putn(s, "n", k, v, strlen(v));
}

/* Read key into out (NUL-terminated); returns the code. */
static int get1(instate_store *s, const char *k, char *out, size_t cap)
{
	instate_txn *t;
	instate_buf b = { 0 };
	int rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t);
	if (rc)
		return rc;
	rc = instate_get(t, ns_of(s, "n"), k, strlen(k), &b, NULL);
	if (rc == 0) {
		size_t n = b.len < cap - 1 ? b.len : cap - 1;
		memcpy(out, b.data, n);
		out[n] = '\0';
	}
	instate_txn_abort(t);
	instate_buf_free(&b);
	return rc;
}

static int run(const char *cmd)
{
	return system(cmd);
}

static int file_equals(const char *path, const char *want)
{
	char buf[256];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return 0;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strcmp(buf, want) == 0;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(path);
		exit(2);
	}
}

/* ===================================================================== */
/* 1. A failed meta write: IO, not CORRUPT, and the store recovers        */

static void test_eio_recovery(void)
{
	instate_store *s, *s2;
	instate_txn *t, *rt;
	instate_ns *ns;
	uint64_t rev = 0;
	char v[32];

	s = open_at(tpath("eio"), NULL);
	s2 = open_at(tpath("eio"), NULL);
	CHECK_RC(put1(s, "k1", "v1"), 0);

	/* The commit's meta write fails: LMDB enters its fatal state. */
	ns = ns_of(s, "n");
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, "k2", 2, "v2", 2, NULL, 0), 0);
	fail_meta_writes = 1;
	CHECK_RC(instate_txn_commit(t), EIO);
	fail_meta_writes = 0;

	/* Every handle keeps working: the environment was reopened. */
	CHECK_RC(get1(s2, "k1", v, sizeof v), 0);
	CHECK(strcmp(v, "v1") == 0);
	CHECK_RC(get1(s, "k2", v, sizeof v), INSTATE_NOTFOUND);
	CHECK_RC(put1(s2, "k3", "v3"), 0);
	CHECK_RC(get1(s, "k3", v, sizeof v), 0);
	CHECK_RC(instate_store_revision(s, &rev), 0);
	CHECK(rev == 2);

	/* With a read transaction live in the process the environment cannot
	 * be reopened: writes report IO until it ends, the reader keeps its
	 * snapshot, and the next write after it recovers. */
	ns = ns_of(s, "n");
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &rt), 0);
	CHECK_RC(instate_txn_begin(s, NULL, 0, &t), 0);
	CHECK_RC(instate_put(t, ns, "k4", 2, "v4", 2, NULL, 0), 0);
	fail_meta_writes = 1;
	CHECK_RC(instate_txn_commit(t), EIO);
	fail_meta_writes = 0;
	/* new transactions and lookups: IO; the live snapshot reads on */
	CHECK_RC(put1(s, "k5", "v5"), EIO);
	CHECK_RC(instate_txn_begin(s2, NULL, INSTATE_TXN_READ, &t), EIO);
	{
		instate_buf b = { 0 };
		CHECK_RC(instate_get(rt, ns, "k3", 2, &b, NULL), 0);
		CHECK(b.len == 2 && memcmp(b.data, "v3", 2) == 0);
		instate_buf_free(&b);
	}
	instate_txn_abort(rt);
	CHECK_RC(put1(s, "k5", "v5"), 0);
	CHECK_RC(get1(s2, "k5", v, sizeof v), 0);
	CHECK_RC(get1(s2, "k4", v, sizeof v), INSTATE_NOTFOUND);
	CHECK_RC(instate_store_revision(s2, &rev), 0);
	CHECK(rev == 3);
	instate_store_close(s);
	instate_store_close(s2);

	/* After closing and reopening: exactly the committed state. */
	s = open_at(tpath("eio"), NULL);
	CHECK_RC(get1(s, "k1", v, sizeof v), 0);
	CHECK_RC(get1(s, "k5", v, sizeof v), 0);
	CHECK_RC(get1(s, "k2", v, sizeof v), INSTATE_NOTFOUND);
	instate_store_close(s);
}

/* Threads reading while another thread's commits fail and the
 * environment is reopened under them: every read either works or reports
 * IO, never CORRUPT, never a crash (the sanitizer build checks for use of
 * the closed environment). */
static instate_store *eio_store;
static int eio_done;
static int eio_bad, eio_ok, eio_io;

static void *eio_reader(void *arg)
{
	instate_ns *ns = arg;
	instate_buf b = { 0 };
	int bad = 0, ok = 0, io = 0;

	while (!__atomic_load_n(&eio_done, __ATOMIC_ACQUIRE)) {
		instate_txn *t;
		int rc = instate_txn_begin(eio_store, NULL, INSTATE_TXN_READ, &t);
		if (rc == 0) {
			rc = instate_get(t, ns, "k1", 2, &b, NULL);
			instate_txn_abort(t);
		}
		if (rc == 0 && b.len == 2 && memcmp(b.data, "v1", 2) == 0)
			ok++;
		else if (rc == EIO)
			io++;
		else
			bad++;
	}
	instate_buf_free(&b);
	pthread_mutex_lock(&rmu_eio);
	eio_bad += bad;
	eio_ok += ok;
	eio_io += io;
	pthread_mutex_unlock(&rmu_eio);
	return NULL;
}

static void test_eio_threads(void)
{
	pthread_t th[3];
	instate_txn *t;
	instate_ns *ns;
	uint64_t rev = 0;
	int i, failures = 0, commits = 0;
	char key[32], v[32];

	eio_store = open_at(tpath("eio-threads"), NULL);
	CHECK_RC(put1(eio_store, "k1", "v1"), 0);
	ns = ns_of(eio_store, "n");
	for (i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, eio_reader, ns_of(eio_store, "n"));
	for (i = 0; i < 200; i++) {
		int rc;
		snprintf(key, sizeof key, "w%d", i);
		rc = instate_txn_begin(eio_store, NULL, 0, &t);
		if (rc == 0) {
			rc = instate_put(t, ns, key, strlen(key), "x", 1, NULL, 0);
			if (rc) {
				instate_txn_abort(t);
			} else {
				fail_meta_writes = i % 3 == 0;
				rc = instate_txn_commit(t);
				fail_meta_writes = 0;
			}
		}
		if (rc == 0)
			commits++;
		else if (rc == EIO)
			failures++;
		else
			CHECK_RC(rc, EIO);
	}
	__atomic_store_n(&eio_done, 1, __ATOMIC_RELEASE);
	for (i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	if (eio_bad)
		fprintf(stderr, "readers during reopen: %d bad, %d ok, %d IO\n", eio_bad, eio_ok,
		        eio_io);
	CHECK(eio_bad == 0);
	CHECK(eio_ok > 0);
	CHECK(failures >= 60);
	/* Everything committed is there, nothing else. */
	CHECK_RC(put1(eio_store, "last", "1"), 0);
	CHECK_RC(instate_store_revision(eio_store, &rev), 0);
	CHECK(rev == (uint64_t)commits + 2);
	for (i = 0; i < 200; i++) {
		snprintf(key, sizeof key, "w%d", i);
		if (i % 3 == 0)
			CHECK_RC(get1(eio_store, key, v, sizeof v), INSTATE_NOTFOUND);
	}
	instate_store_close(eio_store);
}

/* ===================================================================== */
/* 2. A full filesystem: no SIGBUS, NOSPACE                               */

static char mnt[128];

/* Fill the filesystem under mnt, then free `keep` bytes. */
static void fill_disk(const char *filler, size_t keep)
{
	static char block[4096];
	int fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	off_t size = 0;

	if (fd < 0) {
		perror(filler);
		exit(2);
	}
	while (write(fd, block, sizeof block) == (ssize_t)sizeof block)
		size += sizeof block;
	if (keep && ftruncate(fd, size > (off_t)keep ? size - (off_t)keep : 0) != 0)
		perror("ftruncate");
	close(fd);
}

/* Run fn in a child process; returns its exit status, or 128 + the signal. */
static int in_child(int (*fn)(void))
{
	pid_t pid = fork();
	int st;

	if (pid == 0)
		_exit(fn());
	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

#define NREADERS 300

/* A store opened while there was room; then the disk fills; then 300 read
 * transactions at once take reader slots on pages of the lock file never
 * touched before. */
static int child_readers_on_full_disk(void)
{
	char path[200], filler[200];
	instate_store *s;
	instate_txn *t[NREADERS];
	int i, rc = 0, n = 0;

	snprintf(path, sizeof path, "%s/readers", mnt);
	snprintf(filler, sizeof filler, "%s/filler", mnt);
	if (instate_store_open(path, NULL, &s) != 0)
		return 3;
	fill_disk(filler, 0);
	for (i = 0; i < NREADERS && rc == 0; i++)
		if ((rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t[i])) == 0)
			n++;
	while (n > 0)
		instate_txn_abort(t[--n]);
	instate_store_close(s);
	unlink(filler);
	return rc ? 4 : 0;
}

/* As above, but the lock file was made (sparse) by another process that
 * still has it open: this one only fills its holes. */
static int child_readers_sparse_lock(void)
{
	char path[200], filler[200];
	instate_store *s;
	instate_txn *t[NREADERS];
	int i, rc = 0, n = 0, fds[2];
	pid_t other;
	char c;

	snprintf(path, sizeof path, "%s/sparse", mnt);
	snprintf(filler, sizeof filler, "%s/filler", mnt);
	mkdir(path, 0700);
	if (pipe(fds) != 0)
		return 3;
	other = fork();
	if (other == 0) {
		/* plain LMDB: ftruncate, no preallocation */
		MDB_env *env;
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* not orphaned by a SIGBUS */
		if (mdb_env_create(&env) || mdb_env_set_maxreaders(env, 510) ||
		    mdb_env_open(env, path, MDB_NOTLS, 0600))
			_exit(1);
		if (write(fds[1], "o", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	if (read(fds[0], &c, 1) != 1)
		return 3;
	if (instate_store_open(path, NULL, &s) != 0)
		rc = 3;
	fill_disk(filler, 0);
	for (i = 0; i < NREADERS && rc == 0; i++)
		if ((rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t[i])) == 0)
			n++;
	while (n > 0)
		instate_txn_abort(t[--n]);
	if (rc != 3)
		instate_store_close(s);
	kill(other, SIGKILL);
	waitpid(other, NULL, 0);
	unlink(filler);
	return rc ? 4 : 0;
}

/* Opening a new store on a full disk. */
static int child_open_on_full_disk(void)
{
	char path[200], filler[200];
	instate_store *s = NULL;
	int rc;

	snprintf(path, sizeof path, "%s/new", mnt);
	snprintf(filler, sizeof filler, "%s/filler", mnt);
	fill_disk(filler, 0);
	rc = instate_store_open(path, NULL, &s);
	unlink(filler);
	if (rc == 0)
		instate_store_close(s);
	return rc == ENOSPC ? 0 : rc == 0 ? 5 : 6;
}

static void test_full_disk(void)
{
	char cmd[300], path[200], filler[200];
	instate_store *s = NULL;
	static char big[64 * 1024];
	char v[16];
	int st;

	if (geteuid() != 0) {
		fprintf(stderr, "full disk: not root, cannot mount a tmpfs: skipped\n");
		return;
	}
	snprintf(mnt, sizeof mnt, "%s/mnt", root);
	mkdir(mnt, 0700);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0700") != 0) {
		perror("mount tmpfs");
		failed++;
		return;
	}
	snprintf(filler, sizeof filler, "%s/filler", mnt);
	st = in_child(child_readers_on_full_disk);
	if (st)
		fprintf(stderr, "readers on a full disk: status %d\n", st);
	CHECK(st == 0);
	unlink(filler);
	st = in_child(child_readers_sparse_lock);
	if (st)
		fprintf(stderr, "readers on a full disk, sparse lock file: status %d\n", st);
	CHECK(st == 0);
	unlink(filler);
	st = in_child(child_open_on_full_disk);
	if (st)
		fprintf(stderr, "open on a full disk: status %d\n", st);
	CHECK(st == 0);
	unlink(filler);

	/* A commit cut short by the full disk reports NOSPACE, and after
	 * space is freed the store works and holds what was committed. */
	snprintf(path, sizeof path, "%s/short", mnt);
	CHECK_RC(instate_store_open(path, NULL, &s), 0);
	if (s) {
		CHECK_RC(put1(s, "a", "1"), 0);
		fill_disk(filler, 3 * 4096);
		memset(big, 'x', sizeof big);
		CHECK_RC(putn(s, "n", "big", big, sizeof big), ENOSPC);
		unlink(filler);
		CHECK_RC(putn(s, "n", "big", big, sizeof big), 0);
		CHECK_RC(get1(s, "a", v, sizeof v), 0);
		instate_store_close(s);
	}

	if (umount2(mnt, MNT_DETACH) != 0)
		perror("umount");
	snprintf(cmd, sizeof cmd, "rmdir '%s'", mnt);
	run(cmd);
}

/* ===================================================================== */
/* 3. Symlinks and files of another user                                  */

static void test_hostile_files(void)
{
	instate_options o;
	instate_store *s = NULL;
	char cmd[600], victim[200];
	const char *d;

	instate_options_init(&o);
	snprintf(victim, sizeof victim, "%s/victim", root);
	write_file(victim, "precious");

	/* A store directory pre-created 0777 with lock.mdb pointing at the victim. */
	d = tpath("evil");
	mkdir(d, 0777);
	chmod(d, 0777);
	snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/lock.mdb'", victim, d);
	run(cmd);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS);
	CHECK(s == NULL);
	/* Even once the directory is private, the symlink is refused. */
	chmod(d, 0700);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS);
	o.readonly = 1;
	CHECK_RC(instate_store_open(d, &o, &s), INSTATE_ACCESS);
	o.readonly = 0;
	CHECK(file_equals(victim, "precious"));

	/* data.mdb as a symlink. */
	d = tpath("evil2");
	mkdir(d, 0700);
	snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/data.mdb'", victim, d);
	run(cmd);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS);
	CHECK(file_equals(victim, "precious"));

	/* The store path itself a symlink to a good store. */
	s = open_at(tpath("good"), NULL);
	CHECK_RC(put1(s, "k", "v"), 0);
	instate_store_close(s);
	snprintf(cmd, sizeof cmd, "ln -s '%s' '%s'", tpath("good"), tpath("goodlink"));
	run(cmd);
	CHECK_RC(instate_store_open(tpath("goodlink"), NULL, &s), INSTATE_ACCESS);

	/* single_file: NAME-lock planted in a world-writable sticky directory. */
	d = tpath("shared");
	mkdir(d, 01777);
	chmod(d, 01777);
	snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/game.db-lock'", victim, d);
	run(cmd);
	o.single_file = 1;
	snprintf(cmd, sizeof cmd, "%s/game.db", d);
	CHECK_RC(instate_store_open(cmd, &o, &s), INSTATE_ACCESS);
	CHECK(file_equals(victim, "precious"));
	/* ... and the data file itself a symlink. */
	snprintf(cmd, sizeof cmd, "ln -s '%s' '%s/other.db'", victim, d);
	run(cmd);
	snprintf(cmd, sizeof cmd, "%s/other.db", d);
	CHECK_RC(instate_store_open(cmd, &o, &s), INSTATE_ACCESS);
	CHECK(file_equals(victim, "precious"));
	/* ... or a hard link to the victim. */
	snprintf(cmd, sizeof cmd, "ln '%s' '%s/hard.db-lock'", victim, d);
	CHECK(run(cmd) == 0);
	snprintf(cmd, sizeof cmd, "%s/hard.db", d);
	CHECK_RC(instate_store_open(cmd, &o, &s), INSTATE_ACCESS);
	CHECK(file_equals(victim, "precious"));
	/* A real single-file store in the sticky directory is fine. */
	snprintf(cmd, sizeof cmd, "%s/mine.db", d);
	CHECK_RC(instate_store_open(cmd, &o, &s), 0);
	instate_store_close(s);
	/* A non-sticky world-writable parent is refused. */
	d = tpath("open");
	mkdir(d, 0777);
	chmod(d, 0777);
	snprintf(cmd, sizeof cmd, "%s/x.db", d);
	CHECK_RC(instate_store_open(cmd, &o, &s), INSTATE_ACCESS);
	o.single_file = 0;

	/* A data file writable by others. */
	s = open_at(tpath("perm"), NULL);
	instate_store_close(s);
	snprintf(cmd, sizeof cmd, "%s/data.mdb", tpath("perm"));
	chmod(cmd, 0666);
	CHECK_RC(instate_store_open(tpath("perm"), NULL, &s), INSTATE_ACCESS);
	/* ... unless file_mode grants it. */
	o.file_mode = 0666;
	CHECK_RC(instate_store_open(tpath("perm"), &o, &s), 0);
	instate_store_close(s);
	o.file_mode = 0600;

	if (geteuid() != 0) {
		fprintf(stderr, "files owned by nobody: not root: skipped\n");
		return;
	}
	/* A store directory owned by another user (root opening it). */
	d = tpath("nobodys");
	s = open_at(d, NULL);
	instate_store_close(s);
	snprintf(cmd, sizeof cmd, "chown -R 65534:65534 '%s'", d);
	CHECK(run(cmd) == 0);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS);
	/* Our directory, but a lock file of another user. */
	snprintf(cmd, sizeof cmd, "chown 0:0 '%s'", d);
	CHECK(run(cmd) == 0);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS);
	snprintf(cmd, sizeof cmd, "chown 0:0 '%s/lock.mdb'", d);
	CHECK(run(cmd) == 0);
	CHECK_RC(instate_store_open(d, NULL, &s), INSTATE_ACCESS); /* data.mdb still nobody's */
	snprintf(cmd, sizeof cmd, "chown 0:0 '%s/data.mdb'", d);
	CHECK(run(cmd) == 0);
	CHECK_RC(instate_store_open(d, NULL, &s), 0);
	instate_store_close(s);
}

/* ===================================================================== */
/* 4. A second handle: replaced data file, another sync mode              */

static void test_second_handle(void)
{
	instate_options o;
	instate_store *s, *s2 = NULL;
	char cmd[600], v[16];

	instate_options_init(&o);
	s = open_at(tpath("repl"), NULL);
	CHECK_RC(put1(s, "k", "old"), 0);
	/* Replace data.mdb by another file (a copy: another inode). */
	snprintf(cmd, sizeof cmd, "cp '%s/data.mdb' '%s/data.new' && mv '%s/data.new' '%s/data.mdb'",
	         tpath("repl"), tpath("repl"), tpath("repl"), tpath("repl"));
	CHECK(run(cmd) == 0);
	CHECK_RC(instate_store_open(tpath("repl"), NULL, &s2), INSTATE_CONFLICT);
	CHECK(s2 == NULL);
	/* The live handle is untouched. */
	CHECK_RC(get1(s, "k", v, sizeof v), 0);
	CHECK(strcmp(v, "old") == 0);
	instate_store_close(s);
	/* Once closed, the replaced file opens as the store. */
	s = open_at(tpath("repl"), NULL);
	CHECK_RC(get1(s, "k", v, sizeof v), 0);
	instate_store_close(s);

	/* A second open asking for more durability than the live environment
	 * has: every handle commits durably from then on. */
	o.sync = INSTATE_SYNC_NONE;
	s = open_at(tpath("sync"), &o);
	datasyncs = 0;
	CHECK_RC(put1(s, "a", "1"), 0);
	CHECK(datasyncs == 0);
	o.sync = INSTATE_SYNC_FULL;
	s2 = open_at(tpath("sync"), &o);
	CHECK_RC(put1(s, "b", "2"), 0);
	CHECK(datasyncs > 0);
	/* ... and a laxer one does not lower it. */
	o.sync = INSTATE_SYNC_NONE;
	instate_store_close(s);
	s = open_at(tpath("sync"), &o);
	datasyncs = 0;
	CHECK_RC(put1(s, "c", "3"), 0);
	CHECK(datasyncs > 0);
	instate_store_close(s2);
	instate_store_close(s);
	/* Closed: the next open's mode holds. */
	s = open_at(tpath("sync"), &o);
	datasyncs = 0;
	CHECK_RC(put1(s, "d", "4"), 0);
	CHECK(datasyncs == 0);
	instate_store_close(s);
}

/* ===================================================================== */
/* 5. Processes racing to grow a 64 KiB map                               */

#define GROWERS 4
#define GROW_ROUNDS 30

static int grower(const char *path, int id)
{
	instate_options o;
	instate_store *s;
	char key[32], val[700];
	int i, rc;

	instate_options_init(&o);
	o.map_size = 64 * 1024;
	o.sync = INSTATE_SYNC_NONE;
	rc = instate_store_open(path, &o, &s);
	if (rc) {
		fprintf(stderr, "grower %d: open: %s\n", id, instate_strerror(rc));
		return 10;
	}
	memset(val, 'a' + id, sizeof val);
	for (i = 0; i < 60; i++) {
		snprintf(key, sizeof key, "p%d-%d", id, i);
		rc = putn(s, "n", key, val, sizeof val);
		if (rc) {
			fprintf(stderr, "grower %d: put %d: %s\n", id, i, instate_strerror(rc));
			instate_store_close(s);
			return 11;
		}
	}
	instate_store_close(s);
	return 0;
}

static void test_growth_race(void)
{
	int round, i, bad = 0;

	for (round = 0; round < GROW_ROUNDS; round++) {
		char path[200];
		pid_t pids[GROWERS];
		instate_store *s;
		instate_txn *t;
		uint64_t n = 0;

		snprintf(path, sizeof path, "%s/grow%d", root, round);
		for (i = 0; i < GROWERS; i++) {
			pids[i] = fork();
			if (pids[i] == 0)
				_exit(grower(path, i));
		}
		for (i = 0; i < GROWERS; i++) {
			int st;
			if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
				bad++;
		}
		s = open_at(path, NULL);
		CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
		CHECK_RC(instate_count(t, ns_of(s, "n"), &n), 0);
		instate_txn_abort(t);
		if (n != GROWERS * 60)
			bad++;
		instate_store_close(s);
	}
	if (bad)
		fprintf(stderr, "growth race: %d failures in %d rounds\n", bad, GROW_ROUNDS);
	CHECK(bad == 0);
}

/* ===================================================================== */
/* 6. Reader slots of kill -9'd processes                                 */

static void test_stale_readers(void)
{
	instate_options o;
	instate_store *s;
	instate_txn *t[5];
	pid_t pids[3];
	int fds[2], i;
	char c, v[16];

	instate_options_init(&o);
	o.max_readers = 4;
	s = open_at(tpath("readers"), &o);
	CHECK_RC(put1(s, "k", "v"), 0);
	instate_store_close(s);
	if (pipe(fds) != 0) {
		perror("pipe");
		exit(2);
	}
	/* Three processes each hold a read transaction, then die by kill -9. */
	for (i = 0; i < 3; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			instate_store *cs;
			instate_txn *ct;
			if (instate_store_open(tpath("readers"), &o, &cs) ||
			    instate_txn_begin(cs, NULL, INSTATE_TXN_READ, &ct))
				_exit(1);
			if (write(fds[1], "r", 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
	}
	for (i = 0; i < 3; i++)
		CHECK(read(fds[0], &c, 1) == 1);
	/* This long-running process opens the store while they live. */
	s = open_at(tpath("readers"), &o);
	for (i = 0; i < 3; i++) {
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
	close(fds[0]);
	close(fds[1]);
	/* Four slots, three held by the dead: two snapshots and a read (two
	 * slots at once) need the check. */
	for (i = 0; i < 2; i++)
		CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t[i]), 0);
	CHECK_RC(get1(s, "k", v, sizeof v), 0);
	/* Four live readers: the fifth is refused, the check finding no dead. */
	for (i = 2; i < 4; i++)
		CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t[i]), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t[4]), INSTATE_READERS_FULL);
	for (i = 0; i < 4; i++)
		instate_txn_abort(t[i]);
	instate_store_close(s);
}

/* ===================================================================== */
/* 7. Readers in threads while the map grows                              */

#define RTHREADS 4
static instate_store *grow_store;
static int grow_done;
static int reader_errors, reader_scans;
/* what went wrong, by kind: begin, cursor open, step, value, count */
static int reader_kinds[5];
static int reader_last_rc;
static pthread_mutex_t rmu = PTHREAD_MUTEX_INITIALIZER;

static void *reader_thread(void *arg)
{
	instate_ns *ns = ns_of(grow_store, "g");
	instate_buf k = { 0 }, v = { 0 };
	int errors = 0, scans = 0;

	(void)arg;
	while (!__atomic_load_n(&grow_done, __ATOMIC_ACQUIRE)) {
		instate_txn *t;
		instate_cursor *c;
		uint64_t rev;
		int rc, n = 0;

		/* One snapshot held across many calls while others remap. */
		if ((rc = instate_txn_begin(grow_store, NULL, INSTATE_TXN_READ, &t)) != 0) {
			errors++;
			__atomic_add_fetch(&reader_kinds[0], 1, __ATOMIC_RELAXED);
			reader_last_rc = rc;
			continue;
		}
		rev = instate_txn_revision(t);
		if (instate_cursor_open(t, ns, NULL, 0, &c) == 0) {
			while ((rc = instate_cursor_next(c, &k, &v, NULL)) == 0) {
				/* every value is its key repeated, 4000 bytes */
				if (v.len != 4000 || k.len == 0 || memcmp(v.data, k.data, k.len) != 0) {
					errors++;
					__atomic_add_fetch(&reader_kinds[3], 1, __ATOMIC_RELAXED);
				}
				n++;
			}
			if (rc != INSTATE_NOTFOUND) {
				errors++;
				__atomic_add_fetch(&reader_kinds[2], 1, __ATOMIC_RELAXED);
				reader_last_rc = rc;
			}
			instate_cursor_close(c);
		} else {
			errors++;
			__atomic_add_fetch(&reader_kinds[1], 1, __ATOMIC_RELAXED);
		}
		/* revision r holds exactly r - 1 records (the first write is r1) */
		if (rev > 0 && (uint64_t)n != rev) {
			errors++;
			if (__atomic_add_fetch(&reader_kinds[4], 1, __ATOMIC_RELAXED) <= 3)
				fprintf(stderr, "  a snapshot at revision %llu walked %d records\n",
				        (unsigned long long)rev, n);
		}
		instate_txn_abort(t);
		scans++;
	}
	instate_buf_free(&k);
	instate_buf_free(&v);
	pthread_mutex_lock(&rmu);
	reader_errors += errors;
	reader_scans += scans;
	pthread_mutex_unlock(&rmu);
	return NULL;
}

static void test_readers_during_growth(void)
{
	instate_options o;
	instate_stats st;
	pthread_t th[RTHREADS];
	char key[32], val[4000];
	int i, j;

	instate_options_init(&o);
	o.map_size = 256 * 1024;
	o.sync = INSTATE_SYNC_NONE;
	grow_store = open_at(tpath("growth"), &o);
	/* The readers start once the namespace exists: this test is about
	 * growth under live snapshots (snapshots begun while the namespace is
	 * created are readers_during_create's). */
	for (i = 0; i < 600; i++) {
		size_t kl = (size_t)snprintf(key, sizeof key, "key%05d", i);
		for (j = 0; j < (int)sizeof val; j++)
			val[j] = key[(size_t)j % kl];
		CHECK_RC(putn(grow_store, "g", key, val, sizeof val), 0);
		if (i == 0)
			for (j = 0; j < RTHREADS; j++)
				pthread_create(&th[j], NULL, reader_thread, NULL);
	}
	__atomic_store_n(&grow_done, 1, __ATOMIC_RELEASE);
	for (i = 0; i < RTHREADS; i++)
		pthread_join(th[i], NULL);
	CHECK_RC(instate_store_stats(grow_store, &st), 0);
	CHECK(st.map_size >= 2 * 1024 * 1024);
	CHECK(reader_scans > 0);
	if (reader_errors)
		fprintf(stderr, "readers during growth: %d errors in %d scans (begin %d, cursor %d,"
		        " step %d, value %d, count %d; last rc %d: %s)\n", reader_errors, reader_scans,
		        reader_kinds[0], reader_kinds[1], reader_kinds[2], reader_kinds[3],
		        reader_kinds[4], reader_last_rc, instate_strerror(reader_last_rc));
	CHECK(reader_errors == 0);
	instate_store_close(grow_store);
}

/* ===================================================================== */
/* 8. Snapshots begun while this process commits new namespaces           */

#define CREATES 300
static instate_store *create_store;
static int create_done, create_errors, create_checks;

static void *create_reader(void *arg)
{
	instate_buf v = { 0 };
	int errors = 0, checks = 0;
	instate_ns *ns[CREATES + 1];
	char name[32];
	int i;

	(void)arg;
	for (i = 1; i <= CREATES; i++) {
		snprintf(name, sizeof name, "c%d", i);
		ns[i] = ns_of(create_store, name);
	}
	/* Until one pass after the writer is done: on a loaded machine the
	 * writer may finish before a reader is first scheduled, and the last
	 * pass still reads every namespace at the final revision. */
	for (;;) {
		int last = __atomic_load_n(&create_done, __ATOMIC_ACQUIRE);
		instate_txn *t;
		uint64_t rev, r;
		if (instate_txn_begin(create_store, NULL, INSTATE_TXN_READ, &t) != 0) {
			errors++;
			if (last)
				break;
			continue;
		}
		/* revision r created namespace c<r> holding k: all present */
		rev = instate_txn_revision(t);
		for (r = 1; r <= rev && r <= CREATES; r++) {
			checks++;
			if (instate_get(t, ns[r], "k", 1, &v, NULL) != 0) {
				if (errors++ < 3)
					fprintf(stderr, "  a snapshot at revision %llu reads c%llu as empty\n",
					        (unsigned long long)rev, (unsigned long long)r);
			}
		}
		instate_txn_abort(t);
		if (last)
			break;
	}
	instate_buf_free(&v);
	pthread_mutex_lock(&rmu);
	create_errors += errors;
	create_checks += checks;
	pthread_mutex_unlock(&rmu);
	return NULL;
}

static void test_readers_during_create(void)
{
	instate_options o;
	pthread_t th[RTHREADS];
	char name[32];
	int i;

	instate_options_init(&o);
	o.sync = INSTATE_SYNC_NONE;
	o.max_namespaces = CREATES + 8;
	create_store = open_at(tpath("create"), &o);
	for (i = 0; i < RTHREADS; i++)
		pthread_create(&th[i], NULL, create_reader, NULL);
	for (i = 1; i <= CREATES; i++) {
		snprintf(name, sizeof name, "c%d", i);
		CHECK_RC(putn(create_store, name, "k", "v", 1), 0);
	}
	__atomic_store_n(&create_done, 1, __ATOMIC_RELEASE);
	for (i = 0; i < RTHREADS; i++)
		pthread_join(th[i], NULL);
	CHECK(create_checks > 0);
	if (create_errors)
		fprintf(stderr, "readers during create: %d of %d reads empty\n", create_errors,
		        create_checks);
	CHECK(create_errors == 0);
	instate_store_close(create_store);
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "growth_race", test_growth_race },
	{ "stale_readers", test_stale_readers },
	{ "eio_recovery", test_eio_recovery },
	{ "eio_threads", test_eio_threads },
	{ "full_disk", test_full_disk },
	{ "hostile_files", test_hostile_files },
	{ "second_handle", test_second_handle },
	{ "readers_during_growth", test_readers_during_growth },
	{ "readers_during_create", test_readers_during_create },
};

/* test_env [NAME...]: the named tests, or all of them. */
int main(int argc, char **argv)
{
	char cmd[128];
	size_t i;
	int j;

	strcpy(root, "/tmp/instate-test-env.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 2;
	}
	for (i = 0; i < sizeof tests / sizeof *tests; i++) {
		int want = argc < 2;
		for (j = 1; j < argc; j++)
			want |= strcmp(argv[j], tests[i].name) == 0;
		if (want)
			tests[i].fn();
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
