/*
 * test_lua_compat.c - src/lcompat.h on the Lua it is built against (5.1,
 * 5.2, 5.3, 5.4 or LuaJIT): the 5.4 names it gives the older Luas behave as
 * 5.4's, and where they cannot (yielding inside a transaction on 5.1 and
 * LuaJIT) the binding says so clearly and loses nothing.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "lcompat.h"

int luaopen_instate_core(lua_State *L);

static int passed, failed;

#define CHECK(cond) do { \
	if (cond) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECK_STR(got, want) do { \
	const char *g_ = (got), *w_ = (want); \
	if (g_ && strcmp(g_, w_) == 0) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, __LINE__, \
	       g_ ? g_ : "(null)", w_); } \
} while (0)

static int raise_with_integer(lua_State *L)
{
	return luaL_error(L, "keys[%I] is not a %s (%d)", (lua_Integer)1234567890123LL, "string", 7);
}

static int check_int_arg(lua_State *L)
{
	lua_pushinteger(L, luaL_checkinteger(L, 1) + 1);
	return 1;
}

/* Run chunk; returns its string result, or "error: <message>". */
static const char *run(lua_State *L, const char *chunk)
{
	lua_settop(L, 0);
	if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
		lua_pushfstring(L, "error: %s", lua_tostring(L, -1));
		return lua_tostring(L, -1);
	}
	return lua_tostring(L, -1);
}

