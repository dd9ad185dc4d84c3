/*
 * lcompat.h - the one place for Lua version specifics.
 *
 * The binding is written against the Lua 5.4 API, and builds from the same
 * source against Lua 5.1, 5.2, 5.3 and LuaJIT 2.1: this file gives the
 * older Luas the 5.4 names (as static inline functions and macros, the way
 * lua-compat-5.3 does), so no other file needs an #if on the Lua version.
 * On 5.4 every name below is Lua's own: the layer costs nothing there.
 *
 * Where the older Luas cannot do what 5.4 does, the difference is said at
 * the definition and in README ("Lua versions") and docs/DESIGN.md:
 *  - user values: 5.1/LuaJIT keep a userdata's n values in its environment
 *    table, 5.2/5.3 in a table that is its one user value;
 *  - to-be-closed slots (lua_toclose, __close) do not exist before 5.4:
 *    explicit close() and __gc (which aborts, never commits) stand in;
 *  - 5.1/LuaJIT cannot yield across a C call: a transaction function that
 *    yields raises a clear error there (lua_pcallk below);
 *  - integers: 5.1, 5.2 and LuaJIT have doubles only. An "integer" is a
 *    number with an integral value within the range of lua_Integer
 *    (lua_isinteger, lua_tointegerx, luaL_checkinteger below), and
 *    lua_pushinteger pushes a double, exact up to 2^53.
 */
#ifndef LCOMPAT_H
#define LCOMPAT_H

#include <lua.h>
#include <lauxlib.h>

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 501 || LUA_VERSION_NUM > 504
#error "instate builds against Lua 5.1, 5.2, 5.3, 5.4 or LuaJIT 2.1"
#endif

/* ======================================================================== */
/* Lua 5.1 and LuaJIT: what 5.2 added                                       */
/* ======================================================================== */
#if LUA_VERSION_NUM == 501

#ifndef LUA_OK
#define LUA_OK 0
#endif

