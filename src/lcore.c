/*
 * lcore.c - the helpers every binding file shares: the error pusher, class
 * registration, scratch buffers, and the module's small functions.
 */
#include "linstate.h"

#include <limits.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

const char *linstate_code(int rc)
{
	switch (rc) {
	case INSTATE_NOTFOUND:
	case ENOENT: return "NOTFOUND";
	case INSTATE_BUSY: return "BUSY";
	case INSTATE_CONFLICT: return "CONFLICT";
	case INSTATE_ACCESS: return "ACCESS";
#ifdef INSTATE_LOCKED
	case INSTATE_LOCKED: return "LOCKED";
#endif
	case INSTATE_MAP_FULL:
	case INSTATE_RETRY: return "MAP_FULL";
	case INSTATE_READONLY:
	case EROFS: return "READONLY";
	case INSTATE_CORRUPT: return "CORRUPT";
	case INSTATE_VERSION: return "VERSION";
	case INSTATE_LIMIT:
	case INSTATE_READERS_FULL:
	case INSTATE_NAMESPACES_FULL: return "LIMIT";
	case EACCES:
	case EPERM: return "ACCESS";
	case ENOSPC:
#ifdef EDQUOT
	case EDQUOT:
#endif
		return "NOSPACE";
	default: return "IO";
	}
}

/* "context: reason", or the context alone when it already says the reason
 * (a core message that ends with strerror's text must not repeat it). */
static void push_message(lua_State *L, int rc, const char *context)
{
	const char *reason = instate_strerror(rc);
	if (!context)
		lua_pushstring(L, reason);
	else if (strstr(context, reason))
		lua_pushstring(L, context);
	else
		lua_pushfstring(L, "%s: %s", context, reason);
}

int linstate_fail(lua_State *L, int rc, const char *context)
{
	lua_pushnil(L);
	push_message(L, rc, context);
	lua_pushstring(L, linstate_code(rc));
	return 3;
}

int linstate_error(lua_State *L, int rc, const char *context)
{
	push_message(L, rc, context);
	return lua_error(L);
}

int linstate_raise_failure(lua_State *L)
{
	lua_pop(L, 1);
	return lua_error(L);
}

/* instate._set_clock(ms | nil): fix the expiry clock for tests. */
static int l_set_clock(lua_State *L)
{
	if (lua_isnoneornil(L, 1)) {
		instate_clock_set(0);
	} else {
		lua_Integer ms = luaL_checkinteger(L, 1);
		luaL_argcheck(L, ms > 0, 1, "expected a positive time in milliseconds");
		instate_clock_set((int64_t)ms);
	}
	return 0;
}

/* instate.now(): the expiry clock, in seconds (float), as records see it. */
static int l_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)instate_clock_now() / 1000.0);
	return 1;
}

/*
 * instate._newtable(narr, nrec): an empty table with room for narr array
 * items and nrec fields (lua_createtable), for the Lua layer to size a table
 * it is about to fill with a known number of entries.
 */
static int l_newtable(lua_State *L)
{
	lua_Integer narr = luaL_checkinteger(L, 1), nrec = luaL_checkinteger(L, 2);
	luaL_argcheck(L, narr >= 0 && narr <= INT_MAX, 1, "out of range");
	luaL_argcheck(L, nrec >= 0 && nrec <= INT_MAX, 2, "out of range");
	lua_createtable(L, (int)narr, (int)nrec);
	return 1;
}

/* version() -> "instate 0.1.0 (LMDB 0.9.24, zstd 1.5.4)", 0, 1, 0 */
static int l_version(lua_State *L)
{
	int maj, min, pat;
	lua_pushstring(L, instate_version(&maj, &min, &pat));
	lua_pushinteger(L, maj);
	lua_pushinteger(L, min);
	lua_pushinteger(L, pat);
	return 4;
}

void linstate_open_core(lua_State *L)
{
	lua_pushcfunction(L, l_version);
	lua_setfield(L, -2, "version");
	lua_pushcfunction(L, l_set_clock);
	lua_setfield(L, -2, "_set_clock");
	lua_pushcfunction(L, l_now);
	lua_setfield(L, -2, "now");
	lua_pushcfunction(L, l_newtable);
	lua_setfield(L, -2, "_newtable");
	lua_pushliteral(L, INSTATE_VERSION_STRING);
	lua_setfield(L, -2, "_VERSION");
}

static int l_scratch_gc(lua_State *L)
{
	lscratch *sc = lua_touserdata(L, 1);
	instate_buf_free(&sc->kv[0]);
	instate_buf_free(&sc->kv[1]);
	instate_buf_free(&sc->save[0]);
	instate_buf_free(&sc->save[1]);
	return 0;
}

void linstate_push_scratch(lua_State *L)
{
	lscratch *sc = lcompat_newuserdata(L, sizeof *sc, 0);
	memset(sc, 0, sizeof *sc);
	lua_newtable(L);
	lua_pushcfunction(L, l_scratch_gc);
	lua_setfield(L, -2, "__gc");
	lua_setmetatable(L, -2);
}

/* The buffers of a box userdata (its user value 1 holds nothing). */
static int l_bufs_gc(lua_State *L)
{
	instate_buf *b = lua_touserdata(L, 1);
	size_t i, n = lua_rawlen(L, 1) / sizeof *b;
	for (i = 0; i < n; i++)
		instate_buf_free(&b[i]);
	return 0;
}

#define BUFS_MT "instate.buffers"

instate_buf *linstate_newbufs(lua_State *L, int n)
{
	instate_buf *b = lcompat_newuserdata(L, (size_t)n * sizeof *b, 0);
	memset(b, 0, (size_t)n * sizeof *b);
	if (luaL_newmetatable(L, BUFS_MT)) {
		lua_pushcfunction(L, l_bufs_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	return b;
}

instate_buf *linstate_kv_take(lua_State *L)
{
	lscratch *sc = SCRATCH(L);
	if (sc->kv_busy)
		return linstate_newbufs(L, 2);
	sc->kv_busy = 1;
	lua_pushnil(L);
	return sc->kv;
}

void linstate_kv_give(lua_State *L, instate_buf *kv)
{
	lscratch *sc = SCRATCH(L);
	if (kv == sc->kv)
		sc->kv_busy = 0;
}

void linstate_newclass(lua_State *L, const char *name, const char *marker,
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
