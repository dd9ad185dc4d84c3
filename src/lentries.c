/*
 * lentries.c - the entry cache of a big tracked variable: its canonical
 * encoding kept as its top-level entries' bytes, so that a save that wrote
 * a few entries encodes those alone (docs/DESIGN.md, defstate: tracked
 * variables, "the entry cache").
 *
 * Why it is exact: the canonical encoder (lcodec.c) writes a map that is a
 * tree (no table reached twice: no GRAPH) as its header and its entries in
 * memcmp order of their bytes, each entry the key's bytes then the
 * value's, both exactly what encoding the key and the value alone gives.
 * Keys are self-delimiting MessagePack items, so two distinct keys never
 * tie and the order is that of the key bytes alone. So a cache holding,
 * for every entry of the table, its bytes sorted by key bytes, assembles
 * into the full canonical encoding. It stays right as long as every entry
 * it holds is the entry's encoding now: the Lua side (track.lua) adds the
 * top-level key of every write through a proxy to the dirty set, and an
 * update re-encodes those entries only, after checking that the result
 * could not differ from the full encode: the root has no metatable and no
 * t[1] (so it is not an array), a dirty key is no table, a dirty value
 * encodes without an extension (no GRAPH: a tree; no class), and no table
 * in it is known to belong to another entry (the owner map, below) or has
 * a metatable. Anything else falls back to the full encode, which also
 * rebuilds the cache from its output when that is a map.
 *
 * The owner map (a weak-keyed table table -> top-level key) holds, for
 * every table of the value that the program can reach other than through
 * a proxy's fresh read, the entry it belongs to: after a full encode every
 * table of every entry (a walk here); a table read through a proxy (the
 * proxy records it, track.lua); a table written under a dirty entry (the
 * update's walk). A table the program assigns under a second entry is then
 * found under two keys, which is the fallback. A decoded table (a restore)
 * reaches the program only through proxies, so a cache built from stored
 * bytes starts with an empty map.
 *
 * The userdata's user value is { root, dirty, owner }; the cache is ready
 * (entries valid) or empty (next save: the full encode).
 */
#include "linstate.h"
#include "instate_mpack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ENTRIES_MT "instate.Entries"

typedef struct ent {
	size_t off;      /* in pool: key bytes, then value bytes */
	uint32_t klen, len;
} ent;

typedef struct lentries {
	int ready;
	int busy;             /* an update or rebuild runs (a finalizer's save
	                         in the middle of it encodes in full) */
	ent *e;
	size_t n, cap;
	unsigned char *pool;
	size_t plen, pcap, live;
	unsigned char *out;   /* the assembled encoding */
	size_t olen, ocap;
	unsigned char *stage; /* an update's new entries, before they go in */
	size_t slen, scap;
} lentries;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t c = *cap ? *cap : 64;
	void *q;
	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	q = realloc(*p, c * elem);
	if (!q)
		return -1;
	*p = q;
	*cap = c;
	return 0;
}

static void ents_free(lentries *c)
{
	free(c->e);
	free(c->pool);
	free(c->out);
	free(c->stage);
	memset(c, 0, sizeof *c);
}

static int l_entries_gc(lua_State *L)
{
	lentries *c = luaL_checkudata(L, 1, ENTRIES_MT);
	ents_free(c);
	return 0;
}

static void nomem(lua_State *L, lentries *c)
{
	c->ready = 0;
	luaL_error(L, "not enough memory");
}

static int key_cmp(const unsigned char *a, size_t an, const unsigned char *b, size_t bn)
{
	int r = memcmp(a, b, an < bn ? an : bn);
	if (r)
		return r;
	return an < bn ? -1 : an > bn;
}

/* The index of the entry with key bytes k (found: *hit = 1), or where it
 * would go. */
