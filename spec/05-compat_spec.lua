--- The Lua layer on every Lua (5.1, 5.2, 5.3, 5.4, LuaJIT): instate.compat,
-- defstate's argument checks, and the spec helpers' byte tools. Needs no C
-- module, so it runs under each interpreter (busted --lua=luajit ...).
local compat = require "instate.compat"
local helpers = require "helpers"

local LUA54 = _VERSION == "Lua 5.4"
local INTEGERS = _VERSION == "Lua 5.3" or LUA54

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

describe("instate.compat", function()
  it("says which Lua it runs on", function()
    assert.equal(INTEGERS, compat.integers)
    assert.equal(LUA54, compat.to_be_closed)
    assert.equal(_VERSION ~= "Lua 5.1", compat.yield_across_c)
  end)

  it("math_type: integer, float or nil on every Lua", function()
    local math_type = compat.math_type
    assert.equal("integer", math_type(0))
    assert.equal("integer", math_type(-7))
    assert.equal("float", math_type(1.5))
    assert.equal("float", math_type(-0.25))
    assert.equal("float", math_type(0 / 0))
    assert.equal("float", math_type(math.huge))
    assert.equal("float", math_type(-math.huge))
    assert.is_nil(math_type("1"))
    assert.is_nil(math_type(nil))
    assert.is_nil(math_type({}))
  end)

  if INTEGERS then
    it("math_type is math.type where numbers have subtypes", function()
      assert.equal(math.type, compat.math_type)
      assert.equal("float", compat.math_type(1.0))
      assert.equal("float", compat.math_type(2 ^ 53))
    end)
  else
    it("math_type: an integral number in [-2^63, 2^63) is an integer", function()
      local math_type = compat.math_type
      assert.equal("integer", math_type(1.0))
      assert.equal("integer", math_type(2 ^ 53))
      assert.equal("integer", math_type(-2 ^ 63))
      assert.equal("integer", math_type(2 ^ 63 - 1024))
      assert.equal("float", math_type(2 ^ 63))
      assert.equal("float", math_type(-2 ^ 63 - 2048))
      assert.equal("integer", math_type(0))
      assert.equal("float", math_type(helpers.neg_zero))
    end)
  end

  it("error: a tail-called function raises at its caller's line", function()
    local function inner() compat.error("boom", 2) end
    local function outer() return inner() end
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline; outer()
    end)
    assert.is_false(ok)
    assert.equal("spec/05-compat_spec.lua:" .. line .. ": boom", err:match("spec/05%-compat_spec%.lua:.*"))
    ok, err = pcall(compat.error, "as is", 0)
    assert.is_false(ok)
    assert.equal("as is", err)
    local t = {}
    ok, err = pcall(compat.error, t)
    assert.equal(t, err)
  end)

  it("load and loadfile with an environment", function()
    local env = { x = 2 }
    local f = assert(compat.load("y = x * 21; return y", "=chunk", "t", env))
    assert.equal(42, f())
    assert.equal(42, env.y)
    assert.is_nil(rawget(_G, "y"))
    local nf, err = compat.load("return +", "=bad", "t", env)
    assert.is_nil(nf)
    assert.matches("^bad:1:", err)
    local path = helpers.tmpdir() .. "/chunk.lua"
    helpers.write_file(path, "z = x + 1")
    local g = assert(compat.loadfile(path, "t", env))
    g()
    assert.equal(3, env.z)
    assert.is_nil(rawget(_G, "z"))
  end)

  it("pack and unpack", function()
    local t = compat.pack(1, nil, 3, nil)
    assert.equal(4, t.n)
    assert.same({ 1, nil, 3, nil, n = 4 }, t)
    assert.equal(0, compat.pack().n)
    local a, b, c = compat.unpack({ 1, 2, 3 }, 2, 3)
    assert.equal(2, a)
    assert.equal(3, b)
    assert.is_nil(c)
    assert.equal(3, select("#", compat.unpack(t, 1, 3)))
  end)
end)

describe("defstate's arguments on every Lua", function()
  -- defstate checks its arguments before it needs a store: a module table
  -- without one is enough to reach every check.
  local instate = require("instate.defstate")({})

  local function raises(msg, ...)
    local args = { ... }
    assert.has_error(function() instate.defstate(args[1], args[2], args[3]) end, msg)
  end

  it("accepts an integral version >= 1", function()
    raises("instate.defstate: no store for variable 'v'; call instate.setup(path) first",
      "v", 0, { version = 2 })
    raises("instate.defstate: no store for variable 'v'; call instate.setup(path) first",
      "v", 0, { version = 2147483648 })
  end)

  it("rejects a version that is not an integer >= 1", function()
    local bad = { 0, -1, 1.5, 0 / 0, math.huge }
    for _, v in ipairs(bad) do
      raises(("bad argument #3 to 'defstate' (version must be an integer >= 1, got %s)")
        :format(tostring(v)), "v", 0, { version = v })
    end
    raises("bad argument #3 to 'defstate' (version must be an integer >= 1, got string)",
      "v", 0, { version = "2" })
    raises("bad argument #3 to 'defstate' (version must be an integer >= 1, got boolean)",
      "v", 0, { version = true })
  end)

  if INTEGERS then
    it("rejects a float version, even an integral one", function()
      raises("bad argument #3 to 'defstate' (version must be an integer >= 1, got 2.0)",
        "v", 0, { version = 2.0 })
    end)
  else
    it("takes 2.0 as version 2 (numbers have no subtypes here)", function()
      raises("instate.defstate: no store for variable 'v'; call instate.setup(path) first",
        "v", 0, { version = 2.0 })
    end)
  end

  it("names the type of a bad name: integer for an integral number", function()
    raises("bad argument #1 to 'defstate' (string expected, got integer)", 1)
    raises("bad argument #1 to 'defstate' (string expected, got number)", 1.5)
    raises("bad argument #1 to 'defstate' (string expected, got table)", {})
  end)
end)

