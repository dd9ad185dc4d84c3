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
 *
 * A restored value's fingerprint is taken by the decoder in its pass over
 * the encoded bytes (linstate_decode_print, lcodec.c), with the formula of
 * lfingerprint.h: exactly the walk of the value they decode to, or none,
 * never another value's.
 */
#include "linstate.h"
#include "lfingerprint.h"
#include "instate_mpack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FP_MT "instate.fingerprint"

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

static int fp_table(fp_walk *w, int idx, int depth, uint64_t *out);

/* The hash of the value at idx, of type t (a table: at the top of the
 * stack, idx its absolute index). */
static inline int fp_value(fp_walk *w, int idx, int t, int depth, uint64_t *out)
{
	lua_State *L = w->L;

	switch (t) {
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, idx, &n);
		*out = hash_bytes(s, n);
		return FP_OK;
	}
	case LUA_TNUMBER:
		*out = fp_number(L, idx);
		return FP_OK;
	case LUA_TTABLE:
		return fp_table(w, idx, depth, out);
	case LUA_TBOOLEAN:
		*out = lua_toboolean(L, idx) ? TAG_TRUE : TAG_FALSE;
		return FP_OK;
	case LUA_TNIL:
		*out = TAG_NIL;
		return FP_OK;
	default:
		return FP_NONE;
	}
}

/* Stack slots a walk needs per level of nesting (the key and value of the
 * entry looked at, one for the metatable after), asked for once every
 * FP_STACK_LEVELS levels rather than at every table. */
#define FP_STACK_LEVELS 16

