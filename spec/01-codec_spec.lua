-- The value codec: instate.encode / instate.decode (docs/FORMAT.md section 1).
local instate = require "instate"
local helpers = require "helpers"
local compat = require "instate.compat"
local encode, decode = instate.encode, instate.decode

-- What differs between the Luas, in one place: 5.3 and 5.4 have 64-bit
-- integers and string.pack; where numbers are doubles (5.1, 5.2, LuaJIT) an
-- integral number is an integer, integers are exact within 2^53, and beyond
-- LuaJIT has int64_t/uint64_t cdata (FORMAT.md section 1, numbers).
local INTEGERS, INT64 = compat.integers, compat.int64
local math_type = compat.math_type
local floor = math.floor
local TWO53 = 2 ^ 53
-- LuaJIT's 64-bit literals (5LL) do not parse on the other Luas
local function ll(src) return assert(compat.load("return " .. src))() end
-- The largest and smallest integers of this Lua (LuaJIT: cdata) and, as
-- table keys, of its numbers (a cdata key compares by identity)
local MAXI, MINI = math.maxinteger, math.mininteger
if not INTEGERS then
  MAXI, MINI = TWO53, -TWO53
  if INT64 then MAXI, MINI = ll("9223372036854775807LL"), ll("-9223372036854775807LL - 1") end
end
local KEY_MAX, KEY_MIN = INTEGERS and MAXI or TWO53, INTEGERS and MINI or -TWO53
-- The bytes of MAXI and MINI
local MAXI_BYTES, MINI_BYTES = "\207\127\255\255\255\255\255\255\255", "\211\128\000\000\000\000\000\000\000"
if not (INTEGERS or INT64) then
  MAXI_BYTES, MINI_BYTES = "\207\000\032\000\000\000\000\000\000", "\211\255\224\000\000\000\000\000\000"
end
--- Whether the float x is written as an integer on this Lua: integral and
-- within 2^53, not -0.0, where numbers are doubles.
local function as_integer(x)
  return not INTEGERS and x == floor(x) and x >= -TWO53 and x <= TWO53 and (x ~= 0 or 1 / x > 0)
end

-- string.pack, or the formats this spec uses (<d >d >f >I2 >I4) elsewhere
local pack = string.pack
if not pack then
  local function dbytes(x)  -- the double's 8 bytes, little-endian
    local h = helpers.float_bits(x)
    if h == "nan" then return "\000\000\000\000\000\000\248\127" end  -- a quiet NaN: its bits are lost here
    return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
  end
  local function f32(x)     -- as float32, for values float32 holds exactly
    local sign = (x < 0 or 1 / x < 0) and 2 ^ 31 or 0
    local ax, e, m = math.abs(x), 0, 0
    if ax == math.huge then
      e = 255
    elseif ax < 2 ^ -126 then
      m = ax / 2 ^ -149           -- subnormal (or zero)
    else
      local f, ex = math.frexp(ax)  -- ax = f * 2^ex, 0.5 <= f < 1
      e, m = ex + 126, (f * 2 - 1) * 2 ^ 23
    end
    return helpers.be(sign + e * 2 ^ 23 + m, 4)
  end
  pack = function(fmt, x)
    if fmt == "<d" then return dbytes(x) end
    if fmt == ">d" then return dbytes(x):reverse() end
    if fmt == ">f" then return f32(x) end
    return helpers.pack(fmt, x)
  end
end
-- A double from its 8 little-endian bytes (NaN payloads): 5.3+ and LuaJIT
local unpack_d = string.unpack and function(b) return (string.unpack("<d", b)) end
if not unpack_d and jit then
  local ffi = require "ffi"
  local box = ffi.new("union { double d; uint8_t b[8]; }")
  unpack_d = function(b)
    for i = 1, 8 do box.b[i - 1] = b:byte(i) end
    return box.d
  end
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x ", c:byte()) end))
end

