/*
 * instate_meta.c - the store's on-disk schema (docs/FORMAT.md section 2):
 * the keys and namespace entries of __meta, the record header and its
 * checksum, and the upgrade of a store of an older format. The other core
 * files never read or write these bytes themselves.
 */
#include "instate_store_int.h"

#include <errno.h>
#include <string.h>

/* ===================================================================== */
/* __meta integers                                                        */

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

int instate__meta_put(MDB_txn *mt, MDB_dbi meta, const char *key, size_t size, uint64_t v)
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

int instate__meta_init(MDB_txn *mt, MDB_dbi meta)
{
	int rc = instate__meta_put(mt, meta, INSTATE_META_FORMAT, 4, INSTATE_STORE_FORMAT);

	if (rc == 0)
		rc = instate__meta_put(mt, meta, INSTATE_META_REVISION, 8, 0);
	if (rc == 0)
		rc = instate__meta_put(mt, meta, INSTATE_META_NSID, 4, 0);
	return rc;
}

/* ===================================================================== */
/* Namespace entries                                                      */

int instate__ns_name_kind(const char *name, size_t len)
{
	if (len < 1 || len > INSTATE_NSNAME_MAX || memchr(name, 0, len))
		return 0;
	if (len < 2 || name[0] != '_' || name[1] != '_')
		return 1;
	return len > INSTATE_MAP_PREFIX_LEN &&
	       memcmp(name, INSTATE_MAP_PREFIX, INSTATE_MAP_PREFIX_LEN) == 0 ? 2 : 0;
}

size_t instate__meta_ns_key(char *key, const char *name, size_t len)
{
	memcpy(key, INSTATE_META_NSPREFIX, INSTATE_META_NSPREFIX_LEN);
	if (len)
		memcpy(key + INSTATE_META_NSPREFIX_LEN, name, len);
	return INSTATE_META_NSPREFIX_LEN + len;
}

void instate__meta_ns_encode(unsigned char *v, uint32_t id, instate_ns_type type)
{
	instate__put_u32(v, id);
	v[4] = (unsigned char)type;
}

int instate__meta_ns_parse(const MDB_val *k, const MDB_val *d, instate__nsent *ent)
{
	const unsigned char *v = d->mv_data;

	ent->name = (const char *)k->mv_data + INSTATE_META_NSPREFIX_LEN;
	ent->len = k->mv_size - INSTATE_META_NSPREFIX_LEN;
	ent->badname = instate__ns_name_kind(ent->name, ent->len) == 0;
	ent->id = 0;
	ent->type = 0;
	ent->bad = 0;
	/* A type byte this library does not know is damage, not a third kind:
	 * it must never be taken for one of the two. */
	if (d->mv_size != INSTATE_META_NSENTRY_SIZE ||
	    (v[4] != INSTATE_NS_KV && v[4] != INSTATE_NS_STATE))
		ent->bad = INSTATE_CORRUPT;
	else {
		ent->id = instate__get_u32(v);
		ent->type = v[4];
	}
	return ent->bad;
}

static int ns_entry(int rc, const MDB_val *k, const MDB_val *d, instate__nsent *ent)
{
	if (rc)
		return rc;
	if (k->mv_size < INSTATE_META_NSPREFIX_LEN ||
	    memcmp(k->mv_data, INSTATE_META_NSPREFIX, INSTATE_META_NSPREFIX_LEN) != 0)
		return MDB_NOTFOUND;
	instate__meta_ns_parse(k, d, ent);
	return 0;
}

int instate__meta_ns_seek(MDB_cursor *mc, const char *after, size_t alen, instate__nsent *ent)
{
	char key[INSTATE_META_NSPREFIX_LEN + INSTATE_KEY_MAX];
	MDB_val k, d;
	int rc;

	if (alen > INSTATE_KEY_MAX - INSTATE_META_NSPREFIX_LEN)
		return MDB_NOTFOUND;
	k.mv_data = key;
	k.mv_size = instate__meta_ns_key(key, after, alen);
	rc = mdb_cursor_get(mc, &k, &d, MDB_SET_RANGE);
	if (rc == 0 && alen && k.mv_size == INSTATE_META_NSPREFIX_LEN + alen &&
	    memcmp((const char *)k.mv_data + INSTATE_META_NSPREFIX_LEN, after, alen) == 0)
		rc = mdb_cursor_get(mc, &k, &d, MDB_NEXT);
	return ns_entry(rc, &k, &d, ent);
}

int instate__meta_ns_next(MDB_cursor *mc, instate__nsent *ent)
{
	MDB_val k, d;
	int rc = mdb_cursor_get(mc, &k, &d, MDB_NEXT);

	return ns_entry(rc, &k, &d, ent);
}

