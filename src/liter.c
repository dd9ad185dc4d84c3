/*
 * liter.c - the Iterator class: ns:pairs's state, and the opener the bulk
 * reads (ns:get_all_encoded, ns:get_all_objects) share.
 *
 * An iterator runs in its namespace's transaction, or in a snapshot of its
 * own that the userdata owns, so raising at any point leaks nothing.
 */
#include "linstate.h"

#include <string.h>

const char linstate_iter_marker = 0;

void linstate_iter_close(liter *it)
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
		linstate_child_unlink(it->store, &it->link);
		it->linked = 0;
	}
}

static void iter_close_child(lchild *c)
{
	linstate_iter_close((liter *)c);
}


/*
 * Push an iterator userdata over the records of n (the checked namespace
 * at nsidx) that start with prefix: in n's transaction, or in a snapshot of
 * its own that the userdata owns (so raising later leaks nothing). Returns
 * it, or NULL after pushing nil, msg, code.
 */
liter *linstate_iter_open(lua_State *L, lns *n, int nsidx, const char *prefix, size_t plen,
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
		linstate_child_link(n->store, &it->link, iter_close_child);
		it->linked = 1;
	}
	rc = instate_cursor_open(txn, n->ns, prefix, plen, &it->cur);
	if (rc) {
		it->cur = NULL;
		linstate_iter_close(it);
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

int linstate_iter_next(lua_State *L)
{
	liter *it = linstate_toiter(L, 1);
	instate_buf *kv;
	instate_meta meta;
	int rc;

	if (!it->cur)
		return luaL_error(L, "iterator is closed");
	/* kv stays taken until the value is copied or decoded: a finalizer
	 * run by pushing the key reads into a pair of its own */
	kv = linstate_kv_take(L);
	rc = instate_cursor_next(it->cur, &kv[0], &kv[1], &meta);
	if (rc == INSTATE_NOTFOUND) {
		linstate_kv_give(L, kv);
		linstate_iter_close(it);
		lua_pushnil(L);
		return 1;
	}
	if (rc == INSTATE_CORRUPT && kv[0].len) {
		/* the core left the damaged record's key: name it */
		linstate_iter_close(it);
		linstate_key_context(L, "cannot iterate at", kv[0].data, kv[0].len);
		linstate_kv_give(L, kv);
		return linstate_error(L, rc, lua_tostring(L, -1));
	}
	if (rc) {
		linstate_kv_give(L, kv);
		linstate_iter_close(it);
		return linstate_error(L, rc, "cannot iterate");
	}
	lua_pushlstring(L, kv[0].data, kv[0].len);
	if (it->encoded) {
		lua_pushlstring(L, kv[1].data, kv[1].len);
		linstate_kv_give(L, kv);
		lua_pushinteger(L, (lua_Integer)meta.version);
		return 3;
	}
	rc = linstate_decode(L, kv[1].data, kv[1].len);
	linstate_kv_give(L, kv);
	if (!rc)
		return luaL_error(L, "%s at key '%s': %s", linstate_decode_what(lua_tostring(L, -1)),
			lua_tostring(L, -2), lua_tostring(L, -1));
	return 2;
}

static int l_iter_close(lua_State *L)
{
	linstate_iter_close(linstate_toiter(L, 1));
	return 0;
}

/* __gc: also for a table given this metatable (as l_store_gc). */
static int l_iter_gc(lua_State *L)
{
	return lua_type(L, 1) == LUA_TUSERDATA ? l_iter_close(L) : 0;
}

static const luaL_Reg iter_methods[] = {
	{ "close", l_iter_close },
	{ "__gc", l_iter_gc },
	{ "__close", l_iter_close },
	{ NULL, NULL }
};

void linstate_open_iter(lua_State *L, int scratch)
{
	linstate_newclass(L, LINSTATE_ITER_MT, &linstate_iter_marker, iter_methods, scratch);
	lua_pop(L, 1);
}
