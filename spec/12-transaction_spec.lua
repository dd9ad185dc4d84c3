-- Transactions: commit, abort, savepoints, handle lifetimes, BUSY between
-- coroutines, abandoned transactions, snapshot isolation.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

describe("store:transaction", function()
  local store, ns
  before_each(function()
    store = assert(instate.open(helpers.tmpdir() .. "/s", { sync = "none" }))
    ns = store:namespace("n")
  end)
  after_each(function() store:close() end)

  it("commits when fn returns, returning fn's results and adding one to the revision", function()
    local rev = store:revision()
    local a, b, c, d = store:transaction(function(tx, x, y)
      local t = tx:namespace("n")
      t:set("a", x)
      t:set("b", y)
      t:incr("c")
      return x + y, nil, "three"
    end, 1, 2)
    assert.are.equal(3, a)
    assert.is_nil(b)
    assert.are.equal("three", c)
    assert.is_nil(d)
    assert.are.equal(rev + 1, store:revision())
    assert.are.equal(1, ns:get("a"))
    assert.are.equal(2, ns:get("b"))
    assert.are.equal(1, ns:get("c"))
  end)

  it("returns exactly fn's results, trailing nils included", function()
    assert.are.equal(0, select("#", store:transaction(function() end)))
    assert.are.equal(3, select("#", store:transaction(function() return 1, nil, nil end)))
  end)

  it("passes every extra argument, nils included", function()
    local n, third = store:transaction(function(tx, ...)
      return select("#", ...), select(3, ...)
    end, nil, nil, "x")
    assert.are.equal(3, n)
    assert.are.equal("x", third)
  end)

  it("aborts and re-raises the very error when fn raises", function()
    ns:set("a", "before")
    local rev = store:revision()
    local err_obj = { reason = "boom" }
    local ok, err = pcall(store.transaction, store, function(tx)
      tx:namespace("n"):set("a", "during")
      tx:namespace("n"):set("b", "during")
      tx:namespace("other"):set("c", 1)
      error(err_obj)
    end)
    assert.is_false(ok)
    assert.are.equal(err_obj, err)
    assert.are.equal("before", ns:get("a"))
    assert.is_nil(ns:get("b"))
    assert.are.same({ "n" }, store:namespaces())
    assert.are.equal(rev, store:revision())
    -- the write slot was released
    assert.is_true(ns:set("a", "after"))
  end)

  it("keeps a string error's position information", function()
    local ok, err = pcall(store.transaction, store, function() error("failed here") end)
    assert.is_false(ok)
    assert.matches("12%-transaction_spec%.lua:%d+: failed here", err)
  end)

  it("reads its own writes; others do not see them before commit", function()
    ns:set("k", 1)
    store:transaction(function(tx)
      local t = tx:namespace("n")
      t:set("k", 2)
      assert.are.equal(2, t:get("k"))
      assert.are.equal(1, t:count())
      store:snapshot(function(snap)
        assert.are.equal(1, snap:namespace("n"):get("k"))
      end)
    end)
    assert.are.equal(2, ns:get("k"))
  end)

  it("raises when fn is not a function", function()
    assert.has_error(function() store:transaction() end,
      "bad argument #1 to 'transaction' (function expected, got no value)")
    assert.has_error(function() store:transaction("fn") end,
      "bad argument #1 to 'transaction' (function expected, got string)")
    assert.has_error(function() store:snapshot({}) end,
      "bad argument #1 to 'snapshot' (function expected, got table)")
  end)

  it("tx:namespace validates the name", function()
    store:transaction(function(tx)
      assert.has_error(function() tx:namespace("__meta") end,
        "bad argument #1 to 'namespace' (namespace names starting with '__' are reserved ('__meta'))")
      assert.has_error(function() tx:namespace("") end,
        "bad argument #1 to 'namespace' (namespace name must be 1..255 bytes, got 0)")
      assert.has_error(function() tx:namespace(string.rep("x", 256)) end,
        "bad argument #1 to 'namespace' (namespace name must be 1..255 bytes, got 256)")
      assert.has_error(function() tx:namespace() end,
        "bad argument #1 to 'namespace' (string expected, got no value)")
    end)
  end)

  describe("savepoints", function()
    it("an inner transaction that raises is rolled back alone", function()
      local rev = store:revision()
      store:transaction(function(tx)
        local t = tx:namespace("n")
        t:set("outer", 1)
        local ok, err = pcall(store.transaction, store, function(inner)
          inner:namespace("n"):set("inner", 1)
          inner:namespace("n"):set("outer", "clobbered")
          error("inner failed", 0)
        end)
        assert.is_false(ok)
        assert.are.equal("inner failed", err)
        assert.are.equal(1, t:get("outer"))
        assert.is_nil(t:get("inner"))
        local r = store:transaction(function(inner)
          inner:namespace("n"):set("kept", true)
          return "inner result"
        end)
        assert.are.equal("inner result", r)
        assert.is_true(t:get("kept"))
      end)
      assert.are.equal(rev + 1, store:revision())
      assert.are.equal(1, ns:get("outer"))
      assert.is_nil(ns:get("inner"))
      assert.is_true(ns:get("kept"))
    end)

    it("a committed inner transaction is undone by the outer abort", function()
      local rev = store:revision()
      pcall(store.transaction, store, function()
        store:transaction(function(inner) inner:namespace("n"):set("k", 1) end)
        error("outer failed")
      end)
      assert.is_nil(ns:get("k"))
      assert.are.equal(rev, store:revision())
    end)

    it("nests three deep", function()
      store:transaction(function(t1)
        t1:namespace("n"):set("a", 1)
        store:transaction(function(t2)
          t2:namespace("n"):set("b", 2)
          pcall(store.transaction, store, function(t3)
            t3:namespace("n"):set("c", 3)
            error("no")
          end)
          store:transaction(function(t3) t3:namespace("n"):set("d", 4) end)
        end)
      end)
      assert.are.same({ a = 1, b = 2, d = 4 },
        { a = ns:get("a"), b = ns:get("b"), c = ns:get("c"), d = ns:get("d") })
    end)
  end)

  describe("after the transaction ends", function()
    it("the tx handle raises 'transaction has ended'", function()
      local saved = store:transaction(function(tx) return tx end)
      local ok, err = pcall(saved.namespace, saved, "n")
      assert.is_false(ok)
      assert.matches("transaction has ended", err, 1, true)
      local failed
      pcall(store.transaction, store, function(tx) failed = tx; error("x") end)
      ok, err = pcall(failed.namespace, failed, "n")
      assert.is_false(ok)
      assert.matches("transaction has ended", err, 1, true)
    end)

    it("its namespaces are unusable", function()
      local tns = store:transaction(function(tx)
        local t = tx:namespace("n")
        t:set("k", 1)
        return t
      end)
      assert.are.equal(1, ns:get("k"))
      for name, f in pairs({
        get = function() return tns:get("k") end,
        set = function() return tns:set("k", 2) end,
        has = function() return tns:has("k") end,
        delete = function() return tns:delete("k") end,
        count = function() return tns:count() end,
        pairs = function() return tns:pairs() end,
        incr = function() return tns:incr("k") end,
      }) do
        local ok, err = pcall(f)
        assert.is_false(ok, name)
        assert.is_truthy(err:find("ended", 1, true) or err:find("closed", 1, true), err)
      end
      assert.are.equal(1, ns:get("k"))
    end)

    it("an iterator left open inside it is unusable", function()
      ns:set("a", 1)
      ns:set("b", 2)
      local iter, state = store:transaction(function(tx)
        local f, s = tx:namespace("n"):pairs()
        assert.are.equal("a", (f(s)))
        return f, s
      end)
      local ok, err = pcall(iter, state)
      assert.is_false(ok)
      assert.matches("closed", err, 1, true)
      -- and the write slot was released
      assert.is_true(ns:set("c", 3))
    end)

    it("a snapshot's handle is unusable too", function()
      local snap_ns = store:snapshot(function(snap) return snap:namespace("n") end)
      assert.has_error(function() snap_ns:get("k") end, "transaction has ended")
    end)
  end)

  describe("BUSY", function()
    it("a store-level write inside the transaction returns BUSY", function()
      store:transaction(function(tx)
        local ok, msg, code = ns:set("k", 1)
        assert.is_nil(ok)
        assert.is_string(msg)
        assert.are.equal("BUSY", code)
        tx:namespace("n"):set("k", 2)
      end)
      assert.are.equal(2, ns:get("k"))
    end)

    it("a transaction from another coroutine returns BUSY", function()
      local co_result
      store:transaction(function(tx)
        tx:namespace("n"):set("k", 1)
        local co = coroutine.wrap(function()
          return compat.pack(store:transaction(function(t2)
            t2:namespace("n"):set("k", "from co")
          end))
        end)
        co_result = co()
      end)
      assert.is_nil(co_result[1])
      assert.are.equal("cannot begin a transaction: a write transaction is already open"
        .. " in this thread (another coroutine's)", co_result[2])
      assert.are.equal("BUSY", co_result[3])
      assert.are.equal(1, ns:get("k"))
    end)

    -- A transaction function can yield where coroutines yield across C calls
    -- (5.2+); on 5.1 and LuaJIT it raises, the test after these.
    if compat.yield_across_c then
      it("a coroutine suspended inside a transaction makes others BUSY until it resumes", function()
        local co = coroutine.create(function()
          return store:transaction(function(tx)
            tx:namespace("n"):set("k", "co")
            coroutine.yield("inside")
            tx:namespace("n"):set("k2", "co")
            return "done"
          end)
        end)
        local ok, v = coroutine.resume(co)
        assert.is_true(ok, v)
        assert.are.equal("inside", v)
        local r, msg, code = ns:set("k", "main")
        assert.is_nil(r)
        assert.is_string(msg)
        assert.are.equal("BUSY", code)
        r, msg, code = store:transaction(function() end)
        assert.is_nil(r)
        assert.are.equal("BUSY", code)
        -- reads are never blocked
        assert.is_nil(ns:get("k"))
        ok, v = coroutine.resume(co)
        assert.is_true(ok, v)
        assert.are.equal("done", v)
        assert.are.equal("co", ns:get("k"))
        assert.are.equal("co", ns:get("k2"))
        assert.is_true(ns:set("k", "main"))
      end)
    end

    if compat.yield_across_c then
      it("an abandoned transaction in a collected coroutine is aborted, never committed", function()
        ns:set("k", "before")
        local rev = store:revision()
        local co = coroutine.create(function()
          store:transaction(function(tx)
            tx:namespace("n"):set("k", "abandoned")
            tx:namespace("n"):set("new", "abandoned")
            coroutine.yield()
          end)
        end)
        assert.is_true(coroutine.resume(co))
        local _, _, code = ns:set("x", 1)
        assert.are.equal("BUSY", code)
        co = nil -- luacheck: ignore
        collectgarbage()
        collectgarbage()
        assert.is_true(ns:set("x", 1))
        assert.are.equal("before", ns:get("k"))
        assert.is_nil(ns:get("new"))
        assert.are.equal(rev + 1, store:revision())
      end)
    end

    -- 5.4 only; the test above (the coroutine collected) is what 5.2 and 5.3 have.
    if compat.to_be_closed then
      it("a suspended transaction can be abandoned through coroutine.close", function()
        local co = coroutine.create(function()
          store:transaction(function(tx)
            tx:namespace("n"):set("k", "abandoned")
            coroutine.yield()
          end)
        end)
        assert.is_true(coroutine.resume(co))
        assert.is_true(coroutine.close(co))
        collectgarbage()
        assert.is_true(ns:set("x", 1))
        assert.is_nil(ns:get("k"))
      end)
    end

    if not compat.yield_across_c then
      it("a transaction function that yields raises, and nothing is written", function()
        ns:set("k", "before")
        local rev = store:revision()
        local co = coroutine.create(function()
          return store:transaction(function(tx)
            tx:namespace("n"):set("k", "inside")
            coroutine.yield()
          end)
        end)
        local ok, err = coroutine.resume(co)
        assert.is_false(ok)
        assert.matches("cannot yield inside a transaction on Lua 5.1 and LuaJIT (", err, 1, true)
        assert.matches("attempt to yield across", err, 1, true)
        assert.are.equal("before", ns:get("k"))
        assert.are.equal(rev, store:revision())
        assert.is_true(ns:set("x", 1))
      end)
    end
  end)

  describe("snapshot", function()
    it("sees one consistent view while writes go on", function()
      ns:set("a", 1)
      ns:set("b", 1)
      local a, b, n = store:snapshot(function(snap)
        local s = snap:namespace("n")
        local a0 = s:get("a")
        store:transaction(function(tx)
          tx:namespace("n"):set("a", 2)
          tx:namespace("n"):set("b", 2)
          tx:namespace("n"):set("c", 2)
        end)
        assert.are.equal(2, ns:get("a"))
        local keys = 0
        for _ in s:pairs() do keys = keys + 1 end
        return a0, s:get("b"), keys
      end)
      assert.are.equal(1, a)
      assert.are.equal(1, b)
      assert.are.equal(2, n)
    end)

    it("does not count as a write and takes no write slot", function()
      local rev = store:revision()
      store:snapshot(function(snap)
        assert.is_true(ns:set("k", 1))
      end)
      assert.are.equal(rev + 1, store:revision())
    end)

    it("refuses writes", function()
      local ok, r, msg, code = pcall(store.snapshot, store, function(snap)
        return snap:namespace("n"):set("k", 1)
      end)
      if ok then
        assert.is_nil(r)
        assert.is_string(msg)
        assert.are.equal("READONLY", code)
      end
      assert.is_nil(ns:get("k"))
    end)

    it("re-raises fn's error", function()
      local ok, err = pcall(store.snapshot, store, function() error("snap", 0) end)
      assert.is_false(ok)
      assert.are.equal("snap", err)
    end)
  end)
end)
