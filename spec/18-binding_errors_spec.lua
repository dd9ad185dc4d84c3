-- The binding's error paths: every raise carries a message (never a bare
-- code), one rule for store-level writes inside this coroutine's own
-- transaction, coroutine.close aborts, table error objects come back as
-- they were raised, and a huge clock never overflows.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

local MiB = 1024 * 1024

local function open(opts)
  local dir = helpers.tmpdir() .. "/s"
  return assert(instate.open(dir, opts)), dir
end

-- Written behind the store's back with python3-lmdb: a value that is not
-- MessagePack (the never-used byte c1) after a valid record header, with
-- its checksum right (record format 2), so only the codec finds it bad.
local function corrupt(dir, key)
  helpers.put_raw(dir, "n", key, helpers.record_bytes(key, "\193"))
end

-- The error a call raises (fails the spec if it does not raise).
local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

describe("raised errors carry the message", function()
  it("ns:incr and ns:update on a value that does not decode return nil, a message naming the key"
    .. " and CORRUPT, and commit nothing", function()
    local store, dir = open()
    store:namespace("n"):set("bad", 1)
    store:close()
    corrupt(dir, "bad")
    store = assert(instate.open(dir))
    local ns = store:namespace("n")
    local rev = store:revision()
    for _, call in ipairs({
      function() return ns:incr("bad") end,
      function() return ns:update("bad", function(v) return v end) end,
      function() return store:transaction(function(tx) return tx:namespace("n"):incr("bad") end) end,
    }) do
      local v, msg, code = call()
      assert.is_nil(v)
      assert.matches("^corrupt value at key 'bad': .*byte 0", msg)
      assert.are.equal("CORRUPT", code)
    end
    -- the store-level calls committed nothing; the caller's own transaction did
    assert.are.equal(rev + 1, store:revision())
    -- nothing was written
    assert.are.equal("\193", (ns:get_encoded("bad")))
    store:close()
  end)

  it("store:namespace and tx:namespace return nil, msg, LIMIT when readers are exhausted", function()
    local store = open({ max_readers = 1 })
    local ns = store:namespace("n")
    ns:set("a", 1)
    -- an open iterator holds the only reader slot
    local step, state = ns:pairs()
    assert.are.equal("a", (step(state)))
    local r, msg, code = store:namespace("other")
    assert.is_nil(r)
    assert.are.equal("cannot open namespace 'other': too many readers (raise max_readers)", msg)
    assert.are.equal("LIMIT", code)
    r, msg, code = store:transaction(function(tx) return tx:namespace("other2") end)
    assert.is_nil(r)
    assert.are.equal("cannot open namespace 'other2': too many readers (raise max_readers)", msg)
    assert.are.equal("LIMIT", code)
    -- store:drop needs the namespace too
    r, msg, code = store:drop("other3")
    assert.is_nil(r)
    assert.are.equal("LIMIT", code)
    state:close()
    assert.is_truthy(store:namespace("other"))
    store:close()
  end)

  it("setup returns nil, msg, LIMIT when readers are exhausted", function()
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir, { max_readers = 1 }))
    finally(function() instate.teardown(); store:close() end)
    local ns = store:namespace("n")
    ns:set("a", 1)
    local step, state = ns:pairs()
    step(state)
    local s, msg, code = instate.setup(dir)
    assert.is_nil(s)
    assert.are.equal("LIMIT", code)
    assert.matches("too many readers", msg, 1, true)
    state:close()
    assert.is_truthy(instate.setup(dir))
    instate.teardown()
    store:close()
  end)

  it("save_many at max_size returns nil, the message and MAP_FULL, writing nothing", function()
    local store = open({ map_size = MiB, max_size = 2 * MiB, sync = "none" })
    local big = string.rep("x", 3 * MiB)
    local rev = store:revision()
    local r, msg, code = store:namespace("s", "state"):save_many(1, { "big" }, { big }, 1)
    assert.is_nil(r)
    assert.are.equal("cannot save 'big': the store reached its max_size", msg)
    assert.are.equal("MAP_FULL", code)
    assert.are.equal(rev, store:revision())
    store:close()
  end)

  it("save_all at max_size returns nil, msg, MAP_FULL and writes nothing", function()
    local dir = helpers.tmpdir() .. "/s"
    finally(instate.teardown)
    assert.is_truthy(instate.setup(dir, { map_size = MiB, max_size = 2 * MiB, sync = "none" }))
    local small = instate.defstate("small", 1)
    assert.is_truthy(instate.save_all())
    local rev = instate.setup(dir):revision()
    small:set(2)
    local big = instate.defstate("big", string.rep("x", 3 * MiB))
    local r, msg, code = instate.save_all()
    assert.is_nil(r)
    assert.are.equal("MAP_FULL", code)
    assert.matches("max_size", msg, 1, true)
    assert.are.equal(rev, instate.setup(dir):revision())
    -- once the big value is gone, the save goes through
    big:set(nil)
    assert.are.equal(rev + 1, instate.save_all())
    instate.teardown()
    assert.is_truthy(instate.setup(dir))
    assert.are.equal(2, instate.defstate("small", 0):get())
    instate.teardown()
  end)
