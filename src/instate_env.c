/*
 * instate_env.c - stores: the process-wide registry of LMDB environments,
 * open/close, statistics, map growth, the writer slot, namespace handles
 * and the clock. Transactions, records and cursors are in instate_txn.c.
 *
 * Locking, in acquisition order (never the other way round):
 *   registry mutex  -> (opening and closing environments only)
 *   writer slot     -> one write transaction per environment per process
 *   map lock        -> shared around every call that touches the map,
 *                      exclusive while remapping (instate__grow/adopt)
 *   env mutex (mu)  -> namespace table and every mdb_dbi_open
 * The map lock prefers writers, so no thread ever takes it shared twice.
 */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include "instate_store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((uint64_t)64 << 20)
#define DEFAULT_MAX_SIZE ((uint64_t)1 << 40)
#define MAX_NAMESPACES_LIMIT 32000u
#define MAX_READERS_LIMIT (1u << 20)

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static instate_env *registry;

/* ===================================================================== */
/* Clock                                                                  */

static int64_t fixed_clock;

int64_t instate_clock_now(void)
{
	struct timespec ts;
	int64_t f = __atomic_load_n(&fixed_clock, __ATOMIC_RELAXED);

	if (f)
		return f;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
	case EACCES: return EACCES;
	default:
		if (rc > 0 || (rc < INSTATE_ERR_BASE && rc >= INSTATE_ERR_LAST))
			return rc; /* an errno, or already an instate code */
		/* MDB_INVALID, MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_PANIC,
		 * MDB_INCOMPATIBLE and the page/cursor overflows all mean the
		 * file does not hold what LMDB expects. */
		return INSTATE_CORRUPT;
	}
}

/* ===================================================================== */
/* Writer slot and map growth                                             */

int instate__slot_acquire(instate_env *e)
{
	pthread_t self = pthread_self();

	pthread_mutex_lock(&e->wmu);
	while (e->wbusy) {
		if (pthread_equal(e->wowner, self)) {
			pthread_mutex_unlock(&e->wmu);
			return INSTATE_BUSY;
		}
		pthread_cond_wait(&e->wcv, &e->wmu);
	}
	e->wbusy = 1;
	e->wowner = self;
	pthread_mutex_unlock(&e->wmu);
	return 0;
}

void instate__slot_release(instate_env *e)
{
	pthread_mutex_lock(&e->wmu);
	e->wbusy = 0;
	pthread_cond_signal(&e->wcv);
	pthread_mutex_unlock(&e->wmu);
}

int instate__grow(instate_env *e, uint64_t need)
{
	MDB_envinfo info;
	uint64_t cur, size;
	int rc = 0;

	pthread_rwlock_wrlock(&e->maplock);
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
	pthread_rwlock_unlock(&e->maplock);
	return rc;
}

int instate__adopt(instate_env *e)
{
	int rc;

	pthread_rwlock_wrlock(&e->maplock);
	rc = mdb_env_set_mapsize(e->env, 0);
	e->mapgen++;
	pthread_rwlock_unlock(&e->maplock);
	return instate__mdb_err(rc);
}

/* Begin a short read txn; the caller holds the map lock shared and nothing
 * else. A map grown by another process is adopted on the way (the map lock
 * is released meanwhile). */
