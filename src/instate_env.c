/*
 * instate_env.c - stores: the process-wide registry of LMDB environments,
 * open/close, statistics, map growth, the writer slot, namespace handles
 * and the clock. Transactions, records and cursors are in instate_txn.c.
 *
 * Locking, in acquisition order (never the other way round):
 *   registry mutex  -> (opening and closing environments only)
 *   writer slot     -> one write transaction per environment per process
 *   map lock        -> shared around every call that touches the map,
 *                      exclusive while remapping (instate__grow/adopt) or
 *                      reopening the environment (instate__recover)
 *   env mutex (mu)  -> namespace table and every mdb_dbi_open
 * The map lock prefers writers, so no thread ever takes it shared twice.
 */
#include "instate_store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* 64 MiB; 1 MiB on Windows, where the data file is as large as the map
 * (instate_os.h, instate__os_default_map_size). */
#define DEFAULT_MAP_SIZE instate__os_default_map_size()
#define DEFAULT_MAX_SIZE ((uint64_t)1 << 40)
#define MAX_NAMESPACES_LIMIT 32000u
#define MAX_READERS_LIMIT (1u << 20)

static instate_os_mutex registry_mu = INSTATE_OS_MUTEX_INIT;
static instate_env *registry;

/* ===================================================================== */
/* Clock                                                                  */

static int64_t fixed_clock;

int64_t instate_clock_now(void)
{
	int64_t f = __atomic_load_n(&fixed_clock, __ATOMIC_RELAXED);

	return f ? f : instate__os_clock_ms();
}

void instate_clock_set(int64_t ms)
{
	__atomic_store_n(&fixed_clock, ms, __ATOMIC_RELAXED);
}

/* ===================================================================== */
/* Errors                                                                 */

int instate__mdb_err(int rc)
{
	switch (rc) {
	case MDB_SUCCESS: return 0;
	case MDB_NOTFOUND: return INSTATE_NOTFOUND;
	case MDB_KEYEXIST: return INSTATE_EXISTS;
	case MDB_MAP_FULL: return INSTATE_MAP_FULL;
	case MDB_MAP_RESIZED: return INSTATE_RETRY;
	case MDB_READERS_FULL: return INSTATE_READERS_FULL;
	case MDB_DBS_FULL: return INSTATE_NAMESPACES_FULL;
	case MDB_VERSION_MISMATCH: return INSTATE_VERSION;
	case MDB_TXN_FULL: return INSTATE_LIMIT;
	case MDB_BAD_VALSIZE: case MDB_BAD_DBI: return INSTATE_INVALID;
	case MDB_BAD_TXN: return INSTATE_ENDED;
	/* LMDB's fatal state after a failed write of a meta page: the file
	 * is fine, the environment must be reopened (instate__recover). */
	case MDB_PANIC: return EIO;
	case EACCES: return EACCES;
	default:
		if (rc > 0)
			return instate__os_lmdb_errno(rc); /* Windows: its codes */
		if (rc < INSTATE_ERR_BASE && rc >= INSTATE_ERR_LAST)
			return rc; /* already an instate code */
		/* MDB_INVALID, MDB_CORRUPTED, MDB_PAGE_NOTFOUND,
		 * MDB_INCOMPATIBLE and the page/cursor overflows all mean the
		 * file does not hold what LMDB expects. */
		return INSTATE_CORRUPT;
	}
}

/* ===================================================================== */
/* Writer slot and map growth                                             */

int instate__slot_acquire(instate_env *e)
{
	instate_os_thread self = instate__os_thread_self();

	instate__os_mutex_lock(&e->wmu);
	while (e->wbusy) {
		if (instate__os_thread_equal(e->wowner, self)) {
			instate__os_mutex_unlock(&e->wmu);
			return INSTATE_BUSY;
		}
		instate__os_cond_wait(&e->wcv, &e->wmu);
	}
	e->wbusy = 1;
	e->wowner = self;
	instate__os_mutex_unlock(&e->wmu);
	return 0;
}

int instate__slot_mine(instate_env *e)
{
	int mine;

	instate__os_mutex_lock(&e->wmu);
	mine = e->wbusy && instate__os_thread_equal(e->wowner, instate__os_thread_self());
	instate__os_mutex_unlock(&e->wmu);
	return mine;
}

void instate__slot_release(instate_env *e)
{
	instate__os_mutex_lock(&e->wmu);
	e->wbusy = 0;
	instate__os_cond_signal(&e->wcv);
	instate__os_mutex_unlock(&e->wmu);
}

/* Free bytes for this user on the filesystem of the data file, or
 * UINT64_MAX if unknown. */
static uint64_t fs_free(instate_env *e)
{
	mdb_filehandle_t fd;

	if (!e->env || mdb_env_get_fd(e->env, &fd) != 0)
		return UINT64_MAX;
	return instate__os_free_bytes(fd);
}

int instate__write_err(instate_env *e, int rc)
{
	/* LMDB reports a short write as EIO; after one, a full filesystem has
	 * (next to) nothing left. */
	if (rc == EIO && fs_free(e) < ((uint64_t)1 << 20))
		return ENOSPC;
	return rc;
}

int instate__grow(instate_env *e, uint64_t need)
{
	MDB_envinfo info;
	uint64_t cur, size;
	int rc = 0;

	instate__os_rwlock_wrlock(&e->maplock);
	if (!e->env) {
		rc = EIO;
		goto done;
	}
	mdb_env_info(e->env, &info);
	cur = info.me_mapsize;
	if (need <= cur)
		goto done;
	if (need > e->max_size || cur >= e->max_size) {
		rc = INSTATE_MAP_FULL;
		goto done;
	}
	size = cur;
	while (size < need && size < e->max_size)
		size = size > e->max_size / 2 ? e->max_size : size * 2;
	size -= size % e->page_size;
	rc = instate__mdb_err(mdb_env_set_mapsize(e->env, (size_t)size));
	e->mapgen++;
done:
	instate__os_rwlock_wrunlock(&e->maplock);
	return rc;
}

