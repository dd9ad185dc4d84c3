/*
 * lns.c - the Namespace class: record reads and writes, read-modify-write,
 * and the defstate layer's bulk calls.
 *
 * Raising. A core write transaction held in a C local must never meet a
 * Lua error (its writer slot would stay taken). Single-call writes on a
 * store-level namespace therefore do all Lua work (argument checks,
 * encoding) before beginning and decode only after ending; operations that
 * run Lua code inside a transaction (update, incr) use a transaction
 * userdata, whose finalizer aborts it.
 *
 * Map growth. A single call on a store-level namespace that meets
 * INSTATE_RETRY just runs again; inside a transaction, the re-run is the
 * transaction's (ltxn.c).
 */
#include "linstate.h"
#include "lfingerprint.h"
#include "instate_mpack.h"

#include <limits.h>
#include <string.h>

const char linstate_ns_marker = 0;


/*
 * Namespace handles get one metatable per namespace name, so that both
 * ns.name and method lookups are plain table lookups in the VM (a C __index
 * function cost a call and a type check on every method call):
 *
 *   ns --metatable--> { __index = fields, __tostring, __name, [&linstate_ns_marker] }
 *   fields = { name = "<name>" } --metatable--> registry[LINSTATE_NS_MT]
 *   registry[LINSTATE_NS_MT] = { __index = methods, ... }
 *
 * The metatables are cached by name in a weak-valued registry table, and
 * linstate_ns_marker (a light userdata key no script can forge) tells handles apart
 * from other userdata.
 */
#define NS_MTS_KEY "instate.namespace_metatables"

/* ------------------------------------------------------------------------ */
/* Transactions for single calls                                            */
/* ------------------------------------------------------------------------ */

/* Begin the transaction a namespace call runs in: the bound one, or a new
 * read (write == 0) or write one. *own tells whether the caller ends it. */
static int op_begin(lns *n, int write, instate_txn **txn, int *own)
{
	if (n->tx) {
		if (write && n->tx->readonly)
			return INSTATE_READONLY;
		*txn = n->tx->txn;
		*own = 0;
		return 0;
	}
	*own = 1;
	return instate_txn_begin(n->store->s, NULL, write ? 0 : INSTATE_TXN_READ, txn);
}

/* After a namespace call failed with rc: for a namespace bound to a
 * transaction, RETRY (the map grew) raises the re-run sentinel; any other
 * failure returns the triple. A store-level call never sees RETRY here:
 * linstate_run_write runs it again itself. */
static int ns_fail(lua_State *L, lns *n, int rc, const char *what)
{
	if (rc == INSTATE_RETRY) {
		linstate_txn_mark_retry(n->tx);
		lua_pushlightuserdata(L, (void *)&linstate_retry_sentinel);
		return lua_error(L);
	}
	return linstate_fail(L, rc, what);
}


/*
 * A store-level write while a write transaction of this store is open in
 * this Lua state (this coroutine's or another's) is BUSY, for every write
 * call alike: the core's writer slot says so for single writes, but update
 * and incr would otherwise join the open transaction as a savepoint and
 * report a success its abort could undo.
 */
static int store_level_busy(const lns *n)
{
	return !n->tx && n->store->cur;
}

/*
 * Run fn in n's transaction; for a store-level namespace, in its own write
 * transaction, committed, and run again if the map had to grow. fn must not
 * raise. Returns 0 or an error code; INSTATE_EXISTS / INSTATE_NOTFOUND from
 * fn are returned after committing nothing.
 */
int linstate_run_write(lua_State *L, lns *n, linstate_write_fn fn, void *ud)
{
	if (n->tx && n->tx->readonly)
		return luaL_error(L, "cannot write in a snapshot");
	if (store_level_busy(n))
		return INSTATE_BUSY;
	for (;;) {
		instate_txn *txn;
		int own, rc = op_begin(n, 1, &txn, &own);
		if (rc)
			return rc;
		rc = fn(txn, n, ud);
		if (!own) {
			if (rc == INSTATE_RETRY)
				ns_fail(L, n, rc, NULL);
			return rc;
		}
		if (rc == 0) {
			rc = instate_txn_commit(txn);
		} else {
			instate_txn_abort(txn);
		}
		if (rc != INSTATE_RETRY)
			return rc;
	}
}

static instate_ns *ns_get(lua_State *L, lstore *st, const char *name, size_t len,
                          instate_ns_type type)
{
	instate_ns *ns;
	int rc;

	rc = instate_ns_get(st->s, name, len, type, &ns);
	if (rc == INSTATE_TYPE) {
		instate_ns *any;
		if (instate_ns_get(st->s, name, len, INSTATE_NS_ANY, &any) == 0)
			return luaL_error(L, "namespace '%s' has type '%s', not '%s'", name,
				linstate_ns_type_name(instate_ns_type_of(any)), linstate_ns_type_name(type)), NULL;
	}
	if (rc) {
		linstate_fail(L, rc, lua_pushfstring(L, "cannot open namespace '%s'", name));
		lua_remove(L, -4);
		return NULL;
	}
	return ns;
}

instate_ns *linstate_ns_get(lua_State *L, lstore *st, int nameidx, instate_ns_type type)
{
	size_t len;
	const char *name = linstate_check_ns_name(L, nameidx, &len);
	return ns_get(L, st, name, len, type);
}

