/*
 * instate_store_int.h - internals shared by the store core's files
 * (instate_env.c: environments, registry, namespaces, map growth;
 * instate_txn.c: transactions, records, cursors, the store check;
 * instate_meta.c: the bytes of __meta and of record headers). Not installed: the public
 * API is instate.h and the on-disk layout is docs/FORMAT.md section 2.
 */
#ifndef INSTATE_STORE_INT_H
#define INSTATE_STORE_INT_H

#include "instate.h"

#include "instate_os.h"

#include <lmdb.h>

/* Map growth remaps under live read transactions of this process, which
 * lmdb.h does not promise: LMDB 0.9 reads every page through env->me_map
 * afresh and mdb_env_set_mapsize checks only for a live write transaction.
 * Pinned here and checked again at open (docs/DESIGN.md, Map growth). */
#if MDB_VERSION_MAJOR != 0 || MDB_VERSION_MINOR != 9
#error "instate's map growth relies on LMDB 0.9 (see docs/DESIGN.md, Map growth)"
#endif
#include <stdint.h>

/* ---- __meta keys and record headers (docs/FORMAT.md section 2) --------
 * Everything that knows the bytes of __meta and of a record header lives in
 * instate_meta.c; the other core files call the functions below. */

#define INSTATE_META_DB "__meta"
#define INSTATE_META_FORMAT "format"     /* u32 BE: INSTATE_STORE_FORMAT */
#define INSTATE_META_REVISION "revision" /* u64 BE */
#define INSTATE_META_NSID "nsid"         /* u32 BE: last namespace id given */
#define INSTATE_META_NSPREFIX "ns:"      /* "ns:" name -> u32 BE id, u8 type */
#define INSTATE_META_NSPREFIX_LEN 3
#define INSTATE_META_NSKEY_MAX (INSTATE_META_NSPREFIX_LEN + INSTATE_NSNAME_MAX)
#define INSTATE_META_NSENTRY_SIZE 5

#define INSTATE_REC_EXPIRES 0x01 /* an 8-byte BE expiry in ms follows */
#define INSTATE_REC_VERSION 0x02 /* a 4-byte BE version follows */
#define INSTATE_REC_CRC     0x04 /* a 4-byte BE CRC-32C follows the flags */
#define INSTATE_REC_HDR_MAX 17

/* Big-endian helpers: the one set every core file uses. */
static inline void instate__put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}
static inline uint32_t instate__get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void instate__put_u64(unsigned char *p, uint64_t v)
{
	instate__put_u32(p, (uint32_t)(v >> 32));
	instate__put_u32(p + 4, (uint32_t)v);
}
static inline uint64_t instate__get_u64(const unsigned char *p)
{
	return (uint64_t)instate__get_u32(p) << 32 | instate__get_u32(p + 4);
}

/* Read a big-endian u32 or u64 (size 4 or 8) from __meta: 0 if absent,
 * MDB_CORRUPTED if the stored size differs, or an LMDB error. */
int instate__meta_get(MDB_txn *mt, MDB_dbi meta, const char *key, size_t size, uint64_t *out);

/* Write a big-endian u32 or u64 (size 4 or 8) into __meta; an LMDB code. */
int instate__meta_put(MDB_txn *mt, MDB_dbi meta, const char *key, size_t size, uint64_t v);

/* Write the __meta keys of a new, empty store (format, revision 0, nsid 0). */
int instate__meta_init(MDB_txn *mt, MDB_dbi meta);

/* The __meta key of namespace `name` into key (INSTATE_META_NSKEY_MAX
 * bytes); returns its length. */
size_t instate__meta_ns_key(char *key, const char *name, size_t len);

/* One namespace entry of __meta, as read. name points into the map (valid
 * while the transaction and the map lock are). */
typedef struct instate__nsent {
	const char *name;
	size_t len;
	uint32_t id;
	int type;      /* INSTATE_NS_KV or INSTATE_NS_STATE when bad == 0 */
	int bad;       /* INSTATE_CORRUPT: the value is malformed (size, type) */
	int badname;   /* the key is not a valid namespace name (too long, NUL) */
} instate__nsent;

/* The one check of a namespace name: 1 for a user's name, 2 for a map
 * variable's (INSTATE_MAP_PREFIX and at least one byte more), 0 for
 * anything else (empty, too long, a NUL, another "__" name). */
int instate__ns_name_kind(const char *name, size_t len);

/* The value of a namespace entry (INSTATE_META_NSENTRY_SIZE bytes). */
void instate__meta_ns_encode(unsigned char *v, uint32_t id, instate_ns_type type);

/* Parse one entry (key with its "ns:" prefix, and value) into *ent. Returns
 * 0, or INSTATE_CORRUPT (also set in ent->bad) for a malformed value. */