int instate__adopt(instate_env *e)
{
	int rc;

	instate__os_rwlock_wrlock(&e->maplock);
	rc = e->env ? mdb_env_set_mapsize(e->env, 0) : EIO;
	e->mapgen++;
	instate__os_rwlock_wrunlock(&e->maplock);
	return instate__mdb_err(rc);
}

int instate__rtxn(instate_env *e, MDB_txn **mt)
{
	int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, mt), dead = 0;

	/* Slots of killed processes are otherwise cleared only when some
	 * process opens the store. */
	if (rc == MDB_READERS_FULL && mdb_reader_check(e->env, &dead) == 0 && dead > 0)
		rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, mt);
	return rc;
}

/*
 * Snapshots never go back in time within a process. LMDB picks a read
 * txn's meta page by the txnid it read first; a reader preempted between
 * the two can copy the meta page of a commit two ahead, written but not yet
 * published, and a snapshot begun after it but before the publication gets
 * the commit in between: one revision back. So every snapshot's revision
 * is checked against the newest one seen here: 1 if rev is at least that
 * (and recorded); 0 if the caller should abort, call instate__rev_wait
 * with no lock held, and begin again. The publication follows the meta
 * write at once, but a durable meta write can take a while: the waits are
 * yields first, then 1 ms sleeps, about 2 s in all; past that (a writer of
 * another process killed between the two) the older revision is taken as
 * the truth.
 */
#define REV_YIELDS 100
#define REV_WAITS (REV_YIELDS + 2000)

