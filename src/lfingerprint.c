/*
 * lfingerprint.c - instate._fingerprint(value [, old]): a 64-bit hash of a
 * value's contents, the "may have changed" test of save_all (docs/DESIGN.md,
 * defstate: fingerprints).
 *
 * The walk neither sorts nor copies and allocates no Lua object: a table's
 * hash combines its entries by addition mod 2^64, so the order next()
 * visits them in does not matter. It distinguishes at least what the
 * canonical encoding distinguishes (the only direction that matters for
 * safety: two values the codec encodes differently must hash differently,
 * but for a 2^-64 chance; the reverse only costs an encode):
 *  - numbers as the codec classifies them: an integer it writes as an
 *    integer hashes its value under one tag, anything else the bits of its
 *    double under another (so 1 and 1.0 differ on 5.3/5.4, -0.0 and 0.0
 *    always differ, a NaN hashes its bits);
 *  - strings by length and bytes;
 *  - a table by its entries, its entry count and its metatable's identity
 *    (the codec reads raw and ignores metatables today; hashing the
 *    identity costs nothing and keeps the test safe should it not).
 * A value whose tables form a tree hashes by content alone. One in which a
 * table is reached twice (a shared sub-table, a cycle) is encoded by the
 * codec with references, so its shape matters: the walk then starts again
 * in a second mode that numbers each table at its first visit and hashes
 * a reference by that number, under a tag of its own. The numbers follow
 * next order, so such a value may hash differently after a rehash of one
 * of its tables: a spurious "changed", never a missed change.
 * A value the walk cannot describe (a function, userdata, a LuaJIT cdata,
 * nesting deeper than the codec allows) has no fingerprint (nil): the
 * caller then encodes it, and the codec accepts or rejects it as usual.
 */
#include "linstate.h"
#include "instate_mpack.h"

#include <stdlib.h>
#include <string.h>

#define FP_MT "instate.fingerprint"

/* Tags: each kind of value hashes in its own domain. */
#define TAG_NIL   UINT64_C(0x6e696c0000000001)
#define TAG_FALSE UINT64_C(0x626f6f6c00000002)
#define TAG_TRUE  UINT64_C(0x626f6f6c00000003)
#define TAG_INT   UINT64_C(0x696e740000000004)
#define TAG_FLT   UINT64_C(0x666c740000000005)
#define TAG_STR   UINT64_C(0x7374720000000006)
#define TAG_TAB   UINT64_C(0x7461620000000007)
#define TAG_REF   UINT64_C(0x7265660000000008)
#define TAG_GRAPH UINT64_C(0x6772610000000009)

/* One slot of the open-addressing set of tables met in this walk; live
 * only when its gen is the set's. */
typedef struct fp_slot {
	const void *p;
	uint32_t id;
	uint32_t gen;
} fp_slot;

typedef struct fp_set {
	fp_slot *slots;
	size_t cap;          /* a power of two, or 0 */
	size_t used;
	uint32_t gen;
} fp_set;

typedef struct fp_walk {
	lua_State *L;
	fp_set *set;
	int ids;             /* second mode: number the tables */
	uint32_t next_id;
} fp_walk;

enum { FP_OK = 0, FP_NONE = -1, FP_REPEAT = -2 };

/* MurmurHash3's finalizer: a bijection of 64-bit words, every input bit
 * reaching every output bit. */
static uint64_t fmix(uint64_t x)
{
	x ^= x >> 33;
	x *= UINT64_C(0xff51afd7ed558ccd);
	x ^= x >> 33;
	x *= UINT64_C(0xc4ceb9fe1a85ec53);
	x ^= x >> 33;
	return x;
}

/* Hash of the ordered pair (a, b): a bijection of b for a fixed a and of
 * a for a fixed b (the multiplier is odd). */
static uint64_t mix2(uint64_t a, uint64_t b)
{
	return fmix(a * UINT64_C(0x9e3779b97f4a7c15) ^ b);
}

/* Strings: xxHash64's round per 8-byte word (one multiply, a rotation,
 * one multiply), the length first, one full avalanche at the end. */
static uint64_t rotl(uint64_t x, int r)
{
	return x << r | x >> (64 - r);
}

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = TAG_STR ^ (uint64_t)n * UINT64_C(0x9e3779b97f4a7c15);
	uint64_t w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = rotl(h ^ w * UINT64_C(0xc2b2ae3d27d4eb4f), 31) * UINT64_C(0x9e3779b185ebca87);
	}
	if (n) {
		w = 0;
		memcpy(&w, s, n);    /* the length, hashed first, tells the padding */
		h = rotl(h ^ w * UINT64_C(0xc2b2ae3d27d4eb4f), 31) * UINT64_C(0x9e3779b185ebca87);
	}
	return fmix(h);
}

static size_t ptr_slot(const void *p, size_t mask)
{
	return (size_t)fmix((uint64_t)(uintptr_t)p) & mask;
}

static int set_grow(fp_set *s)
{
	size_t cap = s->cap ? s->cap * 2 : 64, i;
	fp_slot *slots = calloc(cap, sizeof *slots);

	if (!slots)
		return -1;
	for (i = 0; i < s->cap; i++) {
		fp_slot *o = &s->slots[i];
		if (o->gen == s->gen && o->p) {
			size_t j = ptr_slot(o->p, cap - 1);
			while (slots[j].gen == s->gen && slots[j].p)
				j = (j + 1) & (cap - 1);
			slots[j] = *o;
		}
	}
	free(s->slots);
	s->slots = slots;
	s->cap = cap;
	return 0;
}

/* Start an empty set: bumping gen forgets every slot without touching
 * them (at the wrap, clear for real). */