int instate__meta_ns_parse(const MDB_val *k, const MDB_val *d, instate__nsent *ent);

/*
 * The one walker over the namespace entries of __meta, in name order.
 * Position mc (a cursor on __meta) at the first entry whose name sorts after
 * `after` (alen bytes; alen 0 = the first entry), or step to the next one,
 * and parse it into *ent. Returns 0 (ent->bad may be set), MDB_NOTFOUND
 * after the last entry, or an LMDB error.
 */
int instate__meta_ns_seek(MDB_cursor *mc, const char *after, size_t alen, instate__nsent *ent);
int instate__meta_ns_next(MDB_cursor *mc, instate__nsent *ent);

/* The number of namespace entries of __meta (an LMDB code). */
int instate__meta_ns_count(MDB_txn *mt, MDB_dbi meta, uint64_t *n);

/* A record as read: the parsed header and where the payload is. */
typedef struct instate__rec {
	instate_meta m;
	const unsigned char *payload;
	size_t plen;
} instate__rec;

/*
 * Parse and verify the record of key k and value d: 0, or INSTATE_CORRUPT
 * for unknown flag bits, lengths that do not fit, a checksum that does not
 * match, or (unless legacy) no checksum at all. legacy: the store is of
 * format 1 (opened read-only, not yet upgraded), whose records may lack one.
 */
int instate__rec_parse(const MDB_val *k, const MDB_val *d, int legacy, instate__rec *r);

/*
 * In a read transaction: INSTATE_CORRUPT when the value LMDB handed out (and
 * the key, if k is not NULL: a key a cursor returned, which points into the
 * page) does not lie inside the leaf or overflow pages it must come from,
 * i.e. LMDB's node header holding their sizes is damaged; 0 otherwise.
 * d may be NULL to check the key alone. psize: the environment's page size.
 */
int instate__rec_in_page(const MDB_val *k, const MDB_val *d, size_t psize);

/* Write the header of a record into h (INSTATE_REC_HDR_MAX bytes), its
 * checksum left blank; returns its length. */
size_t instate__rec_header(unsigned char *h, int64_t expires_ms, uint32_t version);

/* The CRC-32C of a record: of the key, the flags byte p[0] and p[5..n)
 * (instate_crc32c.c; n >= 5). */
uint32_t instate__crc32c_record(const void *key, size_t klen, const unsigned char *p, size_t n);

/* Fill in the checksum of the record of key `key` whose header and
 * payload are in place at p (n bytes). */
void instate__rec_seal(unsigned char *p, size_t n, const void *key, size_t klen);

/*
 * Upgrade a store of an older format to INSTATE_STORE_FORMAT in one write
 * transaction (every record rewritten with a checksum), growing the map up
 * to max_size as needed. Called at the first read-write open, before the
 * environment is shared. Returns an instate code.
 */
int instate__meta_upgrade(MDB_env *env, MDB_dbi meta, uint64_t max_size);

/* ---- namespaces ------------------------------------------------------- */

/* instate_ns.dbi_state, read with atomics outside the env mutex. */
#define NS_DBI_NONE 0    /* no LMDB handle in this process */
#define NS_DBI_OPEN 1    /* handle valid for every transaction begun after it */
#define NS_DBI_PENDING 2 /* opened by the live write transaction, uncommitted */

struct instate_ns {
	struct instate_env *env;
	char *name;            /* NUL-terminated (names hold no NUL) */
	size_t len;
	int type;              /* instate_ns_type; atomic */
	int dbi_state;         /* NS_DBI_*; atomic, changed under env->mu */
	MDB_dbi dbi;           /* valid while dbi_state != NONE */
	uint64_t checked;      /* write serial in which __meta was seen/written */
};

/* ---- environments ------------------------------------------------------ */