int instate__rev_fresh(instate_env *e, uint64_t rev, int waits)
{
	uint64_t seen = __atomic_load_n(&e->rev_seen, __ATOMIC_ACQUIRE);

	if (rev < seen) {
		if (waits < REV_WAITS)
			return 0;
		__atomic_store_n(&e->rev_seen, rev, __ATOMIC_RELEASE);
		return 1;
	}
	while (rev > seen && !__atomic_compare_exchange_n(&e->rev_seen, &seen, rev, 1,
	                                                  __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
	return 1;
}

void instate__rev_wait(int *waits)
{
	if ((*waits)++ < REV_YIELDS)
		instate__os_yield();
	else
		instate__os_sleep_ms(1);
}

/* Begin a short read txn; the caller holds the map lock shared and nothing
 * else. A map grown by another process is adopted, and an environment in
 * LMDB's fatal state reopened, on the way (the map lock is released
 * meanwhile). */
static int rtxn_begin(instate_env *e, MDB_txn **mt)
{
	int rc, panic;

	for (;;) {
		rc = e->env ? instate__rtxn(e, mt) : MDB_PANIC;
		if (rc != MDB_MAP_RESIZED && rc != MDB_PANIC)
			return instate__mdb_err(rc);
		panic = rc == MDB_PANIC;
		instate__os_rwlock_rdunlock(&e->maplock);
		rc = instate__slot_acquire(e);
		if (rc == 0) {
			rc = panic ? instate__recover(e) : instate__adopt(e);
			instate__slot_release(e);
		} else if (panic) {
			rc = EIO; /* this thread's write txn is live: no reopen now */
		}
		instate__os_rwlock_rdlock(&e->maplock);
		if (rc)
			return rc;
	}
}

/* ===================================================================== */
/* Namespace table                                                        */

int instate__ns_lookup(instate_env *e, const char *name, size_t len, instate_ns **out)
{
	instate_ns *ns;
	size_t i;

	for (i = 0; i < e->nns; i++) {
		ns = e->ns[i];
		if (ns->len == len && memcmp(ns->name, name, len) == 0) {
			*out = ns;
			return 0;
		}
	}
	if (e->nns == e->capns) {
		size_t cap = e->capns ? e->capns * 2 : 16;
		instate_ns **p = realloc(e->ns, cap * sizeof *p);
		if (!p)
			return ENOMEM;
		e->ns = p;
		e->capns = cap;
	}
	ns = calloc(1, sizeof *ns);
	if (!ns)
		return ENOMEM;
	ns->name = malloc(len + 1);
	if (!ns->name) {
		free(ns);
		return ENOMEM;
	}
	memcpy(ns->name, name, len);
	ns->name[len] = '\0';
	ns->len = len;
	ns->env = e;
	ns->type = INSTATE_NS_KV;
	ns->dbi_state = NS_DBI_NONE;
	e->ns[e->nns++] = ns;
	*out = ns;
	return 0;
}

static int meta_u32(MDB_txn *mt, MDB_dbi meta, const char *key, uint32_t *out)
{
	uint64_t v;
	int rc = instate__meta_get(mt, meta, key, 4, &v);

	*out = (uint32_t)v;
	return rc;
}

/*
 * Open the LMDB handle of one namespace in read txn mt (e->mu held). Sets
 * *opened; the caller marks it NS_DBI_OPEN once mt has committed (an abort
 * closes it again).
 */
static int ns_open_dbi(instate_env *e, MDB_txn *mt, instate_ns *ns, int *opened)
{
	MDB_dbi dbi;
	int rc;

	*opened = 0;
	if (__atomic_load_n(&ns->dbi_state, __ATOMIC_ACQUIRE) != NS_DBI_NONE || e->wtxn_live)
		return 0;
	rc = mdb_dbi_open(mt, ns->name, 0, &dbi);
	if (rc == MDB_NOTFOUND)
		return 0; /* listed in __meta but never written: reads as empty */
	if (rc)
		return rc;
	ns->dbi = dbi;
	*opened = 1;
	return 0;
}

int instate__refresh(instate_env *e)
{
	MDB_txn *mt;
	MDB_cursor *mc;
	instate__nsent ent;
	uint32_t nsid;
	instate_ns *ns, **opened = NULL;
	size_t nopened = 0, i;
	int rc, o;

	if (e->wtxn_live)
		return 0;
	rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &mt);
	if (rc)
		return rc;
	rc = meta_u32(mt, e->meta, INSTATE_META_NSID, &nsid);
	if (rc == 0)
		rc = mdb_cursor_open(mt, e->meta, &mc);
	if (rc) {
		mdb_txn_abort(mt);
		return rc;
	}
	for (rc = instate__meta_ns_seek(mc, NULL, 0, &ent); rc == 0;
	     rc = instate__meta_ns_next(mc, &ent)) {
		/* A damaged entry does not close the store: its namespace reads
		 * as corrupt when asked for (instate_ns_get), the others work. */
		if (ent.badname)
			continue;
		rc = instate__ns_lookup(e, ent.name, ent.len, &ns);
		if (rc)
			break;
		__atomic_store_n(&ns->type, ent.type, __ATOMIC_RELAXED);
		rc = ns_open_dbi(e, mt, ns, &o);
		if (rc)
			break;
		if (o) {
			instate_ns **p = realloc(opened, (nopened + 1) * sizeof *p);
			if (!p) {
				rc = ENOMEM;
				break;
			}
			opened = p;
			opened[nopened++] = ns;
		}
	}
	mdb_cursor_close(mc);
	if (rc != MDB_NOTFOUND) {
		mdb_txn_abort(mt); /* also closes the handles opened here */
		free(opened);
		return rc;
	}
	rc = mdb_txn_commit(mt); /* publishes the handles to later txns */
	if (rc == 0) {
		for (i = 0; i < nopened; i++)
			__atomic_store_n(&opened[i]->dbi_state, NS_DBI_OPEN, __ATOMIC_RELEASE);
		__atomic_store_n(&e->ns_seen, nsid, __ATOMIC_RELEASE);
	}
	free(opened);
	return rc;
}

/* ===================================================================== */
/* Options, open, close                                                   */

void instate_options_init(instate_options *o)
{
	memset(o, 0, sizeof *o);
	o->readonly = 0;
	o->sync = INSTATE_SYNC_FULL;
	o->map_size = DEFAULT_MAP_SIZE;
	o->max_size = DEFAULT_MAX_SIZE;
	o->file_mode = 0600;
	o->max_namespaces = 128;
	o->max_readers = 510;
	o->single_file = 0;
}

static void env_free(instate_env *e)
{
	size_t i;

	if (e->env)
		mdb_env_close(e->env);
	instate__os_dir_close(&e->dir);
	free(e->lmdbpath);
	for (i = 0; i < e->nns; i++) {
		free(e->ns[i]->name);
		free(e->ns[i]);
	}
	free(e->ns);
	instate__os_mutex_destroy(&e->mu);
	instate__os_mutex_destroy(&e->wmu);
	instate__os_cond_destroy(&e->wcv);
	instate__os_rwlock_destroy(&e->maplock);
	free(e);
}

/* Open __meta, initialising a new store; check the layout version, and
 * upgrade an older one at its first read-write open. */
static int env_init_meta(instate_env *e)
{
	MDB_txn *mt;
	uint32_t format;
	int rc, retried = 0;

again:
	rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &mt);
	if (rc == MDB_MAP_RESIZED && !retried++) {
		/* Another process grew the map beyond our size. */
		if ((rc = mdb_env_set_mapsize(e->env, 0)) == 0)
			goto again;
	}
	if (rc)
		return instate__mdb_err(rc);
	rc = mdb_dbi_open(mt, INSTATE_META_DB, 0, &e->meta);
	if (rc == MDB_NOTFOUND) {
		mdb_txn_abort(mt);
		if (e->readonly)
			return INSTATE_CORRUPT; /* an LMDB file, but not a store */
		rc = mdb_txn_begin(e->env, NULL, 0, &mt);
		if (rc)
			return instate__mdb_err(rc);
		rc = mdb_dbi_open(mt, INSTATE_META_DB, MDB_CREATE, &e->meta);
		if (rc)
			goto fail;
		rc = meta_u32(mt, e->meta, INSTATE_META_FORMAT, &format);
		if (rc == 0 && format == 0) {
			/* First read-write open: an empty store at revision 0. */
			rc = instate__meta_init(mt, e->meta);
			format = INSTATE_STORE_FORMAT;
		}
		if (rc)
			goto fail;
	} else if (rc) {
		goto fail;
	} else {
		rc = meta_u32(mt, e->meta, INSTATE_META_FORMAT, &format);
		if (rc)
			goto fail;
	}
	if (format == 0) {
		mdb_txn_abort(mt);
		return INSTATE_CORRUPT;
	}
	if (format > INSTATE_STORE_FORMAT) {
		mdb_txn_abort(mt);
		return INSTATE_VERSION;
	}
	/* Committed, not aborted: that keeps the __meta handle open. */
	rc = instate__mdb_err(mdb_txn_commit(mt));
	if (rc)
		return rc;
	e->format = format;
	if (format < INSTATE_STORE_FORMAT && !e->readonly) {
		rc = instate__meta_upgrade(e->env, e->meta, e->max_size);
		if (rc)
			return rc;
		e->format = INSTATE_STORE_FORMAT;
	}
	return 0;
fail:
	mdb_txn_abort(mt);
	return instate__mdb_err(rc);
}

/* ===================================================================== */
/* Files: symlinks, owners, the lock file's reader table                  */

/* Bytes of LMDB 0.9's lock file for n reader slots: two 64-byte header
 * lines (txn info, writer mutex) and one 64-byte line per slot. */