#define lua_absindex(L, i) \
	((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#define lua_rawlen(L, i) lua_objlen((L), (i))

/* The user value of a userdata is its environment (always a table). One
 * made without user values has the creating C function's, which reads as
 * none (every binding function shares one environment). */
#define LCOMPAT_GETUV(L, i) \
	(lua_getfenv((L), (i)), lua_rawequal((L), -1, LUA_ENVIRONINDEX) ? \
	 (lua_pop((L), 1), lua_pushnil(L)) : (void)0)
#define LCOMPAT_SETUV(L, i) ((void)lua_setfenv((L), (i)))

static inline int lcompat_rawgetp(lua_State *L, int idx, const void *p)
{
	idx = lua_absindex(L, idx);
	lua_pushlightuserdata(L, (void *)p);
	lua_rawget(L, idx);
	return lua_type(L, -1);
}
#define lua_rawgetp lcompat_rawgetp

static inline void lcompat_rawsetp(lua_State *L, int idx, const void *p)
{
	idx = lua_absindex(L, idx);
	lua_pushlightuserdata(L, (void *)p);
	lua_insert(L, -2);
	lua_rawset(L, idx);
}
#define lua_rawsetp lcompat_rawsetp

/* LuaJIT has these three; 5.1 has not. One definition serves both. */
static inline void lcompat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
	luaL_checkstack(L, nup, "too many upvalues");
	for (; l->name; l++) {
		int i;
		for (i = 0; i < nup; i++)
			lua_pushvalue(L, -nup);
		lua_pushcclosure(L, l->func, nup);
		lua_setfield(L, -(nup + 2), l->name);
	}
	lua_pop(L, nup);
}
#define luaL_setfuncs lcompat_setfuncs

static inline void lcompat_setmetatable(lua_State *L, const char *tname)
{
	luaL_getmetatable(L, tname);
	lua_setmetatable(L, -2);
}
#define luaL_setmetatable lcompat_setmetatable

static inline void *lcompat_testudata(lua_State *L, int idx, const char *tname)
{
	void *p = lua_touserdata(L, idx);
	if (p && lua_getmetatable(L, idx)) {
		luaL_getmetatable(L, tname);
		if (!lua_rawequal(L, -1, -2))
			p = NULL;
		lua_pop(L, 2);
		return p;
	}
	return NULL;
}
#define luaL_testudata lcompat_testudata

/* 5.1 has no check of the core's number and struct sizes. */
#define luaL_checkversion(L) ((void)(L))

/* lua_arith, for numbers (and strings that convert) only: 5.1 has no
 * arithmetic entry point. The binding adds checked numbers (ns:incr). */
#define LUA_OPADD 0
#define LUA_OPSUB 1
#define LUA_OPMUL 2
#define LUA_OPDIV 3
#define LUA_OPUNM 12
static inline void lcompat_arith(lua_State *L, int op)
{
	lua_Number a, b, r;
	int n = op == LUA_OPUNM ? 1 : 2;
	if (!lua_isnumber(L, -1) || !lua_isnumber(L, -n))
		luaL_error(L, "attempt to perform arithmetic on a %s value",
			luaL_typename(L, lua_isnumber(L, -1) ? -n : -1));
	b = lua_tonumber(L, -1);
	a = lua_tonumber(L, -n);
	switch (op) {
	case LUA_OPADD: r = a + b; break;
	case LUA_OPSUB: r = a - b; break;
	case LUA_OPMUL: r = a * b; break;
	case LUA_OPDIV: r = a / b; break;
	default: r = -b; break;
	}
	lua_pop(L, n);
	lua_pushnumber(L, r);
}
#define lua_arith lcompat_arith

static inline int lcompat_getsubtable(lua_State *L, int idx, const char *fname)
{
	lua_getfield(L, idx, fname);
	if (lua_istable(L, -1))
		return 1;
	lua_pop(L, 1);
	idx = lua_absindex(L, idx);
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_setfield(L, idx, fname);
	return 0;
}
#define luaL_getsubtable lcompat_getsubtable

static inline void lcompat_requiref(lua_State *L, const char *modname, lua_CFunction openf,
                                    int glb)
{
	lua_pushcfunction(L, openf);
	lua_pushstring(L, modname);
	lua_call(L, 1, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
	lua_pushvalue(L, -2);
	lua_setfield(L, -2, modname);
	lua_pop(L, 1);
	if (glb) {
		lua_pushvalue(L, -1);
		lua_setglobal(L, modname);
	}
}
#define luaL_requiref lcompat_requiref

/*
 * Continuations. A C function cannot be yielded across on 5.1 or LuaJIT
 * (LuaJIT's pcall is yieldable from Lua code only), so lua_pcallk is a
 * plain lua_pcall there and the binding calls its continuation itself with
 * the status, as it does on 5.4 when nothing yielded. A yield inside the
 * protected function fails in Lua's coroutine.yield; its message is made to
 * say why, instead of Lua's bare "attempt to yield across ... boundary".
 */
typedef ptrdiff_t lua_KContext;
static inline int lcompat_pcall_noyield(lua_State *L, int nargs, int nresults, int errfunc)
{
	int status = lua_pcall(L, nargs, nresults, errfunc);
	static const char why[] = "cannot yield inside a transaction on Lua 5.1 and LuaJIT";
	const char *msg;
	if (status == LUA_ERRRUN && lua_type(L, -1) == LUA_TSTRING &&
	    strstr((msg = lua_tostring(L, -1)), "attempt to yield across") &&
	    !strstr(msg, why)) {  /* said once, by the innermost transaction */
		lua_pushfstring(L, "%s (%s)", why, msg);
		lua_remove(L, -2);
	}
	return status;
}
#define lua_pcallk(L, n, r, f, ctx, k) lcompat_pcall_noyield((L), (n), (r), (f))
#define LCOMPAT_KFUNCTION(k)
#define LCOMPAT_K(k) k

#endif /* 501 */

/* ======================================================================== */
/* Lua 5.2                                                                  */
/* ======================================================================== */
#if LUA_VERSION_NUM == 502

#define LCOMPAT_GETUV(L, i) lua_getuservalue((L), (i))
#define LCOMPAT_SETUV(L, i) lua_setuservalue((L), (i))

static inline int lcompat_rawgetp(lua_State *L, int idx, const void *p)
{
	(lua_rawgetp)(L, idx, p);
	return lua_type(L, -1);
}
#define lua_rawgetp lcompat_rawgetp

/*
 * Continuations: 5.2's lua_pcallk takes a plain lua_CFunction that asks
 * lua_getctx for the status and context. LCOMPAT_KFUNCTION(k), written
 * after the definition of a 5.3-style continuation
 * `int k(lua_State *L, int status, lua_KContext ctx)`, defines the 5.2
 * function that calls it; LCOMPAT_K(k) names what to hand lua_pcallk.
 */
typedef int lua_KContext;
#define LCOMPAT_KFUNCTION(k) \
	static int k##_lcompat52(lua_State *L) \
	{ \
		int ctx = 0; \
		int status = lua_getctx(L, &ctx); \
		return k(L, status, ctx); \
	}
#define LCOMPAT_K(k) k##_lcompat52

#endif /* 502 */

#if LUA_VERSION_NUM >= 503
#define LCOMPAT_KFUNCTION(k)
#define LCOMPAT_K(k) k
/* The (first) user value of a userdata. */
#if LUA_VERSION_NUM >= 504
#define LCOMPAT_GETUV(L, i) ((void)lua_getiuservalue((L), (i), 1))
#define LCOMPAT_SETUV(L, i) ((void)lua_setiuservalue((L), (i), 1))
#else
#define LCOMPAT_GETUV(L, i) ((void)lua_getuservalue((L), (i)))
#define LCOMPAT_SETUV(L, i) lua_setuservalue((L), (i))
#endif
#endif

/* ======================================================================== */
/* Lua 5.1, 5.2 and LuaJIT: what 5.3 added                                  */
/* ======================================================================== */
#if LUA_VERSION_NUM <= 502

/* Typed getters: 5.3 returns the type of the value pushed. */
static inline int lcompat_getfield(lua_State *L, int idx, const char *k)
{
	(lua_getfield)(L, idx, k);
	return lua_type(L, -1);
}
#define lua_getfield lcompat_getfield

static inline int lcompat_gettable(lua_State *L, int idx)
{
	(lua_gettable)(L, idx);
	return lua_type(L, -1);
}
#define lua_gettable lcompat_gettable

static inline int lcompat_rawget(lua_State *L, int idx)
{
	(lua_rawget)(L, idx);
	return lua_type(L, -1);
}
#define lua_rawget lcompat_rawget

static inline int lcompat_rawgeti(lua_State *L, int idx, lua_Integer n)
{
	(lua_rawgeti)(L, idx, (int)n);
	return lua_type(L, -1);
}
#define lua_rawgeti lcompat_rawgeti

/* 5.2's lua_Unsigned is 32 bits wide; 5.3's is as wide as lua_Integer. */
typedef unsigned long long lcompat_Unsigned;
#define lua_Unsigned lcompat_Unsigned

#define LUA_MAXINTEGER PTRDIFF_MAX
#define LUA_MININTEGER PTRDIFF_MIN
#define LUAI_UACINT LUA_INTEGER

/*
 * Integers, on a Lua whose numbers are all doubles: a number is an integer
 * when its value is integral and lua_Integer holds it (as 5.3's float to
 * integer conversion: 1.0 is one, 1.5 and 2^63 are not). The range check
 * comes first: casting a double that does not fit is undefined behaviour.
 */
static inline int lcompat_num2int(lua_Number n, lua_Integer *out)
{
	if (n >= (lua_Number)LUA_MININTEGER && n < -(lua_Number)LUA_MININTEGER &&
	    (lua_Number)(lua_Integer)n == n) {
		*out = (lua_Integer)n;
		return 1;
	}
	return 0;
}

/* -0.0 is not one: it would become integer 0 and lose its sign (5.3 and
 * 5.4 hold it as a float). */
static inline int lcompat_isinteger(lua_State *L, int idx)
{
	lua_Integer i;
	lua_Number n;
	return lua_type(L, idx) == LUA_TNUMBER &&
	       lcompat_num2int((n = lua_tonumber(L, idx)), &i) && !(i == 0 && signbit(n));
}
#define lua_isinteger lcompat_isinteger

/* 5.3's lua_tointegerx: numbers and numeric strings with an integral
 * value (5.1 and 5.2 truncate 1.5 to 1 and call it a success). */
static inline lua_Integer lcompat_tointegerx(lua_State *L, int idx, int *isnum)
{
	lua_Integer i = 0;
	int ok = lua_isnumber(L, idx) && lcompat_num2int(lua_tonumber(L, idx), &i);
	if (isnum)
		*isnum = ok;
	return ok ? i : 0;
}
#undef lua_tointeger
#define lua_tointegerx lcompat_tointegerx
#define lua_tointeger(L, i) lcompat_tointegerx((L), (i), NULL)

static inline void lcompat_rotate(lua_State *L, int idx, int n)
{
	idx = lua_absindex(L, idx);
	for (; n > 0; n--)
		lua_insert(L, idx);
	for (; n < 0; n++) {
		lua_pushvalue(L, idx);
		lua_remove(L, idx);
	}
}
#define lua_rotate lcompat_rotate

/*
 * lua_pushfstring and luaL_error with 5.3's %I (a lua_Integer): 5.1 and
 * 5.2 know %s %d %f %p %c %% only, and would misread the arguments after
 * an %I. The conversions are pushed one by one, then concatenated.
 */
static inline const char *lcompat_pushvfstring(lua_State *L, const char *fmt, va_list ap)
{
	const char *e;
	luaL_checkstack(L, 4, "pushfstring");
	lua_pushliteral(L, "");
	while ((e = strchr(fmt, '%')) != NULL) {
		lua_pushlstring(L, fmt, (size_t)(e - fmt));
		switch (e[1]) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			lua_pushstring(L, s ? s : "(null)");
			break;
		}
		case 'd': (lua_pushfstring)(L, "%d", va_arg(ap, int)); break;
		case 'c': (lua_pushfstring)(L, "%c", va_arg(ap, int)); break;
		case 'f': (lua_pushfstring)(L, "%f", va_arg(ap, LUAI_UACNUMBER)); break;
		case 'p': (lua_pushfstring)(L, "%p", va_arg(ap, void *)); break;
		case 'I': {
			char buf[32];
			snprintf(buf, sizeof buf, "%lld", (long long)va_arg(ap, LUAI_UACINT));
			lua_pushstring(L, buf);
			break;
		}
		case '%': lua_pushliteral(L, "%"); break;
		default:
			lua_pushlstring(L, e, e[1] ? 2 : 1);
			break;
		}
		lua_concat(L, 3);
		fmt = e + (e[1] ? 2 : 1);
	}
	lua_pushstring(L, fmt);
	lua_concat(L, 2);
	return lua_tostring(L, -1);
}

