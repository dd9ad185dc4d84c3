/*
 * lcompat.h - the one place for Lua version specifics.
 *
 * The binding is written against the Lua 5.4 API. Everything that differs
 * in LuaJIT and Lua 5.1-5.3 (user values, to-be-closed slots, integer
 * subtype, warn) goes through the macros below, so porting touches this file
 * alone.
 */
#ifndef LCOMPAT_H
#define LCOMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 504
#error "instate currently builds against Lua 5.4; port lcompat.h first"
#endif

/* A full userdata with n user values (parents kept alive by children). */
#define lcompat_newuserdata(L, sz, nuv) lua_newuserdatauv((L), (sz), (nuv))
#define lcompat_getuservalue(L, idx, n) lua_getiuservalue((L), (idx), (n))
#define lcompat_setuservalue(L, idx, n) lua_setiuservalue((L), (idx), (n))

/* Mark the slot idx of the running C function to-be-closed: closed when the
 * function returns, raises, or its coroutine is closed (coroutine.close).
 * Before 5.4 there is no such thing: a port makes this a no-op, and a
 * transaction left in an abandoned coroutine is then aborted by its
 * finalizer only. */
#define lcompat_toclose(L, idx) lua_toclose((L), (idx))

/* Whether the collector runs, so that an allocation may call finalizers.
 * False inside a finalizer (the collector stops itself while one runs:
 * lua_gc() answers -1 from 5.4.4 on, "not running" before) and while the
 * program has stopped it. */
#define lcompat_gc_running(L) (lua_gc((L), LUA_GCISRUNNING) == 1)

#endif /* LCOMPAT_H */
