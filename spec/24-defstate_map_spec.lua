-- Map variables (instate.defmap): entries as records of their own, read
-- lazily; save_all, reload_all, transaction, versions, validate, teardown.
local helpers = require "helpers"
local instate = require "instate"

local function new_path()
  return helpers.tmpdir() .. "/save"
end

local function restart(path, opts) return helpers.restart(instate, path, opts) end

local errmsg = helpers.errmsg

local ns_methods = helpers.ns_methods

-- The record writes and reads made while fn runs, by namespace name:
-- { writes = {[ns] = n}, reads = {[ns] = n} }.
local function count_io(fn)
  local m = ns_methods()
  local set_encoded, delete, get_encoded, get_all = m.set_encoded, m.delete, m.get_encoded,
    m.get_all_encoded
  local c = { writes = {}, reads = {} }
  local function bump(t, ns) t[ns.name] = (t[ns.name] or 0) + 1 end
  m.set_encoded = function(ns, ...) bump(c.writes, ns); return set_encoded(ns, ...) end
  m.delete = function(ns, ...) bump(c.writes, ns); return delete(ns, ...) end
  m.get_encoded = function(ns, ...) bump(c.reads, ns); return get_encoded(ns, ...) end
  m.get_all_encoded = function(ns, ...) bump(c.reads, ns); return get_all(ns, ...) end
  local ok, err = pcall(fn)
  m.set_encoded, m.delete, m.get_encoded, m.get_all_encoded = set_encoded, delete, get_encoded, get_all
  assert(ok, err)
  return c
end

