/*
 * ldump.c - store:dump(), store:load() and instate.dump_info().
 *
 * Only converts: options are checked (misuse raises) before the core runs,
 * and nothing the core allocates is held across a call that can raise.
 */
#include "linstate.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define LDUMP_LIST_MT "instate.DumpSectionList"

/* ---- option helpers ---------------------------------------------------- */

static const char *const dump_opts[] = {
	"compression", "namespaces", "max_record_bytes", "max_records_per_section",
	"max_bytes", "progress", NULL};
static const char *const load_opts[] = {
	"mode", "namespaces", "max_bytes", "on_corrupt", "progress", NULL};

/* Raise on a key of the options table at idx that is not in `known`. */
static void check_keys(lua_State *L, int idx, const char *const *known)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		const char *k;
		int i;
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option of type %s",
			                                      luaL_typename(L, -1)));
		k = lua_tostring(L, -1);
		for (i = 0; known[i]; i++)
			if (strcmp(k, known[i]) == 0)
				break;
		if (!known[i])
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
	}
}

/* opts[name] as a non-negative integer (0 when absent). */
static uint64_t opt_count(lua_State *L, int idx, const char *name)
{
	lua_Integer v = 0;
	int isint;

	if (lua_getfield(L, idx, name) != LUA_TNIL) {
		v = lua_tointegerx(L, -1, &isint);
		if (!isint || v < 0)
			luaL_argerror(L, idx, lua_pushfstring(L,
			    "option '%s' must be a non-negative integer", name));
	}
	lua_pop(L, 1);
	return (uint64_t)v;
}

/*
 * opts.namespaces as a NUL-terminated pointer array in a userdata left on
 * the stack (the strings stay referenced by the options table). Returns
 * NULL when absent.
 */
static const char *const *opt_names(lua_State *L, int idx, size_t *n)
{
	const char **names;
	lua_Integer i, len;

	*n = 0;
	if (lua_getfield(L, idx, "namespaces") == LUA_TNIL) {
		lua_pop(L, 1);
		lua_pushnil(L);  /* keep the stack shape of the other branch */
		return NULL;
	}
	if (!lua_istable(L, -1))
		luaL_argerror(L, idx, "option 'namespaces' must be an array of names");
	len = (lua_Integer)lua_rawlen(L, -1);
	names = lcompat_newuserdata(L, (size_t)(len ? len : 1) * sizeof *names, 0);
	for (i = 1; i <= len; i++) {
		size_t l;
		const char *s;
		if (lua_rawgeti(L, -2, i) != LUA_TSTRING)
			luaL_argerror(L, idx, lua_pushfstring(L,
			    "namespaces[%d] must be a string, got %s", (int)i, luaL_typename(L, -1)));
		s = lua_tolstring(L, -1, &l);
		if (l == 0 || l > INSTATE_NSNAME_MAX || strlen(s) != l)
			luaL_argerror(L, idx, lua_pushfstring(L,
			    "namespaces[%d] must be a name of 1..%d bytes without NUL", (int)i,
			    INSTATE_NSNAME_MAX));
		names[i - 1] = s;  /* anchored by the options table */
		lua_pop(L, 1);
	}
	lua_remove(L, -2);
	*n = (size_t)len;
	return names;
}

/*
 * The context handed to linstate_fail(): the core's message, or the path.
 * linstate_fail() appends the reason, so a message that already ends with
 * it is cut there, and the reason is said once.
 */
static const char *fail_context(char *err, int rc, const char *path)
{
	const char *why = instate_strerror(rc);
	size_t n = strlen(err), w = strlen(why);

	if (!n)
		return path;
	if (n > w + 2 && memcmp(err + n - w - 2, ": ", 2) == 0 && memcmp(err + n - w, why, w) == 0)
		err[n - w - 2] = '\0';
	return err;
}

/*
 * opts.progress. The core calls it from inside the dump or load, where
 * nothing may raise: the Lua function runs under lua_pcall, its error is
 * kept in a stack slot made before the core runs, and a nonzero return
 * makes the core clean up (temporary file removed, transaction aborted)
 * before the error is raised again, as it was (a table stays a table).
 */
typedef struct lprogress {
	lua_State *L;
	int fn;       /* stack index of the function */
	int errslot;  /* stack index of the slot that receives its error */
	int failed;
} lprogress;

static int progress_cb(void *ud, uint64_t done, uint64_t total)
{
	lprogress *p = ud;
	lua_State *L = p->L;

	lua_pushvalue(L, p->fn);
	lua_pushinteger(L, (lua_Integer)done);
	lua_pushinteger(L, (lua_Integer)total);
	if (lua_pcall(L, 2, 0, 0) != 0) {
		lua_replace(L, p->errslot);
		p->failed = 1;
		return 1;
	}
	return 0;
}

