-- game.lua: the script the engine (main.c) runs, with the store's path as
-- `...`. Its defstate variables are restored from the store the engine
-- owns, changed, and saved; the engine then reads them from C.
local instate = require "instate"

local path = ...
assert(instate.setup(path))

local runs = instate.defstate("runs", 0)
local player = instate.defstate("player", "nobody")
local settings = instate.defstate("settings", { volume = 0.8, fullscreen = false })

runs:set(runs:get() + 1)
if runs:get() == 1 then
  player:set("ada")
else
  settings:get().volume = settings:get().volume / 2   -- in-place changes are saved too
end
print(("lua: run %d, player %s, volume %.2f"):format(runs:get(), player:get(),
  settings:get().volume))

assert(instate.save_all())
instate.teardown()
