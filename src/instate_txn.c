/*
 * instate_txn.c - transactions, records and cursors of the store core.
 *
 * Every call that touches the map holds the environment's map lock shared
 * and copies what it read into the caller's buffers before releasing it, so
 * another thread may remap (grow) the map between any two calls. A write
 * that hits MDB_MAP_FULL aborts the whole top-level LMDB transaction, grows
 * the map while still holding the writer slot, and reports INSTATE_RETRY;
 * the instate_txn objects stay allocated, ended, until the caller aborts
 * them. Record layout and __meta: docs/FORMAT.md section 2.
 */
#include "instate_store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A namespace this transaction level created: its __meta entry, and its
 * LMDB handle too when `opened` (LMDB closes that handle if the level
 * aborts). */
typedef struct created {
	instate_ns *ns;
	int opened;
} created;

struct instate_txn {
	instate_store *s;
	instate_env *e;
	instate_txn *parent, *child;
	MDB_txn *mt;            /* NULL once ended */
	int rdonly;
	int err;                /* first failure: the txn can only be aborted */
	uint64_t revision;
	uint64_t serial;        /* e->wserial of the top-level write txn */
	uint32_t nsid;          /* top level: nsid counter after its creations */
	int nsid_dirty;
	created *made;
	size_t nmade, capmade;
	instate_cursor *cursors;
};

struct instate_cursor {
	instate_txn *txn;       /* NULL once its transaction ended */
	instate_ns *ns;
	instate_cursor *next;   /* the txn's list of open cursors */
	MDB_cursor *mc;
	uint64_t gen;           /* e->mapgen when mc was last positioned */
	int started, done;
	size_t plen, klen;
	unsigned char prefix[INSTATE_KEY_MAX];
	unsigned char key[INSTATE_KEY_MAX]; /* last key returned */
};

#define RDLOCK(e) pthread_rwlock_rdlock(&(e)->maplock)
#define UNLOCK(e) pthread_rwlock_unlock(&(e)->maplock)

/* ===================================================================== */
/* Record headers                                                         */

static int rec_parse(const MDB_val *d, instate_meta *m, const unsigned char **payload,
                     size_t *plen)
{
	const unsigned char *p = d->mv_data;
	size_t n = d->mv_size, off = 1;

	m->expires_ms = 0;
	m->version = 0;
	if (n < 1 || (p[0] & ~(INSTATE_REC_EXPIRES | INSTATE_REC_VERSION)))
		return INSTATE_CORRUPT;
	if (p[0] & INSTATE_REC_EXPIRES) {
		if (n < off + 8)
			return INSTATE_CORRUPT;
		m->expires_ms = (int64_t)instate__get_u64(p + off);
		off += 8;
	}
	if (p[0] & INSTATE_REC_VERSION) {
		if (n < off + 4)
			return INSTATE_CORRUPT;
		m->version = instate__get_u32(p + off);
		off += 4;
	}
	if (payload)
		*payload = p + off;
	if (plen)
		*plen = n - off;
	return 0;
}

static size_t rec_header(unsigned char *h, int64_t expires_ms, uint32_t version)
{
	size_t off = 1;

	h[0] = 0;
	if (expires_ms) {
		h[0] |= INSTATE_REC_EXPIRES;
		instate__put_u64(h + off, (uint64_t)expires_ms);
		off += 8;
	}
	if (version) {
		h[0] |= INSTATE_REC_VERSION;
		instate__put_u32(h + off, version);
		off += 4;
	}
	return off;
}

static int expired(const instate_meta *m, int64_t now)
{
	return m->expires_ms != 0 && m->expires_ms <= now;
}

/* The same, reading the clock only for records that can expire. */
static int expired_now(const instate_meta *m)
{
	return m->expires_ms != 0 && m->expires_ms <= instate_clock_now();
}

static int buf_set(instate_buf *b, const void *p, size_t n)
{
	b->len = 0;
	if (instate_buf_reserve(b, n ? n : 1))
		return ENOMEM;
	if (n)
		memcpy(b->data, p, n);
	b->len = n;
	return 0;
}

/* ===================================================================== */
/* Meta helpers                                                           */

int instate__meta_get(MDB_txn *mt, MDB_dbi meta, const char *key, size_t size, uint64_t *out)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	int rc = mdb_get(mt, meta, &k, &d);

	*out = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (d.mv_size != size)
		return MDB_CORRUPTED;
	*out = size == 8 ? instate__get_u64(d.mv_data) : instate__get_u32(d.mv_data);
	return 0;
}

static int meta_put_u(MDB_txn *mt, MDB_dbi meta, const char *key, size_t size, uint64_t v)
{
	MDB_val k = { strlen(key), (void *)key }, d;
	unsigned char buf[8];

	if (size == 8)
		instate__put_u64(buf, v);
	else
		instate__put_u32(buf, (uint32_t)v);
	d.mv_data = buf;
	d.mv_size = size;
	return mdb_put(mt, meta, &k, &d, 0);
}

static size_t ns_meta_key(char *key, const instate_ns *ns)
{
	memcpy(key, INSTATE_META_NSPREFIX, INSTATE_META_NSPREFIX_LEN);
	memcpy(key + INSTATE_META_NSPREFIX_LEN, ns->name, ns->len);
	return INSTATE_META_NSPREFIX_LEN + ns->len;
}

