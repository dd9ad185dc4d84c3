-- Saving what changed: the fingerprint test of save_all for ordinary table
-- variables (an in-place edit is never lost), and tracked variables
-- (defstate(name, default, {track = true})).
local helpers = require "helpers"
local instate = require "instate"

local function new_path()
  return helpers.tmpdir() .. "/save"
end

local function restart(path) return helpers.restart(instate, path) end
local function saved(path, name) return helpers.saved(instate, path, name) end

-- The values save_many is handed (it encodes each one) while fn runs.
local count_encodes = helpers.count_save_many

-- A variable t (declared with opts) saved, then edited in place and saved
-- inside a store transaction that aborts: the next save writes it again.
local function aborted_nested_save(opts)
  local path = new_path()
  local store = assert(instate.setup(path))
  local t = instate.defstate("t", { n = 1 }, opts)
  assert(instate.save_all())
  t:get().n = 2
  local ok = pcall(store.transaction, store, function()
    assert(instate.save_all())
    error("abort")
  end)
  assert.is_false(ok)
  assert.are.equal(1, count_encodes(instate.save_all))
  assert.are.same({ n = 2 }, saved(path, "t"))
end

local errmsg = helpers.errmsg

local has_subtypes = math.type ~= nil and math.type(1) == "integer"

