/*
 * lstore.c - the Store class: instate.open and the store's methods.
 *
 * A store userdata keeps the list of its live children (linstate.h); closing
 * it, explicitly or by GC, ends every child first. store:transaction and
 * store:snapshot live in ltxn.c, store:dump and store:load in ldump.c.
 */
#include "linstate.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char linstate_store_marker = 0;

/* ------------------------------------------------------------------------ */
/* Children                                                                 */
/* ------------------------------------------------------------------------ */

void linstate_child_link(lstore *st, lchild *c, void (*close)(lchild *))
{
	c->close = close;
	c->prev = NULL;
	c->next = st->children;
	if (st->children)
		st->children->prev = c;
	st->children = c;
}

void linstate_child_unlink(lstore *st, lchild *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		st->children = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void store_close(lstore *st)
{
	while (st->children)
		st->children->close(st->children);
	if (st->s) {
		instate_store_close(st->s);
		st->s = NULL;
	}
}

instate_store *linstate_checkstore(lua_State *L, int idx)
{
	return linstate_checklstore(L, idx)->s;
}

/* ------------------------------------------------------------------------ */
/* Store                                                                    */
/* ------------------------------------------------------------------------ */

static int l_open(lua_State *L)
{
	size_t plen;
	const char *path = luaL_checklstring(L, 1, &plen);
	instate_options o;
	lstore *st;
	int rc;

	instate_options_init(&o);
	luaL_argcheck(L, plen > 0, 1, "path must not be empty");
	luaL_argcheck(L, strlen(path) == plen, 1, "path must not contain a NUL byte");
	if (!lua_isnoneornil(L, 2))
		linstate_check_open_opts(L, 2, &o);
	/* Created closed, so a failed open leaves nothing to clean up. */
	st = lcompat_newuserdata(L, sizeof *st, 1);
	memset(st, 0, sizeof *st);
	luaL_setmetatable(L, LINSTATE_STORE_MT);
	lua_pushvalue(L, 1);
	lcompat_setuservalue(L, -2, 1);
	if (!lua_isnoneornil(L, 2)) {
		lua_getfield(L, 2, "metatables");
		if (!lua_isnil(L, -1))
			st->enc_flags = linstate_opt_metatables(L, -1, 2);
		lua_pop(L, 1);
	}
	rc = instate_store_open(path, &o, &st->s);
	if (rc) {
		lua_pushfstring(L, "cannot open store '%s'", path);
		return linstate_fail(L, rc, lua_tostring(L, -1));
	}
	return 1;
}

static int l_store_close(lua_State *L)
{
	lstore *st = linstate_tostore(L, 1);
	store_close(st);
	return 0;
}

/* __gc: from 5.2 on it also runs for a table a script gave this metatable,
 * where raising would surface in whatever allocation ran the collector. */
static int l_store_gc(lua_State *L)
{
	return lua_type(L, 1) == LUA_TUSERDATA ? l_store_close(L) : 0;
}

static int l_store_tostring(lua_State *L)
{
	lstore *st = linstate_tostore(L, 1);
	if (st->s)
		lua_pushfstring(L, "instate.Store (%s)", instate_store_path(st->s));
	else
		lua_pushliteral(L, "instate.Store (closed)");
	return 1;
}

static int l_store_path(lua_State *L)
{
	linstate_checklstore(L, 1);
	lcompat_getuservalue(L, 1, 1);
	return 1;
}

static int l_store_revision(lua_State *L)
{
	uint64_t rev;
	int rc = instate_store_revision(linstate_checklstore(L, 1)->s, &rev);
	if (rc)
		return linstate_fail(L, rc, "cannot read the revision");
	lua_pushinteger(L, (lua_Integer)rev);
	return 1;
}

/* store:last_commit(): changes whenever any process commits (no txn). */
static int l_store_last_commit(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)instate_store_last_commit(linstate_checklstore(L, 1)->s));
	return 1;
}

/* store:lock_owner() -> true, pid | nil, msg, code [, owner's pid or
 * false]: the owner lock of instate_store_lock_owner (instate.setup takes
 * it); the message names the owner's pid. */
static int l_store_lock_owner(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	uint64_t pid = 0;
	char who[32];
	int rc = instate_store_lock_owner(st->s, &pid);
	if (rc == 0) {
		lua_pushboolean(L, 1);
		lua_pushinteger(L, (lua_Integer)pid);
		return 2;
	}
	if (rc != INSTATE_LOCKED) {
		lua_pushfstring(L, "cannot own store '%s'", instate_store_path(st->s));
		return linstate_fail(L, rc, lua_tostring(L, -1));
	}
	if (pid)
		snprintf(who, sizeof who, "pid %llu", (unsigned long long)pid);
	else
		snprintf(who, sizeof who, "pid unknown");
	lua_pushfstring(L, "cannot own store '%s': %s (%s)", instate_store_path(st->s),
	                instate_strerror(rc), who);
	linstate_fail(L, rc, lua_tostring(L, -1));
	if (pid)
		lua_pushinteger(L, (lua_Integer)pid);
	else
		lua_pushboolean(L, 0);
	return 4;
}