/* Read opts.progress (table at idx) into p; leaves two slots on the stack. */
static instate_progress_fn opt_progress(lua_State *L, int idx, lprogress *p)
{
	int t;

	if (lua_isnoneornil(L, idx))
		lua_pushnil(L);
	else
		lua_getfield(L, idx, "progress");
	t = lua_type(L, -1);
	if (t != LUA_TNIL && t != LUA_TFUNCTION)
		luaL_argerror(L, idx, "option 'progress' must be a function");
	p->L = L;
	p->fn = lua_gettop(L);
	lua_pushnil(L);
	p->errslot = lua_gettop(L);
	p->failed = 0;
	/* room for the call, so that the callback never needs to grow the stack */
	luaL_checkstack(L, 8, "progress");
	return t == LUA_TNIL ? NULL : progress_cb;
}

/*
 * nil, message, code for a failure of the dump layer. A missing or corrupt
 * file's message is complete ("no dump file at P", "corrupt dump P at byte
 * N: why"): the code's text ("not found", "corrupt data") would only say
 * it again. Any other message gets the reason once (fail_context).
 */
static int dump_fail(lua_State *L, int rc, char *err, const char *path)
{
	static const char missing[] = "no dump file at ", corrupt[] = "corrupt dump ";

	if ((rc == INSTATE_NOTFOUND && strncmp(err, missing, sizeof missing - 1) == 0) ||
	    (rc == INSTATE_CORRUPT && strncmp(err, corrupt, sizeof corrupt - 1) == 0)) {
		lua_pushnil(L);
		lua_pushstring(L, err);
		lua_pushstring(L, linstate_code(rc));
		return 3;
	}
	return linstate_fail(L, rc, fail_context(err, rc, path));
}

static void set_int(lua_State *L, const char *name, uint64_t v)
{
	lua_pushinteger(L, (lua_Integer)v);
	lua_setfield(L, -2, name);
}

/* The fields of load's result. */
static const char *const load_fields[] = {
	"records", "expired", "sections", "revision", "bytes", "created_ms", NULL
};

/* ---- store:dump(path [, opts]) ------------------------------------------ */

static int l_store_dump(lua_State *L)
{
	instate_store *s = linstate_checkstore(L, 1);
	const char *path = luaL_checkstring(L, 2);
	instate_dump_options o;
	instate_dump_info info;
	lprogress prog;
	char err[INSTATE_ERRMSG_MAX];
	int rc;

	instate_dump_options_init(&o);
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		check_keys(L, 3, dump_opts);
		if (lua_getfield(L, 3, "compression") != LUA_TNIL) {
			int isint;
			lua_Integer c = lua_tointegerx(L, -1, &isint);
			if (!isint || c < 0 || c > 9)
				luaL_argerror(L, 3, "option 'compression' must be an integer 0..9");
			o.compression = (int)c;
		}
		lua_pop(L, 1);
		o.max_record_bytes = opt_count(L, 3, "max_record_bytes");
		o.max_records_per_section = opt_count(L, 3, "max_records_per_section");
		o.max_bytes = opt_count(L, 3, "max_bytes");
		o.namespaces = opt_names(L, 3, &o.n_namespaces);
	}
	o.progress = opt_progress(L, 3, &prog);
	o.progress_ud = &prog;
	rc = instate_dump(s, path, &o, &info, err);
	if (prog.failed) {
		lua_pushvalue(L, prog.errslot);
		return lua_error(L);
	}
	if (rc == INSTATE_INVALID)  /* the path is the store's own file */
		luaL_argerror(L, 2, err);
	if (rc)
		return dump_fail(L, rc, err, path);
	lua_createtable(L, 0, 7);
	set_int(L, "records", info.records);
	set_int(L, "dropped", info.dropped);
	set_int(L, "sections", info.sections);
	set_int(L, "bytes", info.bytes);
	set_int(L, "revision", info.revision);
	set_int(L, "created_ms", (uint64_t)info.created_ms);
	set_int(L, "format", info.format);
	return 1;
}

/* ---- store:load(path [, opts]) ------------------------------------------ */

