/*
 * test_lua_codec_api.c - the public codec of instate.h against the Lua
 * codec, in one process, on whichever Lua this build is for (every one of
 * 5.1, 5.2, 5.3, 5.4 and LuaJIT: make test-luas):
 *
 * - C writes, Lua reads: each value written with instate_mp_writer decodes
 *   in Lua (instate.core.decode) to exactly the value meant (integer or
 *   float subtype, -0.0, NaN, infinities, binary strings, shared tables and
 *   cycles), and where Lua's own encoding is deterministic, Lua writes it
 *   back to the same bytes;
 * - Lua writes, C reads: every value Lua encodes is parsed item by item and
 *   written again with the C writer, giving Lua's bytes exactly;
 * - hostile bytes: the parser's message and offset are Lua's decode
 *   message, for each damage and for each truncation of a value.
 *
 * Prints "N passed, N failed"; exits 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "instate.h"
#include "linstate.h"

#include <lualib.h>


#include "lcheck.h"

static const char *setup_code =
	"local core = ...\n"
	"local load = loadstring or load\n"
	"local mt = math.type\n"
	"INTS = mt ~= nil\n"
	/* equal values of the same subtype; -0.0 is not 0.0; NaN is NaN */
	"local function same(a, b)\n"
	"  if type(a) ~= type(b) then return false end\n"
	"  if type(a) == 'number' then\n"
	"    if a ~= a then return b ~= b end\n"
	"    if mt and mt(a) ~= mt(b) then return false end\n"
	"    if a == 0 and b == 0 then return 1 / a == 1 / b end\n"
	"    return a == b\n"
	"  end\n"
	"  if type(a) ~= 'table' then return a == b end\n"
	"  for k, x in pairs(a) do if not same(x, b[k]) then return false end end\n"
	"  for k in pairs(b) do if a[k] == nil then return false end end\n"
	"  return true\n"
	"end\n"
	"function c2lua(bytes, src, reenc)\n"
	"  local v, msg, code = core.decode(bytes)\n"
	"  local f = assert(load('local v, same, msg, code = ...\\n' .. src))\n"
	"  if not f(v, same, msg, code) then\n"
	"    return false, 'decoded to ' .. tostring(v) .. ' (' .. tostring(msg) .. ')'\n"
	"  end\n"
	"  if reenc == 1 or (reenc == 2 and INTS) then\n"
	"    local again = core.encode(v)\n"
	"    if again ~= bytes then return false, 'encoded back to other bytes' end\n"
	"  end\n"
	"  return true\n"
	"end\n"
	"function lua_encode(src)\n"
	"  return core.encode(assert(load('return ' .. src))())\n"
	"end\n"
	"function lua_decode_msg(bytes)\n"
	"  local v, msg, code = core.decode(bytes)\n"
	"  return msg, code\n"
	"end\n";

static lua_State *L;

static void lua_init(void)
{
	L = luaL_newstate();
	lcheck_open(L, setup_code);
}

static int lua_ints(void)
{
	int r;
	lua_getglobal(L, "INTS");
	r = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return r;
}

/* ===================================================================== */
/* C writes, Lua reads                                                    */

enum {
	C_NIL, C_TRUE, C_FALSE, C_INT5, C_INTM33, C_2P53, C_IMAX, C_IMIN, C_UMAX, C_ONE, C_NEGZERO,
	C_NAN, C_INF, C_TENTH, C_BIG, C_STR, C_BIN, C_STRING_BIN, C_ARRAY, C_MAP, C_EMPTY_ARRAY,
	C_FLOAT_KEY, C_CYCLE, C_SHARED, C_KEY_REF, C_DEEP, C_EXT, C_LONG_STR, C_BIG_MAP, C_COUNT
};

