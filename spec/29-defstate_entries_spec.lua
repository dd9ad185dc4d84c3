-- The entry cache of big tracked variables (src/lentries.c, track.lua):
-- a save re-encodes the top-level entries written since the last one, and
-- the record must still be, byte for byte, the canonical encoding of the
-- value (or, from a record written non-canonically, decode to it).
local helpers = require "helpers"
local instate = require "instate"

local MIN = 1024                  -- defstate.lua's entries_min

local function new_path() return helpers.tmpdir() .. "/save" end
local count_encodes = helpers.count_save_many
local errmsg = helpers.errmsg

local function canonical(v) return instate.encode(v, nil, { canonical = true }) end

-- The record of name as the store holds it now.
local function record(store, name)
  return (store:namespace("state", "state"):get_encoded(name))
end

-- White box: whether var's entry cache is ready (its entries valid).
local function cache_ready(var)
  local c = rawget(var, 9)
  return c and (c:state()) or false
end

-- A deterministic generator, the same on every Lua.
local function rng(seed)
  local x = seed
  return function(n)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % n + 1
  end
end

-- Keys of every scalar kind the codec writes: str, bin, positive and
-- negative integers (small and wide), non-integral floats, booleans.
local function key_of(i)
  local kind = i % 7
  if kind == 0 then return "k" .. i end
  if kind == 1 then return "ключ" .. i end
  if kind == 2 then return "\255\0" .. i end
  if kind == 3 then return i + 10 end
  if kind == 4 then return -i end
  if kind == 5 then return 2 ^ 40 + i end
  return i + 0.5
end

-- A fresh value from seed s (built again for the model: same shape, other
-- tables).
local function value_of(s)
  local kind = s % 6
  if kind == 0 then return s end
  if kind == 1 then return "v" .. s end
  if kind == 2 then return { a = s, b = { c = s % 7, d = "x" } } end
  if kind == 3 then return { s, s + 1, s + 2 } end
  if kind == 4 then return s / 4 end
  return s % 2 == 0
end

local function big_default(n)
  local t = { [true] = "yes", [false] = "no" }
  for i = 1, n do t[key_of(i)] = value_of(i) end
  return t
end

