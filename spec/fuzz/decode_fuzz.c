/*
 * decode_fuzz.c - libFuzzer target for the value decoder.
 *
 * Any input must decode to a value or to a CORRUPT message, never crash or
 * raise. Whatever decodes must encode again, and that encoding must decode
 * to a value of the same shape (same types, float bits, strings and
 * reference structure). Plain bytes are not compared: a table's traversal
 * order depends on its insertion history, so two equal tables may encode
 * their maps in different orders.
 *
 * The canonical encoding must be stable: canonical(decode(canonical(v)))
 * equals canonical(v), and decodes to the same shape. The one documented
 * exception (docs/FORMAT.md section 1) needs a map with two or more table
 * keys; a difference without one aborts.
 *
 * Encoding must create no Lua object (src/linstate.h: no finalizer can run
 * inside it): the state's allocator counts them, and one aborts.
 *
 * Build: make fuzz (clang, -DINSTATE_FUZZ=ON); run with -max_total_time=N.
 */
#include "linstate.h"
#include "../c/count_alloc.h"
#include "instate_mpack.h"

#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Encode the value at 1 and push the bytes; a raise escapes (the callers
 * run this under pcall). Aborts if encoding created a Lua object. */
static int encode_counted(lua_State *L, int canonical)
{
	size_t n;
	const char *s;

	objects_created = 0;
	counting = 1;
	s = canonical ? linstate_encode_canonical(L, 1, "value", &n)
	              : linstate_encode(L, 1, "value", &n);
	counting = 0;
	if (objects_created)
		abort();
	lua_pushlstring(L, s, n);
	return 1;
}

/* encode(value at 1) -> string, under pcall so a raise is observable */
static int encode_top(lua_State *L)
{
	return encode_counted(L, 0);
}

static int encode_canonical_top(lua_State *L)
{
	return encode_counted(L, 1);
}

/* Whether the value at idx holds a map with two or more table keys.
 * `seen` (stack slot) marks tables visited. */
static int has_table_keys(lua_State *L, int idx, int seen)
{
	int found = 0, tkeys = 0;

	if (lua_type(L, idx) != LUA_TTABLE)
		return 0;
	lua_pushvalue(L, idx);
	if (lua_rawget(L, seen) != LUA_TNIL) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pop(L, 1);
	lua_pushvalue(L, idx);
	lua_pushboolean(L, 1);
	lua_rawset(L, seen);
	if (!lua_checkstack(L, 8))
		abort();
	lua_pushnil(L);
	while (!found && lua_next(L, idx)) {
		int k = lua_gettop(L) - 1;
		if (lua_type(L, k) == LUA_TTABLE)
			tkeys++;
		found = tkeys >= 2 || has_table_keys(L, k, seen) || has_table_keys(L, k + 1, seen);
		lua_pop(L, 1);
	}
	if (found)
		lua_pop(L, 1); /* the key lua_next left */
	return found;
}

/* Canonical bytes of the value at idx pushed (returns 1), or nothing
 * pushed when only the depth limit stopped it (returns 0). */
static int canonical(lua_State *L, int idx)
{
	lua_pushcfunction(L, encode_canonical_top);
	lua_pushvalue(L, idx);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		counting = 0; /* the raise built its message */
		if (!strstr(lua_tostring(L, -1), "nested deeper than"))
			abort();
		lua_pop(L, 1);
		return 0;
	}
	return 1;
}

/* Same shape: `pairs` (stack slot) maps tables of a to tables of b. Keys
 * that are tables are only counted: looking them up needs the pairing. */