/* ===================================================================== */
/* Ending transactions                                                    */

static instate_txn *txn_top(instate_txn *t)
{
	while (t->parent)
		t = t->parent;
	return t;
}

/* Close the LMDB cursors of one level before LMDB ends it. */
static void detach_cursors(instate_txn *t)
{
	instate_cursor *c, *next;

	for (c = t->cursors; c; c = next) {
		next = c->next;
		if (c->mc)
			mdb_cursor_close(c->mc);
		c->mc = NULL;
		c->txn = NULL;
		c->next = NULL;
	}
	t->cursors = NULL;
}

/* Forget what an aborted level created (e->mu taken here). */
static void undo_created(instate_txn *t)
{
	size_t i;

	if (!t->nmade)
		return;
	pthread_mutex_lock(&t->e->mu);
	for (i = 0; i < t->nmade; i++) {
		instate_ns *ns = t->made[i].ns;
		ns->checked = 0;
		if (t->made[i].opened)
			__atomic_store_n(&ns->dbi_state, NS_DBI_NONE, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&t->e->mu);
	t->nmade = 0;
}

/* Mark a level and its children ended, deepest first: LMDB lends a
 * parent's cursors to the open child, so the child's go first. */
static void mark_ended(instate_txn *t, int err)
{
	if (!t)
		return;
	mark_ended(t->child, err);
	detach_cursors(t);
	undo_created(t);
	t->mt = NULL;
	if (!t->err)
		t->err = err;
}

/* After LMDB ended the top-level write txn: let other txns open dbis again. */
static void write_done(instate_env *e)
{
	pthread_mutex_lock(&e->mu);
	e->wtxn_live = 0;
	pthread_mutex_unlock(&e->mu);
}

/*
 * MDB_MAP_FULL in a write (the map lock NOT held): abort the whole
 * top-level txn, grow while holding the writer slot, then give it up.
 */
static int txn_map_full(instate_txn *t)
{
	instate_txn *top = txn_top(t);
	instate_env *e = t->e;
	MDB_envinfo info;
	MDB_txn *mt = top->mt;
	int rc;

	/* Children first: their cursors and handles die with the top. */
	mark_ended(top, 0);
	if (mt)
		mdb_txn_abort(mt);
	write_done(e);
	mdb_env_info(e->env, &info);
	rc = instate__grow(e, (uint64_t)info.me_mapsize + 1);
	if (rc == 0)
		rc = INSTATE_RETRY;
	instate__slot_release(e);
	for (t = top; t; t = t->child)
		t->err = rc;
	return rc;
}

/* Record a write's outcome (map lock NOT held). */
static int write_result(instate_txn *t, int rc)
{
	if (rc == MDB_MAP_FULL)
		return txn_map_full(t);
	/* a page spill writes to the file mid-transaction */
	rc = instate__write_err(t->e, instate__mdb_err(rc));
	if (rc && rc != INSTATE_INVALID && rc != INSTATE_EXISTS && rc != INSTATE_NOTFOUND &&
	    !t->err)
		t->err = rc;
	return rc;
}

static void txn_free(instate_txn *t)
{
	if (t->parent)
		t->parent->child = NULL;
	free(t->made);
	free(t);
}

/* ===================================================================== */
/* Begin                                                                  */

static int begin_nested(instate_txn *parent, instate_txn *t)
{
	int rc;

	if (parent->rdonly)
		return INSTATE_INVALID;
	if (!parent->mt || parent->err)
		return INSTATE_ENDED;
	if (parent->child)
		return INSTATE_BUSY;
	RDLOCK(t->e);
	rc = mdb_txn_begin(t->e->env, parent->mt, 0, &t->mt);
	UNLOCK(t->e);
	if (rc)
		return instate__mdb_err(rc);
	t->parent = parent;
	t->revision = parent->revision;
	t->serial = parent->serial;
	parent->child = t;
	return 0;
}

static int begin_read(instate_txn *t)
{
	instate_env *e = t->e;
	uint64_t rev, nsid;
	int rc;

	for (;;) {
		RDLOCK(e);
		rc = e->env ? instate__rtxn(e, &t->mt) : MDB_PANIC;
		if (rc == 0) {
			rc = instate__meta_get(t->mt, e->meta, INSTATE_META_REVISION, 8, &rev);
			if (rc == 0)
				rc = instate__meta_get(t->mt, e->meta, INSTATE_META_NSID, 4, &nsid);
			if (rc) {
				mdb_txn_abort(t->mt);
			} else {
				pthread_mutex_lock(&e->mu);
				if (nsid <= e->ns_seen || e->wtxn_live) {
					pthread_mutex_unlock(&e->mu);
					/* counted before the map lock goes: a reopen
					 * waits for every live snapshot */
					__atomic_add_fetch(&e->nreaders, 1, __ATOMIC_ACQ_REL);
					UNLOCK(e);
					t->revision = rev;
					return 0;
				}
				/* Namespaces created by another process: open their
				 * handles, then begin again so this txn can use them. */
				mdb_txn_abort(t->mt);
				rc = instate__refresh(e);
				pthread_mutex_unlock(&e->mu);
			}
		}
		t->mt = NULL;
		UNLOCK(e);
		if (rc == MDB_MAP_RESIZED || rc == MDB_PANIC) {
			int panic = rc == MDB_PANIC;
			rc = instate__slot_acquire(e);
			if (rc)
				return panic ? EIO : rc; /* this thread's write txn is live */
			rc = panic ? instate__recover(e) : instate__adopt(e);
			instate__slot_release(e);
		}
		if (rc)
			return instate__mdb_err(rc);
	}
}

static int begin_write(instate_txn *t)
{
	instate_env *e = t->e;
	MDB_envinfo info;
	uint64_t rev, nsid;
	int rc;

	if (e->readonly)
		return INSTATE_READONLY;
	rc = instate__slot_acquire(e);
	if (rc)
		return rc;
	/* A failed reopen left no environment: try again now. */
	if (!e->env && (rc = instate__recover(e))) {
		instate__slot_release(e);
		return rc;
	}
	/* Grow ahead of need: the map is remapped only between transactions. */
	mdb_env_info(e->env, &info);
	if (instate__used_bytes(e, &info) * 2 > info.me_mapsize)
		(void)instate__grow(e, (uint64_t)info.me_mapsize + 1);
	/* No map lock here: remapping needs the writer slot, which this thread
	 * holds, and taking it around LMDB's writer mutex would order the two
	 * locks both ways. */
	for (;;) {
		pthread_mutex_lock(&e->mu);
		e->wtxn_live = 1;
		pthread_mutex_unlock(&e->mu);
		rc = mdb_txn_begin(e->env, NULL, 0, &t->mt);
		if (rc == 0) {
			rc = instate__meta_get(t->mt, e->meta, INSTATE_META_REVISION, 8, &rev);
			if (rc == 0)
				rc = instate__meta_get(t->mt, e->meta, INSTATE_META_NSID, 4, &nsid);
			/* ns_seen changes only under the writer slot now */
			if (rc == 0 && nsid <= e->ns_seen)
				break;
			mdb_txn_abort(t->mt);
		}
		t->mt = NULL;
		pthread_mutex_lock(&e->mu);
		e->wtxn_live = 0;
		if (rc == 0)
			rc = instate__refresh(e);
		pthread_mutex_unlock(&e->mu);
		if (rc == MDB_MAP_RESIZED)
			rc = instate__adopt(e);
		else if (rc == MDB_PANIC)
			rc = instate__recover(e); /* LMDB's fatal state: reopen */
		if (rc) {
			instate__slot_release(e);
			return instate__mdb_err(rc);
		}
	}
	t->revision = rev + 1;
	t->nsid = (uint32_t)nsid;
	t->serial = ++e->wserial;
	return 0;
}

int instate_txn_begin(instate_store *s, instate_txn *parent, unsigned flags, instate_txn **out)
{
	instate_txn *t;
	int rc;

	if (out)
		*out = NULL;
	if (!s || !out || (flags & ~(unsigned)INSTATE_TXN_READ) ||
	    (parent && ((flags & INSTATE_TXN_READ) || parent->e != s->env)))
		return INSTATE_INVALID;
	t = calloc(1, sizeof *t);
	if (!t)
		return ENOMEM;
	t->s = s;
	t->e = s->env;
	t->rdonly = !!(flags & INSTATE_TXN_READ);
	if (parent)
		rc = begin_nested(parent, t);
	else if (t->rdonly)
		rc = begin_read(t);
	else
		rc = begin_write(t);
	if (rc) {
		free(t);
		return rc;
	}
	*out = t;
	return 0;
}

/* ===================================================================== */
/* Commit and abort                                                       */

void instate_txn_abort(instate_txn *t)
{
	instate_env *e;

	if (!t)
		return;
	e = t->e;
	while (t->child)
		instate_txn_abort(t->child);
	if (t->mt) {
		detach_cursors(t);
		mdb_txn_abort(t->mt);
		t->mt = NULL;
		undo_created(t);
		if (t->rdonly) {
			__atomic_sub_fetch(&e->nreaders, 1, __ATOMIC_ACQ_REL);
		} else if (!t->parent) {
			write_done(e);
			instate__slot_release(e);
		}
	}
	txn_free(t);
}

static int commit_nested(instate_txn *t)
{
	instate_txn *p = t->parent;
	int rc;

	detach_cursors(t);
	RDLOCK(t->e);
	rc = mdb_txn_commit(t->mt);
	UNLOCK(t->e);
	t->mt = NULL;
	if (rc == MDB_MAP_FULL) {
		undo_created(t);
		rc = txn_map_full(p);
	} else if (rc) {
		undo_created(t);
		rc = instate__mdb_err(rc);
	} else if (t->nmade) {
		/* The parent now owns what this level created. */
		size_t need = p->nmade + t->nmade;
		if (need > p->capmade) {
			created *m = realloc(p->made, need * sizeof *m);
			if (!m) {
				/* Cannot track them: the parent can only abort. */
				undo_created(t);
				if (!p->err)
					p->err = ENOMEM;
				txn_free(t);
				return ENOMEM;
			}
			p->made = m;
			p->capmade = need;
		}
		memcpy(p->made + p->nmade, t->made, t->nmade * sizeof *t->made);
		p->nmade = need;
	}
	txn_free(t);
	return rc;
}

static int commit_top(instate_txn *t)
{
	instate_env *e = t->e;
	size_t i;
	int rc;

	detach_cursors(t);
	RDLOCK(e);
	rc = meta_put_u(t->mt, e->meta, INSTATE_META_REVISION, 8, t->revision);
	if (rc == 0)
		rc = mdb_txn_commit(t->mt);
	else
		mdb_txn_abort(t->mt);
	UNLOCK(e);
	t->mt = NULL;
	if (rc == 0) {
		pthread_mutex_lock(&e->mu);
		for (i = 0; i < t->nmade; i++)
			if (t->made[i].opened)
				__atomic_store_n(&t->made[i].ns->dbi_state, NS_DBI_OPEN,
				                 __ATOMIC_RELEASE);
		if (t->nsid > e->ns_seen)
			e->ns_seen = t->nsid;
		e->wtxn_live = 0;
		pthread_mutex_unlock(&e->mu);
		t->nmade = 0;
		instate__slot_release(e);
	} else if (rc == MDB_MAP_FULL) {
		rc = txn_map_full(t);
	} else {
		undo_created(t);
		write_done(e);
		rc = instate__write_err(e, instate__mdb_err(rc));
		/* A failed meta page write leaves LMDB's fatal state: reopen now
		 * if no snapshot of the process pins the environment (else the
		 * next begin does). A no-op for any other failure. */
		if (rc > 0)
			(void)instate__recover(e);
		instate__slot_release(e);
	}
	txn_free(t);
	return rc;
}

int instate_txn_commit(instate_txn *t)
{
	int rc;

	if (!t)
		return INSTATE_INVALID;
	if (t->child || !t->mt || t->err) {
		/* An open child, or a failed or ended txn: abort all of it. */
		rc = t->child ? INSTATE_BUSY : t->err ? t->err : INSTATE_ENDED;
		instate_txn_abort(t);
		return rc;
	}
	if (t->rdonly) {
		detach_cursors(t);
		mdb_txn_abort(t->mt);
		__atomic_sub_fetch(&t->e->nreaders, 1, __ATOMIC_ACQ_REL);
		txn_free(t);
		return 0;
	}
	return t->parent ? commit_nested(t) : commit_top(t);
}

int instate_txn_set_revision_min(instate_txn *t, uint64_t rev)
{
	if (!t || t->rdonly || t->parent)
		return INSTATE_INVALID;
	if (!t->mt || t->err)
		return t->err ? t->err : INSTATE_ENDED;
	if (rev > t->revision)
		t->revision = rev;
	return 0;
}

uint64_t instate_txn_revision(const instate_txn *t)
{
	return t->revision;
}

int instate_txn_readonly(const instate_txn *t)
{
	return t->rdonly;
}

/* ===================================================================== */
/* Records                                                                */

static int txn_usable(instate_txn *t)
{
	if (!t)
		return INSTATE_INVALID;
	if (!t->mt || t->err)
		return INSTATE_ENDED;
	if (t->child)
		return INSTATE_BUSY;
	return 0;
}

static int check_key(const void *key, size_t klen)
{
	return key && klen >= 1 && klen <= INSTATE_KEY_MAX ? 0 : INSTATE_INVALID;
}

/* The namespace's handle if this txn can read it; 0 = it reads as empty. */
static int ns_dbi(instate_txn *t, instate_ns *ns, MDB_dbi *dbi)
{
	unsigned f;
	int st = __atomic_load_n(&ns->dbi_state, __ATOMIC_ACQUIRE);

	if (st == NS_DBI_NONE || (st == NS_DBI_PENDING && t->rdonly))
		return 0;
	/* A handle opened after a read txn began is not valid in it: the
	 * namespace did not exist in that snapshot. */
	if (mdb_dbi_flags(t->mt, ns->dbi, &f) != 0)
		return 0;
	*dbi = ns->dbi;
	return 1;
}

static int made_push(instate_txn *t, instate_ns *ns, int opened)
{
	if (t->nmade == t->capmade) {
		size_t cap = t->capmade ? t->capmade * 2 : 4;
		created *m = realloc(t->made, cap * sizeof *m);
		if (!m)
			return ENOMEM;
		t->made = m;
		t->capmade = cap;
	}
	t->made[t->nmade].ns = ns;
	t->made[t->nmade].opened = opened;
	t->nmade++;
	return 0;
}

/* Live namespaces: the "ns:" entries of __meta (map lock held). */
static int ns_count_live(instate_txn *t, uint64_t *n)
{
	MDB_cursor *mc;
	MDB_val k = { INSTATE_META_NSPREFIX_LEN, INSTATE_META_NSPREFIX }, d;
	int rc, op = MDB_SET_RANGE;

	*n = 0;
	if ((rc = mdb_cursor_open(t->mt, t->e->meta, &mc)))
		return rc;
	while ((rc = mdb_cursor_get(mc, &k, &d, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size <= INSTATE_META_NSPREFIX_LEN ||
		    memcmp(k.mv_data, INSTATE_META_NSPREFIX, INSTATE_META_NSPREFIX_LEN) != 0)
			break;
		(*n)++;
	}
	mdb_cursor_close(mc);
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/*
 * Make sure the namespace exists in this write txn: its LMDB database and
 * its __meta entry. Checked once per top-level txn (ns->checked). Returns
 * an LMDB or instate code; the map lock is held.
 */
static int ns_prepare(instate_txn *t, instate_ns *ns, MDB_dbi *dbi)
{
	instate_env *e = t->e;
	instate_txn *top;
	char key[INSTATE_META_NSPREFIX_LEN + INSTATE_NSNAME_MAX];
	unsigned char v[5];
	MDB_val k, d;
	uint64_t live;
	int rc, st, exists;

	st = __atomic_load_n(&ns->dbi_state, __ATOMIC_ACQUIRE);
	if (ns->checked == t->serial && st != NS_DBI_NONE) {
		*dbi = ns->dbi;
		return 0;
	}
	k.mv_data = key;
	k.mv_size = ns_meta_key(key, ns);
	rc = mdb_get(t->mt, e->meta, &k, &d);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	exists = rc == 0;
	if (exists) {
		if (d.mv_size != 5)
			return MDB_CORRUPTED;
		__atomic_store_n(&ns->type, ((const unsigned char *)d.mv_data)[4], __ATOMIC_RELAXED);
	}
	if (st == NS_DBI_NONE) {
		/* Recorded first, so that an abort always forgets the handle. */
		pthread_mutex_lock(&e->mu);
		rc = made_push(t, ns, 1);
		if (rc == 0) {
			rc = mdb_dbi_open(t->mt, ns->name, MDB_CREATE, &ns->dbi);
			if (rc)
				t->nmade--;
			else
				__atomic_store_n(&ns->dbi_state, NS_DBI_PENDING, __ATOMIC_RELEASE);
		}
		pthread_mutex_unlock(&e->mu);
		if (rc)
			return rc;
	}
	if (!exists) {
		rc = ns_count_live(t, &live);
		if (rc)
			return rc;
		if (live >= e->max_namespaces)
			return INSTATE_NAMESPACES_FULL;
		k.mv_data = key;
		k.mv_size = ns_meta_key(key, ns);
		top = txn_top(t);
		if (top->nsid == UINT32_MAX)
			return INSTATE_NAMESPACES_FULL;
		rc = meta_put_u(t->mt, e->meta, INSTATE_META_NSID, 4, (uint64_t)top->nsid + 1);
		if (rc)
			return rc;
		instate__put_u32(v, top->nsid + 1);
		v[4] = (unsigned char)__atomic_load_n(&ns->type, __ATOMIC_RELAXED);
		d.mv_data = v;
		d.mv_size = 5;
		rc = mdb_put(t->mt, e->meta, &k, &d, 0);
		if (rc)
			return rc;
		/* Nested levels share the counter through the top; a child that
		 * aborts leaves a gap in the ids, which is harmless. */
		top->nsid++;
		if (t->nmade == 0 || t->made[t->nmade - 1].ns != ns)
			if ((rc = made_push(t, ns, 0)))
				return rc;
	}
	ns->checked = t->serial;
	*dbi = ns->dbi;
	return 0;
}

int instate_get(instate_txn *t, instate_ns *ns, const void *key, size_t klen,
                instate_buf *val, instate_meta *meta)
{
	instate_meta m;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
	const unsigned char *p;
	size_t n;
	int rc;

	if ((rc = check_key(key, klen)) || !ns || (t && ns->env != t->e))
		return rc ? rc : INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	RDLOCK(t->e);
	if (!ns_dbi(t, ns, &dbi)) {
		rc = INSTATE_NOTFOUND;
	} else if ((rc = mdb_get(t->mt, dbi, &k, &d)) != 0) {
		rc = instate__mdb_err(rc);
	} else if ((rc = rec_parse(&d, &m, &p, &n)) == 0) {
		if (expired_now(&m))
			rc = INSTATE_NOTFOUND;
		else if (val)
			rc = buf_set(val, p, n);
		if (rc == 0 && meta)
			*meta = m;
	}
	UNLOCK(t->e);
	return rc;
}

/* Read a live record for a write: 0 found live, MDB_NOTFOUND otherwise. */
static int get_live(instate_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *d, instate_meta *m)
{
	int rc = mdb_get(t->mt, dbi, k, d);

	if (rc)
		return rc;
	if (rec_parse(d, m, NULL, NULL))
		return MDB_CORRUPTED;
	return expired_now(m) ? MDB_NOTFOUND : 0;
}

static int write_check(instate_txn *t, instate_ns *ns, const void *key, size_t klen)
{
	int rc;

	if ((rc = check_key(key, klen)) || !ns || (t && ns->env != t->e))
		return rc ? rc : INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	return t->rdonly ? INSTATE_READONLY : 0;
}

int instate_put(instate_txn *t, instate_ns *ns, const void *key, size_t klen,
                const void *val, size_t vlen, const instate_meta *meta, unsigned flags)
{
	unsigned char h[INSTATE_REC_HDR_MAX];
	instate_meta old;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
	int64_t exp = meta ? meta->expires_ms : 0;
	size_t hl;
	int rc;

	if ((rc = write_check(t, ns, key, klen)))
		return rc;
	if ((flags & ~(unsigned)(INSTATE_NOOVERWRITE | INSTATE_KEEPEXPIRY | INSTATE_IFCHANGED)) ||
	    exp < 0 || (vlen && !val))
		return INSTATE_INVALID;
	RDLOCK(t->e);
	rc = ns_prepare(t, ns, &dbi);
	if (rc == 0 && flags) {
		int live = (rc = get_live(t, dbi, &k, &d, &old)) == 0;
		if (live && (flags & INSTATE_NOOVERWRITE)) {
			rc = MDB_KEYEXIST;
		} else if (live || rc == MDB_NOTFOUND) {
			if (flags & INSTATE_KEEPEXPIRY)
				exp = live ? old.expires_ms : 0;
			rc = 0;
			/* d still points at the live record, in the map */
			if (live && (flags & INSTATE_IFCHANGED)) {
				hl = rec_header(h, exp, meta ? meta->version : 0);
				if (d.mv_size == hl + vlen && memcmp(d.mv_data, h, hl) == 0 &&
				    (vlen == 0 || memcmp((char *)d.mv_data + hl, val, vlen) == 0))
					rc = MDB_KEYEXIST;
			}
		}
	}
	if (rc == 0) {
		hl = rec_header(h, exp, meta ? meta->version : 0);
		d.mv_size = hl + vlen;
		d.mv_data = NULL;
		rc = mdb_put(t->mt, dbi, &k, &d, MDB_RESERVE);
		if (rc == 0) {
			memcpy(d.mv_data, h, hl);
			if (vlen)
				memcpy((char *)d.mv_data + hl, val, vlen);
		}
	}
	UNLOCK(t->e);
	return write_result(t, rc);
}

int instate_del(instate_txn *t, instate_ns *ns, const void *key, size_t klen)
{
	instate_meta old;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
	int rc;

	if ((rc = write_check(t, ns, key, klen)))
		return rc;
	RDLOCK(t->e);
	if (!ns_dbi(t, ns, &dbi))
		rc = MDB_NOTFOUND;
	else if ((rc = get_live(t, dbi, &k, &d, &old)) == 0)
		rc = mdb_del(t->mt, dbi, &k, NULL);
	UNLOCK(t->e);
	return write_result(t, rc);
}

int instate_set_expiry(instate_txn *t, instate_ns *ns, const void *key, size_t klen,
                       int64_t expires_ms)
{
	unsigned char h[INSTATE_REC_HDR_MAX];
	instate_meta old;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
	const unsigned char *p;
	unsigned char *copy = NULL;
	size_t n, hl;
	int rc;

	if ((rc = write_check(t, ns, key, klen)))
		return rc;
	if (expires_ms < 0)
		return INSTATE_INVALID;
	RDLOCK(t->e);
	if (!ns_dbi(t, ns, &dbi))
		rc = MDB_NOTFOUND;
	else
		rc = get_live(t, dbi, &k, &d, &old);
	if (rc == 0) {
		/* The old value lives in the map: copy it out before the put. */
		rec_parse(&d, &old, &p, &n);
		copy = malloc(n ? n : 1);
		if (!copy) {
			rc = ENOMEM;
		} else {
			memcpy(copy, p, n);
			hl = rec_header(h, expires_ms, old.version);
			d.mv_size = hl + n;
			rc = mdb_put(t->mt, dbi, &k, &d, MDB_RESERVE);
			if (rc == 0) {
				memcpy(d.mv_data, h, hl);
				memcpy((char *)d.mv_data + hl, copy, n);
			}
			free(copy);
		}
	}
	UNLOCK(t->e);
	return write_result(t, rc);
}

/* Count (and with del, delete) records of one db: all live ones, or with
 * only_expired the expired ones. Map lock held. */
static int scan(instate_txn *t, MDB_dbi dbi, int only_expired, int del, uint64_t *n)
{
	MDB_cursor *mc;
	MDB_val k, d;
	instate_meta m;
	int64_t now = instate_clock_now();
	int rc, op = MDB_FIRST;

	*n = 0;
	rc = mdb_cursor_open(t->mt, dbi, &mc);
	if (rc)
		return rc;
	while ((rc = mdb_cursor_get(mc, &k, &d, op)) == 0) {
		op = MDB_NEXT;
		if (rec_parse(&d, &m, NULL, NULL)) {
			rc = MDB_CORRUPTED;
			break;
		}
		if (expired(&m, now) != only_expired)
			continue;
		(*n)++;
		if (del && (rc = mdb_cursor_del(mc, 0)) != 0)
			break;
	}
	mdb_cursor_close(mc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int instate_count(instate_txn *t, instate_ns *ns, uint64_t *out)
{
	MDB_dbi dbi;
	int rc;

	*out = 0;
	if (!ns || (t && ns->env != t->e))
		return INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	RDLOCK(t->e);
	if (ns_dbi(t, ns, &dbi))
		rc = instate__mdb_err(scan(t, dbi, 0, 0, out));
	UNLOCK(t->e);
	return rc;
}

int instate_clear(instate_txn *t, instate_ns *ns, uint64_t *removed)
{
	MDB_dbi dbi;
	uint64_t n = 0;
	int rc;

	if (removed)
		*removed = 0;
	if ((rc = write_check(t, ns, "k", 1)))
		return rc;
	RDLOCK(t->e);
	if (ns_dbi(t, ns, &dbi)) {
		if (removed)
			rc = scan(t, dbi, 0, 0, &n);
		if (rc == 0)
			rc = mdb_drop(t->mt, dbi, 0);
	}
	UNLOCK(t->e);
	rc = write_result(t, rc);
	if (rc == 0 && removed)
		*removed = n;
	return rc;
}

int instate_drop(instate_txn *t, instate_ns *ns, int *existed)
{
	char key[INSTATE_META_NSPREFIX_LEN + INSTATE_NSNAME_MAX];
	MDB_val k, d;
	MDB_dbi dbi;
	int rc, found = 0;

	if (existed)
		*existed = 0;
	if ((rc = write_check(t, ns, "k", 1)))
		return rc;
	k.mv_data = key;
	k.mv_size = ns_meta_key(key, ns);
	RDLOCK(t->e);
	rc = mdb_get(t->mt, t->e->meta, &k, &d);
	if (rc == 0) {
		found = 1;
		rc = mdb_del(t->mt, t->e->meta, &k, NULL);
	} else if (rc == MDB_NOTFOUND) {
		rc = 0;
	}
	/* Emptied, not deleted: the handle stays valid for every txn. */
	if (rc == 0 && ns_dbi(t, ns, &dbi))
		rc = mdb_drop(t->mt, dbi, 0);
	ns->checked = 0;
	UNLOCK(t->e);
	rc = write_result(t, rc);
	if (rc == 0 && existed)
		*existed = found;
	return rc;
}

int instate_purge(instate_txn *t, uint64_t *removed)
{
	instate_env *e;
	instate_ns *ns;
	MDB_cursor *mc;
	MDB_val k = { INSTATE_META_NSPREFIX_LEN, INSTATE_META_NSPREFIX }, d;
	MDB_dbi dbi;
	uint64_t n, total = 0;
	int rc, op = MDB_SET_RANGE;

	if (removed)
		*removed = 0;
	if ((rc = txn_usable(t)))
		return rc;
	if (t->rdonly)
		return INSTATE_READONLY;
	e = t->e;
	RDLOCK(e);
	rc = mdb_cursor_open(t->mt, e->meta, &mc);
	if (rc) {
		UNLOCK(e);
		return write_result(t, rc);
	}
	while ((rc = mdb_cursor_get(mc, &k, &d, op)) == 0) {
		op = MDB_NEXT;
		if (k.mv_size <= INSTATE_META_NSPREFIX_LEN ||
		    memcmp(k.mv_data, INSTATE_META_NSPREFIX, INSTATE_META_NSPREFIX_LEN) != 0) {
			rc = MDB_NOTFOUND;
			break;
		}
		pthread_mutex_lock(&e->mu);
		rc = instate__ns_lookup(e, (const char *)k.mv_data + INSTATE_META_NSPREFIX_LEN,
		                        k.mv_size - INSTATE_META_NSPREFIX_LEN, &ns);
		pthread_mutex_unlock(&e->mu);
		if (rc == 0 && ns_dbi(t, ns, &dbi)) {
			rc = scan(t, dbi, 1, 1, &n);
			total += n;
		}
		if (rc)
			break;
	}
	mdb_cursor_close(mc);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	UNLOCK(e);
	rc = write_result(t, rc);
	if (rc == 0 && removed)
		*removed = total;
	return rc;
}

int instate_ns_list(instate_txn *t,
                    int (*fn)(void *ud, const char *name, size_t len, instate_ns_type type),
                    void *ud)
{
	char name[INSTATE_META_NSPREFIX_LEN + INSTATE_NSNAME_MAX + 1];
	MDB_cursor *mc;
	MDB_val k, d;
	size_t len = INSTATE_META_NSPREFIX_LEN;
	int rc, type, skip = 0;

	if (!fn)
		return INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	memcpy(name, INSTATE_META_NSPREFIX, len);
	/* One entry per map-lock hold, the cursor closed before calling fn:
	 * fn may take its time, or even not return (a Lua error). */
	for (;;) {
		RDLOCK(t->e);
		rc = mdb_cursor_open(t->mt, t->e->meta, &mc);
		if (rc == 0) {
			k.mv_data = name;
			k.mv_size = len;
			rc = mdb_cursor_get(mc, &k, &d, MDB_SET_RANGE);
			if (rc == 0 && skip && k.mv_size == len && memcmp(k.mv_data, name, len) == 0)
				rc = mdb_cursor_get(mc, &k, &d, MDB_NEXT);
			if (rc == 0 && (k.mv_size <= INSTATE_META_NSPREFIX_LEN ||
			                k.mv_size > sizeof name - 1 ||
			                memcmp(k.mv_data, INSTATE_META_NSPREFIX,
			                       INSTATE_META_NSPREFIX_LEN) != 0))
				rc = MDB_NOTFOUND;
			if (rc == 0 && d.mv_size != 5)
				rc = MDB_CORRUPTED;
			if (rc == 0) {
				len = k.mv_size;
				memcpy(name, k.mv_data, len);
				type = ((const unsigned char *)d.mv_data)[4];
			}
			mdb_cursor_close(mc);
		}
		UNLOCK(t->e);
		if (rc)
			return rc == MDB_NOTFOUND ? 0 : instate__mdb_err(rc);
		skip = 1;
		name[len] = '\0';
		rc = fn(ud, name + INSTATE_META_NSPREFIX_LEN, len - INSTATE_META_NSPREFIX_LEN,
		        (instate_ns_type)type);
		if (rc)
			return rc;
	}
}

/* ===================================================================== */
/* Cursors                                                                */

int instate_cursor_open(instate_txn *t, instate_ns *ns, const void *prefix, size_t plen,
                        instate_cursor **out)
{
	instate_cursor *c;
	int rc;

	if (out)
		*out = NULL;
	if (!out || !ns || plen > INSTATE_KEY_MAX || (plen && !prefix) || (t && ns->env != t->e))
		return INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	c = calloc(1, sizeof *c);
	if (!c)
		return ENOMEM;
	c->txn = t;
	c->ns = ns;
	c->plen = plen;
	if (plen)
		memcpy(c->prefix, prefix, plen);
	c->next = t->cursors;
	t->cursors = c;
	*out = c;
	return 0;
}

/* Step the LMDB cursor to the next live record in range (map lock held). */
static int cursor_step(instate_cursor *c, MDB_val *k, MDB_val *d, instate_meta *m)
{
	instate_txn *t = c->txn;
	instate_env *e = t->e;
	MDB_dbi dbi;
	int64_t now = instate_clock_now();
	int rc, op, reposition = 0;

	if (!c->mc) {
		if (!ns_dbi(t, c->ns, &dbi))
			return MDB_NOTFOUND;
		if ((rc = mdb_cursor_open(t->mt, dbi, &c->mc)))
			return rc;
		c->gen = e->mapgen;
	} else if (c->gen != e->mapgen) {
		/* The map was remapped since the last step: the cursor's pages
		 * point into the old mapping. Re-find the last key. */
		if (t->rdonly) {
			rc = mdb_cursor_renew(t->mt, c->mc);
		} else {
			dbi = mdb_cursor_dbi(c->mc);
			mdb_cursor_close(c->mc);
			c->mc = NULL;
			rc = mdb_cursor_open(t->mt, dbi, &c->mc);
		}
		if (rc)
			return rc;
		c->gen = e->mapgen;
		reposition = c->started;
	}
	if (!c->started) {
		k->mv_data = c->prefix;
		k->mv_size = c->plen;
		op = c->plen ? MDB_SET_RANGE : MDB_FIRST;
		c->started = 1;
	} else if (reposition) {
		k->mv_data = c->key;
		k->mv_size = c->klen;
		rc = mdb_cursor_get(c->mc, k, d, MDB_SET_RANGE);
		if (rc)
			return rc;
		op = k->mv_size == c->klen && memcmp(k->mv_data, c->key, c->klen) == 0
		     ? MDB_NEXT : MDB_GET_CURRENT;
	} else {
		op = MDB_NEXT;
	}
	for (;;) {
		rc = mdb_cursor_get(c->mc, k, d, op);
		if (rc)
			return rc;
		op = MDB_NEXT;
		if (k->mv_size < c->plen || memcmp(k->mv_data, c->prefix, c->plen) != 0)
			return MDB_NOTFOUND;
		if (rec_parse(d, m, NULL, NULL))
			return MDB_CORRUPTED;
		if (!expired(m, now))
			return 0;
	}
}

int instate_cursor_next(instate_cursor *c, instate_buf *key, instate_buf *val,
                        instate_meta *meta)
{
	instate_meta m;
	MDB_val k, d;
	const unsigned char *p;
	size_t n;
	int rc;

	if (!c || !key)
		return INSTATE_INVALID;
	if (!c->txn)
		return INSTATE_ENDED;
	if ((rc = txn_usable(c->txn)))
		return rc;
	if (c->done)
		return INSTATE_NOTFOUND;
	RDLOCK(c->txn->e);
	rc = cursor_step(c, &k, &d, &m);
	if (rc == 0) {
		c->klen = k.mv_size;
		memcpy(c->key, k.mv_data, k.mv_size);
		rec_parse(&d, &m, &p, &n);
		rc = buf_set(key, k.mv_data, k.mv_size);
		if (rc == 0 && val)
			rc = buf_set(val, p, n);
		if (rc == 0 && meta)
			*meta = m;
	} else {
		if (rc == MDB_NOTFOUND)
			c->done = 1;
		rc = instate__mdb_err(rc);
	}
	UNLOCK(c->txn->e);
	return rc;
}

void instate_cursor_close(instate_cursor *c)
{
	instate_cursor **pp;

	if (!c)
		return;
	if (c->txn) {
		for (pp = &c->txn->cursors; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
		if (c->mc)
			mdb_cursor_close(c->mc);
	}
	free(c);
}