#define LOCK_FILE_SIZE(n) (128 + (uint64_t)(n) * 64)

/*
 * A store file or directory another user could have planted or could
 * change: a symlink, owned by someone else than the effective user (or
 * root), or writable by group or others beyond what file_mode grants. A
 * regular file with a second name may be a hard link planted to another
 * file (of root's, say) in a directory others can write. (Windows has no
 * owners or modes in instate_os_stat: the symlink and link tests remain.)
 */
static int check_owner(const instate_os_stat *st, unsigned file_mode)
{
	if (st->type == INSTATE_OS_LNK || (st->type == INSTATE_OS_REG && st->nlink > 1))
		return INSTATE_ACCESS;
	if (st->owner == INSTATE_OS_OWNER_OTHER)
		return INSTATE_ACCESS;
	if (st->mode & 022 & ~file_mode)
		return INSTATE_ACCESS;
	return 0;
}

/* An open's errno, with a refused symlink (O_NOFOLLOW) told apart. */
static int open_err(int rc)
{
	return rc == ELOOP ? INSTATE_ACCESS : rc;
}

/*
 * Create or check the lock file and give every page of its reader table
 * disk blocks before LMDB maps it: LMDB ftruncates the file (sparse) and
 * writes a reader slot through the map, so a slot on an unbacked page of a
 * full filesystem is SIGBUS. The first process to open the file (no
 * process holds a lock on byte 0, where LMDB keeps a shared one per open
 * environment: F_GETLK tells without taking one) sizes it; later
 * ones only fill holes, since LMDB derives its slot count from the size.
 * Called under the registry mutex when no environment of this process has
 * the file open (closing our descriptor drops the process's fcntl locks).
 * Sets *st (zeroed when a read-only filesystem leaves LMDB without one).
 */
static int lock_file_prepare(const instate_os_dir *dir, const char *name,
                             const instate_options *o, instate_os_stat *st)
{
	instate_os_fd fd;
	uint64_t size;
	int rc, excl;

	memset(st, 0, sizeof *st);
	rc = instate__os_openat(dir, name,
	                        INSTATE_OS_O_RDWR | INSTATE_OS_O_CREATE | INSTATE_OS_O_NOFOLLOW,
	                        o->file_mode, &fd);
	if (rc)
		return rc == EROFS && o->readonly ? 0 : open_err(rc);
	if ((rc = instate__os_fstat(fd, st)))
		goto done;
	if (st->type != INSTATE_OS_REG) {
		rc = INSTATE_ACCESS;
		goto done;
	}
	if ((rc = check_owner(st, o->file_mode)))
		goto done;
	size = st->size;
	/* Ask, never take: a write lock held here even for a moment would make
	 * a process opening the store at the same time take LMDB's shared
	 * path and read a lock file nobody initialised (MDB_INVALID). */
	excl = instate__os_unlocked_byte0(fd);
	if (excl && size < LOCK_FILE_SIZE(o->max_readers))
		size = LOCK_FILE_SIZE(o->max_readers);
	if (size > 0 && st->allocated < size)
		rc = instate__os_preallocate(fd, size, excl);
done:
	instate__os_close(fd);
	return rc;
}

static int is_sep(char c)
{
#ifdef _WIN32
	return c == '/' || c == '\\';
#else
	return c == '/';
#endif
}

/*
 * mkdir -p: create `path` and its missing ancestors, each mode 0700 (a new
 * directory holds saves: nobody else's to read). 0 when `path` exists or
 * was made (an existing non-directory is found by the open that follows).
 * Recursion goes up only as far as a missing ancestor, so its depth is the
 * number of missing components.
 */
static int mkdir_p(const char *path)
{
	const char *base;
	char *parent;
	size_t n;
	int rc = instate__os_mkdir(path, 0700);

	if (rc != ENOENT)
		return rc == EEXIST ? 0 : rc;
	base = instate__os_path_base(path);
	if (base == path)
		return rc;
	for (n = (size_t)(base - path); n > 0 && is_sep(path[n - 1]); n--)
		;
	if (n == 0)  /* the root is missing: nothing to make */
		return rc;
	if (!(parent = malloc(n + 1)))
		return ENOMEM;
	memcpy(parent, path, n);
	parent[n] = '\0';
	rc = mkdir_p(parent);
	free(parent);
	if (rc)
		return rc;
	rc = instate__os_mkdir(path, 0700);
	return rc == EEXIST ? 0 : rc;
}

/*
 * Open the store's directory (the store itself, or with single_file the
 * data file's parent) and check the data file. Sets *dir, the two file
 * names, and *dst, the data file (created unless read-only). A symlink or
 * a file of another user is INSTATE_ACCESS; in single_file mode, a parent
 * directory writable by others is refused unless it is sticky (/tmp).
 */
