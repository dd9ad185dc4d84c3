-- instate.format: storable values as deterministic text; instate.parse
-- reads it (and JSON) back without running anything. Runs on every Lua:
-- what depends on integers is checked for both kinds.
local helpers = require "helpers"
local compat = require "instate.compat"
local instate = require "instate"

local F, parse = instate.format, instate.parse
local integers = compat.integers
local neg_zero = helpers.neg_zero

-- The value of a Lua expression: format's output of a value that reaches
-- no table twice must be one (the spec's own text only).
local function lua_value(text)
  local chunk = assert(compat.load("return " .. text, "=format", "t", {}))
  return chunk()
end

-- Lua 5.1's compiler (not LuaJIT's) keeps one constant per value and
-- mixes up -0.0 with 0 and 1/0 with -1/0 in a chunk that holds both: its
-- reading of such text is not checked (parse's is).
local LUA51 = _VERSION == "Lua 5.1" and not jit
local function lua51_confuses(text)
  return LUA51 and (text:find("-0.0", 1, true) or text:find("1/0", 1, true))
end

-- Deep equality of plain trees, floats by bits (NaN, -0.0).
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if compat.math_type(a) ~= compat.math_type(b) then return false end
    return helpers.float_bits(a) == helpers.float_bits(b)
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

describe("instate.format", function()
  it("writes scalars exactly, floats as the shortest text that reads back", function()
    assert.equal("nil", F(nil))
    assert.equal("true", F(true))
    assert.equal("false", F(false))
    assert.equal("0", F(0))
    assert.equal("-7", F(-7))
    assert.equal("1.5", F(1.5))
    assert.equal("0.1", F(0.1))
    assert.equal("0.3333333333333333", F(1 / 3))
    assert.equal("0.30000000000000004", F(0.1 + 0.2))
    assert.equal("1e+300", F(1e300))
    assert.equal("5e-324", F(5e-324))
    assert.equal("-0.0", F(neg_zero))
    assert.equal("1/0", F(1 / 0))
    assert.equal("-1/0", F(-1 / 0))
    assert.equal("0/0", F(0 / 0))
    assert.equal("9.223372036854776e+18", F(2 ^ 63))
    if integers then
      -- floats with integral values keep their ".0"; integers are exact
      assert.equal("2.0", F(2.0))
      assert.equal("9007199254740992.0", F(2 ^ 53))
      assert.equal("9223372036854775807", F(math.maxinteger))
      assert.equal("0x8000000000000000", F(math.mininteger))
      assert.equal(math.mininteger, lua_value(F(math.mininteger)))
      assert.equal(math.mininteger, parse(F(math.mininteger)))
    else
      -- numbers are doubles: an integral one in 64 bits is an integer
      assert.equal("2", F(2.0))
      assert.equal("9007199254740992", F(2 ^ 53))
      assert.equal("-9223372036854775808", F(-2 ^ 63))
      assert.equal(-2 ^ 63, parse(F(-2 ^ 63)))
    end
  end)

  it("reads every float back bit for bit, through Lua and through parse", function()
    math.randomseed(20261201)
    local xs = { 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1e-310, 2.2250738585072014e-308, 1.7976931348623157e308,
      4.9406564584124654e-324, 123456.789, neg_zero, 1 / 0, -1 / 0 }
    for _ = 1, 3000 do
      xs[#xs + 1] = (math.random() - 0.5) * 10 ^ math.random(-320, 308)
    end
    for _, x in ipairs(xs) do
      local s = F(x)
      assert.equal(helpers.float_bits(x), helpers.float_bits(parse(s)), s)
      assert.equal(helpers.float_bits(x), helpers.float_bits(lua_value(s)), s)
      -- shortest: one significant digit less does not read back
      local digits = #(s:gsub("%.0$", ""):gsub("e.*", ""):gsub("[^%d]", ""):gsub("^0+", ""))
      -- (integers, as integral doubles are where numbers are doubles, are
      -- written with every digit)
      if digits > 1 and s:find("[%.e]") and x == x and x ~= 1 / 0 and x ~= -1 / 0 then
        assert.is_not.equal(x, tonumber(("%." .. (digits - 1) .. "g"):format(x)), s)
      end
    end
    local nan = parse(F(0 / 0))
    assert.is_true(nan ~= nan)
  end)

  it("escapes bytes with escapes every Lua reads, keeps printable UTF-8", function()
    local s = "a\"b\\c\n\r\t\0\1\127\255" .. "\195\169" .. "\194\133" .. "\237\160\128"
    local text = F(s)
    assert.equal([["a\"b\\c\n\r\t\000\001\127\255é\194\133\237\160\128"]], text)
    assert.equal(s, lua_value(text))
    assert.equal(s, parse(text))
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    all = table.concat(all)
    assert.equal(all, lua_value(F(all)))
    assert.equal(all, parse(F(all)))
    assert.is_nil(F(all):find("\\x", 1, true))
  end)

  it("sorts keys in one total order: booleans, numbers, strings, tables", function()
    local t = { 10, 20, [false] = 1, [true] = 2, [-1] = 3, [2.5] = 4, b = 5, ["a b"] = 6,
      ["end"] = 7, _x = 8, [{}] = 9, [1 / 0] = 10 }
    assert.equal('{10, 20, [false] = 1, [true] = 2, [-1] = 3, [2.5] = 4, [1/0] = 10, _x = 8, '
      .. '["a b"] = 6, b = 5, ["end"] = 7, [{}] = 9}', F(t))
    -- the same content built in another order gives the same text
    local u = {}
    for _, k in ipairs({ "z", "y", "x", "w", "v" }) do u[k] = k:byte() end
    local v = {}
    for _, k in ipairs({ "v", "w", "x", "y", "z" }) do v[k] = k:byte() end
    assert.equal(F(u), F(v))
    assert.equal("{v = 118, w = 119, x = 120, y = 121, z = 122}", F(v))
    -- the array part ends at the first nil
    assert.equal("{1, [3] = 3}", F({ 1, nil, 3 }))
    assert.equal("{}", F({}))
    assert.equal('{[{1}] = "b", [{2}] = "a"}', F({ [{ 2 }] = "a", [{ 1 }] = "b" }))
  end)

  it("indents one item a line with opts.indent", function()
    local t = { 1, { 2, 3 }, name = "x", sub = { deep = {} } }
    assert.equal([[
{
  1,
  {
    2,
    3,
  },
  name = "x",
  sub = {
    deep = {},
  },
}]], F(t, { indent = 2 }))
    assert.equal("{\n\t1,\n\ta = true,\n}", F({ 1, a = true }, { indent = "\t" }))
  end)

  it("marks shared tables and cycles, and parse restores the shape", function()
    local shared = { shared = true }
    local v = { shared, shared, { 1 } }
    v.self = v
    local text = F(v)
    assert.equal("<1>{<2>{shared = true}, <ref 2>, {1}, self = <ref 1>}", text)
    local back = assert(parse(text))
    assert.equal(back, back.self)
    assert.equal(back[1], back[2])
    assert.is_true(back[1].shared)
    assert.equal(text, F(back))
    -- a table used as a key and a value
    local k = {}
    assert.equal("{<1>{}, [<ref 1>] = true}", F({ k, [k] = true }))
    local kb = parse("{<1>{}, [<ref 1>] = true}")
    assert.is_true(kb[kb[1]])
  end)

  it("truncates visibly at max_depth and max_bytes, and parse refuses that", function()
    local v = { a = { b = { c = {} } }, n = 1 }
    assert.equal("{a = {b = <truncated: max_depth 2, 1 entry>}, n = 1}", F(v, { max_depth = 2 }))
    assert.equal("<truncated: max_depth 0, 2 entries>", F(v, { max_depth = 0 }))
    local long = {}
    for i = 1, 100 do long[i] = i end
    local text = F(long, { max_bytes = 20 })
    assert.equal("{1, 2, 3, 4, 5, 6, 7 <truncated: max_bytes 20>", text)
    assert.equal(F(long), F(long, { max_bytes = #F(long) }))
    -- a long string keeps its head, never half an escape or a character
    assert.equal('{"ab\\000 <truncated: max_bytes 10>', F({ "ab\0\1" .. ("x"):rep(20) }, { max_bytes = 10 }))
    assert.equal('{"ab <truncated: max_bytes 7>', F({ "ab\0\1" .. ("x"):rep(20) }, { max_bytes = 7 }))
    assert.equal('"h\195\169 <truncated: max_bytes 4>', F("h\195\169llo", { max_bytes = 4 }))
    assert.equal('"h <truncated: max_bytes 3>', F("h\195\169llo", { max_bytes = 3 }))
    local value, msg, code = parse(text)
    assert.is_nil(value)
    assert.equal("a truncated value cannot be read at byte 21", msg)
    assert.equal("CORRUPT", code)
  end)

  it("raises for what cannot be stored, naming the path, and for bad options", function()
    assert.has_error(function() F({ items = { 1, 2, { on_use = print } } }) end,
      "instate.format: cannot format a function at value.items[3].on_use")
    assert.has_error(function() F({ [print] = 1 }) end,
      "instate.format: cannot format a function at a key of value")
    assert.has_error(function() F(coroutine.create(function() end)) end,
      "instate.format: cannot format a thread at value")
    assert.has_error(function() F(1, { colour = true }) end,
      "bad argument #2 to 'format' (unknown option 'colour')")
    assert.has_error(function() F(1, { max_depth = -1 }) end,
      "bad argument #2 to 'format' (max_depth must be an integer >= 0)")
    assert.has_error(function() F(1, { max_bytes = 0 }) end,
      "bad argument #2 to 'format' (max_bytes must be an integer >= 1)")
    assert.has_error(function() F(1, { indent = true }) end,
      "bad argument #2 to 'format' (indent must be an integer >= 0 or a string)")
    assert.has_error(function() F(1, 2) end,
      "bad argument #2 to 'format' (table expected, got number)")
  end)

  it("ignores metatables", function()
    local t = setmetatable({ a = 1 }, { __index = function() return 2 end, __pairs = error })
    assert.equal("{a = 1}", F(t))
  end)

  it("writes LuaJIT int64 cdata as their literals", function()
    if not jit then return end  -- no cdata elsewhere
    local ffi = require "ffi"
    assert.equal("{-123LL, 18446744073709551615ULL}",
      F({ ffi.new("int64_t", -123), ffi.new("uint64_t", 0) - 1 }))
  end)

  it("round-trips random acyclic values through Lua and through parse", function()
    math.randomseed(7)
    local function random_string()
      local t = {}
      for i = 1, math.random(0, 8) do t[i] = string.char(math.random(0, 255)) end
      return table.concat(t)
    end
    local gen
    local function random_scalar()
      local r = math.random(1, 7)
      if r == 1 then return math.random(1, 2) == 1 end
      if r == 2 then return math.random(-1000, 1000) end
      if r == 3 then return (math.random() - 0.5) * 10 ^ math.random(-30, 30) end
      if r == 4 then return ({ 1 / 0, -1 / 0, neg_zero, 0.0 })[math.random(1, 4)] end
      if r == 5 then return ({ "a", "end", "x_1", "" })[math.random(1, 4)] end
      return random_string()
    end
    function gen(depth)
      if depth > 3 or math.random(1, 3) == 1 then return random_scalar() end
      local t = {}
      for i = 1, math.random(0, 4) do t[i] = gen(depth + 1) end
      for _ = 1, math.random(0, 4) do
        local k = random_scalar()
        if k == k then t[k] = gen(depth + 1) end
      end
      return t
    end
    for _ = 1, 300 do
      local v = gen(0)
      for _, opts in ipairs({ {}, { indent = 2 } }) do
        local text = F(v, opts)
        local via_parse, msg = parse(text)
        assert.is_nil(msg)
        assert.is_true(same(v, via_parse), text)
        if not lua51_confuses(text) then assert.is_true(same(v, lua_value(text)), text) end
        assert.equal(text, F(via_parse, opts))
      end
    end
  end)
end)

describe("instate.parse", function()
  local function fails(text, msg)
    local v, m, code = parse(text)
    assert.is_nil(v)
    assert.equal(msg, m)
    assert.equal("CORRUPT", code)
  end

  it("reads Lua literals", function()
    assert.is_true(same({ 1, 2.5, "x", a = { b = true }, [10] = false, ["k k"] = -1 },
      parse([[ {1, 2.5; 'x', a = {b = true}, [10] = false, ["k k"] = -1,} -- a comment]])))
    assert.equal("a\nb\0c\255\226\130\172Z", parse([["a\nb\0c\xff\u{20AC}\z
      Z"]]))
    assert.equal("long ]] string", parse("[==[\nlong ]] string]==]"))
    assert.equal(16, parse("0x10"))
    assert.equal(-5, parse("-5"))
    assert.equal(1 / 0, parse("1 / 0"))
    assert.equal(1000, parse("1e3"))
    assert.is_nil(parse("nil"))
    if integers then
      assert.equal("float", math.type(parse("1e3")))
      assert.equal("integer", math.type(parse("7")))
      assert.equal("float", math.type(parse("7.0")))
    end
  end)

  it("reads JSON", function()
    local v = parse('{"name": "hero", "hp": 20, "pos": [1.5, -2], "flags": {"ok": true, "no": null},'
      .. ' "s": "\\u00e9\\ud83d\\ude00\\/\\"", "list": []}')
    assert.is_true(same({ name = "hero", hp = 20, pos = { 1.5, -2 }, flags = { ok = true },
      s = "\195\169\240\159\152\128/\"", list = {} }, v))
    assert.is_true(same({ 1, nil, 3 }, parse("[1, null, 3]")))
  end)

  it("names the byte offset of what is wrong", function()
    fails("{a = 1,, }", "a value expected, got ',' at byte 7")
    fails("{a = 1 b = 2}", "',' or '}' expected, got 'b' at byte 7")
    fails("12x", "malformed number '12x' at byte 0")
    fails('"abc', "unfinished string at byte 0")
    fails("{1, 2", "',' or '}' expected, got the end of the text at byte 5")
    fails("{", "'}' expected (the table began at byte 0), got the end of the text at byte 1")
    fails("[1 2]", "',' or ']' expected (the array began at byte 0), got '2' at byte 3")
    fails("1 2", "unexpected '2' after the value at byte 2")
    fails('"\\q"', "invalid escape \\q at byte 1")
    fails('"\\300"', "decimal escape too large at byte 1")
    fails("{[nil] = 1}", "a table key is nil at byte 1")
    fails("{[0/0] = 1}", "a table key is NaN at byte 1")
    fails("{a = 1, a = 2}", 'duplicate key "a" at byte 8')
    fails('{1: 2}', "an object key must be a string at byte 1")
    fails("2/3", "only 1/0, -1/0 and 0/0 may divide at byte 0")
    fails("<ref 1>", "<ref 1> before its label at byte 0")
    fails("", "a value expected, got the end of the text at byte 0")
    if integers then
      fails("9223372036854775808", "integer out of range '9223372036854775808' at byte 0")
    else
      fails("9007199254740993", "integer not exact on " .. _VERSION .. " '9007199254740993' at byte 0")
    end
  end)

  it("runs nothing: names, calls and functions are refused", function()
    fails("os.exit(1)", "unexpected name 'os' (values are nil, booleans, numbers, strings and tables) at byte 0")
    fails("{f = function() end}", "unexpected name 'function' (values are nil, booleans, numbers, "
      .. "strings and tables) at byte 5")
    fails("{x = a}", "unexpected name 'a' (values are nil, booleans, numbers, strings and tables) at byte 5")
  end)

  it("bounds nesting depth", function()
    local deep = ("{"):rep(instate.max_depth + 1) .. ("}"):rep(instate.max_depth + 1)
    fails(deep, ("nested deeper than %d tables at byte %d"):format(instate.max_depth, instate.max_depth))
    local ok = ("{"):rep(instate.max_depth) .. ("}"):rep(instate.max_depth)
    assert.is_table(parse(ok))
  end)

  it("raises on misuse", function()
    assert.has_error(function() parse(1) end, "bad argument #1 to 'parse' (string expected, got number)")
  end)
end)
