-- Classes: instate.register_class(name, mt) and the CLASS extension (type 3)
-- of docs/FORMAT.md section 1; opts.metatables = "drop"; classes across
-- setup/defstate, format/parse, and other MessagePack readers.
local instate = require "instate"
local helpers = require "helpers"
local compat = require "instate.compat"

local encode, decode = instate.encode, instate.decode

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x "):format(c:byte()) end):gsub(" $", ""))
end

local function unhex(h)
  return (h:gsub("%s", ""):gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Every class a test registers is unregistered after it.
local registered
local function class(name, mt)
  mt = instate.register_class(name, mt or {})
  registered[#registered + 1] = name
  return mt
end

describe("classes", function()
  before_each(function() registered = {} end)
  after_each(function()
    for _, name in ipairs(registered) do instate.unregister_class(name) end
  end)

  describe("the registry", function()
    it("registers, finds and unregisters a class", function()
      local mt = {}
      assert.equal(mt, class("Vec2", mt))
      assert.equal(mt, instate.register_class("Vec2", mt)) -- again: nothing changes
      assert.equal("Vec2", instate.class_name(setmetatable({}, mt)))
      assert.equal(mt, instate.class_metatable("Vec2"))
      assert.is_nil(instate.class_name({}))
      assert.is_nil(instate.class_name(setmetatable({}, {})))
      assert.is_nil(instate.class_name(42))
      assert.is_nil(instate.class_metatable("Nope"))
      -- __metatable does not hide the class from the codec
      local hidden = class("Hidden", { __metatable = false })
      assert.equal("Hidden", instate.class_name(setmetatable({}, hidden)))
      assert.is_true(instate.unregister_class("Vec2"))
      assert.is_false(instate.unregister_class("Vec2"))
      assert.is_nil(instate.class_metatable("Vec2"))
      assert.is_nil(instate.class_name(setmetatable({}, mt)))
      -- once free, the name takes another metatable
      local other = class("Vec2")
      assert.equal(other, instate.class_metatable("Vec2"))
    end)

    it("refuses a name taken by another metatable, and a metatable under two names", function()
      local a = class("A")
      assert.has_error(function() instate.register_class("A", {}) end,
        "instate.register_class: class 'A' is already registered with another metatable"
        .. " (instate.unregister_class('A') first)")
      assert.has_error(function() instate.register_class("B", a) end,
        "instate.register_class: this metatable is already registered as class 'A',"
        .. " so it cannot also be 'B'")
      assert.is_nil(instate.class_metatable("B"))
    end)

    it("checks the name and the metatable", function()
      local function refuses(pattern, ...)
        local ok, err = pcall(instate.register_class, ...)
        assert.is_false(ok)
        assert.matches(pattern, err, 1, true)
      end
      assert.equal(255, instate.class_name_max)
      refuses("class name must be 1..255 bytes, got 0", "", {})
      refuses("class name must be 1..255 bytes, got 256", ("n"):rep(256), {})
      refuses("class name must be UTF-8", "bad\255", {})
      refuses("class name must be a string, got number", 1, {})
      refuses("table expected", "X", "not a table")
      local long = ("n"):rep(255)
      local mt = class(long)
      assert.equal(long, instate.class_name(decode(encode(setmetatable({}, mt)))))
      local ok, err = pcall(instate.unregister_class, "")
      assert.is_false(ok)
      assert.matches("class name must be 1..255 bytes, got 0", err, 1, true)
    end)
  end)

  describe("encoding", function()
    it("writes an instance as ext type 3: the name, then the table", function()
      local V = class("Vec2")
      -- payload a4 "Vec2" 81 a1 78 01: 9 bytes, ext8
      assert.equal("c7 09 03 a4 56 65 63 32 81 a1 78 01", hex(encode(setmetatable({ x = 1 }, V))))
      -- a payload of exactly 8 bytes takes fixext 8
      local W = class("V")
      assert.equal("d7 03 a1 56 95 01 02 03 04 05", hex(encode(setmetatable({ 1, 2, 3, 4, 5 }, W))))
      assert.equal("c7 03 03 a1 56 80", hex(encode(setmetatable({}, W))))
      -- past 255 bytes, ext16
      local big = {}
      for i = 1, 300 do big[i] = i % 100 end
      local s = encode(setmetatable(big, W))
      assert.equal("c8 01 31 03 a1 56 dc 01 2c", hex(s:sub(1, 9)))
      assert.equal(4 + 305, #s)
    end)

    it("round-trips instances anywhere in a value, with their metatable", function()
      local V = class("Vec2", { __index = { len2 = function(v) return v.x * v.x + v.y * v.y end } })
      local I = class("game.Item")
      local values = {
        setmetatable({ x = 3, y = 4 }, V),
        setmetatable({}, I),
        setmetatable({ "a", "b" }, I),
        { pos = setmetatable({ x = 1, y = 2 }, V), list = { 1, setmetatable({ 5, 6 }, I) } },
        { [setmetatable({ x = 0, y = 0 }, V)] = "origin" },
        setmetatable({ inner = setmetatable({ x = 1, y = 1 }, V), n = 1.5 }, I),
      }
      for i, v in ipairs(values) do
        for _, canonical in ipairs { false, true } do
          local d = decode(encode(v, nil, { canonical = canonical }))
          if i ~= 5 then assert.same(v, d) end -- (same compares table keys by identity)
          if i == 1 then
            assert.equal(V, getmetatable(d))
            assert.equal(25, d:len2())
          end
        end
      end
      local d = decode(encode(values[4]))
      assert.equal(V, getmetatable(d.pos))
      assert.equal(I, getmetatable(d.list[2]))
      assert.is_nil(getmetatable(d))
      local key = next(decode(encode(values[5])))
      assert.equal(V, getmetatable(key))
      d = decode(encode(values[6]))
      assert.equal(I, getmetatable(d))
      assert.equal(V, getmetatable(d.inner))
    end)

    it("keeps shared instances and cycles through them, with the same shape", function()
      local V = class("Vec2")
      local v = setmetatable({ x = 1, y = 2 }, V)
      local t = { a = v, b = v, list = { v } }
      v.owner = t
      v.self = v
      for _, canonical in ipairs { false, true } do
        local d = decode(encode(t, nil, { canonical = canonical }))
        assert.equal(d.a, d.b)
        assert.equal(d.a, d.list[1])
        assert.equal(d, d.a.owner)
        assert.equal(d.a, d.a.self)
        assert.equal(V, getmetatable(d.a))
        assert.is_nil(getmetatable(d))
      end
      -- a top-level instance in a cycle: GRAPH around CLASS, the REF to table 0
      local c = setmetatable({}, V)
      c[1] = c
      assert.equal("c7 0c 01 c7 09 03 a4 56 65 63 32 91 d4 02 00", hex(encode(c)))
      local dc = decode(encode(c))
      assert.equal(dc, dc[1])
      assert.equal(V, getmetatable(dc))
    end)

    it("gives the same canonical bytes whatever the insertion order", function()
      local V = class("Vec2")
      local a, b = setmetatable({}, V), setmetatable({}, V)
      for i = 1, 20 do a["k" .. i] = i end
      for i = 20, 1, -1 do b["k" .. i] = i end
      assert.equal(encode({ p = a, q = a }, nil, { canonical = true }),
        encode({ q = b, p = b }, nil, { canonical = true }))
    end)

    it("runs no metamethod of the class, encoding or decoding", function()
      local called = {}
      local mt = {}
      for _, m in ipairs { "__index", "__newindex", "__pairs", "__len", "__eq", "__call" } do
        mt[m] = function() called[#called + 1] = m; return 42 end
      end
      class("Busy", mt)
      local v = setmetatable({ 1, 2, x = 3 }, mt)
      local d = decode(encode({ v, v }))
      assert.same({}, called)
      assert.equal(mt, getmetatable(d[1]))
      assert.equal(3, rawget(d[1], "x"))
      assert.equal(2, rawlen and rawlen(d[1]) or #d[1])
      assert.same({}, called)
    end)

    it("marks a decoded instance of a class with __gc for finalization, as setmetatable does", function()
      -- tables have finalizers from 5.2 on: probe it rather than the version
      local probe = false
      setmetatable({}, { __gc = function() probe = true end })
      collectgarbage()
      collectgarbage()
      local runs = 0
      local G = class("Finalized", { __gc = function() runs = runs + 1 end })
      local orig = { setmetatable({}, G), setmetatable({}, G) }
      local bytes = encode(orig)
      local d = decode(bytes)
      assert.equal(G, getmetatable(d[1]))
      d = nil
      collectgarbage()
      collectgarbage()
      assert.equal(probe and 2 or 0, runs)
      assert.equal(G, getmetatable(orig[1]))
    end)
  end)

  describe("an unregistered metatable", function()
    it("raises naming the path", function()
      local mt = {}
      assert.has_error(function()
        encode({ items = { 1, 2, setmetatable({}, mt) } }, "inventory")
      end, "cannot store a table with an unregistered metatable at inventory.items[3]")
      assert.has_error(function() encode(setmetatable({}, mt)) end,
        "cannot store a table with an unregistered metatable at value")
      assert.has_error(function() encode({ [setmetatable({}, mt)] = 1 }) end,
        "cannot store a table with an unregistered metatable at value[table]")
      -- inside an instance of a registered class too
      local V = class("Vec2")
      assert.has_error(function()
        encode({ p = setmetatable({ tag = setmetatable({}, mt) }, V) })
      end, "cannot store a table with an unregistered metatable at value.p.tag")
      -- and after the class is gone
      instate.unregister_class("Vec2")
      assert.has_error(function() encode({ p = setmetatable({}, V) }) end,
        "cannot store a table with an unregistered metatable at value.p")
    end)

    it("is left out with metatables = \"drop\", registered classes kept", function()
      local V = class("Vec2")
      local mt = { __index = function() return 0 end }
      local v = { setmetatable({ 1 }, mt), setmetatable({ x = 1 }, V) }
      local d = decode(encode(v, nil, { metatables = "drop" }))
      assert.is_nil(getmetatable(d[1]))
      assert.is_nil(d[1][2])
      assert.equal(V, getmetatable(d[2]))
      assert.equal(encode(v, nil, { metatables = "drop", canonical = true }),
        encode(v, nil, { canonical = true, metatables = "drop" }))
      assert.has_error(function() encode(v, nil, { metatables = "error" }) end,
        "cannot store a table with an unregistered metatable at value[1]")
    end)

    it("option values are checked", function()
      for _, bad in ipairs { { "keep", 'got "keep"' }, { true, "got boolean" } } do
        local ok, err = pcall(encode, {}, nil, { metatables = bad[1] })
        assert.is_false(ok)
        assert.matches([[option 'metatables' must be "error" or "drop", ]] .. bad[2], err, 1, true)
        ok, err = pcall(instate.open, helpers.tmpdir() .. "/s", { metatables = bad[1] })
        assert.is_false(ok)
        assert.matches([[option 'metatables' must be "error" or "drop", ]] .. bad[2], err, 1, true)
      end
    end)

    it("raises on every write path of a store, unless the store or the call drops it", function()
      local dir = helpers.tmpdir()
      local mt = {}
      local store = assert(instate.open(dir .. "/s", { sync = "none" }))
      local ns = store:namespace("n")
      assert.has_error(function() ns:set("k", { setmetatable({}, mt) }) end,
        "cannot store a table with an unregistered metatable at k[1]")
      assert.has_error(function() ns:add("k", { setmetatable({}, mt) }) end,
        "cannot store a table with an unregistered metatable at k[1]")
      assert.has_error(function() ns:update("k", function() return setmetatable({}, mt) end) end,
        "cannot store a table with an unregistered metatable at k")
      assert.has_error(function()
        store:transaction(function(tx) tx:namespace("n"):set("k", { x = setmetatable({}, mt) }) end)
      end, "cannot store a table with an unregistered metatable at k.x")
      assert.is_nil(ns:get("k"))
      assert.is_true(ns:set("k", { setmetatable({}, mt) }, { metatables = "drop" }))
      assert.same({ {} }, ns:get("k"))
      store:close()
      -- a store opened with metatables = "drop" drops on every write
      store = assert(instate.open(dir .. "/s", { sync = "none", metatables = "drop" }))
      ns = store:namespace("n")
      assert.is_true(ns:set("a", { setmetatable({ 1 }, mt) }))
      ns:update("b", function() return setmetatable({ 2 }, mt) end)
      store:transaction(function(tx) tx:namespace("n"):set("c", setmetatable({ 3 }, mt)) end)
      assert.same({ { 1 } }, ns:get("a"))
      assert.same({ 2 }, ns:get("b"))
      assert.same({ 3 }, ns:get("c"))
      assert.is_nil(getmetatable(ns:get("c")))
      store:close()
    end)

    it("raises from save_all naming the variable, unless setup drops it", function()
      local dir = helpers.tmpdir()
      local mt = {}
      instate.teardown()
      assert(instate.setup(dir .. "/save", { sync = "none" }))
      local inv = instate.defstate("inv", { items = {} })
      inv:get().items[1] = setmetatable({}, mt)
      assert.has_error(function() instate.save_all() end,
        "cannot store a table with an unregistered metatable at inv.items[1]")
      instate.teardown()
      assert(instate.setup(dir .. "/save", { sync = "none", metatables = "drop" }))
      inv = instate.defstate("inv", { items = {} })
      inv:get().items[1] = setmetatable({ 7 }, mt)
      assert(instate.save_all())
      instate.teardown()
      assert(instate.setup(dir .. "/save", { sync = "none" }))
      inv = instate.defstate("inv", {})
      assert.same({ items = { { 7 } } }, inv:get())
      instate.teardown()
    end)
  end)

  describe("decoding", function()
    it("refuses an unknown class, naming it and the path, never a plain table", function()
      local G = class("Ghost")
      local bytes = encode({ list = { 1, setmetatable({ x = 1 }, G) } })
      instate.unregister_class("Ghost")
      local v, msg, code = decode(bytes)
      assert.is_nil(v)
      assert.equal("unknown class 'Ghost' at value.list[2] (byte 8): not registered", msg)
      assert.equal("CORRUPT", code)
      -- registered again (any metatable): it reads
      local G2 = class("Ghost")
      assert.equal(G2, getmetatable(decode(bytes).list[2]))
      instate.unregister_class("Ghost")
      -- nested in an instance of a known class, and as a key
      local K = class("Known")
      G = class("Ghost")
      bytes = encode(setmetatable({ inner = { setmetatable({}, G) } }, K))
      local kbytes = encode({ [setmetatable({}, G)] = 1 })
      instate.unregister_class("Ghost")
      v, msg = decode(bytes)
      assert.is_nil(v)
      assert.matches("unknown class 'Ghost' at value.inner[1] (byte ", msg, 1, true)
      v, msg = decode(kbytes)
      assert.is_nil(v)
      assert.matches("unknown class 'Ghost' at value (byte 1)", msg, 1, true)
      -- a name that needs escaping is shown escaped
      class("a'b\n")
      bytes = encode(setmetatable({}, instate.class_metatable("a'b\n")))
      instate.unregister_class("a'b\n")
      v, msg = decode(bytes)
      assert.equal("unknown class 'a\\39b\\10' at value (byte 0): not registered", msg)
    end)

    it("names paths through nested instances", function()
      class("A")
      local bytes = unhex("c7 17 03 a1 41 81 a1 61 c7 0f 03 a1 41 81 a1 62 91 cf 10 00 00 00 00 00 00 00")
      if compat.integers or compat.int64 then
        local v = assert(decode(bytes))
        assert.equal(instate.class_metatable("A"), getmetatable(v.a))
        return
      end
      -- numbers are doubles (5.1, 5.2): the integer is refused, naming its path
      local v, msg = decode(bytes)
      assert.is_nil(v)
      assert.equal("corrupt MessagePack at byte 17: an integer beyond 2^53 at value.a.b[1],"
        .. " which this Lua's numbers cannot hold exactly", msg)
    end)

    it("refuses an unknown class from the store, and keeps the record", function()
      local G = class("Ghost")
      local store = assert(instate.open(helpers.tmpdir() .. "/s", { sync = "none" }))
      local ns = store:namespace("n")
      assert(ns:set("k", { g = setmetatable({}, G) }))
      instate.unregister_class("Ghost")
      local v, msg, code = ns:get("k")
      assert.is_nil(v)
      assert.equal("CORRUPT", code)
      assert.equal("undecodable value at key 'k': unknown class 'Ghost' at value.g (byte 3):"
        .. " not registered", msg)
      assert.is_true(ns:has("k"))
      local ok, err = pcall(function() for _ in ns:pairs() do end end)
      assert.is_false(ok)
      assert.matches("undecodable value at key 'k': unknown class 'Ghost'", err, 1, true)
      -- the C check reads the record as sound
      assert.same({}, store:check().corrupt)
      G = class("Ghost")
      assert.equal(G, getmetatable(ns:get("k").g))
      store:close()
    end)

    it("reports malformed class extensions as corrupt, as the C validator does", function()
      local V = class("V")
      local cases = {
        { "d4 03 01", "corrupt MessagePack at byte 0: class extension without a name (a str of 1..255 bytes)" },
        { "c7 00 03", "corrupt MessagePack at byte 0: class extension without a name (a str of 1..255 bytes)" },
        { "c7 02 03 a0 80", "corrupt MessagePack at byte 0: class extension without a name (a str of 1..255 bytes)" },
        { "c7 02 03 a1 56", "corrupt MessagePack at byte 0: class extension without a table after its name" },
        { "c7 03 03 a1 56 01", "corrupt MessagePack at byte 0: class extension without a table after its name" },
        { "c7 04 03 a1 56 80 01", "corrupt MessagePack at byte 0: 1 bytes left over in a class extension" },
        { "c7 04 03 a1 56 82 01 02", "corrupt MessagePack at byte 5: map of 2 pairs needs at least 4 bytes, 1 left" },
        { "c7 02 03 a2 56", "corrupt MessagePack at byte 3: truncated str (need 2 bytes, 1 left)" },
        { "c7 04 03 a1 56 91 d4 02 00", "corrupt MessagePack at byte 6: truncated fixext (need 1 bytes, 0 left)" },
      }
      local store = assert(instate.open(helpers.tmpdir() .. "/s", { sync = "none" }))
      local ns = store:namespace("n")
      for _, c in ipairs(cases) do
        local v, msg, code = decode(unhex(c[1]))
        assert.is_nil(v, c[1])
        assert.equal(c[2], msg)
        assert.equal("CORRUPT", code)
        local ok, err = pcall(ns.set_encoded, ns, "k", unhex(c[1]))
        assert.is_false(ok)
        assert.matches("not a valid encoding: " .. c[2], err, 1, true)
      end
      -- the validator accepts a good one, whatever the name (it knows no registry)
      assert.is_true(ns:set_encoded("k", unhex("c7 04 03 a1 57 91 01")))
      assert.is_true(ns:set_encoded("v", encode(setmetatable({ 1 }, V))))
      assert.equal(V, getmetatable(ns:get("v")))
      local v, msg = ns:get("k")
      assert.is_nil(v)
      assert.matches("unknown class 'W' at value (byte 0)", msg, 1, true)
      store:close()
    end)
  end)

  describe("setup and defstate", function()
    local function run(dir, code)
      local out, ok = helpers.run_lua([[
        local instate = require "instate"
        local dir = ...
        local function Vec2() return instate.register_class("Vec2",
          { __index = { len = function(v) return math.sqrt(v.x ^ 2 + v.y ^ 2) end } }) end
      ]] .. code, dir)
      return out, ok
    end

    it("restores an instance whose class is registered before setup or before defstate", function()
      local dir = helpers.tmpdir()
      local out, ok = run(dir, [[
        Vec2()
        assert(instate.setup(dir .. "/save", { sync = "none" }))
        local pos = instate.defstate("pos", { p = setmetatable({ x = 3, y = 4 }, instate.class_metatable("Vec2")) })
        assert(instate.save_all())
        print(pos:get().p:len())
      ]])
      assert.is_true(ok, out)
      assert.equal("5.0\n", (out:gsub("^5\n", "5.0\n")))
      -- registered before setup: setup's bulk read restores it
      out, ok = run(dir, [[
        local V = Vec2()
        assert(instate.setup(dir .. "/save"))
        local pos = instate.defstate("pos", {})
        print(pos:get().p:len(), getmetatable(pos:get().p) == V)
      ]])
      assert.is_true(ok, out)
      assert.matches("^5%.?0?\ttrue\n$", out)
      -- registered after setup, before defstate: the defstate reads it
      out, ok = run(dir, [[
        assert(instate.setup(dir .. "/save"))
        local V = Vec2()
        local pos = instate.defstate("pos", {})
        print(pos:get().p:len(), getmetatable(pos:get().p) == V)
      ]])
      assert.is_true(ok, out)
      assert.matches("^5%.?0?\ttrue\n$", out)
    end)

    it("raises at defstate for a class never registered, and loses nothing", function()
      local dir = helpers.tmpdir()
      local out, ok = run(dir, [[
        Vec2()
        assert(instate.setup(dir .. "/save", { sync = "none" }))
        instate.defstate("pos", { p = setmetatable({ x = 3, y = 4 }, instate.class_metatable("Vec2")) })
        assert(instate.save_all())
      ]])
      assert.is_true(ok, out)
      out, ok = run(dir, [[
        assert(instate.setup(dir .. "/save", { sync = "none" }))
        local ok, err = pcall(instate.defstate, "pos", { p = "default" })
        print(err)
        instate.defstate("other", 1)
        -- the game went on without pos: it must not save over it
        print(select(2, pcall(instate.save_all)))
      ]])
      assert.is_true(ok, out)
      assert.matches("instate.defstate: saved value of variable 'pos' cannot be read: "
        .. "unknown class 'Vec2' at value.p (byte 3): not registered", out, 1, true)
      assert.matches("instate.save_all: the saved values of 'pos' could not be restored", out, 1, true)
      out, ok = run(dir, [[
        Vec2()
        assert(instate.setup(dir .. "/save"))
        print(instate.defstate("pos", {}):get().p:len())
      ]])
      assert.is_true(ok, out)
      assert.matches("^5", out)
    end)
  end)

  describe("defstate defaults", function()
    it("reset() gives back instances with their class", function()
      local V = class("Vec2")
      instate.teardown()
      assert(instate.setup(helpers.tmpdir() .. "/save", { sync = "none" }))
      local shared = setmetatable({ x = 1, y = 2 }, V)
      local pos = instate.defstate("pos", { p = shared, q = shared })
      pos:get().p.x = 10
      pos:reset()
      local v = pos:get()
      assert.equal(V, getmetatable(v.p))
      assert.equal(v.p, v.q)
      assert.equal(1, v.p.x)
      assert(instate.save_all())
      instate.teardown()
    end)
  end)

  describe("format and parse", function()
    it("render instances with their class name and read them back", function()
      local V = class("Vec2")
      local I = class("game.Item")
      local W = class("my game/Weird")
      local E = class("end")
      local v = setmetatable({ x = 1, y = 2 }, V)
      local t = { a = v, b = v, i = setmetatable({}, I), w = setmetatable({ 1 }, W),
        e = setmetatable({}, E), plain = setmetatable({ 1 }, { __index = error }) }
      local text = instate.format(t)
      assert.equal('{a = <1>Vec2{x = 1, y = 2}, b = <ref 1>, e = <class "end">{}, i = game.Item{},'
        .. ' plain = {1}, w = <class "my game/Weird">{1}}', text)
      local p = assert(instate.parse(text))
      assert.equal(p.a, p.b)
      assert.equal(V, getmetatable(p.a))
      assert.equal(I, getmetatable(p.i))
      assert.equal(W, getmetatable(p.w))
      assert.equal(E, getmetatable(p.e))
      assert.is_nil(getmetatable(p.plain))
      assert.equal(2, p.a.y)
      assert.equal("Vec2{\n  x = 1,\n  y = 2,\n}", instate.format(v, { indent = 2 }))
      assert.equal(V, getmetatable(instate.parse("{ x = Vec2 { 1 } }").x))
      assert.equal(1, instate.parse("{Vec2 = 1}").Vec2)
      local none, msg, code = instate.parse("{ Nope{} }")
      assert.is_nil(none)
      assert.equal('unknown class "Nope" (not registered) at byte 2', msg)
      assert.equal("CORRUPT", code)
      none, msg = instate.parse('<class "Vec2"> 1')
      assert.is_nil(none)
      assert.matches("a table expected after the class name", msg, 1, true)
    end)
  end)

  describe("other MessagePack readers", function()
    it("python's msgpack sees ext type 3 holding the name and the table", function()
      local V = class("Vec2")
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/v.bin", encode({ pos = setmetatable({ x = 1, y = 2 }, V) }))
      helpers.write_file(dir .. "/s.py", [[
import sys, msgpack
v = msgpack.unpackb(open(sys.argv[1] + "/v.bin", "rb").read(), raw=False)
ext = v["pos"]
assert isinstance(ext, msgpack.ExtType), ext
u = msgpack.Unpacker(raw=False)
u.feed(ext.data)
name, t = list(u)
print(ext.code, name, sorted(t.items()))
]])
      local out, ok = helpers.shell("/usr/bin/python3 " .. helpers.sh_quote(dir .. "/s.py")
        .. " " .. helpers.sh_quote(dir) .. " 2>&1")
      assert.is_true(ok, out)
      assert.equal("3 Vec2 [('x', 1), ('y', 2)]\n", out)
    end)

    it("lua-messagepack sees ext type 3", function()
      local okr, mp = pcall(require, "MessagePack")
      if not okr then
        -- Debian ships it for 5.1 to 5.3; the 5.3 file runs on 5.4
        mp = assert(loadfile("/usr/share/lua/5.3/MessagePack.lua"))("MessagePack")
      end
      local V = class("Vec2")
      local got
      local saved = mp.build_ext
      mp.build_ext = function(tag, data) got = { tag = tag, data = data }; return "ext" end
      local v = mp.unpack(encode({ setmetatable({ x = 1 }, V) }))
      mp.build_ext = saved
      assert.same({ "ext" }, v)
      assert.equal(3, got.tag)
      local parts = {}
      for _, x in mp.unpacker(got.data) do parts[#parts + 1] = x end
      assert.same({ "Vec2", { x = 1 } }, parts)
    end)
  end)
end)
