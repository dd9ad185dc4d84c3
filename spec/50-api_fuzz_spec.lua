-- The random API fuzzer (spec/fuzz/api_fuzz.lua), a short bounded run.
-- INSTATE_FUZZ_SECONDS sets its length (default 10), INSTATE_FUZZ_SEED its
-- seed (default 20261201; "random": a new one each run, printed), INSTATE_FUZZ_STRICT=1 turns
-- the known-bug exceptions below into failures (as the long runs do).
local helpers = require "helpers"

-- Kinds of failure allowed in the short run: none left (each bug the
-- fuzzer found is fixed with its own spec); a new one goes here, with the
-- fuzzer's name for it, only until it is fixed.
local KNOWN = {}

local function fuzzer_path()
  return helpers.source_dir() .. "/spec/fuzz/api_fuzz.lua"
end

describe("api fuzzer", function()
  it("runs every public function at random and every invariant holds", function()
    local seconds = os.getenv("INSTATE_FUZZ_SECONDS") or "10"
    local strict = os.getenv("INSTATE_FUZZ_STRICT") == "1"
    local log = helpers.tmpdir() .. "/calls.log"
    local env = {
      "INSTATE_FUZZ_SECONDS=" .. helpers.sh_quote(seconds),
      "INSTATE_FUZZ_LOG=" .. helpers.sh_quote(log),
      "INSTATE_FUZZ_KNOWN=" .. (strict and "''" or table.concat(KNOWN, ",")),
    }
    -- a fixed seed by default, so that make test and CI repeat one run
    -- (INSTATE_FUZZ_SEED=random for a new one each time)
    local seed = os.getenv("INSTATE_FUZZ_SEED") or "20261201"
    if seed ~= "random" then env[#env + 1] = "INSTATE_FUZZ_SEED=" .. helpers.sh_quote(seed) end
    -- a watchdog: a call that never returns (a deadlock, a retry loop) is a
    -- failure too, reported with the calls that led to it
    local limit = math.floor(tonumber(seconds) * 4 + 120)
    -- run in a scratch directory: nothing the calls create lands in the tree
    local out, ok = helpers.shell("cd " .. helpers.sh_quote(helpers.tmpdir()) .. " && env " .. table.concat(env, " ")
      .. " timeout -s KILL " .. limit .. " "
      .. helpers.lua_cmd() .. " " .. helpers.sh_quote(fuzzer_path()) .. " 2>&1")
    io.write("\n", out)
    if not ok and not out:find("FAILED", 1, true) then
      -- the process died (a crash, a sanitizer report, the watchdog): the
      -- log has every call
      local calls = helpers.read_file(log) or ""
      local tail = {}
      for line in calls:gmatch("[^\n]+") do
        tail[#tail + 1] = line
        if #tail > 40 then table.remove(tail, 1) end
      end
      io.write("the last calls before the process died:\n", table.concat(tail, "\n"), "\n")
    end
    assert.is_true(ok, "the fuzzer failed (its seed and calls are printed above)")
    assert.matches("calls, all invariants held", out, 1, true)
    local calls = tonumber(out:match("(%d+) calls, all invariants held"))
    assert.is_true(calls > 1000, "only " .. tostring(calls) .. " calls ran")
  end)

  -- Seeds that once broke an invariant, replayed on every Lua (each bug
  -- also has a spec of its own; a seed replays the same calls, though
  -- when the collector runs finalizers may differ).
  local REGRESSIONS = {
    -- 5.3: get_all_encoded held another record's bytes, a finalizer's read
    -- having overwritten them (spec/17-binding_spec.lua, a finalizer that reads)
    { seed = 44, calls = 4000 },
  }
  it("replays the seeds of fixed bugs", function()
    local fuzz = dofile(fuzzer_path())
    for _, r in ipairs(REGRESSIONS) do
      local res = fuzz.run({ seed = r.seed, seconds = 120, max_calls = r.calls, dir = helpers.tmpdir() })
      assert.is_true(res.ok, ("seed %d: %s"):format(r.seed, tostring(res.msg)))
      assert.is_true(res.calls >= r.calls, "only " .. res.calls .. " calls ran")
    end
  end)

  it("its checks catch a wrong answer", function()
    -- plant a bug (count() off by one) and the fuzzer must report it
    local instate = require "instate"
    local fuzz = dofile(fuzzer_path())
    local dir = helpers.tmpdir()
    local store = assert(instate.open(dir .. "/probe"))
    -- the table the method comes from, along the handle's __index chain
    local methods
    local mt = getmetatable(store:namespace("n"))
    while mt and not methods do
      local idx = rawget(mt, "__index")
      assert(type(idx) == "table", "namespace methods are not found through tables")
      if rawget(idx, "count") then methods = idx end
      mt = getmetatable(idx)
    end
    local count = methods.count
    store:close()
    methods.count = function(ns) return count(ns) + 1 end
    local known = {}
    for kind in pairs(fuzz.KINDS) do known[kind] = true end -- only the planted bug fails
    local ok, r = pcall(fuzz.run, { seed = 7, seconds = 5, max_calls = 20000, dir = dir, known = known })
    methods.count = count
    assert.is_true(ok, tostring(r))
    assert.is_false(r.ok)
    assert.is_nil(r.kind)
    assert.matches("count", r.msg)
    assert.is_true(r.calls > 0)
  end)
end)
