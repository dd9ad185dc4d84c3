-- A tiny dungeon crawler whose state survives restarts.
--
--   lua5.4 examples/demo.lua <store path> [v1|v2]   -- one start of the game
--   lua5.4 examples/demo.lua codec                  -- values that survive encoding
--
-- Run it several times: the hero, the gold and the journal are simply there
-- again on the next start. Nothing is loaded or saved by hand except one
-- instate.save_all() call.
local instate = require "instate"

local function say(fmt, ...) print("  " .. fmt:format(...)) end

-- ---------------------------------------------------------------------------
-- codec: every tricky value goes through instate.encode/decode unchanged
-- ---------------------------------------------------------------------------
if arg[1] == "codec" then
  local shared = { "shared" }
  local value = {
    big = math.maxinteger, small = math.mininteger, float = 0.1,
    nan = 0 / 0, inf = math.huge, negzero = -0.0,
    bytes = "\0\1\2\255", yes = true, no = false,
    [1.5] = "a float key", [true] = "a boolean key", [{ "table key" }] = "a table key",
    a = shared, b = shared,
  }
  value.loop = value
  local bytes = instate.encode(value)
  local back = assert(instate.decode(bytes))
  say("encoded a table with 64-bit integers, NaN, inf, -0.0, binary bytes,")
  say("float/boolean/table keys, a shared sub-table and a cycle: %d bytes", #bytes)
  local function check(what, ok) say("%-40s %s", what, ok and "ok" or "WRONG") end
  check("math.maxinteger / math.mininteger", back.big == math.maxinteger and back.small == math.mininteger
    and math.type(back.big) == "integer")
  check("0.1 exactly", back.float == 0.1)
  check("NaN stays NaN", back.nan ~= back.nan)
  check("inf, and -0.0 keeps its sign", back.inf == math.huge and 1 / back.negzero == -math.huge)
  check("binary string \\0\\1\\2\\255", back.bytes == "\0\1\2\255")
  check("true and false", back.yes == true and back.no == false)
  check("float and boolean keys", back[1.5] == "a float key" and back[true] == "a boolean key")
  local tkey
  for k in pairs(back) do if type(k) == "table" then tkey = k end end
  check("table key", tkey and tkey[1] == "table key" and back[tkey] == "a table key")
  check("shared sub-table is still shared", back.a == back.b and back.a[1] == "shared")
  check("cycle is still a cycle", back.loop == back)
  local ok, err = pcall(instate.encode, { hero = { on_hit = print } }, "save")
  say("and what cannot be stored is refused, by path:")
  say("  %s", ok and "(no error?)" or tostring(err))
  return
end

-- ---------------------------------------------------------------------------
-- one start of the game
-- ---------------------------------------------------------------------------
local path, version = assert(arg[1], "usage: demo.lua <store path> [v1|v2]"), arg[2] or "v1"

assert(instate.setup(path))

local starts = instate.defstate("starts", 0)
local journal = instate.defstate("journal", {})

-- Version 1 kept the gold on the hero; version 2 gives the hero a purse with
-- room for gems. A save written by version 1 is migrated on its first start.
local hero
if version == "v1" then
  hero = instate.defstate("hero", { name = "Ayla", hp = 20, gold = 0, bag = { "torch" } })
else
  hero = instate.defstate("hero", { name = "Ayla", hp = 20, purse = { gold = 0, gems = 0 }, bag = { "torch" } }, {
    version = 2,
    migrate = function(old, old_version)
      say("** migrating the saved hero from version %d to 2: gold moves into a purse", old_version)
      return { name = old.name, hp = old.hp, bag = old.bag, purse = { gold = old.gold, gems = 0 } }
    end,
    validate = function(h)
      return h.purse.gold >= 0, "gold cannot be negative"
    end,
  })
end

local function gold() local h = hero:get(); return h.purse and h.purse.gold or h.gold end
local function add_gold(n)
  local h = hero:get()
  if h.purse then h.purse.gold = h.purse.gold + n else h.gold = h.gold + n end
end
local function describe()
  local h = hero:get()
  local gems = h.purse and (", %d gems"):format(h.purse.gems) or ""
  return ("%s: %d hp, %d gold%s, bag: %s"):format(h.name, h.hp, gold(), gems,
    #h.bag > 0 and table.concat(h.bag, ", ") or "(empty)")
end

starts:set(starts:get() + 1)
if hero:saved() then
  say("welcome back! restored from the save: %s", describe())
  say("journal so far: %s", table.concat(journal:get(), " / "))
else
  say("nothing saved yet, a new hero: %s", describe())
end

-- Explore: the deeper the run, the more gold.
local found = 10 * starts:get()
add_gold(found)
if starts:get() == 2 then table.insert(hero:get().bag, "silver key") end
local h = hero:get()
if h.purse then h.purse.gems = h.purse.gems + 1 end
journal:get()[#journal:get() + 1] = ("start %d: +%d gold"):format(starts:get(), found)
say("%s explores room %d and finds %d gold%s", hero:get().name, starts:get(), found,
  h.purse and " and a gem" or "")
say("instate.save_all() -> revision %d   (one atomic write of every variable)", instate.save_all())

-- Start 1: a shopping trip that fails halfway leaves no trace:
-- instate.transaction puts back every variable set inside it.
if starts:get() == 1 then
  say("")
  local function copy(t) local c = {}; for k, v in pairs(t) do c[k] = v end; return c end
  local ok, err = pcall(instate.transaction, function()
    local h = copy(hero:get())
    h.bag = copy(h.bag)
    h.bag[#h.bag + 1] = "sword"
    hero:set(h)
    local j = copy(journal:get())
    j[#j + 1] = "bought a sword"
    journal:set(j)
    if gold() < 1000 then error("the smith wants 1000 gold", 0) end
  end)
  say("instate.transaction(buy a sword): %s", ok and "bought" or ("failed: " .. err))
  say("  nothing half-done: %s; journal entries: %d", describe(), #journal:get())
end

-- Start 2: a bad move, undone by going back to the last save.
if starts:get() == 2 then
  say("")
  say("%s pulls a rusty lever... a trap! she drops her gold and her bag.", hero:get().name)
  add_gold(-gold())
  hero:get().bag = {}
  hero:get().hp = hero:get().hp - 15
  say("  now:  %s", describe())
  assert(instate.reload_all())
  say("instate.reload_all()   (every variable back to the last save)")
  say("  now:  %s", describe())
end

instate.teardown()