static const struct {
	const char *check; /* body of function(v, same, msg, code) */
	int reenc;         /* 1: Lua encodes v back to the same bytes; 2: on 5.3+ only */
} cases[C_COUNT] = {
	[C_NIL] = {"return v == nil and msg == nil", 1},
	[C_TRUE] = {"return v == true", 1},
	[C_FALSE] = {"return v == false", 1},
	[C_INT5] = {"return same(v, 5)", 1},
	[C_INTM33] = {"return same(v, -33)", 1},
	[C_2P53] = {"return same(v, 9007199254740992)", 1},
	[C_IMAX] = {"if not INTS then return code == 'CORRUPT' and msg:find('beyond 2^53', 1, true) end "
	            "return v == math.maxinteger and math.type(v) == 'integer'", 2},
	[C_IMIN] = {"if not INTS then return code == 'CORRUPT' end "
	            "return v == math.mininteger and math.type(v) == 'integer'", 2},
	[C_UMAX] = {"if not INTS then return code == 'CORRUPT' end "
	            "return v == -1 and math.type(v) == 'integer'", 0},
	[C_ONE] = {"return same(v, 1.0)", 2},
	[C_NEGZERO] = {"return v == 0 and 1 / v < 0 and (not math.type or math.type(v) == 'float')", 1},
	[C_NAN] = {"return v ~= v", 0},
	[C_INF] = {"return v == math.huge", 1},
	[C_TENTH] = {"return v == 0.1", 1},
	[C_BIG] = {"return v == 1e300", 1},
	[C_STR] = {"return v == 'h\\195\\169llo'", 1},
	[C_BIN] = {"return v == '\\255\\0'", 1},
	[C_STRING_BIN] = {"return v == '\\192\\128'", 1},
	[C_ARRAY] = {"return same(v, {1, 'two', {3.5}, false})", 1},
	[C_MAP] = {"return same(v, {a = 1, b = {c = true}})", 0},
	[C_EMPTY_ARRAY] = {"return type(v) == 'table' and next(v) == nil", 0},
	[C_FLOAT_KEY] = {"local k = next(v) return v[2] == 'x' and k == 2 and "
	                 "(not math.type or math.type(k) == 'integer')", 0},
	[C_CYCLE] = {"return type(v) == 'table' and v[1] == v and #v == 1", 1},
	[C_SHARED] = {"return v[1] == v[2] and v[3][1] == v[1] and type(v[1]) == 'table' "
	              "and next(v[1]) == nil and v[3] ~= v[1]", 1},
	[C_KEY_REF] = {"return v[v] == true and next(v, next(v)) == nil", 1},
	[C_DEEP] = {"local d = 0 while type(v) == 'table' do v = v[1] d = d + 1 end "
	            "return d == 200", 0},
	[C_EXT] = {"return v == nil and code == 'CORRUPT' and "
	           "msg == 'corrupt MessagePack at byte 1: unsupported extension type 5'", 0},
	[C_LONG_STR] = {"return v == string.rep('z', 70000)", 1},
	[C_BIG_MAP] = {"local n = 0 for k, x in pairs(v) do n = n + 1 end "
	               "for i = 1, 1000 do if v['k' .. i] ~= i then return false end end "
	               "return n == 1000", 0},
};

