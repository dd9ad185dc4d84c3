/*
 * lopt.c - option tables, keys and namespace names: the one place the
 * binding checks them, so every call words the same misuse the same way.
 */
#include "linstate.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

void linstate_check_opt_names(lua_State *L, int idx, const char *const names[])
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int i, ok = 0;
		lua_pop(L, 1);
		if (lua_type(L, -1) == LUA_TSTRING) {
			const char *k = lua_tostring(L, -1);
			for (i = 0; names[i]; i++)
				if (strcmp(k, names[i]) == 0)
					ok = 1;
		}
		if (!ok) {
			const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
				: luaL_typename(L, -1);
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
		}
	}
}

int linstate_opt_bool(lua_State *L, int idx, const char *name, int def)
{
	int v = def;
	lua_getfield(L, idx, name);
	if (!lua_isnil(L, -1)) {
		if (!lua_isboolean(L, -1))
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be a boolean, got %s",
				name, luaL_typename(L, -1)));
		v = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	return v;
}

lua_Integer linstate_opt_int(lua_State *L, int idx, const char *name, lua_Integer def,
                             lua_Integer min, lua_Integer max)
{
	lua_Integer v = def;
	lua_getfield(L, idx, name);
	if (!lua_isnil(L, -1)) {
		int isint;
		v = lua_tointegerx(L, -1, &isint);
		if (!isint)
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' must be an integer, got %s",
				name, luaL_typename(L, -1)));
		if (v < min || v > max)
			luaL_argerror(L, idx, lua_pushfstring(L, "option '%s' out of range (%I..%I)",
				name, min, max));
	}
	lua_pop(L, 1);
	return v;
}

void linstate_check_open_opts(lua_State *L, int idx, instate_options *o)
{
	/* metatables is the binding's, read by l_open (lstore.c) */
	static const char *const names[] = { "readonly", "sync", "map_size", "max_size",
		"file_mode", "max_namespaces", "max_readers", "single_file", "metatables", NULL };
	static const char *const syncs[] = { "full", "nometa", "none", NULL };

	luaL_checktype(L, idx, LUA_TTABLE);
	linstate_check_opt_names(L, idx, names);
	o->readonly = linstate_opt_bool(L, idx, "readonly", 0);
	o->single_file = linstate_opt_bool(L, idx, "single_file", 0);
	lua_getfield(L, idx, "sync");
	if (!lua_isnil(L, -1)) {
		int i;
		const char *s = lua_tostring(L, -1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_argerror(L, idx, "option 'sync' must be \"full\", \"nometa\" or \"none\"");
		for (i = 0; syncs[i] && strcmp(s, syncs[i]); i++)
			;
		if (!syncs[i])
			luaL_argerror(L, idx, lua_pushfstring(L,
				"option 'sync' must be \"full\", \"nometa\" or \"none\", got \"%s\"", s));
		o->sync = (instate_sync)i;
	}
	lua_pop(L, 1);
	o->map_size = (uint64_t)linstate_opt_int(L, idx, "map_size", (lua_Integer)o->map_size,
		4096, LUA_MAXINTEGER);
	o->max_size = (uint64_t)linstate_opt_int(L, idx, "max_size", (lua_Integer)o->max_size,
		4096, LUA_MAXINTEGER);
	o->file_mode = (unsigned)linstate_opt_int(L, idx, "file_mode", o->file_mode, 0, 07777);
	o->max_namespaces = (unsigned)linstate_opt_int(L, idx, "max_namespaces",
		o->max_namespaces, 1, 32000);
	o->max_readers = (unsigned)linstate_opt_int(L, idx, "max_readers", o->max_readers,
		1, 1 << 20);
	if (o->max_size < o->map_size)
		o->max_size = o->map_size;
}

int64_t linstate_ttl_to_expiry(lua_State *L, int argidx, lua_Number secs, int allow_zero)
{
	if (isnan(secs) || secs < 0 || (!allow_zero && secs == 0) || secs > 1e12)
		luaL_argerror(L, argidx, lua_pushfstring(L, "ttl must be a %s number of seconds",
			allow_zero ? "non-negative" : "positive"));
	if (secs == 0)
		return 0;
	{
		/* secs <= 1e12, so ms fits; the sum saturates at the largest time
		 * (a test clock can be set anywhere up to INT64_MAX) rather than
		 * wrap to a time in the past, which would delete the record. */
		int64_t ms = (int64_t)ceil(secs * 1000.0), now = instate_clock_now();
		if (ms < 1)
			ms = 1;
		return ms > INT64_MAX - now ? INT64_MAX : now + ms;
	}
}

void linstate_check_put_opts(lua_State *L, int idx, instate_meta *meta, int allow_version)
{
	static const char *const names[] = { "ttl", "version", NULL };
	/* ns:set/add: metatables is theirs, read by the caller (lns.c) */
	static const char *const names_nv[] = { "ttl", "metatables", NULL };
	meta->expires_ms = 0;
	meta->version = 0;
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	linstate_check_opt_names(L, idx, allow_version ? names : names_nv);
	lua_getfield(L, idx, "ttl");
	if (!lua_isnil(L, -1)) {
		if (!lua_isnumber(L, -1))
			luaL_argerror(L, idx, "option 'ttl' must be a number");
		meta->expires_ms = linstate_ttl_to_expiry(L, idx, lua_tonumber(L, -1), 0);
	}
	lua_pop(L, 1);
	if (allow_version)
		meta->version = (uint32_t)linstate_opt_int(L, idx, "version", 0, 0, 0xffffffffu);
}

const char *linstate_check_key(lua_State *L, int idx, size_t *len)
{
	const char *k = luaL_checklstring(L, idx, len);
	if (*len < 1 || *len > INSTATE_KEY_MAX)
		luaL_argerror(L, idx, lua_pushfstring(L,
			"key must be 1..%d bytes, got %d", INSTATE_KEY_MAX, (int)*len));
	return k;
}

const char *linstate_check_ns_name(lua_State *L, int idx, size_t *len)
{
	const char *name = luaL_checklstring(L, idx, len);

	if (*len < 1 || *len > INSTATE_NSNAME_MAX)
		luaL_argerror(L, idx, lua_pushfstring(L,
			"namespace name must be 1..%d bytes, got %d", INSTATE_NSNAME_MAX, (int)*len));
	if (memchr(name, 0, *len))
		luaL_argerror(L, idx, "namespace name must not contain a NUL byte");
	if (*len >= 2 && name[0] == '_' && name[1] == '_')
		luaL_argerror(L, idx, lua_pushfstring(L,
			"namespace names starting with '__' are reserved ('%s')", name));
	return name;
}

instate_ns_type linstate_check_ns_type(lua_State *L, int idx)
{
	static const char *const types[] = { "kv", "state", NULL };
	return luaL_checkoption(L, idx, "kv", types) == 0 ? INSTATE_NS_KV : INSTATE_NS_STATE;
}

const char *linstate_ns_type_name(instate_ns_type t)
{
	return t == INSTATE_NS_STATE ? "state" : "kv";
}
