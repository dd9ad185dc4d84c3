/*
 * main.c - a C engine that embeds Lua and instate: it owns the store (opens
 * it, and reads it after the script ran), runs game.lua with no module
 * search path (instate_lua_openlibs preloads instate from libinstate_lua),
 * then reads the script's defstate variables through the C API.
 *
 *   c-engine GAME.lua SAVE_DIR
 *
 * defstate variables live in the namespace "state" (type state): key = the
 * variable's name, value = its MessagePack encoding. The little reader
 * below decodes the scalars and flat maps this game saves.
 */
#include <instate.h>
#include <instate_lua.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---- a minimal MessagePack reader: nil, bool, int, float, str, map ---- */

struct reader {
	const unsigned char *p, *end;
};

static uint64_t be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* Print one value at r (a map's entries as {k = v, ...}); 0, or -1 on what
 * this reader does not handle. */
static int print_value(struct reader *r)
{
	unsigned c;
	uint64_t n;
	int w = 0;

	if (r->p >= r->end)
		return -1;
	c = *r->p++;
	if (c <= 0x7f) { printf("%u", c); return 0; }
	if (c >= 0xe0) { printf("%d", (int)(signed char)c); return 0; }
	if (c == 0xc0) { printf("nil"); return 0; }
	if (c == 0xc2 || c == 0xc3) { printf(c == 0xc3 ? "true" : "false"); return 0; }
	if (c >= 0xcc && c <= 0xd3) { /* uint8..64, int8..64 */
		w = 1 << ((c - 0xcc) & 3);
		if (r->end - r->p < w)
			return -1;
		n = be(r->p, w);
		r->p += w;
		if (c >= 0xd0 && w < 8 && (n >> (8 * w - 1)))
			n |= ~(uint64_t)0 << (8 * w); /* sign-extend */
		if (c >= 0xd0)
			printf("%lld", (long long)(int64_t)n);
		else
			printf("%llu", (unsigned long long)n);
		return 0;
	}
	if (c == 0xcb) { /* float64 */
		double d;
		if (r->end - r->p < 8)
			return -1;
		n = be(r->p, 8);
		r->p += 8;
		memcpy(&d, &n, sizeof d);
		printf("%g", d);
		return 0;
	}
	if ((c & 0xe0) == 0xa0 || c == 0xd9 || c == 0xda) { /* str */
		w = c == 0xd9 ? 1 : c == 0xda ? 2 : 0;
		n = w ? be(r->p, w) : (c & 0x1f);
		r->p += w;
		if ((uint64_t)(r->end - r->p) < n)
			return -1;
		printf("\"%.*s\"", (int)n, (const char *)r->p);
		r->p += n;
		return 0;
	}
	if ((c & 0xf0) == 0x80) { /* fixmap */
		n = c & 0x0f;
		printf("{");
		while (n--) {
			if (print_value(r) != 0)
				return -1;
			printf(" = ");
			if (print_value(r) != 0)
				return -1;
			printf(n ? ", " : "");
		}
		printf("}");
		return 0;
	}
	return -1;
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
		struct reader r;
		rc = instate_get(txn, state, names[i], strlen(names[i]), &value, &meta);
		if (rc == INSTATE_NOTFOUND) {
			printf("c: %s is not saved\n", names[i]);
			continue;
		}
		if (rc != 0)
			break;
		r.p = (const unsigned char *)value.data;
		r.end = r.p + value.len;
		printf("c: %s = ", names[i]);
		if (print_value(&r) != 0 || r.p != r.end)
			printf("(%zu bytes this reader does not decode)", value.len);
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