static size_t ent_find(const lentries *c, const unsigned char *k, size_t kn, int *hit)
{
	size_t lo = 0, hi = c->n;
	*hit = 0;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const ent *e = &c->e[mid];
		int r = key_cmp(c->pool + e->off, e->klen, k, kn);
		if (r == 0) {
			*hit = 1;
			return mid;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Append len bytes to the pool; returns their offset, or (size_t)-1. */
static size_t pool_add(lentries *c, const unsigned char *p, size_t len)
{
	size_t off = c->plen;
	if (grow((void **)&c->pool, &c->pcap, c->plen + len, 1))
		return (size_t)-1;
	memcpy(c->pool + off, p, len);
	c->plen += len;
	return off;
}

/* Rewrite the pool with the live entries only, in order (when the bytes
 * replaced outweigh those in use). */
static int pool_compact(lentries *c)
{
	unsigned char *np;
	size_t i, off = 0;
	if (c->plen <= 2 * c->live + 4096)
		return 0;
	np = malloc(c->live ? c->live : 1);
	if (!np)
		return -1;
	for (i = 0; i < c->n; i++) {
		memcpy(np + off, c->pool + c->e[i].off, c->e[i].len);
		c->e[i].off = off;
		off += c->e[i].len;
	}
	free(c->pool);
	c->pool = np;
	c->plen = c->pcap = off;
	if (!c->pcap)
		c->pcap = 1;
	return 0;
}

/* Whether the key item it (read from bytes p..p+len) is written exactly as
 * the canonical encoder writes the Lua key the decoder makes of it, and is
 * a key the cache may hold (no integral float, nil or table: their Lua
 * keys differ between Luas or are not scalars). */
static int key_canonical(const instate_mp_item *it, const unsigned char *p, size_t len)
{
	unsigned char tmp[INSTATE_MP_MAX_HEADER], *q;
	switch (it->type) {
	case INSTATE_MP_BOOL:
		return len == 1;
	case INSTATE_MP_UINT:
		if (it->v.u > (uint64_t)INT64_MAX || !lcompat_int_exact((int64_t)it->v.u))
			return 0;
		q = instate_mp_put_int(tmp, (int64_t)it->v.u);
		break;
	case INSTATE_MP_INT:
		if (!lcompat_int_exact(it->v.i))
			return 0;
		q = instate_mp_put_int(tmp, it->v.i);
		break;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		/* A float key stays one on every Lua only when it is not
		 * integral (nor NaN, which no table holds) */
		if (it->v.d != it->v.d || floor(it->v.d) == it->v.d)
			return 0;
		q = instate_mp_put_double(tmp, it->v.d);
		break;
	case INSTATE_MP_STR:
		if (!instate_mp_utf8_valid(it->data, it->len))
			return 0;
		q = instate_mp_put_str_header(tmp, it->len);
		return (size_t)(q - tmp) + it->len == len && memcmp(tmp, p, (size_t)(q - tmp)) == 0;
	case INSTATE_MP_BIN:
		if (instate_mp_utf8_valid(it->data, it->len))
			return 0;
		q = instate_mp_put_bin_header(tmp, it->len);
		return (size_t)(q - tmp) + it->len == len && memcmp(tmp, p, (size_t)(q - tmp)) == 0;
	default:
		return 0;
	}
	return (size_t)(q - tmp) == len && memcmp(tmp, p, len) == 0;
}

/* Skip one whole value at r->pos. */
static int skip_value(instate_mp_reader *r)
{
	uint64_t pending = 1;
	while (pending) {
		instate_mp_item it;
		if (instate_mp_read(r, &it))
			return -1;
		pending--;
		if (it.type == INSTATE_MP_ARRAY)
			pending += it.len;
		else if (it.type == INSTATE_MP_MAP)
			pending += 2 * (uint64_t)it.len;
	}
	return 0;
}

/* Fill the cache from the n bytes at p: a map whose keys are canonical
 * and strictly increasing (so also what the canonical encoder would order
 * them as). Returns 1 (ready), 0 (not such bytes: the cache stays empty),
 * -1 (no memory). */
static int ents_split(lentries *c, const unsigned char *p, size_t n)
{
	instate_mp_reader r;
	instate_mp_item it;
	uint32_t i, count;
	size_t prev_off = 0, prev_len = 0;

	c->ready = 0;
	c->n = c->plen = c->live = 0;
	memset(&r, 0, sizeof r);
	r.p = p;
	r.n = n;
	if (instate_mp_read(&r, &it) || it.type != INSTATE_MP_MAP)
		return 0;
	count = it.len;
	if (grow((void **)&c->e, &c->cap, count, sizeof *c->e))
		return -1;
	if (grow((void **)&c->pool, &c->pcap, n, 1))
		return -1;
	for (i = 0; i < count; i++) {
		size_t koff = r.pos, voff, end;
		if (instate_mp_read(&r, &it))
			return 0;
		voff = r.pos;
		if (!key_canonical(&it, p + koff, voff - koff))
			return 0;
		if (i > 0 && key_cmp(p + prev_off, prev_len, p + koff, voff - koff) >= 0)
			return 0;
		if (skip_value(&r))
			return 0;
		end = r.pos;
		c->e[i].off = koff;
		c->e[i].klen = (uint32_t)(voff - koff);
		c->e[i].len = (uint32_t)(end - koff);
		prev_off = koff;
		prev_len = voff - koff;
	}
	if (r.pos != n)
		return 0;
	/* the pool is the bytes themselves: offsets hold */
	memcpy(c->pool, p, n);
	c->plen = n;
	c->n = count;
	c->live = 0;
	for (i = 0; i < count; i++)
		c->live += c->e[i].len;
	c->ready = 1;
	return 1;
}

/* Header and entries in order into c->out. */
static int ents_assemble(lentries *c)
{
	size_t i, off, total = INSTATE_MP_MAX_HEADER + c->live;
	if (c->n > UINT32_MAX)
		return -1;
	if (grow((void **)&c->out, &c->ocap, total, 1))
		return -1;
	off = (size_t)(instate_mp_put_map_header(c->out, (uint32_t)c->n) - c->out);
	for (i = 0; i < c->n; i++) {
		memcpy(c->out + off, c->pool + c->e[i].off, c->e[i].len);
		off += c->e[i].len;
	}
	c->olen = off;
	return 0;
}

/* ---- the owner walk ---------------------------------------------------- */

enum { UV_ROOT = 1, UV_DIRTY, UV_OWNER };

/* Record the table at idx and every table inside it (keys too) as owned by
 * the key at kidx, in the owner table at oidx. Returns 0, or 1 when a
 * table has a metatable or belongs to another key (with check). The value
 * is a tree (its encoding had no GRAPH), so the walk ends. */
static int own_walk(lua_State *L, int idx, int kidx, int oidx, int check, int depth)
{
	int r = 0;
	/* An entry's value is one level below the root: a table at walk
	 * depth d is at the full encode's depth d + 1, which refuses
	 * INSTATE_MP_MAX_DEPTH (the entry encoded alone does not) */
	if (depth + 1 >= INSTATE_MP_MAX_DEPTH || !lua_checkstack(L, 4))
		return 1;
	if (lua_getmetatable(L, idx)) {
		lua_pop(L, 1);
		if (check)
			return 1;
	}
	lua_pushvalue(L, idx);
	lua_rawget(L, oidx);
	if (!lua_isnil(L, -1) && !lua_rawequal(L, -1, kidx)) {
		lua_pop(L, 1);
		if (check)
			return 1;
	} else {
		lua_pop(L, 1);
	}
	lua_pushvalue(L, idx);
	lua_pushvalue(L, kidx);
	lua_rawset(L, oidx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int top = lua_gettop(L);
		if (lua_type(L, top - 1) == LUA_TTABLE)
			r = own_walk(L, top - 1, kidx, oidx, check, depth + 1);
		if (!r && lua_type(L, top) == LUA_TTABLE)
			r = own_walk(L, top, kidx, oidx, check, depth + 1);
		lua_pop(L, 1);
		if (r) {
			lua_pop(L, 1);
			return r;
		}
	}
	return 0;
}

/* Empty the table at idx in place (others hold it). */
static void clear_table(lua_State *L, int idx)
{
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		lua_pushvalue(L, -1);
		lua_pushnil(L);
		lua_rawset(L, idx);
	}
}

/* ---- encoding an entry ------------------------------------------------- */

typedef struct stage_args {
	lentries *c;
	unsigned flags;
	int ok;
} stage_args;

/* pcall'd: encode the value at 2 onto the stage (its errors are the full
 * encode's to report: the caller falls back on any). */
static int stage_encode(lua_State *L)
{
	stage_args *a = lua_touserdata(L, 1);
	size_t len;
	const char *b = linstate_encode_flags(L, 2, "value", &len, LINSTATE_ENC_CANONICAL | a->flags);
	a->ok = grow((void **)&a->c->stage, &a->c->scap, a->c->slen + len, 1) == 0;
	if (a->ok) {
		memcpy(a->c->stage + a->c->slen, b, len);
		a->c->slen += len;
	}
	return 0;
}

static int stage_value(lua_State *L, stage_args *a, int idx, size_t *off, size_t *len)
{
	idx = lua_absindex(L, idx);
	*off = a->c->slen;
	lua_pushcfunction(L, stage_encode);
	lua_pushlightuserdata(L, a);
	lua_pushvalue(L, idx);
	a->ok = 0;
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		lua_pop(L, 1);
		return -1;
	}
	if (!a->ok)
		return -1;
	*len = a->c->slen - *off;
	return 0;
}