static int rtxn_begin(instate_env *e, MDB_txn **mt)
{
	int rc;

	for (;;) {
		rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, mt);
		if (rc != MDB_MAP_RESIZED)
			return instate__mdb_err(rc);
		pthread_rwlock_unlock(&e->maplock);
		rc = instate__slot_acquire(e);
		if (rc == 0) {
			rc = instate__adopt(e);
			instate__slot_release(e);
		}
		pthread_rwlock_rdlock(&e->maplock);
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
		e->ns_seen = nsid;
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
	for (i = 0; i < e->nns; i++) {
		free(e->ns[i]->name);
		free(e->ns[i]);
	}
	free(e->ns);
	pthread_mutex_destroy(&e->mu);
	pthread_mutex_destroy(&e->wmu);
	pthread_cond_destroy(&e->wcv);
	pthread_rwlock_destroy(&e->maplock);
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

static int env_open(const char *lmdbpath, const instate_options *o, struct stat *st,
                    instate_env **out)
{
	instate_env *e;
	pthread_rwlockattr_t ra;
	MDB_stat ms;
	MDB_envinfo info;
	unsigned flags = MDB_NOTLS;
	int rc, dead;
	long pg = sysconf(_SC_PAGESIZE);
	uint64_t map = o->map_size;

	e = calloc(1, sizeof *e);
	if (!e)
		return ENOMEM;
	pthread_mutex_init(&e->mu, NULL);
	pthread_mutex_init(&e->wmu, NULL);
	pthread_cond_init(&e->wcv, NULL);
	pthread_rwlockattr_init(&ra);
	/* Growth must not starve behind a stream of readers. */
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&e->maplock, &ra);
	pthread_rwlockattr_destroy(&ra);
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->readonly = o->readonly;
	e->max_namespaces = o->max_namespaces;
	e->refs = 1;

	if (pg <= 0)
		pg = 4096;
	if (map % (uint64_t)pg)
		map += (uint64_t)pg - map % (uint64_t)pg;
	if (o->single_file)
		flags |= MDB_NOSUBDIR;
	if (o->readonly)
		flags |= MDB_RDONLY;
	if (o->sync == INSTATE_SYNC_NOMETA)
		flags |= MDB_NOMETASYNC;
	else if (o->sync == INSTATE_SYNC_NONE)
		flags |= MDB_NOSYNC;

	rc = mdb_env_create(&e->env);
	if (rc) {
		e->env = NULL;
		goto fail;
	}
	if ((rc = mdb_env_set_mapsize(e->env, (size_t)map)) ||
	    /* __meta, and one spare: a dropped namespace keeps its handle */
	    (rc = mdb_env_set_maxdbs(e->env, o->max_namespaces + 2)) ||
	    (rc = mdb_env_set_maxreaders(e->env, o->max_readers)))
		goto fail;
	rc = mdb_env_open(e->env, lmdbpath, flags, (mdb_mode_t)o->file_mode);
	if (rc)
		goto fail;
	mdb_reader_check(e->env, &dead);
	mdb_env_stat(e->env, &ms);
	e->page_size = ms.ms_psize;
	mdb_env_info(e->env, &info);
	e->max_size = o->max_size - o->max_size % e->page_size;
	if (e->max_size < info.me_mapsize)
		e->max_size = info.me_mapsize; /* grown past our limit by another process */
	rc = env_init_meta(e);
	if (rc)
		goto fail_mapped;
	pthread_mutex_lock(&e->mu);
	rc = instate__refresh(e);
	pthread_mutex_unlock(&e->mu);
	if (rc)
		goto fail;
	*out = e;
	return 0;
fail:
	rc = instate__mdb_err(rc);
fail_mapped:
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
	struct stat st;
	char *datafile = NULL;
	size_t plen;
	int rc, fd;

	if (out)
		*out = NULL;
	if (!path || !*path || !out)
		return INSTATE_INVALID;
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

	plen = strlen(path);
	s = calloc(1, sizeof *s);
	datafile = malloc(plen + sizeof "/data.mdb");
	if (!s || !datafile || !(s->path = strdup(path))) {
		rc = ENOMEM;
		goto fail;
	}
	s->readonly = o.readonly;
	memcpy(datafile, path, plen + 1);
	if (!o.single_file) {
		if (!o.readonly && mkdir(path, 0700) != 0 && errno != EEXIST) {
			rc = errno;
			goto fail;
		}
		if (stat(path, &st) != 0) {
			rc = errno;
			goto fail;
		}
		if (!S_ISDIR(st.st_mode)) {
			rc = ENOTDIR;
			goto fail;
		}
		memcpy(datafile + plen, "/data.mdb", sizeof "/data.mdb");
	}
	/* Create the data file ourselves so that it has an inode to key the
	 * registry with before LMDB opens it (LMDB initialises empty files). */
	if (o.readonly) {
		if (stat(datafile, &st) != 0) {
			rc = errno;
			goto fail;
		}
	} else {
		fd = open(datafile, O_RDWR | O_CREAT | O_CLOEXEC, (mode_t)o.file_mode);
		if (fd < 0) {
			rc = errno;
			goto fail;
		}
		rc = fstat(fd, &st) != 0 ? errno : 0;
		close(fd);
		if (rc)
			goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = EISDIR;
		goto fail;
	}

	pthread_mutex_lock(&registry_mu);
	for (e = registry; e; e = e->next)
		if (e->dev == st.st_dev && e->ino == st.st_ino)
			break;
	if (e) {
		/* Other options than readonly: the first open wins. */
		if (e->readonly != o.readonly)
			rc = INSTATE_CONFLICT;
		else
			e->refs++;
	} else {
		rc = env_open(o.single_file ? path : s->path, &o, &st, &e);
		if (rc == 0) {
			e->next = registry;
			registry = e;
		}
	}
	pthread_mutex_unlock(&registry_mu);
	if (rc)
		goto fail;
	s->env = e;
	free(datafile);
	*out = s;
	return 0;
fail:
	free(datafile);
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
	pthread_mutex_lock(&registry_mu);
	if (--e->refs == 0) {
		for (pp = &registry; *pp; pp = &(*pp)->next)
			if (*pp == e) {
				*pp = e->next;
				break;
			}
		env_free(e);
	}
	pthread_mutex_unlock(&registry_mu);
	free(s->path);
	free(s);
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
	int rc;

	*out = 0;
	pthread_rwlock_rdlock(&e->maplock);
	rc = rtxn_begin(e, &mt);
	if (rc == 0) {
		rc = read_revision(e, mt, out);
		mdb_txn_abort(mt);
	}
	pthread_rwlock_unlock(&e->maplock);
	return rc;
}

