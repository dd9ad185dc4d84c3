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

static const luaL_Reg writer_methods[] = {
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
	/* store:writer(), in the store metatable itself (linstate.h) */
	luaL_getmetatable(L, LINSTATE_STORE_MT);
	lua_pushcfunction(L, l_store_writer);
	lua_setfield(L, -2, "writer");
	lua_pop(L, 1);
}