instate_ns *linstate_map_ns_get(lua_State *L, lstore *st, int nameidx)
{
	char name[INSTATE_NSNAME_MAX + 1];
	size_t len;
	const char *s = luaL_checklstring(L, nameidx, &len);

	if (len < 1 || len > INSTATE_NSNAME_MAX - INSTATE_MAP_PREFIX_LEN || memchr(s, 0, len))
		luaL_argerror(L, nameidx, lua_pushfstring(L,
			"map namespace name must be 1..%d bytes without NUL, got %d",
			INSTATE_NSNAME_MAX - INSTATE_MAP_PREFIX_LEN, (int)len));
	memcpy(name, INSTATE_MAP_PREFIX, INSTATE_MAP_PREFIX_LEN);
	memcpy(name + INSTATE_MAP_PREFIX_LEN, s, len);
	len += INSTATE_MAP_PREFIX_LEN;
	name[len] = '\0';
	return ns_get(L, st, name, len, INSTATE_NS_STATE);
}

static int l_ns_tostring(lua_State *L);

/* Push the metatable of handles on namespace ns (see linstate_ns_marker). */
static void push_ns_mt(lua_State *L, instate_ns *ns)
{
	size_t len;
	const char *name = instate_ns_name(ns, &len);

	lua_getfield(L, LUA_REGISTRYINDEX, NS_MTS_KEY);
	lua_pushlstring(L, name, len);
	if (lua_rawget(L, -2) == LUA_TTABLE) {
		lua_remove(L, -2);
		return;
	}
	lua_pop(L, 1);
	lua_createtable(L, 0, 4);                  /* the metatable */
	lua_createtable(L, 0, 1);                  /* its fields */
	lua_pushlstring(L, name, len);
	lua_setfield(L, -2, "name");
	luaL_setmetatable(L, LINSTATE_NS_MT);      /* methods behind the fields */
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, l_ns_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, LINSTATE_NS_MT);
	lua_setfield(L, -2, "__name");
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, &linstate_ns_marker);
	lua_pushlstring(L, name, len);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	lua_remove(L, -2);
}

/* Push a namespace userdata; owner (store or tx userdata) at owneridx. */
void linstate_push_ns(lua_State *L, instate_ns *ns, lstore *st, ltxn *tx, int owneridx)
{
	lns *n = lcompat_newuserdata(L, sizeof *n, 1);
	n->ns = ns;
	n->store = st;
	n->tx = tx;
	push_ns_mt(L, ns);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, owneridx);
	lcompat_setuservalue(L, -2, 1);
}
/* ------------------------------------------------------------------------ */
/* Namespace                                                                */
/* ------------------------------------------------------------------------ */

/* Decode the value in the scratch buffer; on corruption return the triple. */
static const char *value_root(const char *key, size_t klen);

static int push_decoded(lua_State *L, const instate_buf *b, const char *key, size_t klen)
{
	const char *what;

	if (linstate_decode(L, b->data, b->len))
		return 1;
	what = linstate_decode_what(lua_tostring(L, -1));
	if (value_root(key, klen) == key)
		lua_pushfstring(L, "%s at key '%s': %s", what, key, lua_tostring(L, -1));
	else
		lua_pushfstring(L, "%s at a binary key of %d bytes: %s", what, (int)klen,
			lua_tostring(L, -1));
	lua_pushnil(L);
	lua_replace(L, -3);
	lua_pushliteral(L, "CORRUPT");
	return 3;
}

/* Read key into the scratch buffer: 0, INSTATE_NOTFOUND or an error. */
static int read_rec(lns *n, const char *key, size_t klen, instate_buf *val, instate_meta *meta)
{
	instate_txn *txn;
	int own, rc = op_begin(n, 0, &txn, &own);
	if (rc)
		return rc;
	rc = instate_get(txn, n->ns, key, klen, val, meta);
	if (own)
		instate_txn_abort(txn);
	return rc;
}

static int l_ns_get(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	size_t klen;
	const char *key = linstate_check_key(L, 2, &klen);
	instate_buf *kv;
	int rc, nres;

	lua_settop(L, 3);
	kv = linstate_kv_take(L);                                      /* 4 */
	rc = read_rec(n, key, klen, &kv[1], NULL);
	if (rc) {
		linstate_kv_give(L, kv);
		if (rc == INSTATE_NOTFOUND) {
			lua_settop(L, 3);
			return 1;
		}
		return linstate_fail(L, rc, linstate_key_context(L, "cannot read", key, klen));
	}
	nres = push_decoded(L, &kv[1], key, klen);
	linstate_kv_give(L, kv);
	return nres;
}

static int l_ns_has(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	size_t klen;
	const char *key = linstate_check_key(L, 2, &klen);
	int rc = read_rec(n, key, klen, NULL, NULL);
	if (rc && rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, linstate_key_context(L, "cannot read", key, klen));
	lua_pushboolean(L, rc == 0);
	return 1;
}

static int l_ns_ttl(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	size_t klen;
	const char *key = linstate_check_key(L, 2, &klen);
	instate_meta meta;
	int rc = read_rec(n, key, klen, NULL, &meta);
	if (rc == INSTATE_NOTFOUND) {
		lua_pushnil(L);
		return 1;
	}
	if (rc)
		return linstate_fail(L, rc, linstate_key_context(L, "cannot read", key, klen));
	if (!meta.expires_ms)
		lua_pushboolean(L, 0);
	else
		/* in floats: two int64 times can be further apart than int64 holds */
		lua_pushnumber(L, ((lua_Number)meta.expires_ms - (lua_Number)instate_clock_now())
			/ 1000.0);
	return 1;
}

typedef struct put_args {
	const char *key;
	size_t klen;
	const char *val;
	size_t vlen;
	instate_meta meta;
	unsigned flags;
} put_args;

static int do_put(instate_txn *txn, lns *n, void *ud)
{
	put_args *a = ud;
	return instate_put(txn, n->ns, a->key, a->klen, a->val, a->vlen, &a->meta, a->flags);
}

static int do_del(instate_txn *txn, lns *n, void *ud)
{
	put_args *a = ud;
	return instate_del(txn, n->ns, a->key, a->klen);
}

