-- save_all{async = true} and instate.flush(): saves encoded on the calling
-- thread and committed, in order, by the core's writer thread; errors of a
-- background save reported at the next save_all or flush; a kill -9 during
-- a stream of async saves leaves one whole save, never older than the last
-- one flush reported.
local helpers = require "helpers"
local instate = require "instate"

local function sleep(s)
  os.execute(("sleep %.3f"):format(s))
end

local function fresh()
  return helpers.tmpdir() .. "/s"
end

describe("save_all{async = true}", function()
  after_each(function() instate.teardown() end)

  it("returns a ticket at once; flush returns the revision once durable", function()
    local path = fresh()
    local store = assert(instate.setup(path))
    local a = instate.defstate("a", 0)
    local t = instate.defstate("t", { n = 0 })
    -- nothing handed over yet: flush just returns the revision
    assert.equal(store:revision(), instate.flush())
    for i = 1, 50 do
      a:set(i)
      t:get().n = i
      assert.equal(i, instate.save_all({ async = true }))
    end
    local rev = instate.flush()
    assert.equal(store:revision(), rev)
    assert.equal(50, store:namespace("state", "state"):get("a"))
    assert.same({ n = 50 }, store:namespace("state", "state"):get("t"))
    -- nothing changed: the table's fingerprint did not move, so nothing
    -- is handed over (no new ticket) and nothing is committed
    assert.equal(50, instate.save_all({ async = true }))
    assert.equal(rev, instate.flush())
    -- no variable touched at all: no new ticket
    instate.teardown()
    assert(instate.setup(path))
    instate.defstate("a", 0)
    assert.equal(0, instate.save_all({ async = true }))
    assert.is_true(instate.teardown())
    assert(instate.setup(path))
    assert.equal(50, instate.defstate("a", 0):get())
    assert.same({ n = 50 }, instate.defstate("t", {}):get())
  end)

  it("checks its options", function()
    assert(instate.setup(fresh()))
    assert.has_error(function() instate.save_all(true) end,
      "bad argument #1 to 'save_all' (table expected, got boolean)")
    assert.has_error(function() instate.save_all({ asynch = true }) end,
      "bad argument #1 to 'save_all' (unknown option 'asynch')")
    assert.has_error(function() instate.save_all({ async = 1 }) end,
      "bad argument #1 to 'save_all' (async must be a boolean, got integer)")
    instate.teardown()
    assert.has_error(function() instate.flush() end,
      "instate.flush: no store; call instate.setup(path) first")
  end)

  it("raises on an unstorable value and validate on the calling thread", function()
    assert(instate.setup(fresh()))
    local f = instate.defstate("f", 0)
    f:set(function() end)
    assert.has_error(function() instate.save_all({ async = true }) end,
      "cannot store a function at f")
    f:set(1)
    instate.defstate("v", 5, { validate = function(x) return x < 3, "too big" end })
    assert.has_error(function() instate.save_all({ async = true }) end,
      "instate.save_all: variable 'v' is invalid: too big (nothing was saved)")
  end)

  it("commits saves in order, sync saves included", function()
    local path = fresh()
    local store = assert(instate.setup(path))
    local a = instate.defstate("a", 0)
    local big = instate.defstate("big", "")
    for i = 1, 100 do
      a:set(i)
      big:set(("x"):rep(1000 + i))
      assert(instate.save_all({ async = true }))
      if i % 10 == 0 then
        -- a sync save waits for the async ones before it
        a:set(-i)
        assert(instate.save_all())
        assert.equal(-i, store:namespace("state", "state"):get("a"))
      end
    end
    a:set(7)
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.equal(7, store:namespace("state", "state"):get("a"))
    assert.equal(("x"):rep(1100), store:namespace("state", "state"):get("big"))
    -- reload_all sees the saves handed over
    a:set(8)
    assert(instate.save_all({ async = true }))
    a:set(9)
    assert.is_true(instate.reload_all())
    assert.equal(8, a:get())
  end)

  it("is flushed by teardown", function()
    local path = fresh()
    assert(instate.setup(path))
    local a = instate.defstate("a", 0)
    for i = 1, 20 do
      a:set(i)
      assert(instate.save_all({ async = true }))
    end
    assert.is_true(instate.teardown())
    assert(instate.setup(path))
    assert.equal(20, instate.defstate("a", 0):get())
  end)

  it("is waited for when the Lua state closes", function()
    local path = fresh()
    local out, ok = helpers.run_lua([[
      local instate = require "instate"
      assert(instate.setup(...))
      local a = instate.defstate("a", 0)
      local t = instate.defstate("t", {})
      for i = 1, 30 do
        a:set(i)
        t:get()[i] = ("x"):rep(10000)
        assert(instate.save_all({ async = true }))
      end
      io.write("submitted")
    ]], path)
    assert.is_true(ok, out)
    assert.equal("submitted", out)
    assert(instate.setup(path))
    assert.equal(30, instate.defstate("a", 0):get())
    assert.equal(30, #instate.defstate("t", {}):get())
  end)

  it("raises inside a store transaction", function()
    local store = assert(instate.setup(fresh()))
    local a = instate.defstate("a", 0)
    a:set(1)
    local ok, err = pcall(store.transaction, store, function()
      instate.save_all({ async = true })
    end)
    assert.is_false(ok)
    assert.matches("an async save cannot run inside a store transaction", err, 1, true)
    -- nothing was saved, a is still dirty: the next save writes it
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.equal(1, store:namespace("state", "state"):get("a"))
  end)

  it("flush is BUSY, not a deadlock, while this thread holds a write transaction", function()
    local path = fresh()
    local store = assert(instate.setup(path))
    local a = instate.defstate("a", 0)
    -- another handle's transaction: this thread holds the store's writer slot
    local other = assert(instate.open(path))
    local ok = other:transaction(function(tx)
      a:set(1)
      assert.equal(1, instate.save_all({ async = true }))
      local rev, msg, code = instate.flush()
      assert.is_nil(rev)
      assert.equal("BUSY", code)
      assert.matches("cannot wait for the writer inside a write transaction of this thread", msg, 1, true)
      a:set(2)
      rev, msg, code = instate.save_all()
      assert.is_nil(rev)
      assert.equal("BUSY", code)
      tx:namespace("kv"):set("k", true)
      return true
    end)
    assert.is_true(ok)
    other:close()
    -- the transaction ended: the writer went on; a is still dirty
    assert(instate.flush())
    assert.equal(1, store:namespace("state", "state"):get("a"))
    assert(instate.save_all())
    assert.equal(2, store:namespace("state", "state"):get("a"))
  end)

  it("works inside instate.transaction, whose undo makes the next save rewrite", function()
    local store = assert(instate.setup(fresh()))
    local a = instate.defstate("a", 0)
    pcall(instate.transaction, function()
      a:set(5)
      assert(instate.save_all({ async = true }))
      error("undo")
    end)
    assert.equal(0, a:get())
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.equal(0, store:namespace("state", "state"):get("a"))
  end)
end)

describe("errors of a background save", function()
  after_each(function() instate.teardown() end)

  local SMALL = { map_size = 1024 * 1024, max_size = 1024 * 1024 }

  it("are reported by flush, once, naming the variable", function()
    local store = assert(instate.setup(fresh(), SMALL))
    local big = instate.defstate("big", "")
    local n = instate.defstate("n", 0)
    n:set(1)
    assert(instate.save_all({ async = true }))
    big:set(helpers.noise(2 * 1024 * 1024, 1))
    n:set(2)
    assert.equal(2, instate.save_all({ async = true }))
    local rev, msg, code = instate.flush()
    assert.is_nil(rev)
    assert.equal("MAP_FULL", code)
    assert.matches("async batch 2 failed: cannot save 'big' in namespace 'state'", msg, 1, true)
    -- reported once
    assert(instate.flush())
    -- the failed save wrote nothing; its variables are dirty again
    assert.equal(1, store:namespace("state", "state"):get("n"))
    big:set("small")
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.equal(2, store:namespace("state", "state"):get("n"))
    assert.equal("small", store:namespace("state", "state"):get("big"))
  end)

  it("leave the tables of the failed save to be encoded again", function()
    local store = assert(instate.setup(fresh(), SMALL))
    local big = instate.defstate("big", "")
    local inv = instate.defstate("inv", { sword = false })
    assert(instate.save_all())
    inv:get().sword = true             -- in place: only its fingerprint moved
    big:set(helpers.noise(2 * 1024 * 1024, 3))
    assert(instate.save_all({ async = true }))
    local rev, _, code = instate.flush()
    assert.is_nil(rev)
    assert.equal("MAP_FULL", code)
    -- not changed again: the next save must still write it
    big:set("small")
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    assert.is_true(store:namespace("state", "state"):get("inv").sword)
  end)

  it("are reported by the next save_all, which hands nothing over", function()
    local store = assert(instate.setup(fresh(), SMALL))
    local big = instate.defstate("big", "")
    local n = instate.defstate("n", 0)
    big:set(helpers.noise(2 * 1024 * 1024, 2))
    n:set(3)
    assert.equal(1, instate.save_all({ async = true }))
    -- let the writer meet the error (it fails within milliseconds: the
    -- record cannot fit the map)
    sleep(os.getenv("INSTATE_SANITIZE") and 2 or 1)
    big:set("small")
    local t, msg, code = instate.save_all({ async = true })
    assert.is_nil(t)
    assert.equal("MAP_FULL", code)
    assert.matches("async batch 1 failed: cannot save 'big'", msg, 1, true)
    assert.is_nil(store:namespace("state", "state"):get("n"))
    -- the next save rewrites what failed, the scalar included
    assert.equal(2, instate.save_all({ async = true }))
    assert(instate.flush())
    assert.equal(3, store:namespace("state", "state"):get("n"))
    assert.equal("small", store:namespace("state", "state"):get("big"))
  end)

  it("are reported by a sync save_all, which then writes nothing", function()
    local store = assert(instate.setup(fresh(), SMALL))
    local big = instate.defstate("big", "")
    local n = instate.defstate("n", 0)
    big:set(helpers.noise(2 * 1024 * 1024, 3))
    assert(instate.save_all({ async = true }))
    big:set("small")
    n:set(4)
    local r, msg, code = instate.save_all()
    assert.is_nil(r)
    assert.equal("MAP_FULL", code)
    assert.matches("cannot save 'big'", msg, 1, true)
    assert.is_nil(store:namespace("state", "state"):get("n"))
    assert(instate.save_all())
    assert.equal(4, store:namespace("state", "state"):get("n"))
  end)

  it("are returned by teardown", function()
    assert(instate.setup(fresh(), SMALL))
    instate.defstate("big", ""):set(helpers.noise(2 * 1024 * 1024, 4))
    assert(instate.save_all({ async = true }))
    local ok, msg, code = instate.teardown()
    assert.is_nil(ok)
    assert.equal("MAP_FULL", code)
    assert.matches("cannot save 'big'", msg, 1, true)
  end)
end)

describe("writer batches", function()
  local function open(opts)
    return assert(instate.open(fresh(), opts))
  end

  it("commit writes of several namespaces with a save, in one transaction", function()
    local store = open()
    local kv, st = store:namespace("kv"), store:namespace("state", "state")
    kv:set("gone", 1)
    local w = assert(store:writer())
    local b = w:batch()
    assert.equal(0, b:count())
    b:put(kv, "k", { 1, 2, x = "y" })
    b:put(kv, "v", "versioned", 3)
    b:delete(kv, "gone")
    b:delete(kv, "never")
    assert.equal(4, b:count())
    local rev = store:revision()
    assert.equal(1, st:save_many(2, { "a", "b" }, { 10, { 20 } }, 1, b))
    assert.equal(0, b:count())
    assert.equal(rev + 1, w:flush())
    assert.same({ 1, 2, x = "y" }, kv:get("k"))
    assert.equal(3, select(2, kv:get_encoded("v")))
    assert.is_nil(kv:get("gone"))
    assert.equal(10, st:get("a"))
    assert.same({ 20 }, st:get("b"))
    -- a batch alone
    b:put(kv, "k", false)
    assert.equal(2, b:submit())
    assert.equal(rev + 2, w:flush())
    assert.is_false(kv:get("k"))
    assert.is_true(w:close())
    assert.has_error(function() b:submit() end, "writer is closed")
    store:close()
  end)

  it("check their arguments and raise on an unstorable value", function()
    local store = open()
    local kv = store:namespace("kv")
    local b = assert(store:writer()):batch()
    assert.has_error(function() b:put(kv, "f", function() end) end,
      "cannot store a function at f")
    assert.has_error(function() b:put(kv, "", 1) end)
    assert.has_error(function() b:put(kv, "k", 1, -1) end,
      "bad argument #4 to 'put' (version out of range)")
    store:transaction(function(tx)
      assert.has_error(function() b:put(tx:namespace("kv"), "k", 1) end,
        "bad argument #1 to 'put' (a store-level namespace expected (not one of a transaction))")
    end)
    assert.equal(0, b:count())
    store:close()
  end)

  it("are left as they were when the submit reports an earlier error", function()
    local store = open({ map_size = 1024 * 1024, max_size = 1024 * 1024 })
    local kv = store:namespace("kv")
    local w = assert(store:writer())
    local big = w:batch()
    big:put(kv, "big", helpers.noise(2 * 1024 * 1024, 5))
    assert.equal(1, big:submit())
    local _, done = w:info()
    for _ = 1, 200 do
      _, done = w:info()
      if done == 1 then break end
      sleep(0.01)
    end
    assert.equal(1, done)
    assert.equal("MAP_FULL", select(3, w:info()))
    local b = w:batch()
    b:put(kv, "small", 1)
    local t, msg, code = b:submit()
    assert.is_nil(t)
    assert.equal("MAP_FULL", code)
    assert.matches("async batch 1 failed: cannot save 'big' in namespace 'kv'", msg, 1, true)
    assert.equal(1, b:count())
    assert.equal(2, b:submit())
    assert(w:flush())
    assert.equal(1, kv:get("small"))
    w:close()
    store:close()
  end)
end)

-- Each round writes the round number into every variable (scalars, and
-- tables spanning pages); every 5th round the child flushes and reports.
local NVARS = 200
local KILLS = 8
local CHILD = [[
  local instate = require "instate"
  local path, nvars = ...
  nvars = tonumber(nvars)
  assert(instate.setup(path))
  local vars = {}
  for i = 1, nvars do
    vars[i] = instate.defstate(("v%04d"):format(i), i % 3 == 0 and { round = 0 } or 0)
  end
  local function round_of(v) return type(v) == "table" and v.round or v end
  local round = round_of(vars[1]:get())
  while true do
    round = round + 1
    for i = 1, nvars do
      if i % 3 == 0 then
        vars[i]:set({ round = round, pad = ("x"):rep((i * 37 + round) % 900), list = { round, i } })
      else
        vars[i]:set(round)
      end
    end
    assert(instate.save_all({ async = true }))
    if round % 5 == 0 then
      assert(instate.flush())
      io.stdout:write(round, "\n")
      io.stdout:flush()
    end
  end
]]

describe("async saves under SIGKILL", function()
  it("leave one whole save, never older than the last flush reported", function()
    local path = helpers.tmpdir() .. "/save"
    -- at least what flush reported durable, and never older than before
    local saved = helpers.kill9_rounds(CHILD, path, NVARS, KILLS, 0.1, function()
      return helpers.saved_round(instate, path, NVARS)
    end)
    assert(saved > KILLS, ("only %d rounds saved in %d runs"):format(saved, KILLS))
  end)
end)
