/*
 * lcore.c - luaopen_instate_core and the helpers every binding file shares.
 */
#include "linstate.h"

#include <limits.h>

#include <errno.h>
#include <stdint.h>

const char *linstate_code(int rc)
{
	switch (rc) {
	case INSTATE_NOTFOUND:
	case ENOENT: return "NOTFOUND";
	case INSTATE_BUSY: return "BUSY";
	case INSTATE_CONFLICT: return "CONFLICT";
	case INSTATE_ACCESS: return "ACCESS";
	case INSTATE_MAP_FULL:
	case INSTATE_RETRY: return "MAP_FULL";
	case INSTATE_READONLY:
	case EROFS: return "READONLY";
	case INSTATE_CORRUPT: return "CORRUPT";
	case INSTATE_VERSION: return "VERSION";
	case INSTATE_LIMIT:
	case INSTATE_READERS_FULL:
	case INSTATE_NAMESPACES_FULL: return "LIMIT";
	case ENOSPC:
#ifdef EDQUOT
	case EDQUOT:
#endif
		return "NOSPACE";
	default: return "IO";
	}
}

int linstate_fail(lua_State *L, int rc, const char *context)
{
	lua_pushnil(L);
	if (context)
		lua_pushfstring(L, "%s: %s", context, instate_strerror(rc));
	else
		lua_pushstring(L, instate_strerror(rc));
	lua_pushstring(L, linstate_code(rc));
	return 3;
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

int luaopen_instate_core(lua_State *L)
{
	luaL_checkversion(L);
	lua_newtable(L);
	lua_pushcfunction(L, l_set_clock);
	lua_setfield(L, -2, "_set_clock");
	lua_pushcfunction(L, l_now);
	lua_setfield(L, -2, "now");
	lua_pushcfunction(L, l_newtable);
	lua_setfield(L, -2, "_newtable");
	lua_pushliteral(L, INSTATE_VERSION_STRING);
	lua_setfield(L, -2, "_VERSION");
	linstate_open_codec(L);
	linstate_open_store(L);
	linstate_open_dump(L);
	return 1;
}