/* Called as a C function, as the binding's code always runs. */
static int test_api(lua_State *L)
{
	void *ud;

	/* %I formats a lua_Integer, and the arguments after it still line up */
	lua_settop(L, 0);
	CHECK_STR(lua_pushfstring(L, "[%I] %s %d%% %f", (lua_Integer)-9007199254740993LL, "ab", 5,
		1.5), "[-9007199254740993] ab 5% 1.5");
	lua_pushcfunction(L, raise_with_integer);
	CHECK(lua_pcall(L, 0, 0, 0) == LUA_ERRRUN);
	CHECK_STR(lua_tostring(L, -1), "keys[1234567890123] is not a string (7)");

	/* integers: integral values only, as 5.3's conversions */
	lua_settop(L, 0);
	lua_pushinteger(L, 7);
	lua_pushnumber(L, 1.5);
	lua_pushstring(L, "42");
	lua_pushnumber(L, 9223372036854775808.0);   /* 2^63: no lua_Integer holds it */
	{
		int ok = -1;
		CHECK(lua_isinteger(L, 1));
		CHECK(!lua_isinteger(L, 2));
		lua_pushnumber(L, -0.0);             /* keeps its sign: a float */
		CHECK(!lua_isinteger(L, -1));
		lua_pop(L, 1);
		CHECK(lua_tointegerx(L, 1, &ok) == 7 && ok == 1);
		CHECK(lua_tointegerx(L, 2, &ok) == 0 && ok == 0);
		CHECK(lua_tointegerx(L, 3, &ok) == 42 && ok == 1);
		CHECK(lua_tointegerx(L, 4, &ok) == 0 && ok == 0);
	}
	lua_settop(L, 0);
	lua_pushcfunction(L, check_int_arg);
	lua_pushnumber(L, 2.5);
	CHECK(lua_pcall(L, 1, 1, 0) == LUA_ERRRUN);
	CHECK_STR(lua_tostring(L, -1), "bad argument #1 to '?' (number has no integer representation)");
	lua_settop(L, 0);
	lua_pushcfunction(L, check_int_arg);
	lua_pushnumber(L, 41.0);
	CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK && lua_tointeger(L, -1) == 42);

	/* lua_rotate: a b c d e -> d e a b c */
	lua_settop(L, 0);
	lua_pushliteral(L, "a");
	lua_pushliteral(L, "b");
	lua_pushliteral(L, "c");
	lua_pushliteral(L, "d");
	lua_pushliteral(L, "e");
	lua_rotate(L, 1, 2);
	lua_concat(L, 5);
	CHECK_STR(lua_tostring(L, -1), "deabc");
	lua_pushliteral(L, "x");
	lua_pushliteral(L, "y");
	lua_pushliteral(L, "z");
	lua_rotate(L, 2, -1);                   /* x y z -> y z x */
	lua_concat(L, 3);
	CHECK_STR(lua_tostring(L, -1), "yzx");

	/* typed getters */
	lua_settop(L, 0);
	lua_newtable(L);
	lua_pushliteral(L, "v");
	lua_setfield(L, 1, "s");
	lua_pushboolean(L, 1);
	lua_rawseti(L, 1, 3);
	lua_pushinteger(L, 5);
	lua_rawsetp(L, 1, &passed);
	CHECK(lua_getfield(L, 1, "s") == LUA_TSTRING);
	CHECK(lua_getfield(L, 1, "none") == LUA_TNIL);
	CHECK(lua_rawgeti(L, 1, 3) == LUA_TBOOLEAN);
	CHECK(lua_rawgetp(L, 1, &passed) == LUA_TNUMBER && lua_tointeger(L, -1) == 5);
	lua_pushliteral(L, "s");
	CHECK(lua_rawget(L, 1) == LUA_TSTRING);
	CHECK(lua_absindex(L, -1) == lua_gettop(L));
	CHECK(lua_rawlen(L, 1) == 0);

	/* n user values, a table among them */
	lua_settop(L, 0);
	ud = lua_newuserdatauv(L, 16, 3);
	CHECK(ud != NULL && lua_rawlen(L, 1) == 16);
	lua_pushliteral(L, "one");
	CHECK(lua_setiuservalue(L, 1, 1) == 1);
	lua_newtable(L);
	lua_pushliteral(L, "in the table");
	lua_setfield(L, -2, "f");
	CHECK(lua_setiuservalue(L, 1, 2) == 1);
	lua_pushinteger(L, 3);
	CHECK(lua_setiuservalue(L, -2, 3) == 1);
	CHECK(lua_getiuservalue(L, 1, 1) == LUA_TSTRING);
	CHECK_STR(lua_tostring(L, -1), "one");
	CHECK(lua_getiuservalue(L, 1, 2) == LUA_TTABLE);
	lua_getfield(L, -1, "f");
	CHECK_STR(lua_tostring(L, -1), "in the table");
	CHECK(lua_getiuservalue(L, 1, 3) == LUA_TNUMBER && lua_tointeger(L, -1) == 3);
	CHECK(lua_gettop(L) == 5);
	lua_settop(L, 0);
	lua_newuserdatauv(L, 8, 1);
	lua_newtable(L);
	CHECK(lua_setiuservalue(L, 1, 1) == 1);
	CHECK(lua_getiuservalue(L, 1, 1) == LUA_TTABLE);
	lua_settop(L, 0);
	lua_newuserdatauv(L, 8, 0);
	lua_pushliteral(L, "x");
	CHECK(lua_setiuservalue(L, 1, 1) == 0);
	CHECK(lua_gettop(L) == 1);
	CHECK(lua_getiuservalue(L, 1, 1) == LUA_TNONE && lua_isnil(L, -1));
	lua_settop(L, 0);
	return 0;
}