static void write_case(instate_mp_writer *w, int c)
{
	static char z[70000];
	uint64_t nan_bits = 0x7ff8000000000000ull;
	double d;
	int i;

	switch (c) {
	case C_NIL: instate_mp_write_nil(w); break;
	case C_TRUE: instate_mp_write_bool(w, 1); break;
	case C_FALSE: instate_mp_write_bool(w, 0); break;
	case C_INT5: instate_mp_write_int(w, 5); break;
	case C_INTM33: instate_mp_write_int(w, -33); break;
	case C_2P53: instate_mp_write_uint(w, (uint64_t)1 << 53); break;
	case C_IMAX: instate_mp_write_int(w, INT64_MAX); break;
	case C_IMIN: instate_mp_write_int(w, INT64_MIN); break;
	case C_UMAX: instate_mp_write_uint(w, UINT64_MAX); break;
	case C_ONE: instate_mp_write_double(w, 1.0); break;
	case C_NEGZERO: instate_mp_write_double(w, -0.0); break;
	case C_NAN: memcpy(&d, &nan_bits, 8); instate_mp_write_double(w, d); break;
	case C_INF: instate_mp_write_double(w, HUGE_VAL); break;
	case C_TENTH: instate_mp_write_double(w, 0.1); break;
	case C_BIG: instate_mp_write_double(w, 1e300); break;
	case C_STR: instate_mp_write_str(w, "h\xc3\xa9llo", 6); break;
	case C_BIN: instate_mp_write_bin(w, "\xff\x00", 2); break;
	case C_STRING_BIN: instate_mp_write_string(w, "\xc0\x80", 2); break;
	case C_ARRAY:
		instate_mp_write_array(w, 4);
		instate_mp_write_int(w, 1);
		instate_mp_write_str(w, "two", 3);
		instate_mp_write_array(w, 1);
		instate_mp_write_double(w, 3.5);
		instate_mp_write_bool(w, 0);
		break;
	case C_MAP:
		instate_mp_write_map(w, 2);
		instate_mp_write_str(w, "a", 1);
		instate_mp_write_int(w, 1);
		instate_mp_write_str(w, "b", 1);
		instate_mp_write_map(w, 1);
		instate_mp_write_str(w, "c", 1);
		instate_mp_write_bool(w, 1);
		break;
	case C_EMPTY_ARRAY: instate_mp_write_array(w, 0); break;
	case C_FLOAT_KEY:
		/* Lua normalises an integral float key: 2.0 is the key 2 */
		instate_mp_write_map(w, 1);
		instate_mp_write_double(w, 2.0);
		instate_mp_write_str(w, "x", 1);
		break;
	case C_CYCLE:
		instate_mp_write_array(w, 1);
		instate_mp_write_ref(w, 0);
		break;
	case C_SHARED:
		instate_mp_write_array(w, 3);
		instate_mp_write_map(w, 0);   /* table 1 */
		instate_mp_write_ref(w, 1);
		instate_mp_write_array(w, 1); /* table 2 */
		instate_mp_write_ref(w, 1);
		break;
	case C_KEY_REF:
		instate_mp_write_map(w, 1);
		instate_mp_write_ref(w, 0);
		instate_mp_write_bool(w, 1);
		break;
	case C_DEEP:
		for (i = 0; i < 199; i++)
			instate_mp_write_array(w, 1);
		instate_mp_write_array(w, 0);
		break;
	case C_EXT:
		instate_mp_write_array(w, 1);
		instate_mp_write_ext(w, 5, "x", 1);
		break;
	case C_LONG_STR:
		memset(z, 'z', sizeof z);
		instate_mp_write_str(w, z, sizeof z);
		break;
	case C_BIG_MAP:
		instate_mp_write_map(w, 1000);
		for (i = 1; i <= 1000; i++) {
			char k[16];
			snprintf(k, sizeof k, "k%d", i);
			instate_mp_write_str(w, k, strlen(k));
			instate_mp_write_int(w, i);
		}
		break;
	}
}

static void test_c_to_lua(void)
{
	instate_buf b = {0};
	instate_mp_writer w;
	int c;

	for (c = 0; c < C_COUNT; c++) {
		b.len = 0;
		instate_mp_writer_init(&w, &b);
		write_case(&w, c);
		if (!CHECK(instate_mp_writer_finish(&w) == 0)) {
			fprintf(stderr, "  case %d: %s\n", c, instate_mp_writer_error(&w));
			continue;
		}
		lua_getglobal(L, "c2lua");
		lua_pushlstring(L, b.data, b.len);
		lua_pushstring(L, cases[c].check);
		lua_pushinteger(L, cases[c].reenc);
		if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
			CHECK(!"c2lua raised");
			fprintf(stderr, "  case %d: %s\n", c, lua_tostring(L, -1));
			lua_pop(L, 1);
			continue;
		}
		if (!CHECK(lua_toboolean(L, -2)))
			fprintf(stderr, "  case %d (%s): %s\n", c, cases[c].check, lua_tostring(L, -1));
		lua_pop(L, 2);
	}
	instate_buf_free(&b);
}

/* ===================================================================== */
/* Lua writes, C reads                                                    */

/* Parse a value and write every item again with the C writer. */
static int copy_value(const void *p, size_t n, instate_buf *out, instate_mp_parser *ps)
{
	instate_mp_writer w;
	instate_mp_item it;
	int rc;

	out->len = 0;
	instate_mp_writer_init(&w, out);
	instate_mp_parser_init(ps, p, n);
	while ((rc = instate_mp_parser_next(ps, &it)) == 0) {
		switch (it.type) {
		case INSTATE_MP_NIL: instate_mp_write_nil(&w); break;
		case INSTATE_MP_BOOL: instate_mp_write_bool(&w, it.v.b); break;
		case INSTATE_MP_UINT: instate_mp_write_uint(&w, it.v.u); break;
		case INSTATE_MP_INT: instate_mp_write_int(&w, it.v.i); break;
		case INSTATE_MP_FLOAT:
		case INSTATE_MP_DOUBLE: instate_mp_write_double(&w, it.v.d); break;
		case INSTATE_MP_STR: instate_mp_write_str(&w, (const char *)it.data, it.len); break;
		case INSTATE_MP_BIN: instate_mp_write_bin(&w, it.data, it.len); break;
		case INSTATE_MP_ARRAY: instate_mp_write_array(&w, it.len); break;
		case INSTATE_MP_MAP: instate_mp_write_map(&w, it.len); break;
		case INSTATE_MP_EXT:
			if (it.ext == INSTATE_MP_EXT_REF)
				instate_mp_write_ref(&w, it.v.u);
			else
				instate_mp_write_ext(&w, (int8_t)it.ext, it.data, it.len);
			break;
		}
	}
	if (rc != INSTATE_NOTFOUND)
		return rc;
	return instate_mp_writer_finish(&w);
}

