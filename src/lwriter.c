/*
 * lwriter.c - the Writer class: store:writer(), a handle on a core writer
 * (instate.h, "Batches and the background writer"). Batches are built and
 * submitted by ns:save_many(..., writer) (lns.c); the writer's thread sees
 * only their bytes, never this Lua state.
 *
 * The core writer holds its own handle on the store's environment, so the
 * Writer is not a child of the store: closing the store first is fine, and
 * the writer goes on committing what it was given.
 */
#include "linstate.h"

#include <string.h>

const char linstate_writer_marker = 0;

instate_writer *linstate_checkwriter(lua_State *L, int idx)
{
	lwriter *lw = (lwriter *)linstate_checkhandle(L, idx, &linstate_writer_marker,
		LINSTATE_WRITER_MT);
	if (!lw->w)
		luaL_error(L, "writer is closed");
	return lw->w;
}

/* The triple for a writer error: its message names the batch that failed. */
int linstate_writer_fail(lua_State *L, int rc, const char *err)
{
	return linstate_fail(L, rc, err && *err ? err : "async save failed");
}

/* store:writer() -> writer | nil, msg, code */
static int l_store_writer(lua_State *L)
{
	instate_store *s = linstate_checkstore(L, 1);
	lwriter *lw;
	int rc;

	/* Created closed, so a failed start leaves nothing to clean up. */
	lw = lcompat_newuserdata(L, sizeof *lw, 0);
	lw->w = NULL;
	luaL_setmetatable(L, LINSTATE_WRITER_MT);
	rc = instate_writer_open(s, &lw->w);
	if (rc)
		return linstate_fail(L, rc, "cannot start the writer");
	return 1;
}

/* writer:flush() -> revision | nil, msg, code */
static int l_writer_flush(lua_State *L)
{
	instate_writer *w = linstate_checkwriter(L, 1);
	char err[INSTATE_ERRMSG_MAX];
	uint64_t rev = 0;
	int rc;

	err[0] = '\0';
	rc = instate_writer_flush(w, &rev, err);
	if (rc)
		return linstate_writer_fail(L, rc, err);
	lua_pushinteger(L, (lua_Integer)rev);
	return 1;
}

/* writer:info() -> submitted, done (tickets), pending error code or nil */
static int l_writer_info(lua_State *L)
{
	instate_writer *w = linstate_checkwriter(L, 1);
	instate_writer_info info;

	instate_writer_info_get(w, &info);
	lua_pushinteger(L, (lua_Integer)info.submitted);
	lua_pushinteger(L, (lua_Integer)info.done);
	if (info.error)
		lua_pushstring(L, linstate_code(info.error));
	else
		lua_pushnil(L);
	return 3;
}

/* writer:close() -> true | nil, msg, code. Waits for the pending batches;
 * their error, if any, is returned (the writer is closed all the same),
 * but BUSY (inside a write transaction of this thread) leaves it open. */
static int l_writer_close(lua_State *L)
{
	lwriter *lw = (lwriter *)linstate_checkhandle(L, 1, &linstate_writer_marker,
		LINSTATE_WRITER_MT);
	char err[INSTATE_ERRMSG_MAX];
	int rc;

	if (!lw->w) {
		lua_pushboolean(L, 1);
		return 1;
	}
	err[0] = '\0';
	rc = instate_writer_close(lw->w, err);
	if (rc != INSTATE_BUSY)
		lw->w = NULL;
	if (rc)
		return linstate_writer_fail(L, rc, err);
	lua_pushboolean(L, 1);
	return 1;
}

/* __gc: as close, errors dropped (whoever needed them flushed). Collected
 * while this thread holds a write transaction with batches pending, the
 * writer cannot be waited for: it is left running (its batches commit
 * once the transaction ends), a leak rather than a deadlock. */
static int l_writer_gc(lua_State *L)
{
	lwriter *lw = (lwriter *)lua_touserdata(L, 1);

	if (lua_type(L, 1) == LUA_TUSERDATA && lw && lw->w) {
		instate_writer *w = lw->w;
		lw->w = NULL;
		(void)instate_writer_close(w, NULL);
	}
	return 0;
}