static int store_files(const char *path, const instate_options *o, instate_os_dir *dir,
                       char **dataname, char **lockname, instate_os_stat *dst)
{
	instate_os_stat st;
	instate_os_dir d;
	instate_os_fd fd;
	const char *base;
	char *parent = NULL;
	size_t blen;
	int rc;

	*dataname = *lockname = NULL;
	instate__os_dir_none(&d);
	if (!o->single_file) {
		/* Missing parents are made too (mkdir -p), as a save path like
		 * "saves/slot1" is a new user's first try. */
		if (!o->readonly && (rc = mkdir_p(path)) != 0)
			return rc;
		rc = instate__os_dir_open(path, INSTATE_OS_O_NOFOLLOW, &d);
		if (rc) {
			/* O_DIRECTORY reports a symlink as ENOTDIR */
			if ((rc == ENOTDIR || rc == ELOOP) && instate__os_lstat(path, &st) == 0 &&
			    st.type == INSTATE_OS_LNK)
				rc = INSTATE_ACCESS;
			return rc;
		}
		if ((rc = instate__os_dir_stat(&d, &st)))
			goto fail;
		if ((rc = check_owner(&st, o->file_mode)))
			goto fail;
		*dataname = strdup("data.mdb");
		*lockname = strdup("lock.mdb");
	} else {
		base = instate__os_path_base(path);
		if (base != path) {
			size_t n = base - 1 == path ? 1 : (size_t)(base - 1 - path);
			if (!(parent = malloc(n + 1))) {
				rc = ENOMEM;
				goto fail;
			}
			memcpy(parent, path, n);
			parent[n] = '\0';
		}
		if (!*base) {
			rc = EISDIR;
			goto fail;
		}
		rc = instate__os_dir_open(parent ? parent : ".", 0, &d);
		if (rc == ENOENT && parent && !o->readonly && (rc = mkdir_p(parent)) == 0)
			rc = instate__os_dir_open(parent, 0, &d);
		if (rc)
			goto fail;
		if ((rc = instate__os_dir_stat(&d, &st)))
			goto fail;
		/* Others who may rename entries here could swap our files. */
		if ((st.mode & 022 & ~o->file_mode) && !(st.mode & INSTATE_OS_S_ISVTX)) {
			rc = INSTATE_ACCESS;
			goto fail;
		}
		blen = strlen(base);
		*dataname = strdup(base);
		if ((*lockname = malloc(blen + sizeof "-lock")))
			memcpy(*lockname, base, blen), memcpy(*lockname + blen, "-lock", sizeof "-lock");
	}
	if (!*dataname || !*lockname) {
		rc = ENOMEM;
		goto fail;
	}
	if ((rc = instate__os_statat(&d, *dataname, dst)) != 0) {
		if (rc != ENOENT || o->readonly)
			goto fail;
		/* Create it so that it has an identity to key the registry with
		 * before LMDB opens it (LMDB initialises empty files). */
		rc = instate__os_openat(&d, *dataname,
		                        INSTATE_OS_O_RDWR | INSTATE_OS_O_CREATE | INSTATE_OS_O_NOFOLLOW,
		                        o->file_mode, &fd);
		if (rc) {
			rc = open_err(rc);
			goto fail;
		}
		rc = instate__os_fstat(fd, dst);
		instate__os_close(fd);
		if (rc)
			goto fail;
	}
	if (dst->type == INSTATE_OS_DIR) {
		rc = EISDIR;
		goto fail;
	}
	if ((rc = check_owner(dst, o->file_mode)))
		goto fail;
	if (dst->type != INSTATE_OS_REG) {
		rc = INSTATE_ACCESS;
		goto fail;
	}
	free(parent);
	*dir = d;
	return 0;
fail:
	instate__os_dir_close(&d);
	free(parent);
	free(*dataname);
	free(*lockname);
	*dataname = *lockname = NULL;
	return rc;
}

/* ===================================================================== */
/* Opening and reopening the LMDB environment                             */

/*
 * Create and open e->env at e->lmdbpath with a map of at least `map`
 * bytes, adopting a larger size another process recorded in the file.
 */
static int env_lmdb_open(instate_env *e, uint64_t map)
{
	MDB_envinfo info;
	int rc, dead;

	rc = mdb_env_create(&e->env);
	if (rc) {
		e->env = NULL;
		return rc;
	}
	if ((rc = mdb_env_set_mapsize(e->env, (size_t)map)) ||
	    (rc = mdb_env_set_maxdbs(e->env, e->max_dbs)) ||
	    (rc = mdb_env_set_maxreaders(e->env, e->max_readers)) ||
	    (rc = mdb_env_open(e->env, e->lmdbpath, e->flags, (mdb_mode_t)e->file_mode)))
		goto fail;
	mdb_reader_check(e->env, &dead);
	/* Another process may have grown the map beyond `map`: starting from
	 * its size spares a MAP_FULL on the first write. */
	if ((rc = mdb_env_set_mapsize(e->env, 0)))
		goto fail;
	mdb_env_info(e->env, &info);
	if (info.me_mapsize < map && (rc = mdb_env_set_mapsize(e->env, (size_t)map)))
		goto fail;
	return 0;
fail:
	mdb_env_close(e->env);
	e->env = NULL;
	return rc;
}

/*
 * Open __meta and the namespace cache. A map another process grows
 * meanwhile (MAP_RESIZED) is adopted, a map too small for the first
 * commit grown: neither is the caller's MAP_FULL. With `maplocked` (the
 * caller holds the map lock exclusively) a full map is not grown.
 */
static int env_load(instate_env *e, int maplocked)
{
	MDB_envinfo info;
	int rc, tries;

	for (tries = 0;; tries++) {
		rc = env_init_meta(e);
		if (rc == 0) {
			instate__os_mutex_lock(&e->mu);
			rc = instate__mdb_err(instate__refresh(e));
			instate__os_mutex_unlock(&e->mu);
		}
		if (tries == 16)
			return rc;
		if (rc == INSTATE_RETRY) {
			if ((rc = instate__mdb_err(mdb_env_set_mapsize(e->env, 0))))
				return rc;
		} else if (rc == INSTATE_MAP_FULL && !maplocked) {
			mdb_env_info(e->env, &info);
			if ((rc = instate__grow(e, (uint64_t)info.me_mapsize + 1)))
				return rc;
		} else {
			return rc;
		}
	}
}