static const char *lua_values[] = {
	"nil", "true", "false", "0", "-1", "127", "128", "-32", "-33", "255", "256", "65535",
	"65536", "-129", "-32769", "2^31", "-2^31", "2^53", "-2^53", "2^60", "1.5", "-0.0", "0/0",
	"1/0", "-1/0", "0.1", "1e300", "-1e-300", "'hello'", "''", "'\\255\\254'", "'a\\0b'",
	"string.rep('x', 31)", "string.rep('x', 32)", "string.rep('x', 256)",
	"string.rep('x', 70000)", "string.rep('\\200', 70000)",
	"{}", "{1, 2, 3}", "{a = 1}", "{a = {b = {c = {}}}}", "{[1.5] = true, [true] = false}",
	"{[-7] = 'neg', [2^40] = 'big'}",
	"(function() local t = {} t[1] = t return t end)()",
	"(function() local s = {} return {s, s, {s}} end)()",
	"(function() local k = {} return {[k] = k, z = {k}} end)()",
	"(function() local t = {} for i = 1, 70000 do t[i] = i end return t end)()",
	"(function() local t = {} for i = 1, 300 do t['k' .. i] = {i, -i, i / 2} end return t end)()",
	"(function() local t = {} for i = 1, 20 do t[i] = {} end for i = 1, 20 do "
	"t[i].next = t[i % 20 + 1] end return t end)()",
	"(function() local v = {} for _ = 1, 199 do v = {v} end return v end)()",
};

static const char *lua_values_ints[] = {
	"math.maxinteger", "math.mininteger", "1.0", "-2.0", "{1.0, 2, 3.0}", "0x7fffffffffffffff - 1",
};

static void lua_to_c_one(const char *src)
{
	instate_buf out = {0};
	instate_mp_parser p;
	const char *bytes;
	size_t n;
	int rc;

	lua_getglobal(L, "lua_encode");
	lua_pushstring(L, src);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
		CHECK(!"lua_encode raised");
		fprintf(stderr, "  %s: %s\n", src, lua_tostring(L, -1));
		lua_pop(L, 1);
		return;
	}
	bytes = lua_tolstring(L, -1, &n);
	rc = copy_value(bytes, n, &out, &p);
	if (!CHECK(rc == 0))
		fprintf(stderr, "  %s: %s %s\n", src, instate_strerror(rc),
		        instate_mp_parser_error(&p, NULL));
	else if (!CHECK(out.len == n && memcmp(out.data, bytes, n) == 0))
		fprintf(stderr, "  %s: the C copy differs (%lu bytes, Lua's %lu)\n", src,
		        (unsigned long)out.len, (unsigned long)n);
	lua_pop(L, 1);
	instate_buf_free(&out);
}

static void test_lua_to_c(void)
{
	size_t i;

	for (i = 0; i < sizeof lua_values / sizeof *lua_values; i++)
		lua_to_c_one(lua_values[i]);
	if (lua_ints())
		for (i = 0; i < sizeof lua_values_ints / sizeof *lua_values_ints; i++)
			lua_to_c_one(lua_values_ints[i]);
}

