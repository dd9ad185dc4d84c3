-- Saving what changed: the fingerprint test of save_all for ordinary table
-- variables (an in-place edit is never lost), and tracked variables
-- (defstate(name, default, {track = true})).
local helpers = require "helpers"
local instate = require "instate"

local function new_path()
  return helpers.tmpdir() .. "/save"
end

local function restart(path)
  instate.teardown()
  return assert(instate.setup(path))
end

-- The value saved for name, read back in a fresh run (the store is left
-- set up again, with nothing declared).
local function saved(path, name)
  local store = restart(path)
  local bytes = store:namespace("state", "state"):get_encoded(name)
  return bytes and instate.decode(bytes)
end

-- The values save_many is handed (it encodes each one) while fn runs.
local count_encodes = helpers.count_save_many

local errmsg = helpers.errmsg

local has_subtypes = math.type ~= nil and math.type(1) == "integer"

describe("save_all's fingerprints", function()
  after_each(function() instate.teardown() end)

  local fp = instate._fingerprint

  it("are integers (5.3, 5.4) or 8 bytes, independent of next order, and give back the old one when equal", function()
    local a = { x = 1, y = "two", [3] = true, z = { 1, 2 } }
    local b = {}
    b.z = { 1, 2 }; b[3] = true; b.y = "two"; b.x = 1
    if has_subtypes then
      assert.are.equal("integer", math.type(fp(a)))
    else
      assert.are.equal(8, #fp(a))
    end
    assert.are.equal(fp(a), fp(b))
    local old = fp(a)
    assert.are.equal(old, fp(b, old))
    -- a table that grew and shrank back (another hash layout)
    for i = 1, 100 do b["k" .. i] = i end
    for i = 1, 100 do b["k" .. i] = nil end
    assert.are.equal(old, fp(b))
    assert.is_nil(fp({ f = print }))
    assert.is_nil(fp(print))
  end)

  it("tell apart what the codec tells apart", function()
    local seen = {}
    local function distinct(v, what)
      local f = fp(v)
      assert(f, what)
      assert.is_nil(seen[f], what .. " collides with " .. tostring(seen[f]))
      seen[f] = what
    end
    distinct({}, "{}")
    distinct({ 0 }, "{0}")
    distinct({ helpers.neg_zero }, "{-0.0}")
    distinct({ 0 / 0 }, "{nan}")
    distinct({ "0" }, "{'0'}")
    distinct({ false }, "{false}")
    distinct({ a = 1 }, "{a=1}")
    distinct({ b = 1 }, "{b=1}")
    distinct({ a = { 1 } }, "{a={1}}")
    distinct({ { a = 1 } }, "{{a=1}}")
    distinct({ "ab", "c" }, "{'ab','c'}")
    distinct({ "a", "bc" }, "{'a','bc'}")
    distinct({ a = 1, b = 2 }, "{a=1,b=2}")
    distinct({ a = 2, b = 1 }, "{a=2,b=1}")
    if has_subtypes then distinct({ 1.0 }, "{1.0}") end
    local x = { 1 }
    distinct({ x, x }, "shared")
    distinct({ { 1 }, { 1 } }, "copies")
    local c = { 1 }; c[2] = c
    distinct(c, "cycle")
    local d = { 1, { 1 } }
    distinct(d, "no cycle")
  end)

  it("an in-place edit at any depth is saved, and nothing else is encoded", function()
    local path = new_path()
    assert(instate.setup(path))
    local a = instate.defstate("a", { deep = { deeper = { n = 1 } } })
    instate.defstate("b", { 1, 2, 3 })
    assert.are.equal(2, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    a:get().deep.deeper.n = 2
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ deep = { deeper = { n = 2 } } }, saved(path, "a"))
  end)

  it("after a restart, tables read are not encoded unless edited; an edit is saved", function()
    local path = new_path()
    assert(instate.setup(path))
    instate.defstate("a", { n = 1 })
    instate.defstate("b", { n = 1 })
    instate.save_all()
    local store = restart(path)
    local a, b = instate.defstate("a", {}), instate.defstate("b", {})
    assert.are.equal(1, a:get().n)
    b:get().n = 5
    local rev = store:revision()
    -- each has its record's fingerprint: only b, edited, is encoded
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(rev + 1, store:revision())
    assert.are.equal(0, count_encodes(instate.save_all))
    a:get().n = 2
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 5 }, saved(path, "b"))
    assert.are.same({ n = 2 }, saved(path, "a"))
  end)

  it("a key removed and another added is saved, even with the same count", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { a = 1, b = 2 })
    instate.save_all()
    local v = t:get()
    v.a = nil
    v.c = 1
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ b = 2, c = 1 }, saved(path, "t"))
  end)

  it("integer 1 and float 1.0, -0.0 and 0.0, NaN: each change is saved", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1, z = 0.0, q = 0 })
    instate.save_all()
    t:get().n = 1.0
    if has_subtypes then
      assert.are.equal(1, count_encodes(instate.save_all))
      assert.are.equal("float", math.type(saved(path, "t").n))
      t = instate.defstate("t", {})
    else
      -- one number type: 1.0 is 1, nothing changed
      assert.are.equal(0, count_encodes(instate.save_all))
    end
    t:get().z = helpers.neg_zero
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(-math.huge, 1 / saved(path, "t").z)
    t = instate.defstate("t", {})
    t:get().q = 0 / 0
    assert.are.equal(1, count_encodes(instate.save_all))
    local q = saved(path, "t").q
    assert.is_true(q ~= q)
    t = instate.defstate("t", {})
    t:get()
    -- restored with its record's fingerprint; a NaN hashes as itself
    assert.are.equal(0, count_encodes(instate.save_all))
    t:get().q = 0
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(0, saved(path, "t").q)
  end)

  it("shared sub-tables and cycles: an edit through either path is saved, sharing kept", function()
    local path = new_path()
    assert(instate.setup(path))
    local shared = { hp = 1 }
    local t = instate.defstate("t", { a = shared, b = shared })
    local c = {}
    c.self = c
    local cyc = instate.defstate("c", c)
    instate.save_all()
    assert.are.equal(0, count_encodes(instate.save_all))
    t:get().b.hp = 2
    cyc:get().self.self.x = 1
    assert.are.equal(2, count_encodes(instate.save_all))
    local v = saved(path, "t")
    assert.are.equal(v.a, v.b)
    assert.are.equal(2, v.a.hp)
    local w = saved(path, "c")
    assert.are.equal(w, w.self)
    assert.are.equal(1, w.x)
    -- unsharing (a copy in one place) is a change of shape: saved
    t = instate.defstate("t", {})
    t:get()
    assert.are.equal(1, count_encodes(instate.save_all))   -- first save after restore
    assert.are.equal(0, count_encodes(instate.save_all))
    t:get().b = { hp = 2 }
    assert.are.equal(1, count_encodes(instate.save_all))
    v = saved(path, "t")
    assert.are_not.equal(v.a, v.b)
    assert.are.same(v.a, v.b)
  end)

  it("edits inside a transaction that is undone are still saved (set is undone, edits are not)", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 })
    instate.save_all()
    local v = t:get()
    local ok = pcall(instate.transaction, function()
      v.n = 2
      t:set({ n = 3 })
      error("no")
    end)
    assert.is_false(ok)
    assert.are.equal(v, t:get())
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 2 }, saved(path, "t"))
  end)

  it("reload_all: the reloaded table is not encoded until edited", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 })
    instate.save_all()
    t:get().n = 9
    instate.reload_all()
    assert.are.equal(1, t:get().n)
    assert.are.equal(0, count_encodes(instate.save_all))
    t:get().n = 3
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 3 }, saved(path, "t"))
  end)

  it("hot-reload re-declaration keeps the fingerprint: edits before and after are saved", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 })
    instate.save_all()
    t:get().n = 2
    local again = instate.defstate("t", { n = 100 })
    assert.are.equal(t, again)
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    again:get().n = 3
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 3 }, saved(path, "t"))
  end)

  it("a save that fails keeps the old fingerprint: the next save writes the edit", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 })
    local bad = instate.defstate("bad", 1)
    instate.save_all()
    t:get().n = 2
    bad:set(print)
    assert.matches("bad", errmsg(instate.save_all))
    bad:set(1)
    assert.are.equal(2, count_encodes(instate.save_all))   -- t and bad
    assert.are.same({ n = 2 }, saved(path, "t"))
  end)

  it("a save nested in an aborted store transaction keeps the old fingerprint", function()
    local path = new_path()
    local store = assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 })
    instate.save_all()
    t:get().n = 2
    local ok = pcall(store.transaction, store, function()
      assert(instate.save_all())
      error("abort")
    end)
    assert.is_false(ok)
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 2 }, saved(path, "t"))
  end)