/* The root name of a value in error messages: the key when it reads well. */
static const char *value_root(const char *key, size_t klen)
{
	size_t i;
	if (klen > 64)
		return "value";
	for (i = 0; i < klen; i++)
		if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] >= 0x7f)
			return "value";
	return key;
}

const char *linstate_key_context(lua_State *L, const char *what, const char *key, size_t klen)
{
	if (value_root(key, klen) == key) {
		/* key need not be NUL-terminated (a cursor's buffer) */
		lua_pushfstring(L, "%s key '", what);
		lua_pushlstring(L, key, klen);
		lua_pushliteral(L, "'");
		lua_concat(L, 3);
		return lua_tostring(L, -1);
	}
	return lua_pushfstring(L, "%s a binary key of %d bytes", what, (int)klen);
}

/* The option 'metatables' of ns:set/add's opts at idx (checked already). */
static unsigned put_enc_flags(lua_State *L, int idx)
{
	unsigned f = 0;

	if (lua_type(L, idx) != LUA_TTABLE)
		return 0;
	lua_getfield(L, idx, "metatables");
	if (!lua_isnil(L, -1))
		f = linstate_opt_metatables(L, -1, idx);
	lua_pop(L, 1);
	return f;
}

static int ns_put(lua_State *L, unsigned flags, int is_add)
{
	lns *n = linstate_checkns(L, 1);
	put_args a;
	int rc;

	a.key = linstate_check_key(L, 2, &a.klen);
	luaL_checkany(L, 3);
	linstate_check_put_opts(L, 4, &a.meta, 0);
	a.flags = flags;
	if (lua_isnil(L, 3) && !is_add) {
		rc = linstate_run_write(L, n, do_del, &a);
		if (rc && rc != INSTATE_NOTFOUND)
			return ns_fail(L, n, rc, "cannot delete");
		lua_pushboolean(L, 1);
		return 1;
	}
	a.val = linstate_encode_flags(L, 3, value_root(a.key, a.klen), &a.vlen,
	                              n->store->enc_flags | put_enc_flags(L, 4));
	rc = linstate_run_write(L, n, do_put, &a);
	if (rc == INSTATE_EXISTS) {
		lua_pushboolean(L, 0);
		return 1;
	}
	if (rc)
		return ns_fail(L, n, rc, "cannot write");
	lua_pushboolean(L, 1);
	return 1;
}

static int l_ns_set(lua_State *L)
{
	return ns_put(L, 0, 0);
}

static int l_ns_add(lua_State *L)
{
	luaL_argcheck(L, !lua_isnil(L, 3), 3, "value expected (add cannot store nil)");
	return ns_put(L, INSTATE_NOOVERWRITE, 1);
}

static int l_ns_delete(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	put_args a;
	int rc;
	a.key = linstate_check_key(L, 2, &a.klen);
	rc = linstate_run_write(L, n, do_del, &a);
	if (rc && rc != INSTATE_NOTFOUND)
		return ns_fail(L, n, rc, "cannot delete");
	lua_pushboolean(L, rc == 0);
	return 1;
}

typedef struct expire_args {
	const char *key;
	size_t klen;
	int64_t expires_ms;
} expire_args;

static int do_expire(instate_txn *txn, lns *n, void *ud)
{
	expire_args *a = ud;
	return instate_set_expiry(txn, n->ns, a->key, a->klen, a->expires_ms);
}

static int l_ns_expire(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	expire_args a;
	int rc;
	a.key = linstate_check_key(L, 2, &a.klen);
	a.expires_ms = linstate_ttl_to_expiry(L, 3, luaL_checknumber(L, 3), 1);
	rc = linstate_run_write(L, n, do_expire, &a);
	if (rc && rc != INSTATE_NOTFOUND)
		return ns_fail(L, n, rc, "cannot expire");
	lua_pushboolean(L, rc == 0);
	return 1;
}

static int do_count(instate_txn *txn, lns *n, void *ud)
{
	return instate_count(txn, n->ns, ud);
}

static int l_ns_count(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	uint64_t count = 0;
	instate_txn *txn;
	int own, rc = op_begin(n, 0, &txn, &own);
	if (rc == 0) {
		rc = do_count(txn, n, &count);
		if (own)
			instate_txn_abort(txn);
	}
	if (rc)
		return linstate_fail(L, rc, "cannot count");
	lua_pushinteger(L, (lua_Integer)count);
	return 1;
}

/* ns:_count_hint() -> n: the records stored, expired ones included, in
 * O(1) (instate_count_hint); 0 when it cannot tell. The defstate layer sizes
 * its tables with it before setup's read. */
static int l_ns_count_hint(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	uint64_t count = 0;
	instate_txn *txn;
	int own, rc = op_begin(n, 0, &txn, &own);
	if (rc == 0) {
		if (instate_count_hint(txn, n->ns, &count) || count > INT_MAX)
			count = 0;
		if (own)
			instate_txn_abort(txn);
	}
	lua_pushinteger(L, (lua_Integer)count);
	return 1;
}

static int do_clear(instate_txn *txn, lns *n, void *ud)
{
	return instate_clear(txn, n->ns, ud);
}

static int l_ns_clear(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	uint64_t removed = 0;
	int rc = linstate_run_write(L, n, do_clear, &removed);
	if (rc)
		return ns_fail(L, n, rc, "cannot clear");
	lua_pushinteger(L, (lua_Integer)removed);
	return 1;
}

/*
 * update and incr run Lua code between reading and writing, so they run
 * inside a transaction userdata (its finalizer aborts it if anything
 * raises). On a store-level namespace: store:transaction(rmw, ns, ...).
 */
static int rmw_body(lua_State *L, int is_incr);

