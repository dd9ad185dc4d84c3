/*
 * lcheck.h - the harness of the C tests of the Lua binding (test_lua_*.c):
 * counters, CHECK(cond), an expression worth cond, so a test can stop at a
 * failed step (`if (!CHECK(rc == 0)) return;`), and lcheck_open, a state
 * with the libraries, instate.core and the test's Lua set-up. Each test is its own
 * program, includes this once and ends with
 * `printf("%d passed, %d failed\n", passed, failed)`.
 */
#ifndef INSTATE_LCHECK_H
#define INSTATE_LCHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "linstate.h"

#include <lualib.h>

int luaopen_instate_core(lua_State *L);

static int passed, failed;

#define CHECK(cond) check((cond), #cond, __LINE__)
static int check(int ok, const char *what, int line)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "%s:%d: FAIL: %s\n", __FILE__, line, what);
	}
	return ok;
}

/* Open the standard libraries and instate.core in L (aborts if L is
 * NULL), then run code, a chunk given the module as its argument (...);
 * a failure prints Lua's message and aborts the test. */
static void lcheck_open(lua_State *L, const char *code)
{
	if (!L)
		abort();
	luaL_openlibs(L);
	luaL_requiref(L, "instate.core", luaopen_instate_core, 0);
	if (luaL_loadstring(L, code) != LUA_OK)
		abort();
	lua_insert(L, -2);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
		fprintf(stderr, "setup: %s\n", lua_tostring(L, -1));
		abort();
	}
}

#endif
