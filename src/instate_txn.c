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

#define RDLOCK(e) instate__os_rwlock_rdlock(&(e)->maplock)
#define UNLOCK(e) instate__os_rwlock_rdunlock(&(e)->maplock)

/* ===================================================================== */
/* Record headers                                                         */

/* Parse and verify a record (instate_meta.c has the bytes). A store still
 * of format 1 (read-only, not upgraded) may hold records without checksum. */
static int rec_read(const instate_txn *t, const MDB_val *k, const MDB_val *d, instate__rec *r)
{
	if (t->rdonly && instate__rec_in_page(NULL, d, t->e->page_size))
		return INSTATE_CORRUPT;
	return instate__rec_parse(k, d, t->e->format < INSTATE_STORE_FORMAT, r);
}

/* The same for a record a cursor returned: its key points into the page
 * too. A write txn's dirty pages are heap copies, not in the map: the page
 * bounds are checked in read txns only. */
static int rec_read_cursor(const instate_txn *t, const MDB_val *k, const MDB_val *d,
                           instate__rec *r)
{
	if (t->rdonly && instate__rec_in_page(k, d, t->e->page_size))
		return INSTATE_CORRUPT;
	return instate__rec_parse(k, d, t->e->format < INSTATE_STORE_FORMAT, r);
}

/* Whether a cursor's key can be copied and reported: its size comes from
 * LMDB's node header, which no checksum covers. */