/* Args: tx, ns(store-level), key, fn|delta, default|init */
static int rmw_in_tx(lua_State *L, int is_incr)
{
	ltxn *t = linstate_checktx(L, 1);
	lns *outer = linstate_checkns(L, 2);
	int nres;
	linstate_push_ns(L, outer->ns, t->store, t, 1);
	lua_replace(L, 2);
	nres = rmw_body(L, is_incr);
	/* A failure triple from the store-level call's own transaction: it
	 * ends without a commit (no revision for a write that did not happen). */
	if (nres == 3 && lua_isnil(L, -3))
		t->discard = 1;
	return nres;
}

static int l_rmw_update_tx(lua_State *L)
{
	return rmw_in_tx(L, 0);
}

static int l_rmw_incr_tx(lua_State *L)
{
	return rmw_in_tx(L, 1);
}

/* Stack: [1] ignored, [2] bound ns, [3] key, [4] fn|delta, [5] default|init. */
static int rmw_body(lua_State *L, int is_incr)
{
	lns *n = linstate_checkns(L, 2);
	size_t klen;
	const char *key = linstate_check_key(L, 3, &klen);
	instate_buf *kv;
	put_args a;
	int rc;

	lua_settop(L, 5);
	kv = linstate_kv_take(L);
	rc = instate_get(n->tx->txn, n->ns, key, klen, &kv[1], &a.meta);
	if (rc && rc != INSTATE_NOTFOUND) {
		linstate_kv_give(L, kv);
		return ns_fail(L, n, rc, linstate_key_context(L, "cannot read", key, klen));
	}
	if (rc == INSTATE_NOTFOUND) {
		a.meta.expires_ms = 0;
		a.meta.version = 0;
		lua_pushvalue(L, 5);
	} else if (push_decoded(L, &kv[1], key, klen) != 1) {
		linstate_kv_give(L, kv);
		return 3;   /* nil, msg, CORRUPT: as a record failing its checksum */
	}
	linstate_kv_give(L, kv);
	lua_replace(L, 6);
	/* old value (or default) now at 6 */
	if (is_incr) {
		if (lua_isnil(L, 6))
			lua_pushinteger(L, 0);
		else if (lua_type(L, 6) != LUA_TNUMBER)
			return luaL_error(L, "cannot incr key '%s': its value is a %s, not a number",
				key, luaL_typename(L, 6));
		else
			lua_pushvalue(L, 6);
		lua_pushvalue(L, 4);
		lua_arith(L, LUA_OPADD);
	} else {
		lua_pushvalue(L, 4);
		lua_pushvalue(L, 6);
		lua_call(L, 1, 1);
	}
	/* new value at 7 */
	a.key = key;
	a.klen = klen;
	a.flags = INSTATE_KEEPEXPIRY;
	if (lua_isnil(L, 7)) {
		rc = instate_del(n->tx->txn, n->ns, key, klen);
		if (rc == INSTATE_NOTFOUND)
			rc = 0;
	} else {
		a.val = linstate_encode_flags(L, 7, value_root(key, klen), &a.vlen,
		                              n->store->enc_flags);
		rc = instate_put(n->tx->txn, n->ns, key, klen, a.val, a.vlen, &a.meta, a.flags);
	}
	if (rc)
		return ns_fail(L, n, rc, "cannot write");
	lua_settop(L, 7);
	return 1;
}

static int ns_rmw(lua_State *L, int is_incr)
{
	lns *n = linstate_checkns(L, 1);
	size_t klen;
	linstate_check_key(L, 2, &klen);
	lua_settop(L, 4);
	if (is_incr) {
		if (lua_isnoneornil(L, 3)) {
			lua_pushinteger(L, 1);
			lua_replace(L, 3);
		}
		luaL_checknumber(L, 3);
		if (lua_isnoneornil(L, 4)) {
			lua_pushinteger(L, 0);
			lua_replace(L, 4);
		}
		luaL_checknumber(L, 4);
	} else {
		luaL_checktype(L, 3, LUA_TFUNCTION);
	}
	lua_settop(L, 4);
	if (n->tx) {
		if (n->tx->readonly)
			return luaL_error(L, "cannot write in a snapshot");
		/* [1] ns [2] ns [3] key [4] fn|delta [5] default|init */
		lua_pushvalue(L, 1);
		lua_insert(L, 1);
		return rmw_body(L, is_incr);
	}
	if (store_level_busy(n))
		return ns_fail(L, n, INSTATE_BUSY, is_incr ? "cannot incr" : "cannot update");
	/* store:transaction(rmw_in_tx, ns, key, fn|delta, default|init) */
	lcompat_getuservalue(L, 1, 1);         /* the store userdata */
	lua_pushvalue(L, lua_upvalueindex(1)); /* scratch upvalue for the C closure */
	lua_pushcclosure(L, is_incr ? l_rmw_incr_tx : l_rmw_update_tx, 1);
	lua_rotate(L, 1, 2);                   /* store, fn, ns, key, x, y */
	lua_pushcfunction(L, linstate_store_transaction);
	lua_insert(L, 1);
	lua_call(L, 6, LUA_MULTRET);
	return lua_gettop(L);
}

static int l_ns_update(lua_State *L)
{
	return ns_rmw(L, 0);
}

static int l_ns_incr(lua_State *L)
{
	return ns_rmw(L, 1);
}

/* ---- raw (already encoded) access for the defstate layer -------------- */

static int l_ns_get_encoded(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	size_t klen;
	const char *key = linstate_check_key(L, 2, &klen);
	instate_buf *kv = linstate_kv_take(L);
	instate_meta meta;
	int rc = read_rec(n, key, klen, &kv[1], &meta);
	if (rc) {
		linstate_kv_give(L, kv);
		if (rc == INSTATE_NOTFOUND) {
			lua_pushnil(L);
			return 1;
		}
		return linstate_fail(L, rc, linstate_key_context(L, "cannot read", key, klen));
	}
	lua_pushlstring(L, kv[1].data, kv[1].len);
	linstate_kv_give(L, kv);
	lua_pushinteger(L, (lua_Integer)meta.version);
	return 2;
}