static inline const char *lcompat_pushfstring(lua_State *L, const char *fmt, ...)
{
	const char *s;
	va_list ap;
	va_start(ap, fmt);
	s = lcompat_pushvfstring(L, fmt, ap);
	va_end(ap);
	return s;
}
#define lua_pushfstring lcompat_pushfstring

static inline int lcompat_error(lua_State *L, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	luaL_where(L, 1);
	lcompat_pushvfstring(L, fmt, ap);
	va_end(ap);
	lua_concat(L, 2);
	return lua_error(L);
}
#define luaL_error lcompat_error

/* 5.3's message for 1.5 where an integer is expected. */
static inline lua_Integer lcompat_checkinteger(lua_State *L, int arg)
{
	int ok;
	lua_Integer i = lcompat_tointegerx(L, arg, &ok);
	if (!ok) {
		if (lua_isnumber(L, arg))
			luaL_argerror(L, arg, "number has no integer representation");
		else
			luaL_checknumber(L, arg); /* the type error */
	}
	return i;
}
#define luaL_checkinteger lcompat_checkinteger
#define luaL_optinteger(L, arg, def) \
	(lua_isnoneornil((L), (arg)) ? (lua_Integer)(def) : lcompat_checkinteger((L), (arg)))

#endif /* <= 502 */

