/*
 * linstate.h - declarations shared by the binding's files (src/l*.c).
 *
 * Not installed: the public C API is instate.h. The binding only converts:
 * it checks arguments, calls the core and pushes results.
 */
#ifndef LINSTATE_H
#define LINSTATE_H

#include "lcompat.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Unaligned native-order loads, for the codec's and the fingerprint's
 * word-at-a-time string hashing (memcpy compiles to one move). */
static inline uint64_t linstate_load64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint32_t linstate_load32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* The n bytes at s (n <= 16 for the guarantee below) as two words, from
 * loads that stay inside them: for n <= 16 the words hold every byte, so
 * equal (n, a, b) means equal strings; longer strings also need their
 * middle compared. n == 0 gives two zero words. */
static inline void linstate_str_words(const unsigned char *s, size_t n, uint64_t *a, uint64_t *b)
{
	if (n >= 8) {
		*a = linstate_load64(s);
		*b = linstate_load64(s + n - 8);
	} else if (n >= 4) {
		*a = linstate_load32(s) | (uint64_t)linstate_load32(s + n - 4) << 32;
		*b = 0;
	} else if (n) {
		*a = s[0] | (uint64_t)s[n >> 1] << 8 | (uint64_t)s[n - 1] << 16;
		*b = 0;
	} else {
		*a = *b = 0;
	}
}

/* ---- lcodec.c: Lua values <-> MessagePack ---------------------------- */

/*
 * Encode the value at stack index idx as MessagePack. Returns a pointer to
 * the *len bytes, in an encoder context of this Lua state that is busy for
 * the call alone (reused, so a call allocates nothing, and raising leaks
 * nothing). An unstorable value raises "cannot store a <type> at
 * <root><path>", e.g. root "inventory" gives
 * "cannot store a function at inventory.items[3].on_use". A table whose
 * metatable is a registered class (instate.register_class) is written as
 * a CLASS extension; any other metatable raises "cannot store a table with
 * an unregistered metatable at <root><path>" (see linstate_encode_flags()).
 *
 * Calls no metamethods, runs no Lua code and creates no Lua object, so no
 * finalizer runs inside it (on LuaJIT an int64_t/uint64_t cdata is read
 * through the FFI converter lua/instate/compat.lua registers, which
 * creates no object). Re-entrant: an encoding made while another is
 * in progress, or by a finalizer at any time, uses a context of its own.
 *
 * Lifetime of the bytes: valid until the calling C function encodes
 * again, runs Lua code (lua_call, lua_pcall, luaL_error, ...), or returns.
 * Allocating in between is fine (a finalizer the collector runs then
 * encodes elsewhere): hand them to the core (instate_put) or copy them
 * (lua_pushlstring) within that window.
 * On plain Lua 5.1 (lcompat_gc_running() cannot tell a finalizer's call
 * there) a finalizer run by an allocation in between may encode in the same
 * context: hand the bytes to the core before allocating (instate_put
 * allocates no Lua object); instate.encode itself keeps its context busy
 * until its copy is made.
 */
const char *linstate_encode(lua_State *L, int idx, const char *root, size_t *len);

/*
 * linstate_encode() in canonical map order (docs/FORMAT.md section 1): the
 * same value gives the same bytes in every process, whatever the insertion
 * history of its tables. Same contract and lifetime as linstate_encode().
 */
const char *linstate_encode_canonical(lua_State *L, int idx, const char *root, size_t *len);

/* Flags of linstate_encode_flags(). */
#define LINSTATE_ENC_CANONICAL 1u        /* canonical map order */
#define LINSTATE_ENC_DROP_METATABLES 2u  /* metatables = "drop": an unregistered
                                          * metatable is left out, not raised */

/*
 * linstate_encode() with flags (LINSTATE_ENC_*). Same contract and
 * lifetime as linstate_encode().
 */
const char *linstate_encode_flags(lua_State *L, int idx, const char *root, size_t *len,
                                  unsigned flags);

/*
 * The value at vidx of an option 'metatables' of argument arg: "error"
 * (0) or "drop" (LINSTATE_ENC_DROP_METATABLES); anything else raises an
 * argument error.
 */
unsigned linstate_opt_metatables(lua_State *L, int vidx, int arg);

