/*
 * lcodec.c - Lua values <-> MessagePack, the byte layout of
 * docs/FORMAT.md section 1. The bytes themselves are written and read by
 * instate_mpack.h; this file walks Lua values.
 *
 * Encoding runs no Lua code, calls no metamethods (raw access only) and
 * allocates no Lua object, so no collector step, and hence no finalizer,
 * can run inside it. (One exception, on LuaJIT only: an int64_t/uint64_t
 * cdata is read through the FFI converter compat.lua registers, which
 * creates no object either; see enc_cdata().) Each encoding works on an
 * encoder context (enc_ctx: the output buffer, the table-identity set,
 * the scratch arrays of the canonical order), as zstd's ZSTD_CCtx: the
 * state's codec keeps a few, reused, so a call allocates nothing and an
 * error raised half-way leaks nothing. A context is busy while its
 * encoding runs, and encodings made with the collector stopped (those of
 * finalizers) never use the context of ordinary calls: a finalizer that
 * encodes, even one run between linstate_encode() and the caller's use
 * of its bytes, cannot touch them (linstate.h states the lifetime).
 * Plain Lua 5.1 alone cannot tell a finalizer's call from its caller's
 * (lcompat_gc_running): there it may reuse the caller's context (README,
 * Lua versions).
 *
 * Canonical encoding (FORMAT.md section 1, "Canonical map order") sorts the
 * entries of every map by their encoded bytes, so a value gives the same
 * bytes in every process whatever its tables' hash layout. It runs in one
 * or two passes:
 *
 * 1. Encode as usual, but record where each map entry starts; once a map is
 *    done, sort its entries (memcmp of the entry bytes: key first, then the
 *    value for keys that encode alike) and permute the body in place. No
 *    table id is involved in a tree, so a value without references is done.
 * 2. A value with references needs its table ids assigned in canonical
 *    order, which pass 1 did not do (ids followed next order, and moving an
 *    entry that holds a table renumbers every later table). So encode again
 *    with each map ordered *before* its entries are written: the sort bytes
 *    of an entry with a scalar key are the key's bytes (independent of ids);
 *    an entry with a table key is encoded in full as a probe, from the ids
 *    known when the map begins, its bytes kept as its sort bytes, then the
 *    tables it numbered are forgotten again. The entries are then written
 *    in that order, numbering tables as they come. Probing has a budget
 *    (PROBE_FACTOR below), so nested table keys cannot make it exponential.
 */
#include "linstate.h"
#include "lfingerprint.h"
#include "instate_mpack.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_MT "instate.Codec"

/* Registry key of this state's codec userdata: the address is unique. */
static const char codec_key = 0;

/* Registry keys of LuaJIT's 64-bit integer converters, set by
 * core._set_int64_hooks() (lua/instate/compat.lua, which has the FFI):
 * make(hi, lo, signed) -> int64_t or uint64_t cdata; classify(cdata) ->
 * kind (1 int64_t, 2 uint64_t), hi, lo; or nil for any other cdata. The
 * module itself uses the Lua C API only. Absent on the other Luas. */
static const char int64_make_key = 0;
static const char int64_classify_key = 0;

/* Registry key of this state's class registry (register_class): one table
 * mapping name -> metatable and metatable -> name (strings and tables
 * never collide as keys). Absent until the first class is registered. */
static const char class_key = 0;

/* One slot of the open-addressing set of tables already written. A slot is
 * live only when its gen equals the codec's: bumping gen empties the set
 * without touching memory. */
typedef struct seen_slot {
	const void *p;
	uint32_t id;
	uint32_t gen;
} seen_slot;

/* Where the encoder is inside each enclosing table, to name the path of an
 * unstorable value. Written as it goes (one store per element), read only
 * when raising. keyidx is the stack slot of the current key of a map; 0 for
 * an array, whose current index is i. */
typedef struct enc_frame {
	int keyidx;
	lua_Integer i;
} enc_frame;

/* One map entry being put in canonical order: its bytes are len bytes at
 * buffer offset off (offsets: nested encodings may move the buffer). pre
 * holds the first 8 of them big-endian, zero-padded, so most comparisons
 * are one integer compare. idx is the entry's place in next order (second
 * pass). pos is not the entry's: once a map's entries are sorted, the pos
 * fields of its entries, read in stack order, map a place in next order
 * to the sorted position (it fills what would be padding). */
typedef struct canon_ent {
	uint64_t pre;
	size_t off, len;
	uint32_t idx;
	uint32_t pos;
} canon_ent;

/* The decoder's string cache: direct-mapped, SCACHE_SLOTS slots, strings
 * of 1..SCACHE_MAXLEN bytes. 40 is Lua's LUAI_MAXSHORTLEN: only short
 * strings are interned, so only for them is the cached string the very
 * object lua_pushlstring() would return. */
#define SCACHE_BITS 8
#define SCACHE_SLOTS (1u << SCACHE_BITS)
#define SCACHE_MAXLEN 40

/* One slot of the decoder's string cache (see dec_str): the string's bytes
 * packed by linstate_str_words(), its length (0 = empty slot) and where its bytes
 * live inside the Lua string, which the cache table keeps alive. pa, pb,
 * plen: the last value string that missed here, not cached yet. */
typedef struct scache_slot {
	uint64_t a, b;
	const char *s;
	uint64_t h;          /* its fingerprint hash, or 0: not taken yet */
	uint32_t len;
	uint32_t plen;
	uint64_t pa, pb;
} scache_slot;

/* One encoding's state (see the top of the file). */
typedef struct enc_ctx {
	unsigned char *buf;
	size_t len, cap;
	size_t last_len;     /* size of the previous encoding, to shrink after a spike */
	unsigned small_runs; /* encodings in a row much smaller than the buffer */
	seen_slot *slots;
	uint32_t mask;       /* slots - 1 (a power of two), or 0 before the first table */
	uint32_t count;      /* tables in the set = the next table id */
	uint32_t gen;
	uint32_t last_count;
	int refs;            /* a REF was written: wrap in GRAPH at the end */
	int canon;           /* canonical map order requested */
	int drop_mt;         /* metatables = "drop": unregistered ones are ignored */
	int gpass;           /* canonical pass 2: ids follow the sorted order */
	int probe_depth;     /* probes running inside probes (pass 2) */
	size_t refs_len;     /* pass 1: bytes of the REFs written ... */
	size_t nrefs;        /* ... and their number */
	size_t budget;       /* pass 2: bytes probes may still write */
	canon_ent *ents;     /* a stack: the entries of every map being sorted */
	size_t nent, ent_cap;
	const void **ids;    /* pass 2: id -> table, to forget a probe's tables */
	size_t ids_cap;
	const char *root;
	int busy;            /* an encoding runs on it */
	enc_frame frames[INSTATE_MP_MAX_DEPTH + 1];
} enc_ctx;

/* Contexts per state: ctx[0] for ordinary calls; the others, made on
 * demand, for encodings made while the collector is stopped (inside a
 * finalizer) or, should one ever run, inside another encoding. Finalizers
 * do not nest (the collector is stopped while one runs), so two are used
 * in practice. */
#define ENC_CTX_MAX 4

/* The per-state codec: the encoder contexts and the decoder's string
 * cache. The decoder keeps its own state on the C stack and touches the
 * cache only in steps that allocate nothing (see dec_str()), so nested
 * decodes need nothing more. */
typedef struct codec {
	enc_ctx *ctx[ENC_CTX_MAX];
	enc_ctx main;                     /* ctx[0] */
	scache_slot scache[SCACHE_SLOTS]; /* the decoder's, see dec_str() */
	/* The decoder's fingerprint (dec_table_t), filled at its first use:
	 * fp_int() of each fixint, by its byte (0x00..0x7f, 0xe0..0xff; the
	 * array indices 1..127 too), and a table's first mix2 by its count. */
	int fp_ready;
	uint64_t fp_fix[256];
	uint64_t fp_count[17];
} codec;

#define BUF_KEEP (64u * 1024)   /* buffer bytes always worth keeping */
#define SEEN_MIN 64u            /* initial set slots */
#define SEEN_KEEP 4096u         /* set slots always worth keeping */
#define SHRINK_AFTER 64u        /* small encodings in a row before giving memory back */
#define PATH_STRING_MAX 40      /* string keys longer than this are cut in paths */
#define SCRATCH_KEEP 4096u      /* canonical scratch entries always worth keeping */
#define SORT_SMALL 16           /* maps up to this size: insertion sort */
/* A probed entry is encoded twice (probe, then for real), and probes
 * nested in probes multiply that per level, so probing has a budget: the
 * bytes probes may write are PROBE_FACTOR times the value's size plus
 * PROBE_SLACK, and no more than PROBE_MAX probes run nested. A map met once
 * the budget is spent, or too deep in probes, does not probe: its table
 * keys sort as equal and keep next order among themselves. The size used is
 * pass 1's with every REF counted as one byte, which does not depend on
 * next order, so the budget runs out at the same point in every process. */
#define PROBE_FACTOR 4
#define PROBE_SLACK (64u * 1024)
#define PROBE_MAX 16

/* For the few small functions on the hot path of every encoded or decoded
 * item, where gcc's size heuristics would otherwise keep a call (and its
 * register saves) around a dozen instructions. */
#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* For the rare paths inside them (LuaJIT's 64-bit cdata, errors): kept out
 * of line, so that they do not grow the hot functions' code. */
#if defined(__GNUC__)
#define COLD __attribute__((noinline, cold))
#else
#define COLD
#endif

/* ===================================================================== */
/* The per-state codec                                                   */

static void ctx_free(enc_ctx *c)
{
	free(c->buf);
	free(c->slots);
	free(c->ents);
	free(c->ids);
	c->buf = NULL;
	c->slots = NULL;
	c->ents = NULL;
	c->ids = NULL;
	c->len = c->cap = 0;
	c->mask = c->count = 0;
	c->nent = c->ent_cap = c->ids_cap = 0;
}

static int codec_gc(lua_State *L)
{
	codec *cd = luaL_checkudata(L, 1, CODEC_MT);
	int i;

	ctx_free(&cd->main);
	for (i = 1; i < ENC_CTX_MAX; i++) {
		if (cd->ctx[i]) {
			ctx_free(cd->ctx[i]);
			free(cd->ctx[i]);
			cd->ctx[i] = NULL;
		}
	}
	return 0;
}

/* Push the codec of this state, created on first use and kept in the
 * registry. Its user value 1 is the table that keeps the strings of the
 * decoder's string cache alive: slot i of scache is entry i + 1. */
static codec *push_codec(lua_State *L)
{
	codec *c;

	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &codec_key) == LUA_TUSERDATA)
		return lua_touserdata(L, -1);
	lua_pop(L, 1);
	c = lcompat_newuserdata(L, sizeof *c, 1);
	memset(c, 0, sizeof *c);
	c->main.gen = 1;
	c->ctx[0] = &c->main;
	if (luaL_newmetatable(L, CODEC_MT)) {
		lua_pushcfunction(L, codec_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	/* Sized once: every store is then in the array part, with no rehash. */
	lua_createtable(L, SCACHE_SLOTS, 0);
	lcompat_setuservalue(L, -2, 1);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &codec_key);
	return c;
}