describe("save_all's fingerprints", function()
  after_each(function() instate.teardown() end)

  local fp = instate._fingerprint

  it("are 64-bit integers (5.3, 5.4) or 53-bit integral numbers, independent of next order, and give back the old one when equal", function()
    local a = { x = 1, y = "two", [3] = true, z = { 1, 2 } }
    local b = {}
    b.z = { 1, 2 }; b[3] = true; b.y = "two"; b.x = 1
    if has_subtypes then
      assert.are.equal("integer", math.type(fp(a)))
    else
      local f = fp(a)
      assert.are.equal("number", type(f))
      assert.is_true(f >= 0 and f < 2 ^ 53 and f == math.floor(f))
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
    aborted_nested_save(nil)
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

-- A tracked variable is on save_all's list from its write until a save has
-- written it; a clean one costs a save nothing (not even its validate). No
-- write is ever lost on the way.
describe("tracked variables leave the save list once saved", function()
  after_each(function() instate.teardown() end)

  local SMALL = { map_size = 1024 * 1024, max_size = 1024 * 1024 }

  -- A store of 1 MiB set up with big = "" and a tracked t = {n = 1}
  -- declared (not saved yet); fill(big, seed) makes the next save fail
  -- with MAP_FULL.
  local function small_store()
    local path = new_path()
    assert(instate.setup(path, SMALL))
    local big = instate.defstate("big", "")
    local t = instate.defstate("t", { n = 1 }, { track = true })
    return path, big, t
  end
  local function fill(big, seed) big:set(helpers.noise(2 * 1024 * 1024, seed)) end

  -- A tracked variable whose validate counts the saves that look at it.
  local function counted(name, default)
    local calls = { n = 0 }
    local var = instate.defstate(name, default, { track = true,
      validate = function() calls.n = calls.n + 1; return true end })
    return var, calls
  end

  it("a saved one is not looked at again until it is written", function()
    local path = new_path()
    assert(instate.setup(path))
    local a, ca = counted("a", { n = 1 })
    local b, cb = counted("b", { n = 1 })
    assert.are.equal(2, count_encodes(instate.save_all))   -- the declaration save
    assert.are.same({ 1, 1 }, { ca.n, cb.n })
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.same({ 1, 1 }, { ca.n, cb.n })               -- neither looked at
    a:get().n = 2
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ 2, 1 }, { ca.n, cb.n })
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.same({ 2, 1 }, { ca.n, cb.n })
    -- every way of writing it brings it back, once
    b:get().n = 2; b:get().m = 3
    a:set({ n = 5 })
    assert.are.equal(2, count_encodes(instate.save_all))
    assert.are.same({ 3, 2 }, { ca.n, cb.n })
    b:update(function(t) t.n = 4; return t end)
    assert.are.equal(1, count_encodes(instate.save_all))
    a:reset()
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ 4, 3 }, { ca.n, cb.n })
    assert.are.equal(0, count_encodes(instate.save_all))
    -- reload_all leaves it as saved: clean and off the list
    a:get().n = 9
    assert(instate.reload_all())
    local after = ca.n                                      -- reload_all validates
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.equal(after, ca.n)
    assert.are.same({ n = 1 }, saved(path, "a"))
    assert.are.same({ n = 4, m = 3 }, saved(path, "b"))
  end)

  it("in a later run too, among untracked variables that stay", function()
    local path = new_path()
    assert(instate.setup(path))
    instate.defstate("t", { n = 1 }, { track = true })
    instate.defstate("u", { n = 1 })
    instate.defstate("s", 1)
    instate.save_all()
    restart(path)
    local t, ct = counted("t", {})
    local u = instate.defstate("u", {})
    local s = instate.defstate("s", 0)
    u:get(); s:get(); t:get()
    assert.are.equal(1, ct.n)                               -- the restore's
    -- u: read, unchanged (its record's fingerprint, taken at restore, says so)
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.equal(1, ct.n)
    t:get().n = 2
    u:get().n = 2
    s:set(2)
    assert.are.equal(3, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.equal(2, ct.n)
    u:get().n = 3                                           -- untracked: still seen
    assert.are.equal(1, count_encodes(instate.save_all))
    restart(path)
    assert.are.same({ n = 2 }, saved(path, "t"))
    assert.are.same({ n = 3 }, saved(path, "u"))
    assert.are.equal(2, saved(path, "s"))
  end)

  it("a write during an async save in flight is saved by the next one", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 }, { track = true })
    assert(instate.save_all())
    t:get().n = 2
    assert(instate.save_all({ async = true }))
    t:get().n = 3                    -- after it was handed over
    assert(instate.flush())
    assert.are.equal(1, count_encodes(function() assert(instate.save_all({ async = true })) end))
    assert(instate.flush())
    assert.are.same({ n = 3 }, saved(path, "t"))
  end)

  it("a failed async save leaves them to be saved by the next one", function()
    local path, big, t = small_store()
    local u = instate.defstate("u", { n = 1 }, { track = true })
    assert(instate.save_all())
    t:get().n = 2
    fill(big, 5)
    assert(instate.save_all({ async = true }))
    -- a later save: not committed after the failure, or (if the writer
    -- met the failure already) not handed over
    u:get().n = 2
    local ticket, _, code = instate.save_all({ async = true })
    if ticket then
      local rev
      rev, _, code = instate.flush()
      assert.is_nil(rev)
    end
    assert.equal("MAP_FULL", code)
    big:set("small")
    assert.are.equal(3, count_encodes(function() assert(instate.save_all({ async = true })) end))
    assert(instate.flush())
    assert.are.equal(0, count_encodes(instate.save_all))
    assert.are.same({ n = 2 }, saved(path, "t"))
    assert.are.same({ n = 2 }, saved(path, "u"))
  end)

  it("an async failure reported by the next save_all leaves them to the one after", function()
    local path, big, t = small_store()
    assert(instate.save_all())
    t:get().n = 2
    fill(big, 6)
    assert(instate.save_all({ async = true }))
    os.execute(("sleep %.3f"):format(os.getenv("INSTATE_SANITIZE") and 2 or 1))
    big:set("small")
    local ticket, _, code = instate.save_all({ async = true })
    assert.is_nil(ticket)
    assert.equal("MAP_FULL", code)
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.are.same({ n = 2 }, saved(path, "t"))
  end)

  it("a failed sync save leaves them to be saved by the next one", function()
    local path, big, t = small_store()
    local bad = instate.defstate("bad", 1)
    assert(instate.save_all())
    -- fails at encoding
    t:get().n = 2
    bad:set(print)
    assert.matches("bad", errmsg(instate.save_all))
    bad:set(1)
    -- fails at the commit
    fill(big, 7)
    local rev, _, code = instate.save_all()
    assert.is_nil(rev)
    assert.equal("MAP_FULL", code)
    big:set("small")
    assert.are.equal(3, count_encodes(instate.save_all))   -- t, bad, big
    assert.are.same({ n = 2 }, saved(path, "t"))
  end)

  it("a save nested in an aborted store transaction leaves them on the list", function()
    aborted_nested_save({ track = true })
  end)

  it("a write after an instate.transaction ended is recorded (and outside, not undone)", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 }, { track = true })
    assert(instate.save_all())
    assert.are.equal(1, instate.transaction(function() return 1 end))
    t:get().n = 2
    assert.is_false(pcall(instate.transaction, function() error("no") end))
    t:get().n = 3
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 3 }, saved(path, "t"))
  end)

  it("transaction undo, reload_all and reset after a save: each is saved as it should", function()
    local path = new_path()
    assert(instate.setup(path))
    local t = instate.defstate("t", { n = 1 }, { track = true })
    local u = instate.defstate("u", { n = 1 }, { track = true })
    assert(instate.save_all())
    -- undo of a set: the edit stays and is saved
    local ok = pcall(instate.transaction, function()
      t:get().n = 2
      t:set({ n = 3 })
      error("no")
    end)
    assert.is_false(ok)
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 2 }, saved(path, "t"))
    t = instate.defstate("t", {}, { track = true })
    u = instate.defstate("u", {}, { track = true })
    -- undo of a set alone, on a clean variable: rewritten (same bytes)
    ok = pcall(instate.transaction, function() u:set({ n = 9 }); error("no") end)
    assert.is_false(ok)
    assert.are.equal(1, u:get().n)
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.equal(0, count_encodes(instate.save_all))
    -- reload_all: clean again, off the list; a write after it is saved
    u:get().n = 7
    assert(instate.reload_all())
    assert.are.equal(1, u:get().n)
    assert.are.equal(0, count_encodes(instate.save_all))
    u:get().n = 8
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 8 }, saved(path, "u"))
    t = instate.defstate("t", {}, { track = true })
    -- reload_all of one written but unsaved, then written again
    t:get().n = 5
    assert(instate.reload_all())
    t:get().m = 1
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.are.same({ n = 2, m = 1 }, saved(path, "t"))
  end)

  it("many variables: any subset written between saves is saved, the rest never encoded", function()
    local path = new_path()
    assert(instate.setup(path))
    local N = 200
    local vars = {}
    for i = 1, N do vars[i] = instate.defstate("v" .. i, { n = 0 }, { track = true }) end
    assert.are.equal(N, count_encodes(instate.save_all))
    local want = {}
    for i = 1, N do want[i] = 0 end
    local seed = 7
    for round = 1, 30 do
      local written = {}
      local k = 0
      for _ = 1, round % 7 + 1 do
        seed = (seed * 1103515245 + 12345) % 2147483648
        local i = seed % N + 1
        vars[i]:get().n = round
        want[i] = round
        if not written[i] then written[i] = true; k = k + 1 end
      end
      if round % 3 == 0 then
        assert.are.equal(k, count_encodes(function() assert(instate.save_all({ async = true })) end))
      else
        assert.are.equal(k, count_encodes(instate.save_all))
      end
    end
    assert(instate.flush())
    local ns = restart(path):namespace("state", "state")
    for i = 1, N do
      assert.are.equal(want[i], ns:get("v" .. i).n, "v" .. i)
    end
  end)
end)
