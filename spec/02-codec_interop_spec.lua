-- The codec against another MessagePack implementation (python3-msgpack),
-- both ways: python reads what we write, we read what python writes. On
-- every Lua: where numbers are doubles, what differs is what docs/FORMAT.md
-- says (integral numbers are integers; beyond 2^53 LuaJIT has int64_t and
-- uint64_t cdata, 5.1 and 5.2 refuse naming the path).
local instate = require "instate"
local compat = require "instate.compat"
local helpers = require "helpers"

local math_type = compat.math_type
local INTEGERS, INT64 = compat.integers, compat.int64
-- LuaJIT's 64-bit literals (5LL) do not parse on the other Luas
local function ll(src) return assert(compat.load("return " .. src))() end

-- The largest and smallest integers this Lua writes: 64-bit (5.3, 5.4,
-- LuaJIT cdata) or +-2^53; and how python must see them.
local MAXI, MINI, PY_MAXMIN = 2 ^ 53, -2 ^ 53, "2**53, -2**53"
if INTEGERS then
  MAXI, MINI, PY_MAXMIN = math.maxinteger, math.mininteger, "9223372036854775807, -9223372036854775808"
elseif INT64 then
  MAXI, MINI = ll("9223372036854775807LL"), ll("-9223372036854775807LL - 1")
  PY_MAXMIN = "9223372036854775807, -9223372036854775808"
end
-- integral floats: floats on 5.3/5.4, integers where numbers are doubles
local PY_INTEGRAL = INTEGERS and "1.0, 16777217.0" or "1, 16777217"

local PYTHON = "/usr/bin/python3"

local write = helpers.write_file

local function read(path)
  return assert(helpers.read_file(path))
end

-- Run a python script; returns its output, failing the spec with it if
-- python exits nonzero.
local function python(dir, script)
  local path = dir .. "/script.py"
  write(path, script)
  local out, ok = helpers.shell(PYTHON .. " " .. helpers.sh_quote(path) .. " " .. helpers.sh_quote(dir) .. " 2>&1")
  assert(ok, "python failed:\n" .. out)
  return out
end