static codec *get_codec(lua_State *L)
{
	codec *c = push_codec(L);
	lua_pop(L, 1);
	return c;
}

/* Take a free context for an encoding about to start: ctx[0] for an
 * ordinary call, another one for a call made with the collector stopped,
 * which is how a finalizer runs. (A program that stops the collector
 * itself merely encodes in the second context: no finalizer can run then.)
 * Raises only if every context is busy, which needs encodings nested
 * ENC_CTX_MAX deep. */
static enc_ctx *ctx_acquire(lua_State *L, codec *cd)
{
	int i = lcompat_gc_running(L) ? 0 : 1;
	enc_ctx *c = NULL;

	for (; i < ENC_CTX_MAX; i++) {
		c = cd->ctx[i];
		if (!c) {
			c = calloc(1, sizeof *c);
			if (!c)
				break;
			c->gen = 1;
			cd->ctx[i] = c;
		}
		if (!c->busy) {
			c->busy = 1;
			return c;
		}
	}
	luaL_error(L, c ? "cannot encode: %d encodings in progress" : "not enough memory",
	           ENC_CTX_MAX);
	return NULL;
}

/* Every exit of an encoding, raising ones first of all, releases its
 * context; what a raise reports is taken out of the context before. */
static inline void ctx_release(enc_ctx *c)
{
	c->busy = 0;
}

static void out_of_memory(lua_State *L, enc_ctx *c)
{
	ctx_release(c);
	lua_pushliteral(L, "not enough memory");
	lua_error(L);
}

static void buf_grow(lua_State *L, enc_ctx *c, size_t need)
{
	size_t cap = c->cap ? c->cap : 256;
	unsigned char *p;

	if (need > SIZE_MAX / 2 - c->len)
		out_of_memory(L, c);
	while (cap - c->len < need)
		cap *= 2;
	p = realloc(c->buf, cap);
	if (!p)
		out_of_memory(L, c);
	c->buf = p;
	c->cap = cap;
}

/* Room for n more bytes at the end of the buffer. */
static inline unsigned char *buf_reserve(lua_State *L, enc_ctx *c, size_t n)
{
	if (c->cap - c->len < n)
		buf_grow(L, c, n);
	return c->buf + c->len;
}

static inline void buf_commit(enc_ctx *c, unsigned char *end)
{
	c->len = (size_t)(end - c->buf);
}

/* Tables built one after another sit at nearby addresses; a hash that keeps
 * that order keeps the probes of a large encoding in cache, where a mixing
 * hash made each probe a cache miss (measured: 25% slower on 100k tables).
 * A table takes 56 bytes or more, so >> 6 rarely lets two share a slot;
 * the high bits folded in spread distant heap regions. */
static inline uint32_t seen_hash(const void *p)
{
	uint64_t a = (uint64_t)(uintptr_t)p;
	return (uint32_t)((a >> 6) ^ (a >> 28));
}

static void seen_grow(lua_State *L, enc_ctx *c)
{
	uint32_t size = c->mask ? (c->mask + 1) * 2 : SEEN_MIN, i, j;
	seen_slot *s;

	if (size == 0 || size > UINT32_MAX / 2)
		out_of_memory(L, c);
	s = calloc(size, sizeof *s);
	if (!s)
		out_of_memory(L, c);
	if (c->mask) {
		for (i = 0; i <= c->mask; i++) {
			const seen_slot *o = &c->slots[i];
			if (o->gen != c->gen)
				continue;
			j = seen_hash(o->p) & (size - 1);
			while (s[j].gen == c->gen)
				j = (j + 1) & (size - 1);
			s[j] = *o;
		}
	}
	free(c->slots);
	c->slots = s;
	c->mask = size - 1;
}

/* The id of table p if already written (returns 1), else gives it the next
 * id in order of first appearance (returns 0). */
static inline int seen_check(lua_State *L, enc_ctx *c, const void *p, uint32_t *id)
{
	uint32_t i;

	if (c->count >= c->mask / 2) /* keep the load under 1/2 */
		seen_grow(L, c);
	i = seen_hash(p) & c->mask;
	while (c->slots[i].gen == c->gen) {
		if (c->slots[i].p == p) {
			*id = c->slots[i].id;
			return 1;
		}
		i = (i + 1) & c->mask;
	}
	c->slots[i].p = p;
	c->slots[i].gen = c->gen;
	c->slots[i].id = c->count;
	*id = c->count++;
	return 0;
}

/* Empty the set of tables. */
static void seen_clear(enc_ctx *c)
{
	c->count = 0;
	if (++c->gen == 0) { /* wrapped: stale slots could look live */
		if (c->slots)
			memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
		c->gen = 1;
	}
}

/* Take p out of the set (it must be there), closing the gap the way linear
 * probing needs: move back every later slot of the run that would no
 * longer be found past the hole. */
static void seen_remove(enc_ctx *c, const void *p)
{
	uint32_t i = seen_hash(p) & c->mask, j, k;

	while (c->slots[i].p != p)
		i = (i + 1) & c->mask;
	j = i;
	for (;;) {
		j = (j + 1) & c->mask;
		if (c->slots[j].gen != c->gen)
			break;
		k = seen_hash(c->slots[j].p) & c->mask;
		/* slot j stays if its home k lies cyclically in (i, j] */
		if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		c->slots[i] = c->slots[j];
		i = j;
	}
	c->slots[i].gen = 0;
}

/* Forget the tables numbered from `count` on (a probe's), newest first. */
static void seen_rollback(enc_ctx *c, uint32_t count)
{
	while (c->count > count)
		seen_remove(c, c->ids[--c->count]);
}

static void ids_put(lua_State *L, enc_ctx *c, uint32_t id, const void *p)
{
	if (id >= c->ids_cap) {
		size_t cap = c->ids_cap ? c->ids_cap * 2 : 256;
		const void **n;
		if (cap > SIZE_MAX / sizeof *n)
			out_of_memory(L, c);
		n = realloc((void *)c->ids, cap * sizeof *n);
		if (!n)
			out_of_memory(L, c);
		c->ids = n;
		c->ids_cap = cap;
	}
	c->ids[id] = p;
}

/* Room for `total` entries in the entry stack. */
static void ent_reserve(lua_State *L, enc_ctx *c, size_t total)
{
	size_t cap = c->ent_cap ? c->ent_cap : 64;
	canon_ent *n;

	if (total <= c->ent_cap)
		return;
	while (cap < total) {
		if (cap > SIZE_MAX / 2 / sizeof *n)
			out_of_memory(L, c);
		cap *= 2;
	}
	n = realloc(c->ents, cap * sizeof *n);
	if (!n)
		out_of_memory(L, c);
	c->ents = n;
	c->ent_cap = cap;
}

/* Start an encoding: empty buffer and set, and give back memory once the
 * encodings have stayed much smaller than what the buffers hold for a while
 * (not at once: alternating large and small values would regrow each time). */
static void ctx_reset(enc_ctx *c)
{
	int big_buf = c->cap > BUF_KEEP && c->last_len < c->cap / 8;
	int big_set = c->mask + 1 > SEEN_KEEP && (uint64_t)c->last_count * 8 < c->mask + 1;

	c->small_runs = big_buf || big_set ? c->small_runs + 1 : 0;
	if (c->small_runs >= SHRINK_AFTER) {
		c->small_runs = 0;
		if (big_buf) {
			size_t cap = c->last_len * 2 > BUF_KEEP ? c->last_len * 2 : BUF_KEEP;
			unsigned char *p = realloc(c->buf, cap);
			if (p) {
				c->buf = p;
				c->cap = cap;
			}
		}
		if (big_set) { /* seen_check() reallocates on demand */
			free(c->slots);
			c->slots = NULL;
			c->mask = 0;
		}
		if (c->ent_cap > SCRATCH_KEEP) { /* ent_reserve() reallocates */
			free(c->ents);
			c->ents = NULL;
			c->ent_cap = 0;
		}
		if (c->ids_cap > SCRATCH_KEEP) {
			free(c->ids);
			c->ids = NULL;
			c->ids_cap = 0;
		}
	}
	c->len = 0;
	c->refs = 0;
	c->canon = c->gpass = c->probe_depth = c->drop_mt = 0;
	c->refs_len = c->nrefs = 0;
	c->nent = 0;
	seen_clear(c);
}

/* ===================================================================== */
/* Errors with a path                                                    */

static int is_identifier(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > PATH_STRING_MAX || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_'))
			return 0;
	}
	return 1;
}

/* ["..."] with Lua escapes, cut after PATH_STRING_MAX bytes (on a
 * character boundary when the string is UTF-8). */
static void add_quoted(luaL_Buffer *b, const char *s, size_t n)
{
	int utf8 = instate_mp_utf8_valid(s, n);
	size_t i, m = n;

	if (m > PATH_STRING_MAX) {
		m = PATH_STRING_MAX;
		while (utf8 && m > 0 && ((unsigned char)s[m] & 0xc0) == 0x80)
			m--;
	}
	luaL_addstring(b, "[\"");
	for (i = 0; i < m; i++) {
		unsigned char ch = (unsigned char)s[i];
		char esc[8];
		if (ch == '"' || ch == '\\') {
			luaL_addchar(b, '\\');
			luaL_addchar(b, (char)ch);
		} else if (ch == '\n') {
			luaL_addstring(b, "\\n");
		} else if (ch < 0x20 || ch == 0x7f || (ch >= 0x80 && !utf8)) {
			snprintf(esc, sizeof esc, "\\%u", ch);
			luaL_addstring(b, esc);
		} else {
			luaL_addchar(b, (char)ch);
		}
	}
	if (m < n)
		luaL_addstring(b, "...");
	luaL_addstring(b, "\"]");
}

static void add_segment(lua_State *L, luaL_Buffer *b, const enc_frame *f)
{
	int k = f->keyidx;

	if (k == 0) {
		lua_pushfstring(L, "[%I]", (LUAI_UACINT)f->i);
		luaL_addvalue(b);
		return;
	}
	switch (lua_type(L, k)) {
	case LUA_TSTRING: {
		size_t n;
		const char *s = lua_tolstring(L, k, &n);
		if (is_identifier(s, n)) {
			luaL_addchar(b, '.');
			luaL_addlstring(b, s, n);
		} else {
			add_quoted(b, s, n);
		}
		break;
	}
	case LUA_TNUMBER:
		if (lua_isinteger(L, k))
			lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, k));
		else
			lua_pushfstring(L, "[%f]", (LUAI_UACNUMBER)lua_tonumber(L, k));
		luaL_addvalue(b);
		break;
	case LUA_TBOOLEAN:
		luaL_addstring(b, lua_toboolean(L, k) ? "[true]" : "[false]");
		break;
	default:
		luaL_addstring(b, "[table]");
		break;
	}
}

/* Raise "<what> at <root><path>" where the path has `depth` segments.
 * Building the message allocates, and so may run a finalizer that
 * encodes: the path is copied out and the context released first. The
 * keys it names stay in their stack slots, below anything pushed here. */
