-- Map growth: a store opened with a 1 MiB map takes hundreds of megabytes,
-- in single writes and in one transaction; max_size is the only limit.
local helpers = require "helpers"
local instate = require "instate"

local MiB = 1024 * 1024

-- A distinct 1 MiB value per i, cheap to build and to check.
local function blob(i)
  return string.rep(helpers.le(i, 8), MiB / 8)
end

local function remove(dir)
  os.execute("rm -rf " .. helpers.sh_quote(dir))
end

describe("map growth", function()
  it("takes 200 MiB of single writes into a 1 MiB map", function()
    local dir = helpers.tmpdir()
    local store = assert(instate.open(dir .. "/s", { map_size = MiB, sync = "none" }))
    assert.are.equal(MiB, store:stats().map_size)
    local ns = store:namespace("big")
    local small = store:namespace("small")
    for i = 1, 200 do
      assert.is_true(ns:set("k" .. i, blob(i)))
      assert.is_true(small:set("k" .. i, i))
    end
    local st = store:stats()
    assert.is_true(st.map_size >= 200 * MiB, tostring(st.map_size))
    assert.is_true(st.used_bytes >= 200 * MiB, tostring(st.used_bytes))
    assert.are.equal(200, ns:count())
    for _, i in ipairs({ 1, 2, 77, 199, 200 }) do
      assert.is_true(ns:get("k" .. i) == blob(i), "k" .. i)
    end
    assert.are.equal(200, small:count())
    store:close()
    -- the grown map is what the file holds on reopen
    store = assert(instate.open(dir .. "/s", { map_size = MiB }))
    assert.is_true(store:namespace("big"):get("k200") == blob(200))
    store:close()
    remove(dir)
  end)

  it("takes 200 MiB in one transaction, running fn again when it must grow", function()
    local dir = helpers.tmpdir()
    local store = assert(instate.open(dir .. "/s", { map_size = MiB, sync = "none" }))
    local runs = 0
    local rev = store:revision()
    local r = store:transaction(function(tx)
      runs = runs + 1
      local ns = tx:namespace("big")
      for i = 1, 200 do
        local ok, msg, code = ns:set("k" .. i, blob(i))
        -- a failed write must surface; the binding reruns fn after growing
        if not ok then return nil, msg, code end
      end
      return "committed"
    end)
    assert.are.equal("committed", r)
    assert.is_true(runs >= 1)
    assert.are.equal(rev + 1, store:revision())
    local ns = store:namespace("big")
    assert.are.equal(200, ns:count())
    for _, i in ipairs({ 1, 100, 200 }) do
      assert.is_true(ns:get("k" .. i) == blob(i), "k" .. i)
    end
    assert.is_true(store:stats().map_size >= 200 * MiB)
    store:close()
    remove(dir)
  end)

  it("grows under a second handle and a live snapshot without breaking them", function()
    local dir = helpers.tmpdir()
    local a = assert(instate.open(dir .. "/s", { map_size = MiB, sync = "none" }))
    local b = assert(instate.open(dir .. "/s"))
    a:namespace("n"):set("first", "value")
    local seen = b:snapshot(function(snap)
      local ns = snap:namespace("n")
      for i = 1, 20 do assert.is_true(a:namespace("n"):set("k" .. i, blob(i))) end
      return ns:get("first"), ns:get("k20")
    end)
    assert.are.equal("value", seen)
    assert.is_true(b:namespace("n"):get("k20") == blob(20))
    assert.is_true(b:stats().map_size >= 20 * MiB)
    a:close()
    b:close()
    remove(dir)
  end)

  describe("max_size", function()
    local function check_usable(store, ns)
      assert.is_true(ns:get("k1") == blob(1))
      assert.is_true(ns:set("small", "fits"))
      assert.are.equal("fits", ns:get("small"))
      assert.is_true(ns:delete("k1"))
      assert.is_false(ns:has("k1"))
      assert.are.equal(2, ns:incr("small2", 1, 1))
    end

    it("a single write past it returns nil, msg, MAP_FULL; the store stays usable", function()
      local dir = helpers.tmpdir()
      local store = assert(instate.open(dir .. "/s",
        { map_size = MiB, max_size = 8 * MiB, sync = "none" }))
      local ns = store:namespace("n")
      local ok, msg, code
      local i = 0
      repeat
        i = i + 1
        ok, msg, code = ns:set("k" .. i, blob(i))
      until not ok or i > 20
      assert.is_nil(ok)
      assert.is_true(i > 2 and i <= 8, tostring(i))
      assert.is_string(msg)
      assert.are.equal("MAP_FULL", code)
      assert.is_false(ns:has("k" .. i))
      assert.is_true(store:stats().map_size <= 8 * MiB)
      check_usable(store, ns)
      store:close()
    end)

    it("a transaction past it returns nil, msg, MAP_FULL and writes nothing", function()
      local dir = helpers.tmpdir()
      local store = assert(instate.open(dir .. "/s",
        { map_size = MiB, max_size = 8 * MiB, sync = "none" }))
      local ns = store:namespace("n")
      assert.is_true(ns:set("k1", blob(1)))
      local rev = store:revision()
      local r, msg, code = store:transaction(function(tx)
        local t = tx:namespace("n")
        for i = 2, 20 do t:set("k" .. i, blob(i)) end
        return "unreachable"
      end)
      assert.is_nil(r)
      assert.is_string(msg)
      assert.are.equal("MAP_FULL", code)
      assert.are.equal(rev, store:revision())
      assert.are.equal(1, ns:count())
      check_usable(store, ns)
      store:close()
    end)
  end)
end)
