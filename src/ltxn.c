/*
 * ltxn.c - the Transaction class: store:transaction, store:snapshot and the
 * transaction handle.
 *
 * Map growth. A write may fail with INSTATE_RETRY: the core grew the map
 * and aborted the whole transaction. store:transaction() then runs its
 * function again (documented in README); a savepoint passes the re-run up
 * to the outermost transaction by raising linstate_retry_sentinel.
 */
#include "linstate.h"

#include <string.h>

const char linstate_txn_marker = 0;
const char linstate_retry_sentinel = 0;

/* Registry field: weak-valued map from ltxn* to its userdata. */
#define TXNS_KEY "instate.transactions"

/* End one transaction (commit or abort), after its iterators. */
static int txn_end(ltxn *t, int commit)
{
	int rc = 0;
	while (t->iters)
		linstate_iter_close(t->iters);
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
		linstate_child_unlink(t->store, &t->link);
		t->linked = 0;
	}
	return rc;
}

/* Abort t and, first, every savepoint opened inside it. */
void linstate_txn_abort_tree(ltxn *t)
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
	linstate_txn_abort_tree((ltxn *)c);
}
/* Mark t and every enclosing transaction for a re-run. */
void linstate_txn_mark_retry(ltxn *t)
{
	for (; t; t = t->parent)
		t->retry = 1;
}
/* ------------------------------------------------------------------------ */
/* store:transaction(fn, ...) and store:snapshot(fn, ...)                   */
/* ------------------------------------------------------------------------ */

/*
 * Stack while running: 1 store, 2 fn, 3..n args, n+1 the transaction
 * userdata (at `base`, a to-be-closed slot), then fn's results. The
 * continuation finishes the transaction whether fn returned, raised or
 * yielded in between.
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
		int is_retry = lua_touserdata(L, -1) == (void *)&linstate_retry_sentinel || t->retry;
		linstate_txn_abort_tree(t);
		if (is_retry && !nparent && st->s) {
			lua_settop(L, base - 1);
			return txn_start(L, readonly, base);
		}
		if (is_retry) {
			linstate_txn_mark_retry(t->parent);
			lua_pushlightuserdata(L, (void *)&linstate_retry_sentinel);
		}
		return lua_error(L);
	}
	if (!t->txn)
		return luaL_error(L, "transaction was closed before its function returned");
	if (t->retry) {
		/* fn caught the re-run error itself: the transaction is void. */
		linstate_txn_abort_tree(t);
		if (nparent) {
			linstate_txn_mark_retry(t->parent);
			lua_pushlightuserdata(L, (void *)&linstate_retry_sentinel);
			return lua_error(L);
		}
		lua_settop(L, base - 1);
		return txn_start(L, readonly, base);
	}
	if (t->discard) {
		linstate_txn_abort_tree(t);
		return lua_gettop(L) - base;
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
				lua_pushlightuserdata(L, (void *)&linstate_retry_sentinel);
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
LCOMPAT_KFUNCTION(txn_finish)

static int txn_start(lua_State *L, int readonly, int base)
{
	lstore *st = linstate_checklstore(L, 1);
	ltxn *parent = NULL, *t;
	int i, rc, nargs = base - 3;

	if (!readonly && st->cur) {
		if (st->owner != L)
			return linstate_fail(L, INSTATE_BUSY,
				"cannot begin a transaction: a write transaction is already open"
				" in this thread (another coroutine's)");
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
	/* To-be-closed in this C frame: coroutine.close() of a coroutine
	 * suspended inside fn closes it, which aborts (never commits) at once
	 * instead of holding the writer lock until a collection. On every
	 * other way out the transaction has already ended: closing is a no-op. */
	lcompat_toclose(L, base);
	linstate_child_link(st, &t->link, txn_close_child);
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
		LCOMPAT_K(txn_finish)), (lua_KContext)base);
}

int linstate_store_transaction(lua_State *L)
{
	linstate_checklstore(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checkstack(L, lua_gettop(L) + 8, "too many arguments");
	return txn_start(L, 0, lua_gettop(L) + 1);
}

static int l_store_snapshot(lua_State *L)
{
	linstate_checklstore(L, 1);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_checkstack(L, lua_gettop(L) + 8, "too many arguments");
	return txn_start(L, 1, lua_gettop(L) + 1);
}

/* ------------------------------------------------------------------------ */
/* Transaction handle                                                       */
/* ------------------------------------------------------------------------ */

static int l_tx_namespace(lua_State *L)
{
	ltxn *t = linstate_checktx(L, 1);
	instate_ns *ns = linstate_ns_get(L, t->store, 2, linstate_check_ns_type(L, 3));
	if (!ns)
		return 3;
	linstate_push_ns(L, ns, t->store, t, 1);
	return 1;
}

static int l_tx_map_namespace(lua_State *L)
{
	ltxn *t = linstate_checktx(L, 1);
	instate_ns *ns = linstate_map_ns_get(L, t->store, 2);
	if (!ns)
		return 3;
	linstate_push_ns(L, ns, t->store, t, 1);
	return 1;
}

static int l_tx_close(lua_State *L)
{
	ltxn *t = linstate_totxn(L, 1);
	linstate_txn_abort_tree(t);
	return 0;
}

/* __gc: also for a table given this metatable (as l_store_gc). */
static int l_tx_gc(lua_State *L)
{
	return lua_type(L, 1) == LUA_TUSERDATA ? l_tx_close(L) : 0;
}

static int l_tx_revision(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)instate_txn_revision(linstate_checktx(L, 1)->txn));
	return 1;
}

static int l_tx_tostring(lua_State *L)
{
	ltxn *t = linstate_totxn(L, 1);
	lua_pushfstring(L, "instate.Transaction (%s)", !t->txn ? "ended"
		: t->readonly ? "snapshot" : "write");
	return 1;
}

static const luaL_Reg txn_methods[] = {
	{ "namespace", l_tx_namespace },
	{ "_map_namespace", l_tx_map_namespace },
	{ "revision", l_tx_revision },
	{ "close", l_tx_close },
	{ "__gc", l_tx_gc },
	{ "__close", l_tx_close },
	{ "__tostring", l_tx_tostring },
	{ NULL, NULL }
};

static const luaL_Reg store_txn_methods[] = {
	{ "transaction", linstate_store_transaction },
	{ "snapshot", l_store_snapshot },
	{ NULL, NULL }
};

void linstate_open_txn(lua_State *L, int scratch)
{
	linstate_newclass(L, LINSTATE_TXN_MT, &linstate_txn_marker, txn_methods, scratch);
	lua_pop(L, 1);

	/* Methods live in the store metatable itself (linstate.h). */
	luaL_getmetatable(L, LINSTATE_STORE_MT);
	lua_pushvalue(L, scratch);
	luaL_setfuncs(L, store_txn_methods, 1);
	lua_pop(L, 1);

	lua_newtable(L);
	lua_newtable(L);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setfield(L, LUA_REGISTRYINDEX, TXNS_KEY);
}