end)

describe("tracked variables", function()
  after_each(function() instate.teardown() end)

  it("record writes through the returned table, at any depth; nothing else is encoded", function()
    local path = new_path()
    assert(instate.setup(path))
    local inv = instate.defstate("inv", { bag = { sword = false }, gold = 0 }, { track = true })
    instate.defstate("plain", 1)
    assert.are.equal(2, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    local v = inv:get()
    assert.are.equal(0, v.gold)
    assert.are.equal(v, inv:get())
    assert.are.equal(0, count_encodes(instate.save_all))   -- read only
    v.bag.sword = true
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    v.gold = 10
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ bag = { sword = true }, gold = 10 }, saved(path, "inv"))
    -- restored: a tracked variable again
    inv = instate.defstate("inv", {}, { track = true })
    assert.is_true(inv:get().bag.sword)
    assert.are.equal(0, count_encodes(instate.save_all))
    inv:get().bag.shield = 1
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ bag = { sword = true, shield = 1 }, gold = 10 }, saved(path, "inv"))
  end)

  it("store tables, not proxies: a table read from one and put back is saved in full", function()
    local path = new_path()
    assert(instate.setup(path))
    local v = instate.defstate("v", { a = { 1, 2 } }, { track = true })
    local p = v:get()
    p.b = p.a                                 -- the proxy of a, stored as a itself
    instate.save_all()
    local got = saved(path, "v")
    assert.are.same({ 1, 2 }, got.b)
    assert.are.equal(got.a, got.b)
  end)

  it("set, update and reset take tables (a proxy too) and mark the variable", function()
    local path = new_path()
    assert(instate.setup(path))
    local v = instate.defstate("v", { n = 1 }, { track = true })
    instate.save_all()
    v:set({ n = 2 })
    assert.are.equal(1, count_encodes(instate.save_all))
    v:set(v:get())                            -- after rawset, say: mark it
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(3, v:update(function(t) t.n = 3; return t end).n)
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 3 }, saved(path, "v"))
    v = instate.defstate("v", { n = 1 }, { track = true })
    v:reset()
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 1 }, saved(path, "v"))
    v = instate.defstate("v", {}, { track = true })
    assert.are.equal("bad argument #1 to 'set' (table expected for a tracked variable, got integer)",
      errmsg(v.set, v, 5))
    assert.are.equal("update: the function returned integer for tracked variable 'v' (a table expected)",
      errmsg(v.update, v, function() return 1 end))
  end)

  it("raise clearly on a non-table default or saved value, and on a bad option", function()
    local path = new_path()
    assert(instate.setup(path))
    assert.matches("bad argument #2 to 'defstate' %(a tracked variable's default must be a table, got integer%)",
      errmsg(instate.defstate, "n", 1, { track = true }))
    assert.matches("bad argument #3 to 'defstate' %(track must be a boolean, got string%)",
      errmsg(instate.defstate, "n", {}, { track = "yes" }))
    instate.defstate("n", 5)
    instate.save_all()
    restart(path)
    assert.matches("instate.defstate: variable 'n' is tracked but its saved value is integer (a table expected)",
      errmsg(instate.defstate, "n", {}, { track = true }), 1, true)
  end)

  it("saved() says whether the store holds it; after teardown it raises at the caller", function()
    assert(instate.setup(new_path()))
    local v = instate.defstate("v", { n = 1 }, { track = true })
    assert.is_false(v:saved())
    instate.save_all()
    assert.is_true(v:saved())
    instate.teardown()
    local ok, err = pcall(function() local is = v:saved(); return is end)
    assert.is_false(ok)
    assert.matches("^.-23%-defstate_tracked_spec%.lua:%d+: instate: variable 'v' was forgotten by instate%.teardown%(%)", err)
  end)

  it("transaction undoes a set and leaves the variable to be saved", function()
    local path = new_path()
    assert(instate.setup(path))
    local v = instate.defstate("v", { n = 1 }, { track = true })
    instate.save_all()
    local ok = pcall(instate.transaction, function()
      v:get().n = 2
      v:set({ n = 3 })
      error("no")
    end)
    assert.is_false(ok)
    assert.are.equal(2, v:get().n)            -- the edit stays, the set is undone
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 2 }, saved(path, "v"))
  end)

  it("save_all stays all or nothing: a failing validate writes nothing and keeps the mark", function()
    local path = new_path()
    assert(instate.setup(path))
    local v = instate.defstate("v", { n = 1 }, { track = true,
      validate = function(t) return t.n > 0, "n must be positive" end })
    local w = instate.defstate("w", 1)
    instate.save_all()
    v:get().n = -1
    w:set(2)
    assert.matches("variable 'v' is invalid: n must be positive", errmsg(instate.save_all), 1, true)
    v:get().n = 5
    assert.are.equal(2, count_encodes(instate.save_all))
    assert.are.same({ n = 5 }, saved(path, "v"))
    assert.are.equal(2, saved(path, "w"))
  end)

  it("reload_all reverts and leaves it clean; versions and migrate work", function()
    local path = new_path()
    assert(instate.setup(path))
    local v = instate.defstate("v", { n = 1 }, { track = true })
    instate.save_all()
    v:get().n = 7
    instate.reload_all()
    assert.are.equal(1, v:get().n)
    assert.are.equal(0, count_encodes(instate.save_all))
    restart(path)
    v = instate.defstate("v", {}, { track = true, version = 2,
      migrate = function(old, ver) old.m = ver; return old end })
    assert.are.same(1, v:get().m)
    assert.are.equal(1, count_encodes(instate.save_all))   -- migrated: rewritten
    assert.are.same({ n = 1, m = 1 }, saved(path, "v"))
  end)

  it("pairs and # see the table on 5.2+ (5.1 and LuaJIT: the proxy)", function()
    assert(instate.setup(new_path()))
    local v = instate.defstate("v", { 10, 20, 30 }, { track = true })
    local p = v:get()
    local n = 0
    for _ in pairs(p) do n = n + 1 end
    local lua52 = _VERSION ~= "Lua 5.1"
    -- 5.1, LuaJIT: the proxy's own two private fields, not the entries
    assert.are.equal(lua52 and 3 or 2, n)
    assert.are.equal(lua52 and 3 or 0, #p)
    assert.are.equal(20, p[2])
    assert.is_nil(rawget(p, 2))
  end)
end)