-- Deep equality with exact number subtypes and float bits, and the same
-- shape of references: every table of a is paired with exactly one of b.
-- Table keys are matched last, once every other entry has paired the
-- tables it reaches (a later reference may be what tells two alike keys
-- apart), each by trying the candidates and undoing a failed try.
local function same(a, b)
  local seen_ab, seen_ba, log, deferred = {}, {}, {}, {}
  local function undo(mark)
    for i = #log, mark + 1, -1 do
      local x = log[i]
      seen_ba[seen_ab[x]] = nil
      seen_ab[x] = nil
      log[i] = nil
    end
  end
  local walk
  local function match_key(k, v, bt)
    if seen_ab[k] ~= nil then
      local v2 = rawget(bt, seen_ab[k])
      if v2 == nil then return false, "table key" end
      return walk(v, v2, false)
    end
    for k2, v2 in next, bt do
      if type(k2) == "table" and seen_ba[k2] == nil then
        local mark = #log
        if walk(k, k2, false) and walk(v, v2, false) then return true end
        undo(mark)
      end
    end
    return false, "table key"
  end
  walk = function(x, y, defer)
    if type(x) ~= type(y) then return false, "type " .. type(x) .. " vs " .. type(y) end
    if type(x) == "number" then
      if math_type(x) ~= math_type(y) then return false, "subtype" end
      if math_type(x) == "float" then
        if x ~= x and not string.pack then return y ~= y, "NaN" end
        return pack("<d", x) == pack("<d", y), "float bits"
      end
      return x == y, "integer"
    end
    if type(x) == "cdata" then return tostring(x) == tostring(y), "cdata" end
    if type(x) ~= "table" then return x == y, "value" end
    if seen_ab[x] ~= nil or seen_ba[y] ~= nil then
      return seen_ab[x] == y and seen_ba[y] == x, "reference shape"
    end
    seen_ab[x], seen_ba[y] = y, x
    log[#log + 1] = x
    local nx, ny = 0, 0
    for _ in next, x do nx = nx + 1 end
    for _ in next, y do ny = ny + 1 end
    if nx ~= ny then return false, "entry count " .. nx .. " vs " .. ny end
    for k, v in next, x do
      if type(k) == "table" then
        if defer then
          deferred[#deferred + 1] = {k, v, y}
        else
          local ok, why = match_key(k, v, y)
          if not ok then return false, why end
        end
      else
        local ok, why = walk(v, rawget(y, k), defer)
        if not ok then return false, "at key " .. tostring(k) .. ": " .. why end
      end
    end
    return true
  end
  local ok, why = walk(a, b, true)
  local i = 1
  while ok and i <= #deferred do
    ok, why = match_key(deferred[i][1], deferred[i][2], deferred[i][3])
    i = i + 1
  end
  return ok, why
end

local function roundtrip(v)
  local s = encode(v)
  local n = select("#", decode(s))
  local d = decode(s)
  local ok, why = same(v, d)
  assert(ok, "round trip differs (" .. tostring(why) .. ") for bytes " .. hex(s:sub(1, 64)))
  if v ~= nil then assert.equal(1, n) end
  return d, s
end

local function corrupt(s, msg_pattern)
  local v, msg, code = decode(s)
  assert.is_nil(v)
  assert.equal("CORRUPT", code)
  assert.is_string(msg)
  assert.truthy(msg:find("^corrupt MessagePack at byte %d+: "), msg)
  if msg_pattern then
    assert.truthy(msg:find(msg_pattern, 1, true), "message '" .. msg .. "' lacks '" .. msg_pattern .. "'")
  end
  return msg
end

describe("codec", function()
  describe("bytes follow the MessagePack specification", function()
    local cases = {
      {nil, "\192"}, {false, "\194"}, {true, "\195"},
      {0, "\000"}, {1, "\001"}, {127, "\127"},
      {128, "\204\128"}, {255, "\204\255"},
      {256, "\205\001\000"}, {65535, "\205\255\255"},
      {65536, "\206\000\001\000\000"}, {4294967295, "\206\255\255\255\255"},
      {4294967296, "\207\000\000\000\001\000\000\000\000"},
      {MAXI, MAXI_BYTES},
      {-1, "\255"}, {-32, "\224"},
      {-33, "\208\223"}, {-128, "\208\128"},
      {-129, "\209\255\127"}, {-32768, "\209\128\000"},
      {-32769, "\210\255\255\127\255"}, {-2147483648, "\210\128\000\000\000"},
      {-2147483649, "\211\255\255\255\255\127\255\255\255"},
      {MINI, MINI_BYTES},
      -- an integral float is an integer where numbers are doubles
      {1.5, "\202" .. pack(">f", 1.5)}, {1.0, INTEGERS and "\202\063\128\000\000" or "\001"},
      {helpers.neg_zero, "\202\128\000\000\000"}, {math.huge, "\202\127\128\000\000"},
      {-math.huge, "\202\255\128\000\000"},
      {0.1, "\203" .. pack(">d", 0.1)},
      {"", "\160"}, {"abc", "\163abc"}, {"\0", "\161\0"},
      {"\255", "\196\001\255"},
      {{}, "\128"}, {{1, 2, 3}, "\147\001\002\003"}, {{a = 1}, "\129\161a\001"},
      {{true}, "\145\195"}, {{[2] = 2}, "\129\002\002"},
    }
    for i, c in ipairs(cases) do
      it("case " .. i .. ": " .. hex(c[2]), function()
        assert.equal(hex(c[2]), hex(encode(c[1])))
        roundtrip(c[1])
      end)
    end

    it("uses the shortest str, bin, array and map headers at every boundary", function()
      local function hdr(v, n) return encode(v):sub(1, n) end
      assert.equal("\191", hdr(("a"):rep(31), 1))
      assert.equal("\217\032", hdr(("a"):rep(32), 2))
      assert.equal("\217\255", hdr(("a"):rep(255), 2))
      assert.equal("\218\001\000", hdr(("a"):rep(256), 3))
      assert.equal("\218\255\255", hdr(("a"):rep(65535), 3))
      assert.equal("\219\000\001\000\000", hdr(("a"):rep(65536), 5))
      assert.equal("\196\255", hdr(("\255"):rep(255), 2))
      assert.equal("\197\001\000", hdr(("\255"):rep(256), 3))
      assert.equal("\198\000\001\000\000", hdr(("\255"):rep(65536), 5))
      local function arr(n) local t = {} for i = 1, n do t[i] = 0 end return t end
      local function map(n) local t = {} for i = 1, n do t["k" .. i] = 0 end return t end
      assert.equal("\159", hdr(arr(15), 1))
      assert.equal("\220\000\016", hdr(arr(16), 3))
      assert.equal("\220\255\255", hdr(arr(65535), 3))
      assert.equal("\221\000\001\000\000", hdr(arr(65536), 5))
      assert.equal("\143", hdr(map(15), 1))
      assert.equal("\222\000\016", hdr(map(16), 3))
      assert.equal("\222\255\255", hdr(map(65535), 3))
      assert.equal("\223\000\001\000\000", hdr(map(65536), 5))
      for _, n in ipairs{15, 16, 65535, 65536} do
        roundtrip(arr(n))
        roundtrip(map(n))
      end
    end)
  end)

  describe("integers", function()
    it("round-trip exactly at every width boundary", function()
      local edges = {0, MAXI, MINI, MAXI - 1, MINI + 1}
      -- 2^b as an integer (2^63 wraps to the most negative one); where
      -- numbers are doubles 2^53 bounds them (LuaJIT: cdata beyond)
      local widths = INTEGERS and {7, 8, 15, 16, 31, 32, 63} or {7, 8, 15, 16, 31, 32}
      for _, b in ipairs(widths) do
        local p = b == 63 and math.mininteger or INTEGERS and math.tointeger(2 ^ b) or 2 ^ b
        for _, v in ipairs{p - 1, p, p + 1, -p - 1, -p, -p + 1} do edges[#edges + 1] = v end
      end
      if INT64 then
        for _, b in ipairs{53, 54, 62, 63} do
          local p = require("bit").lshift(ll("1LL"), b)  -- int64_t: exact, 2^63 wraps
          for _, v in ipairs{p - 1, p, p + 1, -p - 1, -p, -p + 1} do
            if v > TWO53 or v < -TWO53 then edges[#edges + 1] = v end
          end
        end
      end
      for _, v in ipairs{-32, -33, -31, 127, 128, 255, 256} do edges[#edges + 1] = v end
      for _, v in ipairs(edges) do
        local d = roundtrip(v)
        if type(v) == "number" then assert.equal("integer", math_type(d)) end
        assert.equal(v, d)
      end
    end)

    it("decodes every foreign width, signed or not, and uint64 above maxinteger as its bits", function()
      assert.equal(1, decode("\204\001"))
      assert.equal(1, decode("\205\000\001"))
      assert.equal(1, decode("\206\000\000\000\001"))
      assert.equal(1, decode("\207\000\000\000\000\000\000\000\001"))
      assert.equal(1, decode("\208\001"))
      assert.equal(-1, decode("\209\255\255"))
      assert.equal(-1, decode("\210\255\255\255\255"))
      assert.equal(-1, decode("\211\255\255\255\255\255\255\255\255"))
      assert.equal("integer", math_type(decode("\204\001")))
      -- uint64 above 2^63-1: the integer with the same bits on 5.3/5.4, a
      -- uint64_t on LuaJIT, refused on 5.1/5.2 (spec/06-numbers_spec.lua)
      local u64 = {"\207\255\255\255\255\255\255\255\255", "\207\128\000\000\000\000\000\000\000",
                   "\207" .. ("\254"):rep(8)}
      if INTEGERS then
        assert.equal(-1, decode(u64[1]))
        assert.equal(math.mininteger, decode(u64[2]))
        assert.equal(string.unpack(">J", ("\254"):rep(8)), decode(u64[3]))
      elseif INT64 then
        assert.equal("18446744073709551615ULL", tostring(decode(u64[1])))
        assert.equal("9223372036854775808ULL", tostring(decode(u64[2])))
        assert.equal("18374403900871474942ULL", tostring(decode(u64[3])))
      else
        for _, b in ipairs(u64) do
          corrupt(b, "an integer beyond 2^53 at value, which this Lua's numbers cannot hold exactly")
        end
      end
    end)
  end)

  describe("floats", function()
    it("stay floats bit for bit: NaN payloads, infinities, -0.0, integral floats", function()
      local values = {1.0, 0.0, helpers.neg_zero, 2^53, -2^63, 2^63, 1e308, 5e-324, math.huge,
                      -math.huge, 0.1, math.pi, 0/0}
      -- NaN payloads: made from bytes, which 5.1 and 5.2 cannot do
      local nan_payload = unpack_d and unpack_d("\001\000\000\000\000\000\248\127")
      if unpack_d then
        values[#values + 1] = nan_payload
        values[#values + 1] = unpack_d("\000\000\000\000\000\000\248\255")
      end
      for _, v in ipairs(values) do
        local d = roundtrip(v)
        if as_integer(v) then
          -- where numbers are doubles an integral one within 2^53 is an integer
          assert.equal("integer", math_type(d))
          assert.equal(v, d)
        else
          -- (no subtype to check where numbers are doubles: the bytes tell)
          if INTEGERS then assert.equal("float", math_type(d)) end
          assert.truthy(encode(v):byte(1) == 0xca or encode(v):byte(1) == 0xcb)
          if v == v or string.pack then
            assert.equal(pack("<d", v), pack("<d", d))
          else
            -- LuaJIT keeps one NaN (lua_pushnumber makes every NaN its own):
            -- the bytes keep the payload, the number read back is a NaN
            assert.is_true(d ~= d)
          end
        end
      end
      if not INTEGERS then
        assert.equal("\001", encode(1.0))
        assert.equal("\000", encode(0.0))
        assert.equal("\207\000\032\000\000\000\000\000\000", encode(2^53))
      end
      assert.equal(-math.huge, 1 / decode(encode(helpers.neg_zero)))
      if nan_payload and string.pack then
        assert.equal("\203" .. pack(">d", nan_payload), encode(nan_payload))
      elseif nan_payload then
        assert.equal("\203\127\248\000\000\000\000\000\001", encode(nan_payload))
      end
    end)

    it("take float32 exactly when narrowing is bit-exact", function()
      local f32 = {1.5, 16777216.0, 2^-149, 2^-126, 3.4028234663852886e38, helpers.neg_zero, 2^100, 0.5}
      local f64 = {16777217.0, 2^-150, 3.4028235677973366e38, 1e39, 0.1, 1/3, 2^-1074}
      for _, list in ipairs{{"\202", ">f", f32}, {"\203", ">d", f64}} do
        for _, v in ipairs(list[3]) do
          if as_integer(v) then   -- 16777216.0, 16777217.0 where numbers are doubles
            assert.equal("\206", encode(v):sub(1, 1))
          else
            assert.equal(list[1] .. pack(list[2], v), encode(v))
          end
          roundtrip(v)
        end
      end
    end)

    it("decode float32 and float64 as floats", function()
      local v = decode("\202" .. pack(">f", 0.5))
      assert.equal("float", math_type(v))
      assert.equal(0.5, v)
      v = decode("\203" .. pack(">d", 2.0))
      -- no float subtype where numbers are doubles: an integral one is an integer
      assert.equal(INTEGERS and "float" or "integer", math_type(v))
      assert.equal(2, v)
    end)
  end)

  describe("strings", function()
    it("are bytes: NULs and invalid UTF-8 survive, as bin", function()
      local cases = {"\0", "a\0b", "\255\254", "\192\128", "\237\160\128", "\244\144\128\128",
                     "\226\130", "\128", "\248\136\128\128\128", ("a"):rep(100) .. "\255",
                     ("abcdefgh"):rep(3) .. "\195", "12345678\128" .. ("z"):rep(20)}
      for i, s in ipairs(cases) do
        local d, bytes = roundtrip(s)
        assert.equal(s, d)
        if i > 2 then
          assert.truthy(bytes:byte(1) >= 0xc4 and bytes:byte(1) <= 0xc6, "bin expected for case " .. i)
        end
      end
    end)

    it("use str for valid UTF-8 up to U+10FFFF", function()
      for _, s in ipairs{"", "é", "€uro", "😀", "\244\143\191\191", "\237\159\191", "\238\128\128",
                         ("héllo wörld "):rep(10), ("a"):rep(1000)} do
        local d, bytes = roundtrip(s)
        local b = bytes:byte(1)
        assert.truthy((b >= 0xa0 and b <= 0xbf) or (b >= 0xd9 and b <= 0xdb), hex(bytes:sub(1, 4)))
        assert.equal(s, d)
      end
    end)

    it("decode from str8/16/32 and bin8/16/32", function()
      assert.equal("abc", decode("\217\003abc"))
      assert.equal("abc", decode("\218\000\003abc"))
      assert.equal("abc", decode("\219\000\000\000\003abc"))
      assert.equal("", decode("\196\000"))
      assert.equal("\255", decode("\197\000\001\255"))
      assert.equal("\255", decode("\198\000\000\000\001\255"))
    end)
  end)

  describe("tables", function()
    it("with keys exactly 1..n are arrays, anything else maps", function()
      assert.equal(0x93, encode({1, 2, 3}):byte(1))
      assert.equal(0x82, encode({[1] = 1, [3] = 3}):byte(1))  -- hole
      assert.equal(0x81, encode({[2] = 2}):byte(1))           -- 1 missing
      assert.equal(0x83, encode({1, 2, x = 3}):byte(1))        -- mixed keys
      assert.equal(0x82, encode({[0] = 0, 1}):byte(1))         -- 0 is not in 1..n
      assert.equal(0x82, encode({1, ["2"] = 2}):byte(1))        -- "2" is a string
      local t = {1, 2, 3}
      t[4] = 4
      t[4] = nil
      assert.equal(0x93, encode(t):byte(1))
      local holes = {}
      for i = 1, 10 do holes[i] = i end
      holes[5] = nil
      assert.equal(0x89, encode(holes):byte(1))
      local sparse_hash = {}
      for i = 10, 1, -1 do sparse_hash[i] = i end  -- built backwards: keys in the hash part
      assert.equal(0x9a, encode(sparse_hash):byte(1))
      for _, v in ipairs{{1, 2, 3}, {[1] = 1, [3] = 3}, {[2] = 2}, {1, 2, x = 3}, {[0] = 0, 1}, holes,
                         sparse_hash, {[-1] = "neg"}, {[KEY_MAX] = 1, [KEY_MIN] = 2}} do
        roundtrip(v)
      end
    end)

    it("keep the real key types: integer, float, string, boolean, table", function()
      local k = {name = "key"}
      local v = {[1.5] = "f", [-0.5] = "nf", [2^60] = "big", ["1"] = "s", [true] = "t",
                 [false] = "f", [k] = "table", [math.huge] = "inf", [1] = "one"}
      local d = roundtrip(v)
      assert.equal("f", d[1.5])
      assert.equal("s", d["1"])
      assert.equal("one", d[1])
      assert.equal("t", d[true])
      assert.equal("f", d[false])
      assert.equal("inf", d[math.huge])
      local found
      for key, val in pairs(d) do if type(key) == "table" then found = key; assert.equal("table", val) end end
      assert.equal("key", found.name)
    end)

    it("decode arrays and maps of every foreign width, any key type, duplicate keys last wins", function()
      assert.same({1, 2}, decode("\220\000\002\001\002"))
      assert.same({1, 2}, decode("\221\000\000\000\002\001\002"))
      assert.same({a = 1}, decode("\222\000\001\161a\001"))
      assert.same({a = 1}, decode("\223\000\000\000\001\161a\001"))
      assert.same({}, decode("\144"))
      assert.same({a = 2}, decode("\130\161a\001\161a\002"))
      local d = decode("\131\195\001\203" .. pack(">d", 1.5) .. "\002\202" .. pack(">f", 2.0) .. "\003")
      assert.equal(1, d[true])
      assert.equal(2, d[1.5])
      assert.equal(3, d[2])  -- Lua normalises the float key 2.0 to the integer 2
      assert.equal("integer", math_type(next({[2.0] = 0})))
      d = decode("\129\145\001\161v")  -- a table as a key
      local key, val = next(d)
      assert.same({1}, key)
      assert.equal("v", val)
    end)

    it("refuses unregistered metatables, or drops them when asked, and runs no metamethod", function()
      local called = {}
      local mt = {}
      for _, m in ipairs{"__index", "__newindex", "__pairs", "__len", "__eq", "__tostring", "__call"} do
        mt[m] = function() called[#called + 1] = m; return 42 end
      end
      local v = setmetatable({1, 2, x = setmetatable({}, mt)}, mt)
      assert.has_error(function() encode(v) end,
        "cannot store a table with an unregistered metatable at value")
      local d = decode(encode(v, nil, {metatables = "drop"}))
      assert.same({}, called)
      assert.is_nil(getmetatable(d))
      assert.is_nil(getmetatable(d.x))
      assert.same({1, 2, x = {}}, d)
      assert.equal("\128", encode(setmetatable({}, {__index = {a = 1}}), nil, {metatables = "drop"}))
      assert.equal(0x92, encode(setmetatable({1, 2}, {__len = function() return 10 end}), nil,
        {metatables = "drop"}):byte(1))
    end)

    it("nest to the documented depth", function()
      assert.equal(200, instate.max_depth)
      local function nest(n) local t = {} for _ = 2, n do t = {t} end return t end
      roundtrip(nest(200))
      local ok, err = pcall(encode, nest(201))
      assert.is_false(ok)
      assert.equal("value nested deeper than 200 levels at value" .. ("[1]"):rep(200), err)
      ok, err = pcall(encode, {a = {b = nest(199)}}, "state")
      assert.is_false(ok)
      assert.equal("value nested deeper than 200 levels at state.a.b" .. ("[1]"):rep(198), err)
      -- a cycle is a reference, not depth
      local c = {}
      c[1] = c
      roundtrip(c)
      -- decode
      local ok_bytes = ("\145"):rep(199) .. "\144"
      assert.is_table(decode(ok_bytes))
      corrupt(("\145"):rep(200) .. "\144", "at byte 200: tables nested deeper than 200 levels")
      corrupt(("\129\001"):rep(250) .. "\001", "at byte 400: tables nested deeper than 200 levels")
      -- nesting through map keys counts too
      corrupt(("\129"):rep(201) .. "\144" .. ("\001"):rep(201), "at byte 200: tables nested deeper than 200 levels")
      assert.is_table(decode(("\129"):rep(200) .. "\001" .. ("\001"):rep(200)))
    end)
  end)

  describe("shared sub-tables and cycles", function()
    it("keep their shape of references", function()
      local shared = {1, 2}
      local v = {a = shared, b = shared, list = {shared, shared}}
      local d = roundtrip(v)
      assert.equal(d.a, d.b)
      assert.equal(d.a, d.list[1])
      assert.equal(d.a, d.list[2])
      assert.not_equal(d.a, d.list)

      local self = {}
      self.me = self
      d = roundtrip(self)
      assert.equal(d, d.me)

      local a, b = {}, {}
      a.b, b.a = b, a
      d = roundtrip({a, b})
      assert.equal(d[1].b, d[2])
      assert.equal(d[2].a, d[1])

      local k = {"key"}
      d = roundtrip({[k] = k, other = k})
      local key, val = next(d)
      if type(key) ~= "table" then key, val = next(d, key) end
      assert.equal(key, val)
      assert.equal(key, d.other)
      assert.same({"key"}, key)

      local t = {}
      t[t] = t
      d = roundtrip(t)
      assert.equal(d, d[d])
    end)

    it("use GRAPH and REF only when references exist", function()
      local t = {}
      t[1] = t
      -- fixext 4, type 1 (GRAPH), payload: fixarray 1, fixext 1 type 2 (REF) id 0
      assert.equal(hex("\214\001\145\212\002\000"), hex(encode(t)))
      local s = {}
      assert.equal(hex("\199\005\001\146\128\212\002\001"), hex(encode({s, s})))
      -- a tree of distinct tables stays plain MessagePack
      local plain = encode({a = {}, b = {}, c = {{}, {}}})
      assert.falsy(plain:find("[\199-\201\212-\216]"))
    end)

    it("number tables in pre-order, keys before values, with wider REF ids", function()
      local list = {}
      for i = 1, 300 do list[i] = {i} end
      -- the root is table 0, list 1, list[i] i + 1: a fixext 2 reference to 301
      local d, bytes = roundtrip({list, list[300]})
      assert.equal(d[1][300], d[2])
      assert.truthy(bytes:find("\213\002\001\045", 1, true), "fixext 2 REF to 301")
      local big = {}
      for i = 1, 70000 do big[i] = {} end
      d, bytes = roundtrip({big, big[70000]})
      assert.equal(d[1][70000], d[2])
      assert.truthy(bytes:find("\214\002\000\001\017\113", 1, true), "fixext 4 REF to 70001")
    end)
  end)

  describe("unstorable values", function()
    local co = coroutine.create(function() end)
    local cases = {
      {print, nil, "cannot store a function at value"},
      {io.stdout, "save", "cannot store a userdata at save"},
      {co, nil, "cannot store a thread at value"},
      {{items = {1, 2, {on_use = print}}}, "inventory", "cannot store a function at inventory.items[3].on_use"},
      {{f = io.stdout}, nil, "cannot store a userdata at value.f"},
      {{["a b"] = {f = print}}, nil, 'cannot store a function at value["a b"].f'},
      {{['say "hi"\\'] = print}, nil, 'cannot store a function at value["say \\"hi\\"\\\\"]'},
      {{["a\nb\1"] = print}, nil, 'cannot store a function at value["a\\nb\\1"]'},
      {{["1abc"] = print}, nil, 'cannot store a function at value["1abc"]'},
      {{[("k"):rep(100)] = print}, nil, 'cannot store a function at value["' .. ("k"):rep(40) .. '..."]'},
      {{["\255"] = print}, nil, 'cannot store a function at value["\\255"]'},
      {{["é"] = co}, nil, 'cannot store a thread at value["é"]'},
      {{[-5] = print}, nil, "cannot store a function at value[-5]"},
      {{[1.5] = print}, nil, "cannot store a function at value[1.5]"},
      {{[true] = print}, nil, "cannot store a function at value[true]"},
      {{[{f = print}] = 1}, nil, "cannot store a function at value[table].f"},
      {{[print] = 1}, nil, "cannot store a function as a key at value"},
      {{x = {[io.stdout] = 1}}, "v", "cannot store a userdata as a key at v.x"},
      {{x = {[co] = true}}, nil, "cannot store a thread as a key at value.x"},
      {{{}, {{}, {n = print}}}, nil, "cannot store a function at value[2][2].n"},
    }
    for i, c in ipairs(cases) do
      it("case " .. i .. ": " .. c[3], function()
        local ok, err = pcall(encode, c[1], c[2])
        assert.is_false(ok)
        assert.equal(c[3], err)
      end)
    end

    it("leave the codec usable after an error", function()
      local big = {}
      for i = 1, 1000 do big[i] = {i, tostring(i)} end
      big[1001] = {print}
      assert.has_error(function() encode(big) end, "cannot store a function at value[1001][1]")
      big[1001] = nil
      roundtrip(big)
      local s1 = encode({1, 2, 3})
      local s2 = encode("other")
      assert.equal("\147\001\002\003", s1)
      assert.equal("\165other", s2)
    end)

    it("keep working when the scratch memory shrinks after a spike", function()
      local big = {}
      for i = 1, 20000 do big[i] = {i, ("v"):rep(20), {}} end
      local s1 = encode(big)
      for i = 1, 200 do assert.equal("\145" .. encode(i), encode({i})) end
      local again = encode(big)
      assert.equal(s1, again)
      roundtrip(big)
    end)

    it("check their arguments", function()
      assert.has_error(function() encode() end, "bad argument #1 to 'encode' (value expected)")
      assert.has_error(function() decode(1) end, "bad argument #1 to 'decode' (string expected, got number)")
      assert.has_error(function() decode() end, "bad argument #1 to 'decode' (string expected, got no value)")
    end)
  end)

  describe("decode on hostile input", function()
    it("returns nil alone for an encoded nil", function()
      assert.equal(1, select("#", decode("\192")))
      assert.is_nil(decode("\192"))
    end)

    local graph = function(payload)
      return "\199" .. string.char(#payload) .. "\001" .. payload
    end
    local cases = {
      {"", "at byte 0: truncated input (a value expected, 0 bytes left)"},
      {"\193", "at byte 0: invalid byte 0xc1"},
      {"\145\193", "at byte 1: invalid byte 0xc1"},
      {"\001\002", "at byte 1: 1 trailing bytes after the value"},
      {"\147\001", "at byte 0: array of 3 elements needs at least 3 bytes, 1 left"},
      {"\165ab", "at byte 0: truncated str (need 5 bytes, 2 left)"},
      {"\145\217\040abc", "at byte 1: truncated str (need 40 bytes, 3 left)"},
      {"\196\002a", "at byte 0: truncated bin (need 2 bytes, 1 left)"},
      {"\197\001", "at byte 0: truncated bin16 (need 2 bytes, 1 left)"},
      {"\206\000", "at byte 0: truncated uint32 (need 4 bytes, 1 left)"},
      {"\203\000\000", "at byte 0: truncated float64 (need 8 bytes, 2 left)"},
      {"\211", "at byte 0: truncated int64 (need 8 bytes, 0 left)"},
      {"\221\255\255\255\255", "at byte 0: array of 4294967295 elements needs at least 4294967295 bytes, 0 left"},
      {"\223\000\001\000\000\001", "at byte 0: map of 65536 pairs needs at least 131072 bytes, 1 left"},
      {"\129\001", "at byte 0: map of 1 pairs needs at least 2 bytes, 1 left"},
      {"\129\192\001", "at byte 1: nil map key"},
      {"\129\203" .. pack(">d", 0/0) .. "\001", "at byte 1: NaN map key"},
      {"\130\001\001\202\127\192\000\000\001", "at byte 3: NaN map key"},
      {"\212\005\000", "at byte 0: unsupported extension type 5"},
      {"\214\255\000\000\000\000", "at byte 0: unsupported extension type -1"},
      {"\145\215\255" .. ("\0"):rep(8), "at byte 1: unsupported extension type -1"},
      {"\212\002\000", "at byte 0: reference outside a graph extension"},
      {"\146\144\212\002\000", "at byte 2: reference outside a graph extension"},
      {graph("\145\212\002\001"), "at byte 4: reference to table 1, but only 1 tables begun"},
      {graph("\212\002\000"), "at byte 3: reference to table 0, but only 0 tables begun"},
      {graph("\145\199\003\002\000\000\000"), "at byte 4: reference of 3 bytes (1, 2, 4 or 8 expected)"},
      {graph("\145" .. graph("\144")), "at byte 4: graph extension not at the top level"},
      {graph("\144") .. "\001", "at byte 4: 1 trailing bytes after the value"},
      {graph("\144\001"), "at byte 4: 1 trailing bytes after the value"},
      {"\213\001\001\001", "at byte 3: 1 trailing bytes after the value"},
      {"\199\005\001\144", "at byte 0: truncated ext (need 5 bytes, 1 left)"},
      {"\200\000", "at byte 0: truncated ext16 (need 3 bytes, 1 left)"},
      {"\212", "at byte 0: truncated fixext (need 1 bytes, 0 left)"},
      {"\216\001" .. ("\0"):rep(15), "at byte 0: truncated ext (need 16 bytes, 15 left)"},
      {graph(""), "at byte 3: truncated input (a value expected, 0 bytes left)"},
      -- a GRAPH holds at least one REF: without one it is another
      -- library's extension type 1, not ours
      {"\212\001\001", "at byte 0: graph extension without a reference"},
      {"\214\001\147\128\128\128", "at byte 0: graph extension without a reference"},
      {graph("\146\128\145\144"), "at byte 0: graph extension without a reference"},
      {"\145" .. graph("\145\212\002\000"), "at byte 1: graph extension not at the top level"},
    }
    for i, c in ipairs(cases) do
      it("case " .. i .. ": " .. c[2], function()
        corrupt(c[1], c[2])
      end)
    end

    it("reports every truncation of valid encodings", function()
      local classy = setmetatable({}, {__index = function() end})
      instate.register_class("spec01.Classy", classy)
      finally(function() instate.unregister_class("spec01.Classy") end)
      local shared = {"shared", 1.5}
      local values = {
        {1, -1, 300, -300, 70000, 2^40, -2^40, 1.5, 0.1, true, false, "str", ("x"):rep(40), "\255\0"},
        {a = {b = {c = {"deep"}}}, [1.5] = shared, s = shared, [true] = {}, big = ("y"):rep(300)},
        {[{}] = setmetatable({}, classy)},
      }
      local cyc = {name = "cycle"}
      cyc.self = cyc
      values[#values + 1] = cyc
      local cuts = 0
      for _, v in ipairs(values) do
        local s = encode(v)
        for i = 0, #s - 1 do
          corrupt(s:sub(1, i))
          cuts = cuts + 1
        end
        roundtrip(v)
      end
      assert.truthy(cuts > 400)
    end)

    it("never crashes or raises on mutated or random bytes", function()
      math.randomseed(20240601)
      local shared = {1}
      local base = {
        encode({x = 1.5, y = -3, name = "item-123", tags = {"a", "b", "c"}, hp = 100, alive = true}),
        encode({shared, shared, {[shared] = shared}}),
        encode({1, {2, {3, {4, {5}}}}, ("z"):rep(70), 2^33, -2^33, 0.25, 0.1}),
      }
      local decoded, failed = 0, 0
      for round = 1, 3000 do
        local s = base[round % #base + 1]
        local bytes = {s:byte(1, -1)}
        for _ = 1, math.random(1, 4) do
          local op = math.random(3)
          local pos = math.random(#bytes)
          if op == 1 then bytes[pos] = math.random(0, 255)
          elseif op == 2 then table.remove(bytes, pos)
          else table.insert(bytes, pos, math.random(0, 255)) end
          if #bytes == 0 then bytes[1] = 0xc1 end
        end
        local m = string.char(compat.unpack(bytes))
        local ok, v, msg, code = pcall(decode, m)
        assert(ok, "decode raised: " .. tostring(v) .. " on " .. hex(m))
        if v == nil and msg then
          assert.equal("CORRUPT", code)
          assert.truthy(msg:find("^corrupt MessagePack at byte %d+: "))
          failed = failed + 1
        else
          decoded = decoded + 1
          -- whatever decodes can be stored again
          assert(pcall(encode, v))
        end
      end
      for _ = 1, 2000 do
        local t = {}
        for i = 1, math.random(0, 24) do t[i] = math.random(0, 255) end
        local ok, err = pcall(decode, string.char(compat.unpack(t)))
        assert(ok, err)
      end
      assert.truthy(decoded > 100 and failed > 100, decoded .. " decoded, " .. failed .. " corrupt")
    end)
  end)

  describe("canonical encoding", function()
    local helpers = require "helpers"
    local function canon(v, root) return encode(v, root, {canonical = true}) end

    -- An independent statement of the canonical bytes (FORMAT.md section 1):
    -- every map's entries in memcmp order of their bytes as encoded when the
    -- map begins, tables numbered in pre-order of that order. Lua compares
    -- strings bytewise in the C locale. Valid for values whose table keys
    -- never encode alike (table.sort is not stable).
    local function oracle(v)
      local ids, order, nids, refs = {}, {}, 0, false
      local function header(n, small, w16, w32)
        if n <= 15 then return string.char(small + n) end
        if n <= 0xffff then return w16 .. pack(">I2", n) end
        return w32 .. pack(">I4", n)
      end
      local function enc(x)
        if type(x) ~= "table" then return encode(x) end
        if ids[x] then
          refs = true
          local id = ids[x]
          if id < 256 then return "\212\002" .. string.char(id) end
          if id < 65536 then return "\213\002" .. pack(">I2", id) end
          return "\214\002" .. pack(">I4", id)
        end
        ids[x], order[nids], nids = nids, x, nids + 1
        local keys, ints = {}, 0
        for k in next, x do
          keys[#keys + 1] = k
          if math_type(k) == "integer" and k >= 1 then ints = ints + 1 end
        end
        local n = #keys
        local array = n > 0 and ints == n
        for _, k in ipairs(keys) do if array and k > n then array = false end end
        local out = {}
        if array then
          for i = 1, n do out[i] = enc(x[i]) end
          return header(n, 0x90, "\220", "\221") .. table.concat(out)
        end
        -- Sort by the key's bytes; an entry with a table key is encoded in
        -- full as if it came first (then what it numbered is forgotten).
        -- Bytes of table and scalar keys differ in their first byte.
        local kb = {}
        for _, k in ipairs(keys) do
          if type(k) == "table" then
            local n0 = nids
            kb[k] = enc(k) .. enc(x[k])
            while nids > n0 do nids = nids - 1; ids[order[nids]] = nil end
          else
            kb[k] = encode(k)
          end
        end
        table.sort(keys, function(a, b) return kb[a] < kb[b] end)
        for i, k in ipairs(keys) do out[i] = enc(k) .. enc(x[k]) end
        return header(n, 0x80, "\222", "\223") .. table.concat(out)
      end
      local body = enc(v)
      if not refs then return body end
      local n, h = #body, nil
      local fixed = {[1] = "\212", [2] = "\213", [4] = "\214", [8] = "\215", [16] = "\216"}
      if fixed[n] then h = fixed[n] .. "\001"
      elseif n <= 0xff then h = "\199" .. string.char(n) .. "\001"
      elseif n <= 0xffff then h = "\200" .. pack(">I2", n) .. "\001"
      else h = "\201" .. pack(">I4", n) .. "\001" end
      return h .. body
    end

    -- The same bytes as the oracle (when given), an exact round trip, and
    -- the same bytes again from the decoded copy.
    local function bytes_equal(want, got, what)
      if want ~= got then  -- hex only on failure: values may be large
        assert.equal(hex(want), hex(got), what)
      end
    end
    local function check(v, want)
      local s = canon(v)
      if want then bytes_equal(want, s, "canonical bytes") end
      local d = decode(s)
      local ok, why = same(v, d)
      assert(ok, "canonical round trip differs (" .. tostring(why) .. ")")
      bytes_equal(s, canon(d), "canonical bytes of the decoded copy")
      return s
    end

    -- Random values from a seed; `tkeys` allows tables as keys.
    local function random_value(depth, tkeys)
      local r = math.random(10)
      if depth > 4 or r <= 4 then
        local kinds = {
          function() return math.random(-300, 300) end,
          -- any 64-bit integer (5.3: in two halves, its range is smaller), or within 2^53
          _VERSION == "Lua 5.4" and function() return math.random(math.mininteger, math.maxinteger) end
            or INTEGERS and function()
              local r = math.random(0, math.maxinteger)
              return math.random(2) == 1 and r or -r - 1
            end
            or function() return floor((math.random() - 0.5) * 2 ^ 54) end,
          function() return math.random(-1000, 1000) / 8 end,
          function() return ({"", "a", "ab", "b", "\255", "a\0", ("x"):rep(40), "é"})[math.random(8)] end,
          function() return math.random(2) == 1 end,
        }
        return kinds[math.random(#kinds)]()
      end
      local t = {}
      if r <= 6 then
        for i = 1, math.random(0, 6) do t[i] = random_value(depth + 1, tkeys) end
        return t
      end
      for _ = 1, math.random(0, r == 10 and 20 or 8) do
        local k = random_value(5, false)
        -- table keys hold scalars: comparing them in same() is quadratic
        if tkeys and math.random(6) == 1 then k = random_value(4, false) end
        if type(k) == "table" or (k == k and k ~= nil) then t[k] = random_value(depth + 1, tkeys) end
      end
      return t
    end

    it("is plain encoding unless asked for", function()
      local v = {b = 1, a = {z = 1, y = 2}}
      assert.equal(encode(v), encode(v, nil, {canonical = false}))
      assert.equal(encode(v), encode(v, "root", {}))
      assert.equal(encode(v), encode(v, nil, nil))
    end)

    it("checks its options", function()
      assert.has_error(function() encode({}, nil, 1) end,
        "bad argument #3 to 'encode' (table expected, got number)")
      assert.has_error(function() encode({}, nil, {canonical = 1}) end,
        "bad argument #3 to 'encode' (option 'canonical' must be a boolean, got number)")
      assert.has_error(function() encode({}, nil, {canon = true}) end,
        "bad argument #3 to 'encode' (unknown option 'canon')")
      assert.has_error(function() encode({}, nil, {true}) end,
        "bad argument #3 to 'encode' (unknown option 'number')")
    end)

    it("sorts map entries by their encoded bytes, leaving arrays alone", function()
      assert.equal(hex("\130\161a\002\161b\001"), hex(canon({b = 1, a = 2})))
      assert.equal(hex("\147\003\001\002"), hex(canon({3, 1, 2})))
      -- by first byte: 01 (1) < 80 ({}) < a1 ("a") < c3 (true) < ca (1.5) < ff (-1)
      assert.equal(hex("\134\001\000\128\000\161a\000\195\000\202" .. pack(">f", 1.5) .. "\000\255\000"),
        hex(canon({[-1] = 0, [1.5] = 0, [true] = 0, a = 0, [{}] = 0, [1] = 0})))
      -- shorter strings sort by their header byte, so first: a0 < a1 < a2
      assert.equal(hex("\131\160\001\161b\002\162aa\003"), hex(canon({aa = 3, b = 2, [""] = 1})))
      -- keys that encode alike (tables) are ordered by their values
      assert.equal(hex("\130\128\001\128\002"), hex(canon({[{}] = 2, [{}] = 1})))
      -- nested maps are sorted inside, then sorted as values
      assert.equal(hex("\129\161k\130\161x\001\161y\002"), hex(canon({k = {y = 2, x = 1}})))
    end)

    it("matches the definition on random trees, maps of every size", function()
      math.randomseed(7)
      for _ = 1, 150 do check(random_value(0, true), nil) end
      for _ = 1, 150 do
        local v = random_value(0, true)
        check(v, oracle(v))
      end
      for _, n in ipairs{15, 16, 17, 33, 100, 1000, 65536} do
        local t = {}
        for i = 1, n do
          if i % 3 == 0 then t["key" .. i] = i elseif i % 3 == 1 then t[i * 7919 - 5e5] = {i} else t[i + 0.5] = "v" end
        end
        local s = check(t, oracle(t))
        if n == 65536 then assert.equal("\223", s:sub(1, 1)) end
      end
    end)

    it("does not depend on insertion history", function()
      local keys = {}
      for i = 1, 200 do keys[i] = "k" .. i end
      for i = 1, 50 do keys[#keys + 1] = i * 3 end
      for i = 1, 20 do keys[#keys + 1] = i + 0.25 end
      keys[#keys + 1] = true
      local a, b = {}, {}
      for i, k in ipairs(keys) do a[k] = i end
      for i = 1, 5000 do b[-i] = i; b["tmp" .. i] = i end
      for i = #keys, 1, -1 do b[keys[i]] = i end
      for i = 1, 5000 do b[-i] = nil; b["tmp" .. i] = nil end
      assert.not_equal(encode(a), encode(b))  -- next order differs
      assert.equal(hex(canon(a)), hex(canon(b)))
      assert.equal(hex(oracle(a)), hex(canon(b)))
    end)

    it("numbers tables in the canonical order: shared tables and cycles", function()
      local s = {1}
      -- s first met under "a": table 1; the REF under "z" points to it
      check({z = s, a = s}, "\199\010\001\130\161a\145\001\161z\212\002\001")
      local c = {}
      c.self, c.kid = c, {up = c}
      check(c, oracle(c))
      math.randomseed(11)
      for _ = 1, 200 do
        -- scalar keys, references anywhere among values
        local pool = {}
        for i = 1, 6 do pool[i] = {} end
        for _, t in ipairs(pool) do
          for _ = 1, math.random(0, 5) do
            local k = ({"a", "b", "c", 1, 2, 2.5, true, "zz"})[math.random(8)]
            t[k] = math.random(3) == 1 and math.random(100) or pool[math.random(#pool)]
          end
        end
        check(pool[1], oracle(pool[1]))
        check(pool, oracle(pool))
      end
    end)

    it("handles shared tables used as keys and as values in other positions", function()
      local s1, s2 = {name = "sword"}, {name = "shield"}
      local v = {a = s2, [s1] = s2, [s2] = s1, list = {s1, s2}, [1] = {s2}, ["\255"] = s1}
      local bytes = check(v, oracle(v))
      local d = decode(bytes)
      local ds1, ds2 = d.list[1], d.list[2]
      assert.equal(ds2, d.a)
      assert.equal(ds2, d[ds1])
      assert.equal(ds1, d[ds2])
      assert.equal(ds2, d[1][1])
      assert.equal(ds1, d["\255"])
      -- expected: entries ordered 01, 81.. / REF keys, "a", "list", "\xff";
      -- table keys sort by their bytes when the map begins
      local s = {}
      local w = {[s] = 1, x = s}
      assert.equal(hex("\215\001\130\128\001\161x\212\002\001"), hex(check(w)))
      local k1, k2 = {"k1"}, {"k2"}
      -- k2 is known (table 1) before the set: its key is a REF, after k1's 91..
      local u = {a = k2, set = {[k1] = true, [k2] = true}}
      assert.equal(hex("\199\021\001\130\161a\145\162k2\163set\130\145\162k1\195\212\002\001\195"),
        hex(check(u)))
      local t = {}
      t[t] = t
      check(t, "\199\007\001\129\212\002\000\212\002\000")
    end)

    it("is stable through decode for a corpus of graphs with table keys", function()
      math.randomseed(99)
      for _ = 1, 300 do
        local pool = {}
        for i = 1, 7 do pool[i] = {i} end  -- distinct contents: no two keys alike
        for _, t in ipairs(pool) do
          for _ = 1, math.random(0, 4) do
            local r = math.random(4)
            local k = r == 1 and pool[math.random(#pool)] or ({"a", 2, 3.5, false})[r]
            t[k] = math.random(2) == 1 and pool[math.random(#pool)] or "v"
          end
        end
        check(pool[1], oracle(pool[1]))
        local v = {pool[3], [pool[2]] = pool[4], x = pool}
        check(v, oracle(v))
      end
    end)

    it("gives the same bytes in other processes, whatever the build order", function()
      local build = [==[
        local variant = ...
        local junk = {}
        -- Insert the pairs in an order and with a history that depend on
        -- the variant; tables are also allocated in another order.
        local function fill(t, pairs_)
          local n = #pairs_
          if variant == 2 then
            for i = 1, 3 * n + 20 do t["\0junk" .. i] = i; junk[#junk + 1] = {} end
            for i = n, 1, -1 do t[pairs_[i][1]] = pairs_[i][2] end
            for i = 1, 3 * n + 20 do t["\0junk" .. i] = nil end
          else
            for i = 1, n do t[pairs_[i][1]] = pairs_[i][2] end
          end
          return t
        end
        local function tables(n)
          local list = {}
          for i = 1, n do junk[#junk + 1] = {} ; list[variant == 2 and n + 1 - i or i] = {} end
          return list
        end
        local values = {}
        local p = {}
        for i = 1, 300 do p[#p + 1] = {"k" .. i, i} end
        for i = -50, 50 do p[#p + 1] = {i, -i} end
        for i = 1, 20 do p[#p + 1] = {i + 0.5, "f"} end
        p[#p + 1] = {true, 1}
        p[#p + 1] = {false, 0}
        values[1] = fill({}, p)
        local vars = {}
        for i = 1, 40 do
          vars[i] = fill({}, {{"x", i / 4}, {"y", -i}, {"name", "item-" .. i},
            {"tags", {"a", "b"}}, {"hp", i * 10}, {"alive", i % 2 == 0}})
        end
        values[2] = vars
        local t = tables(2)
        local s1, s2 = fill(t[1], {{"name", "sword"}, {"w", 3}}), fill(t[2], {{"name", "shield"}})
        values[3] = fill({}, {{"a", s1}, {"b", s2}, {"list", {s2, s1, s2}}, {s1, s2}, {s2, s1},
          {"\xff", s2}, {1, {s1}}, {2.5, s1}})
        local c = {}
        fill(c, {{"self", c}, {"kids", {c, fill({}, {{"parent", c}, {"n", 1}})}}, {c, "me"}})
        values[4] = c
        local ks = tables(30)
        local set, byname = {}, {}
        for i = 1, 30 do fill(ks[i], {{"id", i}, {"tag", "t" .. i % 3}}) end
        local sp, bp = {}, {}
        for i = 1, 30 do sp[i] = {ks[i], i % 2 == 0}; bp[i] = {"n" .. i, ks[(i * 7) % 30 + 1]} end
        values[5] = {set = fill(set, sp), byname = fill(byname, bp), first = ks[30], all = ks}
        values[6] = fill({}, {{fill({}, {{"x", 1}, {"y", 2}}), "a"}, {{1, 2}, "b"}, {{}, "c"}})
        return values
      ]==]
      local child = [[
        local instate = require "instate"
        local build = require("instate.compat").load(...)
        local values = build(tonumber((select(2, ...))))
        for _, v in ipairs(values) do
          local c, p = instate.encode(v, nil, {canonical = true}), instate.encode(v)
          io.write((c:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)), " ",
            (p:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)), "\n")
        end
      ]]
      local function run(variant)
        local out, ok = helpers.run_lua(child, build, tostring(variant))
        assert(ok, out)
        local canon_hex, plain_hex = {}, {}
        for c, p in out:gmatch("(%x+) (%x+)\n") do
          canon_hex[#canon_hex + 1], plain_hex[#plain_hex + 1] = c, p
        end
        assert.equal(6, #canon_hex, out)
        return canon_hex, plain_hex
      end
      local c1, p1 = run(1)
      local c2, p2 = run(2)
      local plain_differs = 0
      local here = compat.load(build)(1)
      for i = 1, #c1 do
        assert.equal(c1[i], c2[i], "value " .. i .. " differs between processes")
        local s = canon(here[i])
        assert.equal(c1[i], (s:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end)))
        check(here[i])
        if p1[i] ~= p2[i] then plain_differs = plain_differs + 1 end
      end
      -- next order does differ between the two: the check above has teeth
      assert.truthy(plain_differs >= 3, plain_differs .. " plain encodings differ")
      assert.equal(oracle(here[1]), canon(here[1]))
      assert.equal(oracle(here[2]), canon(here[2]))
      for i = 3, #here do assert.equal(hex(oracle(here[i])), hex(canon(here[i]))) end
    end)

    it("raises the same errors, and the codec stays usable", function()
      local ok, err = pcall(canon, {items = {1, 2, {on_use = print}}}, "inventory")
      assert.is_false(ok)
      assert.equal("cannot store a function at inventory.items[3].on_use", err)
      ok, err = pcall(canon, {x = {[io.stdout] = 1}}, "v")
      assert.equal("cannot store a userdata as a key at v.x", err)
      -- Reached first through "a" in canonical order, the shared chain is
      -- too deep there, whatever order next gives (pass 1 or pass 2 raises).
      local deep = {}
      for _ = 1, 195 do deep = {deep} end
      local v = {b = deep, a = {{{{{{deep}}}}}}}
      ok, err = pcall(canon, v)
      assert.is_false(ok)
      assert.equal("value nested deeper than 200 levels at value.a" .. ("[1]"):rep(199), err)
      local s = {1}
      check({s, {x = s, y = {[s] = s}}})
      check({b = 1, a = 2}, "\130\161a\002\161b\001")
    end)

    it("stays exact, and fast, for table keys nested in table keys", function()
      -- each level has two table keys: probing them all would double the
      -- work per level; past a few levels they keep next order
      local shared = {"shared"}
      local k = {shared}
      for i = 1, 150 do k = {[k] = i, [{i}] = shared} end
      local v = {k, shared}
      local t0 = os.clock()
      local s = canon(v)
      assert.truthy(os.clock() - t0 < 2, "took " .. (os.clock() - t0) .. " s")
      local ok, why = same(v, decode(s))
      assert(ok, why)
      -- shallow nesting is still probed: bytes do not depend on history
      local function build(rev)
        local a, b = {"a"}, {"b"}
        local inner = rev and {[b] = 2, [a] = 1} or {[a] = 1, [b] = 2}
        local outer = rev and {[{x = b}] = inner, [inner] = a} or {[inner] = a, [{x = b}] = inner}
        return {outer, a, b}
      end
      assert.equal(hex(canon(build(false))), hex(canon(build(true))))
      check(build(false))
    end)

    it("round-trips maps whose table keys encode alike", function()
      -- two keys with equal bytes when their map begins, told apart only
      -- by a later reference: their order follows next (documented)
      local k1, k2 = {}, {}
      local v = {m = {[k1] = 1, [k2] = 1}, z = k1}
      local d = decode(canon(v))
      local ok, why = same(v, d)
      assert(ok, why)
      assert.equal(1, d.m[d.z])
    end)

    it("orders a map in parts when the Lua stack left cannot hold its keys", function()
      -- the second pass keeps a map's keys in stack slots; with the stack
      -- almost full (a million values unpacked below the call), it takes
      -- them in parts, one next walk each, and gives the same bytes
      local shared = {"s"}
      local v = {}
      for i = 1, 20000 do v["k" .. i] = {i, shared, {[shared] = i}} end
      local want = check(v)
      local fill = {}
      for i = 1, 1000000 do fill[i] = true end
      local got = coroutine.wrap(function()
        local lo, hi = 1, #fill
        while lo < hi do
          local mid = math.floor((lo + hi + 1) / 2)
          if pcall(compat.unpack, fill, 1, mid) then lo = mid else hi = mid - 1 end
        end
        local function below(f, ...) local r = f(); return r end  -- no tail call
        return below(function() return canon(v) end, compat.unpack(fill, 1, lo - 5000))
      end)()
      bytes_equal(want, got, "canonical bytes with the stack nearly full")
    end)

    it("keeps working when the scratch memory shrinks after a spike", function()
      local big = {}
      for i = 1, 20000 do big["k" .. i] = {i, {x = i, y = -i}} end
      local shared = {}
      big.s1, big.s2 = shared, shared
      local s1 = canon(big)
      for i = 1, 200 do assert.equal("\129\161k" .. encode(i), canon({k = i})) end
      assert.equal(s1, canon(big))
      check(big)
    end)
  end)


  -- The collector runs finalizers from any allocation, also one made by
  -- the codec half-way through a value. A finalizer that encodes, decodes
  -- or writes a record must neither see nor disturb the work it
  -- interrupted (docs/DESIGN.md, "Codec"). Each case runs in a child
  -- process: before the codec took care of this, these values came out
  -- undecodable, and the heap was corrupted.
  describe("finalizers that encode, decode or write", function()
    local helpers = require "helpers"

    -- What every child starts with. graph_value(n): maps holding shared
    -- tables as keys and values, so that canonical encoding takes its
    -- second, id-ordering pass over each map. finalizers(count, work):
    -- that many garbage objects whose finalizer calls work(i) (an error in
    -- a finalizer is only a warning: it is kept in `problems`). Results are
    -- checked after the run, with the collector stopped, by comparing
    -- canonical bytes (one table key per map: exact, FORMAT.md section 1).
    local prelude = [=[
      local instate = require "instate"
      local encode, decode = instate.encode, instate.decode
      local function canon(v) return encode(v, nil, {canonical = true}) end
      local function graph_value(n, salt)
        local shared, t = {}, {}
        for i = 1, n do shared[i] = {id = i, name = salt .. i, tags = {"a", "b", i}} end
        for i = 1, n do
          t["k" .. i] = {ref = shared[i], next = shared[i % n + 1], [shared[i]] = i, n = i}
        end
        t.all = shared
        return t
      end
      local problems = {}
      local function finalizers(count, work)
        for i = 1, count do
          local function gc()
            local ok, err = pcall(work, i)
            if not ok then problems[#problems + 1] = "finalizer raised: " .. tostring(err) end
          end
          -- 5.1 and LuaJIT run __gc on userdata only: newproxy makes one
          if newproxy then getmetatable(newproxy(true)).__gc = gc
          else setmetatable({}, {__gc = gc}) end
        end
      end
      local function expect(want, s, what)
        local v, msg = decode(s)
        if v == nil then
          problems[#problems + 1] = what .. ": " .. tostring(msg)
        elseif canon(v) ~= want then
          problems[#problems + 1] = what .. ": decodes to another value"
        end
      end
      local function report(calls, min_calls)
        if calls < min_calls then problems[#problems + 1] = "only " .. calls .. " finalizers ran" end
        if #problems == 0 then print("ok " .. calls) return end
        for i = 1, math.min(#problems, 10) do print(problems[i]) end
        print(#problems .. " problems")
      end
    ]=]

    local function child(code, ...)
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/child.lua", prelude .. code)
      local args = {}
      for i = 1, select("#", ...) do args[i] = helpers.sh_quote(select(i, ...)) end
      local p = io.popen("timeout 120 " .. helpers.lua_cmd() .. " " .. helpers.sh_quote(dir .. "/child.lua")
        .. " " .. table.concat(args, " ") .. " 2>&1")
      local out = p:read("*a")
      local ok, how, status = p:close()
      assert(ok, "child failed (" .. tostring(how) .. " " .. tostring(status) .. "):\n" .. out)
      assert.truthy(out:find("^ok %d+\n$"), out)
    end

    it("leave canonical and plain encodings in progress intact", function()
      child([=[
        local dir = ...
        local v, mine = graph_value(40, "v"), graph_value(3, "fin")
        local want, mine_want = canon(v), canon(mine)
        local store = assert(instate.open(dir))
        local fin_ns = store:namespace("fin")
        local got, fin_got, calls = {}, {}, 0
        local function work(i)
          calls = calls + 1
          local kind = i % 3
          if kind == 0 then
            fin_got[#fin_got + 1] = encode(mine)
          elseif kind == 1 then
            fin_got[#fin_got + 1] = canon(mine)
          else
            assert(fin_ns:set("fin" .. i % 7, mine))
            fin_got[#fin_got + 1] = instate.encode(fin_ns:get("fin" .. i % 7))
          end
        end
        for round = 1, 50 do
          finalizers(60, work)
          got[#got + 1] = canon(v)
          got[#got + 1] = encode(v)
          got[#got + 1] = encode(v, "root", {canonical = true})
        end
        collectgarbage("collect")
        collectgarbage("stop")
        for i, s in ipairs(got) do
          if i % 3 ~= 2 and s ~= want then problems[#problems + 1] = "canonical encode " .. i .. " differs" end
          expect(want, s, "encode " .. i)
        end
        for i, s in ipairs(fin_got) do expect(mine_want, s, "finalizer's encode " .. i) end
        store:close()
        report(calls, 2500)
      ]=], helpers.tmpdir())
    end)

    it("leave records written by ns:set and save_all intact", function()
      child([=[
        local dir = ...
        local mine = graph_value(3, "fin")
        local calls = 0
        local function work()
          calls = calls + 1
          encode(mine, nil, {canonical = true})
          encode(mine)
        end
        local store = assert(instate.open(dir .. "/a"))
        local ns = store:namespace("vals")
        local v = graph_value(30, "v")
        local want = canon(v)
        for round = 1, 30 do
          finalizers(60, work)
          assert(ns:set("v" .. round, v))
        end
        -- defstate's save_all encodes canonically in its write transaction
        instate.setup(dir .. "/b")
        local vars = {}
        for i = 1, 40 do vars[i] = instate.defstate("var" .. i, graph_value(3 + i % 5, "d")) end
        for round = 1, 20 do
          finalizers(200, work)
          for i = 1, 40 do vars[i]:set(graph_value(3 + (i + round) % 5, "r" .. round)) end
          assert(instate.save_all())
        end
        instate.teardown()
        collectgarbage("collect")
        collectgarbage("stop")
        for round = 1, 30 do expect(want, instate.encode(ns:get("v" .. round)), "record v" .. round) end
        store:close()
        instate.setup(dir .. "/b")
        for i = 1, 40 do
          local var = instate.defstate("var" .. i, false)
          if not var:saved() then problems[#problems + 1] = "var" .. i .. " not saved" end
          expect(canon(graph_value(3 + (i + 20) % 5, "r20")), encode(var:get()), "saved var" .. i)
        end
        instate.teardown()
        report(calls, 4000)
      ]=], helpers.tmpdir())
    end)

    it("leave a decoding in progress intact, and decode themselves", function()
      child([=[
        local v = graph_value(200, "v")
        local plain = {}
        for i = 1, 300 do plain["key" .. i] = {name = "name" .. i, i, "v" .. i} end
        local s, ps = encode(v), encode(plain)
        local want, pwant = canon(v), canon(plain)
        -- the finalizers' strings share the decoder's string cache with
        -- the outer decodes: the same keys and some new strings
        local mine = {x = "key1", y = {"name1", "v2", "fresh-string"}, z = {k1 = "v1", n = "name7"}}
        local mine_s, mine_want = encode(mine), canon(mine)
        local got, fin_got, calls = {}, {}, 0
        for round = 1, 40 do
          finalizers(100, function()
            calls = calls + 1
            fin_got[#fin_got + 1] = decode(mine_s)
          end)
          got[#got + 1] = decode(s)
          got[#got + 1] = decode(ps)
        end
        collectgarbage("collect")
        collectgarbage("stop")
        for i, d in ipairs(got) do
          if canon(d) ~= (i % 2 == 1 and want or pwant) then
            problems[#problems + 1] = "decode " .. i .. " gives another value"
          end
        end
        for i, d in ipairs(fin_got) do
          if canon(d) ~= mine_want then problems[#problems + 1] = "finalizer's decode " .. i .. " differs" end
        end
        report(calls, 3500)
      ]=])
    end)
  end)
end)
