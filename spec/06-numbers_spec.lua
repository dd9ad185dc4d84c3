--- Numbers on every Lua (docs/FORMAT.md section 1, README "Lua versions"):
-- integers read exactly, or refused by name, never as a nearby double. On
-- 5.3 and 5.4 every 64-bit integer is exact; where numbers are doubles an
-- integer beyond 2^53 reads on LuaJIT as int64_t/uint64_t cdata of the
-- exact value, and on 5.1 and 5.2 is refused naming its path. Integral
-- floats: what a 5.4 `1.0` becomes on the others.
local instate = require "instate"
local compat = require "instate.compat"
local helpers = require "helpers"

local INTEGERS = _VERSION == "Lua 5.3" or _VERSION == "Lua 5.4"
local LUAJIT = jit ~= nil

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- MessagePack: uint64 2^53 + 1, int64 -(2^53 + 1), uint64 2^53, int64 -2^53
local BIG = "\207\0\32\0\0\0\0\0\1"
local NEG_BIG = "\211\255\223\255\255\255\255\255\255"
local EDGE = "\207\0\32\0\0\0\0\0\0"
local NEG_EDGE = "\211\255\224\0\0\0\0\0\0"
-- a Steam id (2^56 + 2^52 + 2^32 + 22202), uint64 max, int64 min
local STEAM = "\207\1\16\0\1\0\0\86\186"
local UMAX = "\207\255\255\255\255\255\255\255\255"
local IMIN = "\211\128\0\0\0\0\0\0\0"