/*
 * Decode n bytes at p. On success pushes the value and returns 1. On corrupt
 * input, or a class name that is not registered in this Lua state, pushes
 * an error message naming the byte offset and returns 0. Raises
 * only on memory errors. Runs no Lua code itself (but LuaJIT's converter
 * that makes the cdata of an integer beyond 2^53, see lcodec.c); a
 * finalizer run by its allocations may decode or encode (re-entrant), or
 * write to a store: p must stay valid through that too (a Lua string on
 * the stack does).
 */
int linstate_decode(lua_State *L, const char *p, size_t n);

/*
 * What a failed linstate_decode()'s message says of the value, to begin a
 * message naming its key: "corrupt value", or "undecodable value" for a
 * class name not registered (the bytes are fine; the reader lacks the class).
 */
const char *linstate_decode_what(const char *msg);

/* linstate_decode(), and in the same pass over the bytes the fingerprint
 * instate._fingerprint gives the value pushed (lfingerprint.h's formula):
 * on success (1) *has is 1 and *print that fingerprint, or *has is 0 when
 * the bytes do not tell it exactly (an extension: a graph of shared
 * tables, a class instance; two map keys that are the same Lua key; an
 * integral float map key; an integer read as a LuaJIT cdata: lcodec.c,
 * dec_table_t). On failure (0) as linstate_decode(), *has 0. Raises as
 * linstate_decode() does (memory). */
int linstate_decode_print(lua_State *L, const char *p, size_t n, uint64_t *print, int *has);

/* Set encode/decode (and codec constants) into the table at the stack top. */
void linstate_open_codec(lua_State *L);

/* ---- the handle classes: lstore.c, ltxn.c, lns.c, liter.c ------------- */

#include "instate.h"
#include "instate_lua.h" /* luaopen_instate_core, instate_lua_openlibs */

/* Metatable names. Methods live in the metatable itself (__index = mt). */
#define LINSTATE_STORE_MT "instate.Store"
#define LINSTATE_TXN_MT   "instate.Transaction"
#define LINSTATE_NS_MT    "instate.Namespace"
#define LINSTATE_ITER_MT  "instate.Iterator"

/*
 * Lifetimes. A store userdata keeps a list of its live children
 * (transactions and iterators that own a core transaction). Closing the
 * store, explicitly or by GC, first ends every child: write transactions are
 * aborted innermost first (never committed), iterators are closed. Children
 * keep their parents alive through user values, so a child never outlives
 * the memory of its parent whatever order the collector picks.
 */
typedef struct lchild lchild;
struct lchild {
	lchild *prev, *next;        /* in the store's list of live children */
	void (*close)(lchild *c);
};

typedef struct ltxn ltxn;
typedef struct liter liter;

typedef struct lstore {
	instate_store *s;           /* NULL once closed */
	lchild *children;           /* live transactions and iterators */
	ltxn *cur;                  /* innermost open write transaction */
	lua_State *owner;           /* the coroutine that opened it */
	unsigned enc_flags;         /* LINSTATE_ENC_* of every value written (metatables) */
} lstore;

struct ltxn {
	lchild link;                /* first member: lchild* <-> ltxn* */
	instate_txn *txn;           /* NULL once ended */
	lstore *store;
	ltxn *parent;               /* enclosing write transaction (savepoint) */
	liter *iters;               /* open iterators running in this txn */
	int readonly;
	int retry;                  /* the map grew: run the whole thing again */
	int discard;                /* abort when fn returns, yet return its results */
	int linked;
};

typedef struct lns {
	instate_ns *ns;
	lstore *store;
	ltxn *tx;                   /* NULL: every call is its own transaction */
} lns;

struct liter {
	lchild link;
	instate_cursor *cur;        /* NULL once closed */
	instate_txn *own;           /* its own read transaction, or NULL */
	ltxn *tx;                   /* the transaction it runs in, if not own */
	liter *next_in_tx;
	lstore *store;
	int encoded;                /* pairs_encoded: key, bytes, version */
	int linked;
};

/* Per-Lua-state scratch buffers: upvalue 1 of every method of the classes. */
typedef struct lscratch {
	instate_buf kv[2];          /* a read's key and value: linstate_kv_take() */
	int kv_busy;                /* kv holds the data of a call in progress */
	instate_buf save[2];        /* ns:save_many's, kept between saves */
} lscratch;

#define SCRATCH(L) ((lscratch *)lua_touserdata((L), lua_upvalueindex(1)))

