/*
 * test_lua_entries.c - the entry cache of big tracked tables (lentries.c)
 * under memory errors, which only C can cause: an allocator that fails
 * the n-th Lua allocation from a point on, for every n up to where a save
 * no longer allocates. A save raised "not enough memory" must leave the
 * cache usable: the next save (memory back) updates it again, not a full
 * encode for the rest of the run.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linstate.h"

#include <lualib.h>


#include "lcheck.h"

/* -1: never fail; else the allocations (growing ones: Lua assumes a
 * shrink never fails) left before each one fails. */
static long fail_after = -1;

static void *fail_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	if (nsize == 0) {
		free(ptr);
		return NULL;
	}
	if (fail_after >= 0 && (ptr == NULL || nsize > osize)) {
		if (fail_after == 0)
			return NULL;
		fail_after--;
	}
	return realloc(ptr, nsize);
}

static const char setup_code[] =
	"local core = ...\n"
	"root, dirty, owner = {}, {}, setmetatable({}, { __mode = 'k' })\n"
	"for i = 1, 1100 do root['k' .. i] = i end\n"
	"cache = core._entries(root, dirty, owner)\n"
	"cache:encode_len()\n"
	"full = function() return #core.encode(root, nil, { canonical = true }) end\n"
	"-- a written entry of many tables: the update's owner walk allocates\n"
	"function write(n)\n"
	"  local v = {}\n"
	"  for i = 1, 64 do v[i] = { n, i } end\n"
	"  root.k1 = v\n"
	"  dirty.k1 = true\n"
	"end\n"
	"function save() return cache:encode_len() end\n"
	"function clean() return next(dirty) == nil and (cache:state()) end\n";

static int call_global(lua_State *L, const char *fn, long fail)
{
	int rc;
	lua_getglobal(L, fn);
	fail_after = fail;
	rc = lua_pcall(L, 0, 1, 0);
	fail_after = -1;
	return rc;
}

int main(void)
{
	lua_State *L = lua_newstate(fail_alloc, NULL);
	long n;
	int raised = 0;

	lcheck_open(L, setup_code);
	for (n = 0; n < 64; n++) {
		lua_getglobal(L, "write");
		lua_pushinteger(L, n);
		if (lua_pcall(L, 1, 0, 0) != LUA_OK)
			abort();
		if (call_global(L, "save", n) != LUA_OK) {
			raised++;
			CHECK(strcmp(lua_tostring(L, -1), "not enough memory") == 0);
		}
		lua_settop(L, 0);
		/* memory back: the save updates the cache (the written set
		 * emptied, the cache ready) and gives the full encode's length */
		if (!CHECK(call_global(L, "save", -1) == LUA_OK))
			break;
		CHECK(call_global(L, "full", -1) == LUA_OK && lua_tointeger(L, -1) == lua_tointeger(L, -2));
		lua_settop(L, 0);
		CHECK(call_global(L, "clean", -1) == LUA_OK && lua_toboolean(L, -1));
		lua_settop(L, 0);
		/* and the next write goes through the update, not the full
		 * encode of a cache left busy */
		lua_getglobal(L, "write");
		lua_pushinteger(L, n + 1000);
		if (lua_pcall(L, 1, 0, 0) != LUA_OK)
			abort();
		CHECK(call_global(L, "save", -1) == LUA_OK);
		lua_settop(L, 0);
		CHECK(call_global(L, "clean", -1) == LUA_OK && lua_toboolean(L, -1));
		lua_settop(L, 0);
	}
	CHECK(raised > 0);
	lua_close(L);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