typedef struct staged {
	size_t koff, klen, voff, vlen; /* vlen 0: delete */
} staged;

/* An extension header byte (fixext, ext8/16/32). */
static int is_ext(unsigned char b)
{
	return (b >= 0xc7 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8);
}

/* The update: re-encode the dirty entries into the cache. Returns 0, or 1
 * to fall back to the full encode (the cache untouched or left empty).
 * uv is the user value's index. */
static int ents_update(lua_State *L, lentries *c, int uv, unsigned flags)
{
	int root, dirty, owner, base = lua_gettop(L);
	stage_args a;
	staged *st = NULL;
	size_t nst = 0, cst = 0, i;
	int fall = 0;

	lua_rawgeti(L, uv, UV_ROOT);
	root = lua_gettop(L);
	lua_rawgeti(L, uv, UV_DIRTY);
	dirty = lua_gettop(L);
	lua_rawgeti(L, uv, UV_OWNER);
	owner = lua_gettop(L);
	if (lua_type(L, root) != LUA_TTABLE || lua_type(L, dirty) != LUA_TTABLE
	    || lua_type(L, owner) != LUA_TTABLE)
		return 1;
	if (lua_getmetatable(L, root)) {
		lua_settop(L, base);
		return 1;
	}
	lua_rawgeti(L, root, 1);
	if (!lua_isnil(L, -1)) {
		lua_settop(L, base);
		return 1;
	}
	lua_pop(L, 1);
	a.c = c;
	a.flags = flags;
	c->slen = 0;
	lua_pushnil(L);
	while (!fall && lua_next(L, dirty)) {
		int k = lua_gettop(L) - 1;
		staged s;
		lua_pop(L, 1);
		if (lua_type(L, k) == LUA_TTABLE || stage_value(L, &a, k, &s.koff, &s.klen)) {
			fall = 1;
			break;
		}
		lua_pushvalue(L, k);
		lua_rawget(L, root);
		if (lua_isnil(L, -1)) {
			s.voff = s.vlen = 0;
		} else if (stage_value(L, &a, -1, &s.voff, &s.vlen) || is_ext(c->stage[s.voff])
		           || (lua_type(L, -1) == LUA_TTABLE
		               && own_walk(L, lua_gettop(L), k, owner, 1, 0))) {
			fall = 1;
			break;
		}
		lua_pop(L, 1);
		if (nst == cst && grow((void **)&st, &cst, nst + 1, sizeof *st)) {
			fall = 1;
			break;
		}
		st[nst++] = s;
	}
	lua_settop(L, base);
	if (fall) {
		free(st);
		return 1;
	}
	/* Apply: nothing below can fail but memory, which empties the cache. */
	c->ready = 0;
	for (i = 0; i < nst; i++) {
		const staged *s = &st[i];
		const unsigned char *k = c->stage + s->koff;
		int hit;
		size_t at = ent_find(c, k, s->klen, &hit);
		if (s->vlen == 0) {
			if (hit) {
				c->live -= c->e[at].len;
				memmove(&c->e[at], &c->e[at + 1], (c->n - at - 1) * sizeof *c->e);
				c->n--;
			}
			continue;
		}
		{
			size_t off = pool_add(c, k, s->klen);
			if (off == (size_t)-1 || pool_add(c, c->stage + s->voff, s->vlen) == (size_t)-1) {
				free(st);
				return 1;
			}
			if (hit) {
				c->live -= c->e[at].len;
			} else {
				if (grow((void **)&c->e, &c->cap, c->n + 1, sizeof *c->e)) {
					free(st);
					return 1;
				}
				memmove(&c->e[at + 1], &c->e[at], (c->n - at) * sizeof *c->e);
				c->n++;
			}
			c->e[at].off = off;
			c->e[at].klen = (uint32_t)s->klen;
			c->e[at].len = (uint32_t)(s->klen + s->vlen);
			c->live += s->klen + s->vlen;
		}
	}
	free(st);
	if (pool_compact(c))
		return 1;
	lua_rawgeti(L, uv, UV_DIRTY);
	clear_table(L, lua_gettop(L));
	lua_settop(L, base);
	c->ready = 1;
	return 0;
}

