/*
 * test_lua_defstate_threads.c - an engine with one Lua state per thread:
 * every state runs instate.setup() on the same path (one shared LMDB
 * environment), declares its own variables and saves them concurrently with
 * save_all(); then a fresh state restores every thread's variables. One
 * process is one owner: every state's setup succeeds while the main
 * state's holds the owner lock.
 *
 * Needs the Lua layer: package.path is set from INSTATE_SOURCE_DIR.
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lcompat.h" /* the same C on every Lua */

int luaopen_instate_core(lua_State *L);

#define THREADS 4
#define ROUNDS 40
#define STR_(x) #x
#define STR(x) STR_(x)

static int passed, failed;
static char store_path[256];
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;

static void check(int ok, const char *what)
{
	pthread_mutex_lock(&report_mu);
	if (ok) {
		passed++;
	} else {
		failed++;
		fprintf(stderr, "FAIL: %s\n", what);
	}
	pthread_mutex_unlock(&report_mu);
}

/* A Lua state that finds instate.core linked in and the Lua layer in the
 * source tree. */
static lua_State *new_state(void)
{
	const char *src = getenv("INSTATE_SOURCE_DIR");
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_instate_core);
	lua_setfield(L, -2, "instate.core");
	lua_pop(L, 2);
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", src ? src : ".", src ? src : ".");
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	return L;
}

/* Run chunk with (path, id) as ...; returns its string result or an error. */
static char *run(lua_State *L, const char *chunk, int id)
{
	char *out;
	if (luaL_loadstring(L, chunk) != LUA_OK) {
		out = strdup(lua_tostring(L, -1));
		return out;
	}
	lua_pushstring(L, store_path);
	lua_pushinteger(L, id);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
		size_t n = strlen(lua_tostring(L, -1)) + 8;
		out = malloc(n);
		snprintf(out, n, "error: %s", lua_tostring(L, -1));
		return out;
	}
	out = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)");
	return out;
}

static const char *saver =
	"local path, id = ...\n"
	"local instate = require 'instate'\n"
	"local math_type = require('instate.compat').math_type\n"
	"assert(instate.setup(path))\n"
	"local round = instate.defstate('round' .. id, 0)\n"
	"local log = instate.defstate('log' .. id, {})\n"
	"for i = 1, " STR(ROUNDS) " do\n"
	"  round:set(i)\n"
	"  log:get()[#log:get() + 1] = i * id\n"
	"  assert(math_type(instate.save_all()) == 'integer')\n"
	"end\n"
	"instate.teardown()\n"
	"return 'ok'\n";

static const char *restorer =
	"local path = ...\n"
	"local instate = require 'instate'\n"
	"assert(instate.setup(path))\n"
	"local parts = {}\n"
	"for id = 1, " STR(THREADS) " do\n"
	"  local round = instate.defstate('round' .. id, -1)\n"
	"  local log = instate.defstate('log' .. id, {})\n"
	"  local sum = 0\n"
	"  for _, v in ipairs(log:get()) do sum = sum + v end\n"
	"  parts[#parts + 1] = ('%d:%d:%d:%d'):format(id, round:get(), #log:get(), sum)\n"
	"end\n"
	"instate.teardown()\n"
	"return table.concat(parts, ' ')\n";

static void *thread_main(void *arg)
{
	int id = (int)(size_t)arg;
	lua_State *L = new_state();
	char *out = run(L, saver, id);
	char what[512];
	snprintf(what, sizeof what, "thread %d saved (%s)", id, out);
	check(strcmp(out, "ok") == 0, what);
	free(out);
	lua_close(L);
	return NULL;
}

int main(void)
{
	pthread_t th[THREADS];
	char tmpl[] = "/tmp/instate-defstate-threads.XXXXXX";
	char expect[256] = "", cmd[300], *out;
	lua_State *L;
	int i;

	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(store_path, sizeof store_path, "%s/save", tmpl);

	/* Both states in this thread and the workers share one environment. */
	L = new_state();
	out = run(L, "local path = ...; local instate = require 'instate'\n"
	             "instate.setup(path); instate.defstate('main', 1):set(2)\n"
	             "return tostring(instate.save_all())", 0);
	check(strcmp(out, "1") == 0, "the main state saves first");
	free(out);

	for (i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, thread_main, (void *)(size_t)(i + 1));
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);

	/* ROUNDS saves per thread, each a revision of its own, plus main's. */
	out = run(L, "local instate = require 'instate'\n"
	             "return tostring(instate.setup((...)):revision())", 0);
	snprintf(cmd, sizeof cmd, "%d", 1 + THREADS * ROUNDS);
	check(strcmp(out, cmd) == 0, "every save_all of every thread committed once");
	if (strcmp(out, cmd))
		fprintf(stderr, "  got revision %s, expected %s\n", out, cmd);
	free(out);
	lua_close(L);

	for (i = 1; i <= THREADS; i++) {
		char part[64];
		/* sum of i * id for i = 1..ROUNDS */
		snprintf(part, sizeof part, "%s%d:%d:%d:%d", i > 1 ? " " : "", i, ROUNDS, ROUNDS,
			i * ROUNDS * (ROUNDS + 1) / 2);
		strcat(expect, part);
	}
	L = new_state();
	out = run(L, restorer, 0);
	check(strcmp(out, expect) == 0, "a fresh state restores every thread's variables");
	if (strcmp(out, expect))
		fprintf(stderr, "  got      %s\n  expected %s\n", out, expect);
	free(out);
	lua_close(L);

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpl);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