static void enc_fail(lua_State *L, enc_ctx *c, int depth, const char *what)
{
	enc_frame frames[INSTATE_MP_MAX_DEPTH + 1];
	const char *root = c->root;
	luaL_Buffer b;
	int k;

	memcpy(frames, c->frames, (size_t)depth * sizeof *frames);
	ctx_release(c);
	luaL_checkstack(L, 4, NULL);
	luaL_buffinit(L, &b);
	luaL_addstring(&b, what);
	luaL_addstring(&b, " at ");
	luaL_addstring(&b, root);
	for (k = 0; k < depth; k++)
		add_segment(L, &b, &frames[k]);
	luaL_pushresult(&b);
	lua_error(L);
}

/* luaL_checkstack()'s message, raised once the context is released. */
static void enc_stack_overflow(lua_State *L, enc_ctx *c)
{
	ctx_release(c);
	luaL_error(L, "stack overflow (%s)", "value nested too deeply");
}

static COLD void enc_fail_type(lua_State *L, enc_ctx *c, int depth, int t, const char *as)
{
	char what[96];
	const char *why = "";
	if (t == LCOMPAT_TCDATA) {
		/* without compat.lua's converters (instate.core loaded alone) no
		 * cdata is storable */
		int hooks = 0;
		if (lua_checkstack(L, 1)) {
			hooks = lua_rawgetp(L, LUA_REGISTRYINDEX, &int64_classify_key) == LUA_TFUNCTION;
			lua_pop(L, 1);
		}
		why = *as ? " (cdata keys compare by identity)"
		    : hooks ? " other than int64_t or uint64_t"
		    : " (int64_t and uint64_t need require \"instate\")";
	}
	snprintf(what, sizeof what, "cannot store a %s%s%s", lua_typename(L, t), as, why);
	enc_fail(L, c, depth, what);
}

/* ===================================================================== */
/* Encoder                                                               */

static void enc_table(lua_State *L, enc_ctx *c, int idx, int depth);

/* memcpy for the short strings (keys, names) that make up most values:
 * fixed-size overlapping moves the compiler inlines, instead of a call. */
static inline void copy_bytes(unsigned char *d, const char *s, size_t n)
{
	if (n > 16) {
		memcpy(d, s, n);
	} else if (n >= 8) {
		memcpy(d, s, 8);
		memcpy(d + n - 8, s + n - 8, 8);
	} else if (n >= 4) {
		memcpy(d, s, 4);
		memcpy(d + n - 4, s + n - 4, 4);
	} else if (n > 0) {
		/* 1..3 bytes: first, middle and last cover them all, no loop */
		d[0] = (unsigned char)s[0];
		d[n >> 1] = (unsigned char)s[n >> 1];
		d[n - 1] = (unsigned char)s[n - 1];
	}
}

/* Whether s[0..n) is UTF-8. Most strings are short ASCII (keys, names):
 * for n <= 16 two overlapping loads OR-ed together hold every byte, so
 * one test of the high bits settles it without the byte loop; the rest
 * take instate_mp_utf8_valid(). */
static ALWAYS_INLINE int str_is_utf8(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	uint64_t w;

	if (n > 16)
		return instate_mp_utf8_valid(s, n);
	if (n >= 8)
		w = linstate_load64(u) | linstate_load64(u + n - 8);
	else if (n >= 4)
		w = linstate_load32(u) | linstate_load32(u + n - 4);
	else if (n > 0)
		w = u[0] | u[n >> 1] | u[n - 1];
	else
		return 1;
	return (w & 0x8080808080808080ull) == 0 || instate_mp_utf8_valid(s, n);
}

/* Out of line: its message buffer would cost every caller a stack frame. */
static void enc_fail_long(lua_State *L, enc_ctx *c, int depth, size_t n)
{
	char what[80];
	snprintf(what, sizeof what, "cannot store a string of %lu bytes (4 GiB is the limit)",
	         (unsigned long)n);
	enc_fail(L, c, depth, what);
}

/* The string at idx. */
static ALWAYS_INLINE void enc_string(lua_State *L, enc_ctx *c, int idx, int depth)
{
	size_t n;
	const char *s = lua_tolstring(L, idx, &n);
	unsigned char *p;

	if (n > UINT32_MAX)
		enc_fail_long(L, c, depth, n);
	p = buf_reserve(L, c, n + 5);
	/* Text as str, anything else as bin: strict readers reject a str
	 * that is not UTF-8, and both decode to a Lua string. */
	if (str_is_utf8(s, n))
		p = instate_mp_put_str_header(p, (uint32_t)n);
	else
		p = instate_mp_put_bin_header(p, (uint32_t)n);
	copy_bytes(p, s, n);
	buf_commit(c, p + n);
}

/* LuaJIT's int64_t or uint64_t cdata at idx: the MessagePack integer of
 * its value, through the classifier compat.lua registered. Returns 0 for
 * any other cdata, or when no classifier is registered (instate.core
 * loaded without instate). The one place an encoding runs Lua code: the
 * classifier creates no object (it reads the cdata through a buffer made
 * once), and LuaJIT's collector state tells a finalizer's encode from the
 * caller's (lcompat_gc_running), so a finalizer, should one run, encodes
 * in a context of its own. An error it raises releases the context. */
static COLD int enc_cdata(lua_State *L, enc_ctx *c, int idx)
{
	int kind;
	uint64_t v;
	unsigned char *p;

	if (!lua_checkstack(L, 4))
		enc_stack_overflow(L, c);
	idx = lua_absindex(L, idx);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &int64_classify_key) != LUA_TFUNCTION) {
		lua_pop(L, 1);
		return 0;
	}
	lua_pushvalue(L, idx);
	if (lua_pcall(L, 1, 3, 0) != LUA_OK) {
		ctx_release(c);
		lua_error(L);
	}
	kind = (int)lua_tonumber(L, -3);
	v = (uint64_t)lua_tonumber(L, -2) << 32 | (uint32_t)lua_tonumber(L, -1);
	lua_pop(L, 3);
	if (kind != 1 && kind != 2)
		return 0;
	p = buf_reserve(L, c, INSTATE_MP_MAX_HEADER);
	if (kind == 2 && v > (uint64_t)INT64_MAX)
		p = instate_mp_put_uint(p, v);
	else
		p = instate_mp_put_int(p, (int64_t)v);
	buf_commit(c, p);
	return 1;
}

/* The value at idx (absolute or negative) of Lua type t, at `depth`
 * segments below the root. */
static void enc_value(lua_State *L, enc_ctx *c, int idx, int t, int depth)
{
	unsigned char *p;

	switch (t) {
	case LUA_TNIL:
		p = buf_reserve(L, c, 1);
		buf_commit(c, instate_mp_put_nil(p));
		break;
	case LUA_TBOOLEAN:
		p = buf_reserve(L, c, 1);
		buf_commit(c, instate_mp_put_bool(p, lua_toboolean(L, idx)));
		break;
	case LUA_TNUMBER: {
		lua_Integer i;
		p = buf_reserve(L, c, INSTATE_MP_MAX_HEADER);
		/* Where numbers are doubles, an integral one beyond 2^53 is
		 * written as the float it is: read back as an integer it would
		 * be refused there (lcompat_int_exact() is 1 on 5.3 and 5.4). */
		if (lua_isinteger(L, idx) && lcompat_int_exact(i = lua_tointeger(L, idx)))
			p = instate_mp_put_int(p, (int64_t)i);
		else
			p = instate_mp_put_double(p, (double)lua_tonumber(L, idx));
		buf_commit(c, p);
		break;
	}
	case LUA_TSTRING:
		enc_string(L, c, idx, depth);
		break;
	case LUA_TTABLE:
		enc_table(L, c, lua_absindex(L, idx), depth);
		break;
	default:
		if (t != LCOMPAT_TCDATA || !enc_cdata(L, c, idx))
			enc_fail_type(L, c, depth, t, "");
	}
}

/* Keys exactly 1..n (n = lua_rawlen, a border): one lua_next pass that
 * stops at the first key that rules it out. */
static int is_array(lua_State *L, int idx, lua_Unsigned n)
{
	lua_Unsigned count = 0;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_Integer k;
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || (lua_Unsigned)k > n) {
			lua_pop(L, 1);
			return 0;
		}
		count++;
	}
	return count == n;
}

/* Arrays of scalars (the common small array) in one pass instead of two:
 * walk with lua_next expecting the keys 1, 2, ... n in order and no table
 * value. At the first surprise rewind the output and return 0: nothing but
 * bytes was written, since only tables touch the identity set. */
static int enc_scalar_array(lua_State *L, enc_ctx *c, int idx, lua_Unsigned n, int depth,
                            enc_frame *fr)
{
	size_t start = c->len;
	lua_Integer expect = 1;
	unsigned char *p = buf_reserve(L, c, 5);

	buf_commit(c, instate_mp_put_array_header(p, (uint32_t)n));
	lua_pushnil(L);
	fr->keyidx = lua_gettop(L);
	while (lua_next(L, idx)) {
		int vt = lua_type(L, -1);
		if (vt == LUA_TTABLE || !lua_isinteger(L, -2) || lua_tointeger(L, -2) != expect) {
			lua_pop(L, 2);
			c->len = start;
			return 0;
		}
		if (vt == LUA_TSTRING)
			enc_string(L, c, -1, depth + 1);
		else
			enc_value(L, c, -1, vt, depth + 1);
		lua_pop(L, 1);
		expect++;
	}
	if ((lua_Unsigned)(expect - 1) != n) {
		c->len = start;
		return 0;
	}
	return 1;
}

/* ---- canonical order ------------------------------------------------ */

/* The first 8 bytes at p (n >= 1 of them valid, 8 readable) as a
 * big-endian integer, zero padded: comparing two such integers orders like
 * memcmp, except that a padded tie still needs the full comparison. */
static inline uint64_t ent_prefix(const unsigned char *p, size_t n)
{
	uint64_t v;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	memcpy(&v, p, 8);
	v = __builtin_bswap64(v);
#else
	size_t i;
	for (v = 0, i = 0; i < 8; i++)
		v = v << 8 | p[i];
#endif
	return n >= 8 ? v : v & (~(uint64_t)0 << (8 * (8 - n)));
}

/* 8 zero bytes past the end of the buffer (not part of it), so that
 * ent_prefix() may read 8 bytes at any entry. */
static void buf_pad(lua_State *L, enc_ctx *c)
{
	memset(buf_reserve(L, c, 8), 0, 8);
}

/* Call buf_pad() first if the buffer grew since. */
static inline void ent_set(enc_ctx *c, canon_ent *e, size_t off, size_t len)
{
	e->off = off;
	e->len = len;
	e->pre = ent_prefix(c->buf + off, len);
}

/* memcmp order of the entries' bytes, a proper prefix first. */
static inline int ent_less(const unsigned char *b, const canon_ent *x, const canon_ent *y)
{
	size_t n;
	int r;

	if (x->pre != y->pre)
		return x->pre < y->pre;
	n = x->len < y->len ? x->len : y->len;
	if (n > 8 && (r = memcmp(b + x->off + 8, b + y->off + 8, n - 8)) != 0)
		return r < 0;
	return x->len < y->len;
}