/* The full encode of the root (raising as save_many always did), and the
 * cache rebuilt from it: split, the owner map refilled by a walk of every
 * entry. */
static const char *ents_full(lua_State *L, lentries *c, int uv, const char *name,
                             unsigned flags, size_t *len)
{
	const char *b;
	int root, dirty, owner, rc;

	c->ready = 0;
	lua_rawgeti(L, uv, UV_ROOT);
	root = lua_gettop(L);
	b = linstate_encode_flags(L, root, name, len, LINSTATE_ENC_CANONICAL | flags);
	c->busy = 1;
	rc = ents_split(c, (const unsigned char *)b, *len);
	if (rc < 0) {
		c->busy = 0;
		nomem(L, c);
	}
	lua_rawgeti(L, uv, UV_DIRTY);
	dirty = lua_gettop(L);
	lua_rawgeti(L, uv, UV_OWNER);
	owner = lua_gettop(L);
	if (lua_type(L, dirty) == LUA_TTABLE)
		clear_table(L, dirty);
	if (rc == 1 && lua_type(L, owner) == LUA_TTABLE) {
		/* The walk may allocate (a collector step, a finalizer that
		 * encodes): from here on the bytes are the cache's. */
		clear_table(L, owner);
		lua_pushnil(L);
		while (lua_next(L, root)) {
			int top = lua_gettop(L);
			if (lua_type(L, top) == LUA_TTABLE)
				own_walk(L, top, top - 1, owner, 0, 0);
			lua_pop(L, 1);
		}
		if (ents_assemble(c)) {
			c->busy = 0;
			nomem(L, c);
		}
		b = (const char *)c->out;
		*len = c->olen;
	} else {
		c->ready = 0;
	}
	c->busy = 0;
	lua_settop(L, root - 1);
	return b;
}