/*
 * The key and value buffers (kv[0], kv[1]) of a method that reads records
 * into them and allocates (pushes a string, decodes) before it is done with
 * them. An allocation may run a finalizer that reads through this Lua state
 * too, and that call must not overwrite them: the first call takes the
 * scratch's pair and marks it busy; a call made while it is busy gets a
 * pair of its own, owned by a userdata. Pushes exactly one value (nil, or
 * that userdata), so the stack indices above it are the same either way.
 * linstate_kv_give() ends the use: before the method runs Lua code, raises
 * on purpose, or returns. (A memory error raised in between leaves the
 * scratch busy: later calls then use pairs of their own, only slower.)
 */
instate_buf *linstate_kv_take(lua_State *L);
void linstate_kv_give(lua_State *L, instate_buf *kv);

/*
 * Class markers: light userdata keys no script can forge, set to true in
 * each class's metatable (and in every per-name namespace metatable).
 * Checking a handle is then one lookup in its own metatable (luaL_checkudata
 * looks the class up in the registry by name first), which counts on hot
 * paths such as the iterator step and defstate's store:last_commit().
 */
extern const char linstate_store_marker, linstate_txn_marker, linstate_ns_marker,
	linstate_iter_marker;

/* The handle at idx whose metatable holds marker (luaL_checkudata's
 * contract, type error included). */
static inline void *linstate_checkhandle(lua_State *L, int idx, const char *marker,
                                         const char *tname)
{
	void *p = lua_touserdata(L, idx);

	if (p && lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
		int ok = lua_rawgetp(L, -1, marker) == LUA_TBOOLEAN;
		lua_pop(L, 2);
		if (ok)
			return p;
	}
	if (lua_type(L, idx) != LUA_TUSERDATA)   /* a table wearing the class's
	                                            metatable has its __name */
		luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s", tname,
			luaL_typename(L, idx)));
	luaL_typeerror(L, idx, tname);
	return NULL;
}

/* The handles at idx, open or not; raise a type error. */
#define linstate_tostore(L, idx) ((lstore *)linstate_checkhandle((L), (idx), \
	&linstate_store_marker, LINSTATE_STORE_MT))
#define linstate_totxn(L, idx) ((ltxn *)linstate_checkhandle((L), (idx), \
	&linstate_txn_marker, LINSTATE_TXN_MT))
#define linstate_tons(L, idx) ((lns *)linstate_checkhandle((L), (idx), \
	&linstate_ns_marker, LINSTATE_NS_MT))
#define linstate_toiter(L, idx) ((liter *)linstate_checkhandle((L), (idx), \
	&linstate_iter_marker, LINSTATE_ITER_MT))

/* The open handles at idx; raise "... is closed" / "transaction has ended". */
static inline lstore *linstate_checklstore(lua_State *L, int idx)
{
	lstore *st = linstate_tostore(L, idx);
	if (!st->s)
		luaL_error(L, "store is closed");
	return st;
}

static inline ltxn *linstate_checktx(lua_State *L, int idx)
{
	ltxn *t = linstate_totxn(L, idx);
	if (!t->txn)
		luaL_error(L, "transaction has ended");
	return t;
}

static inline lns *linstate_checkns(lua_State *L, int idx)
{
	lns *n = linstate_tons(L, idx);
	if (!n->ns)
		luaL_error(L, "namespace is closed");
	if (n->tx) {
		if (!n->tx->txn)
			luaL_error(L, "transaction has ended");
	} else if (!n->store->s) {
		luaL_error(L, "store is closed");
	}
	return n;
}

/* The open store at idx; raises "store is closed" / a type error. */
instate_store *linstate_checkstore(lua_State *L, int idx);

/* lstore.c: the store's list of live children. */
void linstate_child_link(lstore *st, lchild *c, void (*close)(lchild *));
void linstate_child_unlink(lstore *st, lchild *c);

/* ltxn.c: transactions. */
/* Abort t and, first, every savepoint opened inside it. Safe twice. */
void linstate_txn_abort_tree(ltxn *t);
/* Mark t and every enclosing transaction for a re-run (the map grew). */
void linstate_txn_mark_retry(ltxn *t);
/* The error value that unwinds a transaction function for a re-run. */
extern const char linstate_retry_sentinel;
/* store:transaction(fn, ...) (a store method; called by lns.c too). */
int linstate_store_transaction(lua_State *L);