static int l_store_load(lua_State *L)
{
	static const char *const modes[] = {"merge", "replace", NULL};
	static const char *const policies[] = {"error", "ignore", "delete", NULL};
	instate_store *s = linstate_checkstore(L, 1);
	const char *path = luaL_checkstring(L, 2);
	instate_load_options o;
	instate_dump_info info;
	lprogress prog;
	char err[INSTATE_ERRMSG_MAX];
	int rc, f;

	instate_load_options_init(&o);
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		check_keys(L, 3, load_opts);
		if (lua_getfield(L, 3, "mode") != LUA_TNIL) {
			int i;
			const char *m = lua_tostring(L, -1);
			for (i = 0; m && modes[i] && strcmp(m, modes[i]) != 0; i++)
				;
			if (!m || lua_type(L, -1) != LUA_TSTRING || !modes[i])
				luaL_argerror(L, 3, "option 'mode' must be \"merge\" or \"replace\"");
			o.replace = i == 1;
		}
		lua_pop(L, 1);
		if (lua_getfield(L, 3, "on_corrupt") != LUA_TNIL) {
			int i;
			const char *m = lua_tostring(L, -1);
			for (i = 0; m && policies[i] && strcmp(m, policies[i]) != 0; i++)
				;
			if (!m || lua_type(L, -1) != LUA_TSTRING || !policies[i])
				luaL_argerror(L, 3, "option 'on_corrupt' must be \"error\", \"ignore\" "
				                    "or \"delete\"");
			o.on_corrupt = (instate_on_corrupt)i;
		}
		lua_pop(L, 1);
		o.max_bytes = opt_count(L, 3, "max_bytes");
		o.namespaces = opt_names(L, 3, &o.n_namespaces);
	}
	o.progress = opt_progress(L, 3, &prog);
	o.progress_ud = &prog;
	/* The result table is made before the load: once the load has
	 * committed nothing may raise (out of memory) and report a failure. */
	lua_createtable(L, 0, 6);
	for (f = 0; load_fields[f]; f++)
		set_int(L, load_fields[f], 0);
	rc = instate_load(s, path, &o, &info, err);
	if (prog.failed) {
		lua_pushvalue(L, prog.errslot);
		return lua_error(L);
	}
	if (rc == INSTATE_NOTFOUND ||
	    (rc == INSTATE_CORRUPT && info.file_corrupt && o.on_corrupt != INSTATE_CORRUPT_ERROR)) {
		/* Not an error by the caller's policy: false, and why. A store
		 * error is never the file's: it is returned as is. */
		lua_pushboolean(L, 0);
		lua_pushstring(L, err[0] ? err : instate_strerror(rc));
		return 2;
	}
	if (rc == INSTATE_INVALID)  /* the path is the store's own file */
		luaL_argerror(L, 2, err);
	if (rc)
		return dump_fail(L, rc, err, path);
	set_int(L, "records", info.records);
	set_int(L, "expired", info.expired);
	set_int(L, "sections", info.sections);
	set_int(L, "revision", info.revision);
	set_int(L, "bytes", info.bytes);
	set_int(L, "created_ms", (uint64_t)info.created_ms);
	return 1;
}

/* ---- instate.dump_info(path) -------------------------------------------- */

/*
 * The section list is gathered in C while the core reads (no Lua call may
 * raise inside the core), into a buffer a userdata owns so that a raise
 * while building the result table leaks nothing.
 */
typedef struct section_list {
	instate_buf buf;  /* entries: u8 type, u64 records, u8 len, name */
} section_list;

static int l_list_gc(lua_State *L)
{
	section_list *sl = luaL_checkudata(L, 1, LDUMP_LIST_MT);
	instate_buf_free(&sl->buf);
	return 0;
}

static int add_section(void *ud, const char *name, size_t len, instate_ns_type type,
                       uint64_t records)
{
	section_list *sl = ud;
	unsigned char *p;

	if (instate_buf_reserve(&sl->buf, 10 + len) != 0)
		return ENOMEM;
	p = (unsigned char *)sl->buf.data + sl->buf.len;
	p[0] = (unsigned char)type;
	memcpy(p + 1, &records, 8);
	p[9] = (unsigned char)len;
	memcpy(p + 10, name, len);
	sl->buf.len += 10 + len;
	return 0;
}

static int l_dump_info(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	instate_dump_info info;
	char err[INSTATE_ERRMSG_MAX];
	section_list *sl;
	size_t off;
	int rc, i = 0;

	sl = lcompat_newuserdata(L, sizeof *sl, 0);
	memset(sl, 0, sizeof *sl);
	luaL_setmetatable(L, LDUMP_LIST_MT);
	rc = instate_dump_info_read(path, add_section, sl, &info, err);
	if (rc)
		return dump_fail(L, rc, err, path);
	lua_createtable(L, 0, 8);
	set_int(L, "format", info.format);
	set_int(L, "revision", info.revision);
	set_int(L, "created_ms", (uint64_t)info.created_ms);
	set_int(L, "records", info.records);
	set_int(L, "sections", info.sections);
	set_int(L, "bytes", info.bytes);
	lua_createtable(L, (int)info.sections, 0);
	for (off = 0; off < sl->buf.len;) {
		const unsigned char *p = (const unsigned char *)sl->buf.data + off;
		uint64_t records;
		memcpy(&records, p + 1, 8);
		lua_createtable(L, 0, 3);
		lua_pushlstring(L, (const char *)p + 10, p[9]);
		lua_setfield(L, -2, "name");
		lua_pushstring(L, p[0] == INSTATE_NS_STATE ? "state" : "kv");
		lua_setfield(L, -2, "type");
		set_int(L, "records", records);
		lua_rawseti(L, -2, ++i);
		off += 10 + p[9];
	}
	lua_setfield(L, -2, "section_list");
	return 1;
}

void linstate_open_dump(lua_State *L)
{
	luaL_newmetatable(L, LDUMP_LIST_MT);
	lua_pushcfunction(L, l_list_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	lua_pushcfunction(L, l_dump_info);
	lua_setfield(L, -2, "dump_info");

	/* Methods live in the store metatable itself (linstate.h). */
	luaL_getmetatable(L, LINSTATE_STORE_MT);
	lua_pushcfunction(L, l_store_dump);
	lua_setfield(L, -2, "dump");
	lua_pushcfunction(L, l_store_load);
	lua_setfield(L, -2, "load");
	lua_pop(L, 1);
}
