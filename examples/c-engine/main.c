/*
 * main.c - a C engine that embeds Lua and instate: it owns the store (opens
 * it, and reads it after the script ran), runs game.lua with no module
 * search path (instate_lua_openlibs preloads instate from libinstate_lua),
 * then reads the script's defstate variables through the C API.
 *
 *   c-engine GAME.lua SAVE_DIR
 *
 * defstate variables live in the namespace "state" (type state): key = the
 * variable's name, value = its MessagePack encoding, which the C API's
 * parser (instate_mp_parser) reads exactly as Lua wrote it.
 */
#include <instate.h>
#include <instate_lua.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values, read with the C API's MessagePack parser ----------------- */

/* The shortest %g that reads back as d. */
static void print_number(double d)
{
	char buf[32];
	int prec;

	for (prec = 1; prec < 17; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	printf("%.*g", prec, d);
}

/* Print the value in data[0 .. len) as a Lua-like literal (the scalars and
 * flat tables this game saves; a map's entries as {k = v, ...}). Returns 0,
 * or the parser's error (INSTATE_CORRUPT, its message in *why). */
static int print_value(const void *data, size_t len, const char **why)
{
	instate_mp_parser p;
	instate_mp_item it;
	uint64_t left[INSTATE_MP_MAX_DEPTH + 1]; /* items still due per open table */
	int ismap[INSTATE_MP_MAX_DEPTH + 1], first[INSTATE_MP_MAX_DEPTH + 1];
	unsigned depth = 0;
	int rc;

	instate_mp_parser_init(&p, data, len);
	while ((rc = instate_mp_parser_next(&p, &it)) == 0) {
		/* The separator before this item, inside a table. */
		if (depth) {
			if (!ismap[depth] || left[depth] % 2 == 0)
				printf(first[depth] ? "" : ", ");
			else
				printf(" = ");
			first[depth] = 0;
			left[depth]--;
		}
		switch (it.type) {
		case INSTATE_MP_NIL: printf("nil"); break;
		case INSTATE_MP_BOOL: printf(it.v.b ? "true" : "false"); break;
		case INSTATE_MP_INT: printf("%lld", (long long)it.v.i); break;
		case INSTATE_MP_UINT: printf("%llu", (unsigned long long)it.v.u); break;
		case INSTATE_MP_FLOAT:
		case INSTATE_MP_DOUBLE: print_number(it.v.d); break;
		case INSTATE_MP_STR:
		case INSTATE_MP_BIN: printf("\"%.*s\"", (int)it.len, (const char *)it.data); break;
		case INSTATE_MP_ARRAY:
		case INSTATE_MP_MAP:
			printf("{");
			depth++;
			ismap[depth] = it.type == INSTATE_MP_MAP;
			left[depth] = ismap[depth] ? 2 * (uint64_t)it.len : it.len;
			first[depth] = 1;
			break;
		default: printf("<ext %d>", it.ext); break;
		}
		while (depth && left[depth] == 0) {
			printf("}");
			depth--;
		}
	}
	if (rc == INSTATE_NOTFOUND) /* the end of the value */
		return 0;
	*why = instate_mp_parser_error(&p, NULL);
	return rc;
}

/* ---- the engine ------------------------------------------------------- */

static int run_script(const char *script, const char *save_dir)
{
	lua_State *L = luaL_newstate();
	int ok;

	luaL_openlibs(L);
	/* No files on any search path: everything comes from libinstate_lua. */
	lua_getglobal(L, "package");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "path");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "cpath");
	lua_pop(L, 1);
	instate_lua_openlibs(L);

	ok = luaL_loadfile(L, script) == 0; /* LUA_OK, which 5.1 does not name */
	if (ok) {
		lua_pushstring(L, save_dir);
		ok = lua_pcall(L, 1, 0, 0) == 0;
	}
	if (!ok)
		fprintf(stderr, "c-engine: %s\n", lua_tostring(L, -1));
	lua_close(L);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const char *const names[] = {"runs", "player", "settings"};
	instate_store *store;
	instate_ns *state;
	instate_txn *txn;
	instate_buf value = {0};
	instate_meta meta;
	size_t i;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: c-engine GAME.lua SAVE_DIR\n");
		return 2;
	}
	/* The engine's store: the script's instate.setup(SAVE_DIR) shares it
	 * (one LMDB environment per store per process). */
	rc = instate_store_open(argv[2], NULL, &store);
	if (rc != 0) {
		fprintf(stderr, "c-engine: %s: %s\n", argv[2], instate_strerror(rc));
		return 1;
	}
	if (run_script(argv[1], argv[2]) != 0) {
		instate_store_close(store);
		return 1;
	}

	/* Read the variables the script saved, in one read transaction. */
	rc = instate_ns_get(store, "state", 5, INSTATE_NS_STATE, &state);
	if (rc == 0)
		rc = instate_txn_begin(store, NULL, INSTATE_TXN_READ, &txn);
	if (rc != 0) {
		fprintf(stderr, "c-engine: %s\n", instate_strerror(rc));
		instate_store_close(store);
		return 1;
	}
	for (i = 0; i < sizeof names / sizeof names[0]; i++) {
		const char *why = "";
		rc = instate_get(txn, state, names[i], strlen(names[i]), &value, &meta);
		if (rc == INSTATE_NOTFOUND) {
			printf("c: %s is not saved\n", names[i]);
			continue;
		}
		if (rc != 0)
			break;
		printf("c: %s = ", names[i]);
		if (print_value(value.data, value.len, &why) != 0)
			printf("(%s)", why);
		printf(" (version %u)\n", (unsigned)meta.version);
		rc = 0;
	}
	instate_txn_abort(txn);
	instate_buf_free(&value);
	instate_store_close(store);
	if (rc != 0) {
		fprintf(stderr, "c-engine: %s\n", instate_strerror(rc));
		return 1;
	}
	return 0;
}