uint64_t instate_store_last_commit(instate_store *s)
{
	MDB_envinfo info;

	/* Reads the newest meta page: no transaction, no reader slot. */
	if (mdb_env_info(s->env->env, &info))
		return 0;
	return (uint64_t)info.me_last_txnid;
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
	pthread_rwlock_rdlock(&e->maplock);
	mdb_env_info(e->env, &info);
	out->map_size = info.me_mapsize;
	out->used_bytes = instate__used_bytes(e, &info);
	rc = rtxn_begin(e, &mt);
	if (rc == 0) {
		rc = read_revision(e, mt, &out->revision);
		if (rc == 0)
			rc = instate__mdb_err(instate__meta_ns_count(mt, e->meta, &out->namespaces));
		mdb_txn_abort(mt);
	}
	pthread_rwlock_unlock(&e->maplock);
	mdb_reader_list(e->env, count_reader, &lines);
	out->readers = lines ? lines - 1 : 0;
	out->max_size = e->max_size;
	out->page_size = e->page_size;
	out->max_readers = info.me_maxreaders;
	out->readonly = e->readonly;
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
	if (!name || !out || len < 1 || len > INSTATE_NSNAME_MAX || memchr(name, 0, len) ||
	    (len >= 2 && name[0] == '_' && name[1] == '_'))
		return INSTATE_INVALID;
	if (type != INSTATE_NS_ANY && type != INSTATE_NS_KV && type != INSTATE_NS_STATE)
		return INSTATE_INVALID;
	k.mv_data = key;
	k.mv_size = instate__meta_ns_key(key, name, len);

	pthread_rwlock_rdlock(&e->maplock);
	rc = rtxn_begin(e, &mt);
	if (rc) {
		pthread_rwlock_unlock(&e->maplock);
		return rc;
	}
	pthread_mutex_lock(&e->mu);
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
	pthread_mutex_unlock(&e->mu);
	pthread_rwlock_unlock(&e->maplock);
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