-- Run body in a fresh process on the store at path; its output lines.
local function run(path, body)
  local out, ok = helpers.run_lua([[
    local instate = require "instate"
    local path = ...
    assert(instate.setup(path))
    local function show(...)
      local t = {}
      for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
      io.write(table.concat(t, " "), "\n")
    end
  ]] .. body, path)
  assert(ok, "child failed:\n" .. out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

describe("defmap", function()
  after_each(function() instate.teardown() end)

  it("round-trips entries of every key type across processes", function()
    local path = new_path()
    assert.are.same({ "saved" }, run(path, [[
      local w = instate.defmap("world")
      w:set("tile", { kind = "grass", h = 3 })
      w:set(7, "seven")
      w:set(-12, -12.5)
      w:set(0.5, "half")
      w:set(1/0, "inf")
      w:set(true, "yes")
      w:set(false, { 1, 2, 3 })
      w:set("", "empty")
      w:set("gone", 1)
      assert(instate.save_all())
      w:set("gone", nil)
      w:set("unsaved", 1)
      assert(instate.save_all())
      w:set("unsaved", nil)
      w:set("never", 1)
      show("saved")
    ]]))
    assert.are.same({
      "tile grass 3", "7 seven", "-12 -12.5", "0.5 half", "inf inf", "true yes", "false 3",
      "empty", "gone nil", "unsaved 1", "never nil", "count 9", "int key integer",
    }, run(path, [[
      local w = instate.defmap("world")
      local t = w:get("tile")
      show("tile", t.kind, t.h)
      show(7, w:get(7))
      show(-12, w:get(-12))
      show(0.5, w:get(0.5))
      show("inf", w:get(1/0))
      show(true, w:get(true))
      show(false, #w:get(false))
      show(w:get(""))
      show("gone", w:get("gone"))
      show("unsaved", w:get("unsaved"))
      show("never", w:get("never"))
      show("count", w:count())
      local seen
      for k in w:pairs() do if k == 7 then seen = k end end
      local mt = math.type
      show("int key", mt and mt(seen) or "integer")
    ]]))
  end)

  it("a float key with an integral value is the integer key, as in a Lua table", function()
    restart(new_path())
    local w = instate.defmap("m")
    w:set(3.0, "x")
    assert.are.equal("x", w:get(3))
    w:set(-0.0, "zero")
    assert.are.equal("zero", w:get(0))
    assert.are.equal(2, w:count())
  end)

  it("writes one record for one changed entry of a large map", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    for i = 1, 2000 do w:set(i, { x = i, y = -i, kind = "rock" }) end
    assert(instate.save_all())
    store = restart(path)
    w = instate.defmap("world")
    local rev = store:revision()
    local c = count_io(function()
      w:set(1234, { x = 0, y = 0, kind = "water" })
      assert.are.equal(rev + 1, instate.save_all())
    end)
    assert.are.same({ ["__map.state.world"] = 1 }, c.writes)
    -- the set read only its own key's record (to know the old value)
    assert.are.same({ ["__map.state.world"] = 1 }, c.reads)
    assert.are.equal(rev + 1, store:revision())
    -- 2000 records, and nothing but them
    local report = store:check()
    assert.are.equal(2000, report.records)
    store = restart(path)
    assert.are.equal("water", instate.defmap("world"):get(1234).kind)
    assert.are.equal("rock", instate.defmap("world"):get(1233).kind)
    -- nothing changed: nothing written, no commit
    rev = store:revision()
    c = count_io(function() assert.are.equal(rev, instate.save_all()) end)
    assert.are.same({}, c.writes)
    assert.are.equal(rev, store:revision())
  end)

  it("saves in-place edits of entries handed out, and only those that changed", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("inv")
    w:set("a", { n = 1 })
    w:set("b", { n = 2 })
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("inv")
    w:get("a").n = 10
    local b = w:get("b")
    assert.are.equal(2, b.n)
    local c = count_io(function() assert(instate.save_all()) end)
    assert.are.same({ ["__map.state.inv"] = 1 }, c.writes)
    restart(path)
    assert.are.equal(10, instate.defmap("inv"):get("a").n)
  end)

  it("a handed-out entry that did not change costs save_all no read, no encode, no validate", function()
    local path = new_path()
    restart(path)
    local checked = 0
    local opts = { validate = function(v) checked = checked + 1; return type(v) == "table" end }
    local w = instate.defmap("inv", opts)
    for i = 1, 50 do w:set(i, { n = i }) end
    w:set("set", { n = 0 })
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("inv", opts)
    local t = {}
    for i = 1, 50 do t[i] = w:get(i) end          -- read: 50 records
    checked = 0
    local c = count_io(function()
      for _ = 1, 3 do assert(instate.save_all()) end
    end)
    assert.are.same({}, c.reads)
    assert.are.same({}, c.writes)
    assert.are.equal(0, checked)
    -- one changed in place: that one is validated and written, alone
    t[7].n = 70
    c = count_io(function() assert(instate.save_all()) end)
    assert.are.same({}, c.reads)
    assert.are.same({ ["__map.state.inv"] = 1 }, c.writes)
    assert.are.equal(1, checked)
    -- an entry set, then saved: its later saves cost nothing either
    local s = { n = 1 }
    w:set("set", s)
    assert(instate.save_all())
    c = count_io(function() assert(instate.save_all()) end)
    assert.are.same({}, c.reads)
    assert.are.same({}, c.writes)
    s.n = 2
    c = count_io(function() assert(instate.save_all()) end)
    assert.are.same({ ["__map.state.inv"] = 1 }, c.writes)
    restart(path)
    w = instate.defmap("inv")
    assert.are.equal(70, w:get(7).n)
    assert.are.equal(2, w:get("set").n)
    assert.are.equal(8, w:get(8).n)
    -- every entry handed out by pairs: the same
    local seen = 0
    for _, v in w:pairs() do seen = seen + 1; assert.is_table(v) end
    assert.are.equal(51, seen)
    c = count_io(function() assert(instate.save_all()) end)
    assert.are.same({}, c.reads)
    assert.are.same({}, c.writes)
  end)

  it("an in-place edit undone after a save inside a store transaction is saved", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    w:set("a", { n = 1 })
    assert(instate.save_all())
    local t = w:get("a")
    assert(store:transaction(function()
      t.n = 2
      assert(instate.save_all())
      return true
    end))
    -- the store holds n = 2 now; the table is back to what the last save
    -- outside a transaction wrote
    t.n = 1
    assert(instate.save_all())
    restart(path)
    assert.are.equal(1, instate.defmap("world"):get("a").n)
  end)

  it("an async save_all writes no unchanged handed-out entry", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    for i = 1, 20 do w:set(i, { n = i }) end
    assert(instate.save_all())
    for i = 1, 20 do w:get(i) end
    local rev = store:revision()
    local batch_puts = 0
    local wr = store:writer()
    local bmt = getmetatable(wr:batch()).__index
    local put_encoded = bmt.put_encoded
    bmt.put_encoded = function(b, ...) batch_puts = batch_puts + 1; return put_encoded(b, ...) end
    local ok, err = pcall(function()
      assert(instate.save_all({ async = true }))
      assert.are.equal(rev, instate.flush())
      w:get(3).n = 30
      assert(instate.save_all({ async = true }))
      assert.are.equal(rev + 1, instate.flush())
    end)
    bmt.put_encoded = put_encoded
    wr:close()
    assert(ok, err)
    assert.are.equal(1, batch_puts)
    restart(path)
    assert.are.equal(30, instate.defmap("world"):get(3).n)
  end)

  it("reads nothing of the map at setup or defmap: a corrupt record fails only its access", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    w:set("good", 1)
    w:set("bad", 2)
    w:set("torn", 3)
    assert(instate.defstate("score", 5))
    assert(instate.save_all())
    instate.teardown()
    -- a record whose value is not MessagePack (valid checksum), and one
    -- whose checksum is wrong
    helpers.put_raw(path, "__map.state.world", "sbad", helpers.record_bytes("sbad", "\193", nil, 1))
    local torn = helpers.record_bytes("storn", "\3", nil, 1)
    helpers.put_raw(path, "__map.state.world", "storn", helpers.flip_byte(torn, 3, 0x01))
    local c = count_io(function()
      store = assert(instate.setup(path))
      w = instate.defmap("world")
      assert.are.equal(5, instate.defstate("score", 0):get())
    end)
    assert.is_nil(c.reads["__map.state.world"])
    assert.are.equal(1, w:get("good"))
    local msg = errmsg(w.get, w, "bad")
    assert.matches("instate: entry \"bad\" of map 'world' is corrupt: .*%(code CORRUPT%)", msg)
    msg = errmsg(w.get, w, "torn")
    assert.matches("instate: cannot read entry \"torn\" of map 'world': .*%(code CORRUPT%)", msg)
    msg = errmsg(w.count, w)
    assert.matches("^instate: cannot read map 'world': cannot read key 'storn': .*%(code CORRUPT%)$", msg)
    -- setting over a corrupt entry needs its old value: the same error
    msg = errmsg(w.set, w, "bad", 9)
    assert.matches("instate: entry \"bad\" of map 'world' is corrupt", msg)
    assert.are.equal(1, w:get("good"))
  end)

  it("save_all is all or nothing across variables and maps (unstorable entry)", function()
    local path = new_path()
    local store = restart(path)
    local score = instate.defstate("score", 1)
    local w = instate.defmap("world")
    w:set("a", 1)
    assert(instate.save_all())
    local rev = store:revision()
    score:set(2)
    w:set("a", 2)
    w:set("f", { on_use = print })
    local msg = errmsg(instate.save_all)
    assert.matches("instate.save_all: entry \"f\" of map 'world' cannot be saved: .*function.*%(nothing was saved%)", msg)
    assert.are.equal(rev, store:revision())
    -- an unstorable variable with good map edits: nothing either
    w:set("f", nil)
    score:set(print)
    errmsg(instate.save_all)
    assert.are.equal(rev, store:revision())
    restart(path)
    assert.are.equal(1, instate.defstate("score", 0):get())
    assert.are.equal(1, instate.defmap("world"):get("a"))
  end)

  it("save_all commits variables and map entries in one transaction", function()
    local path = new_path()
    local store = restart(path)
    local score = instate.defstate("score", 1)
    local w = instate.defmap("world")
    assert(instate.save_all())
    local rev = store:revision()
    score:set(2)
    w:set("a", 1)
    assert.are.equal(rev + 1, instate.save_all())
    assert.are.equal(rev + 1, store:revision())
    -- inside a store transaction that aborts, nothing of it is saved
    score:set(3)
    w:set("a", 3)
    local ok = pcall(store.transaction, store, function()
      assert(instate.save_all())
      error("abort")
    end)
    assert.is_false(ok)
    assert.are.equal(rev + 1, store:revision())
    -- and the next save writes them again
    assert.are.equal(rev + 2, instate.save_all())
    restart(path)
    assert.are.equal(3, instate.defstate("score", 0):get())
    assert.are.equal(3, instate.defmap("world"):get("a"))
  end)

  it("an async save_all commits map entries with the variables, in one batch", function()
    local path = new_path()
    local store = restart(path)
    local score = instate.defstate("score", 1)
    local w = instate.defmap("world")
    assert(instate.save_all())
    local rev = store:revision()
    score:set(2)
    w:set("a", { hp = 1 })
    w:set(7, "seven")
    assert(instate.save_all({ async = true }))
    w:get("a").hp = 5                  -- in place, after the first async save
    w:set(7, nil)
    assert(instate.save_all({ async = true }))
    assert.are.equal(rev + 2, instate.flush())
    instate.teardown()                 -- the child becomes the owner
    assert.are.same({ "2", "5", "nil" }, run(path, [[
      show(instate.defstate("score", 0):get())
      local w = instate.defmap("world")
      show(w:get("a").hp)
      show(w:get(7))
    ]]))
    -- a clear() runs as a synchronous save, after the queued ones
    restart(path)
    w = instate.defmap("world")
    w:set("b", 2)
    assert(instate.save_all({ async = true }))
    w:clear()
    w:set("c", 3)
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    instate.teardown()
    assert.are.same({ "nil", "nil", "3" }, run(path, [[
      local w = instate.defmap("world")
      show(w:get("a"))
      show(w:get("b"))
      show(w:get("c"))
    ]]))
  end)

  it("a failed async save leaves its map entries to be written by the next save", function()
    local path = new_path()
    restart(path, { map_size = 1024 * 1024, max_size = 1024 * 1024 })
    local big = instate.defstate("big", "")
    local w = instate.defmap("world")
    assert(instate.save_all())
    -- the variable does not fit: the whole save, map entry included, fails
    big:set(("x"):rep(4 * 1024 * 1024))
    w:set("a", 1)
    assert(instate.save_all({ async = true }))
    local ok, msg, code = instate.flush()
    assert.is_nil(ok)
    assert.are.equal("MAP_FULL", code)
    assert.matches("big", msg, 1, true)
    -- the entry, not set again, is still unsaved: the next save writes it
    big:set("fits")
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    instate.teardown()
    assert.are.same({ "fits", "1" }, run(path, [[
      show(instate.defstate("big", ""):get())
      show(instate.defmap("world"):get("a"))
    ]]))
  end)

  it("two saves inside one store transaction keep the last in-place edit", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    w:set("a", { n = 1 })
    assert(instate.save_all())
    local t = w:get("a")
    assert(store:transaction(function()
      t.n = 2
      assert(instate.save_all())
      t.n = 1
      assert(instate.save_all())
      return true
    end))
    restart(path)
    assert.are.equal(1, instate.defmap("world"):get("a").n)
  end)

  it("save_all raises on a failing validate, naming map and key", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("hp", {
      validate = function(v, k) return type(v) == "number" and v >= 0, ("negative at %s"):format(k) end,
    })
    w:set("orc", 5)
    assert(instate.save_all())
    local rev = store:revision()
    w:set("elf", -1)
    assert.matches("instate.save_all: entry \"elf\" of map 'hp' is invalid: negative at elf %(nothing was saved%)",
      errmsg(instate.save_all))
    assert.are.equal(rev, store:revision())
    -- a saved entry that fails validate raises at its read
    w:set("elf", 1)
    assert(instate.save_all())
    restart(path)
    local w2 = instate.defmap("hp", { validate = function(v) return v > 3, "too weak" end })
    assert.are.equal(5, w2:get("orc"))
    assert.matches("instate: saved entry \"elf\" of map 'hp' is invalid: too weak", errmsg(w2.get, w2, "elf"))
  end)

  it("migrates entries saved with an older version, one by one, and saves them", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("units")
    w:set("a", 1)
    w:set("b", 2)
    assert(instate.save_all())
    store = restart(path)
    local calls = {}
    w = instate.defmap("units", { version = 2, migrate = function(old, ver, k)
      calls[#calls + 1] = ("%s:%d"):format(k, ver)
      return { hp = old }
    end })
    assert.are.equal(1, w:get("a").hp)
    assert.are.same({ "a:1" }, calls)
    assert(instate.save_all())
    local ns = store:_map_namespace("state.units")
    local _, ver = ns:get_encoded("sa")
    assert.are.equal(2, ver)
    _, ver = ns:get_encoded("sb")
    assert.are.equal(1, ver)
    -- a newer saved version is an error at the access, not before
    restart(path)
    w = instate.defmap("units")
    assert.matches("instate: entry \"a\" of map 'units' was saved with version 2, newer than its declared version 1",
      errmsg(w.get, w, "a"))
    assert.are.equal(2, w:get("b"))
    restart(path)
    w = instate.defmap("units", { version = 3 })
    assert.matches("has no migrate function", errmsg(w.get, w, "b"))
  end)

  it("reload_all reverts maps to what is saved", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("world")
    w:set("a", 1)
    w:set("b", 2)
    assert(instate.save_all())
    w:set("a", 10)
    w:set("b", nil)
    w:set("c", 3)
    assert.are.equal(2, w:count())
    assert.is_true(instate.reload_all())
    assert.are.equal(1, w:get("a"))
    assert.are.equal(2, w:get("b"))
    assert.is_nil(w:get("c"))
    assert.are.equal(2, w:count())
    w:clear()
    assert.are.equal(0, w:count())
    assert.is_true(instate.reload_all())
    assert.are.equal(2, w:count())
  end)

  it("instate.transaction undoes map edits, clear included, and nests", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("world")
    w:set("a", 1)
    w:set("b", 2)
    assert(instate.save_all())
    w:set("d", 4)
    local ok, err = pcall(instate.transaction, function()
      w:set("a", 100)
      w:set("b", nil)
      w:set("c", 3)
      assert.are.equal(3, w:count())
      w:clear()
      w:set("x", 1)
      error("boom")
    end)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.are.equal(1, w:get("a"))
    assert.are.equal(2, w:get("b"))
    assert.is_nil(w:get("c"))
    assert.is_nil(w:get("x"))
    assert.are.equal(4, w:get("d"))
    assert.are.equal(3, w:count())
    -- a nested transaction that succeeds is undone by its failing parent
    ok = pcall(instate.transaction, function()
      instate.transaction(function() w:set("a", 5) end)
      assert.are.equal(5, w:get("a"))
      error("outer")
    end)
    assert.is_false(ok)
    assert.are.equal(1, w:get("a"))
    -- the undone state saves as it reads
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("world")
    assert.are.equal(1, w:get("a"))
    assert.are.equal(4, w:get("d"))
    assert.are.equal(3, w:count())
  end)

  it("an undone edit that a save_all inside the transaction wrote is written back", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("world")
    w:set("a", 1)
    assert(instate.save_all())
    local ok = pcall(instate.transaction, function()
      w:set("a", 5)
      w:set("b", 6)
      assert(instate.save_all())
      error("late")
    end)
    assert.is_false(ok)
    assert.are.equal(1, w:get("a"))
    assert.is_nil(w:get("b"))
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("world")
    assert.are.equal(1, w:get("a"))
    assert.is_nil(w:get("b"))
  end)

  it("clear() then save_all empties the saved map", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("world")
    for i = 1, 10 do w:set(i, i) end
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("world")
    w:clear()
    w:set(3, "new")
    assert.is_nil(w:get(4))
    assert(instate.save_all())
    restart(path)
    w = instate.defmap("world")
    assert.are.equal(1, w:count())
    assert.are.equal("new", w:get(3))
  end)

  it("update, has, saved, pairs", function()
    restart(new_path())
    local w = instate.defmap("m")
    assert.are.equal(1, w:update("n", function(v) return (v or 0) + 1 end))
    assert.are.equal(2, w:update("n", function(v) return v + 1 end))
    assert.is_true(w:has("n"))
    assert.is_false(w:has("x"))
    assert.is_false(w:saved("n"))
    assert(instate.save_all())
    assert.is_true(w:saved("n"))
    assert.is_nil(w:update("n", function() return nil end))
    assert.is_false(w:has("n"))
    w:set("a", 1)
    w:set("b", 2)
    local got = {}
    for k, v in w:pairs() do got[k] = v end
    assert.are.same({ a = 1, b = 2 }, got)
    assert.are.equal("default", w:get("zz", "default"))
  end)

  it("redeclaration returns the same map; maps() lists maps; vars() does not", function()
    restart(new_path())
    local w = instate.defmap("world")
    assert.are.equal(w, instate.defmap("world", { version = 2 }))
    instate.defstate("score", 0)
    local names = {}
    for name, m in instate.maps() do names[#names + 1] = name; assert.are.equal(w, m) end
    assert.are.same({ "world" }, names)
    names = {}
    for name in instate.vars() do names[#names + 1] = name end
    assert.are.same({ "score" }, names)
    assert.are.equal("instate.map(world)", tostring(w))
  end)

  it("teardown forgets maps; setup elsewhere is refused while maps exist", function()
    local path = new_path()
    restart(path)
    local w = instate.defmap("world")
    assert.has_error(function()
      instate.setup(new_path())
    end)
    instate.teardown()
    assert.has_error(function() w:get("a") end,
      "instate: map 'world' was forgotten by instate.teardown()")
    assert.has_error(function() instate.defmap("world") end,
      "instate.defmap: no store for map 'world'; call instate.setup(path) first")
  end)

  it("checks its arguments", function()
    restart(new_path())
    local w = instate.defmap("m")
    assert.has_error(function() instate.defmap(1) end,
      "bad argument #1 to 'defmap' (string expected, got integer)")
    assert.has_error(function() instate.defmap("") end,
      "bad argument #1 to 'defmap' (name must not be empty)")
    assert.has_error(function() instate.defmap("x", { bogus = 1 }) end,
      "bad argument #2 to 'defmap' (unknown option 'bogus')")
    assert.has_error(function() instate.defmap("x", { version = 0 }) end,
      "bad argument #2 to 'defmap' (version must be an integer >= 1, got 0)")
    assert.has_error(function() instate.defmap(string.rep("n", 250)) end)
    assert.has_error(function() w:set({}, 1) end,
      "bad argument #1 to 'set' (a key must be a string, number or boolean, got table)")
    assert.has_error(function() w:get(0/0) end,
      "bad argument #1 to 'get' (a key cannot be NaN)")
    assert.has_error(function() w:get(string.rep("k", 511)) end,
      "bad argument #1 to 'get' (a string key is at most 510 bytes, got 511)")
    assert.has_error(function() w:update("k", 1) end,
      "bad argument #2 to 'update' (function expected, got integer)")
    assert.has_error(function() w.get({}, 1) end,
      "bad self to 'get' (a map expected, got table; call map:get(...))")
  end)

  it("keeps map namespaces reserved: store:namespace refuses them, namespaces() hides them", function()
    local path = new_path()
    local store = restart(path)
    local w = instate.defmap("world")
    w:set("a", 1)
    store:namespace("user"):set("k", 1)
    assert(instate.save_all())
    assert.has_error(function() store:namespace("__map.state.world", "state") end,
      "bad argument #1 to 'namespace' (namespace names starting with '__' are reserved ('__map.state.world'))")
    assert.has_error(function() store:drop("__map.state.world") end,
      "bad argument #1 to 'drop' (namespace names starting with '__' are reserved ('__map.state.world'))")
    assert.are.same({ "user" }, store:namespaces())
    -- a dump carries the map, and a load brings it back
    local file = helpers.tmpdir() .. "/all.dump"
    local info = assert(store:dump(file))
    assert.are.equal(2, info.sections)
    local sections = assert(instate.dump_info(file)).section_list
    assert.are.same({ name = "__map.state.world", type = "state", records = 1 }, sections[1])
    assert.are.equal("user", sections[2].name)
    local other = helpers.tmpdir() .. "/other"
    local s2 = assert(instate.open(other))
    assert(s2:load(file))
    assert.are.equal(1, instate.decode((s2:_map_namespace("state.world"):get_encoded("sa"))))
    s2:close()
    local report = store:check()
    assert.are.same({}, report.corrupt)
  end)

  it("the instate command: ls and vars leave maps out, check reads them", function()
    local path = new_path()
    restart(path)
    instate.defstate("score", 7)
    instate.defmap("world"):set("a", 1)
    assert(instate.save_all())
    instate.teardown()
    local bin = helpers.build_dir() .. "/bin/instate"
    if bin:sub(1, 1) ~= "/" then bin = os.getenv("PWD") .. "/" .. bin end
    local function cli(...)
      local args = {}
      for i = 1, select("#", ...) do args[i] = helpers.sh_quote(select(i, ...)) end
      return helpers.shell(helpers.lua_cmd() .. " " .. helpers.sh_quote(bin) .. " "
        .. table.concat(args, " ") .. " 2>&1")
    end
    local out, ok = cli("ls", path)
    assert.is_true(ok, out)
    assert.matches("state", out)
    assert.is_nil(out:find("__map", 1, true))
    out, ok = cli("vars", path)
    assert.is_true(ok, out)
    assert.matches("score", out)
    assert.is_nil(out:find("__map", 1, true))
    out, ok = cli("check", path)
    assert.is_true(ok, out)
    assert.matches("2 records", out)
  end)

  it("maps of another state namespace are apart", function()
    local path = new_path()
    restart(path, { namespace = "slot1" })
    instate.defmap("world"):set("a", 1)
    assert(instate.save_all())
    restart(path, { namespace = "slot2" })
    assert.is_nil(instate.defmap("world"):get("a"))
  end)
end)