/* lns.c: namespaces. */
/* Resolve namespace name at nameidx in st (type INSTATE_NS_ANY: any);
 * raises on a bad name, a type clash or a failure. */
instate_ns *linstate_ns_get(lua_State *L, lstore *st, int nameidx, instate_ns_type type);
/* The same for a map variable's namespace (type state): the string at
 * nameidx, 1..249 bytes without NUL, follows INSTATE_MAP_PREFIX. The
 * instate layer's own door to the reserved names (store:_map_namespace,
 * tx:_map_namespace); raises on a bad name. */
instate_ns *linstate_map_ns_get(lua_State *L, lstore *st, int nameidx);
/* Push a namespace handle; owner (store or tx userdata) at owneridx. */
void linstate_push_ns(lua_State *L, instate_ns *ns, lstore *st, ltxn *tx, int owneridx);
/* Run fn in n's transaction; for a store-level namespace in its own
 * committed write transaction, run again while the map grows. fn must not
 * raise. Returns 0 or an error code (INSTATE_EXISTS / INSTATE_NOTFOUND from
 * fn after committing nothing). */
typedef int (*linstate_write_fn)(instate_txn *txn, lns *n, void *ud);
int linstate_run_write(lua_State *L, lns *n, linstate_write_fn fn, void *ud);

/* liter.c: iterators. */
/* Push an iterator over the records of n (checked, at nsidx) that start
 * with prefix, in n's transaction or a snapshot the userdata owns. Returns
 * it, or NULL after pushing nil, msg, code. */
liter *linstate_iter_open(lua_State *L, lns *n, int nsidx, const char *prefix, size_t plen,
                          int encoded);
void linstate_iter_close(liter *it);
/* The generic-for step of ns:pairs (upvalue 1: scratch). */
int linstate_iter_next(lua_State *L);

/* Registration, in this order: store, then the others (the entry file). */
void linstate_open_store(lua_State *L, int mod, int scratch);
void linstate_open_txn(lua_State *L, int scratch);
void linstate_open_ns(lua_State *L, int scratch);
void linstate_open_iter(lua_State *L, int scratch);

/* ---- lwriter.c: the background writer --------------------------------- */

#define LINSTATE_WRITER_MT "instate.Writer"
typedef struct lwriter {
	instate_writer *w;          /* NULL once closed */
} lwriter;
extern const char linstate_writer_marker;
/* The open writer at idx; raises "writer is closed" / a type error. */
instate_writer *linstate_checkwriter(lua_State *L, int idx);
/* The triple for error rc of a writer call, err its message. */
int linstate_writer_fail(lua_State *L, int rc, const char *err);
/* A Batch (writer:batch()): writes of any namespaces, encoded when added,
 * committed as one async save by its writer (its user value). */
#define LINSTATE_BATCH_MT "instate.Batch"
typedef struct lbatch {
	instate_batch *b;           /* NULL until the first write, and after submit */
	lwriter *lw;                /* its writer, kept alive by the user value */
} lbatch;
/* The Batch at idx, or NULL if it is not one. */
lbatch *linstate_tobatch(lua_State *L, int idx);
/* lb's core batch, made on first use; raises on memory. */
instate_batch *linstate_batch_of(lua_State *L, lbatch *lb);
/* Submit lb's batch to its writer: pushes the ticket (1), or the triple of
 * a kept error (3) after cutting the batch back to its first `base`
 * operations (what it held before this call). */
int linstate_batch_submit(lua_State *L, lbatch *lb, size_t base);
/* Register the Writer class and store:writer() (after linstate_open_store). */
void linstate_open_writer(lua_State *L, int scratch);

/* ---- lopt.c: option tables and names ---------------------------------- */

/* Raise if the table at idx has a key not in names (NULL-terminated). */
void linstate_check_opt_names(lua_State *L, int idx, const char *const names[]);
/* opts[name] at idx as a boolean / an integer in min..max; def if nil. */
int linstate_opt_bool(lua_State *L, int idx, const char *name, int def);
lua_Integer linstate_opt_int(lua_State *L, int idx, const char *name, lua_Integer def,
                             lua_Integer min, lua_Integer max);