/* Stable insertion sort; returns whether anything moved. */
static int ent_isort(const unsigned char *b, canon_ent *a, size_t n)
{
	size_t i, j;
	int moved = 0;

	for (i = 1; i < n; i++) {
		canon_ent x;
		if (!ent_less(b, &a[i], &a[i - 1]))
			continue;
		x = a[i];
		j = i;
		do {
			a[j] = a[j - 1];
			j--;
		} while (j > 0 && ent_less(b, &x, &a[j - 1]));
		a[j] = x;
		moved = 1;
	}
	return moved;
}

/* Sort the n entries from e0 of the entry stack, stably: insertion sort
 * for small maps, else a bottom-up merge sort over runs of SORT_SMALL with
 * the space above the entries as the other half. Returns whether the order
 * changed (entries are recorded in buffer order, so unchanged means
 * offsets still ascend). */
static int ent_sort(lua_State *L, enc_ctx *c, size_t e0, size_t n)
{
	const unsigned char *b = c->buf;
	canon_ent *a, *t, *x;
	size_t i, w;

	if (n <= SORT_SMALL)
		return ent_isort(b, c->ents + e0, n);
	if (n > (SIZE_MAX - e0) / 2)
		out_of_memory(L, c);
	ent_reserve(L, c, e0 + 2 * n);
	a = c->ents + e0;
	t = a + n;
	for (i = 0; i < n; i += SORT_SMALL)
		ent_isort(b, a + i, n - i < SORT_SMALL ? n - i : SORT_SMALL);
	for (w = SORT_SMALL; w < n; w *= 2) {
		for (i = 0; i < n; i += 2 * w) {
			size_t l = i, m = i + w < n ? i + w : n, r = m;
			size_t hi = i + 2 * w < n ? i + 2 * w : n, k = i;
			while (l < m && r < hi)
				t[k++] = ent_less(b, &a[r], &a[l]) ? a[r++] : a[l++];
			while (l < m)
				t[k++] = a[l++];
			while (r < hi)
				t[k++] = a[r++];
		}
		x = a;
		a = t;
		t = x;
	}
	if (a != c->ents + e0)
		memcpy(c->ents + e0, a, n * sizeof *a);
	a = c->ents + e0;
	for (i = 1; i < n; i++)
		if (a[i].off < a[i - 1].off)
			return 1;
	return 0;
}

/* Pass 1: the map body from `body` to the end of the buffer holds the
 * entries recorded from e0 on; sort them and permute the body, through the
 * free space at the end of the buffer. */
static void canon_permute(lua_State *L, enc_ctx *c, size_t e0, size_t body)
{
	size_t n = c->nent - e0, end = c->len, i;
	unsigned char *tmp, *q;

	buf_pad(L, c);
	for (i = 0; i < n; i++) {
		canon_ent *e = &c->ents[e0 + i];
		ent_set(c, e, e->off, (i + 1 < n ? c->ents[e0 + i + 1].off : end) - e->off);
	}
	if (!ent_sort(L, c, e0, n))
		return;
	tmp = buf_reserve(L, c, end - body);
	for (q = tmp, i = 0; i < n; i++) {
		const canon_ent *e = &c->ents[e0 + i];
		copy_bytes(q, (const char *)c->buf + e->off, e->len);
		q += e->len;
	}
	memcpy(c->buf + body, tmp, end - body);
}

/* ---- tables --------------------------------------------------------- */

/* A map in next order (and, when canonical, sorted afterwards). */
static void enc_map(lua_State *L, enc_ctx *c, int idx, int depth, enc_frame *fr)
{
	/* One pass: a one-byte fixmap header, widened afterwards in the
	 * rare case of more than 15 pairs. */
	size_t hpos = c->len, h, e0 = c->nent;
	lua_Unsigned count = 0;
	int kt, vt, canon = c->canon;

	buf_reserve(L, c, 1);
	c->len++;
	lua_pushnil(L);
	fr->keyidx = lua_gettop(L);
	while (lua_next(L, idx)) {
		if (canon) {
			if (c->nent == c->ent_cap)
				ent_reserve(L, c, c->nent + 1);
			c->ents[c->nent++].off = c->len;
		}
		/* String keys (nearly all of them) and values inline: no call,
		 * no second dispatch in enc_value(). */
		kt = lua_type(L, -2);
		if (kt == LUA_TSTRING)
			enc_string(L, c, -2, depth + 1);
		else if (kt == LUA_TTABLE)
			enc_table(L, c, fr->keyidx, depth + 1);
		else if (kt == LUA_TNUMBER || kt == LUA_TBOOLEAN)
			enc_value(L, c, -2, kt, depth + 1);
		else
			enc_fail_type(L, c, depth, kt, " as a key");
		vt = lua_type(L, -1);
		if (vt == LUA_TSTRING)
			enc_string(L, c, -1, depth + 1);
		else
			enc_value(L, c, -1, vt, depth + 1);
		lua_pop(L, 1);
		count++;
	}
	if (count > UINT32_MAX)
		enc_fail(L, c, depth, "cannot store a table of more than 2^32-1 entries");
	if (canon && count > 1)
		canon_permute(L, c, e0, hpos + 1);
	c->nent = e0;
	h = instate_mp_map_header_size((uint32_t)count);
	if (h > 1) {
		buf_reserve(L, c, h - 1);
		memmove(c->buf + hpos + h, c->buf + hpos + 1, c->len - hpos - 1);
		c->len += h - 1;
	}
	instate_mp_put_map_header(c->buf + hpos, (uint32_t)count);
}

/* Pass 2: a map whose order is settled before its entries are written, so
 * that tables are numbered in canonical order. The sort bytes are written
 * first at the end of the buffer, then the entries in order after them,
 * then the entries are moved down over the sort bytes.
 *
 * Writing in sorted order needs the keys in that order. A Lua table to
 * hold them would be an allocation, and so a collector step inside the
 * encoding; they go in stack slots instead, filled by one more next walk
 * (with the sorted position of every place in next order from pos). A map
 * too big for the stack takes a walk per part that fits. */
static void enc_map_graph(lua_State *L, enc_ctx *c, int idx, int depth, enc_frame *fr)
{
	lua_Unsigned n = 0;
	int tables = 0, tkeys = 0, probe, kt, base;
	size_t e0 = c->nent, region, real, i, done, part;
	unsigned char *p;

	lua_pushnil(L);
	while (lua_next(L, idx)) {
		if (lua_type(L, -2) == LUA_TTABLE)
			tkeys = tables = 1;
		else if (lua_type(L, -1) == LUA_TTABLE)
			tables = 1;
		lua_pop(L, 1);
		n++;
	}
	/* Without a table inside, the order cannot change any id. */
	if (!tables || n < 2) {
		enc_map(L, c, idx, depth, fr);
		return;
	}
	if (n > UINT32_MAX)
		enc_fail(L, c, depth, "cannot store a table of more than 2^32-1 entries");
	p = buf_reserve(L, c, 5);
	buf_commit(c, instate_mp_put_map_header(p, (uint32_t)n));
	region = c->len;
	probe = tkeys && c->probe_depth < PROBE_MAX && c->budget > 0;
	ent_reserve(L, c, e0 + n);
	i = 0;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t off = c->len;
		canon_ent *e;
		fr->keyidx = lua_gettop(L) - 1;
		kt = lua_type(L, -2);
		if (kt == LUA_TTABLE) {
			if (probe) {
				uint32_t count = c->count;
				c->probe_depth++;
				enc_table(L, c, fr->keyidx, depth + 1);
				enc_value(L, c, -1, lua_type(L, -1), depth + 1);
				c->probe_depth--;
				seen_rollback(c, count);
				c->budget -= c->len - off < c->budget ? c->len - off : c->budget;
			} else {
				/* every table key alike: they keep next order */
				p = buf_reserve(L, c, 1);
				buf_commit(c, instate_mp_put_map_header(p, 0));
			}
		} else if (kt == LUA_TNUMBER || kt == LUA_TSTRING || kt == LUA_TBOOLEAN) {
			enc_value(L, c, -2, kt, depth + 1);
		} else {
			enc_fail_type(L, c, depth, kt, " as a key");
		}
		lua_pop(L, 1);
		/* nested maps have popped their entries: the slot is ours */
		buf_pad(L, c);
		e = &c->ents[c->nent++];
		ent_set(c, e, off, c->len - off);
		e->idx = (uint32_t)i++;
	}
	ent_sort(L, c, e0, (size_t)n);
	for (i = 0; i < n; i++)
		c->ents[e0 + c->ents[e0 + i].idx].pos = (uint32_t)i;
	real = c->len;
	base = lua_gettop(L);
	for (done = 0; done < n; done += part) {
		size_t place = 0, k;
		/* room for the part, and for lua_next's key and value above it */
		part = n - done;
		while (part > 1 && (part > INT_MAX - 8 || !lua_checkstack(L, (int)part + 8)))
			part /= 2;
		if (!lua_checkstack(L, (int)part + 8))
			enc_stack_overflow(L, c);
		lua_settop(L, base + (int)part);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			size_t pos = c->ents[e0 + place++].pos;
			if (pos - done < part) {
				lua_pushvalue(L, -2);
				lua_replace(L, base + 1 + (int)(pos - done));
			}
			lua_pop(L, 1);
		}
		for (k = 0; k < part; k++) {
			int slot = base + 1 + (int)k;
			fr->keyidx = slot;
			kt = lua_type(L, slot);
			if (kt == LUA_TTABLE)
				enc_table(L, c, slot, depth + 1);
			else
				enc_value(L, c, slot, kt, depth + 1);
			lua_pushvalue(L, slot);
			lua_rawget(L, idx);
			enc_value(L, c, -1, lua_type(L, -1), depth + 1);
			lua_pop(L, 1);
		}
		lua_settop(L, base);
	}
	memmove(c->buf + region, c->buf + real, c->len - real);
	c->len = region + (c->len - real);
	c->nent = e0;
}

static void enc_contents(lua_State *L, enc_ctx *c, int idx, int depth, enc_frame *fr);

/* The table at idx has a metatable, on the stack top (popped here). A
 * registered class: CLASS (ext type 3) around the class name and the
 * contents, the header fixed once the payload's length is known. Else
 * raise, or with metatables = "drop" write the contents alone. */
static COLD void enc_instance(lua_State *L, enc_ctx *c, int idx, int depth, enc_frame *fr)
{
	size_t start, n, len, h;
	const char *name;
	unsigned char *p;

	/* the mt is at -1 and enc_table checked 3 slots */
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &class_key) == LUA_TTABLE) {
		lua_pushvalue(L, -2);
		lua_rawget(L, -2);
	} else {
		lua_pushnil(L);
	}
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 3);
		if (!c->drop_mt)
			enc_fail(L, c, depth, "cannot store a table with an unregistered metatable");
		enc_contents(L, c, idx, depth, fr);
		return;
	}
	/* The name stays referenced by the registry while its bytes are copied. */
	name = lua_tolstring(L, -1, &n);
	start = c->len;
	p = buf_reserve(L, c, 3 + 5 + n);
	p += 3; /* room for an ext8 header; moved below if another fits */
	p = instate_mp_put_str_header(p, (uint32_t)n);
	memcpy(p, name, n);
	buf_commit(c, p + n);
	lua_pop(L, 3);
	enc_contents(L, c, idx, depth, fr);
	len = c->len - start - 3;
	if (len > UINT32_MAX)
		enc_fail(L, c, depth, "cannot store a class instance larger than 4 GiB");
	h = instate_mp_ext_header_size((uint32_t)len);
	if (h != 3) {
		buf_reserve(L, c, h);
		memmove(c->buf + start + h, c->buf + start + 3, len);
		c->len = start + h + len;
	}
	instate_mp_put_ext_header(c->buf + start, INSTATE_MP_EXT_CLASS, (uint32_t)len);
}

