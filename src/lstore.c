/*
 * lstore.c - Lua binding of stores, transactions, namespaces and iterators.
 *
 * Lifetimes. A store userdata keeps a list of its live children
 * (transactions and iterators that own a core transaction). Closing the
 * store, explicitly or by GC, first ends every child: write transactions are
 * aborted innermost first (never committed), iterators are closed. Children
 * keep their parents alive through user values, so a child never outlives
 * the memory of its parent whatever order the collector picks.
 *
 * Raising. A core write transaction held in a C local must never meet a
 * Lua error (its writer slot would stay taken). Single-call writes on a
 * store-level namespace therefore do all Lua work (argument checks,
 * encoding) before beginning and decode only after ending; operations that
 * run Lua code inside a transaction (update, incr) use a transaction
 * userdata, whose finalizer aborts it.
 *
 * Map growth. A write may fail with INSTATE_RETRY: the core grew the map
 * and aborted the whole transaction. Single calls just run again;
 * store:transaction() runs its function again (documented in README).
 */
#include "linstate.h"
#include "instate_mpack.h"

#include <errno.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

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
} lstore;

struct ltxn {
	lchild link;                /* first member: lchild* <-> ltxn* */
	instate_txn *txn;           /* NULL once ended */
	lstore *store;
	ltxn *parent;               /* enclosing write transaction (savepoint) */
	liter *iters;               /* open iterators running in this txn */
	int readonly;
	int retry;                  /* the map grew: run the whole thing again */
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

/* Per-Lua-state scratch buffers (upvalue 1 of every function here). */
typedef struct lscratch {
	instate_buf key, val;
} lscratch;

#define SCRATCH(L) ((lscratch *)lua_touserdata((L), lua_upvalueindex(1)))

/* Registry field: weak-valued map from ltxn* to its userdata. */
#define TXNS_KEY "instate.transactions"

/* The error value that unwinds a transaction function for a re-run. */
static const char retry_sentinel = 0;

/*
 * Namespace handles get one metatable per namespace name, so that both
 * ns.name and method lookups are plain table lookups in the VM (a C __index
 * function cost a call and a type check on every method call):
 *
 *   ns --metatable--> { __index = fields, __tostring, __name, [&ns_marker] }
 *   fields = { name = "<name>" } --metatable--> registry[LINSTATE_NS_MT]
 *   registry[LINSTATE_NS_MT] = { __index = methods, ... }
 *
 * The metatables are cached by name in a weak-valued registry table, and
 * ns_marker (a light userdata key no script can forge) tells handles apart
 * from other userdata.
 */
static const char ns_marker = 0;
#define NS_MTS_KEY "instate.namespace_metatables"

/* The same kind of key in the other classes' metatables: checking a handle
 * is then one lookup in its own metatable (luaL_checkudata looks the class
 * up in the registry by name first), which counts on hot paths such as the
 * iterator step and defstate's store:last_commit() per declaration. */
static const char store_marker = 0, txn_marker = 0, iter_marker = 0;

/* ------------------------------------------------------------------------ */
/* Children                                                                 */
/* ------------------------------------------------------------------------ */

static void child_link(lstore *st, lchild *c, void (*close)(lchild *))
{
	c->close = close;
	c->prev = NULL;
	c->next = st->children;
	if (st->children)
		st->children->prev = c;
	st->children = c;
}

static void child_unlink(lstore *st, lchild *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		st->children = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void iter_close(liter *it)
{
	if (!it->cur && !it->own)
		return;
	instate_cursor_close(it->cur);
	it->cur = NULL;
	if (it->own) {
		instate_txn_abort(it->own);
		it->own = NULL;
	}
	if (it->tx) {
		liter **pp = &it->tx->iters;
		while (*pp && *pp != it)
			pp = &(*pp)->next_in_tx;
		if (*pp)
			*pp = it->next_in_tx;
		it->tx = NULL;
	}
	if (it->linked) {
		child_unlink(it->store, &it->link);
		it->linked = 0;
	}
}

static void iter_close_child(lchild *c)
{
	iter_close((liter *)c);
}

/* End one transaction (commit or abort), after its iterators. */
static int txn_end(ltxn *t, int commit)
{
	int rc = 0;
	while (t->iters)
		iter_close(t->iters);
	if (t->txn) {
		if (commit)
			rc = instate_txn_commit(t->txn);
		else
			instate_txn_abort(t->txn);
		t->txn = NULL;
	}
	if (!t->readonly && t->store->cur == t) {
		t->store->cur = t->parent;
		if (!t->parent)
			t->store->owner = NULL;
	}
	if (t->linked) {
		child_unlink(t->store, &t->link);
		t->linked = 0;
	}
	return rc;
}

/* Abort t and, first, every savepoint opened inside it. */
static void txn_abort_tree(ltxn *t)
{
	if (!t->txn)
		return;
	if (!t->readonly) {
		ltxn *c = t->store->cur;
		while (c && c != t) {
			ltxn *up = c->parent;
			txn_end(c, 0);
			c = up;
		}
	}
	txn_end(t, 0);
}

static void txn_close_child(lchild *c)
{
	txn_abort_tree((ltxn *)c);
}

static void store_close(lstore *st)
{
	while (st->children)
		st->children->close(st->children);
	if (st->s) {
		instate_store_close(st->s);
		st->s = NULL;
	}
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */
/* ------------------------------------------------------------------------ */

/* The handle at idx whose metatable holds marker (luaL_checkudata's
 * contract, type error included). */
static void *check_handle(lua_State *L, int idx, const char *marker, const char *tname)
{
	void *p = lua_touserdata(L, idx);

	if (p && lua_type(L, idx) == LUA_TUSERDATA && lua_getmetatable(L, idx)) {
		int ok = lua_rawgetp(L, -1, marker) == LUA_TBOOLEAN;
		lua_pop(L, 2);
		if (ok)
			return p;
	}
	luaL_typeerror(L, idx, tname);
	return NULL;
}

/* The namespace handle at idx, open or not; raises a type error. */
static lns *to_ns(lua_State *L, int idx)
{
	return check_handle(L, idx, &ns_marker, LINSTATE_NS_MT);
}

#define to_store(L, idx) ((lstore *)check_handle((L), (idx), &store_marker, LINSTATE_STORE_MT))
#define to_txn(L, idx) ((ltxn *)check_handle((L), (idx), &txn_marker, LINSTATE_TXN_MT))
#define to_iter(L, idx) ((liter *)check_handle((L), (idx), &iter_marker, LINSTATE_ITER_MT))

static lstore *check_lstore(lua_State *L, int idx)
{
	lstore *st = to_store(L, idx);
	if (!st->s)
		luaL_error(L, "store is closed");
	return st;
}

instate_store *linstate_checkstore(lua_State *L, int idx)
{
	return check_lstore(L, idx)->s;
}

static ltxn *check_tx(lua_State *L, int idx)
{
	ltxn *t = to_txn(L, idx);
	if (!t->txn)
		luaL_error(L, "transaction has ended");
	return t;
}


static lns *check_ns(lua_State *L, int idx)
{
	lns *n = to_ns(L, idx);
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

static const char *check_key(lua_State *L, int idx, size_t *len)
{
	const char *k = luaL_checklstring(L, idx, len);
	if (*len < 1 || *len > INSTATE_KEY_MAX)
		luaL_argerror(L, idx, lua_pushfstring(L,
			"key must be 1..%d bytes, got %d", INSTATE_KEY_MAX, (int)*len));
	return k;
}

/* Raise if the table at idx has a key not in names (NULL-terminated). */
static void check_opt_names(lua_State *L, int idx, const char *const names[])
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int i, ok = 0;
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			const char *k = lua_tostring(L, -1);
			for (i = 0; names[i]; i++)
				if (strcmp(k, names[i]) == 0)
					ok = 1;
		}
		if (!ok) {
			const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
				: luaL_typename(L, -1);
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
		}
	}
}

static int opt_bool(lua_State *L, int idx, const char *name, int def)
{
	int v = def;
	lua_getfield(L, idx, name);
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be a boolean, got %s",
				name, luaL_typename(L, -1)));
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *name, lua_Integer def,
                           lua_Integer min, lua_Integer max)
{
	lua_Integer v = def;
	lua_getfield(L, idx, name);
	if (!lua_isnil(L, -1)) {
		int isint;
		v = lua_tointegerx(L, -1, &isint);
		if (!isint)
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be an integer, got %s",
				name, luaL_typename(L, -1)));
		if (v < min || v > max)
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' out of range (%I..%I)",
				name, min, max));
	}
	lua_pop(L, 1);
	return v;
}

