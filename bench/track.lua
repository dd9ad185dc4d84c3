--- Saving what changed: save_all after reads, default (fingerprint) mode vs
-- tracked variables, against the raw LMDB floor.
--
--   1. N = 100,000 variables restored, every table read once (var:get()),
--      then 1% changed in place (two fields written through the value);
--      save_all timed. The floor: bench/lmdb_floor rewriting the same 1% of
--      records (already encoded) in one durable transaction.
--   2. Autosave: 200 variables (a player, a 500-item inventory, settings, a
--      50,000-entry map chunk, 196 small ones), all read, then saves with 2
--      small variables changed in place each; p50/p99 of save_all.
-- Run: make bench, or with LUA_PATH/LUA_CPATH set as the Makefile sets them.
-- INSTATE_BENCH_N (default 100000), INSTATE_BENCH_REPS (default 5).
package.path = (arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/?.lua;" .. package.path
local instate = require "instate"
local bc = require "bench_compat"

local N = tonumber(os.getenv("INSTATE_BENCH_N")) or 100000
local REPS = tonumber(os.getenv("INSTATE_BENCH_REPS")) or 5
local BUILD = os.getenv("INSTATE_BUILD_DIR") or "build"

local now
do
  local ok, system = pcall(require, "system")
  if ok and system.monotime then now = system.monotime end
  if not now then
    local ok2, socket = pcall(require, "socket")
    if ok2 and socket.gettime then now = socket.gettime end
  end
  now = now or os.clock
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
local function sh_read(cmd)
  local p = io.popen(cmd)
  local out = p:read(bc.read_all)
  p:close()
  return out
end
local scratch = sh_read("mktemp -d ${TMPDIR:-/tmp}/instate-track.XXXXXX"):gsub("%s+$", "")

local function pct(t, p)
  local s = {}
  for i = 1, #t do s[i] = t[i] end
  table.sort(s)
  local k = math.floor(p * (#s - 1) + 0.5) + 1
  return s[k]
end
local function ms(t) return ("%.2f ms"):format(t * 1000) end

local function value(i, r)
  local h = (i * 2654435761 + r * 40503) % 4294967296
  return { x = (h % 200001 - 100000) / 64, y = -(h % 5001), name = "item-" .. (h % 1000000),
           hp = 100 + r, alive = h % 5 ~= 0, tags = { "a", "fire" } }
end
local function var_name(i) return ("entity:%06d"):format(i) end
local function changed(i) return i % 100 == 1 end

local FLOOR = BUILD .. "/bench/lmdb_floor"
local have_floor = bc.exists(FLOOR)
local function floor_run(mode, dir, recs, arg)
  local out = sh_read(("%s %s %s %s %s 2>&1"):format(sh_quote(FLOOR), mode, sh_quote(dir),
    sh_quote(recs), arg or ""))
  local s = assert(out:match("seconds=([%d.]+)"), out)
  return tonumber(s)
end
local function floor_records(path, n, round_of)
  local parts = {}
  for i = 1, n do
    parts[i] = bc.s4(var_name(i)) .. bc.s4(instate.encode(value(i, round_of(i))))
  end
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(parts))
  f:close()
end

-- 1. 100k variables, 1% changed in place, every table read once.
local function many(track)
  local path = ("%s/many-%s"):format(scratch, track and "track" or "default")
  local opts = track and { track = true } or nil
  assert(instate.setup(path))
  for i = 1, N do instate.defstate(var_name(i), value(i, 0), opts) end
  assert(instate.save_all())
  instate.teardown()
  assert(instate.setup(path))
  local vars = {}
  local t0 = now()
  for i = 1, N do vars[i] = instate.defstate(var_name(i), {}, opts) end
  local t_declare = now() - t0
  t0 = now()
  for i = 1, N do local _ = vars[i]:get().hp end
  local t_read = now() - t0
  local t = {}
  for rep = 1, REPS do
    for i = 1, N do
      if changed(i) then
        local v = vars[i]:get()
        v.hp = 1000 + rep
        v.x = rep / 4
      end
    end
    collectgarbage()
    t0 = now()
    assert(instate.save_all())
    t[rep] = now() - t0
    if os.getenv("INSTATE_BENCH_VERBOSE") then print(("    rep %d: %s"):format(rep, ms(t[rep]))) end
  end
  instate.teardown()
  return pct(t, 0.5), t_declare, t_read
end

-- 2. The autosave workload.
local function autosave(track, saves)
  local path = ("%s/auto-%s"):format(scratch, track and "track" or "default")
  local opts = track and { track = true } or nil
  assert(instate.setup(path))
  local inv = {}
  for k = 1, 500 do inv[k] = { id = k, count = k % 7, name = "thing-" .. k } end
  local chunk = {}
  for k = 1, 50000 do chunk[k] = k % 13 end
  local vars = {
    instate.defstate("player", { x = 1.5, y = 2, hp = 100, name = "hero" }, opts),
    instate.defstate("inventory", { items = inv }, opts),
    instate.defstate("settings", { volume = 0.8, lang = "en", keys = { up = "w", down = "s" } }, opts),
    instate.defstate("chunk", { tiles = chunk }, opts),
  }
  for i = 5, 200 do vars[i] = instate.defstate("small" .. i, value(i, 0), opts) end
  assert(instate.save_all())
  instate.teardown()
  assert(instate.setup(path))
  local names = { "player", "inventory", "settings", "chunk" }
  for i = 1, 200 do vars[i] = instate.defstate(names[i] or ("small" .. i), {}, opts) end
  for i = 1, 200 do local _ = vars[i]:get().x end
  local t = {}
  for s = 1, saves do
    local a, b = 5 + (s * 2) % 196, 5 + (s * 2 + 1) % 196
    vars[a]:get().hp = s
    vars[b]:get().hp = s
    local t0 = now()
    assert(instate.save_all())
    t[s] = now() - t0
  end
  instate.teardown()
  return pct(t, 0.5), pct(t, 0.99)
end

local floor
if have_floor then
  local recs, dir = scratch .. "/floor.recs", scratch .. "/floor"
  floor_records(recs, N, function() return 0 end)
  floor_run("put", dir, recs)
  local t = {}
  for rep = 1, REPS do
    floor_records(recs, N, function(i) return changed(i) and rep or 0 end)
    t[rep] = floor_run("update", dir, recs, 100)
  end
  floor = pct(t, 0.5)
end

print(("%s, N = %d, %d reps (medians)"):format(_VERSION, N, REPS))
for _, track in ipairs({ false, true }) do
  local mode = track and "tracked" or "default"
  local t, td, tr = many(track)
  print(("  %d vars, 1%% changed, all read once, %s: save_all %s%s (declare %s, first reads %s)")
    :format(N, mode, ms(t), floor and (" = %.2fx floor %s"):format(t / floor, ms(floor)) or "",
      ms(td), ms(tr)))
end
for _, track in ipairs({ false, true }) do
  local p50, p99 = autosave(track, 300)
  print(("  autosave 200 vars (2 changed per save), %s: p50 %s, p99 %s")
    :format(track and "tracked" or "default", ms(p50), ms(p99)))
end
os.execute("rm -rf " .. sh_quote(scratch))
