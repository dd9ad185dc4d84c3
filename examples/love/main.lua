-- A LÖVE 11 game whose state survives restarts: restored in love.load,
-- changed in love.update, saved on a timer and in love.quit, shown in
-- love.draw. The store keeps 3 backups (one per session that changed it),
-- and a second copy of the game opens it read-only.
--
-- Where instate comes from: package.cpath must find instate/core.so (built
-- against LÖVE's LuaJIT: cmake -DINSTATE_LUA=luajit) and package.path the
-- Lua files (lua/instate/*.lua). A shipped game puts both beside itself
-- (love.filesystem.getSourceBaseDirectory()); this example also takes them
-- from INSTATE_CPATH / INSTATE_PATH, as the spec that runs it sets them.
local base = love.filesystem.getSourceBaseDirectory()
package.cpath = (os.getenv("INSTATE_CPATH") or (base .. "/?.so")) .. ";" .. package.cpath
package.path = (os.getenv("INSTATE_PATH") or (base .. "/?.lua;" .. base .. "/?/init.lua"))
  .. ";" .. package.path

local instate = require "instate"

local store_dir, score, runs, frames_left
local status = "starting"
local readonly = false
-- Autosave: a crash or a kill loses at most this much play.
local AUTOSAVE_SECONDS = 10
local since_save = 0

local function save(why)
  if readonly then return true end
  local rev, msg, code = instate.save_all()
  if not rev then
    io.write(why, " save failed: ", tostring(msg), " (", tostring(code), ")\n")
  end
  return rev
end

function love.load()
  -- The save directory LÖVE gives the game (it exists once written to).
  love.filesystem.createDirectory("save")
  store_dir = os.getenv("INSTATE_LOVE_STORE")
    or (love.filesystem.getSaveDirectory() .. "/save/state")
  local ok, msg, code = instate.setup(store_dir, { backups = 3 })
  if not ok and code == "LOCKED" then
    -- Another copy of the game owns the save: look, do not write.
    io.write("another copy is running: ", msg, "\n")
    readonly = true
    ok, msg, code = instate.setup(store_dir, { readonly = true })
  end
  assert(ok, msg)
  score = instate.defstate("score", 0)
  runs = instate.defstate("runs", 0)
  runs:set(runs:get() + 1)
  -- headless runs stop by themselves after a few frames
  frames_left = tonumber(os.getenv("INSTATE_LOVE_FRAMES") or "")
  status = ("run %d, restored score %d"):format(runs:get(), score:get())
  io.write("restored: runs=", runs:get() - 1, " score=", score:get(), "\n")
end

function love.update(dt)
  score:set(score:get() + 1)          -- one point a frame
  since_save = since_save + dt
  if since_save >= AUTOSAVE_SECONDS then
    since_save = 0
    save("autosave")
  end
  if frames_left then
    frames_left = frames_left - 1
    if frames_left <= 0 then love.event.quit() end
  end
end

function love.draw()
  love.graphics.print(status, 20, 20)
  love.graphics.print(("score %d"):format(score:get()), 20, 50)
  love.graphics.print("state is saved when the game quits", 20, 80)
end

-- Quitting safely: save every variable in one transaction before the
-- process ends, and wait for background saves (instate.flush, when the
-- game uses save_all{async = true}). A crash before this loses the frames
-- since the last save, never the store (the previous save stays whole);
-- the owner lock goes with the process, so the next start is not blocked.
function love.quit()
  if save("quit") and not readonly then
    io.write("saved: runs=", runs:get(), " score=", score:get(), "\n")
  end
  if instate.flush then instate.flush() end
  instate.teardown()                  -- releases the owner lock
  return false -- let LÖVE quit
end