/* Items of a few Lua values, one by one. */
static void test_lua_items(void)
{
	instate_mp_parser p;
	instate_mp_item it;
	const char *bytes;
	size_t n;
	uint64_t bits;

	lua_getglobal(L, "lua_encode");
	lua_pushstring(L, "{-0.0, math.floor(2^53), 'x\\255'}");
	lua_call(L, 1, 1);
	bytes = lua_tolstring(L, -1, &n);
	instate_mp_parser_init(&p, bytes, n);
	CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_ARRAY && it.len == 3);
	CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_FLOAT);
	memcpy(&bits, &it.v.d, 8);
	CHECK(bits == 0x8000000000000000ull);
	CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_UINT &&
	      it.v.u == (uint64_t)1 << 53);
	CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_BIN && it.len == 2);
	CHECK(instate_mp_parser_next(&p, &it) == INSTATE_NOTFOUND);
	lua_pop(L, 1);

	if (lua_ints()) {
		lua_getglobal(L, "lua_encode");
		lua_pushstring(L, "{math.maxinteger, math.mininteger, 3.0}");
		lua_call(L, 1, 1);
		bytes = lua_tolstring(L, -1, &n);
		instate_mp_parser_init(&p, bytes, n);
		CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_ARRAY);
		CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_UINT &&
		      it.v.u == (uint64_t)INT64_MAX);
		CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_INT &&
		      it.v.i == INT64_MIN);
		CHECK(instate_mp_parser_next(&p, &it) == 0 && it.type == INSTATE_MP_FLOAT &&
		      it.v.d == 3.0);
		CHECK(instate_mp_parser_next(&p, &it) == INSTATE_NOTFOUND);
		lua_pop(L, 1);
	}
}

/* ===================================================================== */
/* Hostile bytes: the same verdict and message as Lua's decode            */

static int same_verdict(const char *d, size_t n)
{
	instate_mp_parser p;
	instate_mp_item it;
	const char *lmsg, *cmsg;
	int rc, ok;

	instate_mp_parser_init(&p, d, n);
	while ((rc = instate_mp_parser_next(&p, &it)) == 0)
		;
	cmsg = rc == INSTATE_CORRUPT ? instate_mp_parser_error(&p, NULL) : NULL;
	lua_getglobal(L, "lua_decode_msg");
	lua_pushlstring(L, d, n);
	lua_call(L, 1, 2);
	lmsg = lua_tostring(L, -2);
	ok = (!cmsg && !lmsg && rc == INSTATE_NOTFOUND) ||
	     (cmsg && lmsg && strcmp(cmsg, lmsg) == 0 && lua_tostring(L, -1) &&
	      strcmp(lua_tostring(L, -1), "CORRUPT") == 0);
	if (!ok)
		fprintf(stderr, "  %lu bytes: C '%s', Lua '%s'\n", (unsigned long)n,
		        cmsg ? cmsg : "(ok)", lmsg ? lmsg : "(ok)");
	lua_pop(L, 2);
	return ok;
}

static void test_hostile(void)
{
	static const struct { const char *b; size_t n; } bad[] = {
		{"\xdd\xff\xff\xff\xff\x01", 6}, {"\xdf\xff\xff\xff\xff\x01\x01", 7},
		{"\xdb\xff\xff\xff\xff" "a", 6}, {"\xc1", 1}, {"\x81\xc0\x01", 3},
		{"\x81\xcb\x7f\xf8\0\0\0\0\0\0\x01", 11}, {"\x91\xd4\x02\x00", 4},
		{"\xd6\x01\x91\xd4\x02\x01", 6}, {"\xd6\x01\x93\x01\x02\x03", 6},
		{"\x92\xd6\x01\x91\xd4\x02\x00", 7}, {"\x01\x02", 2}, {"", 0},
	};
	const char *bytes;
	char *cut;
	size_t i, n;
	int all;

	for (i = 0; i < sizeof bad / sizeof *bad; i++)
		CHECK(same_verdict(bad[i].b, bad[i].n));

	/* every truncation of a value Lua wrote */
	lua_getglobal(L, "lua_encode");
	lua_pushstring(L, "(function() local s = {x = 1.5, y = 'text', [true] = {-1, 300, "
	                  "70000, '\\255'}} return {s, {s, n = 0.1}, list = {1, 2, {}}} end)()");
	lua_call(L, 1, 1);
	bytes = lua_tolstring(L, -1, &n);
	all = 1;
	for (i = 0; i <= n; i++) {
		cut = malloc(i ? i : 1);
		memcpy(cut, bytes, i);
		if (!same_verdict(cut, i))
			all = 0;
		free(cut);
	}
	CHECK(all);
	lua_pop(L, 1);
}

int main(void)
{
	lua_init();
	test_c_to_lua();
	test_lua_to_c();
	test_lua_items();
	test_hostile();
	lua_close(L);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
