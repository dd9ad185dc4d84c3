/*
 * lembed.c - instate_lua_openlibs: the Lua layer (the .lua files of lua/instate/),
 * built into libinstate_lua as data (cmake/embed_lua.cmake generates
 * instate_lua_modules.h at build time), preloaded so that a program
 * embedding Lua needs no module search path. Not part of the module
 * core.so, which is loaded from a search path and finds the layer there.
 */
#include "linstate.h"
#include "instate_lua.h"

struct lembed_module {
	const char *name;       /* module name for require */
	const char *chunkname;  /* what error messages and tracebacks show */
	const unsigned char *src;
	size_t len;
};

#include "instate_lua_modules.h"

/* The preload loader of one file (upvalue 1: its lembed_module): compiled
 * only when required, then run as the file searcher runs a file, with the
 * loader's arguments (the module name, and on 5.2+ the loader data) as
 * its `...`. */
static int lembed_load(lua_State *L)
{
	const struct lembed_module *m = lua_touserdata(L, lua_upvalueindex(1));
	int nargs = lua_gettop(L);

	if (luaL_loadbuffer(L, (const char *)m->src, m->len, m->chunkname) != LUA_OK)
		return luaL_error(L, "error loading module '%s' built into instate: %s", m->name,
			lua_tostring(L, -1));
	lua_insert(L, 1);
	lua_call(L, nargs, 1);
	return 1;
}

void instate_lua_openlibs(lua_State *L)
{
	const struct lembed_module *m;

	luaL_checkversion(L);
	/* package.preload through the registry's _LOADED.package: the same
	 * table on every Lua (5.3+ also keep it as _PRELOAD, 5.1 does not). */
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	if (lua_istable(L, -1))
		lua_getfield(L, -1, "package");
	else
		lua_pushnil(L);
	if (lua_istable(L, -1))
		lua_getfield(L, -1, "preload");
	else
		lua_pushnil(L);
	if (!lua_istable(L, -1))
		luaL_error(L, "instate_lua_openlibs: the package library is not open "
			"(open it first: luaL_openlibs)");
	lua_pushcfunction(L, luaopen_instate_core);
	lua_setfield(L, -2, "instate.core");
	for (m = lembed_modules; m->name; m++) {
		lua_pushlightuserdata(L, (void *)m);
		lua_pushcclosure(L, lembed_load, 1);
		lua_setfield(L, -2, m->name);
	}
	lua_pop(L, 3);
}
