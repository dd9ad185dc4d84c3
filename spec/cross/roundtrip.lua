--- One side of the cross-Lua round trip (spec/cross/run.lua drives it):
-- the same value set, written by each of Lua 5.1, 5.2, 5.3, 5.4 and
-- LuaJIT (store records and a dump file), read back by every other, value
-- by value, each reader expecting what docs/FORMAT.md section 1 says it
-- holds (README, Lua versions):
--
--   lua roundtrip.lua write DIR          this Lua writes DIR/store, DIR/dump
--   lua roundtrip.lua read DIR WRITER    checks what WRITER (5.1 5.2 5.3 5.4
--                                        luajit) wrote in DIR, from the
--                                        store and from the dump loaded
--                                        into a fresh store under DIR
--
-- A read prints one line per failed check and ends with
-- "<reader> <- <writer>: N passed, M failed"; exits 1 on any failure.
-- Parses and runs on all five Luas.
local instate = require "instate"
local compat = require "instate.compat"

local ME = jit and "luajit" or _VERSION:match("%d%.%d")
local INTS = math.type ~= nil          -- 5.3, 5.4: 64-bit integers
local function has_ints(lua) return lua == "5.3" or lua == "5.4" end
local NEG_ZERO = -1 / math.huge        -- made at run time (5.1 folds a -0.0 literal)
local TWO53 = 2 ^ 53
local ffi = jit and require "ffi"

-- ---------------------------------------------------------------------------
-- The value set, described independently of any Lua: each Lua builds from a
-- description what it writes, and, as a reader, what it must find.
-- ---------------------------------------------------------------------------

--- An integer given in decimal. src: a Lua 5.3 expression of it (default
-- dec); u: a uint64 above 2^63-1 (only LuaJIT can write one: uint64_t);
-- bits: what 5.3/5.4 read for a u (the integer with the same 64 bits).
local function I(dec, src, u, bits)
  return { k = "int", dec = dec, src = src or dec, u = u, bits = bits }
end
local function F(x) return { k = "float", x = x } end
local function S(s) return { k = "str", s = s } end
local function B(b) return { k = "bool", b = b } end
--- A table from {key, value} description pairs; label: for R(label).
local function T(pairs_, label) return { k = "tbl", pairs = pairs_, label = label } end
local function A(items, label)
  local p = {}
  for i, v in ipairs(items) do p[i] = { I(tostring(i)), v } end
  return T(p, label)
end
--- The table labelled `label`, met again (shared, or a cycle).
local function R(label) return { k = "ref", label = label } end

local STEAM = "76561197960287930"
local CASES = {
  { "true", B(true) },
  { "false", B(false) },
  { "str", S("hello, world") },
  { "str_empty", S("") },
  { "binary", S("\0\1\127\128\254\255 bin\0") },
  { "utf8", S("h\195\169llo \226\130\172 \240\159\142\174") },
  { "f_half", F(1.5) },
  { "f_neg", F(-0.25) },
  { "f_pi", F(math.pi) },
  { "f_huge", F(1e300) },
  { "f_tiny", F(5e-324) },
  { "f_inf", F(1 / 0) },
  { "f_ninf", F(-1 / 0) },
  { "f_negzero", F(NEG_ZERO) },
  { "f_nan", F(0 / 0) },
  { "f_one", F(1.0) },
  { "f_2p53", F(TWO53) },
  { "f_2p60", F(2 ^ 60) },
  { "i_0", I("0") },
  { "i_m1", I("-1") },
  { "i_127", I("127") },
  { "i_128", I("128") },
  { "i_m33", I("-33") },
  { "i_2p32", I("4294967296") },
  { "i_2p53m1", I("9007199254740991") },
  { "i_2p53", I("9007199254740992") },
  { "i_m2p53", I("-9007199254740992") },
  { "i_2p53p1", I("9007199254740993") },
  { "i_m2p53m1", I("-9007199254740993") },
  { "steam", I(STEAM) },
  { "i64_max", I("9223372036854775807") },
  { "i64_min", I("-9223372036854775808", "-9223372036854775807 - 1") },
  { "u64_max", I("18446744073709551615", nil, true, "-1") },
  { "profile", T({ { S("id"), I(STEAM) }, { S("name"), S("gabe") } }) },
  { "ids", A({ I(STEAM), I("76561197960287931") }) },
  { "u64_nested", T({ { S("max"), I("18446744073709551615", nil, true, "-1") } }) },
  { "empty", T({}) },
  { "array", A({ I("1"), S("two"), F(3.5), B(false), A({ I("5"), I("6") }), S("") }) },
  { "nested", T({
    { S("player"), T({
      { S("name"), S("ann") },
      { S("hp"), I("100") },
      { S("pos"), A({ F(1.5), F(-2.25) }) },
      { S("alive"), B(true) },
      { S("scale"), F(1.0) },
    }) },
    { S("level"), I("3") },
    { F(1.5), S("float key") },
    { B(true), S("bool key") },
    { I("-7"), S("int key") },
    { I("9007199254740992"), S("2^53 key") },
  }) },
  { "shared", T({ { S("a"), T({ { S("x"), I("1") } }, "s") }, { S("b"), R("s") },
    { S("c"), A({ R("s"), R("s") }) } }) },
  { "cyclic", T({ { S("name"), S("loop") }, { S("self"), R("c") },
    { S("kids"), A({ R("c"), T({ { S("up"), R("c") } }) }) } }, "c") },
}