describe("integers beyond 2^53", function()
  it("read exactly up to 2^53 on every Lua", function()
    assert.are.equal(2 ^ 53, instate.decode(EDGE))
    assert.are.equal(-2 ^ 53, instate.decode(NEG_EDGE))
    assert.are.equal("number", type(instate.decode(EDGE)))
    assert.are.equal("9007199254740992", ("%.0f"):format(instate.decode(EDGE)))
    assert.are.equal(hex(EDGE), hex(instate.encode(instate.decode(EDGE))))
    assert.are.equal(hex(NEG_EDGE), hex(instate.encode(instate.decode(NEG_EDGE))))
  end)

  if INTEGERS then
    it("read exactly past 2^53 where Lua has 64-bit integers", function()
      assert.are.equal("9007199254740993", tostring(instate.decode(BIG)))
      assert.are.equal("-9007199254740993", tostring(instate.decode(NEG_BIG)))
      assert.are.equal("76561197960287930", tostring(instate.decode(STEAM)))
      -- uint64 above 2^63 - 1: the integer with the same 64 bits
      assert.are.equal("-1", tostring(instate.decode(UMAX)))
      assert.are.equal(hex(STEAM), hex(instate.encode(instate.decode(STEAM))))
      assert.are.equal(hex(IMIN), hex(instate.encode(instate.decode(IMIN))))
    end)
  elseif LUAJIT then
    local ffi = require "ffi"
    -- LuaJIT's 64-bit literals (5LL, 5ULL) do not parse on the other Luas
    local function ll(src) return assert(compat.load("return " .. src))() end

    it("read on LuaJIT as int64_t, or uint64_t above 2^63 - 1, of the exact value", function()
      assert.is_true(compat.int64)
      local cases = {
        { BIG, "int64_t", "9007199254740993LL" },
        { NEG_BIG, "int64_t", "-9007199254740993LL" },
        { STEAM, "int64_t", "76561197960287930LL" },
        { IMIN, "int64_t", "-9223372036854775808LL" },
        { "\207\127\255\255\255\255\255\255\255", "int64_t", "9223372036854775807LL" },
        { "\207\128\0\0\0\0\0\0\0", "uint64_t", "9223372036854775808ULL" },
        { UMAX, "uint64_t", "18446744073709551615ULL" },
      }
      for _, c in ipairs(cases) do
        local v = instate.decode(c[1])
        assert.are.equal("cdata", type(v))
        assert.is_true(ffi.istype(c[2], v), c[3])
        assert.are.equal(c[3], tostring(v))
        assert.are.equal(hex(c[1]), hex(instate.encode(v)))
      end
      local t = instate.decode("\130\162id" .. STEAM .. "\164list\146\1" .. UMAX)
      assert.are.equal(ll("76561197960287930LL"), t.id)
      assert.are.equal(ll("0xffffffffffffffffULL"), t.list[2])
    end)

    it("int64_t and uint64_t cdata are stored as the integer of the same value", function()
      assert.are.equal(hex(STEAM), hex(instate.encode(ll("76561197960287930LL"))))
      assert.are.equal(hex(STEAM), hex(instate.encode(ll("76561197960287930ULL"))))
      assert.are.equal(hex(UMAX), hex(instate.encode(ll("0xffffffffffffffffULL"))))
      assert.are.equal("ff", hex(instate.encode(ll("-1LL"))))
      assert.are.equal("cdffff", hex(instate.encode(ffi.new("uint64_t", 65535))))
      -- within 2^53 a cdata reads back as a number
      local v = instate.decode(instate.encode(ll("5LL")))
      assert.are.equal("number", type(v))
      assert.are.equal(5, v)
      -- canonical order takes them like any integer
      assert.are.equal("82a161cf01100001000056baa16201",
        hex(instate.encode({ b = 1, a = ll("76561197960287930LL") }, nil, { canonical = true })))
    end)

    it("other cdata, and cdata keys, are refused naming the path", function()
      assert.has_error(function() instate.encode({ a = { ffi.new("int[2]") } }) end,
        "cannot store a cdata other than int64_t or uint64_t at value.a[1]")
      assert.has_error(function() instate.encode({ x = { [ll("5LL")] = 1 } }, "save") end,
        "cannot store a cdata as a key (cdata keys compare by identity) at save.x")
      -- and so is a map key beyond 2^53 when read: a cdata key could not be looked up
      local v, msg, code = instate.decode("\129\161t\129" .. STEAM .. "\1")
      assert.is_nil(v)
      assert.are.equal("corrupt MessagePack at byte 4: an integer map key beyond 2^53 at"
        .. " value.t, which LuaJIT holds as cdata, compared by identity", msg)
      assert.are.equal("CORRUPT", code)
    end)

    it("need require \"instate\": instate.core alone refuses them, by name", function()
      local out, ok = helpers.run_lua([[
        local core = require "instate.core"
        print(pcall(core.encode, {id = loadstring("return 5LL")()}))
        print(core.decode("\207\1\16\0\1\0\0\86\186"))
      ]])
      assert(ok, out)
      assert.are.equal("false\tcannot store a cdata (int64_t and uint64_t need require \"instate\")"
        .. " at value.id\nnil\tcorrupt MessagePack at byte 0: an integer beyond 2^53 at value,"
        .. " which this Lua's numbers cannot hold exactly\tCORRUPT\n", out)
    end)

    it("in a store, round-trip exactly", function()
      local dir = helpers.tmpdir() .. "/s"
      local store = assert(instate.open(dir))
      local ns = store:namespace("n")
      assert(ns:set("id", { steam = ll("76561197960287930LL"), max = ll("0xffffffffffffffffULL") }))
      local t = ns:get("id")
      assert.are.equal(ll("76561197960287930LL"), t.steam)
      assert.are.equal(ll("0xffffffffffffffffULL"), t.max)
      store:close()
    end)
  else
    it("are refused with CORRUPT and a message naming the byte and the path", function()
      local cases = {
        { BIG, "byte 0: an integer beyond 2^53 at value," },
        { NEG_BIG, "byte 0: an integer beyond 2^53 at value," },
        { "\145" .. BIG, "byte 1: an integer beyond 2^53 at value[1]," },
        { "\130\161a\1\164list\146\1" .. STEAM, "byte 11: an integer beyond 2^53 at value.list[2]," },
        { "\129\163a b\129\1" .. UMAX, "byte 7: an integer beyond 2^53 at value[\"a b\"][1]," },
        { "\129\161t\129" .. STEAM .. "\1", "byte 4: an integer map key beyond 2^53 at value.t," },
      }
      for _, c in ipairs(cases) do
        local v, msg, code = instate.decode(c[1])
        assert.is_nil(v)
        assert.are.equal("corrupt MessagePack at " .. c[2]
          .. " which this Lua's numbers cannot hold exactly", msg)
        assert.are.equal("CORRUPT", code)
      end
    end)

    it("in a store, reads as nil, a message naming the key and the path, and CORRUPT", function()
      local dir = helpers.tmpdir() .. "/s"
      local store = assert(instate.open(dir))
      assert(store:namespace("n"):set("id", 1))
      store:close()
      helpers.put_raw(dir, "n", "id", helpers.record_bytes("id", "\129\165steam" .. BIG))
      store = assert(instate.open(dir))
      local v, msg, code = store:namespace("n"):get("id")
      assert.is_nil(v)
      assert.matches("^corrupt value at key 'id': .*byte 7: an integer beyond 2%^53 at"
        .. " value%.steam, which", msg)
      assert.are.equal("CORRUPT", code)
      store:close()
    end)
  end

  if not INTEGERS then
    it("an integral double beyond 2^53 is written as the float it is, and reads back", function()
      for _, x in ipairs({ 2 ^ 53 + 2, -(2 ^ 53 + 2), 2 ^ 60, 2 ^ 63, 1e300 }) do
        local bytes = instate.encode(x)
        assert.matches("^c[ab]", hex(bytes))
        assert.are.equal(x, instate.decode(bytes))
        assert.are.equal("number", type(instate.decode(bytes)))
      end
      assert.are.equal("cb4340000000000001", hex(instate.encode(2 ^ 53 + 2)))
      assert.are.equal("cf0020000000000000", hex(instate.encode(2 ^ 53)))
    end)
  end
end)