/* Seconds from now (float, > 0) to an absolute expiry in ms. */
static int64_t ttl_to_expiry(lua_State *L, int argidx, lua_Number secs, int allow_zero)
{
	if (isnan(secs) || secs < 0 || (!allow_zero && secs == 0) || secs > 1e12)
		luaL_argerror(L, argidx, lua_pushfstring(L, "ttl must be a %s number of seconds",
			allow_zero ? "non-negative" : "positive"));
	if (secs == 0)
		return 0;
	{
		int64_t ms = (int64_t)ceil(secs * 1000.0);
		return instate_clock_now() + (ms > 0 ? ms : 1);
	}
}

/* Parse {ttl = s, version = v} at idx into meta. */
static void check_put_opts(lua_State *L, int idx, instate_meta *meta, int allow_version)
{
	static const char *const names[] = { "ttl", "version", NULL };
	static const char *const names_nv[] = { "ttl", NULL };
	meta->expires_ms = 0;
	meta->version = 0;
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	check_opt_names(L, idx, allow_version ? names : names_nv);
	lua_getfield(L, idx, "ttl");
	if (!lua_isnil(L, -1)) {
		if (!lua_isnumber(L, -1))
			luaL_argerror(L, idx, "option 'ttl' must be a number");
		meta->expires_ms = ttl_to_expiry(L, idx, lua_tonumber(L, -1), 0);
	}
	lua_pop(L, 1);
	if (allow_version)
		meta->version = (uint32_t)opt_int(L, idx, "version", 0, 0, 0xffffffffu);
}

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

/* Mark t and every enclosing transaction for a re-run. */
static void txn_mark_retry(ltxn *t)
{
	for (; t; t = t->parent)
		t->retry = 1;
}

/* After a namespace call failed with rc: for a namespace bound to a
 * transaction, RETRY (the map grew) raises the re-run sentinel; any other
 * failure returns the triple. A store-level call never sees RETRY here:
 * run_write runs it again itself. */
static int ns_fail(lua_State *L, lns *n, int rc, const char *what)
{
	if (rc == INSTATE_RETRY) {
		txn_mark_retry(n->tx);
		lua_pushlightuserdata(L, (void *)&retry_sentinel);
		return lua_error(L);
	}
	return linstate_fail(L, rc, what);
}

typedef int (*write_fn)(instate_txn *txn, lns *n, void *ud);

/*
 * Run fn in n's transaction; for a store-level namespace, in its own write
 * transaction, committed, and run again if the map had to grow. fn must not
 * raise. Returns 0 or an error code; INSTATE_EXISTS / INSTATE_NOTFOUND from
 * fn are returned after committing nothing.
 */
