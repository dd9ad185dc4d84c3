/*
 * traverse_lua - a Lua module for bench/defstate.lua only (built beside
 * lmdb_floor, never installed): require "traverse" returns a function
 * traverse(t) -> entries that visits every entry of t and of every table
 * among its values with lua_next, and does nothing else.
 *
 * It is the floor of any "may have changed" test that looks at a table's
 * contents through the Lua C API: instate._fingerprint does this traversal
 * and hashes what it meets, so the bench prints both in the same run.
 */
#include <lua.h>
#include <lauxlib.h>

static long traverse(lua_State *L, int idx)
{
	long n = 0;

	luaL_checkstack(L, 3, NULL);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		n++;
		if (lua_type(L, -1) == LUA_TTABLE)
			n += traverse(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	return n;
}

static int l_traverse(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	lua_pushnumber(L, (lua_Number)traverse(L, 1));
	return 1;
}

LUALIB_API int luaopen_traverse(lua_State *L)
{
	lua_pushcfunction(L, l_traverse);
	return 1;
}