/* ======================================================================== */
/* Lua 5.1, 5.2, 5.3 and LuaJIT: what 5.4 added                             */
/* ======================================================================== */
#if LUA_VERSION_NUM <= 503

#if LUA_VERSION_NUM == 503
#define LCOMPAT_GETUV(L, i) ((void)lua_getuservalue((L), (i)))
#define LCOMPAT_SETUV(L, i) lua_setuservalue((L), (i))
#endif

/*
 * n user values: a table of n slots, the userdata's one user value (5.2,
 * 5.3) or its environment (5.1, LuaJIT); none when n is 0. Always a table,
 * even for n == 1: a getter cannot tell a single value that is a table from
 * the table of values, and the binding's user values are read once per
 * call at most (the table costs 5.1-5.3 one allocation per handle).
 */
static inline void *lcompat_newuserdatauv(lua_State *L, size_t sz, int nuv)
{
	void *p = lua_newuserdata(L, sz);
	if (nuv > 0) {
		lua_createtable(L, nuv, 0);
		LCOMPAT_SETUV(L, -2);
	}
	return p;
}
#define lua_newuserdatauv lcompat_newuserdatauv

static inline int lcompat_getiuservalue(lua_State *L, int idx, int n)
{
	LCOMPAT_GETUV(L, idx);
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 1);
		lua_pushnil(L);
		return LUA_TNONE;
	}
	lua_rawgeti(L, -1, n);
	lua_remove(L, -2);
	return lua_type(L, -1);
}
#define lua_getiuservalue lcompat_getiuservalue

