/*
 * test_embed.c - a host embedding Lua with no module search path at all
 * (package.path and package.cpath empty): instate_lua_openlibs() preloads
 * instate from what libinstate_lua carries, a script requires it, declares
 * defstate variables and saves them; a fresh state restores them, and the
 * C API reads the records the Lua layer wrote.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lcompat.h" /* the same C on every Lua */
#include "instate_lua.h"
#include "instate_os.h"
#include "check.h"
#include "os_scratch.h"

/* A Lua state with the standard libraries, no search path, instate preloaded. */
static lua_State *new_state(void)
{
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "path");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "cpath");
	lua_pop(L, 1);
	instate_lua_openlibs(L);
	return L;
}

/* Run chunk with the store path as `...`; its string result, or the error
 * ("error: ..."), in out. */
static void run(lua_State *L, const char *chunk, char *out, size_t outlen)
{
	const char *r;
	if (luaL_loadstring(L, chunk) != LUA_OK) {
		snprintf(out, outlen, "syntax: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return;
	}
	lua_pushstring(L, tpath("save"));
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		snprintf(out, outlen, "error: %s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return;
	}
	r = lua_tostring(L, -1);
	snprintf(out, outlen, "%s", r ? r : "(not a string)");
	lua_pop(L, 1);
}

#define EXPECT(L, chunk, want) do { \
	char got_[1024]; \
	run((L), (chunk), got_, sizeof got_); \
	if (strcmp(got_, (want)) == 0) passed++; \
	else { failed++; fprintf(stderr, "%s:%d: got '%s', want '%s'\n", __FILE__, __LINE__, \
	       got_, (want)); } \
} while (0)

static const char game[] =
	"local path = ...\n"
	"assert(package.path == '' and package.cpath == '', 'a search path is set')\n"
	"local instate = require 'instate'\n"
	"assert(instate.setup(path))\n"
	"local level = instate.defstate('level', 1)\n"
	"local hero = instate.defstate('hero', { hp = 20, items = {} })\n"
	"level:set(7)\n"
	"hero:get().items[1] = 'sword'\n"
	"assert(instate.save_all())\n"
	"instate.teardown()\n"
	"return 'saved'\n";

static const char restore[] =
	"local instate = require 'instate'\n"
	"assert(instate.setup(...))\n"
	"local level = instate.defstate('level', 1)\n"
	"local hero = instate.defstate('hero', { hp = 20, items = {} })\n"
	"local s = level:get() .. ' ' .. hero:get().hp .. ' ' .. hero:get().items[1]\n"
	"instate.teardown()\n"
	"return s\n";

/* Every module preloaded loads, each from the copy built in (its chunk
 * name), and nothing else is searched: a missing one fails at preload. */
static const char modules[] =
	"local names = {}\n"
	"for name in pairs(package.preload) do\n"
	"  if name == 'instate' or name:sub(1, 8) == 'instate.' then names[#names + 1] = name end\n"
	"end\n"
	"table.sort(names)\n"
	"for _, name in ipairs(names) do assert(require(name), name) end\n"
	"local info = debug.getinfo(require('instate').defstate, 'S')\n"
	"return table.concat(names, ' ') .. ' | ' .. info.source\n";

static int open_no_package(lua_State *L)
{
	instate_lua_openlibs(L);
	return 0;
}

int main(void)
{
	lua_State *L;
	instate_store *s;
	instate_txn *t;
	instate_ns *ns;
	instate_buf b = {0};
	instate_meta meta;
	char got[1024];
	int rc;

	if ((rc = os_scratch_root("embed")) != 0)
		return rc;

	L = new_state();
	EXPECT(L, game, "saved");
	lua_close(L);

	L = new_state();
	EXPECT(L, restore, "7 20 sword");
	run(L, modules, got, sizeof got);
	/* The layer's files this test knows of; others (added to lua/instate/)
	 * are required above as well. */
	CHECK(strncmp(got, "instate ", 8) == 0);
	CHECK(strstr(got, " instate.compat ") != NULL);
	CHECK(strstr(got, " instate.core ") != NULL);
	CHECK(strstr(got, " instate.defstate ") != NULL);
	CHECK(strstr(got, " instate.format ") != NULL);
	CHECK(strstr(got, " instate.map ") != NULL);
	CHECK(strstr(got, " instate.async ") != NULL);
	CHECK(strstr(got, " instate.backup ") != NULL);
	CHECK(strstr(got, " | @instate/defstate.lua") != NULL);
	if (!strstr(got, " | @instate/defstate.lua"))
		fprintf(stderr, "modules: %s\n", got);
	EXPECT(L, "local ok, err = pcall(require, 'instate.nosuch')\n"
		"return tostring(not ok and err:find(\"no field package.preload['instate.nosuch']\", 1, true) ~= nil)",
		"true");
	lua_close(L);

	/* luaL_requiref, as an engine that wants the C module alone does. */
	L = luaL_newstate();
	luaL_openlibs(L);
	luaL_requiref(L, "instate.core", luaopen_instate_core, 0);
	CHECK(lua_istable(L, -1));
	lua_getfield(L, -1, "encode");
	CHECK(lua_isfunction(L, -1));
	lua_pop(L, 2);
	lua_close(L);

	/* Without the package library: a clear error, raised. */
	L = luaL_newstate();
	lua_pushcfunction(L, open_no_package);
	CHECK(lua_pcall(L, 0, 0, 0) != LUA_OK);
	CHECK(strcmp(lua_tostring(L, -1), "instate_lua_openlibs: the package library is not open "
		"(open it first: luaL_openlibs)") == 0);
	lua_close(L);

	/* What the Lua layer saved, read through the C API: namespace "state",
	 * key = the variable's name, value = MessagePack (7 is fixint 0x07). */
	CHECK_RC(instate_store_open(tpath("save"), NULL, &s), 0);
	CHECK_RC(instate_ns_get(s, "state", 5, INSTATE_NS_STATE, &ns), 0);
	CHECK_RC(instate_txn_begin(s, NULL, INSTATE_TXN_READ, &t), 0);
	CHECK_RC(instate_get(t, ns, "level", 5, &b, &meta), 0);
	CHECK(b.len == 1 && b.data[0] == 0x07);
	instate_txn_abort(t);
	instate_buf_free(&b);
	instate_store_close(s);

	snprintf(got, sizeof got, "rm -rf '%s'", root);
	if (system(got) != 0)
		fprintf(stderr, "could not remove %s\n", root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
