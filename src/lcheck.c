/*
 * lcheck.c - store:check(): verify every record of the store.
 *
 * Only converts. The core reports each damaged record through a callback
 * once its snapshot has ended; the callback builds the report under
 * lua_pcall, so a memory error cannot unwind through the core (which frees
 * its list of reports after the last call). The error is raised again once
 * the core has returned.
 */
#include "linstate.h"

#include <stdint.h>

typedef struct check_ctx {
	lua_State *L;
	int report;          /* stack index of the report table */
	int status;          /* a lua_pcall status other than LUA_OK: stop */
	const char *ns;      /* the damaged record handed to add_one */
	size_t nslen;
	const void *key;
	size_t klen;
} check_ctx;

/* Run under lua_pcall: arg 1 the ctx (light userdata), arg 2 the report. */
static int add_one(lua_State *L)
{
	check_ctx *c = lua_touserdata(L, 1);
	const char *field = c->key ? "corrupt" : "corrupt_namespaces";

	lua_getfield(L, 2, field);
	if (c->key) {
		/* corrupt[ns] = {key, ...}, keys in byte order */
		lua_pushlstring(L, c->ns, c->nslen);
		lua_rawget(L, -2);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			lua_newtable(L);
			lua_pushlstring(L, c->ns, c->nslen);
			lua_pushvalue(L, -2);
			lua_rawset(L, -4);
		}
		lua_pushlstring(L, c->key, c->klen);
	} else {
		/* a damaged __meta entry: its namespace's name */
		lua_pushlstring(L, c->ns, c->nslen);
	}
	lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
	return 0;
}

static int on_corrupt(void *ud, const char *ns, size_t nslen, const void *key, size_t klen)
{
	check_ctx *c = ud;
	lua_State *L = c->L;

	c->ns = ns;
	c->nslen = nslen;
	c->key = key;
	c->klen = klen;
	lua_pushcfunction(L, add_one);
	lua_pushlightuserdata(L, c);
	lua_pushvalue(L, c->report);
	c->status = lua_pcall(L, 2, 0, 0);
	return c->status != 0; /* the error object stays on the stack */
}

static void set_count(lua_State *L, const char *name, uint64_t n)
{
	lua_pushinteger(L, (lua_Integer)n);
	lua_setfield(L, -2, name);
}

/*
 * store:check() -> {records = n, namespaces = n, corrupt = {[ns] = {keys}},
 * corrupt_namespaces = {names}} | nil, msg, code
 */
static int l_store_check(lua_State *L)
{
	instate_store *s = linstate_checkstore(L, 1);
	instate_check_info info;
	check_ctx c = { L, 0, 0, NULL, 0, NULL, 0 };
	int rc;

	lua_settop(L, 1);
	lua_createtable(L, 0, 4);
	lua_newtable(L);
	lua_setfield(L, -2, "corrupt");
	lua_newtable(L);
	lua_setfield(L, -2, "corrupt_namespaces");
	c.report = lua_gettop(L);
	luaL_checkstack(L, 8, "store:check");
	rc = instate_store_check(s, on_corrupt, &c, &info);
	if (c.status)
		return lua_error(L);
	if (rc)
		return linstate_fail(L, rc, "cannot check the store");
	lua_settop(L, c.report);
	set_count(L, "records", info.records);
	set_count(L, "namespaces", info.namespaces);
	return 1;
}

void linstate_open_check(lua_State *L)
{
	/* Methods live in the store metatable itself (linstate.h). */
	luaL_getmetatable(L, LINSTATE_STORE_MT);
	lua_pushcfunction(L, l_store_check);
	lua_setfield(L, -2, "check");
	lua_pop(L, 1);
}