static int run_write(lua_State *L, lns *n, write_fn fn, void *ud)
{
	if (n->tx && n->tx->readonly)
		return luaL_error(L, "cannot write in a snapshot");
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

/* ------------------------------------------------------------------------ */
/* Store                                                                    */
/* ------------------------------------------------------------------------ */

static int l_open(lua_State *L)
{
	static const char *const names[] = { "readonly", "sync", "map_size", "max_size",
		"file_mode", "max_namespaces", "max_readers", "single_file", NULL };
	static const char *const syncs[] = { "full", "nometa", "none", NULL };
	size_t plen;
	const char *path = luaL_checklstring(L, 1, &plen);
	instate_options o;
	lstore *st;
	int rc;

	instate_options_init(&o);
	luaL_argcheck(L, plen > 0, 1, "path must not be empty");
	luaL_argcheck(L, strlen(path) == plen, 1, "path must not contain a NUL byte");
	if (!lua_isnoneornil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		check_opt_names(L, 2, names);
		o.readonly = opt_bool(L, 2, "readonly", 0);
		o.single_file = opt_bool(L, 2, "single_file", 0);
		lua_getfield(L, 2, "sync");
		if (!lua_isnil(L, -1)) {
			int i;
			const char *s = lua_tostring(L, -1);
			if (lua_type(L, -1) != LUA_TSTRING)
				luaL_argerror(L, 2, "option 'sync' must be \"full\", \"nometa\" or \"none\"");
			for (i = 0; syncs[i] && strcmp(s, syncs[i]); i++)
				;
			if (!syncs[i])
				luaL_argerror(L, 2, lua_pushfstring(L,
					"option 'sync' must be \"full\", \"nometa\" or \"none\", got \"%s\"", s));
			o.sync = (instate_sync)i;
		}
		lua_pop(L, 1);
		o.map_size = (uint64_t)opt_int(L, 2, "map_size", (lua_Integer)o.map_size,
			4096, LUA_MAXINTEGER);
		o.max_size = (uint64_t)opt_int(L, 2, "max_size", (lua_Integer)o.max_size,
			4096, LUA_MAXINTEGER);
		o.file_mode = (unsigned)opt_int(L, 2, "file_mode", o.file_mode, 0, 07777);
		o.max_namespaces = (unsigned)opt_int(L, 2, "max_namespaces", o.max_namespaces,
			1, 32000);
		o.max_readers = (unsigned)opt_int(L, 2, "max_readers", o.max_readers, 1, 1 << 20);
		if (o.max_size < o.map_size)
			o.max_size = o.map_size;
	}

	/* Created closed, so a failed open leaves nothing to clean up. */
	st = lcompat_newuserdata(L, sizeof *st, 1);
	memset(st, 0, sizeof *st);
	luaL_setmetatable(L, LINSTATE_STORE_MT);
	lua_pushvalue(L, 1);
	lcompat_setuservalue(L, -2, 1);
	rc = instate_store_open(path, &o, &st->s);
	if (rc) {
		lua_pushfstring(L, "cannot open store '%s'", path);
		return linstate_fail(L, rc, lua_tostring(L, -1));
	}
	return 1;
}

static int l_store_close(lua_State *L)
{
	lstore *st = to_store(L, 1);
	store_close(st);
	return 0;
}

static int l_store_tostring(lua_State *L)
{
	lstore *st = to_store(L, 1);
	if (st->s)
		lua_pushfstring(L, "instate.Store (%s)", instate_store_path(st->s));
	else
		lua_pushliteral(L, "instate.Store (closed)");
	return 1;
}

static int l_store_path(lua_State *L)
{
	check_lstore(L, 1);
	lcompat_getuservalue(L, 1, 1);
	return 1;
}

static int l_store_revision(lua_State *L)
{
	uint64_t rev;
	int rc = instate_store_revision(check_lstore(L, 1)->s, &rev);
	if (rc)
		return linstate_fail(L, rc, "cannot read the revision");
	lua_pushinteger(L, (lua_Integer)rev);
	return 1;
}

/* store:last_commit(): changes whenever any process commits (no txn). */
static int l_store_last_commit(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)instate_store_last_commit(check_lstore(L, 1)->s));
	return 1;
}

static int l_store_stats(lua_State *L)
{
	instate_stats s;
	int rc = instate_store_stats(check_lstore(L, 1)->s, &s);
	if (rc)
		return linstate_fail(L, rc, "cannot read statistics");
	lua_createtable(L, 0, 9);
#define SETI(f) (lua_pushinteger(L, (lua_Integer)s.f), lua_setfield(L, -2, #f))
	SETI(map_size);
	SETI(max_size);
	SETI(used_bytes);
	SETI(page_size);
	SETI(namespaces);
	SETI(readers);
	SETI(max_readers);
	SETI(revision);
#undef SETI
	lua_pushboolean(L, s.readonly);
	lua_setfield(L, -2, "readonly");
	return 1;
}

static instate_ns_type check_ns_type(lua_State *L, int idx)
{
	static const char *const types[] = { "kv", "state", NULL };
	return luaL_checkoption(L, idx, "kv", types) == 0 ? INSTATE_NS_KV : INSTATE_NS_STATE;
}

static const char *ns_type_name(instate_ns_type t)
{
	return t == INSTATE_NS_STATE ? "state" : "kv";
}

/* Resolve a namespace handle by name; raises on misuse. */
static instate_ns *get_ns(lua_State *L, lstore *st, int nameidx, instate_ns_type type)
{
	size_t len;
	const char *name = luaL_checklstring(L, nameidx, &len);
	instate_ns *ns;
	int rc;

	if (len < 1 || len > INSTATE_NSNAME_MAX)
		luaL_argerror(L, nameidx, lua_pushfstring(L,
			"namespace name must be 1..%d bytes, got %d", INSTATE_NSNAME_MAX, (int)len));
	if (memchr(name, 0, len))
		luaL_argerror(L, nameidx, "namespace name must not contain a NUL byte");
	if (len >= 2 && name[0] == '_' && name[1] == '_')
		luaL_argerror(L, nameidx, lua_pushfstring(L,
			"namespace names starting with '__' are reserved ('%s')", name));
	rc = instate_ns_get(st->s, name, len, type, &ns);
	if (rc == INSTATE_TYPE) {
		instate_ns *any;
		if (instate_ns_get(st->s, name, len, INSTATE_NS_ANY, &any) == 0)
			return luaL_error(L, "namespace '%s' has type '%s', not '%s'", name,
				ns_type_name(instate_ns_type_of(any)), ns_type_name(type)), NULL;
	}
	if (rc) {
		linstate_fail(L, rc, lua_pushfstring(L, "cannot open namespace '%s'", name));
		lua_error(L);
	}
	return ns;
}

static int l_ns_tostring(lua_State *L);

/* Push the metatable of handles on namespace ns (see ns_marker). */
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
	lua_rawsetp(L, -2, &ns_marker);
	lua_pushlstring(L, name, len);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	lua_remove(L, -2);
}

/* Push a namespace userdata; owner (store or tx userdata) at owneridx. */
static void push_ns(lua_State *L, instate_ns *ns, lstore *st, ltxn *tx, int owneridx)
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

