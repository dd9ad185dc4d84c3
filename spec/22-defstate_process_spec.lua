-- defstate across real processes: the Instadump README sequence, each run a
-- fresh lua5.4 process on the same store.
local helpers = require "helpers"

-- Run `body` in a fresh process after setting up the store at path; returns
-- its output lines.
local function run(path, body)
  local out, ok = helpers.run_lua([[
    local instate = require "instate"
    local path = ...
    assert(instate.setup(path))
    local function show(...) io.write(table.concat({ ... }, " "), "\n") end
  ]] .. body, path)
  assert(ok, "child failed:\n" .. out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

describe("defstate across processes", function()
  it("follows the Instadump README: declare, change, save, restart, reload", function()
    local path = helpers.tmpdir() .. "/save"

    -- Process 1: declare, change, save; then change again without saving.
    assert.are.same({ "saved 0 1" }, run(path, [[
      local score = instate.defstate("score", 0)
      local inventory = instate.defstate("inventory", {})
      show("saved", score:get(), instate.save_all() > 0 and 1 or 0)
      score:set(score:get() + 10)
      inventory:get().sword = true
      instate.save_all()
      score:set(1000)
    ]]))

    -- Process 2: the saved values are there; unsaved changes are not.
    assert.are.same({
      "score 10", "sword true", "saved true",
      "after set 99", "reload true", "reverted 10",
      "error instate.reload_all: never saved: lives, level (nothing was changed)",
      "unchanged 5 3",
    }, run(path, [[
      local score = instate.defstate("score", 0)
      local inventory = instate.defstate("inventory", {})
      show("score", score:get())
      show("sword", tostring(inventory:get().sword))
      show("saved", tostring(score:saved()))
      score:set(99)
      show("after set", score:get())
      show("reload", tostring(instate.reload_all()))
      show("reverted", score:get())
      local lives = instate.defstate("lives", 3)
      local level = instate.defstate("level", 1)
      score:set(5)
      level:set(3)
      local ok, err = pcall(instate.reload_all)
      show("error", (tostring(err):gsub("^.-: instate", "instate")))
      show("unchanged", score:get(), level:get())
    ]]))

    -- Process 3: nothing of process 2 was saved; saving now keeps all.
    assert.are.same({ "score 10", "lives 3", "saved", "reload ok 7" }, run(path, [[
      local score = instate.defstate("score", 0)
      local lives = instate.defstate("lives", 3)
      show("score", score:get())
      show("lives", lives:get())
      lives:set(7)
      instate.save_all()
      show("saved")
      lives:set(0)
      assert(instate.reload_all())
      show("reload ok", lives:get())
    ]]))

    -- Process 4: undeclared variables were kept by process 3's save.
    assert.are.same({ "sword true 10 7" }, run(path, [[
      local inventory = instate.defstate("inventory", {})
      local score = instate.defstate("score", 0)
      local lives = instate.defstate("lives", 0)
      show("sword", tostring(inventory:get().sword), score:get(), lives:get())
    ]]))
  end)

  it("migrates in the process that declares the new version", function()
    local path = helpers.tmpdir() .. "/save"
    run(path, [[
      instate.defstate("player", { "hero", 30 })
      instate.save_all()
    ]])
    assert.are.same({ "migrated from 1", "hero 30 1", "version 2" }, run(path, [[
      local player = instate.defstate("player", { name = "nobody", hp = 1, level = 1 }, {
        version = 2,
        migrate = function(old, version)
          show("migrated from", version)
          return { name = old[1], hp = old[2], level = 1 }
        end,
      })
      local p = player:get()
      show(p.name, p.hp, p.level)
      instate.save_all()
      local store = instate.setup(path)
      show("version", select(2, store:namespace("state", "state"):get_encoded("player")))
    ]]))
    -- The new version is stored: no migration on the next start.
    assert.are.same({ "hero 30 1" }, run(path, [[
      local p = instate.defstate("player", {}, {
        version = 2, migrate = function() show("migrated again") end,
      }):get()
      show(p.name, p.hp, p.level)
    ]]))
  end)

  it("two processes see each other's saves at their next start", function()
    local path = helpers.tmpdir() .. "/save"
    for i = 1, 3 do
      assert.are.same({ "count " .. i }, run(path, [[
        local c = instate.defstate("count", 0)
        c:set(c:get() + 1)
        instate.save_all()
        show("count", c:get())
      ]]))
    end
  end)
  it("an unchanged table restored in a new process costs no write, whatever its key order", function()
    local path = helpers.tmpdir() .. "/save"
    -- Each process builds the default with keys in another order and
    -- history, hands the table out and saves: only the first save writes.
    local code = [[
      local t = {}
      for i = 1, 60 do t["k" .. i] = i end
      for i = 1, 60, 3 do t["k" .. i] = nil; t["k" .. i] = i end
      local v = instate.defstate("bag", t)
      v:get().k1 = 1
      local store = instate.setup(path)
      local before = store:revision()
      instate.save_all()
      show("wrote", store:revision() - before)
    ]]
    assert.are.same({ "wrote 1" }, run(path, code))
    for _ = 1, 3 do
      assert.are.same({ "wrote 0" }, run(path, code))
    end
  end)
end)