--- Whether the integer in decimal dec lies beyond +-2^53 (compared as a
-- float, which rounds it: the two edges are told by their digits; as an
-- integer math.abs would wrap at -2^63).
local function is_big(dec)
  return not (math.abs(tonumber(dec) + 0.0) < TWO53 or dec == "9007199254740992"
    or dec == "-9007199254740992")
end

--- Whether `writer` can hold the value at all: 5.1 and 5.2 have no integer
-- beyond 2^53, and only LuaJIT a uint64 above 2^63-1.
local function writable(d, writer)
  if d.k == "int" then
    if is_big(d.dec) and not (has_ints(writer) or writer == "luajit") then return false end
    if d.u and writer ~= "luajit" then return false end
  elseif d.k == "tbl" then
    for _, p in ipairs(d.pairs) do
      if not writable(p[1], writer) or not writable(p[2], writer) then return false end
    end
  end
  return true
end

-- A path segment as the codec writes it (docs/FORMAT.md, Unstorable values).
local function segment(kd)
  if kd.k == "str" then
    if kd.s:match("^[%a_][%w_]*$") then return "." .. kd.s end
    return ("[%q]"):format(kd.s)
  elseif kd.k == "int" then return "[" .. kd.dec .. "]"
  elseif kd.k == "bool" then return "[" .. tostring(kd.b) .. "]"
  end
  return "[" .. tostring(kd.x) .. "]"
end

--- This Lua's value for description d as written by `writer`: what it
-- writes (writer == ME) or must find when reading. On 5.1 and 5.2 an integer
-- beyond 2^53 cannot be found: st.refused gets the path of the first one.
local function build(d, writer, labels, st, path)
  if d.k == "int" then
    if not is_big(d.dec) then
      local n = tonumber(d.dec)
      return INTS and math.tointeger(n) or n
    end
    if INTS then return compat.load("return " .. (d.bits or d.src))() end
    if ME == "luajit" then
      return compat.load("return " .. d.src:gsub("%d+", d.u and "%0ULL" or "%0LL"))()
    end
    st.refused = st.refused or path
    return false
  elseif d.k == "float" then
    local x = d.x
    -- written as an integer by a Lua whose numbers are doubles
    if not has_ints(writer) and x == math.floor(x) and math.abs(x) <= TWO53
       and (x ~= 0 or 1 / x > 0) then
      return INTS and math.tointeger(x) or x
    end
    return x
  elseif d.k == "str" then return d.s
  elseif d.k == "bool" then return d.b
  elseif d.k == "ref" then return assert(labels[d.label], d.label)
  end
  local t = {}
  if d.label then labels[d.label] = t end
  for _, p in ipairs(d.pairs) do
    local k = build(p[1], writer, labels, st, path)
    t[k] = build(p[2], writer, labels, st, path .. segment(p[1]))
  end
  return t
end

-- ---------------------------------------------------------------------------
-- Comparing: types, integer/float subtypes, -0.0, NaN, cdata types, and the
-- shape of shared and cyclic tables (a one-to-one map of tables).
-- ---------------------------------------------------------------------------

local function show(v)
  if type(v) == "number" then
    local s = ("%.17g"):format(v)
    if INTS then s = s .. " (" .. math.type(v) .. ")" end
    return s
  elseif type(v) == "string" then
    return ("%q"):format(v)
  end
  return type(v) .. " " .. tostring(v)
end

