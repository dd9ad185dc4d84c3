-- Code that runs in the middle of a save_all: a finalizer (the collector
-- runs one at any allocation) that writes a variable, a map entry or a
-- tracked table, or saves. save_all picks what to write, encodes it,
-- commits, then marks what it wrote clean; a write that lands between the
-- pick and the marking was not in what was written, so it must stay
-- unsaved (the next save writes it), never be marked clean and lost. A
-- save from there is refused (BUSY): it would commit before the outer
-- one, whose older values would then overwrite it.
--
-- The finalizer runs at a chosen point: ns:save_many (every save's
-- encode and commit, async ones' handover included) is wrapped to run the
-- collector, with an object whose finalizer does the write, before or
-- after the real call.
local helpers = require "helpers"
local instate = require "instate"

local MIN = 1024                  -- defstate.lua's entries_min

local function new_path() return helpers.tmpdir() .. "/save" end
local function restart(path) return helpers.restart(instate, path) end
local function saved(path, name) return helpers.saved(instate, path, name) end

local function pack(...) return { n = select("#", ...), ... } end
local unpack = table.unpack or unpack

-- Run fn() from a finalizer during the next call of ns:save_many,
-- before the real call (when = "before") or after it returns ("after").
-- Returns a function giving fn's results once it ran (nil before).
local function during_save(when, fn)
  local methods = helpers.ns_methods()
  local real = methods.save_many
  local results
  local function fire()
    methods.save_many = real
    helpers.on_gc(function() results = pack(fn()) end)
    collectgarbage()
    collectgarbage()
  end
  methods.save_many = function(...)
    if when == "before" then fire() end
    local r = pack(real(...))
    if when == "after" then fire() end
    return unpack(r, 1, r.n)
  end
  return function()
    methods.save_many = real
    if results then return unpack(results, 1, results.n) end
  end
end

-- Save, synchronously or as an async save then a flush.
local function save(async)
  if async then
    assert(instate.save_all { async = true })
    return assert(instate.flush())
  end
  return assert(instate.save_all())
end

for _, async in ipairs { false, true } do
  local mode = async and "an async save_all" or "save_all"
  for _, when in ipairs { "before", "after" } do
    local where = when == "before" and "after the pick, before the encode"
      or "after the commit (async: the handover), before the variables are marked clean"

    describe(("a finalizer that runs in %s, %s,"):format(mode, where), function()
      after_each(function() instate.teardown() end)

      it("and sets a variable: the new value is saved by the next save, never lost", function()
        local path = new_path()
        assert(instate.setup(path))
        local hp = instate.defstate("hp", 1)
        local other = instate.defstate("other", 0)
        save(async)
        hp:set(2)
        other:set(1)
        local done = during_save(when, function() hp:set(3) end)
        save(async)
        done()
        assert.are.equal(3, hp:get())
        save(async)
        assert.are.equal(3, saved(path, "hp"))
      end)

      it("and sets a variable that this save did not pick: it is saved by the next save", function()
        local path = new_path()
        assert(instate.setup(path))
        local hp = instate.defstate("hp", 1)
        local other = instate.defstate("other", 0)
        save(async)
        other:set(1)
        local done = during_save(when, function() hp:set(5) end)
        save(async)
        done()
        save(async)
        assert.are.equal(5, saved(path, "hp"))
        assert.are.equal(1, saved(path, "other"))
      end)

      it("and writes a tracked table through its proxy: the write is saved by the next save", function()
        local path = new_path()
        assert(instate.setup(path))
        local inv = instate.defstate("inv", { sword = 1 }, { track = true })
        save(async)
        local p = inv:get()
        p.sword = 2
        local done = during_save(when, function() p.shield = 1 end)
        save(async)
        done()
        save(async)
        assert.are.same({ sword = 2, shield = 1 }, saved(path, "inv"))
      end)

      it("and writes an entry of a big tracked table (its entry cache): the write is saved by the next save", function()
        local path = new_path()
        assert(instate.setup(path))
        local big = {}
        for i = 1, MIN do big["k" .. i] = i end
        local world = instate.defstate("world", big, { track = true })
        save(async)
        local p = world:get()
        p.k1 = -1
        save(async)                 -- the cache is made: this one updates it
        p.k2 = -2
        local done = during_save(when, function() p.k3 = -3; p.new = "x" end)
        save(async)
        done()
        save(async)
        local want = {}
        for i = 1, MIN do want["k" .. i] = i end
        want.k1, want.k2, want.k3, want.new = -1, -2, -3, "x"
        local got = saved(path, "world")
        assert.are.same(want, got)
        -- and the record is still the canonical encoding of the value
        assert.are.equal(instate.encode(want, nil, { canonical = true }),
          restart(path):namespace("state", "state"):get_encoded("world"))
      end)

      it("and edits a table variable in place: the edit is saved by the next save", function()
        local path = new_path()
        assert(instate.setup(path))
        local t = instate.defstate("t", { n = 1 })
        save(async)
        local v = t:get()
        v.n = 2
        local done = during_save(when, function() v.m = 9 end)
        save(async)
        done()
        save(async)
        assert.are.same({ n = 2, m = 9 }, saved(path, "t"))
      end)

      it("and sets a map entry that this save writes: the new value is saved by the next save", function()
        local path = new_path()
        assert(instate.setup(path))
        local m = instate.defmap("tiles")
        local hp = instate.defstate("hp", 1)
        m:set("a", 1)
        save(async)
        m:set("a", 2)
        hp:set(2)                   -- so that save_many runs
        local done = during_save(when, function() m:set("a", 3); m:set("b", 4) end)
        save(async)
        done()
        save(async)
        restart(path)
        local back = instate.defmap("tiles")
        assert.are.equal(3, back:get("a"))
        assert.are.equal(4, back:get("b"))
      end)

      it("and calls save_all: that save is refused with BUSY, saves nothing, and loses nothing", function()
        local path = new_path()
        assert(instate.setup(path))
        local hp = instate.defstate("hp", 1)
        save(async)
        hp:set(2)
        local done = during_save(when, function()
          hp:set(3)
          return instate.save_all()
        end)
        local outer = instate.save_all(async and { async = true } or nil)
        if async then assert(instate.flush()) end
        assert.is_truthy(outer)
        local r, msg, code = done()
        assert.is_nil(r)
        assert.are.equal("BUSY", code)
        assert.matches("save_all is already running", msg, 1, true)
        -- the outer save wrote 2 (or 3, had it read the value after the
        -- finalizer); 3 is unsaved until the next save
        save(async)
        assert.are.equal(3, saved(path, "hp"))
      end)
    end)
  end
end

describe("a finalizer in the middle of save_all", function()
  after_each(function() instate.teardown() end)

  for _, call in ipairs { "reload_all", "teardown", "setup" } do
    it(("that calls instate.%s: refused with BUSY, and the save and the store go on"):format(call), function()
      local path = new_path()
      assert(instate.setup(path))
      local hp = instate.defstate("hp", 1)
      assert(instate.save_all())
      hp:set(2)
      local done = during_save("before", function()
        if call == "setup" then return instate.setup(new_path()) end
        return instate[call]()
      end)
      assert(instate.save_all())
      local r, msg, code = done()
      assert.is_nil(r)
      assert.are.equal("BUSY", code)
      assert.matches(("instate.%s: save_all is already running"):format(call), msg, 1, true)
      assert.are.equal(2, hp:get())
      hp:set(3)
      assert(instate.save_all())
      assert.are.equal(3, saved(path, "hp"))
    end)
  end
end)

describe("a finalizer in the middle of a defstate that reads its record", function()
  after_each(function() instate.teardown() end)

  -- Run fn() from a finalizer after the next ns:get_encoded returns (the
  -- declaration's own read of its record).
  local function during_read(fn)
    local methods = helpers.ns_methods()
    local real = methods.get_encoded
    local results
    methods.get_encoded = function(...)
      methods.get_encoded = real
      local r = pack(real(...))
      helpers.on_gc(function() results = pack(fn()) end)
      collectgarbage()
      collectgarbage()
      return unpack(r, 1, r.n)
    end
    return function()
      methods.get_encoded = real
      if results then return unpack(results, 1, results.n) end
    end
  end

  for _, how in ipairs { "of another version", "read after setup's read went stale" } do
    it(("(%s) can save: the name being declared is not a failed restore"):format(how), function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("hp", 1, how:find("version") and { version = 2 } or nil):set(7)
      instate.defstate("gold", 0):set(1)
      assert(instate.save_all())
      restart(path)
      local gold = instate.defstate("gold", 0)
      if not how:find("version") then
        -- a commit of another handle: the next declaration reads its record
        local other = assert(instate.open(path))
        assert(other:namespace("elsewhere"):set("k", 1))
        other:close()
      end
      gold:set(2)
      local done = during_read(function() return pcall(instate.save_all) end)
      local hp = instate.defstate("hp", 1, how:find("version") and { version = 2 } or nil)
      local ran, rev, msg = done()
      assert.is_true(ran, tostring(rev))
      assert.is_truthy(rev, msg)
      assert.are.equal(7, hp:get())
      assert.are.equal(2, saved(path, "gold"))
    end)
  end

  it("that raises still leaves save_all refused, naming the record", function()
    local path = new_path()
    assert(instate.setup(path))
    instate.defstate("hp", 1, { version = 3 }):set(7)
    assert(instate.save_all())
    restart(path)
    local ok, err = pcall(instate.defstate, "hp", 1, { version = 2 })
    assert.is_false(ok)
    assert.matches("saved with version 3, newer than its declared version 2", err, 1, true)
    assert.matches("the saved values of 'hp' could not be restored", helpers.errmsg(instate.save_all), 1, true)
  end)
end)

describe("save_all after a save that raised", function()
  after_each(function() instate.teardown() end)

  it("is not refused as running (nothing is left marked as saving)", function()
    local path = new_path()
    assert(instate.setup(path))
    local f = instate.defstate("f", 1)
    f:set(function() end)
    assert.has_error(function() instate.save_all() end)
    f:set(2)
    assert(instate.save_all())
    assert.are.equal(2, saved(path, "f"))
  end)
end)