static inline int lcompat_setiuservalue(lua_State *L, int idx, int n)
{
	idx = lua_absindex(L, idx);
	LCOMPAT_GETUV(L, idx);
	if (lua_type(L, -1) != LUA_TTABLE) {
		lua_pop(L, 2);
		return 0;
	}
	lua_insert(L, -2);
	lua_rawseti(L, -2, n);
	lua_pop(L, 1);
	return 1;
}
#define lua_setiuservalue lcompat_setiuservalue

/* Before 5.4 there are no to-be-closed slots: a handle's explicit close()
 * or, as the last resort, its __gc (which aborts, never commits) ends it. */
#define lua_toclose(L, idx) ((void)(L), (void)(idx))

/* 5.4's luaL_typeerror (__name of the value's metatable, if any). */
static inline int lcompat_typeerror(lua_State *L, int arg, const char *tname)
{
	const char *typearg = NULL;
	if (luaL_getmetafield(L, arg, "__name") && lua_type(L, -1) == LUA_TSTRING)
		typearg = lua_tostring(L, -1);
	else if (lua_type(L, arg) == LUA_TLIGHTUSERDATA)
		typearg = "light userdata";
	else if (lua_getmetatable(L, arg)) {
		/* 5.1 and 5.2 name no metatable (__name is 5.3's): the registry
		 * key luaL_newmetatable gave it, such as "FILE*" (an error path:
		 * the scan costs nothing elsewhere) */
		lua_pushnil(L);
		while (lua_next(L, LUA_REGISTRYINDEX)) {
			if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, -3)) {
				typearg = lua_tostring(L, -2);
				break;
			}
			lua_pop(L, 1);
		}
	}
	if (!typearg)
		typearg = luaL_typename(L, arg);
	return luaL_argerror(L, arg, lua_pushfstring(L, "%s expected, got %s", tname, typearg));
}
#define luaL_typeerror lcompat_typeerror

#endif /* <= 503 */

/* ======================================================================== */
/* The binding's names (kept: every binding file uses them)                 */
/* ======================================================================== */

/* A full userdata with n user values (parents kept alive by children). */
#define lcompat_newuserdata(L, sz, nuv) lua_newuserdatauv((L), (sz), (nuv))
#define lcompat_getuservalue(L, idx, n) lua_getiuservalue((L), (idx), (n))
#define lcompat_setuservalue(L, idx, n) lua_setiuservalue((L), (idx), (n))

/* Mark the slot idx of the running C function to-be-closed: closed when the
 * function returns, raises, or its coroutine is closed (coroutine.close).
 * Before 5.4 a no-op: a transaction left in an abandoned coroutine is then
 * aborted by its finalizer only. */
#define lcompat_toclose(L, idx) lua_toclose((L), (idx))

/* Whether the collector runs, so that an allocation may call finalizers.
 * False inside a finalizer (the collector stops itself while one runs:
 * lua_gc() answers -1 from 5.4.4 on, "not running" before; LuaJIT sets
 * the threshold LUA_GCISRUNNING reads to "stopped") and while the program
 * has stopped it. 5.2, 5.3 and LuaJIT take a third argument. Plain 5.1
 * cannot tell, and says running: a finalizer's encode there may reuse the
 * context of the caller's (README, Lua versions). */