typedef struct encode_args {
	lentries *c;
	const char *name, *b;
	unsigned flags;
	size_t len;
} encode_args;

/* pcall'd with the args and the user value: the update, or the full
 * encode and rebuild. */
static int entries_encode_p(lua_State *L)
{
	encode_args *a = lua_touserdata(L, 1);
	lentries *c = a->c;
	const int uv = 2;
	if (c->ready) {
		int rc;
		c->busy = 1;
		rc = ents_update(L, c, uv, a->flags);
		if (rc == 0 && ents_assemble(c)) {
			c->busy = 0;
			nomem(L, c);
		}
		c->busy = 0;
		if (rc == 0) {
			a->len = c->olen;
			a->b = (const char *)c->out;
			return 0;
		}
	}
	a->b = ents_full(L, c, uv, a->name, a->flags, &a->len);
	return 0;
}

const char *linstate_entries_encode(lua_State *L, int idx, const char *name, unsigned flags,
                                    size_t *len)
{
	lentries *c = luaL_testudata(L, idx, ENTRIES_MT);
	encode_args a;
	int uv;
	if (!c)
		return NULL;
	idx = lua_absindex(L, idx);
	luaL_checkstack(L, 16, "instate entries");
	if (c->busy) {
		/* a finalizer's save in the middle of this cache's update */
		const char *b;
		LCOMPAT_GETUV(L, idx);
		uv = lua_gettop(L);
		lua_rawgeti(L, uv, UV_ROOT);
		b = linstate_encode_flags(L, -1, name, len, LINSTATE_ENC_CANONICAL | flags);
		lua_settop(L, uv - 1);
		return b;
	}
	/* Protected: any error (a memory error in the owner walk, the full
	 * encode's own) leaves the cache empty and not busy, then goes on */
	a.c = c;
	a.name = name;
	a.flags = flags;
	a.b = NULL;
	a.len = 0;
	lua_pushcfunction(L, entries_encode_p);
	lua_pushlightuserdata(L, &a);
	LCOMPAT_GETUV(L, idx);
	if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
		c->busy = 0;
		c->ready = 0;
		lua_error(L);
	}
	*len = a.len;
	return a.b;
}

