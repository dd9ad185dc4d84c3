/*
 * lfault.c - the Lua switch of the fault shim (spec/fault/shim.c), test-only.
 *
 *   local fault = require "fault"
 *   fault.arm()                       -- read FAULT_* and start counting
 *   local calls, hits = fault.disarm()
 *
 * The shim is found in the process (LD_PRELOAD) by name, so this module
 * works only in a process started with it preloaded, and says so otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

#include <lauxlib.h>
#include <lua.h>

typedef int (*arm_fn)(void);
typedef void (*disarm_fn)(long *, long *);

static arm_fn shim_arm;
static disarm_fn shim_disarm;

static int l_arm(lua_State *L)
{
	if (shim_arm() != 0)
		return luaL_error(L, "fault.arm: bad FAULT_CALLS or FAULT_ERRNO");
	return 0;
}

static int l_disarm(lua_State *L)
{
	long calls, hits;
	shim_disarm(&calls, &hits);
	lua_pushinteger(L, calls);
	lua_pushinteger(L, hits);
	return 2;
}

int luaopen_fault(lua_State *L)
{
	shim_arm = (arm_fn)dlsym(RTLD_DEFAULT, "instate_fault_arm");
	shim_disarm = (disarm_fn)dlsym(RTLD_DEFAULT, "instate_fault_disarm");
	if (!shim_arm || !shim_disarm)
		return luaL_error(L, "fault: the shim is not loaded (LD_PRELOAD=libfaultshim.so)");
	lua_newtable(L);
	lua_pushcfunction(L, l_arm);
	lua_setfield(L, -2, "arm");
	lua_pushcfunction(L, l_disarm);
	lua_setfield(L, -2, "disarm");
	return 1;
}