static void test_binding(lua_State *L, const char *dir)
{
	lua_pushstring(L, dir);
	lua_setglobal(L, "DIR");
	CHECK_STR(run(L,
		"local core = require 'instate.core'\n"
		"STORE = assert(core.open(DIR))\n"
		"NS = STORE:namespace('n')\n"
		"function WHY(f, ...) local ok, e = pcall(f, ...) return e:match('%((.*)%)$') end\n"
		"return tostring(NS:set('k', 1))"), "true");

	/* a type error names the value's class, as 5.4's __name does */
	CHECK_STR(run(L, "return WHY(NS.get, io.stdout, 'k')"),
		"instate.Namespace expected, got FILE*");
	CHECK_STR(run(L, "return WHY(NS.get, STORE, 'k')"),
		"instate.Namespace expected, got instate.Store");
	CHECK_STR(run(L, "return WHY(NS.get, {}, 'k')"),
		"instate.Namespace expected, got table");

	/* misuse raises with the integers in the message */
	CHECK_STR(run(L,
		"local ok, e = pcall(NS.save_many, NS, 2, {'a', 5}, {1, 2}, 0)\n"
		"return e:match('save_many.*')"), "save_many: keys[2] is not a string");
	CHECK_STR(run(L,
		"return WHY(require('instate.core').open, DIR .. 'x', {map_size = 4096.5})"),
		"option 'map_size' must be an integer, got number");

	/* incr adds numbers on every Lua */
	CHECK_STR(run(L, "return tostring(NS:incr('c', 5) + NS:incr('c', 2))"), "12");

#if LUA_VERSION_NUM == 501
	/* 5.1 and LuaJIT: a transaction function cannot yield. It fails with
	 * a message that says so (once, from nested transactions too), and
	 * the transaction is aborted: nothing written, the store not BUSY. */
	CHECK_STR(run(L,
		"local co = coroutine.create(function()\n"
		"  return STORE:transaction(function(tx)\n"
		"    tx:namespace('n'):set('k', 'yielded')\n"
		"    return STORE:transaction(function() coroutine.yield() end)\n"
		"  end)\n"
		"end)\n"
		"local ok, e = coroutine.resume(co)\n"
		"return tostring(ok) .. ' ' .. select(2, e:gsub('cannot yield', '')) .. ' '\n"
		"  .. e:gsub('%[string .-%]:%d+: ', ''):match('^(.-)across')"),
		"false 1 cannot yield inside a transaction on Lua 5.1 and LuaJIT "
		"(attempt to yield ");
	CHECK_STR(run(L,
		"assert(STORE:transaction(function(tx) tx:namespace('n'):set('z', 1) return 1 end))\n"
		"return tostring(NS:get('k'))"), "1");
#else
	/* 5.2+: a transaction function yields; resuming commits it */
	CHECK_STR(run(L,
		"local co = coroutine.wrap(function()\n"
		"  return STORE:transaction(function(tx)\n"
		"    tx:namespace('n'):set('k', 'yielded')\n"
		"    coroutine.yield('in')\n"
		"    return 'out'\n"
		"  end)\n"
		"end)\n"
		"return co() .. ' ' .. co() .. ' ' .. NS:get('k')"), "in out yielded");
#endif
#if LUA_VERSION_NUM >= 502
	/* a coroutine abandoned inside its transaction: its collection aborts
	 * the transaction (the only way out before 5.4's coroutine.close) */
	CHECK_STR(run(L,
		"local co = coroutine.create(function()\n"
		"  STORE:transaction(function(tx)\n"
		"    tx:namespace('n'):set('k', 'abandoned')\n"
		"    coroutine.yield()\n"
		"  end)\n"
		"end)\n"
		"assert(coroutine.resume(co))\n"
		"local busy = select(3, STORE:transaction(function() end))\n"
		"co = nil\n"
		"collectgarbage() collectgarbage()\n"
		"assert(STORE:transaction(function(tx) tx:namespace('n'):set('z', 2) return 1 end))\n"
		"return busy .. ' ' .. tostring(NS:get('k'))"), "BUSY yielded");
#endif
	CHECK_STR(run(L, "STORE:close() return tostring(STORE)"), "instate.Store (closed)");
}

int main(void)
{
	char dir[] = "/tmp/instate-compat-XXXXXX";
	lua_State *L;
	char cmd[64];

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	L = luaL_newstate();
	luaL_openlibs(L);
	luaL_requiref(L, "instate.core", luaopen_instate_core, 0);
	lua_pop(L, 1);
	lua_pushcfunction(L, test_api);
	if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
		fprintf(stderr, "test_api raised: %s\n", lua_tostring(L, -1));
		failed++;
	}
	{
		char path[128];
		snprintf(path, sizeof path, "%s/s", dir);
		test_binding(L, path);
	}
	lua_close(L);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