static int same(lua_State *L, int a, int b, int pairs, int depth)
{
	int t = lua_type(L, a);
	lua_Integer na = 0, nb = 0, ta = 0, tb = 0;

	if (t != lua_type(L, b) || depth > INSTATE_MP_MAX_DEPTH * 2 + 4)
		return 0;
	switch (t) {
	case LUA_TNIL:
		return 1;
	case LUA_TBOOLEAN:
		return lua_toboolean(L, a) == lua_toboolean(L, b);
	case LUA_TNUMBER:
		if (lua_isinteger(L, a) != lua_isinteger(L, b))
			return 0;
		if (lua_isinteger(L, a))
			return lua_tointeger(L, a) == lua_tointeger(L, b);
		{
			lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
			return memcmp(&x, &y, sizeof x) == 0;
		}
	case LUA_TSTRING: {
		size_t la, lb;
		const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
		return la == lb && memcmp(sa, sb, la) == 0;
	}
	case LUA_TTABLE:
		break;
	default:
		return 0;
	}
	lua_pushvalue(L, a);
	if (lua_rawget(L, pairs) != LUA_TNIL) {
		int ok = lua_rawequal(L, -1, b);
		lua_pop(L, 1);
		return ok;
	}
	lua_pop(L, 1);
	lua_pushvalue(L, a);
	lua_pushvalue(L, b);
	lua_rawset(L, pairs);
	if (!lua_checkstack(L, 8))
		abort();
	lua_pushnil(L);
	while (lua_next(L, a)) {
		int k = lua_gettop(L) - 1;
		na++;
		if (lua_type(L, k) == LUA_TTABLE) {
			ta++;
		} else {
			lua_pushvalue(L, k);
			lua_rawget(L, b);
			if (!same(L, k + 1, k + 2, pairs, depth + 1))
				return 0;
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pushnil(L);
	while (lua_next(L, b)) {
		nb++;
		if (lua_type(L, -2) == LUA_TTABLE)
			tb++;
		lua_pop(L, 1);
	}
	return na == nb && ta == tb;
}

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int base;
	size_t n1;
	const char *e1;

	if (!L) {
		L = lua_newstate(count_alloc, NULL);
		if (!L)
			abort();
		lua_newtable(L);
		linstate_open_codec(L);
		lua_pop(L, 1);
	}
	base = lua_gettop(L);

	if (!linstate_decode(L, (const char *)data, size)) {
		/* corrupt: a message naming the offset, and nothing else */
		if (lua_gettop(L) != base + 1 || !lua_isstring(L, -1) ||
		    strncmp(lua_tostring(L, -1), "corrupt MessagePack at byte ", 28) != 0)
			abort();
		/* the core validator agrees */
		if (instate_mp_validate(data, size, NULL, NULL, 0) != INSTATE_CORRUPT)
			abort();
		lua_settop(L, base);
		return 0;
	}
	if (lua_gettop(L) != base + 1 || instate_mp_validate(data, size, NULL, NULL, 0) != 0)
		abort();
	lua_pushcfunction(L, encode_top); /* v1 is at base + 1 */
	lua_pushvalue(L, base + 1);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		counting = 0; /* the raise built its message */
		/* Only legitimate way to fail: references let a table be first
		 * reached along a deeper path than the one the input used. */
		if (!strstr(lua_tostring(L, -1), "nested deeper than"))
			abort();
		lua_settop(L, base);
		return 0;
	}
	e1 = lua_tolstring(L, -1, &n1); /* base + 2 */
	if (instate_mp_validate(e1, n1, NULL, NULL, 0) != 0)
		abort();
	if (!linstate_decode(L, e1, n1)) /* v2 at base + 3 */
		abort();
	lua_newtable(L); /* pairs at base + 4 */
	if (!same(L, base + 1, base + 3, base + 4, 0))
		abort();
	lua_settop(L, base + 1);

	/* canonical: c1 = canon(v1), v3 = decode(c1), c2 = canon(v3) */
	if (!canonical(L, base + 1)) { /* c1 at base + 2 */
		lua_settop(L, base);
		return 0;
	}
	{
		size_t n2;
		const char *c1 = lua_tolstring(L, base + 2, &n1), *c2;
		if (instate_mp_validate(c1, n1, NULL, NULL, 0) != 0)
			abort();
		if (!linstate_decode(L, c1, n1)) /* v3 at base + 3 */
			abort();
		lua_newtable(L);
		if (!same(L, base + 1, base + 3, base + 4, 0))
			abort();
		lua_settop(L, base + 3);
		/* The same tables met along another path may now be too deep. */
		if (!canonical(L, base + 3)) { /* c2 at base + 4 */
			lua_settop(L, base);
			return 0;
		}
		c2 = lua_tolstring(L, base + 4, &n2);
		if (n1 != n2 || memcmp(c1, c2, n1) != 0) {
			lua_newtable(L);
			if (!has_table_keys(L, base + 1, lua_gettop(L)))
				abort();
		}
	}
	lua_settop(L, base);
	return 0;
}