typedef struct instate_env {
	struct instate_env *next; /* registry list */
	instate_os_id id;         /* the data file; the registry key with lid */
	instate_os_id lid;        /* the lock file (0/0: none, read-only filesystem) */
	int refs;                 /* store handles; under the registry mutex */
	MDB_env *env;             /* NULL after a failed reopen (see instate__recover) */
	int readonly;
	int sync;                 /* instate_sync of the first open */

	/* What reopening the environment needs (instate__recover). */
	instate_os_dir dir;       /* the directory holding the files, kept open */
	char *lmdbpath;           /* the path given to mdb_env_open, through dir */
	unsigned flags, file_mode, max_readers, max_dbs;
	int nreaders;             /* live top-level read txns; atomic */
	uint64_t rev_seen;        /* newest revision a snapshot here saw; atomic */
	uint64_t max_size;
	unsigned max_namespaces;  /* live namespaces allowed (from the first open) */
	size_t page_size;
	MDB_dbi meta;
	uint32_t format;          /* store format read at open (1: not upgraded, read-only) */

	/* env mutex: the namespace table, every mdb_dbi_open, wtxn_live */
	instate_os_mutex mu;
	instate_ns **ns;
	size_t nns, capns;
	int wtxn_live;          /* an LMDB write txn is open in this process */
	uint32_t ns_seen;       /* __meta nsid the namespace cache reflects */

	/* the in-process writer slot */
	instate_os_mutex wmu;
	instate_os_cond wcv;
	int wbusy;
	instate_os_thread wowner;
	uint64_t wserial;       /* top-level write transactions begun */

	/* map lock: shared around every call touching the map, exclusive to
	 * remap it; mapgen counts remaps (changed under the exclusive lock) */
	instate_os_rwlock maplock;
	uint64_t mapgen;

	/* the owner lock (instate_owner.c), under its mutex there */
	int owner_refs;           /* handles holding it; 0: not held */
	instate_os_fd owner_fd;   /* the lock file, valid while owner_refs > 0 */
} instate_env;

struct instate_store {
	instate_env *env;
	char *path;
	int readonly;
	int owner;                /* this handle holds the owner lock */
};

/* Drop this handle's hold on the owner lock (instate_owner.c); called by
 * instate_store_close() before the handle leaves the environment. */
void instate__owner_release(instate_store *s);

/* ---- functions shared between instate_env.c and instate_txn.c --------- */

/* LMDB return code -> instate code (positive errno passes through). */
int instate__mdb_err(int rc);

/* Writer slot: 0, or INSTATE_BUSY if this thread holds it; waits otherwise. */
int instate__slot_acquire(instate_env *e);
void instate__slot_release(instate_env *e);
/* Nonzero if the calling thread holds the writer slot (a write txn is open
 * in this thread): waiting for another thread's write would deadlock. */
int instate__slot_mine(instate_env *e);
/* A second handle on s's environment (instate_store_close() frees it): what
 * a writer holds, so it outlives the handle it was opened on. ENOMEM. */
int instate__store_dup(instate_store *s, instate_store **out);

/*
 * Grow the map to at least `need` bytes (doubling; capped at max_size).
 * Caller holds the writer slot, no LMDB write txn is open, and it does NOT
 * hold the map lock. INSTATE_MAP_FULL when already at max_size or `need`
 * exceeds it.
 */
int instate__grow(instate_env *e, uint64_t need);

/* Bytes of the map in use (up to the last page written), from info. */
static inline uint64_t instate__used_bytes(const instate_env *e, const MDB_envinfo *info)
{
	return (uint64_t)(info->me_last_pgno + 1) * e->page_size;
}

/* Adopt a map grown by another process (after MDB_MAP_RESIZED). Caller
 * holds the writer slot and not the map lock. */
int instate__adopt(instate_env *e);

/*
 * Begin an LMDB read txn; on MDB_READERS_FULL clear the slots of dead
 * processes (mdb_reader_check) and try once more. Caller holds the map
 * lock shared, and e->env is not NULL. Returns an LMDB code unmapped.
 */
int instate__rtxn(instate_env *e, MDB_txn **mt);

/*
 * Reopen an environment LMDB has declared unusable (MDB_PANIC: a meta page
 * write failed), or one a failed reopen left closed. Caller holds the
 * writer slot, not the map lock, and no write txn is open. Returns 0 (also
 * when another thread already reopened it), EIO while read transactions
 * of this process are live (they keep their snapshots; the next begin
 * after the last one tries again), or the error of the reopen.
 */
int instate__recover(instate_env *e);

/* An errno from writing the store: EIO (LMDB's code for a short write) is
 * ENOSPC when the filesystem holding the data file is full. */
int instate__write_err(instate_env *e, int rc);

/*
 * Bring the namespace cache up to the committed __meta (open the LMDB
 * handles of namespaces created elsewhere). Caller holds the map lock
 * shared and e->mu. Skipped while a write txn is live. Returns 0, or an
 * LMDB code (MDB_MAP_RESIZED included) unmapped.
 */
int instate__refresh(instate_env *e);
int instate__rev_fresh(instate_env *e, uint64_t rev, int waits);
void instate__rev_wait(int *waits);

/* Find or add the namespace object `name` (e->mu held). ENOMEM. */
int instate__ns_lookup(instate_env *e, const char *name, size_t len, instate_ns **out);

/* ---- for the dump layer (instate_dump.c) ------------------------------ */

/* The identity of the data file the store has open (the registry key):
 * load and dump refuse the store's own files. */
static inline instate_os_id instate__store_data_id(const instate_store *s)
{
	return s->env->id;
}

#endif /* INSTATE_STORE_INT_H */
