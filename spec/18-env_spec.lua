-- The environment seen from Lua: unsafe files are refused with "ACCESS",
-- conflicting second opens with "CONFLICT", a stricter sync is taken, and
-- snapshots held by coroutines survive map growth. The faults themselves
-- (EIO, a full disk, dead readers, racing growers) are in spec/c/test_env.c.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

local q = helpers.sh_quote

describe("opening a store", function()
  it("refuses a store path that is a symlink, with ACCESS", function()
    local dir = helpers.tmpdir()
    assert(instate.open(dir .. "/real")):close()
    os.execute("ln -s " .. q(dir .. "/real") .. " " .. q(dir .. "/link"))
    local store, msg, code = instate.open(dir .. "/link")
    assert.is_nil(store)
    assert.equal("ACCESS", code)
    assert.matches("link", msg, 1, true)
    assert.matches("symlink", msg, 1, true)
  end)

  it("refuses a planted NAME-lock symlink and leaves its target alone", function()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/victim", "precious")
    os.execute("ln -s " .. q(dir .. "/victim") .. " " .. q(dir .. "/save.db-lock"))
    local store, _, code = instate.open(dir .. "/save.db", { single_file = true })
    assert.is_nil(store)
    assert.equal("ACCESS", code)
    assert.equal("precious", helpers.read_file(dir .. "/victim"))
  end)

  it("refuses a data file writable by others unless file_mode grants it", function()
    local dir = helpers.tmpdir()
    assert(instate.open(dir .. "/s")):close()
    os.execute("chmod 0666 " .. q(dir .. "/s/data.mdb"))
    local store, _, code = instate.open(dir .. "/s")
    assert.is_nil(store)
    assert.equal("ACCESS", code)
    store = assert(instate.open(dir .. "/s", { file_mode = tonumber("666", 8) }))
    store:close()
  end)

  it("refuses read-only next to read-write with CONFLICT", function()
    local dir = helpers.tmpdir()
    local a = assert(instate.open(dir .. "/s"))
    local b, msg, code = instate.open(dir .. "/s", { readonly = true })
    assert.is_nil(b)
    assert.equal("CONFLICT", code)
    assert.matches("already open in this process", msg, 1, true)
    a:close()
  end)

  it("refuses a second open after data.mdb was replaced, with CONFLICT", function()
    local dir = helpers.tmpdir()
    local a = assert(instate.open(dir .. "/s"))
    a:namespace("n"):set("k", "before")
    local d = q(dir .. "/s/data.mdb")
    assert.is_true(helpers.execute("cp " .. d .. " " .. d .. ".new && mv " .. d .. ".new " .. d))
    local b, _, code = instate.open(dir .. "/s")
    assert.is_nil(b)
    assert.equal("CONFLICT", code)
    assert.equal("before", a:namespace("n"):get("k"))
    a:close()
  end)

  it("shares the environment with a stricter sync, and both handles work", function()
    local dir = helpers.tmpdir()
    local a = assert(instate.open(dir .. "/s", { sync = "none" }))
    local b = assert(instate.open(dir .. "/s", { sync = "full" }))
    assert.is_true(a:namespace("n"):set("k", 1))
    assert.equal(1, b:namespace("n"):get("k"))
    a:close()
    b:close()
  end)
end)

-- Its coroutines yield inside snapshots: 5.2+ (5.1 and LuaJIT cannot yield
-- across the binding's C calls).
if compat.yield_across_c then
  describe("map growth under coroutines holding snapshots", function()
    it("keeps every snapshot and iterator consistent", function()
      local dir = helpers.tmpdir()
      local store = assert(instate.open(dir .. "/s", { map_size = 256 * 1024, sync = "none" }))
      local ns = store:namespace("n")
      local value = string.rep("v", 4000)
      for i = 1, 10 do assert(ns:set(string.format("k%03d", i), value .. i)) end
      -- Each coroutine holds one snapshot across yields while the map grows.
      local cos = {}
      for c = 1, 4 do
        cos[c] = coroutine.create(function()
          return store:snapshot(function(tx)
            local n, seen = tx:namespace("n"), 0
            for k, v in n:pairs() do
              assert(v == value .. tonumber(k:sub(2)), k)
              seen = seen + 1
              coroutine.yield()
            end
            return seen
          end)
        end)
      end
      local before = store:stats().map_size
      local results, i = {}, 10
      repeat
        for c = 1, 4 do
          if coroutine.status(cos[c]) == "suspended" then
            local ok, r = coroutine.resume(cos[c])
            assert(ok, r)
            if coroutine.status(cos[c]) == "dead" then results[c] = r end
          end
        end
        for _ = 1, 40 do
          i = i + 1
          assert(ns:set(string.format("k%03d", i), value .. i))
        end
      until #results == 4 and results[1] and results[2] and results[3] and results[4]
      for c = 1, 4 do assert.equal(10, results[c]) end
      assert.is_true(store:stats().map_size >= 4 * before)
      store:close()
    end)
  end)
end
