-- Crash safety: a process looping save_all over hundreds of variables is
-- killed with SIGKILL at random moments. Every restart must see one whole
-- save (all variables from the same round, never a mix) that is not older
-- than the last save_all the child reported as returned.
local helpers = require "helpers"
local instate = require "instate"

local NVARS = 300
local KILLS = 12

-- Each round writes the round number into every variable: scalars, and
-- tables of varied sizes so that a save spans many pages.
local CHILD = [[
  local instate = require "instate"
  local path, nvars = ...
  nvars = tonumber(nvars)
  assert(instate.setup(path))
  local vars = {}
  for i = 1, nvars do
    local name = ("v%04d"):format(i)
    vars[i] = instate.defstate(name, i % 3 == 0 and { round = 0 } or 0)
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
    instate.save_all()
    io.stdout:write(round, "\n")
    io.stdout:flush()
  end
]]

local function sleep(s)
  os.execute(("sleep %.3f"):format(s))
end

describe("save_all under SIGKILL", function()
  it("always leaves one whole save, never older than the last one returned", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/save"
    local script = dir .. "/child.lua"
    helpers.write_file(script, CHILD)
    math.randomseed(os.time())
    -- Sanitizer builds start slower; give the child time to reach its loop.
    local slow = os.getenv("INSTATE_SANITIZE") and 0.5 or 0
    local saved_rounds = 0
    for kill = 1, KILLS do
      local out = ("%s/out%d.txt"):format(dir, kill)
      local pid = helpers.spawn_lua(script, out, path, NVARS)
      sleep(slow + 0.05 + math.random() * 0.35)
      helpers.kill9(pid)
      local reported = helpers.last_number(out)
      local round = helpers.saved_round(instate, path, NVARS)
      -- The save in flight may have committed before its report was printed.
      -- Killed before its first save returned, the child reported nothing.
      local floor = reported > 0 and reported or saved_rounds
      assert(round == floor or round == floor + 1,
        ("kill %d: store holds round %d, child reported %d, earlier runs saved %d")
          :format(kill, round, reported, saved_rounds))
      saved_rounds = round
    end
    assert(saved_rounds > KILLS, ("only %d rounds saved in %d runs"):format(saved_rounds, KILLS))
  end)
end)