/*
 * instate._entries(root, dirty, owner [, bytes]) -> cache, ready
 *
 * A new entry cache of the tracked table root, with the dirty-key set and
 * the owner map (weak keys) that track.lua fills. With bytes (the record
 * root was decoded from), ready when they are a map of canonical keys in
 * canonical order; else empty (the next save encodes root in full).
 */
static int l_entries(lua_State *L)
{
	lentries *c;
	size_t n = 0;
	const char *b;
	int ready = 0;

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_checktype(L, 2, LUA_TTABLE);
	luaL_checktype(L, 3, LUA_TTABLE);
	b = luaL_optlstring(L, 4, NULL, &n);
	c = lua_newuserdatauv(L, sizeof *c, 1);
	memset(c, 0, sizeof *c);
	luaL_setmetatable(L, ENTRIES_MT);
	lua_createtable(L, 3, 0);
	lua_pushvalue(L, 1);
	lua_rawseti(L, -2, UV_ROOT);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, UV_DIRTY);
	lua_pushvalue(L, 3);
	lua_rawseti(L, -2, UV_OWNER);
	LCOMPAT_SETUV(L, -2);
	if (b) {
		int rc = ents_split(c, (const unsigned char *)b, n);
		if (rc < 0)
			return luaL_error(L, "not enough memory");
		ready = rc == 1;
	}
	lua_pushboolean(L, ready);
	return 2;
}

/* instate._entries_count(t, limit) -> the number of t's entries, counted up
 * to limit. */
static int l_entries_count(lua_State *L)
{
	lua_Integer limit = luaL_checkinteger(L, 2), n = 0;
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	lua_pushnil(L);
	while (n < limit && lua_next(L, 1)) {
		lua_pop(L, 1);
		n++;
	}
	lua_pushinteger(L, n);
	return 1;
}

/* cache:state() -> ready, entries, bytes (for tests and benches). */
static int l_entries_state(lua_State *L)
{
	lentries *c = luaL_checkudata(L, 1, ENTRIES_MT);
	lua_pushboolean(L, c->ready);
	lua_pushinteger(L, (lua_Integer)c->n);
	lua_pushinteger(L, (lua_Integer)c->live);
	return 3;
}

/* cache:encode_len() -> the length of the encoding a save would get
 * now (the update or the full encode run, as in a save): for benches. */
static int l_entries_encode_len(lua_State *L)
{
	size_t len;
	luaL_checkudata(L, 1, ENTRIES_MT);
	linstate_entries_encode(L, 1, "value", 0, &len);
	lua_pushinteger(L, (lua_Integer)len);
	return 1;
}

void linstate_open_entries(lua_State *L)
{
	if (luaL_newmetatable(L, ENTRIES_MT)) {
		lua_pushcfunction(L, l_entries_gc);
		lua_setfield(L, -2, "__gc");
		lua_newtable(L);
		lua_pushcfunction(L, l_entries_state);
		lua_setfield(L, -2, "state");
		lua_pushcfunction(L, l_entries_encode_len);
		lua_setfield(L, -2, "encode_len");
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
	lua_pushcfunction(L, l_entries);
	lua_setfield(L, -2, "_entries");
	lua_pushcfunction(L, l_entries_count);
	lua_setfield(L, -2, "_entries_count");
}