static int l_writer_tostring(lua_State *L)
{
	lwriter *lw = (lwriter *)linstate_checkhandle(L, 1, &linstate_writer_marker,
		LINSTATE_WRITER_MT);
	if (lw->w)
		lua_pushfstring(L, "instate.Writer (%p)", (void *)lw->w);
	else
		lua_pushliteral(L, "instate.Writer (closed)");
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Batches: writes of several namespaces committed with one async save       */
/* ------------------------------------------------------------------------ */

const char linstate_batch_marker = 0;

static lbatch *check_lbatch(lua_State *L, int idx)
{
	return (lbatch *)linstate_checkhandle(L, idx, &linstate_batch_marker, LINSTATE_BATCH_MT);
}

lbatch *linstate_tobatch(lua_State *L, int idx)
{
	void *p = lua_touserdata(L, idx);

	if (p && lua_getmetatable(L, idx)) {
		int ok = lua_rawgetp(L, -1, &linstate_batch_marker) == LUA_TBOOLEAN;
		lua_pop(L, 2);
		if (ok)
			return (lbatch *)p;
	}
	return NULL;
}

int linstate_batch_submit(lua_State *L, lbatch *lb, size_t base)
{
	char err[INSTATE_ERRMSG_MAX];
	uint64_t ticket = 0;
	int rc;

	if (!lb->lw->w) {
		instate_batch_truncate(lb->b, base);
		return luaL_error(L, "writer is closed");
	}
	err[0] = '\0';
	rc = instate_writer_submit(lb->lw->w, lb->b, &ticket, err);
	if (rc) {
		/* the batch stays as it was before this call */
		instate_batch_truncate(lb->b, base);
		return linstate_writer_fail(L, rc, err);
	}
	lb->b = NULL;               /* the writer's now */
	lua_pushinteger(L, (lua_Integer)ticket);
	return 1;
}

instate_batch *linstate_batch_of(lua_State *L, lbatch *lb)
{
	if (!lb->b && instate_batch_new(&lb->b))
		luaL_error(L, "not enough memory");
	return lb->b;
}

/* writer:batch() -> an empty batch of this writer (which it keeps alive) */
static int l_writer_batch(lua_State *L)
{
	lwriter *lw;
	lbatch *lb;

	linstate_checkwriter(L, 1);
	lw = (lwriter *)lua_touserdata(L, 1);
	lb = lcompat_newuserdata(L, sizeof *lb, 1);
	lb->b = NULL;
	lb->lw = lw;
	luaL_setmetatable(L, LINSTATE_BATCH_MT);
	lua_pushvalue(L, 1);
	lcompat_setuservalue(L, -2, 1);
	return 1;
}

/* A store-level namespace at idx (a batch commits in a transaction of its
 * own, so a namespace bound to one cannot be its target). */
static lns *batch_ns(lua_State *L, int idx)
{
	lns *n = linstate_checkns(L, idx);
	if (n->tx)
		luaL_argerror(L, idx, "a store-level namespace expected (not one of a transaction)");
	return n;
}

/* batch:put(ns, key, value [, version]): encoded now (canonical order),
 * written if it differs from the stored record when committed. */
static int l_batch_put(lua_State *L)
{
	lbatch *lb = check_lbatch(L, 1);
	lns *n = batch_ns(L, 2);
	size_t klen, vlen;
	const char *key = linstate_check_key(L, 3, &klen);
	lua_Integer version = luaL_optinteger(L, 5, 0);
	instate_batch *b;
	instate_meta meta;
	const char *val;
	int rc;

	luaL_argcheck(L, version >= 0 && version <= 0xffffffffLL, 5, "version out of range");
	luaL_checkany(L, 4);
	b = linstate_batch_of(L, lb);
	val = linstate_encode_canonical(L, 4, key, &vlen);
	meta.expires_ms = 0;
	meta.version = (uint32_t)version;
	/* No Lua allocation between the encoding and its copy. */
	rc = instate_batch_put(b, n->ns, key, klen, val, vlen, &meta, INSTATE_IFCHANGED);
	if (rc)
		return luaL_error(L, "not enough memory");
	return 0;
}

/* batch:put_encoded(ns, key, bytes [, version]): bytes already encoded
 * (a map variable's entry), written if they differ when committed. */
static int l_batch_put_encoded(lua_State *L)
{
	lbatch *lb = check_lbatch(L, 1);
	lns *n = batch_ns(L, 2);
	size_t klen, vlen;
	const char *key = linstate_check_key(L, 3, &klen);
	const char *val = luaL_checklstring(L, 4, &vlen);
	lua_Integer version = luaL_optinteger(L, 5, 0);
	instate_meta meta;

	luaL_argcheck(L, version >= 0 && version <= 0xffffffffLL, 5, "version out of range");
	meta.expires_ms = 0;
	meta.version = (uint32_t)version;
	if (instate_batch_put(linstate_batch_of(L, lb), n->ns, key, klen, val, vlen, &meta,
	                      INSTATE_IFCHANGED))
		return luaL_error(L, "not enough memory");
	return 0;
}

/* batch:delete(ns, key) */
static int l_batch_delete(lua_State *L)
{
	lbatch *lb = check_lbatch(L, 1);
	lns *n = batch_ns(L, 2);
	size_t klen;
	const char *key = linstate_check_key(L, 3, &klen);

	if (instate_batch_del(linstate_batch_of(L, lb), n->ns, key, klen))
		return luaL_error(L, "not enough memory");
	return 0;
}

static int l_batch_count(lua_State *L)
{
	lbatch *lb = check_lbatch(L, 1);
	lua_pushinteger(L, lb->b ? (lua_Integer)instate_batch_count(lb->b) : 0);
	return 1;
}

static int l_batch_gc(lua_State *L)
{
	lbatch *lb = (lbatch *)lua_touserdata(L, 1);
	if (lua_type(L, 1) == LUA_TUSERDATA && lb && lb->b) {
		instate_batch_free(lb->b);
		lb->b = NULL;
	}
	return 0;
}

/* batch:submit() -> ticket | nil, msg, code, as an async save: on success
 * the batch is empty again (its writes went to the writer); on error it is
 * unchanged. */
static int l_batch_submit(lua_State *L)
{
	lbatch *lb = check_lbatch(L, 1);

	linstate_batch_of(L, lb);
	return linstate_batch_submit(L, lb, instate_batch_count(lb->b));
}

static const luaL_Reg batch_methods[] = {
	{ "put", l_batch_put },
	{ "put_encoded", l_batch_put_encoded },
	{ "delete", l_batch_delete },
	{ "count", l_batch_count },
	{ "submit", l_batch_submit },
	{ "__gc", l_batch_gc },
	{ NULL, NULL }
};

static const luaL_Reg writer_methods[] = {
	{ "batch", l_writer_batch },
	{ "flush", l_writer_flush },
	{ "info", l_writer_info },
	{ "close", l_writer_close },
	{ "__close", l_writer_close },
	{ "__gc", l_writer_gc },
	{ "__tostring", l_writer_tostring },
	{ NULL, NULL }
};

void linstate_open_writer(lua_State *L, int scratch)
{
	linstate_newclass(L, LINSTATE_WRITER_MT, &linstate_writer_marker, writer_methods, scratch);
	lua_pop(L, 1);
	linstate_newclass(L, LINSTATE_BATCH_MT, &linstate_batch_marker, batch_methods, scratch);
	lua_pop(L, 1);
	/* store:writer(), in the store metatable itself (linstate.h) */
	luaL_getmetatable(L, LINSTATE_STORE_MT);
	lua_pushcfunction(L, l_store_writer);
	lua_setfield(L, -2, "writer");
	lua_pop(L, 1);
}