static void enc_table(lua_State *L, enc_ctx *c, int idx, int depth)
{
	enc_frame *fr;
	unsigned char *p;
	uint32_t id;

	if (seen_check(L, c, lua_topointer(L, idx), &id)) {
		unsigned char *e;
		p = buf_reserve(L, c, INSTATE_MP_MAX_HEADER);
		e = instate_mp_put_ref(p, id);
		buf_commit(c, e);
		c->refs = 1;
		c->refs_len += (size_t)(e - p);
		c->nrefs++;
		return;
	}
	if (c->gpass)
		ids_put(L, c, id, lua_topointer(L, idx));
	if (depth >= INSTATE_MP_MAX_DEPTH) {
		char what[64];
		snprintf(what, sizeof what, "value nested deeper than %d levels", INSTATE_MP_MAX_DEPTH);
		enc_fail(L, c, depth, what);
	}
	if (!lua_checkstack(L, 3))
		enc_stack_overflow(L, c);
	fr = &c->frames[depth];
	/* One test on the common path: a table without a metatable. */
	if (lua_getmetatable(L, idx)) {
		enc_instance(L, c, idx, depth, fr);
		return;
	}
	enc_contents(L, c, idx, depth, fr);
}

/* The contents of the table at idx (its header and entries), once it is
 * known to be written in full. */
static void enc_contents(lua_State *L, enc_ctx *c, int idx, int depth, enc_frame *fr)
{
	unsigned char *p;
	lua_Unsigned n;

	n = lua_rawlen(L, idx);
	/* A border of 0 means t[1] == nil: not an array, so skip the check. */
	if (n > 0 && n <= UINT32_MAX && enc_scalar_array(L, c, idx, n, depth, fr))
		return;
	if (n > 0 && n <= UINT32_MAX && is_array(L, idx, n)) {
		lua_Integer i;
		p = buf_reserve(L, c, 5);
		buf_commit(c, instate_mp_put_array_header(p, (uint32_t)n));
		fr->keyidx = 0;
		for (i = 1; (lua_Unsigned)i <= n; i++) {
			fr->i = i;
			enc_value(L, c, -1, lua_rawgeti(L, idx, i), depth + 1);
			lua_pop(L, 1);
		}
	} else if (c->gpass) {
		enc_map_graph(L, c, idx, depth, fr);
	} else {
		enc_map(L, c, idx, depth, fr);
	}
}

/* Encode the value at idx in a context of cd's; see linstate.h for how
 * long the bytes returned stay valid. With held, the context stays busy
 * (*held) until the caller releases it; raising releases it anyway. */
static const char *encode_with(lua_State *L, codec *cd, int idx, const char *root, size_t *len,
                               unsigned flags, enc_ctx **held)
{
	enc_ctx *c = ctx_acquire(L, cd);
	int canonical = (flags & LINSTATE_ENC_CANONICAL) != 0;

	ctx_reset(c);
	c->canon = canonical;
	c->drop_mt = (flags & LINSTATE_ENC_DROP_METATABLES) != 0;
	c->root = root ? root : "value";
	idx = lua_absindex(L, idx);
	enc_value(L, c, idx, lua_type(L, idx), 0);
	if (c->refs && canonical) {
		/* Pass 2 (see the top of the file): ids in canonical order. */
		size_t size = c->len - c->refs_len + c->nrefs;
		c->budget = size > (SIZE_MAX - PROBE_SLACK) / PROBE_FACTOR ? SIZE_MAX
			: size * PROBE_FACTOR + PROBE_SLACK;
		c->len = 0;
		seen_clear(c);
		c->gpass = 1;
		enc_value(L, c, idx, lua_type(L, idx), 0);
		c->gpass = 0;
	}
	if (c->refs) {
		/* Tell the decoder up front that it must remember tables: wrap the
		 * whole value once in GRAPH. Plain trees never pay for this. */
		size_t h;
		if (c->len > UINT32_MAX)
			enc_fail(L, c, 0, "cannot store a value with references larger than 4 GiB");
		h = instate_mp_ext_header_size((uint32_t)c->len);
		buf_reserve(L, c, h);
		memmove(c->buf + h, c->buf, c->len);
		instate_mp_put_ext_header(c->buf, INSTATE_MP_EXT_GRAPH, (uint32_t)c->len);
		c->len += h;
	}
	c->last_len = c->len;
	c->last_count = c->count;
	if (held)
		*held = c;
	else
		ctx_release(c);
	*len = c->len;
	return (const char *)c->buf;
}

const char *linstate_encode(lua_State *L, int idx, const char *root, size_t *len)
{
	idx = lua_absindex(L, idx);
	return encode_with(L, get_codec(L), idx, root, len, 0, NULL);
}

const char *linstate_encode_canonical(lua_State *L, int idx, const char *root, size_t *len)
{
	idx = lua_absindex(L, idx);
	return encode_with(L, get_codec(L), idx, root, len, LINSTATE_ENC_CANONICAL, NULL);
}

const char *linstate_encode_flags(lua_State *L, int idx, const char *root, size_t *len,
                                  unsigned flags)
{
	idx = lua_absindex(L, idx);
	return encode_with(L, get_codec(L), idx, root, len, flags, NULL);
}

/* ===================================================================== */
/* Decoder                                                               */

typedef struct dec {
	instate_mp_reader r;
	int graph;
	int refs;         /* stack slot of the id -> table array, in a graph */
	int cache;        /* stack slot of the string cache's table */
	scache_slot *sc;  /* the string cache's slots */
	uint64_t tables;  /* tables begun so far, in a graph */
	size_t total;     /* the input's length (r.n is cut inside a CLASS) */
	int fp;           /* also take the value's fingerprint (see below) */
	int fpok;         /* so far the fingerprint is the walk's (else none) */
	uint64_t fh;      /* fp: the fingerprint of the value last pushed */
	const uint64_t *fix;   /* fp: the codec's fp_fix */
	const uint64_t *count; /* fp: the codec's fp_count */
} dec;


/* The cache slot of the string with words a, b and length n. */
static inline uint32_t str_slot(uint64_t a, uint64_t b, uint32_t n)
{
	return (uint32_t)(((a + n) * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full) >>
	                  (64 - SCACHE_BITS));
}

/* dec_str() missed: push the string (1..SCACHE_MAXLEN bytes) and make it
 * slot i's. */
static void dec_str_miss(lua_State *L, dec *d, const unsigned char *s, uint32_t n, uint32_t i,
                         uint64_t h)
{
	scache_slot *sl;
	uint64_t a, b;

	lua_pushlstring(L, (const char *)s, n);
	/* Fill the slot only after lua_pushlstring(): it may run a finalizer
	 * that decodes, and so uses the cache, itself. */
	linstate_str_words(s, n, &a, &b);
	lua_pushvalue(L, -1);
	lua_rawseti(L, d->cache, (lua_Integer)i + 1);
	sl = &d->sc[i];
	sl->a = a;
	sl->b = b;
	sl->s = lua_tostring(L, -1);
	sl->h = h;
	sl->len = n;
}

/* Push the string of n bytes at s, a map key if is_key.
 *
 * Decoded values repeat the same short strings (map keys above all) over
 * and over, and lua_pushlstring() hashes every byte of each and looks it up
 * in the intern table. So recently pushed short strings stay in a small
 * direct-mapped cache: a hit costs two word loads, a multiply, a compare
 * and an array read. The cache table (the codec's user value) references
 * every cached string, so none is collected while a slot points into it;
 * filling a slot overwrites it, table entry and all, so the cache never
 * holds more than SCACHE_SLOTS strings. Short strings are interned: the
 * cached string is the very object lua_pushlstring() would give.
 *
 * Keys are cached at once. A value string is cached only when it misses
 * twice in a row in its slot: values are often unique (names, ids), and
 * caching each one made decoding slower in wall time (measured: 5% on
 * bench/codec.lua's per-variable decode) while it evicted the keys. */
static ALWAYS_INLINE void dec_str_t(lua_State *L, dec *d, const unsigned char *s, uint32_t n,
                                    int is_key, const int FP)
{
	scache_slot *sl;
	uint64_t a, b, h = 0;
	uint32_t i;

	if (n - 1 >= SCACHE_MAXLEN) { /* empty (wraps) or long */
		if (FP)
			d->fh = hash_bytes((const char *)s, n);
		lua_pushlstring(L, (const char *)s, n);
		return;
	}
	linstate_str_words(s, n, &a, &b);
	i = str_slot(a, b, n);
	sl = &d->sc[i];
	if (sl->len == n && sl->a == a && sl->b == b &&
	    (n <= 16 || memcmp(sl->s + 8, s + 8, n - 16) == 0)) {
		/* fp: the slot keeps the string's hash once taken */
		if (FP) {
			if (!(h = sl->h))
				h = sl->h = n <= 16 ? hash_words(n, a, b) : hash_bytes((const char *)s, n);
			d->fh = h;
		}
		lua_rawgeti(L, d->cache, (lua_Integer)i + 1);
		return;
	}
	if (FP)
		d->fh = h = n <= 16 ? hash_words(n, a, b) : hash_bytes((const char *)s, n);
	if (is_key || (sl->plen == n && sl->pa == a && sl->pb == b)) {
		dec_str_miss(L, d, s, n, i, h);
	} else {
		/* (pa, pb, plen) only admits: a false match merely caches */
		sl->pa = a;
		sl->pb = b;
		sl->plen = n;
		lua_pushlstring(L, (const char *)s, n);
	}
}

/* The string, and with d->fp its hash in d->fh (the slow path's). */
static void dec_str(lua_State *L, dec *d, const unsigned char *s, uint32_t n, int is_key)
{
	if (d->fp)
		dec_str_t(L, d, s, n, is_key, 1);
	else
		dec_str_t(L, d, s, n, is_key, 0);
}

static int dec_value(lua_State *L, dec *d, int depth, int is_key);

static ALWAYS_INLINE int dec_item(lua_State *L, dec *d, int depth, int is_key, const int FP);

static int dec_table(lua_State *L, dec *d, int map, uint32_t n, size_t off, int depth);
static int dec_table_fp(lua_State *L, dec *d, int map, uint32_t n, size_t off, int depth);