int instate__recover(instate_env *e)
{
	MDB_envinfo info;
	MDB_txn *mt;
	uint64_t map = 0;
	size_t i;
	int rc;

	instate__os_rwlock_wrlock(&e->maplock);
	if (e->env) {
		rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &mt);
		if (rc == 0)
			mdb_txn_abort(mt);
		if (rc != MDB_PANIC) {
			instate__os_rwlock_wrunlock(&e->maplock);
			return 0; /* reopened by another thread meanwhile */
		}
	}
	/* Their snapshots live in this environment's map and reader slots. */
	if (__atomic_load_n(&e->nreaders, __ATOMIC_ACQUIRE) != 0) {
		instate__os_rwlock_wrunlock(&e->maplock);
		return EIO;
	}
	if (e->env) {
		mdb_env_info(e->env, &info);
		map = info.me_mapsize;
		mdb_env_close(e->env);
		e->env = NULL;
	}
	/* Every LMDB handle died with the old environment. */
	instate__os_mutex_lock(&e->mu);
	for (i = 0; i < e->nns; i++) {
		__atomic_store_n(&e->ns[i]->dbi_state, NS_DBI_NONE, __ATOMIC_RELEASE);
		e->ns[i]->checked = 0;
	}
	e->ns_seen = 0;
	instate__os_mutex_unlock(&e->mu);
	e->mapgen++;
	rc = instate__mdb_err(env_lmdb_open(e, map ? map : DEFAULT_MAP_SIZE));
	if (rc == 0)
		rc = env_load(e, 1);
	if (rc && e->env) {
		mdb_env_close(e->env);
		e->env = NULL; /* every call reports EIO and tries again */
	}
	instate__os_rwlock_wrunlock(&e->maplock);
	return rc;
}

/*
 * A second open asking for more durability than the live environment has:
 * every handle gets the stricter mode from now on (LMDB's sync flags can
 * change between write transactions; the writer slot keeps one away).
 */
static int env_stricter_sync(instate_env *e, instate_sync sync)
{
	unsigned off = sync == INSTATE_SYNC_FULL ? MDB_NOSYNC | MDB_NOMETASYNC : MDB_NOSYNC;
	int rc = instate__slot_acquire(e);

	if (rc)
		return rc;
	if (e->env)
		rc = mdb_env_set_flags(e->env, off, 0);
	if (rc == 0 && sync == INSTATE_SYNC_NOMETA && e->env)
		rc = mdb_env_set_flags(e->env, MDB_NOMETASYNC, 1);
	if (rc == 0) {
		e->flags &= ~off;
		if (sync == INSTATE_SYNC_NOMETA)
			e->flags |= MDB_NOMETASYNC;
		e->sync = (int)sync;
	}
	instate__slot_release(e);
	return instate__mdb_err(rc);
}

/* Open a new environment; it owns *dir on success only. path: the store's
 * path as given. */
static int env_open(const char *path, const instate_options *o, const instate_os_dir *dir,
                    const char *dataname, const char *lockname, const instate_os_stat *dst,
                    instate_env **out)
{
	instate_env *e;
	MDB_stat ms;
	MDB_envinfo info;
	instate_os_stat lst;
	int rc, maj, min, pat;
	uint64_t pg = instate__os_page_size();
	uint64_t map = o->map_size;

	/* The build pinned LMDB 0.9 (instate_store_int.h); so must the library
	 * loaded at run time. */
	mdb_version(&maj, &min, &pat);
	if (maj != 0 || min != 9)
		return INSTATE_VERSION;
	rc = lock_file_prepare(dir, lockname, o, &lst);
	if (rc)
		return rc;
	e = calloc(1, sizeof *e);
	if (!e)
		return ENOMEM;
	instate__os_dir_none(&e->dir);
	instate__os_mutex_init(&e->mu);
	instate__os_mutex_init(&e->wmu);
	instate__os_cond_init(&e->wcv);
	/* Growth must not starve behind a stream of readers: the map lock
	 * prefers writers (instate_os.h). */
	instate__os_rwlock_init(&e->maplock);
	e->id = dst->id;
	e->lid = lst.id;
	e->readonly = o->readonly;
	e->sync = o->sync;
	e->max_namespaces = o->max_namespaces;
	e->refs = 1;
	e->file_mode = o->file_mode;
	e->max_readers = o->max_readers;
	/* __meta, and one spare: a dropped namespace keeps its handle */
	e->max_dbs = o->max_namespaces + 2;

	/* LMDB opens the files by name: through our directory descriptor, so
	 * the directory checked is the one opened whatever its parents do
	 * (the path as given where there is no /proc, see DESIGN.md). */
	e->dir = *dir;
	rc = instate__os_dir_lmdb_path(dir, o->single_file ? dataname : NULL, path, &e->lmdbpath);
	if (rc)
		goto fail;

	if (map % pg)
		map += pg - map % pg;
	e->flags = MDB_NOTLS;
	if (o->single_file)
		e->flags |= MDB_NOSUBDIR;
	if (o->readonly)
		e->flags |= MDB_RDONLY;
	if (o->sync == INSTATE_SYNC_NOMETA)
		e->flags |= MDB_NOMETASYNC;
	else if (o->sync == INSTATE_SYNC_NONE)
		e->flags |= MDB_NOSYNC;

	rc = instate__mdb_err(env_lmdb_open(e, map));
	if (rc)
		goto fail;
	mdb_env_stat(e->env, &ms);
	e->page_size = ms.ms_psize;
	mdb_env_info(e->env, &info);
	e->max_size = o->max_size - o->max_size % e->page_size;
	if (e->max_size < info.me_mapsize)
		e->max_size = info.me_mapsize; /* grown past our limit by another process */
	rc = env_load(e, 0);
	if (rc)
		goto fail;
	*out = e;
	return 0;
fail:
	instate__os_dir_none(&e->dir); /* the caller's on failure */
	env_free(e);
	return rc;
}

