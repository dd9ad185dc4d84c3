--- map benchmark: a 100k-entry world as a map variable (instate.defmap).
--
--   one entry changed   a new run (setup, defmap), one m:set, save_all
--                       (durable commit), against the raw LMDB floor of one
--                       small-record durable commit (bench/lmdb_floor
--                       commit) and against the same world in one defstate
--                       variable with one entry changed in place
--                       (target: <= 2x the floor)
--   restored, not read  setup + defmap of the world, nothing read
--                       (target: <= 5 ms); and, for the record, the first
--                       get of one entry, and a count() that reads it all
--
-- Each world entry is a small table (about 100 bytes encoded), e.g.
--   {kind = "grass", h = 3, x = 12, y = 40, items = {"stone", "stick"}, lit = false}
-- Times are wall-clock medians (the best run in brackets).
-- INSTATE_BENCH_N sets the entry count (default 100000), INSTATE_BENCH_REPS
-- the runs (default 21).
--
-- Run: make bench (or with the Makefile's paths: LUA_CPATH=build/lib/?.so
-- LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua" lua5.4 bench/map.lua)
package.path = (arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/?.lua;" .. package.path
local instate = require "instate"
local bc = require "bench_compat"

local N = tonumber(os.getenv("INSTATE_BENCH_N")) or 100000
local REPS = tonumber(os.getenv("INSTATE_BENCH_REPS")) or 21
local BUILD = os.getenv("INSTATE_BUILD_DIR") or "build"

-- Wall clock: fsync waits are not CPU time.
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

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function sh_read(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read(bc.read_all)
  p:close()
  return out
end
local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function median(t)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  return s[math.floor((#s + 1) / 2)], s[1]
end
local function ms(t) return ("%.3f ms"):format(t * 1000) end

local KINDS = { "grass", "water", "rock", "sand", "forest", "road" }
local function entry(i, round)
  return { kind = KINDS[i % #KINDS + 1], h = i % 17, x = i % 317, y = math.floor(i / 317),
           items = { "stone", "stick", round and ("r" .. round) or nil }, lit = i % 3 == 0 }
end

local dir = sh_read("mktemp -d"):gsub("%s+$", "")
local path = dir .. "/save"

-- The world, saved once.
instate.setup(path)
local world = instate.defmap("world")
for i = 1, N do world:set(i, entry(i)) end
assert(instate.save_all())
instate.teardown()

-- the floor: one small record, durable single-record write transactions
-- of raw LMDB, sampled between the runs below (a loaded machine then slows
-- both alike)
local FLOOR = BUILD .. "/bench/lmdb_floor"
local floor_recs = dir .. "/floor.recs"
write_file(floor_recs, bc.s4("i1") .. bc.s4(instate.encode(entry(1))))
local t_floor, floor_ok = {}, true
local function floor_sample(rep)
  if not floor_ok then return end
  local out = sh_read(("%s commit %s %s %d 2>&1"):format(sh_quote(FLOOR),
    sh_quote(dir .. "/floor"), sh_quote(floor_recs), 10))
  local s = out:match("seconds=([%d.]+)")
  if not s then
    io.stderr:write("lmdb_floor failed (build it: make): ", out, "\n")
    floor_ok = false
    return
  end
  t_floor[rep] = tonumber(s) / 10
end

-- one entry changed, in a new run each time
local t_one = {}
for rep = 1, REPS do
  floor_sample(rep)
  instate.setup(path)
  local w = instate.defmap("world")
  local t0 = now()
  w:set(rep * 37 % N + 1, entry(rep, rep))
  assert(instate.save_all())
  t_one[rep] = now() - t0
  instate.teardown()
end

-- restored, not read: setup + defmap
local t_restore, t_get, t_count = {}, {}, {}
for rep = 1, REPS do
  local t0 = now()
  instate.setup(path)
  local w = instate.defmap("world")
  t_restore[rep] = now() - t0
  t0 = now()
  assert(w:get(rep))
  t_get[rep] = now() - t0
  if rep <= 3 then
    t0 = now()
    assert(w:count() == N)
    t_count[rep] = now() - t0
  end
  instate.teardown()
end
-- setup alone, for comparison
local t_setup = {}
for rep = 1, REPS do
  local t0 = now()
  instate.setup(path)
  t_setup[rep] = now() - t0
  instate.teardown()
end

-- the same world in one defstate variable, one entry changed in place
local vpath = dir .. "/var"
instate.setup(vpath)
local tiles = {}
for i = 1, N do tiles[i] = entry(i) end
instate.defstate("world", tiles)
assert(instate.save_all())
instate.teardown()
local t_var = {}
for rep = 1, math.min(REPS, 5) do
  instate.setup(vpath)
  local v = instate.defstate("world", {})
  local t0 = now()
  v:get()[rep * 37 % N + 1] = entry(rep, rep)
  assert(instate.save_all())
  t_var[rep] = now() - t0
  instate.teardown()
end

local function show(what, t, extra)
  local m, best = median(t)
  print(("%-44s %12s  [%s]%s"):format(what, ms(m), ms(best), extra or ""))
  return m
end

print(("map variables: a world of %d entries (%s, %d runs)"):format(N, _VERSION .. (jit and " / " .. jit.version or ""), REPS))
local function ratio(a, b)
  local ma, ba = median(a)
  local mb, bb = median(b)
  return ("   %.2fx the floor (target <= 2x; best runs %.2fx)"):format(ma / mb, ba / bb)
end
local one = show("one entry changed: set + save_all", t_one,
  #t_floor > 0 and ratio(t_one, t_floor) or "")
if #t_floor > 0 then show("floor: one small-record durable commit", t_floor) end
show("same world in one defstate variable", t_var,
  ("   %.0fx the map"):format(median(t_var) / one))
local r = show("restored, not read: setup + defmap", t_restore,
  ("   target <= 5 ms: %s"):format(median(t_restore) <= 0.005 and "met" or "MISSED"))
show("setup alone", t_setup)
show("first get of one entry", t_get)
show("count(): the whole world read", t_count)
os.execute("rm -rf " .. sh_quote(dir))