/*
 * The fingerprint in the decoder's pass (d->fp: linstate_decode_print).
 * Each value pushed leaves in d->fh what the walk (lfingerprint.c) gives
 * it, with the formula of lfingerprint.h, or clears d->fpok when that
 * cannot be said exactly, so that the fingerprint is exactly the walk of
 * the value decoded or none, never another value's (docs/DESIGN.md,
 * defstate: fingerprints):
 *  - a number hashes as the walk hashes what is pushed: an integer this
 *    Lua holds exactly (lua_pushinteger) is one to the walk on every Lua
 *    (on 5.1/5.2/LuaJIT an integral double within 2^53, not -0), so
 *    fp_int(); a float (lua_pushnumber; a float32 converted to double) by
 *    fp_double(), the walk's own test on that double; a NaN by fp_number()
 *    of what was pushed (LuaJIT pushes its canonical NaN); an integer read
 *    as a LuaJIT cdata: none;
 *  - a float map key that is integral (or +-0, +-inf) is turned into an
 *    integer key by some Luas' tables and not others: none;
 *  - a map entry whose value is nil is not in the table (lua_rawset of
 *    nil), nor is an array element that is nil: not counted (nil is the
 *    one byte 0xc0, looked at before the value is read);
 *  - two keys of one map that are the same Lua key (a duplicate, or two
 *    encodings of one key: 1 as fixint and as uint8, a str and a bin of
 *    the same bytes, 1.5 as float32 and float64) leave one entry, the
 *    last: none. Up to DEC_FP_SMALL keys their hashes are compared
 *    pairwise (equal keys hash equal; two that merely collide, a 2^-64
 *    chance, also give none, which is safe); a longer map asks its table,
 *    before each entry is set, whether the key is in it already;
 *  - an extension (a GRAPH of shared tables or cycles, a class instance,
 *    anything else): none. Decoded tables have no metatable (hashed 0),
 *    and without references each table is reached once: the walk's tree
 *    mode. Bytes the decoder refuses give no value at all.
 * With d->fp clear, the same loops are compiled without any of it
 * (dec_table against dec_table_fp: FP is a constant in each).
 */
#define DEC_FP_SMALL 16

/* Whether the next item is nil (0xc0, its only form): a nil value adds
 * no entry to its table. */
static ALWAYS_INLINE int dec_next_nil(const dec *d)
{
	return d->r.pos < d->r.n && d->r.p[d->r.pos] == 0xc0;
}

/* A float key: integral ones (and +-0, +-inf) give no fingerprint. */
static ALWAYS_INLINE void dec_fp_float(lua_State *L, dec *d, double v, int is_key)
{
	if (is_key && !(floor(v) != v))
		d->fpok = 0;
	d->fh = v == v ? fp_double(v) : fp_number(L, -1);
}

/* An array (map == 0) of n elements or a map of n pairs whose header began
 * at byte off; its contents follow at d->r.pos. */
static ALWAYS_INLINE int dec_table_t(lua_State *L, dec *d, int map, uint32_t n, size_t off,
                                     int depth, const int FP)
{
	uint32_t i;
	int size = n > (uint32_t)INT_MAX ? INT_MAX : (int)n;
	uint64_t sum = 0, count = 0, keys[DEC_FP_SMALL];

	if (depth >= INSTATE_MP_MAX_DEPTH)
		return instate_mp_corrupt(&d->r, off, "tables nested deeper than %d levels",
		                          INSTATE_MP_MAX_DEPTH);
	if (!lua_checkstack(L, 4))
		return instate_mp_corrupt(&d->r, off, "no Lua stack left for nesting");
	if (map)
		lua_createtable(L, 0, size);
	else
		lua_createtable(L, size, 0);
	if (d->graph) {
		/* registered before its contents: they may refer back to it */
		lua_pushvalue(L, -1);
		lua_rawseti(L, d->refs, (lua_Integer)++d->tables);
	}
	if (!map) {
		for (i = 1; i <= n; i++) {
			int isnil = FP && dec_next_nil(d);
			if (dec_item(L, d, depth + 1, 0, FP))
				return INSTATE_CORRUPT;
			if (FP && !isnil) {
				sum += mix2(i <= 0x7f ? d->fix[i] : fp_int((lua_Integer)i), d->fh);
				count++;
			}
			lua_rawseti(L, -2, (lua_Integer)i);
		}
	} else {
		for (i = 0; i < n; i++) {
			uint64_t hk = 0;
			int isnil;
			if (dec_item(L, d, depth + 1, 1, FP))
				return INSTATE_CORRUPT;
			if (FP) {
				hk = d->fh;
				if (n <= DEC_FP_SMALL)
					keys[i] = hk;
			}
			isnil = FP && dec_next_nil(d);
			if (dec_item(L, d, depth + 1, 0, FP))
				return INSTATE_CORRUPT;
			if (FP) {
				if (n > DEC_FP_SMALL && d->fpok) {
					lua_pushvalue(L, -2);
					if (lua_rawget(L, -4) != LUA_TNIL)
						d->fpok = 0;
					lua_pop(L, 1);
				}
				if (!isnil) {
					sum += mix2(hk, d->fh);
					count++;
				}
			}
			lua_rawset(L, -3);
		}
		if (FP && n <= DEC_FP_SMALL && d->fpok) {
			uint32_t j;
			for (i = 1; i < n; i++)
				for (j = 0; j < i; j++)
					if (keys[i] == keys[j])
						d->fpok = 0;
		}
	}
	if (FP)
		d->fh = count <= 16 ? mix2(mix2(d->count[count], sum), 0) : fp_tab(count, sum, 0);
	return 0;
}

static int dec_table(lua_State *L, dec *d, int map, uint32_t n, size_t off, int depth)
{
	return dec_table_t(L, d, map, n, off, depth, 0);
}

static int dec_table_fp(lua_State *L, dec *d, int map, uint32_t n, size_t off, int depth)
{
	return dec_table_t(L, d, map, n, off, depth, 1);
}

/* Push the next value: the forms game state is made of (fixint, fixstr,
 * fixmap, fixarray, float, bool, nil) read here, inline in the table loop;
 * anything else, and anything the fast path would have to report as
 * corrupt, goes to dec_value(), so errors and offsets stay its own. */
static ALWAYS_INLINE int dec_item(lua_State *L, dec *d, int depth, int is_key, const int FP)
{
	size_t off = d->r.pos, left = d->r.n - off;
	const unsigned char *p = d->r.p + off;
	unsigned c;
	uint32_t n;

	if (left == 0)
		return dec_value(L, d, depth, is_key);
	c = p[0];
	if (c <= 0x7f) {
		d->r.pos = off + 1;
		lua_pushinteger(L, (lua_Integer)c);
		if (FP)
			d->fh = d->fix[c];
		return 0;
	}
	if (c >= 0xe0) {
		d->r.pos = off + 1;
		lua_pushinteger(L, (lua_Integer)c - 256);
		if (FP)
			d->fh = d->fix[c];
		return 0;
	}
	if (c >= 0xa0 && c <= 0xbf) {
		n = c & 0x1f;
		if (n < left) {
			d->r.pos = off + 1 + n;
			dec_str_t(L, d, p + 1, n, is_key, FP);
			return 0;
		}
	} else if (c <= 0x9f) {
		n = c & 0x0f;
		if (c <= 0x8f ? n <= (left - 1) / 2 : n <= left - 1) {
			d->r.pos = off + 1;
			return FP ? dec_table_fp(L, d, c <= 0x8f, n, off, depth)
			          : dec_table(L, d, c <= 0x8f, n, off, depth);
		}
	} else if (c == 0xcb && left > 8) {
		uint64_t bits = linstate_load64(p + 1);
		double v;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		bits = __builtin_bswap64(bits);
#else
		{
			int k;
			for (bits = 0, k = 1; k <= 8; k++)
				bits = bits << 8 | p[k];
		}
#endif
		memcpy(&v, &bits, 8);
		if (!is_key || v == v) {
			d->r.pos = off + 9;
			lua_pushnumber(L, (lua_Number)v);
			if (FP)
				dec_fp_float(L, d, v, is_key);
			return 0;
		}
	} else if (c == 0xca && left > 4) {
		uint32_t bits = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
		float f;
		memcpy(&f, &bits, 4);
		if (!is_key || f == f) {
			d->r.pos = off + 5;
			lua_pushnumber(L, (lua_Number)(double)f);
			if (FP)
				dec_fp_float(L, d, (double)f, is_key);
			return 0;
		}
	} else if (c == 0xc2 || c == 0xc3) {
		d->r.pos = off + 1;
		lua_pushboolean(L, c == 0xc3);
		if (FP)
			d->fh = c == 0xc3 ? TAG_TRUE : TAG_FALSE;
		return 0;
	}
	return dec_value(L, d, depth, is_key);
}

/* ---- integers beyond 2^53 where numbers are doubles ------------------ */

/* One open table of dec_path()'s walk. */
typedef struct path_frame {
	uint64_t left;       /* items left: elements, or keys and values (2 a pair) */
	uint64_t index;      /* an array's current index (1-based) */
	int map;
	instate_mp_item key; /* a map's current key (a table key: its header) */
} path_frame;

#define PATH_MAX_CHARS 48 /* a decoder's path is cut after this (the message is short) */

/* Append one key of a decoded map to buf, as the encoder's paths write it. */
static void path_key(char *buf, size_t size, const instate_mp_item *k)
{
	size_t n = strlen(buf), i;
	char seg[64];

	switch (k->type) {
	case INSTATE_MP_STR:
	case INSTATE_MP_BIN:
		if (is_identifier((const char *)k->data, k->len)) {
			snprintf(seg, sizeof seg, ".%.*s", (int)k->len, (const char *)k->data);
		} else {
			size_t m = 2;
			seg[0] = '[';
			seg[1] = '"';
			for (i = 0; i < k->len && m < sizeof seg - 10; i++) {
				unsigned ch = k->data[i];
				if (ch == '"' || ch == '\\')
					m += (size_t)snprintf(seg + m, sizeof seg - m, "\\%c", ch);
				else if (ch < 0x20 || ch >= 0x7f)
					m += (size_t)snprintf(seg + m, sizeof seg - m, "\\%u", ch);
				else
					seg[m++] = (char)ch;
			}
			snprintf(seg + m, sizeof seg - m, "%s\"]", i < k->len ? "..." : "");
		}
		break;
	case INSTATE_MP_UINT:
		snprintf(seg, sizeof seg, "[%llu]", (unsigned long long)k->v.u);
		break;
	case INSTATE_MP_INT:
		snprintf(seg, sizeof seg, "[%lld]", (long long)k->v.i);
		break;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		snprintf(seg, sizeof seg, "[%.14g]", k->v.d);
		break;
	case INSTATE_MP_BOOL:
		snprintf(seg, sizeof seg, "[%s]", k->v.b ? "true" : "false");
		break;
	default:
		snprintf(seg, sizeof seg, "[table]");
		break;
	}
	if (n < size)
		snprintf(buf + n, size - n, "%s", seg);
}

/*
 * The path from the root ("value") to the item at byte target of the n
 * bytes at p, written like the encoder's paths; *as_key tells that the
 * item is a map key (the path then names the map). An error path only:
 * it walks the input again from the start, so that the decoder's loop
 * tracks nothing. The bytes before target were read once already.
 */