static int check_options(const instate_options *o)
{
	if (o->sync < INSTATE_SYNC_FULL || o->sync > INSTATE_SYNC_NONE)
		return INSTATE_INVALID;
	if (o->max_size < o->map_size || o->map_size > SIZE_MAX)
		return INSTATE_INVALID;
	if (o->file_mode & ~07777u)
		return INSTATE_INVALID;
	if (o->max_namespaces > MAX_NAMESPACES_LIMIT || o->max_readers > MAX_READERS_LIMIT)
		return INSTATE_INVALID;
	return 0;
}

int instate_store_open(const char *path, const instate_options *opts, instate_store **out)
{
	instate_options o;
	instate_store *s = NULL;
	instate_env *e;
	instate_os_stat dst, lst;
	instate_os_dir dir;
	char *dataname = NULL, *lockname = NULL;
	int rc;

	if (out)
		*out = NULL;
	if (!path || !*path || !out)
		return INSTATE_INVALID;
	instate__os_dir_none(&dir);
	if (opts)
		o = *opts;
	else
		instate_options_init(&o);
	/* Zero means "the default" for the sizes and limits. */
	if (!o.map_size)
		o.map_size = DEFAULT_MAP_SIZE;
	if (!o.max_size)
		o.max_size = o.map_size > DEFAULT_MAX_SIZE ? o.map_size : DEFAULT_MAX_SIZE;
	if (!o.max_namespaces)
		o.max_namespaces = 128;
	if (!o.max_readers)
		o.max_readers = 510;
	o.readonly = !!o.readonly;
	if ((rc = check_options(&o)))
		return rc;

	s = calloc(1, sizeof *s);
	if (!s || !(s->path = strdup(path))) {
		rc = ENOMEM;
		goto fail;
	}
	s->readonly = o.readonly;
	rc = store_files(path, &o, &dir, &dataname, &lockname, &dst);
	if (rc)
		goto fail;

	instate__os_mutex_lock(&registry_mu);
	/* An lstat does not open the lock file: closing a descriptor of it
	 * would drop the fcntl locks a live environment holds on it. */
	if (instate__os_statat(&dir, lockname, &lst) != 0) {
		memset(&lst, 0, sizeof lst);
	} else if ((rc = lst.type == INSTATE_OS_REG ? check_owner(&lst, o.file_mode)
	                                            : INSTATE_ACCESS)) {
		instate__os_mutex_unlock(&registry_mu);
		goto fail;
	}
	for (e = registry; e; e = e->next)
		if (instate__os_id_equal(e->id, dst.id) ||
		    (lst.id.ino && instate__os_id_equal(e->lid, lst.id)))
			break;
	if (e) {
		/* One LMDB environment per lock file and per data file: a data
		 * file replaced under a live environment (or a recreated lock
		 * file) would give two on one file. Durability and access must
		 * be what this caller asked for; the sizes and limits of the
		 * first open hold for all. */
		if (!instate__os_id_equal(e->id, dst.id) || !instate__os_id_equal(e->lid, lst.id) ||
		    e->readonly != o.readonly)
			rc = INSTATE_CONFLICT;
		else if ((int)o.sync < e->sync)
			rc = env_stricter_sync(e, o.sync);
		if (rc == 0)
			e->refs++;
	} else {
		rc = env_open(path, &o, &dir, dataname, lockname, &dst, &e);
		if (rc == 0) {
			instate__os_dir_none(&dir); /* the environment's now */
			e->next = registry;
			registry = e;
		}
	}
	instate__os_mutex_unlock(&registry_mu);
	if (rc)
		goto fail;
	instate__os_dir_close(&dir);
	free(dataname);
	free(lockname);
	s->env = e;
	*out = s;
	return 0;
fail:
	instate__os_dir_close(&dir);
	free(dataname);
	free(lockname);
	if (s)
		free(s->path);
	free(s);
	return rc;
}

void instate_store_close(instate_store *s)
{
	instate_env *e, **pp;

	if (!s)
		return;
	e = s->env;
	if (s->owner)
		instate__owner_release(s);
	instate__os_mutex_lock(&registry_mu);
	if (--e->refs == 0) {
		for (pp = &registry; *pp; pp = &(*pp)->next)
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		env_free(e);
	}
	instate__os_mutex_unlock(&registry_mu);
	free(s->path);
	free(s);
}

int instate__store_dup(instate_store *s, instate_store **out)
{
	instate_store *d = calloc(1, sizeof *d);

	*out = NULL;
	if (!d || !(d->path = strdup(s->path))) {
		free(d);
		return ENOMEM;
	}
	d->env = s->env;
	d->readonly = s->readonly;
	instate__os_mutex_lock(&registry_mu);
	s->env->refs++;
	instate__os_mutex_unlock(&registry_mu);
	*out = d;
	return 0;
}

const char *instate_store_path(const instate_store *s)
{
	return s->path;
}

/* ===================================================================== */
/* Revision, statistics, reserve                                          */

static int read_revision(instate_env *e, MDB_txn *mt, uint64_t *out)
{
	return instate__mdb_err(instate__meta_get(mt, e->meta, INSTATE_META_REVISION, 8, out));
}

int instate_store_revision(instate_store *s, uint64_t *out)
{
	instate_env *e = s->env;
	MDB_txn *mt;
	int rc, waits = 0;

	for (;;) {
		*out = 0;
		instate__os_rwlock_rdlock(&e->maplock);
		rc = rtxn_begin(e, &mt);
		if (rc == 0) {
			rc = read_revision(e, mt, out);
			mdb_txn_abort(mt);
		}
		instate__os_rwlock_rdunlock(&e->maplock);
		if (rc || instate__rev_fresh(e, *out, waits))
			return rc;
		instate__rev_wait(&waits);
	}
}