static int l_store_namespace(lua_State *L)
{
	lstore *st = check_lstore(L, 1);
	instate_ns *ns = get_ns(L, st, 2, check_ns_type(L, 3));
	push_ns(L, ns, st, NULL, 1);
	return 1;
}

/* Collect names as [len byte][name] in a buffer: no Lua call may raise
 * inside the core's callback. */
static int ns_list_collect(void *ud, const char *name, size_t len, instate_ns_type type)
{
	instate_buf *b = ud;
	(void)type;
	if (instate_buf_reserve(b, len + 1))
		return ENOMEM;
	b->data[b->len++] = (char)(unsigned char)(len - 1);
	memcpy(b->data + b->len, name, len);
	b->len += len;
	return 0;
}

static int l_store_namespaces(lua_State *L)
{
	lstore *st = check_lstore(L, 1);
	lscratch *sc = SCRATCH(L);
	instate_txn *txn;
	size_t off = 0;
	lua_Integer i = 0;
	int rc = instate_txn_begin(st->s, NULL, INSTATE_TXN_READ, &txn);
	if (rc)
		return linstate_fail(L, rc, "cannot list namespaces");
	sc->key.len = 0;
	rc = instate_ns_list(txn, ns_list_collect, &sc->key);
	instate_txn_abort(txn);
	if (rc)
		return linstate_fail(L, rc, "cannot list namespaces");
	lua_newtable(L);
	while (off < sc->key.len) {
		size_t len = (size_t)(unsigned char)sc->key.data[off] + 1;
		lua_pushlstring(L, sc->key.data + off + 1, len);
		lua_rawseti(L, -2, ++i);
		off += len + 1;
	}
	return 1;
}

static int do_drop(instate_txn *txn, lns *n, void *ud)
{
	return instate_drop(txn, n->ns, ud);
}

static int l_store_drop(lua_State *L)
{
	lstore *st = check_lstore(L, 1);
	lns n = { get_ns(L, st, 2, INSTATE_NS_ANY), st, NULL };
	int existed = 0;
	int rc = run_write(L, &n, do_drop, &existed);
	if (rc)
		return linstate_fail(L, rc, "cannot drop namespace");
	lua_pushboolean(L, existed);
	return 1;
}

static int do_purge(instate_txn *txn, lns *n, void *ud)
{
	(void)n;
	return instate_purge(txn, ud);
}