describe("spec helpers' bytes on every Lua", function()
  it("crc32c: the standard check value, and continued over parts", function()
    assert.equal(0xE3069283, helpers.crc32c("123456789"))
    assert.equal(0xE3069283, helpers.crc32c("6789", helpers.crc32c("12345")))
    assert.equal(0, helpers.crc32c(""))
    -- RFC 3720 B.4: 32 bytes of zeros, of 0xff
    assert.equal(0x8A9136AA, helpers.crc32c(("\0"):rep(32)))
    assert.equal(0x62A8AB43, helpers.crc32c(("\255"):rep(32)))
  end)

  it("pack: big and little-endian integers, s1", function()
    assert.equal("0000002a", hex(helpers.pack(">I4", 42)))
    assert.equal("2a000000", hex(helpers.pack("<I4", 42)))
    assert.equal("000001a3185c5000", hex(helpers.pack(">i8", 1800000000000)))
    assert.equal("4201ffff0161", hex(helpers.pack(">BBI2s1", 0x42, 1, 65535, "a")))
    assert.has_error(function() helpers.pack(">I4", -1) end)
    assert.has_error(function() helpers.pack(">I2", 65536) end)
    assert.has_error(function() helpers.pack(">d", 1) end)
  end)

  if string.pack then
    it("pack agrees with string.pack", function()
      local fmts = { { ">BBI2I4I4", 0x42, 0, 0, 64, 4096 }, { ">I4I8i8", 0, 5, 1800000000000 },
        { ">BBs1", 0x53, 1, "name" }, { "<I8", 123456789 }, { ">BBBBI8I8I8I8", 0x45, 0, 0, 0, 1, 2, 3, 4 } }
      for _, f in ipairs(fmts) do
        assert.equal(hex(string.pack(compat.unpack(f))), hex(helpers.pack(compat.unpack(f))), f[1])
      end
    end)
  end

  it("flip_byte and bxor32", function()
    assert.equal("aec", helpers.flip_byte("abc", 2, 7))
    assert.equal("\127", helpers.flip_byte("\255", 1, 0x80))
    assert.equal(0xCC99E897, helpers.bxor32(0xDEADBEEF, 0x12345678))
    assert.equal(0, helpers.bxor32(0xFFFFFFFF, 0xFFFFFFFF))
  end)

  it("execute and shell report exit statuses", function()
    assert.is_true(helpers.execute("true"))
    assert.is_false(helpers.execute("false"))
    assert.is_false(helpers.execute("exit 3"))
    assert.same({ "hi\n", true }, { helpers.shell("echo hi") })
    assert.same({ "x\n", false }, { helpers.shell("echo x; exit 3") })
    assert.same({ "", false }, { helpers.shell("false") })
    -- os.execute's three results as 5.2+ gives them, on every Lua
    assert.same({ true, "exit", 0 }, { helpers.execute_status("true") })
    assert.same({ nil, "exit", 3 }, { helpers.execute_status("exit 3") })
    assert.same({ nil, "signal", 9 }, { helpers.execute_status("kill -9 $$") })
  end)

  it("index_error is Lua's own message for indexing a handle", function()
    local store = require("instate").open(helpers.tmpdir() .. "/s")
    local ok, err = pcall(function() store.path = 1 end)
    assert.is_false(ok)
    assert.matches(helpers.index_error("instate.Store", "upvalue 'store'"), err, 1, true)
    store:close()
  end)

  it("run_lua runs a child of this same Lua", function()
    local jit_version = jit and jit.version or "none"
    local out, ok = helpers.run_lua("io.write(_VERSION, ' ', jit and jit.version or 'none', ' ', ...)", "arg 1")
    assert.is_true(ok)
    assert.equal(_VERSION .. " " .. jit_version .. " arg 1", out)
    out, ok = helpers.run_lua("error('boom', 0)")
    assert.is_false(ok)
    assert.matches("boom", out, 1, true)
  end)

  it("float_bits: the bytes of a double, little-endian", function()
    assert.equal("000000000000f83f", helpers.float_bits(1.5))
    assert.equal("9a9999999999b93f", helpers.float_bits(0.1))
    assert.equal("000000000000f0ff", helpers.float_bits(-math.huge))
    assert.equal("0100000000000000", helpers.float_bits(2 ^ -1074))
    assert.equal("0000000000000080", helpers.float_bits(-1 / math.huge))
    assert.equal("0000000000000080", helpers.float_bits(helpers.neg_zero))
    assert.equal(-math.huge, 1 / helpers.neg_zero)
  end)
end)
