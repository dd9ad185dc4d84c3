/*
 * linstate.c - luaopen_instate_core, the module entry: builds the module
 * table from the binding's files (one per class, as luv does).
 */
#include "linstate.h"

int luaopen_instate_core(lua_State *L)
{
	int mod, scratch;

	luaL_checkversion(L);
	lua_newtable(L);
	mod = lua_gettop(L);
	linstate_open_core(L);
	linstate_open_codec(L);

	/* The classes share one scratch userdata (upvalue 1 of their methods). */
	linstate_push_scratch(L);
	scratch = lua_gettop(L);
	linstate_open_store(L, mod, scratch);
	linstate_open_txn(L, scratch);
	linstate_open_ns(L, scratch);
	linstate_open_iter(L, scratch);
	linstate_open_writer(L, scratch);
	lua_settop(L, mod);

	linstate_open_dump(L);
	linstate_open_check(L);
	linstate_open_fingerprint(L);
	linstate_open_entries(L);
	return 1;
}