static void set_reset(fp_set *s)
{
	s->used = 0;
	if (++s->gen == 0) {
		if (s->slots)
			memset(s->slots, 0, s->cap * sizeof *s->slots);
		s->gen = 1;
	}
}

/* The id of p if met before (1), or insert it with id (0); -1: no memory. */
static int set_visit(fp_set *s, const void *p, uint32_t id, uint32_t *found)
{
	size_t j;

	if ((s->used + 1) * 2 > s->cap && set_grow(s))
		return -1;
	j = ptr_slot(p, s->cap - 1);
	while (s->slots[j].gen == s->gen && s->slots[j].p) {
		if (s->slots[j].p == p) {
			*found = s->slots[j].id;
			return 1;
		}
		j = (j + 1) & (s->cap - 1);
	}
	s->slots[j].p = p;
	s->slots[j].id = id;
	s->slots[j].gen = s->gen;
	s->used++;
	return 0;
}

static int fp_value(fp_walk *w, int idx, int depth, uint64_t *out);

static int fp_table(fp_walk *w, int idx, int depth, uint64_t *out)
{
	lua_State *L = w->L;
	uint64_t sum = 0, count = 0, h, mt = 0;
	uint32_t id = w->next_id, found;
	int rc;

	if (depth > INSTATE_MP_MAX_DEPTH || !lua_checkstack(L, 4))
		return FP_NONE;
	rc = set_visit(w->set, lua_topointer(L, idx), id, &found);
	if (rc < 0)
		return FP_NONE;
	if (rc > 0) {
		if (!w->ids)
			return FP_REPEAT;
		*out = mix2(TAG_REF, found);
		return FP_OK;
	}
	w->next_id++;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		uint64_t hk, hv;
		if ((rc = fp_value(w, -2, depth + 1, &hk)) != FP_OK ||
		    (rc = fp_value(w, -1, depth + 1, &hv)) != FP_OK) {
			lua_pop(L, 2);
			return rc;
		}
		sum += mix2(hk, hv);
		count++;
		lua_pop(L, 1);
	}
	if (lua_getmetatable(L, idx)) {
		mt = (uint64_t)(uintptr_t)lua_topointer(L, -1);
		lua_pop(L, 1);
	}
	h = mix2(mix2(mix2(TAG_TAB, count), sum), mt);
	if (w->ids)
		h = mix2(h, id);
	*out = h;
	return FP_OK;
}

static int fp_value(fp_walk *w, int idx, int depth, uint64_t *out)
{
	lua_State *L = w->L;

	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		*out = TAG_NIL;
		return FP_OK;
	case LUA_TBOOLEAN:
		*out = lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE;
		return FP_OK;
	case LUA_TNUMBER: {
		/* As enc_value() in lcodec.c decides integer or float. */
		lua_Integer i;
		double d;
		uint64_t bits;
		if (lua_isinteger(L, idx) && lcompat_int_exact(i = lua_tointeger(L, idx))) {
			*out = mix2(TAG_INT, (uint64_t)i);
			return FP_OK;
		}
		d = (double)lua_tonumber(L, idx);
		memcpy(&bits, &d, sizeof bits);
		*out = mix2(TAG_FLT, bits);
		return FP_OK;
	}
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		*out = hash_bytes(s, n);
		return FP_OK;
	}
	case LUA_TTABLE:
		return fp_table(w, lua_absindex(L, idx), depth, out);
	default:
		return FP_NONE;
	}
}

static int fp_compute(lua_State *L, fp_set *set, int idx, uint64_t *out)
{
	fp_walk w;
	int rc;

	w.L = L;
	w.set = set;
	w.ids = 0;
	w.next_id = 0;
	set_reset(set);
	rc = fp_value(&w, idx, 0, out);
	if (rc == FP_REPEAT) {
		w.ids = 1;
		w.next_id = 0;
		set_reset(set);
		rc = fp_value(&w, idx, 0, out);
		*out = mix2(TAG_GRAPH, *out);
	}
	return rc;
}

/*
 * instate._fingerprint(value [, old]) -> fingerprint | nil
 *
 * The fingerprint is an 8-byte string. When old is a string equal to it,
 * old itself is returned, so an unchanged value interns no new string. nil:
 * the value cannot be fingerprinted (see the top of the file).
 */
static int l_fingerprint(lua_State *L)
{
	fp_set *set = lua_touserdata(L, lua_upvalueindex(1));
	unsigned char b[8];
	uint64_t h;
	int i;

	luaL_checkany(L, 1);
	if (fp_compute(L, set, 1, &h) != FP_OK) {
		lua_pushnil(L);
		return 1;
	}
	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(h >> (8 * i));
	if (lua_type(L, 2) == LUA_TSTRING) {
		size_t n;
		const char *old = lua_tolstring(L, 2, &n);
		if (n == 8 && memcmp(old, b, 8) == 0) {
			lua_pushvalue(L, 2);
			return 1;
		}
	}
	lua_pushlstring(L, (const char *)b, 8);
	return 1;
}

static int l_fp_gc(lua_State *L)
{
	fp_set *set = lua_touserdata(L, 1);
	free(set->slots);
	set->slots = NULL;
	set->cap = 0;
	return 0;
}

void linstate_open_fingerprint(lua_State *L)
{
	fp_set *set = lcompat_newuserdata(L, sizeof *set, 0);
	memset(set, 0, sizeof *set);
	if (luaL_newmetatable(L, FP_MT)) {
		lua_pushcfunction(L, l_fp_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	lua_pushcclosure(L, l_fingerprint, 1);
	lua_setfield(L, -2, "_fingerprint");
}