static int l_store_stats(lua_State *L)
{
	instate_stats s;
	int rc = instate_store_stats(linstate_checklstore(L, 1)->s, &s);
	if (rc)
		return linstate_fail(L, rc, "cannot read statistics");
	lua_createtable(L, 0, 10);
#define SETI(f) (lua_pushinteger(L, (lua_Integer)s.f), lua_setfield(L, -2, #f))
	SETI(map_size);
	SETI(max_size);
	SETI(used_bytes);
	SETI(page_size);
	SETI(namespaces);
	SETI(readers);
	SETI(max_readers);
	SETI(revision);
	SETI(format);
#undef SETI
	lua_pushboolean(L, s.readonly);
	lua_setfield(L, -2, "readonly");
	return 1;
}


static int l_store_namespace(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	instate_ns *ns = linstate_ns_get(L, st, 2, linstate_check_ns_type(L, 3));
	if (!ns)
		return 3;
	linstate_push_ns(L, ns, st, NULL, 1);
	return 1;
}

/* instate's own door to a map variable's namespace (lua/instate/map.lua). */
static int l_store_map_namespace(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	instate_ns *ns = linstate_map_ns_get(L, st, 2);
	if (!ns)
		return 3;
	linstate_push_ns(L, ns, st, NULL, 1);
	return 1;
}

/* Whether this coroutine has a write transaction of st open: a save
 * wrapped in store:transaction knows from it whether its commit is the
 * durable one. */
static int l_store_writing(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	lua_pushboolean(L, st->cur != NULL && st->owner == L);
	return 1;
}

/* Collect names as [len byte][name] in a buffer: no Lua call may raise
 * inside the core's callback. Map variables' namespaces are instate's own
 * (their entries belong to a variable): namespaces() does not list them,
 * as store:namespace() does not open them; dump and check see them. */
static int ns_list_collect(void *ud, const char *name, size_t len, instate_ns_type type)
{
	instate_buf *b = ud;
	(void)type;
	if (len >= 2 && name[0] == '_' && name[1] == '_')
		return 0;
	if (instate_buf_reserve(b, len + 1))
		return ENOMEM;
	b->data[b->len++] = (char)(unsigned char)(len - 1);
	memcpy(b->data + b->len, name, len);
	b->len += len;
	return 0;
}

static int l_store_namespaces(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	instate_buf *kv;
	instate_txn *txn;
	size_t off = 0;
	lua_Integer i = 0;
	int rc = instate_txn_begin(st->s, NULL, INSTATE_TXN_READ, &txn);
	if (rc)
		return linstate_fail(L, rc, "cannot list namespaces");
	kv = linstate_kv_take(L);
	kv[0].len = 0;
	rc = instate_ns_list(txn, ns_list_collect, &kv[0]);
	instate_txn_abort(txn);
	if (rc) {
		linstate_kv_give(L, kv);
		return linstate_fail(L, rc, "cannot list namespaces");
	}
	lua_newtable(L);
	while (off < kv[0].len) {
		size_t len = (size_t)(unsigned char)kv[0].data[off] + 1;
		lua_pushlstring(L, kv[0].data + off + 1, len);
		lua_rawseti(L, -2, ++i);
		off += len + 1;
	}
	linstate_kv_give(L, kv);
	return 1;
}

static int do_drop(instate_txn *txn, lns *n, void *ud)
{
	return instate_drop(txn, n->ns, ud);
}

static int l_store_drop(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	lns n = { linstate_ns_get(L, st, 2, INSTATE_NS_ANY), st, NULL };
	int existed = 0, rc;
	if (!n.ns)
		return 3;
	rc = linstate_run_write(L, &n, do_drop, &existed);
	if (rc)
		return linstate_fail(L, rc, "cannot drop namespace");
	lua_pushboolean(L, existed);
	return 1;
}

static int do_purge(instate_txn *txn, lns *n, void *ud)
{
	(void)n;
	return instate_purge(txn, ud);
}

static int l_store_purge(lua_State *L)
{
	lstore *st = linstate_checklstore(L, 1);
	lns n = { NULL, st, NULL };
	uint64_t removed = 0;
	int rc = linstate_run_write(L, &n, do_purge, &removed);
	if (rc)
		return linstate_fail(L, rc, "cannot purge");
	lua_pushinteger(L, (lua_Integer)removed);
	return 1;
}

static const luaL_Reg store_methods[] = {
	{ "close", l_store_close },
	{ "path", l_store_path },
	{ "revision", l_store_revision },
	{ "last_commit", l_store_last_commit },
	{ "stats", l_store_stats },
	{ "lock_owner", l_store_lock_owner },
	{ "namespace", l_store_namespace },
	{ "_map_namespace", l_store_map_namespace },
	{ "_writing", l_store_writing },
	{ "namespaces", l_store_namespaces },
	{ "drop", l_store_drop },
	{ "purge", l_store_purge },
	{ "__gc", l_store_gc },
	{ "__close", l_store_close },
	{ "__tostring", l_store_tostring },
	{ NULL, NULL }
};

void linstate_open_store(lua_State *L, int mod, int scratch)
{
	linstate_newclass(L, LINSTATE_STORE_MT, &linstate_store_marker, store_methods, scratch);
	lua_pop(L, 1);
	lua_pushcfunction(L, l_open);
	lua_setfield(L, mod, "open");
}