describe("codec interop with python3-msgpack", function()
  local have = helpers.execute(PYTHON .. " -c 'import msgpack' 2>/dev/null")
  assert(have, "python3-msgpack is needed: apt-get install python3-msgpack")

  it("python reads every plain value we write, strictly (raw=False)", function()
    local dir = helpers.tmpdir()
    local corpus = {
      0, 1, -1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296,
      MAXI, MINI, -32, -33, -128, -129, -32768, -32769,
      -2147483648, -2147483649,
      1.5, 0.1, helpers.neg_zero, math.huge, -math.huge, 1.0, 16777217.0,
      "", "héllo wörld", ("a"):rep(300), ("b"):rep(70000), "\255\000bin", "\237\160\128",
      true, false,
      {}, {1, 2, 3}, {a = 1, b = {c = {}}}, {[1] = "x", [3] = "z"}, {[true] = 1},
      {[1.5] = 2}, {[-7] = "neg", [2^40] = "big"}, {{1, {2, {3}}}},
    }
    local big = {}
    for i = 1, 70000 do big[i] = i end
    corpus[#corpus + 1] = big
    write(dir .. "/ours.bin", instate.encode(corpus))
    write(dir .. "/nil.bin", instate.encode(nil))
    write(dir .. "/nan.bin", instate.encode(0/0))
    local out = python(dir, ([==[
import math, sys, msgpack
d = sys.argv[1]
v = msgpack.unpackb(open(d + "/ours.bin", "rb").read(), raw=False, strict_map_key=False)
expected = [
    0, 1, -1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296,
    PY_MAXMIN, -32, -33, -128, -129, -32768, -32769,
    -2147483648, -2147483649,
    1.5, 0.1, -0.0, math.inf, -math.inf, PY_INTEGRAL,
    "", "héllo wörld", "a" * 300, "b" * 70000, b"\xff\x00bin", b"\xed\xa0\x80",
    True, False,
    {}, [1, 2, 3], {"a": 1, "b": {"c": {}}}, {1: "x", 3: "z"}, {True: 1},
    {1.5: 2}, {-7: "neg", 2**40: "big"}, [[1, [2, [3]]]],
    list(range(1, 70001)),
]
assert len(v) == len(expected), (len(v), len(expected))
for i, (a, b) in enumerate(zip(v, expected)):
    assert a == b and type(a) is type(b), (i, a, b)
    if isinstance(b, float):
        assert math.copysign(1, a) == math.copysign(1, b), (i, a)
assert isinstance(v[33], bytes) and isinstance(v[29], str)
assert msgpack.unpackb(open(d + "/nil.bin", "rb").read()) is None
assert math.isnan(msgpack.unpackb(open(d + "/nan.bin", "rb").read()))
print("python ok", len(v))
]==]):gsub("PY_MAXMIN", PY_MAXMIN):gsub("PY_INTEGRAL", PY_INTEGRAL))
    assert.truthy(out:find("python ok 45", 1, true), out)
  end)

  it("we read every width python writes", function()
    local dir = helpers.tmpdir()
    python(dir, [==[
import sys, msgpack
d = sys.argv[1]
def put(name, value, **kw):
    open(d + "/" + name + ".bin", "wb").write(msgpack.packb(value, **kw))
ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1,
        -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63]
put("ints", ints)
# 2**64-1 reads as the Lua integer with the same bits, -1, and is written back so
put("ints_as_lua", [-1 if i == 2**64 - 1 else i for i in ints])
put("ints53", [i for i in ints if abs(i) <= 2**53])
put("float64", [1.5, 0.1, -0.0, float("inf"), 1.0])
put("float32", [1.5, 0.25, -2.0], use_single_float=True)
put("strs", ["", "a" * 31, "b" * 32, "c" * 255, "d" * 256, "e" * 65535, "f" * 65536, "héllo"])
put("bins", [b"", b"\x00" * 255, b"\x01" * 256, b"\x02" * 65536])
put("intkeys", {1: "a", 2: "b", -5: "neg", 2**40: "big"}, strict_types=False)
put("boolkeys", {True: "t", False: "f"})
put("floatkeys", {1.5: "x", -0.25: "y"})
put("nested", [[1, [2, [3, []]]], {"k": [{"deep": None}]}])
put("array16", list(range(20)))
put("array32", list(range(70000)))
put("map16", {"k%d" % i: i for i in range(20)})
put("map32", {"k%d" % i: i for i in range(70000)})
put("tuple", (1, "two", 3.0))
put("none", None)
]==])
    local function get(name)
      local v, msg = instate.decode(read(dir .. "/" .. name .. ".bin"))
      assert(msg == nil, msg)
      return v
    end
    local ints, want
    if INTEGERS or INT64 then
      ints = get("ints")
      -- 2**64-1: the integer with the same bits on 5.3/5.4, uint64_t on LuaJIT
      want = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296,
              MAXI, INTEGERS and -1 or ll("0xffffffffffffffffULL"), -1, -32, -33, -128, -129,
              -32768, -32769, -2147483648, -2147483649, MINI}
    else
      local v, msg, code = instate.decode(read(dir .. "/ints.bin"))
      assert.is_nil(v)
      assert.equal("corrupt MessagePack at byte 35: an integer beyond 2^53 at value[11], which"
        .. " this Lua's numbers cannot hold exactly", msg)
      assert.equal("CORRUPT", code)
      ints = get("ints53")
      want = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296,
              -1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649}
    end
    assert.equal(#want, #ints)
    for i, v in ipairs(want) do
      if type(v) == "number" then
        assert.equal("integer", math_type(ints[i]))
      else
        assert.equal(tostring(v), tostring(ints[i]))  -- int64_t "...LL", uint64_t "...ULL"
      end
      assert.equal(v, ints[i])
    end
    local f64 = get("float64")
    assert.same({1.5, 0.1, helpers.neg_zero, math.huge, 1.0}, f64)
    assert.equal(-math.huge, 1 / f64[3])
    -- no float subtype where numbers are doubles: an integral number is an integer
    assert.equal(INTEGERS and "float" or "integer", math_type(f64[5]))
    local f32 = get("float32")
    assert.same({1.5, 0.25, -2.0}, f32)
    assert.equal(INTEGERS and "float" or "integer", math_type(f32[3]))
    assert.same({"", ("a"):rep(31), ("b"):rep(32), ("c"):rep(255), ("d"):rep(256),
                 ("e"):rep(65535), ("f"):rep(65536), "héllo"}, get("strs"))
    assert.same({"", ("\0"):rep(255), ("\1"):rep(256), ("\2"):rep(65536)}, get("bins"))
    assert.same({[1] = "a", [2] = "b", [-5] = "neg", [2^40] = "big"}, get("intkeys"))
    assert.same({[true] = "t", [false] = "f"}, get("boolkeys"))
    assert.same({[1.5] = "x", [-0.25] = "y"}, get("floatkeys"))
    assert.same({{1, {2, {3, {}}}}, {k = {{}}}}, get("nested"))
    local a16, a32 = get("array16"), get("array32")
    assert.equal(20, #a16)
    assert.equal(19, a16[20])
    assert.equal(70000, #a32)
    assert.equal(69999, a32[70000])
    local m16, m32 = get("map16"), get("map32")
    assert.equal(19, m16.k19)
    assert.equal(69999, m32.k69999)
    local n = 0
    for _ in pairs(m32) do n = n + 1 end
    assert.equal(70000, n)
    assert.same({1, "two", 3.0}, get("tuple"))
    assert.is_nil(get("none"))
    -- and what we decoded, we write back byte for byte where python was shortest
    -- (on LuaJIT 2**64-1 is a uint64_t, written back as python wrote it)
    assert.equal(read(dir .. "/" .. (INTEGERS and "ints_as_lua" or INT64 and "ints" or "ints53")
      .. ".bin"), instate.encode(ints))
    assert.equal(read(dir .. "/strs.bin"), instate.encode(get("strs")))
    assert.equal(read(dir .. "/array32.bin"), instate.encode(a32))
  end)

  it("refuses another library's extension types 1 and 2, naming the byte", function()
    local dir = helpers.tmpdir()
    python(dir, [==[
import sys, msgpack
d = sys.argv[1]
def put(name, value):
    open(d + "/" + name + ".bin", "wb").write(msgpack.packb(value))
# type 1 (our GRAPH) around plain MessagePack, with no reference inside
put("ext1", msgpack.ExtType(1, msgpack.packb([1, 2, 3])))
put("ext1_in_list", [0, msgpack.ExtType(1, b"\x01")])
put("ext2", {"k": msgpack.ExtType(2, b"\x00")})
put("timestamp", msgpack.Timestamp(1, 0))
]==])
    local cases = {
      {"ext1", "corrupt MessagePack at byte 0: graph extension without a reference"},
      {"ext1_in_list", "corrupt MessagePack at byte 2: graph extension not at the top level"},
      {"ext2", "corrupt MessagePack at byte 3: reference outside a graph extension"},
      {"timestamp", "corrupt MessagePack at byte 0: unsupported extension type -1"},
    }
    for _, c in ipairs(cases) do
      local v, msg, code = instate.decode(read(dir .. "/" .. c[1] .. ".bin"))
      assert.is_nil(v, c[1])
      assert.equal(c[2], msg)
      assert.equal("CORRUPT", code)
    end
  end)
end)