static void dec_path(const unsigned char *p, size_t n, size_t target, int *as_key, char *out,
                     size_t size)
{
	path_frame fr[INSTATE_MP_MAX_DEPTH + 1];
	instate_mp_reader r;
	instate_mp_item it;
	char buf[256];
	int depth = 0, graph, k;

	memset(&r, 0, sizeof r);
	r.p = p;
	r.n = n;
	*as_key = 0;
	snprintf(buf, sizeof buf, "value");
	if (instate_mp_begin(&r, &graph))
		goto done;
	while (r.pos < target) {
		if (instate_mp_read(&r, &it))
			goto done;
		/* an instance is its table: step over the class name */
		while (it.type == INSTATE_MP_EXT && it.ext == INSTATE_MP_EXT_CLASS) {
			r.pos = (size_t)(it.data - r.p);
			if (instate_mp_read(&r, &it) || instate_mp_read(&r, &it))
				goto done;
		}
		if (depth > 0) {
			path_frame *f = &fr[depth - 1];
			if (!f->map)
				f->index++;
			else if (f->left % 2 == 0)
				f->key = it;
			f->left--;
		}
		if ((it.type == INSTATE_MP_ARRAY || it.type == INSTATE_MP_MAP) && it.len > 0 &&
		    depth <= INSTATE_MP_MAX_DEPTH) {
			fr[depth].map = it.type == INSTATE_MP_MAP;
			fr[depth].left = (uint64_t)it.len * (fr[depth].map ? 2 : 1);
			fr[depth].index = 0;
			fr[depth].key.type = INSTATE_MP_NIL;
			depth++;
		} else {
			while (depth > 0 && fr[depth - 1].left == 0)
				depth--;
		}
	}
	for (k = 0; k < depth; k++) {
		const path_frame *f = &fr[k];
		size_t m = strlen(buf);
		if (k == depth - 1 && f->map && f->left % 2 == 0) {
			*as_key = 1; /* the item is the next key of this map */
			break;
		}
		if (!f->map)
			snprintf(buf + m, sizeof buf - m, "[%llu]",
			         (unsigned long long)(f->index + (k == depth - 1)));
		else
			path_key(buf, sizeof buf, &f->key);
	}
done:
	if (strlen(buf) > size - 1)
		snprintf(out, size, "%.*s...", (int)(size - 4), buf);
	else
		snprintf(out, size, "%s", buf);
}

/* A class name this Lua state has not registered, at byte off: the
 * message, in the reader, names the class and the path of the instance. */
static COLD int dec_unknown_class(dec *d, size_t off, const unsigned char *name, uint32_t n)
{
	char path[PATH_MAX_CHARS + 1], shown[48];
	uint32_t i, m = 0;
	int as_key;

	/* at most 40 characters of it, escaped as the paths escape */
	for (i = 0; i < n && m < 36; i++) {
		unsigned ch = name[i];
		if (ch < 0x20 || ch == 0x7f || ch == '\'' || ch == '\\')
			m += (uint32_t)snprintf(shown + m, sizeof shown - m, "\\%u", ch);
		else
			shown[m++] = (char)ch;
	}
	snprintf(shown + m, sizeof shown - m, "%s", i < n ? "..." : "");
	dec_path(d->r.p, d->total, off, &as_key, path, sizeof path);
	if (d->r.err[0] == '\0') {
		d->r.err_off = off;
		snprintf(d->r.err, sizeof d->r.err, "unknown class '%.40s' at %.48s (byte %lu): not registered",
		         shown, path, (unsigned long)off);
	}
	return INSTATE_CORRUPT;
}

/* An integer beyond 2^53 on a Lua whose numbers are doubles, at byte off,
 * its 64 bits in v (signed: an int64_t, else a uint64 above INT64_MAX).
 * LuaJIT, once compat.lua registered its converter, gets the int64_t or
 * uint64_t cdata of that exact value; elsewhere, and as a map key (a cdata
 * key compares by identity, so no lookup would find it), it is refused,
 * naming the path: never read as a nearby double. */
static COLD int dec_big_int(lua_State *L, dec *d, size_t off, uint64_t v, int is_signed,
                            int is_key)
{
	char path[PATH_MAX_CHARS + 1];
	int as_key, hook;

	if (!lua_checkstack(L, 4))
		return instate_mp_corrupt(&d->r, off, "no Lua stack left for nesting");
	hook = lua_rawgetp(L, LUA_REGISTRYINDEX, &int64_make_key) == LUA_TFUNCTION;
	if (hook && !is_key) {
		lua_pushnumber(L, (lua_Number)(v >> 32));
		lua_pushnumber(L, (lua_Number)(v & 0xffffffffu));
		lua_pushboolean(L, is_signed);
		lua_call(L, 3, 1);
		return 0;
	}
	lua_pop(L, 1);
	dec_path(d->r.p, d->total, off, &as_key, path, sizeof path);
	if (hook)
		return instate_mp_corrupt(&d->r, off, "an integer map key beyond 2^53 at %s, which"
		                          " LuaJIT holds as cdata, compared by identity", path);
	return instate_mp_corrupt(&d->r, off, "an integer%s beyond 2^53 at %s, which this Lua's"
	                          " numbers cannot hold exactly", as_key ? " map key" : "", path);
}

/* An instance of a class: the CLASS item it found at byte off. Its table
 * is decoded as any other (created, and numbered in a graph, at its
 * header), then given the metatable registered under its name with
 * lua_setmetatable(): raw, so no metamethod of the class runs (__gc marks
 * the table for finalization, as Lua's setmetatable does). A name not
 * registered in this Lua state is refused, naming it and the path, never
 * read as a plain table that a later save would write back without it. */
static COLD int dec_instance(lua_State *L, dec *d, const instate_mp_item *it, size_t off,
                             int depth)
{
	const unsigned char *name;
	uint32_t namelen;
	size_t saved_n;

	if (instate_mp_class_begin(&d->r, off, it, &name, &namelen, &saved_n))
		return INSTATE_CORRUPT;
	d->fpok = 0; /* a metatable: no fingerprint */
	if (dec_value(L, d, depth, 0)) {
		d->r.n = saved_n;
		return INSTATE_CORRUPT;
	}
	if (instate_mp_class_end(&d->r, off, saved_n))
		return INSTATE_CORRUPT;
	if (!lua_checkstack(L, 3))
		return instate_mp_corrupt(&d->r, off, "no Lua stack left for nesting");
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &class_key) == LUA_TTABLE) {
		lua_pushlstring(L, (const char *)name, namelen);
		lua_rawget(L, -2);
		if (lua_type(L, -1) == LUA_TTABLE) {
			lua_setmetatable(L, -3);
			lua_pop(L, 1);
			return 0;
		}
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return dec_unknown_class(d, off, name, namelen);
}

/* Push the next value, any form. A key may not be nil or NaN (Lua cannot
 * hold it). */
static int dec_value(lua_State *L, dec *d, int depth, int is_key)
{
	instate_mp_item it;
	size_t off = d->r.pos;
	uint64_t id;

	if (instate_mp_read(&d->r, &it))
		return INSTATE_CORRUPT;
	switch (it.type) {
	case INSTATE_MP_STR:
	case INSTATE_MP_BIN:
		dec_str(L, d, it.data, it.len, is_key);
		return 0;
	case INSTATE_MP_UINT:
		if (!lcompat_uint_exact(it.v.u)) {
			d->fpok = 0; /* a LuaJIT cdata, or refused */
			return dec_big_int(L, d, off, it.v.u, it.v.u <= (uint64_t)INT64_MAX, is_key);
		}
		/* above INT64_MAX: the integer with the same 64 bits, like string.unpack("J") */
		lua_pushinteger(L, (lua_Integer)it.v.u);
		if (d->fp)
			d->fh = fp_int((lua_Integer)it.v.u);
		return 0;
	case INSTATE_MP_INT:
		if (!lcompat_int_exact(it.v.i)) {
			d->fpok = 0;
			return dec_big_int(L, d, off, (uint64_t)it.v.i, 1, is_key);
		}
		lua_pushinteger(L, (lua_Integer)it.v.i);
		if (d->fp)
			d->fh = fp_int((lua_Integer)it.v.i);
		return 0;
	case INSTATE_MP_FLOAT:
	case INSTATE_MP_DOUBLE:
		if (is_key && it.v.d != it.v.d)
			return instate_mp_corrupt(&d->r, off, "NaN map key");
		lua_pushnumber(L, (lua_Number)it.v.d);
		if (d->fp)
			dec_fp_float(L, d, it.v.d, is_key);
		return 0;
	case INSTATE_MP_BOOL:
		lua_pushboolean(L, it.v.b);
		if (d->fp)
			d->fh = it.v.b ? TAG_TRUE : TAG_FALSE;
		return 0;
	case INSTATE_MP_NIL:
		if (is_key)
			return instate_mp_corrupt(&d->r, off, "nil map key");
		lua_pushnil(L);
		d->fh = TAG_NIL;
		return 0;
	case INSTATE_MP_ARRAY:
	case INSTATE_MP_MAP:
		return d->fp ? dec_table_fp(L, d, it.type == INSTATE_MP_MAP, it.len, off, depth)
		             : dec_table(L, d, it.type == INSTATE_MP_MAP, it.len, off, depth);
	case INSTATE_MP_EXT:
		d->fpok = 0;
		if (it.ext == INSTATE_MP_EXT_CLASS)
			return dec_instance(L, d, &it, off, depth);
		if (instate_mp_check_ext(&d->r, off, &it, d->graph, d->tables, &id))
			return INSTATE_CORRUPT;
		lua_rawgeti(L, d->refs, (lua_Integer)(id + 1));
		return 0;
	}
	return instate_mp_corrupt(&d->r, off, "unknown item");
}

/* Decode n bytes at p and push the value (return 1) or the message
 * (return 0). ud is the stack index of the codec (an upvalue), or 0 to
 * fetch it from the registry; base is the caller's stack top. */
static int decode_with(lua_State *L, int ud, int base, const char *p, size_t n, int fp,
                       uint64_t *print, int *has)
{
	codec *cd;
	dec d;

	d.r.p = (const unsigned char *)p;
	d.r.n = n;
	d.total = n;
	d.r.pos = 0;
	d.r.err_off = 0;
	d.r.graph = 0;
	d.r.graph_off = 0;
	d.r.refs = 0;
	d.r.err[0] = '\0';
	d.refs = 0;
	d.tables = 0;
	d.fh = 0;
	if (instate_mp_begin(&d.r, &d.graph))
		goto corrupt;
	/* a graph (shared tables, cycles) has no fingerprint from its bytes */
	d.fp = fp && !d.graph;
	d.fpok = 1;
	luaL_checkstack(L, 6, NULL);
	if (ud == 0) {
		push_codec(L);
		ud = lua_gettop(L);
	}
	cd = lua_touserdata(L, ud);
	d.sc = cd->scache;
	if (d.fp) {
		if (!cd->fp_ready) {
			int c;
			for (c = 0; c < 256; c++)
				cd->fp_fix[c] = fp_int(c <= 0x7f ? (lua_Integer)c : (lua_Integer)c - 256);
			for (c = 0; c <= 16; c++)
				cd->fp_count[c] = mix2(TAG_TAB, (uint64_t)c);
			cd->fp_ready = 1;
		}
		d.fix = cd->fp_fix;
		d.count = cd->fp_count;
	}
	/* On the stack: lua_rawgeti() of a pseudo-index costs more. */
	lcompat_getuservalue(L, ud, 1);
	d.cache = lua_gettop(L);
	if (d.graph) {
		lua_newtable(L);
		d.refs = lua_gettop(L);
	}
	if (dec_value(L, &d, 0, 0) || instate_mp_finish(&d.r))
		goto corrupt;
	lua_replace(L, base + 1);
	lua_settop(L, base + 1);
	if (fp) {
		*has = d.fp && d.fpok;
		*print = d.fh;
	}
	return 1;
corrupt:
	lua_settop(L, base);
	lua_pushstring(L, d.r.err);
	return 0;
}

