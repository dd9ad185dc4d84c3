--- map benchmark: a 100k-entry world as a map variable (instate.defmap).
--
--   one entry changed   a new run (setup, defmap), one m:set, save_all
--                       (durable commit); the ratio (target: <= 2x) is of
--                       save_all alone, against the raw LMDB floor of one
--                       small-record durable commit into a 20-record
--                       database, and beside it the same commit into a
--                       database of the world's N records (whose deeper
--                       tree dirties the pages one world entry needs: the
--                       map's bound); and the same world in one defstate
--                       variable with one entry changed in place
--
-- Measured as bench/defstate.lua's world row measures it: right before
-- each save, one commit of each floor (bench/lmdb_floor serve, taken by
-- bench_compat.floor_server), so a loaded disk slows both alike; the
-- collector stopped while a save is timed; ratios of medians. What
-- differs: here each save is in a new run, with one entry handed out;
-- there, 60 saves follow in one run, the entries set staying handed out.
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

-- the floors: durable single-record write transactions of raw LMDB, one
-- of each right before each save below, into a 20-record database and
-- into one of the world's N records (keys and values as the map's)
local FLOOR = BUILD .. "/bench/lmdb_floor"
local function floor_db(name, n)
  local parts = {}
  for i = 1, n do parts[i] = bc.s4("i" .. i) .. bc.s4(instate.encode(entry(i))) end
  write_file(dir .. "/" .. name .. ".recs", table.concat(parts))
  local out = sh_read(("%s put %s %s 2>&1"):format(sh_quote(FLOOR), sh_quote(dir .. "/" .. name),
    sh_quote(dir .. "/" .. name .. ".recs")))
  os.remove(dir .. "/" .. name .. ".recs")
  return out:match("seconds=") ~= nil
end
local commit_recs = dir .. "/commit.recs"
do
  local parts = {}
  for k = 1, 3 do parts[k] = bc.s4("i" .. (k * 4999 % N + 1)) .. bc.s4(instate.encode(entry(k, k))) end
  write_file(commit_recs, table.concat(parts))
end
local servers
if floor_db("floor_small", 20) and floor_db("floor_world", N) then
  servers = {}
  for i, name in ipairs({ "floor_small", "floor_world" }) do
    local sv, why = bc.floor_server(FLOOR, dir .. "/" .. name, commit_recs, ("%s/floor%d.fifo"):format(dir, i))
    if not sv then
      io.stderr:write("no floor: ", why, "\n")
      servers = nil
      break
    end
    servers[i] = sv
  end
else
  io.stderr:write("lmdb_floor failed (build it: make)\n")
end
local t_floor, t_fworld = {}, {}

-- one entry changed, in a new run each time
local t_one, t_save = {}, {}
for rep = 1, REPS do
  instate.setup(path)
  local w = instate.defmap("world")
  if servers then
    t_floor[rep] = servers[1]:commit()
    t_fworld[rep] = servers[2]:commit()
  end
  collectgarbage("stop")
  local t0 = now()
  w:set(rep * 37 % N + 1, entry(rep, rep))
  local t1 = now()
  assert(instate.save_all())
  local t2 = now()
  collectgarbage("restart")
  t_one[rep], t_save[rep] = t2 - t0, t2 - t1
  instate.teardown()
end
if servers then for _, sv in ipairs(servers) do sv:close() end end

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

print(("map variables: a world of %d entries (%s, %d runs; each save in a new run, the floors' commits interleaved with the saves, as bench/defstate.lua's world row, which times 60 saves in one run)"):format(N, _VERSION .. (jit and " / " .. jit.version or ""), REPS))
local function ratio(a, b)
  local ma, ba = median(a)
  local mb, bb = median(b)
  return ("   %.2fx the floor (target <= 2x; best runs %.2fx)"):format(ma / mb, ba / bb)
end
local one = show("one entry changed: save_all", t_save,
  #t_floor > 0 and ratio(t_save, t_floor) or "")
show("  set + save_all (the set reads its record)", t_one)
if #t_floor > 0 then
  show("floor: one small-record durable commit", t_floor, "   (20-record database)")
  show("floor: the same, world-sized database", t_fworld, ("   (%d records: the map's bound)"):format(N))
end
show("same world in one defstate variable", t_var,
  ("   %.0fx the map's set + save_all"):format(median(t_var) / median(t_one)))
local r = show("restored, not read: setup + defmap", t_restore,
  ("   target <= 5 ms: %s"):format(median(t_restore) <= 0.005 and "met" or "MISSED"))
show("setup alone", t_setup)
show("first get of one entry", t_get)
show("count(): the whole world read", t_count)
os.execute("rm -rf " .. sh_quote(dir))