static int l_store_purge(lua_State *L)
{
	lstore *st = check_lstore(L, 1);
	lns n = { NULL, st, NULL };
	uint64_t removed = 0;
	int rc = run_write(L, &n, do_purge, &removed);
	if (rc)
		return linstate_fail(L, rc, "cannot purge");
	lua_pushinteger(L, (lua_Integer)removed);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* store:transaction(fn, ...) and store:snapshot(fn, ...)                   */
/* ------------------------------------------------------------------------ */

/*
 * Stack while running: 1 store, 2 fn, 3..n args, n+1 the transaction
 * userdata (at `base`), then fn's results. The continuation finishes the
 * transaction whether fn returned, raised or yielded in between.
 */
static int txn_start(lua_State *L, int readonly, int base);

static int txn_finish(lua_State *L, int status, lua_KContext ctx)
{
	int base = (int)ctx;
	ltxn *t = lua_touserdata(L, base);
	lstore *st = t->store;
	int nparent = t->parent != NULL;
	int readonly = t->readonly;

	if (status != LUA_OK && status != LUA_YIELD) {
		int is_retry = lua_touserdata(L, -1) == (void *)&retry_sentinel || t->retry;
		txn_abort_tree(t);
		if (is_retry && !nparent && st->s) {
			lua_settop(L, base - 1);
			return txn_start(L, readonly, base);
		}
		if (is_retry) {
			txn_mark_retry(t->parent);
			lua_pushlightuserdata(L, (void *)&retry_sentinel);
		}
		return lua_error(L);
	}
	if (!t->txn)
		return luaL_error(L, "transaction was closed before its function returned");
	if (t->retry) {
		/* fn caught the re-run error itself: the transaction is void. */
		txn_abort_tree(t);
		if (nparent) {
			txn_mark_retry(t->parent);
			lua_pushlightuserdata(L, (void *)&retry_sentinel);
			return lua_error(L);
		}
		lua_settop(L, base - 1);
		return txn_start(L, readonly, base);
	}
	{
		int rc;
		/* Savepoints opened inside fn and left open are aborted. */
		ltxn *c = st->cur;
		while (!readonly && c && c != t) {
			ltxn *up = c->parent;
			txn_end(c, 0);
			c = up;
		}
		rc = txn_end(t, 1);
		if (rc == INSTATE_RETRY) {
			if (nparent) {
				lua_pushlightuserdata(L, (void *)&retry_sentinel);
				return lua_error(L);
			}
			lua_settop(L, base - 1);
			return txn_start(L, readonly, base);
		}
		if (rc)
			return linstate_fail(L, rc, "cannot commit the transaction");
	}
	return lua_gettop(L) - base;
}

static int txn_start(lua_State *L, int readonly, int base)
{
	lstore *st = check_lstore(L, 1);
	ltxn *parent = NULL, *t;
	int i, rc, nargs = base - 3;

	if (!readonly && st->cur) {
		if (st->owner != L)
			return linstate_fail(L, INSTATE_BUSY,
				"cannot begin a transaction: another coroutine has one open");
		parent = st->cur;
	}
	t = lcompat_newuserdata(L, sizeof *t, 3);
	memset(t, 0, sizeof *t);
	t->store = st;
	t->readonly = readonly;
	t->parent = parent;
	luaL_setmetatable(L, LINSTATE_TXN_MT);
	lua_pushvalue(L, 1);
	lcompat_setuservalue(L, -2, 1);
	if (parent) {
		/* keep the parent's userdata alive while the savepoint is */
		lua_getfield(L, LUA_REGISTRYINDEX, TXNS_KEY);
		lua_rawgetp(L, -1, parent);
		lcompat_setuservalue(L, -3, 2);
		lua_pop(L, 1);
	}
	/* The coroutine stays alive while its transaction does, so st->owner
	 * can never name a new coroutine at a recycled address. */
	lua_pushthread(L);
	lcompat_setuservalue(L, -2, 3);
	rc = instate_txn_begin(st->s, parent ? parent->txn : NULL,
		readonly ? INSTATE_TXN_READ : 0, &t->txn);
	if (rc) {
		t->txn = NULL;
		return linstate_fail(L, rc, "cannot begin a transaction");
	}
	child_link(st, &t->link, txn_close_child);
	t->linked = 1;
	if (!readonly) {
		st->cur = t;
		st->owner = L;
		/* a weak-valued map from t to its userdata, so a savepoint can
		 * reach its parent's userdata without keeping it alive */
		lua_getfield(L, LUA_REGISTRYINDEX, TXNS_KEY);
		lua_pushvalue(L, -2);
		lua_rawsetp(L, -2, t);
		lua_pop(L, 1);
	}
	lua_pushvalue(L, 2);
	lua_pushvalue(L, base);
	for (i = 0; i < nargs; i++)
		lua_pushvalue(L, 3 + i);
	return txn_finish(L, lua_pcallk(L, nargs + 1, LUA_MULTRET, 0, (lua_KContext)base,
		txn_finish), (lua_KContext)base);
}

static int l_store_transaction(lua_State *L)
{
	check_lstore(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checkstack(L, lua_gettop(L) + 8, "too many arguments");
	return txn_start(L, 0, lua_gettop(L) + 1);
}

static int l_store_snapshot(lua_State *L)
{
	check_lstore(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checkstack(L, lua_gettop(L) + 8, "too many arguments");
	return txn_start(L, 1, lua_gettop(L) + 1);
}

/* ------------------------------------------------------------------------ */
/* Transaction handle                                                       */
/* ------------------------------------------------------------------------ */

static int l_tx_namespace(lua_State *L)
{
	ltxn *t = check_tx(L, 1);
	instate_ns *ns = get_ns(L, t->store, 2, check_ns_type(L, 3));
	push_ns(L, ns, t->store, t, 1);
	return 1;
}

static int l_tx_close(lua_State *L)
{
	ltxn *t = to_txn(L, 1);
	txn_abort_tree(t);
	return 0;
}


static int l_tx_revision(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)instate_txn_revision(check_tx(L, 1)->txn));
	return 1;
}

static int l_tx_tostring(lua_State *L)
{
	ltxn *t = to_txn(L, 1);
	lua_pushfstring(L, "instate.Transaction (%s)", !t->txn ? "ended"
		: t->readonly ? "snapshot" : "write");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Namespace                                                                */
/* ------------------------------------------------------------------------ */

/* Decode the value in the scratch buffer; on corruption return the triple. */
static const char *value_root(const char *key, size_t klen);

static int push_decoded(lua_State *L, const instate_buf *b, const char *key, size_t klen)
{
	if (linstate_decode(L, b->data, b->len))
		return 1;
	if (value_root(key, klen) == key)
		lua_pushfstring(L, "corrupt value at key '%s': %s", key, lua_tostring(L, -1));
	else
		lua_pushfstring(L, "corrupt value at a binary key of %d bytes: %s", (int)klen,
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
	lns *n = check_ns(L, 1);
	size_t klen;
	const char *key = check_key(L, 2, &klen);
	lscratch *sc = SCRATCH(L);
	int rc = read_rec(n, key, klen, &sc->val, NULL);
	if (rc == INSTATE_NOTFOUND) {
		lua_settop(L, 3);
		return 1;
	}
	if (rc)
		return linstate_fail(L, rc, "cannot read");
	return push_decoded(L, &sc->val, key, klen);
}

static int l_ns_has(lua_State *L)
{
	lns *n = check_ns(L, 1);
	size_t klen;
	const char *key = check_key(L, 2, &klen);
	int rc = read_rec(n, key, klen, NULL, NULL);
	if (rc && rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, "cannot read");
	lua_pushboolean(L, rc == 0);
	return 1;
}

static int l_ns_ttl(lua_State *L)
{
	lns *n = check_ns(L, 1);
	size_t klen;
	const char *key = check_key(L, 2, &klen);
	instate_meta meta;
	int rc = read_rec(n, key, klen, NULL, &meta);
	if (rc == INSTATE_NOTFOUND) {
		lua_pushnil(L);
		return 1;
	}
	if (rc)
		return linstate_fail(L, rc, "cannot read");
	if (!meta.expires_ms)
		lua_pushboolean(L, 0);
	else
		lua_pushnumber(L, (lua_Number)(meta.expires_ms - instate_clock_now()) / 1000.0);
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

static int ns_put(lua_State *L, unsigned flags, int is_add)
{
	lns *n = check_ns(L, 1);
	put_args a;
	int rc;

	a.key = check_key(L, 2, &a.klen);
	luaL_checkany(L, 3);
	check_put_opts(L, 4, &a.meta, 0);
	a.flags = flags;
	if (lua_isnil(L, 3) && !is_add) {
		rc = run_write(L, n, do_del, &a);
		if (rc && rc != INSTATE_NOTFOUND)
			return ns_fail(L, n, rc, "cannot delete");
		lua_pushboolean(L, 1);
		return 1;
	}
	a.val = linstate_encode(L, 3, value_root(a.key, a.klen), &a.vlen);
	rc = run_write(L, n, do_put, &a);
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
	lns *n = check_ns(L, 1);
	put_args a;
	int rc;
	a.key = check_key(L, 2, &a.klen);
	rc = run_write(L, n, do_del, &a);
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
	lns *n = check_ns(L, 1);
	expire_args a;
	int rc;
	a.key = check_key(L, 2, &a.klen);
	a.expires_ms = ttl_to_expiry(L, 3, luaL_checknumber(L, 3), 1);
	rc = run_write(L, n, do_expire, &a);
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
	lns *n = check_ns(L, 1);
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

static int do_clear(instate_txn *txn, lns *n, void *ud)
{
	return instate_clear(txn, n->ns, ud);
}

static int l_ns_clear(lua_State *L)
{
	lns *n = check_ns(L, 1);
	uint64_t removed = 0;
	int rc = run_write(L, n, do_clear, &removed);
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
	ltxn *t = check_tx(L, 1);
	lns *outer = check_ns(L, 2);
	push_ns(L, outer->ns, t->store, t, 1);
	lua_replace(L, 2);
	return rmw_body(L, is_incr) ;
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
	lns *n = check_ns(L, 2);
	size_t klen;
	const char *key = check_key(L, 3, &klen);
	lscratch *sc = SCRATCH(L);
	put_args a;
	int rc = instate_get(n->tx->txn, n->ns, key, klen, &sc->val, &a.meta);

	if (rc && rc != INSTATE_NOTFOUND)
		return ns_fail(L, n, rc, "cannot read");
	if (rc == INSTATE_NOTFOUND) {
		a.meta.expires_ms = 0;
		a.meta.version = 0;
		lua_pushvalue(L, 5);
	} else if (push_decoded(L, &sc->val, key, klen) != 1) {
		return lua_error(L); /* corrupt stored value: abort everything */
	}
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
		a.val = linstate_encode(L, 7, value_root(key, klen), &a.vlen);
		rc = instate_put(n->tx->txn, n->ns, key, klen, a.val, a.vlen, &a.meta, a.flags);
	}
	if (rc)
		return ns_fail(L, n, rc, "cannot write");
	lua_settop(L, 7);
	return 1;
}

static int ns_rmw(lua_State *L, int is_incr)
{
	lns *n = check_ns(L, 1);
	size_t klen;
	check_key(L, 2, &klen);
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
	/* store:transaction(rmw_in_tx, ns, key, fn|delta, default|init) */
	lcompat_getuservalue(L, 1, 1);         /* the store userdata */
	lua_pushvalue(L, lua_upvalueindex(1)); /* scratch upvalue for the C closure */
	lua_pushcclosure(L, is_incr ? l_rmw_incr_tx : l_rmw_update_tx, 1);
	lua_rotate(L, 1, 2);                   /* store, fn, ns, key, x, y */
	lua_pushcfunction(L, l_store_transaction);
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
	lns *n = check_ns(L, 1);
	size_t klen;
	const char *key = check_key(L, 2, &klen);
	lscratch *sc = SCRATCH(L);
	instate_meta meta;
	int rc = read_rec(n, key, klen, &sc->val, &meta);
	if (rc == INSTATE_NOTFOUND) {
		lua_pushnil(L);
		return 1;
	}
	if (rc)
		return linstate_fail(L, rc, "cannot read");
	lua_pushlstring(L, sc->val.data, sc->val.len);
	lua_pushinteger(L, (lua_Integer)meta.version);
	return 2;
}

static int l_ns_set_encoded(lua_State *L)
{
	lns *n = check_ns(L, 1);
	put_args a;
	int rc;
	a.key = check_key(L, 2, &a.klen);
	a.val = luaL_checklstring(L, 3, &a.vlen);
	check_put_opts(L, 4, &a.meta, 1);
	a.flags = 0;
	{
		char err[INSTATE_MP_ERRMAX];
		size_t off;
		if (instate_mp_validate(a.val, a.vlen, &off, err, sizeof err))
			return luaL_argerror(L, 3, lua_pushfstring(L, "not a valid encoding: %s", err));
	}
	rc = run_write(L, n, do_put, &a);
	if (rc)
		return ns_fail(L, n, rc, "cannot write");
	lua_pushboolean(L, 1);
	return 1;
}

/*
 * tx_ns:put_many(n, keys, values, versions) -> written, nested
 *
 * The defstate layer's save: for i = 1..n encode values[i] in canonical
 * map order (named keys[i] in errors; equal values give equal bytes in any
 * process, so an unchanged variable is recognised after a restart too) and
 * write it with versions[i] (or versions itself when a number), unless the
 * live record already holds these bytes and version (INSTATE_IFCHANGED:
 * the store itself is the reference, so nothing per variable is kept in
 * memory, and a save inside a transaction that later aborts cannot make
 * anything look saved). Returns the number of records written, and whether
 * the transaction is nested in another (then nothing it wrote is committed
 * when the outermost one ends, if it aborts). One C loop
 * instead of n calls; raising inside aborts the enclosing transaction.
 */
static int l_ns_put_many(lua_State *L)
{
	lns *n = check_ns(L, 1);
	lua_Integer i, count = luaL_checkinteger(L, 2);
	lua_Integer written = 0, version = 0;
	int const_version;

	if (!n->tx)
		return luaL_error(L, "put_many needs a namespace of a transaction");
	if (n->tx->readonly)
		return luaL_error(L, "cannot write in a snapshot");
	luaL_checktype(L, 3, LUA_TTABLE);
	luaL_checktype(L, 4, LUA_TTABLE);
	const_version = lua_type(L, 5) == LUA_TNUMBER;
	if (const_version)
		version = luaL_checkinteger(L, 5);
	else
		luaL_checktype(L, 5, LUA_TTABLE);
	lua_settop(L, 5);
	for (i = 1; i <= count; i++) {
		size_t klen, vlen;
		const char *key, *val;
		instate_meta meta;
		int rc;

		if (lua_rawgeti(L, 3, i) != LUA_TSTRING)
			return luaL_error(L, "put_many: keys[%I] is not a string", i);
		key = lua_tolstring(L, 6, &klen);
		if (klen < 1 || klen > INSTATE_KEY_MAX)
			return luaL_error(L, "put_many: keys[%I] must be 1..%d bytes", i, INSTATE_KEY_MAX);
		lua_rawgeti(L, 4, i);
		val = linstate_encode_canonical(L, 7, value_root(key, klen), &vlen);
		if (!const_version) {
			lua_rawgeti(L, 5, i);
			version = lua_tointeger(L, -1);
		}
		if (version < 0 || version > 0xffffffffLL)
			return luaL_error(L, "put_many: version of '%s' out of range", key);
		meta.expires_ms = 0;
		meta.version = (uint32_t)version;
		rc = instate_put(n->tx->txn, n->ns, key, klen, val, vlen, &meta, INSTATE_IFCHANGED);
		if (rc == 0) {
			written++;
		} else if (rc != INSTATE_EXISTS) {
			ns_fail(L, n, rc, lua_pushfstring(L, "cannot write '%s'", key));
			return lua_error(L);
		}
		lua_settop(L, 5);
	}
	lua_pushinteger(L, written);
	lua_pushboolean(L, n->tx->parent != NULL);
	return 2;
}

/* ------------------------------------------------------------------------ */
/* Iterators                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Push an iterator userdata over the records of n (the checked namespace
 * at nsidx) that start with prefix: in n's transaction, or in a snapshot of
 * its own that the userdata owns (so raising later leaks nothing). Returns
 * it, or NULL after pushing nil, msg, code.
 */
static liter *iter_open(lua_State *L, lns *n, int nsidx, const char *prefix, size_t plen,
                        int encoded)
{
	liter *it;
	instate_txn *txn;
	int rc;

	it = lcompat_newuserdata(L, sizeof *it, 1);
	memset(it, 0, sizeof *it);
	it->store = n->store;
	it->encoded = encoded;
	luaL_setmetatable(L, LINSTATE_ITER_MT);
	lua_pushvalue(L, nsidx);
	lcompat_setuservalue(L, -2, 1);
	if (n->tx) {
		txn = n->tx->txn;
	} else {
		rc = instate_txn_begin(n->store->s, NULL, INSTATE_TXN_READ, &it->own);
		if (rc) {
			linstate_fail(L, rc, "cannot iterate");
			return NULL;
		}
		txn = it->own;
		child_link(n->store, &it->link, iter_close_child);
		it->linked = 1;
	}
	rc = instate_cursor_open(txn, n->ns, prefix, plen, &it->cur);
	if (rc) {
		it->cur = NULL;
		iter_close(it);
		linstate_fail(L, rc, "cannot iterate");
		return NULL;
	}
	if (n->tx) {
		it->tx = n->tx;
		it->next_in_tx = n->tx->iters;
		n->tx->iters = it;
	}
	return it;
}

static int ns_pairs(lua_State *L, int encoded)
{
	lns *n = check_ns(L, 1);
	size_t plen = 0;
	const char *prefix = luaL_optlstring(L, 2, NULL, &plen);

	if (!iter_open(L, n, 1, prefix, plen, encoded))
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
	lscratch *sc = SCRATCH(L);
	lns *n = check_ns(L, 1);
	size_t plen = 0;
	const char *prefix = luaL_optlstring(L, 2, NULL, &plen);
	lua_Integer vdef = -1;
	int decode = 0;
	liter *it;
	int rc;

	lua_settop(L, 3);
	if (!lua_isnil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		check_opt_names(L, 3, names);
		decode = opt_bool(L, 3, "decode", 0);
		vdef = opt_int(L, 3, "version_default", -1, 0, 0xffffffffLL);
	}
	if (!(it = iter_open(L, n, 1, prefix, plen, 1)))   /* 4 */
		return 3;
	lua_newtable(L);            /* 5 bytes */
	lua_newtable(L);            /* 6 versions */
	lua_newtable(L);            /* 7 values */
	for (;;) {
		instate_meta meta;
		rc = instate_cursor_next(it->cur, &sc->key, &sc->val, &meta);
		if (rc)
			break;
		lua_pushlstring(L, sc->key.data, sc->key.len);          /* 8 key */
		lua_pushvalue(L, 8);
		lua_pushlstring(L, sc->val.data, sc->val.len);
		lua_rawset(L, 5);
		if ((lua_Integer)meta.version != vdef) {
			lua_pushvalue(L, 8);
			lua_pushinteger(L, (lua_Integer)meta.version);
			lua_rawset(L, 6);
		}
		if (decode) {
			if (linstate_decode(L, sc->val.data, sc->val.len))
				lua_rawset(L, 7);   /* key 8, value 9 */
			else
				lua_pop(L, 1);      /* the message */
		}
		lua_settop(L, 7);
	}
	iter_close(it);
	if (rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, "cannot read");
	lua_settop(L, decode ? 7 : 6);
	return decode ? 3 : 2;
}

/*
 * ns:get_all_objects(mt, template, slot, version) -> objects, count
 *
 * The defstate layer's start-up read, in one snapshot and one call: for
 * every live record with this record version whose value decodes, an
 * object { template[1], ..., [slot] = value, name = key } with metatable
 * mt; objects maps key -> object, and key -> false for the other records
 * (another version, or a value that does not decode: the caller reads those
 * itself and reports them); count is the number of objects. Runs no Lua
 * code. The iterator userdata owns the snapshot, so raising (out of memory)
 * midway leaks nothing.
 */
static int l_ns_get_all_objects(lua_State *L)
{
	lscratch *sc = SCRATCH(L);
	lns *n = check_ns(L, 1);
	lua_Integer slot, version, count = 0;
	int j, ntpl, narr, rc;
	liter *it;

	luaL_checktype(L, 2, LUA_TTABLE);
	luaL_checktype(L, 3, LUA_TTABLE);
	slot = luaL_checkinteger(L, 4);
	luaL_argcheck(L, slot >= 1 && slot <= 64, 4, "slot must be 1..64");
	version = luaL_checkinteger(L, 5);
	ntpl = (int)lua_rawlen(L, 3);
	luaL_argcheck(L, ntpl <= 64, 3, "template longer than 64");
	narr = ntpl > (int)slot ? ntpl : (int)slot;
	lua_settop(L, 5);
	if (!(it = iter_open(L, n, 1, NULL, 0, 1)))   /* 6 */
		return 3;
	lua_newtable(L);            /* 7 key -> object or false */
	lua_pushliteral(L, "name"); /* 8 */
	for (;;) {
		instate_meta meta;
		rc = instate_cursor_next(it->cur, &sc->key, &sc->val, &meta);
		if (rc)
			break;
		lua_pushlstring(L, sc->key.data, sc->key.len);          /* 9 key */
		if ((lua_Integer)meta.version == version &&
		    linstate_decode(L, sc->val.data, sc->val.len)) {     /* 10 value */
			lua_createtable(L, narr, 1);                        /* 11 */
			for (j = 1; j <= ntpl; j++) {
				lua_rawgeti(L, 3, j);
				lua_rawseti(L, 11, j);
			}
			lua_pushvalue(L, 10);
			lua_rawseti(L, 11, slot);
			lua_pushvalue(L, 8);
			lua_pushvalue(L, 9);
			lua_rawset(L, 11);
			lua_pushvalue(L, 2);
			lua_setmetatable(L, 11);
			lua_pushvalue(L, 9);
			lua_pushvalue(L, 11);
			lua_rawset(L, 7);
			count++;
		} else {
			/* another version, or corrupt (the message is at 10) */
			lua_settop(L, 9);
			lua_pushboolean(L, 0);
			lua_rawset(L, 7);
		}
		lua_settop(L, 8);
	}
	iter_close(it);
	if (rc != INSTATE_NOTFOUND)
		return linstate_fail(L, rc, "cannot read");
	lua_settop(L, 7);
	lua_pushinteger(L, count);
	return 2;
}

static int l_iter_next(lua_State *L)
{
	liter *it = to_iter(L, 1);
	lscratch *sc = SCRATCH(L);
	instate_meta meta;
	int rc;

	if (!it->cur)
		return luaL_error(L, "iterator is closed");
	rc = instate_cursor_next(it->cur, &sc->key, &sc->val, &meta);
	if (rc == INSTATE_NOTFOUND) {
		iter_close(it);
		lua_pushnil(L);
		return 1;
	}
	if (rc) {
		iter_close(it);
		linstate_fail(L, rc, "cannot iterate");
		return lua_error(L);
	}
	lua_pushlstring(L, sc->key.data, sc->key.len);
	if (it->encoded) {
		lua_pushlstring(L, sc->val.data, sc->val.len);
		lua_pushinteger(L, (lua_Integer)meta.version);
		return 3;
	}
	if (!linstate_decode(L, sc->val.data, sc->val.len))
		return luaL_error(L, "corrupt value at key '%s': %s", lua_tostring(L, -2),
			lua_tostring(L, -1));
	return 2;
}

static int l_iter_close(lua_State *L)
{
	iter_close(to_iter(L, 1));
	return 0;
}

static int l_ns_tostring(lua_State *L)
{
	lns *n = to_ns(L, 1);
	size_t len;
	lua_pushfstring(L, "instate.Namespace (%s)", instate_ns_name(n->ns, &len));
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Registration                                                             */
/* ------------------------------------------------------------------------ */

static int l_scratch_gc(lua_State *L)
{
	lscratch *sc = lua_touserdata(L, 1);
	instate_buf_free(&sc->key);
	instate_buf_free(&sc->val);
	return 0;
}

static const luaL_Reg store_methods[] = {
	{ "close", l_store_close },
	{ "path", l_store_path },
	{ "revision", l_store_revision },
	{ "last_commit", l_store_last_commit },
	{ "stats", l_store_stats },
	{ "namespace", l_store_namespace },
	{ "namespaces", l_store_namespaces },
	{ "drop", l_store_drop },
	{ "purge", l_store_purge },
	{ "transaction", l_store_transaction },
	{ "snapshot", l_store_snapshot },
	{ "__gc", l_store_close },
	{ "__close", l_store_close },
	{ "__tostring", l_store_tostring },
	{ NULL, NULL }
};

static const luaL_Reg txn_methods[] = {
	{ "namespace", l_tx_namespace },
	{ "revision", l_tx_revision },
	{ "close", l_tx_close },
	{ "__gc", l_tx_close },
	{ "__close", l_tx_close },
	{ "__tostring", l_tx_tostring },
	{ NULL, NULL }
};

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
	{ "clear", l_ns_clear },
	{ "get_encoded", l_ns_get_encoded },
	{ "set_encoded", l_ns_set_encoded },
	{ "put_many", l_ns_put_many },
	{ "get_all_encoded", l_ns_get_all_encoded },
	{ "get_all_objects", l_ns_get_all_objects },
	{ NULL, NULL }
};

static const luaL_Reg iter_methods[] = {
	{ "close", l_iter_close },
	{ "__gc", l_iter_close },
	{ "__close", l_iter_close },
	{ NULL, NULL }
};

/* New metatable `name` with methods (upvalue: scratch at -1 before call). */
static void new_class(lua_State *L, const char *name, const char *marker,
                      const luaL_Reg *methods, int scratch)
{
	luaL_newmetatable(L, name);
	lua_pushboolean(L, 1);
	lua_rawsetp(L, -2, marker);
	lua_pushvalue(L, scratch);
	luaL_setfuncs(L, methods, 1);
	lua_pushvalue(L, -1);
	lua_setfield(L, -2, "__index");
	lua_pushstring(L, name);
	lua_setfield(L, -2, "__name");
}

void linstate_open_store(lua_State *L)
{
	int mod = lua_gettop(L), scratch;
	lscratch *sc = lcompat_newuserdata(L, sizeof *sc, 0);
	memset(sc, 0, sizeof *sc);
	lua_newtable(L);
	lua_pushcfunction(L, l_scratch_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
	scratch = lua_gettop(L);

	new_class(L, LINSTATE_STORE_MT, &store_marker, store_methods, scratch);
	lua_pop(L, 1);
	new_class(L, LINSTATE_TXN_MT, &txn_marker, txn_methods, scratch);
	lua_pop(L, 1);
	new_class(L, LINSTATE_ITER_MT, &iter_marker, iter_methods, scratch);
	lua_pop(L, 1);

	/* Namespace: the class behind every name's fields (see ns_marker). */
	luaL_newmetatable(L, LINSTATE_NS_MT);
	lua_newtable(L);
	lua_pushvalue(L, scratch);
	luaL_setfuncs(L, ns_methods, 1);
	/* pairs and pairs_encoded close over scratch and the iterator step */
	lua_pushvalue(L, scratch);
	lua_pushvalue(L, scratch);
	lua_pushcclosure(L, l_iter_next, 1);
	lua_pushcclosure(L, l_ns_pairs, 2);
	lua_setfield(L, -2, "pairs");
	lua_pushvalue(L, scratch);
	lua_pushvalue(L, scratch);
	lua_pushcclosure(L, l_iter_next, 1);
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

	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, TXNS_KEY);

	lua_pushcfunction(L, l_open);
	lua_setfield(L, mod, "open");
	lua_settop(L, mod);
}
