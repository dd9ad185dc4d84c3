-- Expiry. Every test fixes the clock with instate._set_clock, so nothing
-- here depends on how fast the machine is.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

local T0 = 1700000000000 -- ms since the epoch

describe("ttl", function()
  local path, store, ns
  before_each(function()
    instate._set_clock(T0)
    path = helpers.tmpdir() .. "/s"
    store = assert(instate.open(path, { sync = "none" }))
    ns = store:namespace("cache")
  end)
  after_each(function()
    store:close()
    instate._set_clock(nil)
  end)

  local function at(ms) instate._set_clock(T0 + ms) end

  it("a record lives until its expiry and reads as absent from then on", function()
    assert.is_true(ns:set("k", "v", { ttl = 10 }))
    assert.are.equal(10, ns:ttl("k"))
    at(9999)
    assert.are.equal("v", ns:get("k"))
    assert.is_true(ns:has("k"))
    assert.are.equal(0.001, ns:ttl("k"))
    -- docs/FORMAT.md: an expiry <= now is expired
    at(10000)
    assert.is_false(ns:has("k"))
    at(10001)
    assert.is_nil(ns:get("k"))
    assert.are.equal("d", ns:get("k", "d"))
    assert.is_false(ns:has("k"))
    assert.is_nil(ns:ttl("k"))
    at(20000)
    assert.is_nil(ns:get("k"))
  end)

  it("accepts fractional seconds", function()
    ns:set("k", 1, { ttl = 0.25 })
    assert.are.equal(0.25, ns:ttl("k"))
    at(249)
    assert.is_true(ns:has("k"))
    at(251)
    assert.is_false(ns:has("k"))
  end)

  it("reports seconds left as a float", function()
    ns:set("k", 1, { ttl = 3 })
    at(1500)
    local left = ns:ttl("k")
    assert.are.equal("float", compat.math_type(left))
    assert.are.equal(1.5, left)
  end)

  it("expired records are absent from count, pairs, delete and expire", function()
    ns:set("a", 1, { ttl = 1 })
    ns:set("b", 2)
    ns:set("c", 3, { ttl = 5 })
    ns:set("d", 4, { ttl = 1 })
    assert.are.equal(4, ns:count())
    at(2000)
    assert.are.equal(2, ns:count())
    local keys = {}
    for k in ns:pairs() do keys[#keys + 1] = k end
    assert.are.same({ "b", "c" }, keys)
    keys = {}
    for k in ns:pairs("a") do keys[#keys + 1] = k end
    assert.are.same({}, keys)
    assert.is_false(ns:delete("a"))
    assert.is_false(ns:expire("d", 100))
    assert.is_false(ns:has("d"))
  end)

  it("clear counts only live records", function()
    ns:set("a", 1, { ttl = 1 })
    ns:set("b", 2)
    at(1001)
    assert.are.equal(1, ns:clear())
    assert.are.equal(0, ns:count())
  end)

  it("add, incr and update treat an expired record as absent", function()
    ns:set("a", "old", { ttl = 1 })
    ns:set("n", 50, { ttl = 1 })
    ns:set("u", "old", { ttl = 1 })
    at(1001)
    assert.is_true(ns:add("a", "new"))
    assert.are.equal("new", ns:get("a"))
    assert.is_false(ns:ttl("a"))
    assert.are.equal(1, ns:incr("n"))
    local seen = "unset"
    ns:update("u", function(old) seen = old; return "fresh" end, "dflt")
    assert.are.equal("dflt", seen)
    assert.are.equal("fresh", ns:get("u"))
  end)

  it("set without ttl replaces an expiry; set with ttl replaces it too", function()
    ns:set("k", 1, { ttl = 5 })
    ns:set("k", 2)
    assert.is_false(ns:ttl("k"))
    ns:set("k", 3, { ttl = 7 })
    assert.are.equal(7, ns:ttl("k"))
    at(8000)
    assert.is_false(ns:has("k"))
  end)

  it("expire sets, extends, shortens and removes the expiry", function()
    ns:set("k", 1)
    assert.is_true(ns:expire("k", 10))
    assert.are.equal(10, ns:ttl("k"))
    at(5000)
    assert.is_true(ns:expire("k", 10))
    assert.are.equal(10, ns:ttl("k"))
    assert.is_true(ns:expire("k", 1))
    at(5999)
    assert.is_true(ns:has("k"))
    assert.is_true(ns:expire("k", 0))
    at(100000)
    assert.are.equal(1, ns:get("k"))
    assert.is_false(ns:ttl("k"))
  end)

  it("expiry is absolute: it survives reopening", function()
    ns:set("k", 1, { ttl = 10 })
    store:close()
    at(5000)
    store = assert(instate.open(path))
    ns = store:namespace("cache")
    assert.are.equal(5, ns:ttl("k"))
    at(10001)
    assert.is_nil(ns:get("k"))
  end)

  it("inside transactions and snapshots, expired reads as absent", function()
    ns:set("k", 1, { ttl = 1 })
    at(1001)
    store:transaction(function(tx)
      local t = tx:namespace("cache")
      assert.is_nil(t:get("k"))
      assert.is_true(t:add("k", 2, { ttl = 1 }))
      assert.are.equal(1, t:ttl("k"))
    end)
    store:snapshot(function(snap)
      assert.are.equal(2, snap:namespace("cache"):get("k"))
    end)
    at(3000)
    store:snapshot(function(snap)
      assert.is_nil(snap:namespace("cache"):get("k"))
    end)
  end)

  it("purge removes exactly the expired records of every namespace", function()
    local other = store:namespace("other")
    for i = 1, 10 do ns:set("t" .. i, i, { ttl = i }) end
    ns:set("keep", true)
    other:set("t", 1, { ttl = 3 })
    at(3500)
    assert.are.equal(4, store:purge())
    at(0)
    -- gone for real: turning the clock back does not bring them back
    assert.are.equal(8, ns:count())
    assert.are.equal(0, other:count())
    assert.is_true(ns:has("t4"))
  end)

  it("the real clock comes back with _set_clock(nil)", function()
    instate._set_clock(nil)
    ns:set("k", 1, { ttl = 3600 })
    -- T0 is in 2023: with the real clock the record is an hour from expiry
    instate._set_clock(T0)
    local left = ns:ttl("k")
    assert.is_true(left > 3600 * 24, tostring(left))
  end)

  it("raises on bad ttl values and bad clock values", function()
    for _, bad in ipairs({ -1, "ten", {}, true, 0 / 0 }) do
      local ok, err = pcall(ns.set, ns, "k", 1, { ttl = bad })
      assert.is_false(ok, tostring(bad))
      assert.matches("ttl", err, 1, true)
      assert.is_false(pcall(ns.add, ns, "k", 1, { ttl = bad }), tostring(bad))
    end
    assert.is_false(ns:has("k"))
    assert.has_error(function() instate._set_clock("now") end,
      "bad argument #1 to '_set_clock' (number expected, got string)")
    assert.has_error(function() instate._set_clock(1.5) end,
      "bad argument #1 to '_set_clock' (number has no integer representation)")
  end)
end)