/* instate.open's options table at idx into o (o already initialised). */
void linstate_check_open_opts(lua_State *L, int idx, instate_options *o);
/* {ttl = s [, version = v]} at idx (none or nil: no options) into meta. */
void linstate_check_put_opts(lua_State *L, int idx, instate_meta *meta, int allow_version);
/* Seconds from now at argument argidx to an absolute expiry in ms
 * (0 for secs == 0 when allow_zero). */
int64_t linstate_ttl_to_expiry(lua_State *L, int argidx, lua_Number secs, int allow_zero);
/* A record key (1..INSTATE_KEY_MAX bytes) at idx. */
const char *linstate_check_key(lua_State *L, int idx, size_t *len);
/* A namespace name at idx: 1..INSTATE_NSNAME_MAX bytes, no NUL, not "__...". */
const char *linstate_check_ns_name(lua_State *L, int idx, size_t *len);
/* "kv" (default) or "state" at idx. */
instate_ns_type linstate_check_ns_type(lua_State *L, int idx);
const char *linstate_ns_type_name(instate_ns_type t);

/* ---- ldump.c: dump_info and store:dump/load --------------------------- */

/* Set dump_info() into the table at top; register the store's dump/load. */
void linstate_open_dump(lua_State *L);

/* ---- lcheck.c: store:check ------------------------------------------- */

/* Register the store's check method (after linstate_open_store). */
void linstate_open_check(lua_State *L);

/* ---- lcore.c: helpers shared by the files above ----------------------- */

/*
 * The error pair, as Lua's luaL_fileresult / luaL_error. A message is
 * "context: reason" for core error code rc (the context alone when it
 * already holds the reason, so nothing is said twice).
 *
 * linstate_fail pushes the runtime-failure triple nil, message, stable code
 * string (linstate_code) and returns 3: the one error pusher.
 * linstate_error raises the message (never the code): for failures met
 * where a triple cannot be returned (inside a transaction's bulk call, an
 * iterator step).
 * linstate_raise_failure raises the message of a triple just pushed (the
 * code on top, the message below it).
 */
int linstate_fail(lua_State *L, int rc, const char *context);
int linstate_error(lua_State *L, int rc, const char *context);
int linstate_raise_failure(lua_State *L);

/*
 * The context of a failure about one record, pushed on the stack (the
 * triple goes above it): "<what> key 'k'", or "<what> a binary key of N
 * bytes" for a key that does not read well in a message (lns.c).
 */
const char *linstate_key_context(lua_State *L, const char *what, const char *key, size_t klen);

/* The stable code string for rc (NULL-free: unknown codes give "IO"):
 * "IO", "NOSPACE", "MAP_FULL", "READONLY", "CORRUPT", "VERSION", "BUSY",
 * "NOTFOUND", "LIMIT", "ACCESS", "LOCKED", "CONFLICT". */
const char *linstate_code(int rc);

/* Set _set_clock, now, _newtable and _VERSION into the table at top. */
void linstate_open_core(lua_State *L);

/* Set _fingerprint and _fingerprint_bytes (lfingerprint.c) into the
 * table at top. */
void linstate_open_fingerprint(lua_State *L);

/* Set _entries and _entries_count (lentries.c: the entry cache of a big
 * tracked variable) into the table at top. */
void linstate_open_entries(lua_State *L);

/* If the value at idx is an entry cache (instate._entries), the canonical
 * encoding of its table (the cache's own bytes after re-encoding the
 * written entries, or the full encode when it cannot be exact; errors as
 * the full encode's, naming name), with flags (LINSTATE_ENC_* besides
 * canonical) as save_many's: valid until the next encode or save. NULL
 * for any other value. */
const char *linstate_entries_encode(lua_State *L, int idx, const char *name, unsigned flags,
                                    size_t *len);

/* Push a new scratch userdata (lscratch, freed by its __gc). */
void linstate_push_scratch(lua_State *L);

/* Push a userdata owning n empty buffers, freed by its __gc (Lua's UBox):
 * scratch memory of one call that raising cannot leak, and that no other
 * call (a finalizer running mid-call) can share. */
instate_buf *linstate_newbufs(lua_State *L, int n);

/* New metatable `name` on the stack holding marker and methods, each a
 * closure over the value at index scratch; __index = itself, __name. */
void linstate_newclass(lua_State *L, const char *name, const char *marker,
                       const luaL_Reg *methods, int scratch);

#endif /* LINSTATE_H */