end)

describe("stable codes", function()
  it("a read-only open of a store open read-write in this process is CONFLICT", function()
    local store, dir = open()
    local ro, msg, code = instate.open(dir, { readonly = true })
    assert.is_nil(ro)
    assert.are.equal("CONFLICT", code)
    assert.matches("already open in this process", msg, 1, true)
    store:close()
  end)

  it("permission denied is ACCESS", function()
    -- a directory nobody else may enter; root is not stopped by
    -- permissions, so as root the open runs as nobody (setpriv)
    local dir = helpers.tmpdir()
    local target = dir .. "/locked/s"
    os.execute("mkdir -m 0700 " .. helpers.sh_quote(dir .. "/locked"))
    local code
    if helpers.read_file("/proc/self/status"):match("\nUid:%s+0%s") then
      os.execute("chmod 0755 " .. helpers.sh_quote(dir))
      local p = io.popen("setpriv --reuid=nobody --regid=nogroup --clear-groups "
        .. helpers.lua_cmd() .. " -e " .. helpers.sh_quote(([[
          local instate = require "instate"
          io.write(tostring(select(3, instate.open(%q))))
        ]]):format(target)) .. " 2>&1")
      code = p:read("*a")
      p:close()
    else
      os.execute("chmod 0000 " .. helpers.sh_quote(dir .. "/locked"))
      code = select(3, instate.open(target))
      os.execute("chmod 0700 " .. helpers.sh_quote(dir .. "/locked"))
    end
    assert.are.equal("ACCESS", code)
  end)
end)

describe("messages", function()
  it("name a failure once", function()
    local store = open()
    local r, msg, code = store:dump("/nonexistent-dir/x.dump")
    assert.is_nil(r)
    assert.are.equal("NOTFOUND", code)
    local _, n = msg:gsub("No such file or directory", "")
    assert.are.equal(1, n, msg)
    store:close()
  end)
end)

describe("store-level writes inside this coroutine's own transaction", function()
  local store, ns
  before_each(function()
    store = open()
    ns = store:namespace("n")
    ns:set("k", 1)
  end)
  after_each(function() store:close() end)

  local writes = {
    set = function(n) return n:set("k", 2) end,
    add = function(n) return n:add("new", 2) end,
    delete = function(n) return n:delete("k") end,
    update = function(n) return n:update("k", function(v) return v + 1 end) end,
    incr = function(n) return n:incr("k") end,
    expire = function(n) return n:expire("k", 10) end,
    clear = function(n) return n:clear() end,
  }
  for name, write in pairs(writes) do
    it(name .. " returns nil, msg, BUSY and writes nothing", function()
      local rev = store:revision()
      local r, msg, code = store:transaction(function(tx)
        local a, b, c = write(ns)
        tx:namespace("n"):set("inside", true)
        return a, b, c
      end)
      assert.is_nil(r)
      assert.are.equal("BUSY", code)
      assert.matches("a write transaction is already open", msg, 1, true)
      assert.are.equal(rev + 1, store:revision())
      assert.are.equal(1, ns:get("k"))
      assert.is_false(ns:ttl("k"))
      assert.is_nil(ns:get("new"))
      assert.is_true(ns:get("inside"))
    end)
  end

  it("update's function is not called when the write is refused", function()
    local called = false
    store:transaction(function()
      ns:update("k", function(v) called = true; return v end)
    end)
    assert.is_false(called)
  end)

  it("a write that raises inside the transaction loses nothing it reported done", function()
    local results = {}
    pcall(store.transaction, store, function()
      results[1] = { ns:incr("k") }
      results[2] = { ns:update("k", function(v) return v * 10 end) }
      error("abort", 0)
    end)
    assert.are.equal("BUSY", results[1][3])
    assert.are.equal("BUSY", results[2][3])
    assert.are.equal(1, ns:get("k"))
  end)
end)

