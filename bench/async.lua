--- async save benchmark: the autosave workload with save_all{async = true}.
--
-- 200 variables, about 1.1 MB encoded: a player, a 500-item inventory,
-- settings, a 50k-entry map chunk (one table), and 196 small variables.
-- Each autosave changes 2 variables (the player and one small variable).
--
-- Measured, p50 / p99 over SAVES autosaves (wall clock):
--   sync        save_all(): encode, compare and durable commit on the caller
--   async       save_all{async = true}: the time on the calling thread
--   durable     save_all{async = true} + flush(): until the commit is durable
-- each in two runs: "every table read" (the game holds every table, so each
-- may have changed in place and save_all encodes it: what main's change
-- detection costs), and "only the 2 changed read" (the other variables
-- restored and never handed out, so nothing but the 2 is encoded: the cost
-- once change detection is cheap).
--
-- Targets (calling thread, async): p50 <= 1.5 ms, p99 <= 4 ms with cheap
-- change detection.
--
-- Run: lua5.4 bench/async.lua [build dir]   (needs luasystem or luasocket
-- for a wall clock; INSTATE_BENCH_SAVES sets the number of autosaves)
local BUILD = arg and arg[1] or os.getenv("INSTATE_BUILD_DIR") or "build"
package.cpath = BUILD .. "/lib/?.so;" .. package.cpath
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local instate = require "instate"

local SAVES = tonumber(os.getenv("INSTATE_BENCH_SAVES")) or 200

local now
do
  local ok, system = pcall(require, "system")
  if ok and system.monotime then now = system.monotime end
  if not now then
    local ok2, socket = pcall(require, "socket")
    if ok2 and socket.gettime then now = socket.gettime end
  end
  if not now then
    io.stderr:write("note: no luasystem or luasocket; timing with os.clock (CPU time only)\n")
    now = os.clock
  end
end

local function defaults()
  local d = {}
  d.player = { name = "hero", x = 10.5, y = -3.25, hp = 100, mp = 40, level = 12,
    xp = 123456, gold = 999, flags = { tutorial = true, boss1 = false } }
  local inv = {}
  for i = 1, 500 do
    inv[i] = { id = i * 7 % 1000, count = i % 20 + 1, name = "item-" .. i, durability = i % 100 }
  end
  d.inventory = inv
  local settings = {}
  for i = 1, 40 do settings["option_" .. i] = i % 3 == 0 and true or i * 1.5 end
  d.settings = settings
  local chunk = {}
  for i = 1, 50000 do chunk[i] = "tile" .. (i * 2654435761) % 251 end
  d.chunk = chunk
  for i = 1, 196 do
    local t = { kind = "npc", id = i, tags = { "a", "b", "c" }, pos = { i, -i }, note = ("n"):rep(i % 50),
      log = ("entry " .. i .. "; "):rep(320) }
    for j = 1, 30 do t["k" .. j] = j * i end
    d[("var%03d"):format(i)] = t
  end
  return d
end

local function pct(list, p)
  local s = {}
  for i = 1, #list do s[i] = list[i] end
  table.sort(s)
  local k = math.max(1, math.min(#s, math.floor(p * #s + 0.5)))
  return s[k]
end

local function fmt(list)
  return ("%7.2f / %7.2f ms"):format(pct(list, 0.5) * 1000, pct(list, 0.99) * 1000)
end

local function run(path, read_all)
  local store = assert(instate.setup(path))
  local d = defaults()
  local vars, names = {}, {}
  for name, v in pairs(d) do
    names[#names + 1] = name
    vars[name] = instate.defstate(name, v)
  end
  table.sort(names)
  if read_all then
    for _, name in ipairs(names) do vars[name]:get() end
  end
  local sync, async, durable = {}, {}, {}
  local step = 0
  local function change()
    step = step + 1
    local p = vars.player:get()
    p.x = p.x + 1
    vars[("var%03d"):format(step % 4 + 1)]:update(function(t) t.id = t.id + 1; return t end)
  end
  -- every save must commit (each changes two records): checked below
  local rev0 = store:revision()
  for i = 1, SAVES do
    change()
    local t0 = now()
    assert(instate.save_all())
    sync[i] = now() - t0
  end
  for i = 1, SAVES do
    change()
    local t0 = now()
    assert(instate.save_all({ async = true }))
    async[i] = now() - t0
    -- the game's frame: the writer works meanwhile
    local t1 = now()
    while now() - t1 < 0.016 do end
  end
  assert(instate.flush())
  for i = 1, SAVES do
    change()
    local t0 = now()
    assert(instate.save_all({ async = true }))
    assert(instate.flush())
    durable[i] = now() - t0
  end
  assert(store:revision() - rev0 == 3 * SAVES, "a save did not commit")
  instate.teardown()
  return sync, async, durable
end

local dir = os.tmpname()
os.remove(dir)
local path = dir .. ".async-bench"
-- a first run saves everything, so the runs below restore from the store
assert(instate.setup(path))
do
  local d = defaults()
  for name, v in pairs(d) do instate.defstate(name, v) end
  assert(instate.save_all())
  local bytes = 0
  for _, v in pairs(d) do bytes = bytes + #instate.encode(v) end
  print(("autosave workload: 200 variables, %.2f MB encoded, 2 changed per save, %d saves")
    :format(bytes / 1e6, SAVES))
end
instate.teardown()

print(("%-28s %-22s %-22s %-22s"):format("p50 / p99", "sync save_all", "async (calling thread)",
  "async + flush (durable)"))
for _, mode in ipairs({ { "every table read", true }, { "only the 2 changed read", false } }) do
  local s, a, d = run(path, mode[2])
  print(("%-28s %-22s %-22s %-22s"):format(mode[1], fmt(s), fmt(a), fmt(d)))
end
os.execute("rm -rf '" .. path .. "'")