describe("big tracked variables: the entry cache", function()
  after_each(function() instate.teardown() end)

  -- Random edits of every kind, applied to the variable (through its
  -- proxy) and to a plain model; after every save the record is the
  -- model's canonical encoding.
  local function property(seed, async)
    instate.teardown()
    local path = new_path()
    local store = assert(instate.setup(path))
    local model = big_default(MIN + 200)
    local var = instate.defstate("big", big_default(MIN + 200), { track = true })
    local t = var:get()
    local r = rng(seed)
    local nkeys = MIN + 300
    local cached = 0
    local function save()
      local was = cache_ready(var)
      if async then
        assert(instate.save_all({ async = true }))
        assert(instate.flush())
      else
        assert(instate.save_all())
      end
      local bytes = record(store, "big")
      assert.are.equal(canonical(model), bytes)
      assert.are.equal(bytes, canonical(instate.decode(bytes)))
      if was and cache_ready(var) then cached = cached + 1 end
    end
    save()
    -- keys holding a shared table or a cycle, made plain again after the
    -- save (so that the cache is back at the next)
    local undo = {}
    for round = 1, 24 do
      for _ = 1, r(12) do
        local op, k, k2 = r(12), key_of(r(nkeys)), key_of(r(nkeys))
        local s = r(100000)
        if op <= 3 then                                 -- a scalar or a new table
          t[k], model[k] = value_of(s), value_of(s)
        elseif op == 4 then                             -- a delete
          t[k], model[k] = nil, nil
        elseif op <= 7 then                             -- a nested edit
          if type(model[k]) == "table" and model[k][1] == nil then
            t[k].b = { c = s }; model[k].b = { c = s }
            t[k].b.c = s + 1; model[k].b.c = s + 1
            t[k].a = nil; model[k].a = nil
          else
            t[k] = { a = s }; model[k] = { a = s }
          end
        elseif op == 8 then                             -- a sub-table moved
          if type(model[k]) == "table" and k ~= k2 then
            local sub = t[k]
            t[k2], model[k2] = sub, model[k]
            t[k], model[k] = nil, nil
            sub.moved = s; model[k2].moved = s
          end
        elseif op == 9 then                             -- one table under two keys
          if type(model[k]) == "table" and k ~= k2 then
            t[k2], model[k2] = t[k], model[k]
            undo[#undo + 1] = k2
          end
        elseif op == 10 then                            -- a cycle in an entry
          if type(model[k]) == "table" and model[k][1] == nil then
            t[k].self, model[k].self = t[k], model[k]
            undo[#undo + 1] = k
          end
        elseif op == 11 then                            -- the root inside an entry
          t[k], model[k] = {}, { up = model }
          t[k].up = t
          undo[#undo + 1] = k
        else                                            -- replace by a fresh table
          t[k], model[k] = { n = s, list = { s } }, { n = s, list = { s } }
        end
      end
      save()
      if #undo > 0 then
        for i = #undo, 1, -1 do
          local s = r(100000)
          t[undo[i]], model[undo[i]] = value_of(s), value_of(s)
          undo[i] = nil
        end
        save()
      end
      if round % 6 == 0 then
        -- a restart: the cache comes from the record's bytes
        instate.teardown()
        store = assert(instate.setup(path))
        var = instate.defstate("big", {}, { track = true })
        t = var:get()
      end
    end
    return cached
  end

  it("random edits, sync saves: every record is the canonical encoding", function()
    for seed = 1, 3 do
      local cached = property(seed * 7919, false)
      assert.is_true(cached > 10, "saves through the cache: " .. cached)
    end
  end)

  it("random edits, async saves: every record is the canonical encoding", function()
    local cached = property(424242, true)
    assert.is_true(cached > 10, "saves through the cache: " .. cached)
  end)

  it("is ready from the restore, and a save then encodes the written entries only", function()
    local path = new_path()
    assert(instate.setup(path))
    instate.defstate("big", big_default(MIN * 4), { track = true })
    assert(instate.save_all())
    instate.teardown()
    local store = assert(instate.setup(path))
    local var = instate.defstate("big", {}, { track = true })
    assert.is_true(cache_ready(var))
    local t = var:get()
    t.k7 = { new = true }
    t[key_of(3)] = nil
    assert.are.equal(1, count_encodes(instate.save_all))
    assert.is_true(cache_ready(var))
    local want = big_default(MIN * 4)
    want.k7, want[key_of(3)] = { new = true }, nil
    assert.are.equal(canonical(want), record(store, "big"))
  end)

  it("is not built from bytes a commit made after setup's read", function()
    -- A commit landing between the declaration's check that setup's read
    -- is current and the cache's read of the record: the cache must not
    -- take the newer bytes for the value setup decoded.
    local path = new_path()
    assert(instate.setup(path))
    instate.defstate("big", big_default(MIN * 2), { track = true })
    assert(instate.save_all())
    instate.teardown()
    local store = assert(instate.setup(path))
    local ns = store:namespace("state", "state")
    local newer = big_default(MIN * 2)
    newer[key_of(9)] = "committed meanwhile"
    local get_encoded, fired = ns.get_encoded, false
    debug.sethook(function()
      if debug.getinfo(2, "f").func == get_encoded then
        debug.sethook()
        fired = true
        assert(ns:set_encoded("big", canonical(newer)))
      end
    end, "c")
    local ok, var = pcall(instate.defstate, "big", {}, { track = true })
    debug.sethook()
    assert(ok, var)
    assert.is_true(fired)
    var:get()[key_of(5)] = "edited"
    assert(instate.save_all())
    local want = big_default(MIN * 2)
    want[key_of(5)] = "edited"
    assert.are.equal(canonical(want), record(store, "big"))
  end)

  it("a small tracked table has none; one that reaches the threshold gets one at its next save", function()
    local path = new_path()
    local store = assert(instate.setup(path))
    local small = instate.defstate("small", big_default(10), { track = true })
    assert(instate.save_all())
    assert.are.equal(false, rawget(small, 9))
    local big = instate.defstate("big", big_default(MIN), { track = true })
    assert(instate.save_all())
    assert.is_true(cache_ready(big))
    big:get()[key_of(5)] = "edited"
    assert(instate.save_all())
    local want = big_default(MIN)
    want[key_of(5)] = "edited"
    assert.are.equal(canonical(want), record(store, "big"))
  end)

  -- A record written by hand: the entries in reverse canonical order;
  -- with bad_key, in increasing order of their bytes but with one integer
  -- key in a wider form than needed.
  local function foreign(path, n, bad_key)
    local store = assert(instate.setup(path))
    local plain = big_default(n)
    local entries = {}
    for k, v in pairs(plain) do
      local kb = canonical(k)
      if bad_key and k == key_of(3) then kb = "\204" .. string.char(k) end   -- uint8 13
      entries[#entries + 1] = kb .. canonical(v)
    end
    table.sort(entries, function(a, b) if bad_key then return a < b end return a > b end)
    local cnt = #entries
    local header = string.char(0xde, math.floor(cnt / 256), cnt % 256)
    assert(store:namespace("state", "state"):set_encoded("big", header .. table.concat(entries)))
    instate.teardown()
    return plain
  end

  for _, bad_key in ipairs({ false, true }) do
    it(("a record written non-canonically (%s): the saves decode to the value"):format(
        bad_key and "a wide integer key" or "keys unsorted"), function()
      local path = new_path()
      local model = foreign(path, MIN + 10, bad_key)
      local store = assert(instate.setup(path))
      local var = instate.defstate("big", {}, { track = true })
      assert.is_false(cache_ready(var))           -- not from these bytes
      local t = var:get()
      for i = 1, 5 do
        t[key_of(i)], model[key_of(i)] = { i = i }, { i = i }
        assert(instate.save_all())
        local bytes = record(store, "big")
        assert.are.same(model, instate.decode(bytes))
        assert.are.equal(canonical(model), bytes)  -- from the first save on
        assert.is_true(cache_ready(var))
      end
    end)
  end

  it("a record with sorted canonical keys but a value not canonical keeps that value's bytes, and decodes to the value", function()
    local path = new_path()
    local store = assert(instate.setup(path))
    local plain = big_default(MIN + 5)
    -- key_of(14)'s value {a = 14, b = {...}} with its entries swapped
    local inner = canonical(plain[key_of(14)])
    local body = inner:sub(2)
    local swapped
    do
      local ka = canonical("a") .. canonical(14)
      assert.are.equal(ka, body:sub(1, #ka))
      swapped = "\130" .. body:sub(#ka + 1) .. ka
    end
    assert.are.same(plain[key_of(14)], instate.decode(swapped))
    local entries = {}
    for k, v in pairs(plain) do
      entries[#entries + 1] = { canonical(k), k == key_of(14) and swapped or canonical(v) }
    end
    table.sort(entries, function(a, b) return a[1] < b[1] end)
    local parts = {}
    for i, e in ipairs(entries) do parts[i] = e[1] .. e[2] end
    local cnt = #entries
    local stored = string.char(0xde, math.floor(cnt / 256), cnt % 256) .. table.concat(parts)
    assert(store:namespace("state", "state"):set_encoded("big", stored))
    instate.teardown()
    store = assert(instate.setup(path))
    local var = instate.defstate("big", {}, { track = true })
    assert.is_true(cache_ready(var))
    var:get().k28 = "edited"
    plain.k28 = "edited"
    assert(instate.save_all())
    local bytes = record(store, "big")
    assert.are.same(plain, instate.decode(bytes))
    assert.is_truthy(bytes:find(swapped, 1, true))
  end)

  describe("falls back to the full encode, exactly", function()
    local function setup_big(n)
      local path = new_path()
      local store = assert(instate.setup(path))
      local var = instate.defstate("big", big_default(n or MIN + 1), { track = true })
      assert(instate.save_all())
      assert.is_true(cache_ready(var))
      return store, var, var:get(), big_default(n or MIN + 1)
    end

    it("for a table kept and stored under a second key, and again once it is one", function()
      local store, var, t, model = setup_big()
      local sub = t.k14                          -- a table, read through the proxy
      t.k56 = sub
      model.k56 = model.k14
      assert(instate.save_all())
      local bytes = record(store, "big")
      assert.are.equal(canonical(model), bytes)
      local back = instate.decode(bytes)
      assert.are.equal(back.k14, back.k56)        -- one table
      t.k14, model.k14 = nil, nil
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      assert.is_true(cache_ready(var))
      sub.b.c = 99; model.k56.b.c = 99            -- through the old proxy
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("for a table assigned under two keys in one save, and a plain table kept and stored again", function()
      local store, _, t, model = setup_big()
      local mine, theirs = { n = 1 }, { n = 1 }
      t.k7, t.k14 = mine, mine
      model.k7, model.k14 = theirs, theirs
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t.k14, model.k14 = nil, nil
      assert(instate.save_all())
      t.k21, model.k21 = mine, theirs             -- still held: k7 has it
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("for a table key of a restored entry, got from pairs and stored under another key", function()
      local path = new_path()
      local function value()
        local v = big_default(MIN + 1)
        v.k14 = { [{ id = 1 }] = "key" }
        return v
      end
      assert(instate.setup(path))
      instate.defstate("big", value(), { track = true })
      assert(instate.save_all())
      instate.teardown()
      local store = assert(instate.setup(path))
      local var = instate.defstate("big", {}, { track = true })
      assert.is_true(cache_ready(var))
      local t, model = var:get(), value()
      local key
      for k in pairs(t.k14) do key = k end       -- the key table itself
      if _VERSION == "Lua 5.1" then
        -- 5.1, LuaJIT: pairs sees the proxy's own private fields, so no
        -- key of the table comes out raw
        assert.is_nil(key.id)
        return
      end
      assert.are.equal(1, key.id)
      t.k56, model.k56 = key, next(model.k14)
      assert(instate.save_all())
      local bytes = record(store, "big")
      assert.are.equal(canonical(model), bytes)
      local back = instate.decode(bytes)
      assert.are.equal(next(back.k14), back.k56)  -- one table
    end)

    it("for cycles: an entry holding itself, an entry holding the root", function()
      local store, _, t, model = setup_big()
      t.k14.self, model.k14.self = t.k14, model.k14
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t.k14.self, model.k14.self = nil, nil
      t.k56, model.k56 = {}, { up = model }
      t.k56.up = t
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t.k56, model.k56 = nil, nil
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("for a class instance in a written entry, and for a root that becomes an array", function()
      local Vec = instate.register_class("spec29.Vec", {})
      local store, var, t, model = setup_big()
      t.k7 = setmetatable({ x = 1 }, Vec)
      model.k7 = setmetatable({ x = 1 }, Vec)
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      assert.are.equal(Vec, getmetatable(instate.decode(record(store, "big")).k7))
      instate.unregister_class("spec29.Vec")
      -- the array: integer keys 1..n only
      var:set({})
      assert(instate.save_all())
      t = var:get()
      local want = {}
      for i = 1, MIN + 1 do t[i], want[i] = i, i end
      assert(instate.save_all())
      t[MIN + 2], want[MIN + 2] = 0, 0
      assert(instate.save_all())
      local bytes = record(store, "big")
      assert.are.equal(canonical(want), bytes)
      assert.are.equal(0xdc, bytes:byte(1))        -- array16
    end)

    it("for a table key written at the top", function()
      local store, _, t, model = setup_big()
      local tk = { id = 1 }
      t[tk], model[{ id = 1 }] = true, true
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("with the full encode's own error for an unstorable value, then saves again", function()
      local store, var, t, model = setup_big()
      t.k7 = { f = print }
      local small = instate.defstate("small", { k7 = 1 }, { track = true })
      small:get().k7 = { f = print }
      local want = errmsg(instate.save_all)
      small:get().k7 = 1
      assert.are.equal(want:gsub("small", "big"), (errmsg(instate.save_all)))
      t.k7, model.k7 = "fine", "fine"
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      assert.is_true(cache_ready(var))
    end)

    it("for a table of another tracked variable stored in an entry, written through that variable", function()
      local store, var, t, model = setup_big()
      local function other_value()
        local v = big_default(MIN + 1)
        v.x = { y = 1 }
        return v
      end
      local other = instate.defstate("other", other_value(), { track = true })
      local omodel = other_value()
      assert(instate.save_all())
      assert.is_true(cache_ready(other))
      t.k7, model.k7 = other:get().x, { y = 1 }
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      other:get().x.y, model.k7.y = 2, 2         -- the shared table, through other
      t.k14, model.k14 = "unrelated", "unrelated"
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      var:update(function(v) return v end)      -- still shared after an update
      assert(instate.save_all())
      other:get().x.y, model.k7.y = 3, 3
      t.k21, model.k21 = "again", "again"
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t.k7.y, model.k7.y = 4, 4                 -- the other way round
      omodel.x.y = 4
      other:get().k14, omodel.k14 = "unrelated", "unrelated"
      t.k28, model.k28 = "more", "more"
      assert(instate.save_all())
      assert.are.equal(canonical(omodel), record(store, "other"))
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("for an entry nested as deep as the full encode refuses (no record the decoder refuses)", function()
      local store, var, t, model = setup_big()
      local function nest(levels)
        local top = {}
        local x = top
        for _ = 2, levels do x.n = {}; x = x.n end
        return top
      end
      local before = record(store, "big")
      t.k7, model.k7 = nest(200), nest(200)     -- 201 levels from the root
      local want = errmsg(function() return canonical(model) end)
      assert.matches("^value nested deeper than 200 levels at value%.k7%.n", want)
      assert.are.equal((want:gsub(" at value", " at big")), (errmsg(instate.save_all)))
      assert.are.equal(before, record(store, "big"))
      t.k7, model.k7 = nest(199), nest(199)     -- 200 levels: storable
      assert(instate.save_all())
      local bytes = record(store, "big")
      assert.are.equal(canonical(model), bytes)
      assert.are.same(model, instate.decode(bytes))
      assert.is_true(cache_ready(var))
    end)
  end)

  describe("stays exact through", function()
    local SMALL = { map_size = 1024 * 1024, max_size = 1024 * 1024 }
    local function small_store()
      local path = new_path()
      local store = assert(instate.setup(path, SMALL))
      local filler = instate.defstate("filler", "")
      local var = instate.defstate("big", big_default(MIN + 1), { track = true })
      assert(instate.save_all())
      return store, filler, var, var:get(), big_default(MIN + 1)
    end
    local function fill(filler, seed) filler:set(helpers.noise(2 * 1024 * 1024, seed)) end

    it("a failed sync save (the commit), then the next save", function()
      local store, filler, _, t, model = small_store()
      t.k7, model.k7 = { n = 1 }, { n = 1 }
      fill(filler, 3)
      local rev, _, code = instate.save_all()
      assert.is_nil(rev)
      assert.equal("MAP_FULL", code)
      t.k14, model.k14 = 2, 2
      filler:set("small")
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("a failed async save, then the next save", function()
      local store, filler, _, t, model = small_store()
      t.k7, model.k7 = { n = 1 }, { n = 1 }
      fill(filler, 4)
      assert(instate.save_all({ async = true }))
      local rev, _, code = instate.flush()
      assert.is_nil(rev)
      assert.equal("MAP_FULL", code)
      filler:set("small")
      t.k21, model.k21 = 3, 3
      assert(instate.save_all({ async = true }))
      assert(instate.flush())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("a save nested in a store transaction that aborts", function()
      local store, _, _, t, model = small_store()
      t.k7, model.k7 = { n = 1 }, { n = 1 }
      assert.is_false(pcall(store.transaction, store, function()
        assert(instate.save_all())
        error("abort")
      end))
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)

    it("a transaction's undo, reset and reload_all", function()
      local store, _, var, t, model = small_store()
      assert.is_false(pcall(instate.transaction, function()
        t.k7 = { n = 1 }                        -- a write: not undone
        var:set({ other = true })               -- a set: undone
        error("no")
      end))
      model.k7 = { n = 1 }
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t = var:get()
      t.k14, model.k14 = "x", "x"
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      t.k21 = "unsaved"
      assert(instate.reload_all())
      assert.is_true(cache_ready(var))
      t = var:get()
      t.k28, model.k28 = "after reload", "after reload"
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      var:reset()
      model = big_default(MIN + 1)
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
      var:get().k35, model.k35 = 1, 1
      assert(instate.save_all())
      assert.are.equal(canonical(model), record(store, "big"))
    end)
  end)
end)

-- A child that restores a big tracked table (its cache from the record)
-- and, round after round, writes the round into one entry and into
-- `round`, then saves asynchronously; every 5th round it flushes and
-- reports. The state at round r is state_at(r).
local N = MIN + 50
local function state_at(r)
  local t = { round = r }
  for i = 1, N do t["k" .. i] = { i = i } end
  for j = 1, r do t["k" .. (j % N + 1)] = { round = j } end
  return t
end
local KILL_CHILD = [[
  local instate = require "instate"
  local path, n = ...
  n = tonumber(n)
  assert(instate.setup(path))
  local default = { round = 0 }
  for i = 1, n do default["k" .. i] = { i = i } end
  local t = instate.defstate("big", default, { track = true }):get()
  local round = t.round
  while true do
    round = round + 1
    t["k" .. (round % n + 1)] = { round = round }
    t.round = round
    assert(instate.save_all({ async = true }))
    if round % 5 == 0 then
      assert(instate.flush())
      io.stdout:write(round, "\n")
      io.stdout:flush()
    end
  end
]]

describe("a big tracked table under SIGKILL during async saves", function()
  it("holds one whole save, its canonical encoding, never older than the last flush reported", function()
    local path = helpers.tmpdir() .. "/save"
    local saved = helpers.kill9_rounds(KILL_CHILD, path, N, 4, 0.2, function()
      local store = assert(instate.setup(path))
      local bytes = record(store, "big")
      instate.teardown()
      if not bytes then return 0 end
      local round = instate.decode(bytes).round
      assert.are.equal(canonical(state_at(round)), bytes)
      return round
    end)
    assert(saved > 4, ("only %d rounds saved"):format(saved))
  end)
end)