static int fp_table(fp_walk *w, int idx, int depth, uint64_t *out)
{
	lua_State *L = w->L;
	uint64_t sum = 0, count = 0, h, mt = 0;
	uint32_t id = w->next_id, found;
	int rc, top, tk, tv;
	/* In the first mode the top table enters the set only when a table
	 * (key or value) is met in it, before that table is walked: nothing
	 * else can reach it again, and a way back to it is then found at the
	 * depth it always was (at the codec's depth limit too). Most tables a
	 * save walks hold none: one set insert fewer per variable. */
	int later = depth == 0 && !w->ids;

	if (depth > INSTATE_MP_MAX_DEPTH ||
	    (depth % FP_STACK_LEVELS == 0 && !lua_checkstack(L, 2 * FP_STACK_LEVELS + 2)))
		return FP_NONE;
	if (!later) {
		rc = set_visit(w->set, lua_topointer(L, idx), id, &found);
		if (rc < 0)
			return FP_NONE;
		if (rc > 0) {
			if (!w->ids)
				return FP_REPEAT;
			*out = mix2(TAG_REF, found);
			return FP_OK;
		}
	}
	w->next_id++;
	/* key at top - 1, value at top while an entry is looked at: the
	 * absolute indices a nested table is then walked at */
	top = lua_gettop(L) + 2;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		uint64_t hk, hv;
		tk = lua_type(L, top - 1);
		tv = lua_type(L, top);
		if (later && (tk == LUA_TTABLE || tv == LUA_TTABLE)) {
			later = 0;
			if (set_visit(w->set, lua_topointer(L, idx), id, &found) < 0) {
				lua_settop(L, top - 2);
				return FP_NONE;
			}
		}
		if ((rc = fp_value(w, top - 1, tk, depth + 1, &hk)) != FP_OK ||
		    (rc = fp_value(w, top, tv, depth + 1, &hv)) != FP_OK) {
			lua_settop(L, top - 2);
			return rc;
		}
		sum += mix2(hk, hv);
		count++;
		lua_settop(L, top - 1);
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

static int fp_compute(lua_State *L, fp_set *set, int idx, uint64_t *out)
{
	fp_walk w;
	int rc, t;

	w.L = L;
	w.set = set;
	w.ids = 0;
	w.next_id = 0;
	idx = lua_absindex(L, idx);
	t = lua_type(L, idx);
	set_reset(set);
	rc = fp_value(&w, idx, t, 0, out);
	if (rc == FP_REPEAT) {
		w.ids = 1;
		w.next_id = 0;
		set_reset(set);
		rc = fp_value(&w, idx, t, 0, out);
		*out = mix2(TAG_GRAPH, *out);
	}
	return rc;
}

/*
 * instate._fingerprint(value [, old]) -> fingerprint | nil
 *
 * The fingerprint is a number: an integer of 64 bits on 5.3 and 5.4, an
 * integral double of 53 bits on the others (old is accepted and unused).
 * nil: the value cannot be fingerprinted (see the top of the file).
 */
static int l_fingerprint(lua_State *L)
{
	fp_set *set = lua_touserdata(L, lua_upvalueindex(1));
	uint64_t h;

	luaL_checkany(L, 1);
	if (fp_compute(L, set, 1, &h) != FP_OK) {
		lua_pushnil(L);
		return 1;
	}
	push_print(L, h, lua_gettop(L) >= 2 ? 2 : 0);
	return 1;
}

/* Whether the value at idx is the fingerprint h, as push_print pushes it
 * (false, nil or any other value is not). */
static int is_print(lua_State *L, int idx, uint64_t h)
{
#if LUA_VERSION_NUM >= 503
	return lua_isinteger(L, idx) && (uint64_t)lua_tointeger(L, idx) == h;
#else
	return lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == (lua_Number)(h >> 11);
#endif
}

/* Whether the variable at var is tracked (var.track, through its class).
 * One whose metatable is plain (the class of untracked variables, which
 * has no track field, nor has any variable of its own) is not, without
 * the lookup: a string key looked up in the variable's hash part and
 * then its class, for each of 100k variables a save walks. plain 0:
 * always looked up. Leaves the stack as it was. */
static int is_tracked(lua_State *L, int var, int plain)
{
	int r;

	if (plain && lua_getmetatable(L, var)) {
		r = lua_rawequal(L, -1, plain);
		lua_pop(L, 1);
		if (r)
			return 0;
	}
	lua_getfield(L, var, "track");
	r = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return r;
}

/*
 * instate._fingerprint_pick(list, n, unread, perver, keys, vals, vers,
 *                           scalars, tabs, prints [, plain]) -> m, ns, nt
 *
 * save_all's choice of what to hand save_many, in one C call instead of a
 * Lua loop calling _fingerprint per table (docs/DESIGN.md, defstate:
 * fingerprints): a save after a restart that read every table and set 1%
 * of them walks 100k variables here, and only the few whose fingerprint
 * moved cost a table write. For each variable var = list[1..n] whose
 * var[1] is not unread:
 *  - an untracked table (not var.track) is picked when its fingerprint is
 *    not var[5] (none: it cannot be fingerprinted, so is picked and the
 *    codec accepts or rejects it, naming the variable); it goes to tabs,
 *    its new fingerprint (or nil) to prints, and var[5] becomes false if
 *    it was nil (the slot exists before the commit, so filling it after
 *    allocates nothing and cannot raise);
 *  - any other value is picked when var[2] (dirty) is true; it goes to
 *    scalars, and var[5] becomes false if it was a fingerprint (the record
 *    stops being the table it describes).
 * A picked variable's name goes to keys[m], its value to vals[m], and, if
 * perver, its version to vers[m]. Returns the counts (m = ns + nt). The
 * caller stores prints[i] into tabs[i][5] once the save is committed.
 * The slots are read raw (the classes hold no integer keys); name, track
 * and version through the class (__index tables), except that a variable
 * whose metatable is plain (the class of untracked variables, if given)
 * is untracked without looking track up. Runs no Lua code; raises only on
 * a memory error, leaving what was picked so far.
 */
static int l_fingerprint_pick(lua_State *L)
{
	fp_set *set = lua_touserdata(L, lua_upvalueindex(1));
	lua_Integer i, n;
	int perver;
	lua_Integer m = 0, ns = 0, nt = 0;
	enum { LIST = 1, UNREAD = 3, KEYS = 5, VALS, VERS, SCALARS, TABS, PRINTS, PLAIN };
	int plain;

	luaL_checktype(L, LIST, LUA_TTABLE);
	n = luaL_checkinteger(L, 2);
	perver = lua_toboolean(L, 4);
	for (i = KEYS; i <= PRINTS; i++)
		luaL_checktype(L, (int)i, LUA_TTABLE);
	lua_settop(L, PLAIN);
	plain = lua_istable(L, PLAIN) ? PLAIN : 0;
	luaL_checkstack(L, 8, "instate._fingerprint_pick");
	for (i = 1; i <= n; i++) {
		int var, v, picked = 0;

		lua_rawgeti(L, LIST, i);
		var = lua_gettop(L);
		if (lua_type(L, var) != LUA_TTABLE)
			return luaL_error(L, "instate._fingerprint_pick: list[%d] is %s, not a variable",
			                  (int)i, luaL_typename(L, var));
		lua_rawgeti(L, var, 1);
		v = var + 1;
		if (lua_rawequal(L, v, UNREAD)) {
			lua_settop(L, PLAIN);
			continue;
		}
		if (lua_type(L, v) == LUA_TTABLE && !is_tracked(L, var, plain)) {
			uint64_t h;
			int old = var + 2, has;

			lua_rawgeti(L, var, 5);
			has = fp_compute(L, set, v, &h) == FP_OK;
			if (!has || !is_print(L, old, h)) {
				picked = 1;
				nt++;
				lua_pushvalue(L, var);
				lua_rawseti(L, TABS, nt);
				if (has)
					push_print(L, h, old);
				else
					lua_pushnil(L);
				lua_rawseti(L, PRINTS, nt);
				if (lua_isnil(L, old)) {
					lua_pushboolean(L, 0);
					lua_rawseti(L, var, 5);
				}
			}
		} else {
			lua_rawgeti(L, var, 2);
			if (lua_toboolean(L, -1)) {
				picked = 1;
				ns++;
				lua_pushvalue(L, var);
				lua_rawseti(L, SCALARS, ns);
				lua_rawgeti(L, var, 5);
				if (lua_toboolean(L, -1)) {
					lua_pushboolean(L, 0);
					lua_rawseti(L, var, 5);
				}
			}
		}
		if (picked) {
			m++;
			lua_getfield(L, var, "name");
			lua_rawseti(L, KEYS, m);
			lua_pushvalue(L, v);
			lua_rawseti(L, VALS, m);
			if (perver) {
				lua_getfield(L, var, "version");
				lua_rawseti(L, VERS, m);
			}
		}
		lua_settop(L, PLAIN);
	}
	lua_pushinteger(L, m);
	lua_pushinteger(L, ns);
	lua_pushinteger(L, nt);
	return 3;
}

/* instate._fingerprint_bytes(encoded) -> fingerprint | nil: what
 * instate._fingerprint gives the value instate.decode(encoded) returns,
 * or nil when that is not known from the bytes: the decoder's own pass
 * (linstate_decode_print, whose value is dropped), so that this is the
 * very fingerprint a restored table holds. nil for bytes it refuses. */
static int l_fingerprint_bytes(lua_State *L)
{
	size_t n;
	const char *p = luaL_checklstring(L, 1, &n);
	uint64_t h;
	int has;

	lua_settop(L, 1);
	if (linstate_decode_print(L, p, n, &h, &has) && has)
		push_print(L, h, 0);
	else
		lua_pushnil(L);
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
	lua_pushvalue(L, -1);
	lua_pushcclosure(L, l_fingerprint, 1);
	lua_setfield(L, -3, "_fingerprint");
	lua_pushcclosure(L, l_fingerprint_pick, 1);
	lua_setfield(L, -2, "_fingerprint_pick");
	lua_pushcfunction(L, l_fingerprint_bytes);
	lua_setfield(L, -2, "_fingerprint_bytes");
}