int linstate_decode(lua_State *L, const char *p, size_t n)
{
	return decode_with(L, 0, lua_gettop(L), p, n, 0, NULL, NULL);
}

int linstate_decode_print(lua_State *L, const char *p, size_t n, uint64_t *print, int *has)
{
	*has = 0;
	return decode_with(L, 0, lua_gettop(L), p, n, 1, print, has);
}

const char *linstate_decode_what(const char *msg)
{
	/* dec_unknown_class()'s message */
	return msg && strncmp(msg, "unknown class '", 15) == 0 ? "undecodable value" : "corrupt value";
}

/* ===================================================================== */
/* Lua functions                                                         */

/* instate.encode(value [, root [, opts]]) -> string; opts.canonical,
 * opts.metatables ("error", the default, or "drop") */
static int l_encode(lua_State *L)
{
	codec *c = lua_touserdata(L, lua_upvalueindex(1));
	const char *root = luaL_optstring(L, 2, "value");
	const char *s;
	size_t len;
	unsigned flags = 0;

	luaL_checkany(L, 1);
	if (!lua_isnoneornil(L, 3)) {
		/* One walk over the options, keys compared by identity with the
		 * interned names: saving many small values passes opts each time. */
		luaL_checktype(L, 3, LUA_TTABLE);
		lua_settop(L, 3);
		lua_pushnil(L);
		while (lua_next(L, 3)) {
			if (lua_rawequal(L, -2, lua_upvalueindex(2))) {
				if (!lua_isboolean(L, -1))
					luaL_argerror(L, 3, lua_pushfstring(L,
						"option 'canonical' must be a boolean, got %s", luaL_typename(L, -1)));
				if (lua_toboolean(L, -1))
					flags |= LINSTATE_ENC_CANONICAL;
			} else if (lua_rawequal(L, -2, lua_upvalueindex(4))) {
				flags |= linstate_opt_metatables(L, -1, 3);
			} else {
				luaL_argerror(L, 3, lua_pushfstring(L, "unknown option '%s'",
					lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
					                               : luaL_typename(L, -2)));
			}
			lua_pop(L, 1);
		}
	}
	if (LCOMPAT_GC_TELLS_FINALIZERS) {
		s = encode_with(L, c, 1, root, &len, flags, NULL);
		lua_pushlstring(L, s, len);
		return 1;
	}
	/* Plain 5.1 cannot tell a finalizer's encode from this one, and its
	 * lua_pushlstring runs a collector step before it copies: the context
	 * stays busy until the copy is made, so that a finalizer run by that
	 * step encodes in another one. The copy is a protected call, so that
	 * a memory error releases the context too. */
	{
		enc_ctx *held;
		int status;
		s = encode_with(L, c, 1, root, &len, flags, &held);
		lua_pushvalue(L, lua_upvalueindex(3));
		lua_pushlightuserdata(L, (void *)s);
		lua_pushnumber(L, (lua_Number)len);
		status = lua_pcall(L, 2, 1, 0);
		ctx_release(held);
		if (status != LUA_OK)
			lua_error(L);
		return 1;
	}
}

unsigned linstate_opt_metatables(lua_State *L, int vidx, int arg)
{
	const char *v = lua_type(L, vidx) == LUA_TSTRING ? lua_tostring(L, vidx) : NULL;

	if (v && strcmp(v, "drop") == 0)
		return LINSTATE_ENC_DROP_METATABLES;
	if (v && strcmp(v, "error") == 0)
		return 0;
	luaL_argerror(L, arg, lua_pushfstring(L,
		"option 'metatables' must be \"error\" or \"drop\", got %s",
		v ? lua_pushfstring(L, "\"%s\"", v) : luaL_typename(L, vidx)));
	return 0;
}

/* l_encode's copy on plain 5.1: (bytes, length) -> string. */
static int l_copy_bytes(lua_State *L)
{
	lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tonumber(L, 2));
	return 1;
}

/* instate.decode(string) -> value | nil, msg, "CORRUPT" */
static int l_decode(lua_State *L)
{
	size_t n;
	const char *s;

	luaL_checktype(L, 1, LUA_TSTRING);
	s = lua_tolstring(L, 1, &n);
	if (decode_with(L, lua_upvalueindex(1), lua_gettop(L), s, n, 0, NULL, NULL))
		return 1;
	lua_pushnil(L);
	lua_insert(L, -2);
	lua_pushstring(L, linstate_code(INSTATE_CORRUPT));
	return 3;
}

/* instate._decode_print(string) -> value, fingerprint | nil, msg, "CORRUPT":
 * instate.decode, and what instate._fingerprint gives the value, taken in
 * the same pass over the bytes (nil in its place when the bytes do not
 * tell it exactly: see dec_table_t). defstate's read of one record. */
static int l_decode_print(lua_State *L)
{
	size_t n;
	const char *s;
	uint64_t h = 0;
	int has = 0;

	luaL_checktype(L, 1, LUA_TSTRING);
	s = lua_tolstring(L, 1, &n);
	if (decode_with(L, lua_upvalueindex(1), lua_gettop(L), s, n, 1, &h, &has)) {
		if (has)
			push_print(L, h, 0);
		else
			lua_pushnil(L);
		return 2;
	}
	lua_pushnil(L);
	lua_insert(L, -2);
	lua_pushstring(L, linstate_code(INSTATE_CORRUPT));
	return 3;
}

/* core._set_int64_hooks(make, classify): LuaJIT's converters between
 * MessagePack integers beyond 2^53 and int64_t/uint64_t cdata (see
 * int64_make_key). Called by lua/instate/compat.lua on LuaJIT only. */
static int l_set_int64_hooks(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &int64_make_key);
	lua_pushvalue(L, 2);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &int64_classify_key);
	return 0;
}

/* ---- the class registry -------------------------------------------- */

/* Push the registry of this state's classes, created if create, else nil
 * when there is none yet. */
static int push_classes(lua_State *L, int create)
{
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &class_key) == LUA_TTABLE || !create)
		return lua_type(L, -1) == LUA_TTABLE;
	lua_pop(L, 1);
	lua_newtable(L);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &class_key);
	return 1;
}

/* The class name argument 1 of fname: a string of 1..INSTATE_MP_CLASS_NAME_MAX
 * bytes of UTF-8 (a MessagePack str that strict readers accept). */
static const char *check_class_name(lua_State *L, const char *fname, size_t *n)
{
	const char *name;

	if (lua_type(L, 1) != LUA_TSTRING)
		luaL_argerror(L, 1, lua_pushfstring(L, "class name must be a string, got %s",
			luaL_typename(L, 1)));
	name = lua_tolstring(L, 1, n);
	if (*n < 1 || *n > INSTATE_MP_CLASS_NAME_MAX)
		luaL_argerror(L, 1, lua_pushfstring(L, "class name must be 1..%d bytes, got %d",
			INSTATE_MP_CLASS_NAME_MAX, (int)*n));
	if (!instate_mp_utf8_valid(name, *n))
		luaL_argerror(L, 1, "class name must be UTF-8");
	(void)fname;
	return name;
}

/* instate.register_class(name, mt) -> mt */
static int l_register_class(lua_State *L)
{
	size_t n;
	const char *name = check_class_name(L, "register_class", &n);

	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	push_classes(L, 1);                 /* 3 */
	lua_pushvalue(L, 1);
	lua_rawget(L, 3);                   /* 4: the name's metatable */
	lua_pushvalue(L, 2);
	lua_rawget(L, 3);                   /* 5: the metatable's name */
	if (lua_rawequal(L, 4, 2))
		goto done;                      /* again: nothing changes */
	if (!lua_isnil(L, 4))
		return luaL_error(L, "instate.register_class: class '%s' is already registered with"
			" another metatable (instate.unregister_class('%s') first)", name, name);
	if (!lua_isnil(L, 5))
		return luaL_error(L, "instate.register_class: this metatable is already registered"
			" as class '%s', so it cannot also be '%s'", lua_tostring(L, 5), name);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_rawset(L, 3);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 1);
	lua_rawset(L, 3);
done:
	lua_settop(L, 2);
	return 1;
}

/* instate.unregister_class(name) -> true if it was registered, else false */
static int l_unregister_class(lua_State *L)
{
	size_t n;

	check_class_name(L, "unregister_class", &n);
	lua_settop(L, 1);
	if (!push_classes(L, 0)) {          /* 2 */
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_pushvalue(L, 1);
	if (lua_rawget(L, 2) != LUA_TTABLE) {  /* 3 */
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_pushnil(L);
	lua_rawset(L, 2);                   /* [mt] = nil */
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	lua_rawset(L, 2);                   /* [name] = nil */
	lua_pushboolean(L, 1);
	return 1;
}

/* instate.class_name(v) -> the registered class name of v's metatable
 * (read raw: __metatable does not hide it), or nil */
static int l_class_name(lua_State *L)
{
	luaL_checkany(L, 1);
	if (lua_type(L, 1) != LUA_TTABLE || !lua_getmetatable(L, 1) || !push_classes(L, 0))
		return 0;
	lua_pushvalue(L, -2);
	lua_rawget(L, -2);
	return lua_type(L, -1) == LUA_TSTRING ? 1 : 0;
}

/* instate.class_metatable(name) -> the metatable registered as name, or nil */
static int l_class_metatable(lua_State *L)
{
	luaL_checkany(L, 1);
	if (lua_type(L, 1) != LUA_TSTRING || !push_classes(L, 0))
		return 0;
	lua_pushvalue(L, 1);
	return lua_rawget(L, -2) == LUA_TTABLE ? 1 : 0;
}

void linstate_open_codec(lua_State *L)
{
	static const luaL_Reg classes[] = {
		{ "register_class", l_register_class },
		{ "unregister_class", l_unregister_class },
		{ "class_name", l_class_name },
		{ "class_metatable", l_class_metatable },
		{ NULL, NULL }
	};

	luaL_setfuncs(L, classes, 0);
	lua_pushinteger(L, INSTATE_MP_CLASS_NAME_MAX);
	lua_setfield(L, -2, "class_name_max");
	lua_pushcfunction(L, l_set_int64_hooks);
	lua_setfield(L, -2, "_set_int64_hooks");
	get_codec(L);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &codec_key);
	lua_pushliteral(L, "canonical");
	lua_pushcfunction(L, l_copy_bytes);
	lua_pushliteral(L, "metatables");
	lua_pushcclosure(L, l_encode, 4);
	lua_setfield(L, -2, "encode");
	lua_rawgetp(L, LUA_REGISTRYINDEX, &codec_key);
	lua_pushcclosure(L, l_decode, 1);
	lua_setfield(L, -2, "decode");
	lua_rawgetp(L, LUA_REGISTRYINDEX, &codec_key);
	lua_pushcclosure(L, l_decode_print, 1);
	lua_setfield(L, -2, "_decode_print");
	lua_pushinteger(L, INSTATE_MP_MAX_DEPTH);
	lua_setfield(L, -2, "max_depth");
}