-- coroutine.close is 5.4's; elsewhere a suspended transaction ends when its
-- coroutine is collected (spec/12-transaction_spec.lua tests that on every Lua).
if compat.to_be_closed then
  describe("coroutine.close", function()
    it("aborts the transaction the coroutine is suspended in, at once", function()
      local store, dir = open()
      local ns = store:namespace("n")
      ns:set("k", "before")
      collectgarbage("stop")
      local co = coroutine.create(function()
        return store:transaction(function(tx)
          tx:namespace("n"):set("k", "abandoned")
          coroutine.yield()
        end)
      end)
      assert.is_true(coroutine.resume(co))
      assert.is_true(coroutine.close(co))
      -- and another process gets the writer lock at once (it would block
      -- until this process collected the transaction: timeout gives up)
      local out, ok = helpers.shell("timeout 20 " .. helpers.lua_cmd() .. " -e " .. helpers.sh_quote(([[
        local instate = require "instate"
        local s = assert(instate.open(%q))
        assert(s:namespace("n"):set("child", true))
        io.write("written")
      ]]):format(dir)) .. " 2>&1")
      -- no collection needed: this process can write again
      local wrote = ns:set("x", 1)
      collectgarbage("restart")
      assert.is_true(ok, out)
      assert.are.equal("written", out)
      assert.is_true(wrote)
      assert.are.equal("before", ns:get("k"))
      assert.is_true(ns:get("child"))
      store:close()
    end)

    it("aborts savepoints and the outer transaction alike", function()
      local store = open()
      local ns = store:namespace("n")
      collectgarbage("stop")
      local co = coroutine.create(function()
        return store:transaction(function(tx)
          tx:namespace("n"):set("outer", 1)
          return store:transaction(function(tx2)
            tx2:namespace("n"):set("inner", 1)
            coroutine.yield()
          end)
        end)
      end)
      assert.is_true(coroutine.resume(co))
      assert.is_true(coroutine.close(co))
      assert.is_true(store:transaction(function(tx) return tx:namespace("n"):set("after", 1) end))
      collectgarbage("restart")
      assert.is_nil(ns:get("outer"))
      assert.is_nil(ns:get("inner"))
      assert.are.equal(1, ns:get("after"))
      store:close()
    end)

    it("a transaction the coroutine finished is not touched by closing it", function()
      local store = open()
      local co = coroutine.create(function()
        store:transaction(function(tx) tx:namespace("n"):set("k", 1) end)
        coroutine.yield()
      end)
      assert.is_true(coroutine.resume(co))
      assert.is_true(coroutine.close(co))
      assert.are.equal(1, store:namespace("n"):get("k"))
      store:close()
    end)
  end)
end

describe("a table raised by a user callback comes back as that table", function()
  local E = setmetatable({ reason = "nope" }, { __tostring = function() return "E" end })

  it("from a transaction function and from update", function()
    local store = open()
    local ns = store:namespace("n")
    assert.are.equal(E, raised(store.transaction, store, function() error(E) end))
    assert.are.equal(E, raised(ns.update, ns, "k", function() error(E) end))
    assert.are.equal(E, raised(store.transaction, store, function(tx)
      tx:namespace("n"):update("k", function() error(E) end)
    end))
    assert.are.equal(E, raised(store.snapshot, store, function() error(E) end))
    store:close()
  end)

  describe("defstate", function()
    local dir
    before_each(function()
      dir = helpers.tmpdir() .. "/s"
      assert.is_truthy(instate.setup(dir))
    end)
    after_each(function() instate.teardown() end)

    it("from validate at save_all", function()
      local v = instate.defstate("v", 1, { validate = function() error(E) end })
      v:set(2)
      assert.are.equal(E, raised(instate.save_all))
    end)

    it("from validate and migrate at restore", function()
      instate.defstate("a", 1)
      instate.defstate("b", 1)
      assert.is_truthy(instate.save_all())
      instate.teardown()
      assert.is_truthy(instate.setup(dir))
      assert.are.equal(E, raised(instate.defstate, "a", 0, { validate = function() error(E) end }))
      assert.are.equal(E, raised(instate.defstate, "b", 0,
        { version = 2, migrate = function() error(E) end }))
    end)

    it("from validate at reload_all", function()
      local fail = false
      instate.defstate("r", 1, { validate = function()
        if fail then error(E) end
        return true
      end })
      assert.is_truthy(instate.save_all())
      fail = true
      assert.are.equal(E, raised(instate.reload_all))
    end)

    it("from instate.transaction", function()
      assert.are.equal(E, raised(instate.transaction, function() error(E) end))
    end)
  end)
end)

-- The clock is 64-bit milliseconds: a clock near 2^63 exists where Lua numbers
-- have 64-bit integers.
if compat.integers then
  describe("a huge clock", function()
    after_each(function() instate._set_clock(nil) end)

    it("saturates an expiry past the clock's range instead of wrapping it", function()
      local store = open()
      local ns = store:namespace("n")
      instate._set_clock(math.maxinteger - 10)
      assert.is_true(ns:set("k", 1, { ttl = 1e12 }))
      -- the expiry is the largest time, not a wrapped one in the past
      assert.are.equal(1, ns:get("k"))
      local left = ns:ttl("k")
      assert.is_number(left)
      assert.is_true(left >= 0 and left <= 1e12, tostring(left))
      assert.is_true(ns:expire("k", 1e12))
      assert.are.equal(1, ns:get("k"))
      assert.is_true(ns:incr("c", 1) == 1 and ns:expire("c", 5e11))
      assert.are.equal(1, ns:get("c"))
      store:close()
    end)

    it("reads a ttl set under a far smaller clock", function()
      local store = open()
      local ns = store:namespace("n")
      instate._set_clock(1)
      assert.is_true(ns:set("k", 1, { ttl = 1e12 }))
      instate._set_clock(math.maxinteger)
      assert.is_nil(ns:get("k"))
      assert.is_nil(ns:ttl("k"))
      store:close()
    end)
  end)
end