uint64_t instate_store_last_commit(instate_store *s)
{
	instate_env *e = s->env;
	MDB_envinfo info;
	int rc;

	/* Reads the newest meta page: no transaction, no reader slot. The map
	 * lock keeps a reopen (instate__recover) away. */
	instate__os_rwlock_rdlock(&e->maplock);
	rc = e->env ? mdb_env_info(e->env, &info) : EIO;
	instate__os_rwlock_rdunlock(&e->maplock);
	return rc ? 0 : (uint64_t)info.me_last_txnid;
}

static int count_reader(const char *msg, void *ctx)
{
	uint64_t *n = ctx;

	/* One call per line: a header, then a reader per line, or a single
	 * "(no active readers)". */
	if (msg[0] != '(')
		(*n)++;
	return 0;
}

int instate_store_stats(instate_store *s, instate_stats *out)
{
	instate_env *e = s->env;
	MDB_envinfo info;
	MDB_txn *mt;
	uint64_t lines = 0;
	int rc;

	memset(out, 0, sizeof *out);
	memset(&info, 0, sizeof info);
	instate__os_rwlock_rdlock(&e->maplock);
	rc = rtxn_begin(e, &mt);
	if (rc == 0) {
		mdb_env_info(e->env, &info);
		out->map_size = info.me_mapsize;
		out->used_bytes = instate__used_bytes(e, &info);
	}
	if (rc == 0) {
		rc = read_revision(e, mt, &out->revision);
		if (rc == 0)
			rc = instate__mdb_err(instate__meta_ns_count(mt, e->meta, &out->namespaces));
		mdb_txn_abort(mt);
		mdb_reader_list(e->env, count_reader, &lines);
	}
	instate__os_rwlock_rdunlock(&e->maplock);
	out->readers = lines ? lines - 1 : 0;
	out->max_size = e->max_size;
	out->page_size = e->page_size;
	out->max_readers = info.me_maxreaders;
	out->readonly = e->readonly;
	out->format = e->format;
	return rc;
}

int instate_store_reserve(instate_store *s, uint64_t bytes)
{
	instate_env *e = s->env;
	MDB_envinfo info;
	uint64_t used;
	int rc;

	if (e->readonly)
		return INSTATE_READONLY;
	rc = instate__slot_acquire(e);
	if (rc)
		return rc;
	if (!e->env && (rc = instate__recover(e))) {
		instate__slot_release(e);
		return rc;
	}
	mdb_env_info(e->env, &info);
	used = instate__used_bytes(e, &info);
	/* LMDB's copy-on-write needs room for the old and the new pages. */
	rc = bytes > UINT64_MAX / 2 - used ? INSTATE_MAP_FULL : instate__grow(e, used + bytes);
	instate__slot_release(e);
	return rc;
}

/* ===================================================================== */
/* Namespace handles                                                      */

int instate_ns_get(instate_store *s, const char *name, size_t len,
                   instate_ns_type type, instate_ns **out)
{
	instate_env *e = s->env;
	instate_ns *ns = NULL;
	MDB_txn *mt;
	MDB_val k, d;
	char key[INSTATE_META_NSKEY_MAX];
	instate__nsent ent;
	int rc, opened = 0;

	if (out)
		*out = NULL;
	if (!name || !out || !instate__ns_name_kind(name, len))
		return INSTATE_INVALID;
	if (type != INSTATE_NS_ANY && type != INSTATE_NS_KV && type != INSTATE_NS_STATE)
		return INSTATE_INVALID;
	k.mv_data = key;
	k.mv_size = instate__meta_ns_key(key, name, len);

	instate__os_rwlock_rdlock(&e->maplock);
	rc = rtxn_begin(e, &mt);
	if (rc) {
		instate__os_rwlock_rdunlock(&e->maplock);
		return rc;
	}
	instate__os_mutex_lock(&e->mu);
	rc = instate__ns_lookup(e, name, len, &ns);
	if (rc)
		goto done;
	rc = mdb_get(mt, e->meta, &k, &d);
	if (rc == 0) {
		if ((rc = instate__meta_ns_parse(&k, &d, &ent)) != 0)
			goto done;
		__atomic_store_n(&ns->type, ent.type, __ATOMIC_RELAXED);
		if (type != INSTATE_NS_ANY && (int)type != ent.type) {
			rc = INSTATE_TYPE;
			goto done;
		}
		rc = instate__mdb_err(ns_open_dbi(e, mt, ns, &opened));
	} else if (rc == MDB_NOTFOUND) {
		rc = 0;
		if (__atomic_load_n(&ns->dbi_state, __ATOMIC_ACQUIRE) == NS_DBI_PENDING) {
			/* Being created by the live write transaction. */
			if (type != INSTATE_NS_ANY && (int)type != ns->type)
				rc = INSTATE_TYPE;
		} else {
			__atomic_store_n(&ns->type, type == INSTATE_NS_ANY ? INSTATE_NS_KV : (int)type,
			                 __ATOMIC_RELAXED);
		}
	} else {
		rc = instate__mdb_err(rc);
	}
done:
	/* A read txn's commit publishes a handle opened in it; nothing else. */
	if (rc == 0) {
		rc = instate__mdb_err(mdb_txn_commit(mt));
		if (rc == 0 && opened)
			__atomic_store_n(&ns->dbi_state, NS_DBI_OPEN, __ATOMIC_RELEASE);
	} else {
		mdb_txn_abort(mt);
	}
	instate__os_mutex_unlock(&e->mu);
	instate__os_rwlock_rdunlock(&e->maplock);
	if (rc == 0)
		*out = ns;
	return rc;
}

const char *instate_ns_name(const instate_ns *ns, size_t *len)
{
	if (len)
		*len = ns->len;
	return ns->name;
}

instate_ns_type instate_ns_type_of(const instate_ns *ns)
{
	return (instate_ns_type)__atomic_load_n(&ns->type, __ATOMIC_RELAXED);
}
