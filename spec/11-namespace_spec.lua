-- Namespace: every call, iteration and its snapshot lifetime, and value
-- round-trips through the store.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

local function bits(x) return helpers.float_bits(x) end

describe("namespace", function()
  local store, ns
  before_each(function()
    store = assert(instate.open(helpers.tmpdir() .. "/s", { sync = "none" }))
    ns = store:namespace("items")
  end)
  after_each(function() store:close() end)

  it("has its name", function()
    assert.are.equal("items", ns.name)
    assert.are.equal("instate.Namespace (items)", tostring(ns))
    -- handles on other namespaces, of the store or of a transaction
    local other = store:namespace("other")
    assert.are.equal("other", other.name)
    assert.are.equal("items", ns.name)
    store:snapshot(function(tx)
      local tns = tx:namespace("items")
      assert.are.equal("items", tns.name)
      assert.are.equal(ns.get, tns.get)   -- one set of methods
    end)
    assert.is_nil(ns.no_such_field)
  end)

  it("methods refuse what is not a namespace handle", function()
    for _, bad in ipairs({ {}, store, "items", io.stdout }) do
      assert.has_error(function() ns.get(bad, "k") end,
        "bad argument #1 to 'get' (instate.Namespace expected, got " ..
        (bad == store and "instate.Store" or bad == io.stdout and "FILE*" or type(bad)) .. ")")
    end
    -- a table dressed up with the namespace's metatable is still refused
    local fake = setmetatable({}, getmetatable(ns))
    local ok, err = pcall(function() fake:get("k") end)
    assert.is_false(ok)
    assert.matches("calling 'get' on bad self %(instate%.Namespace expected, got table%)$", err)
    -- the name is read-only (today Lua's own message: the handle has no __newindex)
    ok, err = pcall(function() ns.name = "renamed" end)
    assert.is_false(ok)
    assert.is_truthy(err:find("read-only", 1, true)
      or err:find(helpers.index_error("instate.Namespace", "upvalue 'ns'"), 1, true), err)
    assert.are.equal("items", ns.name)
  end)

  describe("get/set/delete", function()
    it("reads nil or the default for a missing key", function()
      assert.is_nil(ns:get("none"))
      assert.are.equal("dflt", ns:get("none", "dflt"))
      assert.are.same({ 1 }, ns:get("none", { 1 }))
    end)

    it("returns the stored value rather than the default", function()
      ns:set("k", false)
      assert.is_false(ns:get("k", "dflt"))
    end)

    it("set returns true and overwrites", function()
      assert.is_true(ns:set("k", 1))
      assert.is_true(ns:set("k", "two"))
      assert.are.equal("two", ns:get("k"))
      assert.are.equal(1, ns:count())
    end)

    it("set to nil deletes", function()
      ns:set("k", 1)
      assert.is_true(ns:set("k", nil))
      assert.is_nil(ns:get("k"))
      assert.is_false(ns:has("k"))
      assert.are.equal(0, ns:count())
    end)

    it("delete tells whether the key existed", function()
      ns:set("k", 1)
      assert.is_true(ns:delete("k"))
      assert.is_false(ns:delete("k"))
      assert.is_false(ns:delete("never"))
    end)

    it("namespaces are separate", function()
      local other = store:namespace("other")
      ns:set("k", 1)
      other:set("k", 2)
      assert.are.equal(1, ns:get("k"))
      assert.are.equal(2, other:get("k"))
      ns:clear()
      assert.are.equal(2, other:get("k"))
    end)

    it("two handles on one namespace see the same records", function()
      local again = store:namespace("items")
      ns:set("k", 1)
      assert.are.equal(1, again:get("k"))
    end)

    it("raises on an unstorable value, naming its path, and stores nothing", function()
      local ok, err = pcall(ns.set, ns, "k", { items = { 1, 2, { on_use = print } } })
      assert.is_false(ok)
      assert.matches("function", err, 1, true)
      assert.matches("on_use", err, 1, true)
      assert.is_false(ns:has("k"))
      assert.is_false(pcall(ns.set, ns, "k", coroutine.create(function() end)))
      assert.is_false(pcall(ns.set, ns, "k", io.stdout))
      assert.are.equal(0, ns:count())
    end)

    it("raises on bad set options", function()
      assert.has_error(function() ns:set("k", 1, "ttl") end,
        "bad argument #3 to 'set' (table expected, got string)")
      assert.has_error(function() ns:set("k", 1, { ttl = "soon" }) end,
        "bad argument #3 to 'set' (option 'ttl' must be a number)")
      assert.has_error(function() ns:set("k", 1, { ttl = -1 }) end,
        "bad argument #3 to 'set' (ttl must be a positive number of seconds)")
      assert.has_error(function() ns:set("k", 1, { tll = 1 }) end,
        "bad argument #3 to 'set' (unknown option 'tll')")
      assert.is_false(ns:has("k"))
    end)
  end)

  describe("add", function()
    it("stores only when the key is absent", function()
      assert.is_true(ns:add("k", 1))
      assert.is_false(ns:add("k", 2))
      assert.are.equal(1, ns:get("k"))
      ns:delete("k")
      assert.is_true(ns:add("k", 3))
      assert.are.equal(3, ns:get("k"))
    end)

    it("accepts a ttl", function()
      assert.is_true(ns:add("k", 1, { ttl = 60 }))
      assert.are.equal("number", type(ns:ttl("k")))
    end)

    it("does not touch the record when the key exists", function()
      instate._set_clock(1700000000000)
      local ok, err = pcall(function()
        ns:set("k", 1, { ttl = 10 })
        assert.is_false(ns:add("k", 2, { ttl = 99 }))
        assert.are.equal(1, ns:get("k"))
        assert.are.equal(10, ns:ttl("k"))
      end)
      instate._set_clock(nil)
      assert(ok, err)
    end)
  end)

  describe("has", function()
    it("is a boolean", function()
      assert.is_false(ns:has("k"))
      ns:set("k", false)
      assert.is_true(ns:has("k"))
    end)
  end)

  describe("update", function()
    it("passes the old value and stores and returns the new one", function()
      ns:set("k", { n = 1 })
      local got = ns:update("k", function(old)
        old.n = old.n + 1
        return old
      end)
      assert.are.same({ n = 2 }, got)
      assert.are.same({ n = 2 }, ns:get("k"))
    end)

    it("passes the default for a missing key", function()
      local seen
      assert.are.equal(11, ns:update("k", function(old) seen = old; return old + 1 end, 10))
      assert.are.equal(10, seen)
      assert.are.equal(11, ns:get("k"))
    end)

    it("passes nil without a default", function()
      local called, seen = false, "unset"
      ns:update("k", function(old) called, seen = true, old; return "x" end)
      assert.is_true(called)
      assert.is_nil(seen)
      assert.are.equal("x", ns:get("k"))
    end)

    it("deletes when fn returns nil", function()
      ns:set("k", 1)
      assert.is_nil(ns:update("k", function() return nil end))
      assert.is_false(ns:has("k"))
    end)

    it("re-raises fn's error and changes nothing", function()
      ns:set("k", 1)
      local rev = store:revision()
      local ok, err = pcall(ns.update, ns, "k", function() error("boom", 0) end)
      assert.is_false(ok)
      assert.are.equal("boom", err)
      assert.are.equal(1, ns:get("k"))
      assert.are.equal(rev, store:revision())
      -- the write slot was released
      assert.is_true(ns:set("k", 2))
    end)

    it("raises on an unstorable result and changes nothing", function()
      ns:set("k", 1)
      assert.has_error(function() ns:update("k", function() return print end) end,
        "cannot store a function at k")
      assert.are.equal(1, ns:get("k"))
      assert.is_true(ns:set("k", 2))
    end)

    it("raises when fn is not a function", function()
      assert.has_error(function() ns:update("k", 1) end,
        "bad argument #2 to 'update' (function expected, got number)")
      assert.has_error(function() ns:update("k") end,
        "bad argument #2 to 'update' (function expected, got nil)")
    end)
  end)

  describe("incr", function()
    it("counts from init by delta", function()
      assert.are.equal(1, ns:incr("c"))
      assert.are.equal(2, ns:incr("c"))
      assert.are.equal(12, ns:incr("c", 10))
      assert.are.equal(7, ns:incr("c", -5))
      assert.are.equal(105, ns:incr("d", 5, 100))
      assert.are.equal(7, ns:get("c"))
      assert.are.equal("integer", compat.math_type(ns:get("c")))
    end)

    it("handles floats", function()
      assert.are.equal(1.5, ns:incr("f", 1.5))
      assert.are.equal(2.0, ns:incr("f", 0.5))
      if compat.integers then assert.are.equal("float", math.type(ns:get("f"))) end
    end)

    it("raises on a non-number value and leaves it", function()
      ns:set("s", "text")
      assert.has_error(function() ns:incr("s") end,
        "cannot incr key 's': its value is a string, not a number")
      assert.are.equal("text", ns:get("s"))
      assert.has_error(function() ns:incr("c", "one") end,
        "bad argument #2 to 'incr' (number expected, got string)")
      assert.has_error(function() ns:incr("c", 1, {}) end,
        "bad argument #3 to 'incr' (number expected, got table)")
      assert.is_false(ns:has("c"))
    end)

    it("keeps the record's expiry", function()
      instate._set_clock(1700000000000)
      local ok, err = pcall(function()
        ns:set("c", 1, { ttl = 10 })
        ns:incr("c")
        assert.are.equal(10, ns:ttl("c"))
      end)
      instate._set_clock(nil)
      assert(ok, err)
    end)
  end)

  describe("ttl/expire", function()
    it("ttl is nil when absent and false without expiry", function()
      assert.is_nil(ns:ttl("k"))
      ns:set("k", 1)
      assert.is_false(ns:ttl("k"))
    end)

    it("expire sets and removes the expiry and tells whether the key exists", function()
      assert.is_false(ns:expire("k", 5))
      ns:set("k", 1)
      assert.is_true(ns:expire("k", 5))
      local left = ns:ttl("k")
      assert.is_true(left > 4 and left <= 5)
      assert.is_true(ns:expire("k", 0))
      assert.is_false(ns:ttl("k"))
      assert.are.equal(1, ns:get("k"))
    end)

    it("raises on a bad expire argument", function()
      ns:set("k", 1)
      assert.has_error(function() ns:expire("k") end,
        "bad argument #2 to 'expire' (number expected, got no value)")
      assert.has_error(function() ns:expire("k", "soon") end,
        "bad argument #2 to 'expire' (number expected, got string)")
      assert.has_error(function() ns:expire("k", -1) end,
        "bad argument #2 to 'expire' (ttl must be a non-negative number of seconds)")
      assert.is_false(ns:ttl("k"))
    end)
  end)

  describe("count/clear", function()
    it("counts live records and clears them", function()
      assert.are.equal(0, ns:count())
      for i = 1, 25 do ns:set("k" .. i, i) end
      assert.are.equal(25, ns:count())
      assert.are.equal(25, ns:clear())
      assert.are.equal(0, ns:count())
      assert.are.equal(0, ns:clear())
      assert.is_nil(ns:get("k1"))
    end)

    it("_count_hint counts what is stored, expired records too, without a walk", function()
      assert.are.equal(0, ns:_count_hint())
      for i = 1, 25 do ns:set("k" .. i, i) end
      instate._set_clock(1700000000000)
      ns:set("soon", 1, { ttl = 1 })
      instate._set_clock(1700000005000)
      local ok, err = pcall(function()
        assert.are.equal(25, ns:count())
        assert.are.equal(26, ns:_count_hint())
      end)
      instate._set_clock(nil)
      assert(ok, err)
      ns:clear()
      assert.are.equal(0, ns:_count_hint())
    end)
  end)

  describe("pairs", function()
    local function collect(iter_ns, prefix)
      local keys, vals = {}, {}
      for k, v in iter_ns:pairs(prefix) do
        keys[#keys + 1] = k
        vals[#vals + 1] = v
      end
      return keys, vals
    end

    it("iterates nothing over an empty or missing namespace", function()
      assert.are.same({}, (collect(ns)))
      assert.are.same({}, (collect(store:namespace("missing"))))
    end)

    it("iterates in key byte order", function()
      local keys = { "b", "a", "ab", "B", "\0", "\255", "aa", "a\0" }
      for i, k in ipairs(keys) do ns:set(k, i) end
      local got, vals = collect(ns)
      table.sort(keys)
      assert.are.same(keys, got)
      assert.are.equal(#keys, #vals)
      assert.are.equal(1, vals[#vals - 1]) -- "b", before "\255"
    end)

    it("filters by prefix", function()
      for _, k in ipairs({ "user:1", "user:2", "user:10", "users", "use", "item:1", "v" }) do
        ns:set(k, k)
      end
      assert.are.same({ "user:1", "user:10", "user:2" }, (collect(ns, "user:")))
      assert.are.same({ "use", "user:1", "user:10", "user:2", "users" }, (collect(ns, "use")))
      assert.are.same({}, (collect(ns, "zzz")))
      assert.are.same({}, (collect(ns, "user:1\0")))
      assert.are.equal(7, #(collect(ns, "")))
      local _, vals = collect(ns, "item")
      assert.are.same({ "item:1" }, vals)
    end)

    it("a prefix of 255 bytes ending in \\255 works", function()
      local p = string.rep("\255", 10)
      ns:set(p, 1)
      ns:set(p .. "\255", 2)
      ns:set(string.rep("\255", 9), 3)
      assert.are.same({ p, p .. "\255" }, (collect(ns, p)))
    end)

    it("raises on a prefix that is not a string", function()
      assert.has_error(function() ns:pairs({}) end,
        "bad argument #1 to 'pairs' (string expected, got table)")
      assert.has_error(function() ns:pairs(true) end,
        "bad argument #1 to 'pairs' (string expected, got boolean)")
    end)

    it("reads one snapshot: writes during the loop are not seen", function()
      for i = 1, 5 do ns:set("k" .. i, i) end
      local seen = {}
      for k, v in ns:pairs() do
        seen[#seen + 1] = v
        if k == "k1" then
          ns:set("k0", 0)
          ns:set("k9", 9)
          ns:delete("k5")
          ns:set("k3", 33)
        end
      end
      assert.are.same({ 1, 2, 3, 4, 5 }, seen)
      assert.are.same({ "k0", "k1", "k2", "k3", "k4", "k9" }, (collect(ns)))
      assert.are.equal(33, ns:get("k3"))
    end)

    -- LMDB has a fixed table of reader slots: a snapshot that is never
    -- released keeps one forever, so running more loops than there are
    -- slots proves each one was given back.
    -- A loop left early ends its snapshot at once through the for loop's
    -- closing value (5.4); elsewhere the iterator keeps it until collected.
    if compat.to_be_closed then
      it("releases its snapshot on break", function()
        for i = 1, 3 do ns:set("k" .. i, i) end
        local slots = store:stats().max_readers
        collectgarbage("stop")
        local ok, err = pcall(function()
          for _ = 1, slots + 20 do
            for k in ns:pairs() do
              if k == "k2" then break end
            end
          end
        end)
        collectgarbage("restart")
        assert(ok, err)
        assert.is_true(ns:set("k4", 4))
      end)

      it("releases its snapshot when the loop raises", function()
        ns:set("k", 1)
        local slots = store:stats().max_readers
        collectgarbage("stop")
        for _ = 1, slots + 20 do
          local ok, err = pcall(function()
            for _ in ns:pairs() do error("stop", 0) end
          end)
          assert.are.equal("stop", err)
          assert.is_false(ok)
        end
        collectgarbage("restart")
        assert.are.equal(1, ns:count())
      end)
    else
      it("a loop left by break or a raise keeps its snapshot until collected", function()
        for i = 1, 3 do ns:set("k" .. i, i) end
        local slots = store:stats().max_readers
        for _ = 1, slots + 20 do
          for k in ns:pairs() do
            if k == "k2" then break end
          end
          local ok, err = pcall(function()
            for _ in ns:pairs() do error("stop", 0) end
          end)
          assert.is_false(ok)
          assert.are.equal("stop", err)
          collectgarbage()
          collectgarbage()
        end
        assert.is_true(ns:set("k4", 4))
        assert.are.equal(4, ns:count())
      end)
    end

    it("releases its snapshot when run to the end", function()
      ns:set("k", 1)
      local slots = store:stats().max_readers
      collectgarbage("stop")
      local ok, err = pcall(function()
        for _ = 1, slots + 20 do
          local iter, state = ns:pairs()
          assert.are.equal("k", (iter(state)))
          assert.is_nil(iter(state))
        end
      end)
      collectgarbage("restart")
      assert(ok, err)
    end)

    it("releases its snapshot when the iterator is collected", function()
      ns:set("a", 1)
      ns:set("b", 2)
      local slots = store:stats().max_readers
      for _ = 1, slots + 20 do
        -- the state holds the snapshot; the function is shared
        local iter, state = ns:pairs()
        assert.are.equal("a", (iter(state)))
        iter, state = nil, nil -- luacheck: ignore
        collectgarbage()
        collectgarbage()
      end
      assert.are.equal(2, ns:count())
    end)

    -- The control for the three tests above: held snapshots do run out.
    it("holding more snapshots than reader slots fails cleanly", function()
      ns:set("a", 1)
      local slots = store:stats().max_readers
      local held, failed = {}, false
      for _ = 1, slots + 5 do
        local ok, iter, state = pcall(ns.pairs, ns)
        if not ok or iter == nil then failed = true; break end
        local ok2, k = pcall(iter, state)
        if not ok2 or k ~= "a" then failed = true; break end
        held[#held + 1] = state
      end
      assert.is_true(failed)
      held = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.are.equal(1, ns:count())
    end)

    it("raises 'iterator is closed' when stepped after its loop ended", function()
      ns:set("a", 1)
      ns:set("b", 2)
      local iter, state, init, closing = ns:pairs()
      assert.is_not_nil(iter)
      assert.is_not_nil(closing)
      assert.are.equal("a", (iter(state, init)))
      -- the closing value is what the generic for closes on break
      local close = getmetatable(closing).__close
      close(closing)
      close(closing)
      local ok, err = pcall(iter, state, "a")
      assert.is_false(ok)
      assert.matches("iterator is closed", err, 1, true)
    end)

    it("works inside a transaction and sees its own writes", function()
      ns:set("a", 1)
      store:transaction(function(tx)
        local tns = tx:namespace("items")
        tns:set("b", 2)
        assert.are.same({ "a", "b" }, (collect(tns)))
      end)
    end)
  end)

  describe("closed namespaces", function()
    it("a method called on a non-namespace raises", function()
      assert.has_error(function() ns.get({}, "k") end,
        "bad argument #1 to 'get' (instate.Namespace expected, got table)")
      assert.has_error(function() ns.set("x", "k", 1) end,
        "bad argument #1 to 'set' (instate.Namespace expected, got string)")
    end)
  end)
end)

describe("values through the store", function()
  local store, ns
  setup(function()
    store = assert(instate.open(helpers.tmpdir() .. "/s", { sync = "none" }))
    ns = store:namespace("v")
  end)
  teardown(function() store:close() end)

  local function roundtrip(v)
    assert.is_true(ns:set("k", v))
    return ns:get("k")
  end

  if compat.integers then
    it("keeps integers exact over 64 bits", function()
      for _, n in ipairs({ 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536,
                           math.tointeger(2^31), -math.tointeger(2^31), math.tointeger(2^32), math.maxinteger, math.mininteger }) do
        local got = roundtrip(n)
        assert.are.equal("integer", math.type(got), tostring(n))
        assert.are.equal(n, got)
      end
    end)
  else
    it("keeps integral numbers exact up to 2^53", function()
      for _, n in ipairs({ 0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536,
                           2^31, -2^31, 2^32, 2^53, -2^53 }) do
        local got = roundtrip(n)
        assert.are.equal("integer", compat.math_type(got), tostring(n))
        assert.are.equal(n, got)
      end
    end)
  end

  it("keeps float bits exact", function()
    for _, x in ipairs({ 0.0, helpers.neg_zero, 1.5, -1e308, 1/0, -1/0, 0/0, 2^53, 5e-324, 3.0 }) do
      local got = roundtrip(x)
      if compat.integers then assert.are.equal("float", math.type(got), tostring(x)) end
      assert.are.equal(bits(x), bits(got), tostring(x))
    end
  end)

  it("keeps strings byte for byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    for _, s in ipairs({ "", "a", table.concat(all), string.rep("x", 70000), "\0\0" }) do
      assert.are.equal(s, roundtrip(s))
    end
  end)

  it("keeps booleans and nested tables, and nil inside tables", function()
    assert.is_true(roundtrip(true))
    assert.is_false(roundtrip(false))
    local v = { x = 1.5, y = -3, name = "item-123", tags = { "a", "b", "c" }, hp = 100,
                alive = true, [1] = "one", [2.5] = "float key", [true] = false,
                nested = { deeper = { deepest = {} } } }
    assert.are.same(v, roundtrip(v))
    local holes = roundtrip({ 1, nil, 3 })
    assert.are.equal(1, holes[1])
    assert.is_nil(holes[2])
    assert.are.equal(3, holes[3])
  end)

  it("preserves shared sub-tables and cycles", function()
    local shared = { hp = 1 }
    local v = { a = shared, b = shared }
    v.self = v
    local got = roundtrip(v)
    assert.are.equal(got.a, got.b)
    assert.are.equal(got, got.self)
    assert.are.equal(1, got.a.hp)
  end)

  it("refuses unregistered metatables unless told to drop them", function()
    local v = setmetatable({ 1 }, { __index = function() return 0 end })
    assert.has_error(function() ns:set("mt", { inv = { v } }) end,
      "cannot store a table with an unregistered metatable at mt.inv[1]")
    assert.is_nil(ns:get("mt"))
    assert.is_true(ns:set("mt", v, { metatables = "drop" }))
    local got = ns:get("mt")
    assert.is_nil(getmetatable(got))
    assert.is_nil(got[2])
    local ok, err = pcall(ns.set, ns, "mt", v, { metatables = "keep" })
    assert.is_false(ok)
    assert.matches([[option 'metatables' must be "error" or "drop", got "keep"]], err, 1, true)
  end)

  it("decodes a fresh copy each time", function()
    ns:set("t", { n = 1 })
    local a, b = ns:get("t"), ns:get("t")
    assert.are_not.equal(a, b)
    a.n = 2
    assert.are.equal(1, ns:get("t").n)
  end)
end)