describe("integral floats", function()
  -- 1.0, -0.0, 2.5 and 2^53 as 5.4 writes them: float32 each
  local ONE, NEG_ZERO, HALF, F53 = "\202\63\128\0\0", "\202\128\0\0\0", "\202\64\32\0\0",
    "\202\90\0\0\0"

  it("a 1.0 written by 5.4 reads as 1 everywhere and is written back as this Lua holds it",
    function()
      local v = instate.decode(ONE)
      assert.are.equal(1, v)
      if INTEGERS then
        assert.are.equal("float", math.type(v))
        assert.are.equal("ca3f800000", hex(instate.encode(v)))   -- still the float 1.0
      else
        -- no float subtype: an integral number is an integer, written as 01
        assert.are.equal("01", hex(instate.encode(v)))
        assert.are.equal("01", hex(instate.encode({ 1.0 })):sub(3))
        assert.are.equal("01", hex(instate.encode(instate.decode(F53) / 2 ^ 53)))
      end
    end)

  it("-0.0, fractions, infinities and NaN stay floats on every Lua", function()
    local z = instate.decode(NEG_ZERO)
    assert.are.equal(0, z)
    assert.is_true(1 / z < 0)
    assert.are.equal("ca80000000", hex(instate.encode(z)))
    assert.are.equal("ca40200000", hex(instate.encode(instate.decode(HALF))))
    assert.are.equal("ca7f800000", hex(instate.encode(1 / 0)))
    assert.are.equal("caff800000", hex(instate.encode(-1 / 0)))
    local nan = instate.decode(instate.encode(0 / 0))
    assert.is_true(nan ~= nan)
  end)

  it("2^53 written as a float by 5.4 reads as 2^53", function()
    assert.are.equal(2 ^ 53, instate.decode(F53))
    if INTEGERS then
      assert.are.equal("ca5a000000", hex(instate.encode(instate.decode(F53))))
    else
      assert.are.equal(hex(EDGE), hex(instate.encode(instate.decode(F53))))
    end
  end)
end)
