-- Fault injection, SQLite's way (spec/fault/): every operation runs in a
-- child process whose Nth system or allocator call fails (EIO, ENOSPC, a
-- filling disk, ENOMEM), for N = 1, 2, ... until it completes untouched.
-- After every point: no crash, `nil, msg, code` with the errno's code, the
-- handle still usable, and a fresh process finds the old or the new state,
-- never a mix. The known breaks of spec/fault/expected.lua are counted apart
-- and printed; `make faults` runs every point with persistent faults too.
local helpers = require "helpers"
local driver = require "fault.driver"
local expected = require "fault.expected"

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

describe("fault injection", function()
  local used = {}

  it("has the shim built", function()
    local shim = driver.shim_path()
    assert.is_true(file_exists(shim), shim)
  end)

  it("the shim fails the Nth counted call and reports it", function()
    local dir = helpers.tmpdir()
    local report = dir .. "/report"
    local code = [[
      local instate, fault = require "instate", require "fault"
      local s = assert(instate.open(...))
      local ns = s:namespace("kv")
      assert(ns:set("a", 1))
      fault.arm()
      local ok, msg, code = ns:set("a", 2)
      local calls, hits = fault.disarm()
      print(ok, msg, code, calls, hits)
    ]]
    local file = dir .. "/child.lua"
    helpers.write_file(file, code)
    local shim = driver.shim_path()
    local cpath = shim:match("^(.*)/") .. "/?.so;" .. package.cpath
    local p = io.popen(("env LD_PRELOAD=%s FAULT_CALLS=fdatasync FAULT_N=1 FAULT_ERRNO=ENOSPC"
      .. " FAULT_REPORT=%s LUA_CPATH=%s LUA_PATH=%s %s %s %s 2>&1"):format(
      helpers.sh_quote(((os.getenv("LD_PRELOAD") or "") ~= "" and os.getenv("LD_PRELOAD") .. ":" or "") .. shim),
      helpers.sh_quote(report), helpers.sh_quote(cpath), helpers.sh_quote(package.path),
      helpers.lua_bin, helpers.sh_quote(file), helpers.sh_quote(dir .. "/store")))
    local out = p:read("*a")
    p:close()
    assert.equal("nil\tcannot write: No space left on device\tNOSPACE\t1\t1\n", out)
    assert.equal("hit fdatasync 1\ncalls 1 hits 1\n", helpers.read_file(report))
  end)

  it("the checks catch a mix, a lost commit, a wrong code and a swallowed fault", function()
    local io = { calls = "io", errno = "ENOSPC", mode = "once" }
    local old = { state = "old", revision = 7 }
    local function checks(name, r, st)
      local bad = driver.judge(name, io, r, st, old, "fdatasync")
      local t = {}
      for _, b in ipairs(bad) do t[#t + 1] = b.check .. ": " .. b.detail end
      return t
    end
    local failed = { ok = true, res = { n = 3, nil, "cannot write: No space left on device", "NOSPACE" } }
    local worked = { ok = true, res = { n = 1, true } }
    assert.same({}, checks("transaction", failed, old))
    assert.same({}, checks("transaction", failed, { state = "new", revision = 8 }))
    assert.same({ "state: a mix: 3 old, 21 new" },
      checks("transaction", failed, { state = "a mix: 3 old, 21 new", revision = 8 }))
    assert.same({ "state: the store changed although the operation failed" },
      checks("load", failed, { state = "new", revision = 8 }))
    assert.same({ "state: old state at revision 8, was 7" },
      checks("set", failed, { state = "old", revision = 8 }))
    assert.same({ "swallowed: success reported although fdatasync failed with ENOSPC",
                  "state: success reported but the new state was not committed" },
      checks("set", worked, old))
    assert.same({ "code: code IO, expected NOSPACE: cannot write: No space left on device" },
      checks("set", { ok = true, res = { n = 3, nil, "cannot write: No space left on device", "IO" } },
        old))
    assert.same({ "raise: raised: CORRUPT" }, checks("set", { ok = false, res = { n = 1, "CORRUPT" } }, old))
  end)

  for _, name in ipairs(require("fault.ops").names) do
    it(name .. " survives every fault point", function()
      local s = driver.run({ ops = { name }, configs = driver.configs(false), points = { alloc = 40 },
                             xfail = expected, used = used })
      for _, row in ipairs(s.rows) do
        -- The shim reached the operation: no row passes by never failing anything.
        assert(row.points > 0, ("%s %s/%s: no fault point reached"):format(name, row.calls, row.errno))
      end
      if #s.expected > 0 then
        local seen = {}
        for _, f in ipairs(s.expected) do
          if not seen[f.reason] then
            seen[f.reason] = true
            print(("  known break (%d points of %s): %s"):format(#s.expected, name, f.reason))
          end
        end
      end
      local msgs = {}
      for _, f in ipairs(s.failures) do
        msgs[#msgs + 1] = ("%s %s/%s/%s N=%s (%s): %s: %s"):format(f.op, tostring(f.calls), tostring(f.errno),
          tostring(f.mode), tostring(f.n), tostring(f.hit), f.check, f.detail)
      end
      assert(#msgs == 0, #msgs .. " unexpected failures:\n" .. table.concat(msgs, "\n"))
    end)
  end

  -- A known break that no longer happens is named, for its entry to go.
  teardown(function()
    for i, e in ipairs(expected) do
      if not used[i] then
        print("note: a known break no longer seen (remove it from spec/fault/expected.lua): " .. e.reason)
      end
    end
  end)
end)