#if LUA_VERSION_NUM >= 504
#define lcompat_gc_running(L) (lua_gc((L), LUA_GCISRUNNING) == 1)
#elif defined(LUA_GCISRUNNING)
#define lcompat_gc_running(L) (lua_gc((L), LUA_GCISRUNNING, 0) == 1)
#else
#define lcompat_gc_running(L) ((void)(L), 1)
#endif
/* 1 where lcompat_gc_running() tells a finalizer's call apart (all but
 * plain 5.1). */
#if LUA_VERSION_NUM >= 502 || defined(LUA_GCISRUNNING)
#define LCOMPAT_GC_TELLS_FINALIZERS 1
#else
#define LCOMPAT_GC_TELLS_FINALIZERS 0
#endif

/* Stop the collector for a bulk build that makes no garbage (setup's read
 * of every saved variable): collecting while a large heap is being built
 * marks it again at every cycle that the growth starts, for nothing. Stops
 * it only when it runs (never one the program stopped, nor inside a
 * finalizer) and returns whether it did; lcompat_gc_resume() restarts only
 * what was stopped, so the program's settings (mode, pause, step) are left
 * as they were. Plain 5.1 cannot tell whether the program stopped it, so
 * there it is left alone. */
#if LUA_VERSION_NUM >= 504
#define lcompat_gc_pause(L) (lcompat_gc_running(L) ? (lua_gc((L), LUA_GCSTOP), 1) : 0)
#define lcompat_gc_resume(L, paused) ((paused) ? (void)lua_gc((L), LUA_GCRESTART) : (void)0)
#elif LCOMPAT_GC_TELLS_FINALIZERS
#define lcompat_gc_pause(L) (lcompat_gc_running(L) ? (lua_gc((L), LUA_GCSTOP, 0), 1) : 0)
#define lcompat_gc_resume(L, paused) ((paused) ? (void)lua_gc((L), LUA_GCRESTART, 0) : (void)0)
#else
#define lcompat_gc_pause(L) ((void)(L), 0)
#define lcompat_gc_resume(L, paused) ((void)(L), (void)(paused))
#endif

/* Whether stopping the collector around a bulk build (setup's restore:
 * every object made at once, no garbage) pays. On the incremental-only
 * Luas it does: collecting during the build marks the growing heap over
 * and over (LuaJIT, 100k variables: 180 ms paused, 210 ms not). Not on
 * 5.4: LUA_GCRESTART sets the debt to zero, so the next allocation starts
 * the work on the whole new heap at once; in generational mode (lua.c's
 * default) that is a major collection right after the restore (5.4, 100k
 * variables: 330 ms paused, 245 ms not), where a running collector does
 * minor collections as the heap grows. Incremental 5.4 loses about 8%
 * without the pause; the mode cannot be read without switching it. */
#if LUA_VERSION_NUM >= 504
#define LCOMPAT_GC_PAUSE_BULK 0
#else
#define LCOMPAT_GC_PAUSE_BULK 1
#endif

/* Whether an integer comes back exactly as this Lua's number: always with
 * 64-bit integers (5.3, 5.4); within +-2^53 where numbers are doubles
 * (5.1, 5.2, LuaJIT). The codec writes an integral double as a MessagePack
 * integer within that range only (beyond it, as the float64 it is), and a
 * MessagePack integer beyond it is read as LuaJIT's int64_t/uint64_t
 * cdata, or refused by name, never as a nearby double. */
#if LUA_VERSION_NUM >= 503
#define lcompat_int_exact(v) ((void)(v), 1)
#define lcompat_uint_exact(u) ((void)(u), 1)
#else
#define lcompat_int_exact(v) ((v) >= -(INT64_C(1) << 53) && (v) <= (INT64_C(1) << 53))
#define lcompat_uint_exact(u) ((u) <= (UINT64_C(1) << 53))
#endif

/* The type LuaJIT's lua_type() gives a cdata (LUA_TCDATA inside LuaJIT,
 * not in its lua.h). No other Lua has a type numbered 10 (5.1-5.4 use
 * 0..8), so testing for it needs no #if: the codec meets it on LuaJIT
 * only. */
#define LCOMPAT_TCDATA 10

#endif /* LCOMPAT_H */
