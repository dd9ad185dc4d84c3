/**
 * @file instate_lua.h
 * @brief instate for C and C++ programs that embed Lua.
 *
 * libinstate_lua (CMake: instate::instate_lua; pkg-config: instate-lua)
 * holds the Lua binding, built for one Lua (5.1, 5.2, 5.3, 5.4 or LuaJIT:
 * the one it was configured with), and the Lua layer (the .lua files of lua/instate/)
 * compiled in as data, so a program that links it needs no file on
 * package.path or package.cpath. It links the static core (libinstate.a):
 * link it, not libinstate as well, and link Lua after it.
 *
 * This header does not include lua.h (the program includes its own):
 * `struct lua_State` is the type every Lua's lua.h names lua_State.
 *
 * @code
 *   lua_State *L = luaL_newstate();
 *   luaL_openlibs(L);
 *   instate_lua_openlibs(L);        // require "instate" now works
 * @endcode
 * or, for the C module alone (what `require "instate.core"` gives):
 * @code
 *   luaL_requiref(L, "instate.core", luaopen_instate_core, 0);
 *   lua_pop(L, 1);
 * @endcode
 */
#ifndef INSTATE_LUA_H
#define INSTATE_LUA_H

#include "instate.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lua_State;

/**
 * @brief Open the C module instate.core: push its table, as require does.
 *
 * The lua_CFunction behind `require "instate.core"`. Raises (a Lua error)
 * if the Lua state is not the Lua version the library was built for.
 * @param[in] L a Lua state with the base library open.
 * @return 1 (the module table is on the stack).
 */
INSTATE_API int luaopen_instate_core(struct lua_State *L);

/**
 * @brief Preload instate: the module and every instate.* module it needs.
 *
 * Sets package.preload["instate.core"] (luaopen_instate_core) and, for
 * each Lua file of the layer, package.preload["instate"] (init.lua) and
 * package.preload["instate.<name>"] (<name>.lua). Nothing is run or
 * compiled until `require` asks for a module; each file is then compiled
 * from the copy built into the library (chunk names "@instate/<name>.lua",
 * as error messages and tracebacks show them). An entry already in
 * package.preload is replaced.
 *
 * Call it once per Lua state, after luaL_openlibs (or at least after the
 * package library and the base, string, table, math libraries the layer
 * uses are open). Raises (a Lua error) if the package library is not open,
 * or the Lua state is not the Lua version the library was built for: call
 * it where an error can be caught (lua_pcall), or in a fresh state.
 * @param[in] L the Lua state.
 */
INSTATE_API void instate_lua_openlibs(struct lua_State *L);

#ifdef __cplusplus
}
#endif

#endif /* INSTATE_LUA_H */