local function same(a, b, seen_ab, seen_ba, where)
  if type(a) ~= type(b) then
    return false, where .. ": expected " .. show(a) .. ", got " .. show(b)
  end
  if type(a) == "number" then
    local ok = (a ~= a and b ~= b) or (a == b and (a ~= 0 or (1 / a > 0) == (1 / b > 0)))
    if ok and INTS then ok = math.type(a) == math.type(b) end
    if not ok then return false, where .. ": expected " .. show(a) .. ", got " .. show(b) end
    return true
  elseif type(a) == "cdata" then
    if not (ffi.istype(ffi.typeof(a), b) and a == b) then
      return false, where .. ": expected " .. tostring(a) .. ", got " .. tostring(b)
    end
    return true
  elseif type(a) ~= "table" then
    if a ~= b then return false, where .. ": expected " .. show(a) .. ", got " .. show(b) end
    return true
  end
  if seen_ab[a] ~= nil or seen_ba[b] ~= nil then
    if seen_ab[a] ~= b or seen_ba[b] ~= a then
      return false, where .. ": the shape of shared tables differs"
    end
    return true
  end
  seen_ab[a], seen_ba[b] = b, a
  local na, nb = 0, 0
  for k, v in pairs(a) do
    na = na + 1
    local ok, why = same(v, rawget(b, k), seen_ab, seen_ba, where .. "[" .. tostring(k) .. "]")
    if not ok then return false, why end
  end
  for _ in pairs(b) do nb = nb + 1 end
  if na ~= nb then return false, where .. ": " .. nb .. " keys, expected " .. na end
  return true
end

-- ---------------------------------------------------------------------------
-- The two sides
-- ---------------------------------------------------------------------------

local function write(dir)
  local store = assert(instate.open(dir .. "/store"))
  local ns = store:namespace("values")
  local n = 0
  for _, c in ipairs(CASES) do
    if writable(c[2], ME) then
      local v = build(c[2], ME, {}, {}, "value")
      assert(ns:set(c[1], v))
      n = n + 1
    end
  end
  assert(store:namespace("meta"):set("writer", ME))
  assert(store:dump(dir .. "/dump"))
  store:close()
  print(ME .. " wrote " .. n .. " of " .. #CASES .. " values")
end

local passed, failed = 0, 0
local function check(ok, what)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL " .. what)
  end
end

local function read_from(store, writer, source)
  local ns = store:namespace("values")
  local tag = ME .. " <- " .. writer .. " " .. source .. " "
  check(store:namespace("meta"):get("writer") == writer, tag .. "meta.writer")
  for _, c in ipairs(CASES) do
    local name, d = c[1], c[2]
    local v, msg, code = ns:get(name)
    if not writable(d, writer) then
      check(v == nil and msg == nil, tag .. name .. ": written by a Lua that cannot hold it,"
        .. " yet found: " .. show(v) .. " " .. tostring(msg))
    else
      local st = {}
      local want = build(d, writer, {}, st, "value")
      if st.refused then
        local pat = "^corrupt value at key '" .. name .. "': corrupt MessagePack at byte %d+: "
          .. "an integer beyond 2%^53 at " .. st.refused:gsub("%p", "%%%0")
          .. ", which this Lua's numbers cannot hold exactly$"
        check(v == nil and code == "CORRUPT" and type(msg) == "string" and msg:match(pat),
          tag .. name .. ": expected refused at " .. st.refused .. ", got "
          .. show(v) .. " " .. tostring(msg) .. " " .. tostring(code))
      elseif v == nil then
        check(false, tag .. name .. ": " .. tostring(msg) .. " " .. tostring(code))
      else
        local ok, why = same(want, v, {}, {}, name)
        check(ok, tag .. (why or name))
      end
    end
  end
end

local function read(dir, writer)
  local store = assert(instate.open(dir .. "/store"))
  read_from(store, writer, "store")
  store:close()
  -- the dump, loaded into a store of this reader's own
  local mine = dir .. "/loaded-by-" .. ME
  os.execute("rm -rf '" .. mine .. "'")
  store = assert(instate.open(mine))
  assert(store:load(dir .. "/dump"))
  read_from(store, writer, "dump")
  store:close()
  os.execute("rm -rf '" .. mine .. "'")
  print(("%s <- %s: %d passed, %d failed"):format(ME, writer, passed, failed))
  os.exit(failed == 0 and 0 or 1)
end

local mode, dir, writer = ...
if mode == "write" and dir then
  write(dir)
elseif mode == "read" and dir and writer then
  read(dir, writer)
else
  io.stderr:write("usage: roundtrip.lua write DIR | read DIR WRITER\n")
  os.exit(2)
end