static int l_ns_set_encoded(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	put_args a;
	int rc;
	a.key = linstate_check_key(L, 2, &a.klen);
	a.val = luaL_checklstring(L, 3, &a.vlen);
	linstate_check_put_opts(L, 4, &a.meta, 1);
	a.flags = 0;
	{
		char err[INSTATE_MP_ERRMAX];
		size_t off;
		if (instate_mp_validate(a.val, a.vlen, &off, err, sizeof err))
			return luaL_argerror(L, 3, lua_pushfstring(L, "not a valid encoding: %s", err));
	}
	rc = linstate_run_write(L, n, do_put, &a);
	if (rc)
		return ns_fail(L, n, rc, "cannot write");
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * ns:save_many(n, keys, values, versions [, writer | batch]) -> revision, written, nested
 *                                          | ticket (with a writer)
 *                                          | nil, msg, code
 *
 * The defstate layer's save_all in one call, on a store-level namespace:
 * the write transaction is its own. Every values[i] is encoded (canonical
 * map order, named keys[i] in errors; an entry cache of a tracked table,
 * instate._entries, gives that table's canonical encoding: lentries.c) before the transaction begins, into a
 * buffer this call owns, so an unstorable value raises with nothing begun
 * and no Lua code runs while the writer slot is held. Then, in one write
 * transaction, each record is written with versions[i] (or versions itself
 * when a number) unless it already holds these bytes and version
 * (INSTATE_IFCHANGED); the map growing runs the writes again (not the
 * encoding). Commits only when something was written.
 *
 * Inside a write transaction of this coroutine the save is a savepoint of
 * it (nested = true: nothing is durable until the outermost one commits);
 * inside another coroutine's it is BUSY. Returns the store's revision
 * after the save and the number of records written. Runtime failures
 * return the triple and write nothing.
 *
 * With a writer (lwriter.c) the encodings go into a batch of IFCHANGED
 * puts handed to the writer's thread, which compares and commits there:
 * the call returns the batch's ticket at once, or the triple of an earlier
 * batch's error (reported now; this batch is not submitted). With a Batch
 * (writer:batch()) the records are appended to its writes and the whole
 * is submitted to its writer as one save (on error the Batch is left as
 * it was). Inside a
 * write transaction of this store it raises (the writer would wait for
 * that transaction: nothing could be durable while it runs).
 */
typedef struct save_item {
	const char *key;
	size_t klen, off, vlen;
	uint32_t version;
} save_item;

static int save_puts(instate_txn *txn, lns *n, const save_item *items, lua_Integer count,
                     const char *bytes, lua_Integer *written, lua_Integer *failed)
{
	lua_Integer i;
	*written = 0;
	for (i = 0; i < count; i++) {
		const save_item *it = &items[i];
		instate_meta meta;
		int rc;
		meta.expires_ms = 0;
		meta.version = it->version;
		rc = instate_put(txn, n->ns, it->key, it->klen, bytes + it->off, it->vlen, &meta,
			INSTATE_IFCHANGED);
		if (rc == 0) {
			(*written)++;
		} else if (rc != INSTATE_EXISTS) {
			*failed = i;
			return rc;
		}
	}
	return 0;
}

/* Buffers up to this size stay with the Lua state for the next save. */
#define SAVE_KEEP_MAX ((size_t)8 << 20)

/* Hand the buffers of box back to the scratch, unless a save run by a
 * finalizer in the middle of this one already did (then box's __gc frees
 * them). */
static void save_giveback(lscratch *sc, instate_buf *box)
{
	int i;
	for (i = 0; i < 2; i++) {
		if (!sc->save[i].cap && box[i].cap <= SAVE_KEEP_MAX) {
			sc->save[i] = box[i];
			memset(&box[i], 0, sizeof box[i]);
		}
	}
}

/* save_many's encodings, as one batch, to the writer; with lb, appended
 * to that Batch's writes (another namespace's, e.g.) and submitted with
 * them. */
static int save_submit(lua_State *L, lns *n, instate_writer *w, lbatch *lb, lscratch *sc,
                       instate_buf *box, const save_item *items, lua_Integer count)
{
	instate_batch *b = NULL;
	char err[INSTATE_ERRMSG_MAX];
	uint64_t ticket = 0;
	size_t base = 0;
	lua_Integer i;
	int rc = 0;

	if (lb) {
		b = linstate_batch_of(L, lb);
		base = instate_batch_count(b);
	} else {
		rc = instate_batch_new(&b);
	}
	for (i = 0; rc == 0 && i < count; i++) {
		instate_meta meta;
		meta.expires_ms = 0;
		meta.version = items[i].version;
		rc = instate_batch_put(b, n->ns, items[i].key, items[i].klen,
			box[1].data + items[i].off, items[i].vlen, &meta, INSTATE_IFCHANGED);
	}
	save_giveback(sc, box);
	if (lb) {
		if (rc) {
			instate_batch_truncate(b, base);
			return linstate_fail(L, rc, "cannot queue the save");
		}
		return linstate_batch_submit(L, lb, base);
	}
	if (rc) {
		instate_batch_free(b);
		return linstate_fail(L, rc, "cannot queue the save");
	}
	err[0] = '\0';
	rc = instate_writer_submit(w, b, &ticket, err);
	if (rc) {
		instate_batch_free(b);
		return linstate_writer_fail(L, rc, err);
	}
	lua_pushinteger(L, (lua_Integer)ticket);
	return 1;
}

static int l_ns_save_many(lua_State *L)
{
	lns *n = linstate_checkns(L, 1);
	lua_Integer i, count = luaL_checkinteger(L, 2);
	lua_Integer version = 0, written = 0, failed = -1;
	int const_version, nested = 0, rc;
	lstore *st = n->store;
	lscratch *sc = SCRATCH(L);
	instate_buf *box;
	save_item *items;
	uint64_t rev;
	instate_writer *w = NULL;
	lbatch *lb = NULL;

	if (n->tx)
		return luaL_error(L, "save_many needs a store-level namespace");
	luaL_argcheck(L, count >= 0 && count <= INT32_MAX, 2, "count out of range");
	if (!lua_isnoneornil(L, 6)) {
		lb = linstate_tobatch(L, 6);
		if (!lb)
			w = linstate_checkwriter(L, 6);
		else if (!(w = lb->lw->w))
			return luaL_error(L, "writer is closed");
		if (st->cur)
			return luaL_error(L, "an async save cannot run inside a store transaction");
		/* Slot 2 (count, already read) anchors the writer from here on. */
		lua_pushvalue(L, 6);
		lua_replace(L, 2);
	}
	luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TTABLE);
	const_version = lua_type(L, 5) == LUA_TNUMBER;
	if (const_version)
		version = luaL_checkinteger(L, 5);
	else
		luaL_checktype(L, 5, LUA_TTABLE);
	lua_settop(L, 5);

	/* box[0]: the items, box[1]: their encodings; freed by the box's __gc.
	 * They are the last save's buffers, taken from the scratch: a save
	 * that a finalizer runs in the middle of this one finds none there
	 * and allocates its own. */
	box = linstate_newbufs(L, 2);                                  /* 6 */
	memcpy(box, sc->save, sizeof sc->save);
	memset(sc->save, 0, sizeof sc->save);
	box[0].len = box[1].len = 0;
	if (instate_buf_reserve(&box[0], (size_t)count * sizeof *items))
		return luaL_error(L, "not enough memory");
	for (i = 0; i < count; i++) {
		save_item *it;
		const char *val;
		size_t vlen;

		if (lua_rawgeti(L, 3, i + 1) != LUA_TSTRING)               /* 7 */
			return luaL_error(L, "save_many: keys[%I] is not a string", i + 1);
		lua_rawgeti(L, 4, i + 1);                                  /* 8 */
		if (!const_version) {
			lua_rawgeti(L, 5, i + 1);
			version = lua_tointeger(L, -1);
			lua_pop(L, 1);
		}
		it = (save_item *)box[0].data + i;
		it->key = lua_tolstring(L, 7, &it->klen);   /* anchored by keys */
		if (it->klen < 1 || it->klen > INSTATE_KEY_MAX)
			return luaL_error(L, "save_many: keys[%I] must be 1..%d bytes", i + 1,
				INSTATE_KEY_MAX);
		if (version < 0 || version > 0xffffffffLL)
			return luaL_error(L, "save_many: version of '%s' out of range", it->key);
		it->version = (uint32_t)version;
		/* A big tracked table comes as its entry cache (lentries.c):
		 * the bytes it assembles are its canonical encoding. */
		val = NULL;
		if (lua_type(L, 8) == LUA_TUSERDATA)
			val = linstate_entries_encode(L, 8, it->key, st->enc_flags, &vlen);
		if (!val)
			val = linstate_encode_flags(L, 8, it->key, &vlen,
			                            LINSTATE_ENC_CANONICAL | st->enc_flags);
		if (instate_buf_reserve(&box[1], vlen))
			return luaL_error(L, "not enough memory");
		memcpy(box[1].data + box[1].len, val, vlen);
		it->off = box[1].len;
		it->vlen = vlen;
		box[1].len += vlen;
		lua_settop(L, 6);
	}
	items = (save_item *)box[0].data;

	if (w)
		return save_submit(L, n, w, lb, sc, box, items, count);
	if (st->cur && st->owner != L) {
		rc = INSTATE_BUSY;
	} else if (st->cur) {
		/* a savepoint of this coroutine's innermost transaction */
		instate_txn *txn;
		nested = 1;
		rc = instate_txn_begin(st->s, st->cur->txn, 0, &txn);
		if (rc == 0) {
			rc = save_puts(txn, n, items, count, box[1].data, &written, &failed);
			if (rc == 0 && written > 0)
				rc = instate_txn_commit(txn);
			else
				instate_txn_abort(txn);
		}
		if (rc == INSTATE_RETRY) {
			/* the map grew: the enclosing transaction runs again */
			linstate_txn_mark_retry(st->cur);
			lua_pushlightuserdata(L, (void *)&linstate_retry_sentinel);
			return lua_error(L);
		}
		if (rc == 0)
			rc = instate_store_revision(st->s, &rev);
	} else {
		for (;;) {
			instate_txn *txn;
			rc = instate_txn_begin(st->s, NULL, 0, &txn);
			if (rc)
				break;
			rev = instate_txn_revision(txn);
			rc = save_puts(txn, n, items, count, box[1].data, &written, &failed);
			if (rc == 0 && written > 0) {
				rc = instate_txn_commit(txn);
			} else {
				instate_txn_abort(txn);
				rev--;              /* nothing committed */
			}
			if (rc != INSTATE_RETRY)
				break;
		}
	}
	save_giveback(sc, box);
	if (rc) {
		if (failed >= 0)
			return linstate_fail(L, rc, lua_pushfstring(L, "cannot save '%s'",
				items[failed].key));
		return linstate_fail(L, rc, "cannot save");
	}
	lua_pushinteger(L, (lua_Integer)rev);
	lua_pushinteger(L, written);
	lua_pushboolean(L, nested);
	return 3;
}

static int ns_pairs(lua_State *L, int encoded)
{
	lns *n = linstate_checkns(L, 1);
	size_t plen = 0;
	const char *prefix = luaL_optlstring(L, 2, NULL, &plen);

	if (!linstate_iter_open(L, n, 1, prefix, plen, encoded))
		return 3;
	/* generic for: f, state, control, closing value */
	lua_pushvalue(L, lua_upvalueindex(2));
	lua_pushvalue(L, -2);
	lua_pushnil(L);
	lua_pushvalue(L, -4);
	return 4;
}

static int l_ns_pairs(lua_State *L)
{
	return ns_pairs(L, 0);
}

static int l_ns_pairs_encoded(lua_State *L)
{
	return ns_pairs(L, 1);
}

/*
 * ns:get_all_encoded([prefix [, opts]]) -> bytes, versions [, values]
 *
 * Every live record in one snapshot and one call: the defstate layer's
 * start-up read. bytes maps key -> stored MessagePack; versions maps key ->
 * record version, listing only versions other than opts.version_default
 * (default: list all). With opts.decode, values maps key -> decoded value
 * (a record that does not decode is left out of values, so the caller can
 * report it when it needs it). The iterator userdata owns the snapshot, so
 * raising (out of memory) midway leaks nothing.
 */
static int l_ns_get_all_encoded(lua_State *L)
{
	static const char *const names[] = { "decode", "version_default", NULL };
	instate_buf *kv;
	lns *n = linstate_checkns(L, 1);
	size_t plen = 0;
	const char *prefix = luaL_optlstring(L, 2, NULL, &plen);
	lua_Integer vdef = -1;
	int decode = 0;
	liter *it;
	int rc;

	lua_settop(L, 3);
	if (!lua_isnil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		linstate_check_opt_names(L, 3, names);
		decode = linstate_opt_bool(L, 3, "decode", 0);
		vdef = linstate_opt_int(L, 3, "version_default", -1, 0, 0xffffffffLL);
	}
	if (!(it = linstate_iter_open(L, n, 1, prefix, plen, 1)))   /* 4 */
		return 3;
	lua_newtable(L);            /* 5 bytes */
	lua_newtable(L);            /* 6 versions */
	lua_newtable(L);            /* 7 values */
	kv = linstate_kv_take(L);   /* 8 */
	for (;;) {
		instate_meta meta;
		rc = instate_cursor_next(it->cur, &kv[0], &kv[1], &meta);
		if (rc)
			break;
		lua_pushlstring(L, kv[0].data, kv[0].len);              /* 9 key */
		lua_pushvalue(L, 9);
		lua_pushlstring(L, kv[1].data, kv[1].len);
		lua_rawset(L, 5);
		if ((lua_Integer)meta.version != vdef) {
			lua_pushvalue(L, 9);
			lua_pushinteger(L, (lua_Integer)meta.version);
			lua_rawset(L, 6);
		}
		if (decode) {
			if (linstate_decode(L, kv[1].data, kv[1].len))
				lua_rawset(L, 7);   /* key 9, value 10 */
			else
				lua_pop(L, 1);      /* the message */
		}
		lua_settop(L, 8);
	}
	linstate_iter_close(it);
	if (rc == INSTATE_CORRUPT && kv[0].len) {
		linstate_key_context(L, "cannot read", kv[0].data, kv[0].len);
		linstate_kv_give(L, kv);
		return linstate_fail(L, rc, lua_tostring(L, -1));
	}
	linstate_kv_give(L, kv);
	if (rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, "cannot read");
	lua_settop(L, decode ? 7 : 6);
	return decode ? 3 : 2;
}

/*
 * ns:get_all_objects(mt, template, slot, version [, fpslot]) -> objects, count
 *
 * The defstate layer's start-up read, in one snapshot and one call: for
 * every live record with this record version whose value decodes, an
 * object { template[1], ..., [slot] = value, name = key } with metatable
 * mt, and with fpslot (1..64, if given) set to the fingerprint of a table
 * value, taken by the decoder in its pass over the bytes
 * (linstate_decode_print(), when they tell it); objects maps key ->
 * object, and key -> false for the other records (another version, or a
 * value that does not decode: the caller reads those itself and reports
 * them); count is the number of objects. Runs no Lua code. The iterator
 * userdata owns the snapshot, so raising (out of memory) midway leaks
 * nothing.
 *
 * Where that pays (LCOMPAT_GC_PAUSE_BULK: the incremental-only Luas), the
 * collector is stopped while the objects are built (lcompat_gc_pause: only
 * if it runs, restarted as it was, also when the build raises): the build
 * makes no garbage, and collecting during it marks the growing heap over
 * and over. On 5.4 it runs: see lcompat.h.
 *
 * The objects table is sized for every record at once (instate_count_hint):
 * grown from empty, a table of 100k entries is rehashed 17 times.
 */
static int ns_build_objects(lua_State *L)
{
	instate_buf *kv;
	lns *n = linstate_checkns(L, 1);
	lua_Integer slot = lua_tointeger(L, 4), version = lua_tointeger(L, 5), count = 0;
	lua_Integer fpslot = lua_tointeger(L, 6);
	int j, ntpl = (int)lua_rawlen(L, 3), narr, key, rc;
	uint64_t hint;
	liter *it;

	lua_settop(L, 5);           /* fpslot read: the stack as without it */
	narr = ntpl > (int)slot ? ntpl : (int)slot;
	if (narr < (int)fpslot)
		narr = (int)fpslot;
	if (!(it = linstate_iter_open(L, n, 1, NULL, 0, 1)))   /* 6 */
		return 3;
	if (instate_count_hint(n->tx ? n->tx->txn : it->own, n->ns, &hint) || hint > INT_MAX)
		hint = 0;
	lua_createtable(L, 0, (int)hint); /* 7 key -> object or false */
	lua_pushliteral(L, "name"); /* 8 */
	kv = linstate_kv_take(L);   /* 9 */
	/* 10..9+ntpl: the template's values, then per record key, value, object */
	luaL_checkstack(L, ntpl + 8, NULL);
	for (j = 1; j <= ntpl; j++)
		lua_rawgeti(L, 3, j);
	key = 10 + ntpl;
	for (;;) {
		instate_meta meta;
		uint64_t print = 0;
		int has = 0;
		rc = instate_cursor_next(it->cur, &kv[0], &kv[1], &meta);
		if (rc == INSTATE_CORRUPT) {
			/* a damaged record (its checksum): left to its defstate, which
			 * reads it and reports it by name; one whose key is damaged
			 * too cannot be named here (store:check() lists it) */
			if (kv[0].len) {
				lua_pushlstring(L, kv[0].data, kv[0].len);
				lua_pushboolean(L, 0);
				lua_rawset(L, 7);
			}
			continue;
		}
		if (rc)
			break;
		lua_pushlstring(L, kv[0].data, kv[0].len);              /* key */
		if ((lua_Integer)meta.version == version &&
		    (fpslot ? linstate_decode_print(L, kv[1].data, kv[1].len, &print, &has)
		            : linstate_decode(L, kv[1].data, kv[1].len))) { /* key+1 value */
			lua_createtable(L, narr, 1);                        /* key+2 object */
			for (j = 1; j <= ntpl; j++) {
				lua_pushvalue(L, 9 + j);
				lua_rawseti(L, key + 2, j);
			}
			lua_pushvalue(L, 8);
			lua_pushvalue(L, key);
			lua_rawset(L, key + 2);
			lua_pushvalue(L, 2);
			lua_setmetatable(L, key + 2);
			if (fpslot && has && lua_type(L, key + 1) == LUA_TTABLE) {
				push_print(L, print, 0);
				lua_rawseti(L, key + 2, fpslot);
			}
			lua_insert(L, key + 1);                             /* object, value */
			lua_rawseti(L, key + 1, slot);
			lua_rawset(L, 7);                                   /* key, object */
			count++;
		} else {
			/* another version, or corrupt (the message is at key+1) */
			lua_settop(L, key);
			lua_pushboolean(L, 0);
			lua_rawset(L, 7);
		}
		lua_settop(L, key - 1);
	}
	linstate_kv_give(L, kv);
	linstate_iter_close(it);
	if (rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, "cannot read");
	lua_settop(L, 7);
	lua_pushinteger(L, count);
	return 2;
}

static int l_ns_get_all_objects(lua_State *L)
{
	lua_Integer slot;
	int paused, status;

	linstate_checkns(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	luaL_checktype(L, 3, LUA_TTABLE);
	slot = luaL_checkinteger(L, 4);
	luaL_argcheck(L, slot >= 1 && slot <= 64, 4, "slot must be 1..64");
	luaL_checkinteger(L, 5);
	luaL_argcheck(L, lua_rawlen(L, 3) <= 64, 3, "template longer than 64");
	slot = luaL_optinteger(L, 6, 0);
	luaL_argcheck(L, slot >= 0 && slot <= 64, 6, "fpslot must be 1..64");
	lua_settop(L, 6);
	if (!LCOMPAT_GC_PAUSE_BULK || !(paused = lcompat_gc_pause(L)))
		return ns_build_objects(L);
	lua_pushvalue(L, lua_upvalueindex(1));   /* the scratch, as for any method */
	lua_pushcclosure(L, ns_build_objects, 1);
	lua_insert(L, 1);
	status = lua_pcall(L, 6, LUA_MULTRET, 0);
	lcompat_gc_resume(L, paused);
	if (status != LUA_OK)
		return lua_error(L);
	return lua_gettop(L);
}

static int l_ns_tostring(lua_State *L)
{
	lns *n = linstate_tons(L, 1);
	size_t len;
	lua_pushfstring(L, "instate.Namespace (%s)", instate_ns_name(n->ns, &len));
	return 1;
}

static const luaL_Reg ns_methods[] = {
	{ "get", l_ns_get },
	{ "set", l_ns_set },
	{ "add", l_ns_add },
	{ "delete", l_ns_delete },
	{ "has", l_ns_has },
	{ "update", l_ns_update },
	{ "incr", l_ns_incr },
	{ "ttl", l_ns_ttl },
	{ "expire", l_ns_expire },
	{ "count", l_ns_count },
	{ "_count_hint", l_ns_count_hint },
	{ "clear", l_ns_clear },
	{ "get_encoded", l_ns_get_encoded },
	{ "set_encoded", l_ns_set_encoded },
	{ "save_many", l_ns_save_many },
	{ "get_all_encoded", l_ns_get_all_encoded },
	{ "get_all_objects", l_ns_get_all_objects },
	{ NULL, NULL }
};

void linstate_open_ns(lua_State *L, int scratch)
{
	/* The class behind every name's fields (see linstate_ns_marker). */
	luaL_newmetatable(L, LINSTATE_NS_MT);
	lua_newtable(L);
	lua_pushvalue(L, scratch);
	luaL_setfuncs(L, ns_methods, 1);
	/* pairs and pairs_encoded close over scratch and the iterator step */
	lua_pushvalue(L, scratch);
	lua_pushvalue(L, scratch);
	lua_pushcclosure(L, linstate_iter_next, 1);
	lua_pushcclosure(L, l_ns_pairs, 2);
	lua_setfield(L, -2, "pairs");
	lua_pushvalue(L, scratch);
	lua_pushvalue(L, scratch);
	lua_pushcclosure(L, linstate_iter_next, 1);
	lua_pushcclosure(L, l_ns_pairs_encoded, 2);
	lua_setfield(L, -2, "pairs_encoded");
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, NS_MTS_KEY);
}
