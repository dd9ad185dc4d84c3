-- The binding's extensions (namespace types, encoded access, bulk calls)
-- and lifetimes that no script should be able to break.
local instate = require "instate"
local compat = require "instate.compat"
local helpers = require "helpers"

local function open(opts)
  return assert(instate.open(helpers.tmpdir() .. "/s", opts))
end

describe("namespace types", function()
  it("a namespace keeps the type it was created with", function()
    local store = open()
    assert.is_true(store:namespace("vars", "state"):set("k", 1))
    assert.is_true(store:namespace("vars", "state"):set("k", 2))
    assert.has_error(function() store:namespace("vars") end,
      "namespace 'vars' has type 'state', not 'kv'")
    assert.has_error(function() store:namespace("vars", "kv") end,
      "namespace 'vars' has type 'state', not 'kv'")
    assert.has_error(function() store:namespace("vars", "table") end,
      "bad argument #2 to 'namespace' (invalid option 'table')")
    store:close()
  end)

  it("a dropped namespace forgets its type", function()
    local store = open()
    store:namespace("n", "state"):set("k", 1)
    assert.is_true(store:drop("n"))
    assert.is_true(store:namespace("n", "kv"):set("k", 1))
    store:close()
  end)
end)

describe("encoded access", function()
  local store, ns
  before_each(function()
    store = open()
    ns = store:namespace("n")
  end)
  after_each(function() store:close() end)

  it("set_encoded stores MessagePack bytes with a version; get_encoded returns both", function()
    local bytes = instate.encode({ a = 1 })
    assert.is_true(ns:set_encoded("k", bytes, { version = 7 }))
    local got, version = ns:get_encoded("k")
    assert.are.equal(bytes, got)
    assert.are.equal(7, version)
    assert.are.same({ a = 1 }, ns:get("k"))
    assert.is_nil(ns:get_encoded("missing"))
  end)

  it("set_encoded refuses bytes that are not one MessagePack value", function()
    assert.has_error(function() ns:set_encoded("k", "\193") end,
      "bad argument #2 to 'set_encoded' (not a valid encoding: corrupt MessagePack at byte 0: invalid byte 0xc1)")
    assert.has_error(function() ns:set_encoded("k", "\1\1") end,
      "bad argument #2 to 'set_encoded' (not a valid encoding: corrupt MessagePack at byte 1: 1 trailing bytes after the value)")
    assert.has_error(function() ns:set_encoded("k", "\146\1") end,
      "bad argument #2 to 'set_encoded' (not a valid encoding: corrupt MessagePack at byte 0: array of 2 elements needs at least 2 bytes, 1 left)")
    assert.has_error(function() ns:set_encoded("k", 1, { version = -1 }) end,
      "bad argument #3 to 'set_encoded' (option 'version' out of range (0..4294967295))")
    assert.has_error(function() ns:set_encoded("k", "\1", { colour = 1 }) end,
      "bad argument #3 to 'set_encoded' (unknown option 'colour')")
    assert.is_nil(ns:get("k"))
  end)

  it("get_all_encoded reads every live record in one call", function()
    ns:set_encoded("a", instate.encode(1), { version = 2 })
    ns:set("b", "x")
    ns:set("c", true, { ttl = 0.001 })
    instate._set_clock(math.floor(instate.now() * 1000) + 60000)
    local bytes, versions = ns:get_all_encoded()
    instate._set_clock(nil)
    assert.are.same({ a = instate.encode(1), b = instate.encode("x") }, bytes)
    assert.are.same({ a = 2, b = 0 }, versions)
    local pb = ns:get_all_encoded("b")
    assert.are.same({ b = instate.encode("x") }, pb)
  end)

  it("get_all_encoded can decode in the same pass and list only unusual versions", function()
    ns:set_encoded("a", instate.encode({ 1, 2 }), { version = 1 })
    ns:set_encoded("b", instate.encode("x"), { version = 3 })
    ns:set("c", 5)
    local bytes, versions, values = ns:get_all_encoded(nil, { decode = true, version_default = 1 })
    assert.are.same({ a = instate.encode({ 1, 2 }), b = instate.encode("x"), c = instate.encode(5) }, bytes)
    assert.are.same({ b = 3, c = 0 }, versions)
    assert.are.same({ a = { 1, 2 }, b = "x", c = 5 }, values)
    assert.are.equal(2, select("#", ns:get_all_encoded()))
    assert.has_error(function() ns:get_all_encoded(nil, { bogus = 1 }) end,
      "bad argument #2 to 'get_all_encoded' (unknown option 'bogus')")
    assert.has_error(function() ns:get_all_encoded(nil, { version_default = -1 }) end,
      "bad argument #2 to 'get_all_encoded' (option 'version_default' out of range (0..4294967295))")
  end)

  it("pairs_encoded yields key, bytes, version", function()
    ns:set_encoded("a", instate.encode({ 1 }), { version = 3 })
    local seen = {}
    for k, b, v in ns:pairs_encoded() do seen[#seen + 1] = { k, b, v } end
    assert.are.same({ { "a", instate.encode({ 1 }), 3 } }, seen)
  end)
end)

describe("save_many", function()
  local store
  before_each(function() store = open() end)
  after_each(function() store:close() end)

  -- written, nested (the revision is checked apart)
  local function save_many(...)
    local rev, n, nested = store:namespace("v", "state"):save_many(...)
    assert.is_number(rev, n)
    return n, nested
  end

  it("writes only records that differ from the stored ones", function()
    local n, nested = save_many(3, { "a", "b", "c" }, { 1, { x = 1 }, "s" }, 5)
    assert.are.equal(3, n)
    assert.is_false(nested)
    local ns = store:namespace("v", "state")
    assert.are.equal(instate.encode({ x = 1 }), (ns:get_encoded("b")))
    local rev = store:revision()
    -- b's value changed, c's version changed, a is as stored
    n = save_many(3, { "a", "b", "c" }, { 1, { x = 2 }, "s" }, { 5, 5, 6 })
    assert.are.equal(2, n)
    assert.are.equal(rev + 1, store:revision())
    assert.are.same({ x = 2 }, ns:get("b"))
    assert.are.same({ 5, 5, 6 }, { select(2, ns:get_encoded("a")), select(2, ns:get_encoded("b")),
      select(2, ns:get_encoded("c")) })
    -- a table built in another order is the same record (canonical bytes),
    -- and a save that writes nothing commits nothing
    local t = {}
    for i = 20, 1, -1 do t["k" .. i] = i end
    assert.are.equal(1, save_many(1, { "t" }, { t }, 1))
    rev = store:revision()
    local u = {}
    for i = 1, 20 do u["k" .. i] = i end
    assert.are.equal(0, save_many(1, { "t" }, { u }, 1))
    assert.are.equal(rev, store:revision())
  end)

  it("is a savepoint inside this coroutine's own transaction, and says so", function()
    local n, nested = store:transaction(function()
      return save_many(1, { "a" }, { 1 }, 1)
    end)
    assert.are.equal(1, n)
    assert.is_true(nested)
  end)

  it("stores nil values as nil records, not deletions", function()
    save_many(1, { "a" }, {}, 1)
    assert.are.equal(instate.encode(nil), store:namespace("v", "state"):get_encoded("a"))
  end)

  it("an unstorable value raises naming the key's path and writes nothing", function()
    local rev = store:revision()
    local ok, err = pcall(save_many, 2, { "a", "inventory" }, { 1, { items = { print } } }, 1)
    assert.is_false(ok)
    assert.matches("cannot store a function at inventory.items%[1%]", err)
    assert.is_nil(store:namespace("v", "state"):get("a"))
    assert.are.equal(rev, store:revision())
    -- inside a transaction too: the records before it are not left behind
    ok, err = pcall(store.transaction, store, function()
      return save_many(2, { "b", "inventory" }, { 1, { items = { print } } }, 1)
    end)
    assert.is_false(ok)
    assert.matches("cannot store a function at inventory.items%[1%]", err)
    assert.is_true(store:transaction(function(tx)
      local ok2 = pcall(tx:namespace("v", "state").save_many, tx:namespace("v", "state"), 2,
        { "c", "inventory" }, { 1, { items = { print } } }, 1)
      assert.is_false(ok2)
      return true
    end))
    assert.is_nil(store:namespace("v", "state"):get("c"))
  end)
end)


describe("a corrupt stored value", function()
  -- Written behind the store's back with python3-lmdb: a valid record
  -- header (checksum included) followed by the never-used MessagePack byte c1.
  local function corrupt(dir, key)
    helpers.put_raw(dir, "n", key, helpers.record_bytes(key, "\193"))
  end

  it("reads as nil, a message naming the key and the offset, and CORRUPT", function()
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    store:namespace("n"):set("good", 1)
    store:namespace("n"):set("bad", 1)
    store:close()
    corrupt(dir, "bad")
    store = assert(instate.open(dir))
    local ns = store:namespace("n")
    local v, msg, code = ns:get("bad")
    assert.is_nil(v)
    assert.matches("corrupt value at key 'bad': .*byte 0", msg)
    assert.are.equal("CORRUPT", code)
    assert.are.equal(1, ns:get("good"))
    -- iteration raises naming the key; the encoded view still reads it
    assert.has_error(function() for _ in ns:pairs() do end end,
      "corrupt value at key 'bad': corrupt MessagePack at byte 0: invalid byte 0xc1")
    assert.are.equal("\193", (ns:get_encoded("bad")))
    -- a read-modify-write refuses it and changes nothing
    local r, rmsg, rcode = ns:incr("bad")
    assert.is_nil(r)
    assert.matches("^corrupt value at key 'bad': .*byte 0", rmsg)
    assert.are.equal("CORRUPT", rcode)
    assert.are.equal("\193", (ns:get_encoded("bad")))
    store:close()
  end)
end)

describe("last_commit", function()
  it("changes with every commit from any handle, and only then", function()
    local dir = helpers.tmpdir() .. "/s"
    local a = assert(instate.open(dir))
    local b = assert(instate.open(dir))
    local c0 = a:last_commit()
    assert.are.equal(c0, a:last_commit())
    b:namespace("n"):set("k", 1)
    local c1 = a:last_commit()
    assert.are_not.equal(c0, c1)
    a:namespace("n"):get("k")
    assert.are.equal(c1, a:last_commit())
    a:close()
    b:close()
  end)
end)

describe("lifetimes", function()
  it("closing the store inside a transaction aborts it and the function's end raises", function()
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    local ok, err = pcall(store.transaction, store, function(tx)
      tx:namespace("n"):set("k", 1)
      store:close()
      assert.has_error(function() tx:namespace("n") end, "transaction has ended")
      return true
    end)
    assert.is_false(ok)
    assert.matches("transaction was closed before its function returned", err)
    assert.has_error(function() store:path() end, "store is closed")
    local again = assert(instate.open(dir))
    assert.is_nil(again:namespace("n"):get("k"))
    assert.is_true(again:namespace("n"):set("k", 2))
    again:close()
  end)

  it("tx:close() inside the function aborts: nothing is committed", function()
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    local ok = pcall(store.transaction, store, function(tx)
      tx:namespace("n"):set("k", 1)
      tx:close()
      tx:close()
    end)
    assert.is_false(ok)
    assert.is_nil(store:namespace("n"):get("k"))
    -- the writer slot is free again
    assert.is_true(store:namespace("n"):set("k", 2))
    store:close()
  end)

  it("a store, its transaction and iterator collected together in any order", function()
    for i = 1, 20 do
      local dir = helpers.tmpdir() .. "/s"
      local store = assert(instate.open(dir))
      store:namespace("n"):set("a", 1)
      local ns_pairs
      local co = coroutine.create(function()
        store:transaction(function(tx)
          local ns = tx:namespace("n")
          ns:set("b", i)
          ns_pairs = { ns:pairs() }
          coroutine.yield(ns:pairs())
        end)
      end)
      local resumed, step, it = coroutine.resume(co)
      if compat.yield_across_c then
        assert.is_true(resumed)
        assert.are.equal("a", (step(it)))     -- the suspended transaction's own view
        assert.are.equal("b", (step(it)))
      else
        -- 5.1, LuaJIT: the yield raises (README, Lua versions), aborting the
        -- transaction; its iterator, made before the yield, is kept here
        -- to be collected with the others, and is closed
        assert.is_false(resumed)
        assert.matches("cannot yield inside a transaction on Lua 5.1 and LuaJIT (", step, 1, true)
        step, it = ns_pairs[1], ns_pairs[2]
        assert.has_error(function() step(it) end, "iterator is closed")
      end
      local step2, it2 = store:namespace("n"):pairs()
      assert.are.equal("a", (step2(it2)))   -- the committed state: no "b"
      assert.is_nil((step2(it2)))
      local gone = setmetatable({ store, co, it, it2 }, { __mode = "v" })
      store, co, step, it, step2, it2, ns_pairs = nil, nil, nil, nil, nil, nil, nil
      collectgarbage()
      collectgarbage()
      for k = 1, 4 do assert.is_nil(gone[k], "handle " .. k .. " was not collected") end
      -- the abandoned transaction was aborted and its writer lock released:
      -- a fresh handle writes at once and never sees "b"
      local again = assert(instate.open(dir))
      local ns = again:namespace("n")
      assert.are.equal(1, ns:get("a"))
      assert.is_nil(ns:get("b"))
      assert.is_true(ns:set("c", i))
      again:close()
    end
  end)

  it("a store collected while a snapshot iterator is open", function()
    local dir = helpers.tmpdir() .. "/s"
    do
      local store = assert(instate.open(dir))
      store:namespace("n"):set("a", 1)
      local f, s = store:namespace("n"):pairs()
      store = nil
      collectgarbage()
      assert.are.equal("a", (f(s)))
    end
    collectgarbage()
    local store = assert(instate.open(dir))
    assert.are.equal(1, store:namespace("n"):get("a"))
    store:close()
  end)

  it("the transaction function runs again when the map has to grow", function()
    local store = open({ map_size = 64 * 1024, sync = "none" })
    local runs = 0
    local big = string.rep("x", 4000)
    local n = store:transaction(function(tx)
      runs = runs + 1
      local ns = tx:namespace("n")
      for i = 1, 400 do ns:set("k" .. i, big) end
      return ns:count()
    end)
    assert.are.equal(400, n)
    assert.is_true(runs > 1)
    assert.are.equal(400, store:namespace("n"):count())
    store:close()
  end)

  it("an open iterator survives map growth caused by writes inside its loop", function()
    local store = open({ map_size = 64 * 1024, sync = "none" })
    local src, dst = store:namespace("src"), store:namespace("dst")
    for i = 1, 50 do src:set(("k%03d"):format(i), i) end
    local map_before = store:stats().map_size
    local big = string.rep("z", 8000)
    local seen = 0
    for k, v in src:pairs() do
      seen = seen + 1
      assert.are.equal(("k%03d"):format(v), k)
      assert.is_true(dst:set(k, big .. k))
      assert.is_true(src:set(k .. "-new", 0)) -- not in the loop's snapshot
    end
    assert.are.equal(50, seen)
    assert.is_true(store:stats().map_size > map_before)
    assert.are.equal(50, dst:count())
    assert.are.equal(big .. "k050", dst:get("k050"))
    assert.are.equal(100, src:count())
    store:close()
  end)

  it("inside a transaction, an iterator survives the re-run caused by growth", function()
    local store = open({ map_size = 64 * 1024, sync = "none" })
    store:namespace("src"):set("a", 1)
    local runs = 0
    store:transaction(function(tx)
      runs = runs + 1
      local ns = tx:namespace("src")
      for k in ns:pairs() do
        for i = 1, 200 do tx:namespace("dst"):set(k .. i, string.rep("q", 4000)) end
      end
    end)
    assert.is_true(runs > 1)
    assert.are.equal(200, store:namespace("dst"):count())
    store:close()
  end)

  it("an error swallowed inside the function does not commit a grown-out transaction", function()
    local store = open({ map_size = 64 * 1024, sync = "none" })
    local runs = 0
    local big = string.rep("y", 4000)
    store:transaction(function(tx)
      runs = runs + 1
      local ns = tx:namespace("n")
      for i = 1, 400 do pcall(ns.set, ns, "k" .. i, big) end
    end)
    assert.is_true(runs > 1)
    assert.are.equal(400, store:namespace("n"):count())
    store:close()
  end)
end)

describe("handle checks", function()
  it("a table given a handle's metatable is collected without an error", function()
    -- (from 5.2 on, tables have finalizers: the handle's __gc runs for it,
    -- and an error there would surface in whatever allocation ran it)
    local store = open()
    local ns = store:namespace("items")
    ns:set("k", 1)
    local mts = { getmetatable(store), getmetatable(ns), getmetatable(select(2, ns:pairs())) }
    store:transaction(function(tx) mts[#mts + 1] = getmetatable(tx) end)
    for _, mt in ipairs(mts) do setmetatable({}, mt) end
    assert.is_true(pcall(collectgarbage))
    assert.is_true(pcall(collectgarbage))
    assert.are.equal(1, ns:get("k"))
    -- explicit calls still refuse it
    for _, mt in ipairs(mts) do
      if mt.close then
        assert.is_false(pcall(mt.close, setmetatable({}, mt)))
      end
    end
    store:close()
  end)

  it("every method refuses a handle of another class, naming the one it wanted", function()
    local store = open()
    local ns = store:namespace("items")
    ns:set("k", 1)
    local store_mt = getmetatable(store)
    assert.has_error(function() store_mt.revision(ns) end,
      "bad argument #1 to 'revision' (instate.Store expected, got instate.Namespace)")
    assert.has_error(function() store_mt.revision({}) end,
      "bad argument #1 to 'revision' (instate.Store expected, got table)")
    store:transaction(function(tx)
      local tx_mt = getmetatable(tx)
      assert.has_error(function() tx_mt.namespace(store, "x") end,
        "bad argument #1 to 'namespace' (instate.Transaction expected, got instate.Store)")
      return true
    end)
    local step, it = ns:pairs()
    assert.has_error(function() step(store) end,
      "bad argument #1 to 'step' (instate.Iterator expected, got instate.Store)")
    assert.are.equal("k", (step(it)))
    -- a table carrying a class's metatable is not a handle
    local ok, err = pcall(function() store_mt.revision(setmetatable({}, store_mt)) end)
    assert.is_false(ok)
    assert.are.equal("bad argument #1 to 'revision' (instate.Store expected, got table)",
      err:gsub("^[^:]+:%d+: ", ""))
    store:close()
  end)
end)

describe("a finalizer that reads, run in the middle of a read", function()
  -- In a child process (a small heap, so that a collector that never
  -- pauses stays cheap): finalizers that renew themselves, up to a budget
  -- per read, each reading through the same Lua state (another record, an
  -- iteration, the namespace list), so that the allocations of the read in
  -- progress run some. What that read returns must not change.
  local CHILD = [==[
-- The binding alone: what the read does, not the size of the Lua layer,
-- decides how many collections run inside it.
local instate = require "instate.core"
local helpers = require "helpers"
local which, dir = ...
local store = assert(instate.open(dir, { sync = "none" }))
local ns, other = store:namespace("n"), store:namespace("other")
local big = {}
for i = 1, 300 do big[i] = "item number " .. i end
ns:set("k", big)
ns:set("small", false)
ns:set("decoy", { string.rep("d", 3000), 1, 2, 3 })
for i = 1, 3 do other:set("o" .. i, string.rep("o", 1000 * i)) end
-- long names, so that listing them allocates enough to run finalizers
local names = { "n", "other" }
for i = 1, 100 do
  names[#names + 1] = ("namespace %03d "):format(i) .. string.rep("x", 200)
  store:namespace(names[#names]):set("x", i)
end
table.sort(names)
local enc = { decoy = instate.encode(ns:get("decoy")), k = instate.encode(big),
              small = instate.encode(false) }

local budget, hits = 0, 0
local function interfere()
  local k = hits % 3
  hits = hits + 1
  if k == 0 then
    ns:get("decoy")
  elseif k == 1 then
    for _ in other:pairs() do end
  else
    store:namespaces()
  end
end
local function arm()
  helpers.on_gc(function()
    if budget > 0 then
      budget = budget - 1
      interfere()
      arm()
    end
  end)
end

local function check(cond, what) if not cond then error(what, 0) end end
local function check_big(v, what)
  check(type(v) == "table" and #v == 300, what .. " is not the table stored")
  for i = 1, 300 do check(v[i] == big[i], what .. ": item " .. i .. " differs") end
end
local function check_enc(t, what)
  for key, b in pairs(enc) do check(t[key] == b, what .. ": the bytes of " .. key .. " differ") end
  for key in pairs(t) do check(enc[key], what .. ": an unknown key") end
end
local reads = {
  get = function() check_big(ns:get("k"), "get") end,
  update = function()
    local seen
    ns:update("k", function(old) seen = old; return old end)
    check_big(seen, "the value update passed")
  end,
  pairs = function()
    local got = {}
    for key, v in ns:pairs() do got[key] = v end
    check_big(got.k, "pairs")
    check(got.small == false and #got.decoy[1] == 3000, "pairs: the small values")
  end,
  pairs_encoded = function()
    local got = {}
    for key, b in ns:pairs_encoded() do got[key] = b end
    check_enc(got, "pairs_encoded")
  end,
  get_all_encoded = function()
    local bytes, _, values = ns:get_all_encoded(nil, { decode = true })
    check_enc(bytes, "get_all_encoded")
    check_big(values.k, "get_all_encoded's values")
    check(values.small == false, "get_all_encoded: the small value")
  end,
  get_all_objects = function()
    local objects = ns:get_all_objects({}, {}, 1, 0)
    check_big(objects.k[1], "get_all_objects")
    check(objects.k.name == "k" and objects.small[1] == false, "get_all_objects: names, small value")
  end,
  namespaces = function()
    local got = store:namespaces()
    table.sort(got)
    check(#got == #names, "namespaces: " .. #got .. " names")
    for i = 1, #names do check(got[i] == names[i], "namespaces: name " .. i .. " differs") end
  end,
}
collectgarbage("setpause", 0)
collectgarbage("setstepmul", 1000)
collectgarbage()     -- (5.1, LuaJIT: the pause applies from the next cycle)
local ROUNDS, bad = 40, nil
for r = 1, ROUNDS do
  budget = 12
  for _ = 1, 3 do arm() end
  local ok, err = pcall(reads[which])
  if not ok then bad = ("round %d: %s"):format(r, tostring(err)); break end
end
budget = 0
-- get_all_objects builds with the collector stopped where the Lua can tell
-- that it runs: few finalizers, if any, run inside it there. Elsewhere, how
-- many run depends on where the collector's cycle stands when the reads
-- begin, which moves with the size of everything loaded before (a few
-- dozen tables more can take 48 down to 36): ask for most rounds, not one
-- per round on average.
local need = (which == "get_all_objects" and helpers.gc_tells_running()) and 0 or ROUNDS * 3
io.write(bad or (hits * 4 >= need and "ok" or ("only " .. hits .. " finalizers ran")))
store:close()
]==]

  for _, which in ipairs({ "get", "update", "pairs", "pairs_encoded", "get_all_encoded",
                           "get_all_objects", "namespaces" }) do
    it(which, function()
      local out, ok = helpers.run_lua(CHILD, which, helpers.tmpdir() .. "/s")
      assert.is_true(ok, out)
      assert.are.equal("ok", out)
    end)
  end
end)

describe("get_all_objects", function()
  it("builds one object per record of the version asked for, false for the others", function()
    local store = open()
    local ns = store:namespace("v", "state")
    ns:set_encoded("a", instate.encode({ 1 }), { version = 1 })
    ns:set_encoded("b", instate.encode("two"), { version = 2 })
    ns:set_encoded("p", instate.encode(5), { version = 1 })
    local mt = {}
    local objects, count = ns:get_all_objects(mt, { "x", false }, 4, 1)
    assert.are.equal(2, count)
    assert.is_false(objects.b)
    assert.are.equal(mt, getmetatable(objects.a))
    assert.are.same({ "x", false, nil, { 1 }, name = "a" }, setmetatable(objects.a, nil))
    assert.are.same({ "x", false, nil, 5, name = "p" }, setmetatable(objects.p, nil))
    store:close()
  end)

  it("refuses bad arguments by position", function()
    local store = open()
    local ns = store:namespace("v", "state")
    assert.has_error(function() ns:get_all_objects(nil, {}, 1, 1) end,
      "bad argument #1 to 'get_all_objects' (table expected, got nil)")
    assert.has_error(function() ns:get_all_objects({}, {}, 0, 1) end,
      "bad argument #3 to 'get_all_objects' (slot must be 1..64)")
    assert.has_error(function() ns:get_all_objects({}, {}, 65, 1) end,
      "bad argument #3 to 'get_all_objects' (slot must be 1..64)")
    local long = {}
    for i = 1, 65 do long[i] = i end
    assert.has_error(function() ns:get_all_objects({}, long, 1, 1) end,
      "bad argument #2 to 'get_all_objects' (template longer than 64)")
    assert.has_error(function() ns:get_all_objects({}, {}, 1, "x") end,
      "bad argument #4 to 'get_all_objects' (number expected, got string)")
    store:close()
    assert.has_error(function() ns:get_all_objects({}, {}, 1, 1) end, "store is closed")
  end)
end)

describe("_newtable", function()
  it("makes an empty table and refuses negative sizes", function()
    assert.are.same({}, instate._newtable(10, 10))
    assert.has_error(function() instate._newtable(-1, 0) end,
      "bad argument #1 to '_newtable' (out of range)")
    assert.has_error(function() instate._newtable(0, -1) end,
      "bad argument #2 to '_newtable' (out of range)")
  end)
end)

describe("version", function()
  it("version() names the library, LMDB and zstd, with the numbers of _VERSION", function()
    local text, major, minor, patch = instate.version()
    assert.equal(major .. "." .. minor .. "." .. patch, instate._VERSION)
    assert.matches("^instate " .. instate._VERSION:gsub("%.", "%%.")
      .. " %(LMDB 0%.9%.%d+, zstd 1%.%d+%.%d+%)$", text)
    assert.equal(text, (instate.version()))
  end)

  it("the version is src/instate.h's alone: CMake's project and the pkg-config file agree", function()
    local h = helpers.read_file(helpers.source_dir() .. "/src/instate.h")
    local parts = {}
    for _, part in ipairs({ "MAJOR", "MINOR", "PATCH" }) do
      parts[#parts + 1] = h:match("\n#define INSTATE_VERSION_" .. part .. " (%d+)\n")
    end
    assert.equal(3, #parts)
    assert.equal(table.concat(parts, "."), instate._VERSION)
    local cache = helpers.read_file(helpers.build_dir() .. "/CMakeCache.txt")
    assert.equal(instate._VERSION, cache:match("CMAKE_PROJECT_VERSION:STATIC=([%d.]+)"))
    local pc = helpers.read_file(helpers.build_dir() .. "/instate.pc")
    assert.equal(instate._VERSION, pc:match("\nVersion: ([%d.]+)\n"))
    -- the rockspec builds whatever this checkout holds
    local rockspec = helpers.read_file(helpers.source_dir() .. "/rockspec/instate-scm-1.rockspec")
    assert.equal("scm-1", rockspec:match('\nversion = "([^"]+)"'))
  end)
end)