int instate__meta_ns_count(MDB_txn *mt, MDB_dbi meta, uint64_t *n)
{
	MDB_cursor *mc;
	instate__nsent ent;
	int rc;

	*n = 0;
	if ((rc = mdb_cursor_open(mt, meta, &mc)))
		return rc;
	for (rc = instate__meta_ns_seek(mc, NULL, 0, &ent); rc == 0;
	     rc = instate__meta_ns_next(mc, &ent))
		if (!ent.badname)
			(*n)++;
	mdb_cursor_close(mc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ===================================================================== */
/* Record headers                                                         */

/*
 * The checksum covers the key and every byte of the record but its own
 * four: the key, the flags byte, then everything from offset 5 (expiry,
 * version, payload). So a flip of a flag bit, which changes where the
 * fields are, is caught, and so is a damaged key when it is met in a walk
 * (a lookup by the right key cannot find it).
 */
static uint32_t rec_crc(const void *key, size_t klen, const unsigned char *p, size_t n)
{
	return instate__crc32c_record(key, klen, p, n);
}

int instate__rec_parse(const MDB_val *k, const MDB_val *d, int legacy, instate__rec *r)
{
	const unsigned char *p = d->mv_data;
	size_t n = d->mv_size, off = 1;
	unsigned f;

	r->m.expires_ms = 0;
	r->m.version = 0;
	if (n < 1)
		return INSTATE_CORRUPT;
	f = p[0];
	if (f & ~(unsigned)(INSTATE_REC_EXPIRES | INSTATE_REC_VERSION | INSTATE_REC_CRC))
		return INSTATE_CORRUPT;
	if (f & INSTATE_REC_CRC) {
		if (n < 5)
			return INSTATE_CORRUPT;
		off = 5;
	} else if (!legacy) {
		return INSTATE_CORRUPT;
	}
	if (f & INSTATE_REC_EXPIRES) {
		if (n - off < 8)
			return INSTATE_CORRUPT;
		r->m.expires_ms = (int64_t)instate__get_u64(p + off);
		off += 8;
	}
	if (f & INSTATE_REC_VERSION) {
		if (n - off < 4)
			return INSTATE_CORRUPT;
		r->m.version = instate__get_u32(p + off);
		off += 4;
	}
	if ((f & INSTATE_REC_CRC) &&
	    rec_crc(k->mv_data, k->mv_size, p, n) != instate__get_u32(p + 1))
		return INSTATE_CORRUPT;
	r->payload = p + off;
	r->plen = n - off;
	return 0;
}

/*
 * LMDB checks neither a node's key size nor its data size against the page
 * that holds it, so one flipped bit there hands out a pointer and a length
 * that run past the page, and past the file: reading them would be SIGBUS.
 * In a read transaction every page is in the map at a multiple of the page
 * size, so the leaf page holding the node is the page of the key's first
 * byte. This knows LMDB 0.9's page header (MDB_page in mdb.c: pgno at 0,
 * flags u16 at 10, overflow page count u32 at 12, 16 bytes in all; data
 * format 1, unchanged through 0.9.x); with another LMDB it checks nothing.
 */
#if MDB_VERSION_MAJOR == 0 && MDB_VERSION_MINOR == 9
#define LMDB_PAGEHDR 16
#define LMDB_P_LEAF 0x02
#define LMDB_P_OVERFLOW 0x04

static unsigned page_flags(const unsigned char *page)
{
	uint16_t f;

	memcpy(&f, page + 10, 2);
	return f;
}

int instate__rec_in_page(const MDB_val *k, const MDB_val *d, size_t psize)
{
	const unsigned char *key, *val, *page;
	uintptr_t mask = ~(uintptr_t)(psize - 1);
	uint32_t pages;
	unsigned f;

	if (k) {
		/* A key from a cursor lies in its node, in the leaf page. */
		key = k->mv_data;
		page = (const unsigned char *)((uintptr_t)key & mask);
		if (!(page_flags(page) & LMDB_P_LEAF) || key < page + LMDB_PAGEHDR ||
		    k->mv_size > (size_t)(page + psize - key))
			return INSTATE_CORRUPT;
	}
	if (!d || d->mv_size == 0)
		return 0; /* nothing to read (it may start at the page's end) */
	val = d->mv_data;
	if (k && ((uintptr_t)val & mask) == ((uintptr_t)k->mv_data & mask))
		/* in the key's leaf page, checked above: the common case */
		return d->mv_size <= (size_t)(page + psize - val) ? 0 : INSTATE_CORRUPT;
	page = (const unsigned char *)((uintptr_t)val & mask);
	f = page_flags(page);
	if (f & LMDB_P_LEAF)
		return val >= page + LMDB_PAGEHDR && d->mv_size <= (size_t)(page + psize - val)
		       ? 0 : INSTATE_CORRUPT;
	/* On overflow pages: the data follows the first one's header. */
	if (!(f & LMDB_P_OVERFLOW) || val != page + LMDB_PAGEHDR)
		return INSTATE_CORRUPT;
	memcpy(&pages, page + 12, 4);
	return pages && d->mv_size <= (uint64_t)pages * psize - LMDB_PAGEHDR ? 0 : INSTATE_CORRUPT;
}
#else
int instate__rec_in_page(const MDB_val *k, const MDB_val *d, size_t psize)
{
	(void)k; (void)d; (void)psize;
	return 0;
}
#endif

size_t instate__rec_header(unsigned char *h, int64_t expires_ms, uint32_t version)
{
	size_t off = 5;

	h[0] = INSTATE_REC_CRC;
	memset(h + 1, 0, 4);
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

void instate__rec_seal(unsigned char *p, size_t n, const void *key, size_t klen)
{
	instate__put_u32(p + 1, rec_crc(key, klen, p, n));
}

/* ===================================================================== */
/* Upgrade from format 1                                                  */

/* Rewrite every record of one namespace database with a checksum. A record
 * already damaged under format 1 is left as it is: without a checksum it
 * reads as corrupt from now on, which it was. */
static int upgrade_db(MDB_txn *mt, const char *name, instate_buf *b)
{
	unsigned char h[INSTATE_REC_HDR_MAX], key[INSTATE_KEY_MAX];
	MDB_cursor *mc;
	MDB_dbi dbi;
	MDB_val k, d;
	instate__rec r;
	size_t hl;
	int rc;

	rc = mdb_dbi_open(mt, name, 0, &dbi);
	if (rc == MDB_NOTFOUND)
		return 0; /* listed but never written */
	if (rc || (rc = mdb_cursor_open(mt, dbi, &mc)))
		return rc;
	for (rc = mdb_cursor_get(mc, &k, &d, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(mc, &k, &d, MDB_NEXT)) {
		if ((d.mv_size && (((const unsigned char *)d.mv_data)[0] & INSTATE_REC_CRC)) ||
		    instate__rec_parse(&k, &d, 1, &r) || k.mv_size > sizeof key)
			continue;
		hl = instate__rec_header(h, r.m.expires_ms, r.m.version);
		b->len = 0;
		if (instate_buf_reserve(b, hl + r.plen)) {
			rc = ENOMEM;
			break;
		}
		/* Both copied out of the page first: the put moves nodes. */
		memcpy(b->data, h, hl);
		memcpy(b->data + hl, r.payload, r.plen);
		memcpy(key, k.mv_data, k.mv_size);
		instate__rec_seal((unsigned char *)b->data, hl + r.plen, key, k.mv_size);
		k.mv_data = key;
		d.mv_data = b->data;
		d.mv_size = hl + r.plen;
		if ((rc = mdb_cursor_put(mc, &k, &d, MDB_CURRENT)))
			break;
	}
	mdb_cursor_close(mc);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

static int upgrade_once(MDB_env *env, MDB_dbi meta, instate_buf *b)
{
	char name[INSTATE_NSNAME_MAX + 1];
	MDB_txn *mt;
	MDB_cursor *mc;
	instate__nsent ent;
	uint64_t format;
	int rc;

	if ((rc = mdb_txn_begin(env, NULL, 0, &mt)))
		return rc;
	/* Another process may have upgraded it since we looked. */
	rc = instate__meta_get(mt, meta, INSTATE_META_FORMAT, 4, &format);
	if (rc || format >= INSTATE_STORE_FORMAT) {
		mdb_txn_abort(mt);
		return rc;
	}
	if ((rc = mdb_cursor_open(mt, meta, &mc))) {
		mdb_txn_abort(mt);
		return rc;
	}
	for (rc = instate__meta_ns_seek(mc, NULL, 0, &ent); rc == 0;
	     rc = instate__meta_ns_next(mc, &ent)) {
		if (ent.badname)
			continue;
		memcpy(name, ent.name, ent.len);
		name[ent.len] = '\0';
		if ((rc = upgrade_db(mt, name, b)))
			break;
	}
	mdb_cursor_close(mc);
	if (rc == MDB_NOTFOUND)
		rc = instate__meta_put(mt, meta, INSTATE_META_FORMAT, 4, INSTATE_STORE_FORMAT);
	if (rc) {
		mdb_txn_abort(mt);
		return rc;
	}
	return mdb_txn_commit(mt);
}

int instate__meta_upgrade(MDB_env *env, MDB_dbi meta, uint64_t max_size)
{
	instate_buf b = { 0 };
	MDB_envinfo info;
	MDB_stat st;
	uint64_t size;
	int rc;

	for (;;) {
		rc = upgrade_once(env, meta, &b);
		if (rc == MDB_MAP_RESIZED) {
			rc = mdb_env_set_mapsize(env, 0); /* grown by another process */
		} else if (rc == MDB_MAP_FULL) {
			/* Every record is rewritten, and copy-on-write keeps the old
			 * pages until the commit: up to twice the data. */
			mdb_env_info(env, &info);
			mdb_env_stat(env, &st);
			if (info.me_mapsize >= max_size) {
				rc = INSTATE_MAP_FULL;
				break;
			}
			size = info.me_mapsize > max_size / 2 ? max_size : (uint64_t)info.me_mapsize * 2;
			size -= size % st.ms_psize;
			rc = mdb_env_set_mapsize(env, (size_t)size);
		} else {
			break;
		}
		if (rc)
			break;
	}
	instate_buf_free(&b);
	return instate__mdb_err(rc);
}
