--- The LÖVE example (examples/love/) run as a player would: headless under
-- Xvfb, twice, each in a fresh process; the second run must restore what
-- the first one saved in love.quit. And spec/love/threads/: two love.threads
-- write one store while the main thread reads it. Needs the module built against LuaJIT
-- (LÖVE 11 runs LuaJIT 2.1): registered for INSTATE_LUA=luajit only.
local helpers = require "helpers"

local q = helpers.sh_quote

local function run_game(store, frames, game)
  local src, build = helpers.source_dir(), helpers.build_dir()
  local cmd = table.concat({
    "INSTATE_CPATH=" .. q(build .. "/lib/?.so"),
    "INSTATE_PATH=" .. q(src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua"),
    "INSTATE_LOVE_STORE=" .. q(store),
    "INSTATE_LOVE_FRAMES=" .. frames,
    "SDL_AUDIODRIVER=dummy",
    "HOME=" .. q(helpers.tmpdir()),     -- LÖVE's save directory goes there
    "timeout 120 xvfb-run -a love", q(game or (src .. "/examples/love")), "2>&1",
  }, " ")
  local out, ok = helpers.shell(cmd)
  assert(ok, "love failed:\n" .. out)
  return out
end

describe("the LÖVE example", function()
  it("restores in love.load what love.quit saved in the previous run", function()
    local store = helpers.tmpdir() .. "/state"
    local first = run_game(store, 10)
    assert.matches("restored: runs=0 score=0\n", first, 1, true)
    local saved = first:match("saved: runs=1 score=(%d+)\n")
    assert.is_not_nil(saved, first)
    assert.is_true(tonumber(saved) >= 10, first)
    local second = run_game(store, 5)
    assert.matches("restored: runs=1 score=" .. saved .. "\n", second, 1, true)
    assert.matches("saved: runs=2 score=" .. (tonumber(saved) + 5) .. "\n", second, 1, true)
    -- the second run's setup kept the first run's save as a backup
    local backup = store .. ".backup.1.isd"
    local s = assert(require("instate").open(helpers.tmpdir() .. "/probe"))
    assert(s:load(backup))
    assert.equal(tonumber(saved), s:namespace("state", "state"):get("score"))
    s:close()
  end)

  it("two love.threads write one store while the main thread reads whole transactions",
    function()
    local out = run_game(helpers.tmpdir() .. "/state", 0, helpers.source_dir() .. "/spec/love/threads")
    local reads = out:match("threads: OK (%d+)\n")
    assert.is_not_nil(reads, out)
    -- the main thread read while the writers ran, not only at the end
    assert.is_true(tonumber(reads) > 1, out)
  end)
end)