static int key_sane(const instate_txn *t, const MDB_val *k)
{
	return k->mv_size >= 1 && k->mv_size <= INSTATE_KEY_MAX &&
	       !(t->rdonly && instate__rec_in_page(k, NULL, t->e->page_size));
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
	instate__os_mutex_lock(&t->e->mu);
	for (i = 0; i < t->nmade; i++) {
		instate_ns *ns = t->made[i].ns;
		ns->checked = 0;
		if (t->made[i].opened)
			__atomic_store_n(&ns->dbi_state, NS_DBI_NONE, __ATOMIC_RELEASE);
	}
	instate__os_mutex_unlock(&t->e->mu);
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
	instate__os_mutex_lock(&e->mu);
	e->wtxn_live = 0;
	instate__os_mutex_unlock(&e->mu);
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
	/* A damaged record (INSTATE_CORRUPT from instate__rec_parse, not
	 * LMDB's MDB_CORRUPTED) leaves the LMDB txn sound: the caller may
	 * delete or overwrite it and go on. */
	if (rc == INSTATE_CORRUPT)
		return rc;
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
	int rc, waits = 0, stale = 0;

	for (;;) {
		/* What the namespace cache reflected before the snapshot began:
		 * a snapshot is only known to hold valid handles for namespaces
		 * published (under e->mu, after mdb_txn_commit returned) before
		 * the LMDB read txn started. */
		uint32_t seen0 = __atomic_load_n(&e->ns_seen, __ATOMIC_ACQUIRE);

		RDLOCK(e);
		rc = e->env ? instate__rtxn(e, &t->mt) : MDB_PANIC;
		if (rc == 0) {
			rc = instate__meta_get(t->mt, e->meta, INSTATE_META_REVISION, 8, &rev);
			if (rc == 0)
				rc = instate__meta_get(t->mt, e->meta, INSTATE_META_NSID, 4, &nsid);
			if (rc == 0 && !instate__rev_fresh(e, rev, stale)) {
				/* older than a snapshot begun before it */
				mdb_txn_abort(t->mt);
				t->mt = NULL;
				UNLOCK(e);
				instate__rev_wait(&stale);
				continue;
			}
			if (rc) {
				mdb_txn_abort(t->mt);
			} else {
				instate__os_mutex_lock(&e->mu);
				if (nsid > seen0 && (e->wtxn_live || nsid <= e->ns_seen) &&
				    waits < 10000) {
					/* A write txn of this process that created a
					 * namespace was between LMDB's meta write (its
					 * data visible) and the end of mdb_txn_commit
					 * (the handle valid in txns begun after it) when
					 * this snapshot began, or may be now: the
					 * snapshot could read that namespace as empty.
					 * Begin again once the commit is published; a
					 * write txn that merely stays open is waited for
					 * only briefly (the old behaviour then). */
					instate__os_mutex_unlock(&e->mu);
					mdb_txn_abort(t->mt);
					t->mt = NULL;
					UNLOCK(e);
					waits++;
					instate__os_yield();
					continue;
				}
				if (nsid <= seen0 || e->wtxn_live) {
					instate__os_mutex_unlock(&e->mu);
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
				instate__os_mutex_unlock(&e->mu);
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
		instate__os_mutex_lock(&e->mu);
		e->wtxn_live = 1;
		instate__os_mutex_unlock(&e->mu);
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
		instate__os_mutex_lock(&e->mu);
		e->wtxn_live = 0;
		if (rc == 0)
			rc = instate__refresh(e);
		instate__os_mutex_unlock(&e->mu);
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
	rc = instate__meta_put(t->mt, e->meta, INSTATE_META_REVISION, 8, t->revision);
	if (rc == 0)
		rc = mdb_txn_commit(t->mt);
	else
		mdb_txn_abort(t->mt);
	UNLOCK(e);
	t->mt = NULL;
	if (rc == 0) {
		instate__os_mutex_lock(&e->mu);
		for (i = 0; i < t->nmade; i++)
			if (t->made[i].opened)
				__atomic_store_n(&t->made[i].ns->dbi_state, NS_DBI_OPEN,
				                 __ATOMIC_RELEASE);
		if (t->nsid > e->ns_seen)
			__atomic_store_n(&e->ns_seen, t->nsid, __ATOMIC_RELEASE);
		e->wtxn_live = 0;
		instate__os_mutex_unlock(&e->mu);
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

/*
 * Make sure the namespace exists in this write txn: its LMDB database and
 * its __meta entry. Checked once per top-level txn (ns->checked). Returns
 * an LMDB or instate code; the map lock is held.
 */
static int ns_prepare(instate_txn *t, instate_ns *ns, MDB_dbi *dbi)
{
	instate_env *e = t->e;
	instate_txn *top;
	char key[INSTATE_META_NSKEY_MAX];
	unsigned char v[INSTATE_META_NSENTRY_SIZE];
	instate__nsent ent;
	MDB_val k, d;
	uint64_t live;
	int rc, st, exists;

	st = __atomic_load_n(&ns->dbi_state, __ATOMIC_ACQUIRE);
	if (ns->checked == t->serial && st != NS_DBI_NONE) {
		*dbi = ns->dbi;
		return 0;
	}
	k.mv_data = key;
	k.mv_size = instate__meta_ns_key(key, ns->name, ns->len);
	rc = mdb_get(t->mt, e->meta, &k, &d);
	if (rc && rc != MDB_NOTFOUND)
		return rc;
	exists = rc == 0;
	if (exists) {
		if ((rc = instate__meta_ns_parse(&k, &d, &ent)) != 0)
			return rc;
		__atomic_store_n(&ns->type, ent.type, __ATOMIC_RELAXED);
	}
	if (st == NS_DBI_NONE) {
		/* Recorded first, so that an abort always forgets the handle. */
		instate__os_mutex_lock(&e->mu);
		rc = made_push(t, ns, 1);
		if (rc == 0) {
			rc = mdb_dbi_open(t->mt, ns->name, MDB_CREATE, &ns->dbi);
			if (rc)
				t->nmade--;
			else
				__atomic_store_n(&ns->dbi_state, NS_DBI_PENDING, __ATOMIC_RELEASE);
		}
		instate__os_mutex_unlock(&e->mu);
		if (rc)
			return rc;
	}
	if (!exists) {
		rc = instate__meta_ns_count(t->mt, e->meta, &live);
		if (rc)
			return rc;
		if (live >= e->max_namespaces)
			return INSTATE_NAMESPACES_FULL;
		k.mv_data = key;
		k.mv_size = instate__meta_ns_key(key, ns->name, ns->len);
		top = txn_top(t);
		if (top->nsid == UINT32_MAX)
			return INSTATE_NAMESPACES_FULL;
		rc = instate__meta_put(t->mt, e->meta, INSTATE_META_NSID, 4, (uint64_t)top->nsid + 1);
		if (rc)
			return rc;
		instate__meta_ns_encode(v, top->nsid + 1,
		                        (instate_ns_type)__atomic_load_n(&ns->type, __ATOMIC_RELAXED));
		d.mv_data = v;
		d.mv_size = sizeof v;
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
	instate__rec r;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
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
	} else if ((rc = rec_read(t, &k, &d, &r)) == 0) {
		if (expired_now(&r.m))
			rc = INSTATE_NOTFOUND;
		else if (val)
			rc = buf_set(val, r.payload, r.plen);
		if (rc == 0 && meta)
			*meta = r.m;
	}
	UNLOCK(t->e);
	return rc;
}

/* Read a live record for a write: 0 found live, MDB_NOTFOUND otherwise,
 * INSTATE_CORRUPT (d still set) for a damaged one. */
static int get_live(instate_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *d, instate__rec *r)
{
	int rc = mdb_get(t->mt, dbi, k, d);

	if (rc)
		return rc;
	if ((rc = rec_read(t, k, d, r)) != 0)
		return rc;
	return expired_now(&r->m) ? MDB_NOTFOUND : 0;
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
	instate__rec old;
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
		if (rc == INSTATE_CORRUPT && flags == INSTATE_IFCHANGED) {
			/* A damaged record is not an equal one: overwrite it. The
			 * other flags need its expiry or liveness, which it lost. */
			rc = 0;
		} else if (live && (flags & INSTATE_NOOVERWRITE)) {
			rc = MDB_KEYEXIST;
		} else if (live || rc == MDB_NOTFOUND) {
			if (flags & INSTATE_KEEPEXPIRY)
				exp = live ? old.m.expires_ms : 0;
			rc = 0;
			/* d still points at the live record, in the map, verified:
			 * equal bytes but the checksum's mean an equal checksum. */
			if (live && (flags & INSTATE_IFCHANGED)) {
				hl = instate__rec_header(h, exp, meta ? meta->version : 0);
				if (d.mv_size == hl + vlen &&
				    *(const unsigned char *)d.mv_data == h[0] &&
				    memcmp((const char *)d.mv_data + 5, h + 5, hl - 5) == 0 &&
				    (vlen == 0 || memcmp((char *)d.mv_data + hl, val, vlen) == 0))
					rc = MDB_KEYEXIST;
			}
		}
	}
	if (rc == 0) {
		hl = instate__rec_header(h, exp, meta ? meta->version : 0);
		d.mv_size = hl + vlen;
		d.mv_data = NULL;
		rc = mdb_put(t->mt, dbi, &k, &d, MDB_RESERVE);
		if (rc == 0) {
			memcpy(d.mv_data, h, hl);
			if (vlen)
				memcpy((char *)d.mv_data + hl, val, vlen);
			instate__rec_seal(d.mv_data, d.mv_size, key, klen);
		}
	}
	UNLOCK(t->e);
	return write_result(t, rc);
}

int instate_del(instate_txn *t, instate_ns *ns, const void *key, size_t klen)
{
	instate__rec old;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
	int rc;

	if ((rc = write_check(t, ns, key, klen)))
		return rc;
	RDLOCK(t->e);
	if (!ns_dbi(t, ns, &dbi))
		rc = MDB_NOTFOUND;
	/* A damaged record is deleted too: that is how it is got rid of. */
	else if ((rc = get_live(t, dbi, &k, &d, &old)) == 0 || rc == INSTATE_CORRUPT)
		rc = mdb_del(t->mt, dbi, &k, NULL);
	UNLOCK(t->e);
	return write_result(t, rc);
}

int instate_set_expiry(instate_txn *t, instate_ns *ns, const void *key, size_t klen,
                       int64_t expires_ms)
{
	unsigned char h[INSTATE_REC_HDR_MAX];
	instate__rec old;
	MDB_val k = { klen, (void *)key }, d;
	MDB_dbi dbi;
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
		n = old.plen;
		copy = malloc(n ? n : 1);
		if (!copy) {
			rc = ENOMEM;
		} else {
			memcpy(copy, old.payload, n);
			hl = instate__rec_header(h, expires_ms, old.m.version);
			d.mv_size = hl + n;
			rc = mdb_put(t->mt, dbi, &k, &d, MDB_RESERVE);
			if (rc == 0) {
				memcpy(d.mv_data, h, hl);
				memcpy((char *)d.mv_data + hl, copy, n);
				instate__rec_seal(d.mv_data, d.mv_size, key, klen);
			}
			free(copy);
		}
	}
	UNLOCK(t->e);
	return write_result(t, rc);
}

/* Count (and with del, delete) records of one db: all live ones, or with
 * only_expired the expired ones. A damaged record stops it with
 * INSTATE_CORRUPT unless lenient (clear counts it as removed). Map lock
 * held. */
static int scan(instate_txn *t, MDB_dbi dbi, int only_expired, int del, int lenient,
                uint64_t *n)
{
	MDB_cursor *mc;
	MDB_val k, d;
	instate__rec r;
	int64_t now = instate_clock_now();
	int rc, op = MDB_FIRST;

	*n = 0;
	rc = mdb_cursor_open(t->mt, dbi, &mc);
	if (rc)
		return rc;
	while ((rc = mdb_cursor_get(mc, &k, &d, op)) == 0) {
		op = MDB_NEXT;
		if ((rc = rec_read_cursor(t, &k, &d, &r)) != 0) {
			if (!lenient)
				break;
			rc = 0;
		} else if (expired(&r.m, now) != only_expired) {
			continue;
		}
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
		rc = instate__mdb_err(scan(t, dbi, 0, 0, 0, out));
	UNLOCK(t->e);
	return rc;
}

int instate_count_hint(instate_txn *t, instate_ns *ns, uint64_t *out)
{
	MDB_stat st;
	MDB_dbi dbi;
	int rc;

	if (!out)
		return INSTATE_INVALID;
	*out = 0;
	if (!ns || (t && ns->env != t->e))
		return INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	RDLOCK(t->e);
	if (ns_dbi(t, ns, &dbi)) {
		rc = instate__mdb_err(mdb_stat(t->mt, dbi, &st));
		if (rc == 0)
			*out = (uint64_t)st.ms_entries;
	}
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
			rc = scan(t, dbi, 0, 0, 1, &n);
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
	char key[INSTATE_META_NSKEY_MAX];
	MDB_val k, d;
	MDB_dbi dbi;
	int rc, found = 0;

	if (existed)
		*existed = 0;
	if ((rc = write_check(t, ns, "k", 1)))
		return rc;
	k.mv_data = key;
	k.mv_size = instate__meta_ns_key(key, ns->name, ns->len);
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
	instate__nsent ent;
	MDB_cursor *mc;
	MDB_dbi dbi;
	uint64_t n, total = 0;
	int rc;

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
	for (rc = instate__meta_ns_seek(mc, NULL, 0, &ent); rc == 0;
	     rc = instate__meta_ns_next(mc, &ent)) {
		if (ent.badname)
			continue;
		instate__os_mutex_lock(&e->mu);
		rc = instate__ns_lookup(e, ent.name, ent.len, &ns);
		instate__os_mutex_unlock(&e->mu);
		if (rc == 0 && ns_dbi(t, ns, &dbi)) {
			rc = scan(t, dbi, 1, 1, 0, &n);
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
	char name[INSTATE_NSNAME_MAX + 1];
	instate__nsent ent;
	MDB_cursor *mc;
	size_t len = 0;
	int rc, type;

	if (!fn)
		return INSTATE_INVALID;
	if ((rc = txn_usable(t)))
		return rc;
	/* One entry per map-lock hold, the cursor closed before calling fn:
	 * fn may take its time, or even not return (a Lua error). */
	for (;;) {
		RDLOCK(t->e);
		rc = mdb_cursor_open(t->mt, t->e->meta, &mc);
		if (rc == 0) {
			rc = instate__meta_ns_seek(mc, name, len, &ent);
			if (rc == 0 && ent.badname)
				rc = MDB_NOTFOUND; /* not a name: the listing ends */
			if (rc == 0 && ent.bad)
				rc = ent.bad;
			if (rc == 0) {
				len = ent.len;
				memcpy(name, ent.name, len);
				type = ent.type;
			}
			mdb_cursor_close(mc);
		}
		UNLOCK(t->e);
		if (rc)
			return rc == MDB_NOTFOUND ? 0 : instate__mdb_err(rc);
		name[len] = '\0';
		rc = fn(ud, name, len, (instate_ns_type)type);
		if (rc)
			return rc;
	}
}

/* ===================================================================== */
/* Checking every record                                                  */

/* A damaged record or entry found by the check, kept until the snapshot
 * has ended so that the callback runs with nothing held. */
typedef struct bad_rec {
	struct bad_rec *next;
	size_t nslen, klen;
	int record;         /* 1: a record (key may be empty), 0: the ns entry */
	char bytes[];       /* namespace name, NUL, key */
} bad_rec;

static int bad_push(bad_rec ***tail, const char *ns, size_t nslen, int record,
                    const void *key, size_t klen)
{
	bad_rec *b = malloc(sizeof *b + nslen + 1 + klen);

	if (!b)
		return ENOMEM;
	b->next = NULL;
	b->nslen = nslen;
	b->klen = klen;
	b->record = record;
	memcpy(b->bytes, ns, nslen);
	b->bytes[nslen] = '\0';
	if (klen)
		memcpy(b->bytes + nslen + 1, key, klen);
	**tail = b;
	*tail = &b->next;
	return 0;
}

/* Verify every record of one namespace database (map lock held). */
static int check_db(instate_txn *t, const instate__nsent *ent, bad_rec ***tail,
                    instate_check_info *info)
{
	instate_env *e = t->e;
	instate__rec r;
	instate_ns *ns;
	MDB_cursor *mc;
	MDB_dbi dbi;
	MDB_val k, d;
	int rc;

	instate__os_mutex_lock(&e->mu);
	rc = instate__ns_lookup(e, ent->name, ent->len, &ns);
	instate__os_mutex_unlock(&e->mu);
	if (rc)
		return rc;
	if (!ns_dbi(t, ns, &dbi))
		return 0; /* listed but never written: empty */
	if ((rc = mdb_cursor_open(t->mt, dbi, &mc)))
		return rc;
	for (rc = mdb_cursor_get(mc, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(mc, &k, &d, MDB_NEXT)) {
		info->records++;
		if (!key_sane(t, &k))
			k.mv_size = 0; /* a damaged key: reported as the empty key */
		if (k.mv_size == 0 || rec_read_cursor(t, &k, &d, &r) != 0) {
			info->corrupt++;
			if ((rc = bad_push(tail, ent->name, ent->len, 1, k.mv_data, k.mv_size)))
				break;
		}
	}
	mdb_cursor_close(mc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

int instate_store_check(instate_store *s,
                        int (*fn)(void *ud, const char *ns, size_t nslen, const void *key,
                                  size_t klen),
                        void *ud, instate_check_info *out)
{
	instate_check_info info = { 0, 0, 0 };
	instate__nsent ent;
	instate_txn *t;
	MDB_cursor *mc;
	bad_rec *bad = NULL, **tail = &bad, *b;
	int rc, rc2;

	if (out)
		memset(out, 0, sizeof *out);
	if (!s)
		return INSTATE_INVALID;
	if ((rc = instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t)))
		return rc;
	RDLOCK(t->e);
	rc = mdb_cursor_open(t->mt, t->e->meta, &mc);
	if (rc == 0) {
		for (rc = instate__meta_ns_seek(mc, NULL, 0, &ent); rc == 0;
		     rc = instate__meta_ns_next(mc, &ent)) {
			info.namespaces++;
			if (ent.bad || ent.badname) {
				/* The entry itself: reported with no key. */
				info.corrupt++;
				if ((rc = bad_push(&tail, ent.name, ent.len, 0, NULL, 0)))
					break;
			}
			if (!ent.badname && (rc = check_db(t, &ent, &tail, &info)))
				break;
		}
		mdb_cursor_close(mc);
	}
	UNLOCK(t->e);
	instate_txn_abort(t);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	rc = instate__mdb_err(rc);
	for (b = bad; b; b = bad) {
		bad = b->next;
		if (rc == 0 && fn) {
			rc2 = fn(ud, b->bytes, b->nslen, b->record ? b->bytes + b->nslen + 1 : NULL,
			         b->klen);
			if (rc2)
				rc = rc2;
		}
		free(b);
	}
	if (out)
		*out = info;
	return rc;
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
static int cursor_step(instate_cursor *c, MDB_val *k, MDB_val *d, instate__rec *r)
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
		if (!key_sane(t, k)) {
			k->mv_size = 0; /* no key to report */
			return INSTATE_CORRUPT;
		}
		if (k->mv_size < c->plen || memcmp(k->mv_data, c->prefix, c->plen) != 0)
			return MDB_NOTFOUND;
		if ((rc = rec_read_cursor(t, k, d, r)) != 0)
			return rc; /* k is the damaged record's key */
		if (!expired(&r->m, now))
			return 0;
	}
}

int instate_cursor_next(instate_cursor *c, instate_buf *key, instate_buf *val,
                        instate_meta *meta)
{
	instate__rec r;
	MDB_val k, d;
	int rc, err;

	if (!c || !key)
		return INSTATE_INVALID;
	if (!c->txn)
		return INSTATE_ENDED;
	if ((rc = txn_usable(c->txn)))
		return rc;
	if (c->done)
		return INSTATE_NOTFOUND;
	RDLOCK(c->txn->e);
	rc = cursor_step(c, &k, &d, &r);
	if (rc == INSTATE_CORRUPT && k.mv_size == 0) {
		/* Its key is damaged too: reported without one. */
		key->len = 0;
	} else if (rc == 0 || rc == INSTATE_CORRUPT) {
		/* A damaged record is reported with its key, and the next call
		 * steps past it. */
		c->klen = k.mv_size;
		memcpy(c->key, k.mv_data, k.mv_size);
		err = rc;
		rc = buf_set(key, k.mv_data, k.mv_size);
		if (rc == 0 && err)
			rc = err;
		else if (rc == 0 && val)
			rc = buf_set(val, r.payload, r.plen);
		if (rc == 0 && meta)
			*meta = r.m;
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

/* ===================================================================== */
/* The retry loop for C callers                                           */

int instate_txn_run(instate_store *s, unsigned flags,
                    int (*fn)(instate_txn *txn, void *ud), void *ud)
{
	int attempt, rc = INSTATE_INVALID;

	if (!s || !fn)
		return INSTATE_INVALID;
	for (attempt = 1; attempt <= INSTATE_TXN_RUN_ATTEMPTS; attempt++) {
		instate_txn *t;
		rc = instate_txn_begin(s, NULL, flags, &t);
		if (rc)
			return rc;
		rc = fn(t, ud);
		/* After a RETRY the handle is ended but still ours to free:
		 * abort does, and commit does on every path. */
		if (rc)
			instate_txn_abort(t);
		else
			rc = instate_txn_commit(t);
		if (rc != INSTATE_RETRY)
			break;
	}
	return rc;
}
