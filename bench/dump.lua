--- Dump and load: time and file size at levels 0, 1 and 9 for N game-state
-- records, against Tarantool (box.snapshot() and restart recovery) and the
-- `mdb_dump | zstd -1` / `zstd -d | mdb_load` pipelines on the same store.
--
--   lua5.4 bench/dump.lua                 N = 100000
--   INSTATE_BENCH_N=20000 lua5.4 bench/dump.lua
--   INSTATE_BENCH_BIG=1 lua5.4 bench/dump.lua   memory check: dump a store
--       larger than 1 GiB and report the growth of anonymous memory
--       (sampled from /proc every 20 ms); it must stay under 64 MiB.
local instate = require "instate"

local N = tonumber(os.getenv("INSTATE_BENCH_N")) or 100000

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local function sh(cmd)
  local ok = os.execute(cmd)
  return ok
end
local function have(prog) return sh("command -v " .. prog .. " >/dev/null 2>&1") end
local function now() return instate.now() end
local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end
local function du(dir)
  local p = io.popen("du -sb " .. q(dir) .. " | cut -f1")
  local n = tonumber(p:read("l"))
  p:close()
  return n
end
local function tmpdir()
  local p = io.popen("mktemp -d /tmp/instate-bench-dump.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

local function item(i)
  local r = (i * 2654435761) % 4294967296
  return {
    x = (r % 10000) / 8 - 600, y = -(r >> 8) % 977, name = "item-" .. i,
    tags = ({ { "a", "b", "c" }, { "rare" }, { "a", "quest" }, {} })[i % 4 + 1],
    hp = r % 101, alive = r % 5 ~= 0,
  }
end

-- ---------------------------------------------------------------------------
if os.getenv("INSTATE_BENCH_BIG") then
  local dir = tmpdir()
  local s = assert(instate.open(dir .. "/big", { sync = "none", map_size = 2 ^ 31 }))
  local ns = s:namespace("big")
  local chunk = {}
  for i = 1, 1024 do chunk[i] = string.char((i * 7919) % 251) end
  chunk = table.concat(chunk)
  local per_txn, total = 20000, 0
  local n = 0
  while total < 1.1 * 2 ^ 30 do
    s:transaction(function(tx)
      local t = tx:namespace("big")
      for _ = 1, per_txn do
        n = n + 1
        t:set(string.format("k%09d", n), string.format("%09d", n) .. chunk)
      end
    end)
    total = total + per_txn * 1040
  end
  local used = s:stats().used_bytes
  s:close()
  print(("store: %d records, %.2f GiB used"):format(n, used / 2 ^ 30))
  local child = dir .. "/child.lua"
  local f = assert(io.open(child, "w"))
  f:write([[
    local instate = require "instate"
    local function anon()
      for l in io.lines("/proc/self/status") do
        local kb = l:match("^RssAnon:%s+(%d+)")
        if kb then return tonumber(kb) end
      end
    end
    local s = assert(instate.open(arg[1]))
    collectgarbage() collectgarbage()
    io.stderr:write("before ", anon(), "\n")
    io.stderr:flush()
    local info = assert(s:dump(arg[2], { compression = 1 }))
    io.stderr:write("done ", info.records, " ", info.bytes, "\n")
  ]])
  f:close()
  local script = ([[
    %s %s %s %s 2>%s &
    pid=$!; max=0
    while kill -0 $pid 2>/dev/null; do
      a=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null)
      [ -n "$a" ] && [ "$a" -gt "$max" ] && max=$a
      sleep 0.02
    done
    wait $pid; echo "max $max"
  ]]):format("lua5.4", q(child), q(dir .. "/big"), q(dir .. "/big.dump"), q(dir .. "/err"))
  local t0 = now()
  local p = io.popen(script)
  local out = p:read("a")
  p:close()
  local el = now() - t0
  local err = io.open(dir .. "/err"):read("a")
  local before = tonumber(err:match("before (%d+)"))
  local max = tonumber(out:match("max (%d+)"))
  print(err)
  local growth = (max - before) / 1024
  print(("dump of %.2f GiB in %.1f s: anonymous memory %d KiB before, peak %d KiB, growth %.1f MiB (limit 64 MiB): %s")
    :format(used / 2 ^ 30, el, before, max, growth, growth < 64 and "OK" or "FAIL"))
  sh("rm -rf " .. q(dir))
  os.exit(growth < 64 and 0 or 1)
end

-- ---------------------------------------------------------------------------
local dir = tmpdir()
local rows = {}
local function row(name, dump_s, load_s, bytes, note)
  rows[#rows + 1] = { name = name, dump = dump_s, load = load_s, bytes = bytes, note = note or "" }
end

local s = assert(instate.open(dir .. "/store", { sync = "none" }))
s:transaction(function(tx)
  local ns = tx:namespace("game")
  for i = 1, N do ns:set(string.format("entity:%06d", i), item(i)) end
end)
print(("%d records, store %.1f MB"):format(N, s:stats().used_bytes / 1e6))

for _, level in ipairs({ 0, 1, 9 }) do
  local path = dir .. "/l" .. level .. ".dump"
  local t0 = now()
  local info = assert(s:dump(path, { compression = level }))
  local td = now() - t0
  local t = assert(instate.open(dir .. "/load" .. level, { sync = "none" }))
  t0 = now()
  local li = assert(t:load(path))
  local tl = now() - t0
  assert(li.records == N)
  t:close()
  row("instate level " .. level, td, tl, info.bytes)
end
s:close()

-- mdb_dump | zstd -1, zstd -d | mdb_load on the same store
if have("mdb_dump") and have("mdb_load") and have("zstd") then
  local out = dir .. "/mdb.zst"
  local t0 = now()
  assert(sh(("mdb_dump -a %s | zstd -1 -q -f -o %s"):format(q(dir .. "/store"), q(out))))
  local td = now() - t0
  sh("mkdir " .. q(dir .. "/mdbload"))
  t0 = now()
  assert(sh(("zstd -d -q -c %s | mdb_load %s"):format(q(out), q(dir .. "/mdbload"))))
  local tl = now() - t0
  row("mdb_dump | zstd -1", td, tl, size_of(out))
else
  print("skipped: mdb_dump | zstd (mdb_dump, mdb_load or zstd missing)")
end

-- Tarantool: the same records in a memtx space
if have("tarantool") then
  local tdir = dir .. "/tnt"
  sh("mkdir " .. q(tdir))
  local script = tdir .. "/run.lua"
  local f = assert(io.open(script, "w"))
  f:write([[
    local mode, dir, n = arg[1], arg[2], tonumber(arg[3])
    local clock = require "clock"
    local t0 = clock.time()
    box.cfg { work_dir = dir, log = dir .. "/tnt.log", memtx_memory = 1024 * 1024 * 1024,
              checkpoint_count = 1 }
    local recovered = clock.time() - t0
    if mode == "fill" then
      local sp = box.schema.space.create("game", { if_not_exists = true })
      sp:create_index("pk", { type = "tree", parts = { 1, "string" }, if_not_exists = true })
      local function item(i)
        local r = (i * 2654435761) % 4294967296
        return { x = (r % 10000) / 8 - 600, y = -(bit.rshift(r, 8)) % 977, name = "item-" .. i,
                 tags = ({ { "a", "b", "c" }, { "rare" }, { "a", "quest" }, {} })[i % 4 + 1],
                 hp = r % 101, alive = r % 5 ~= 0 }
      end
      box.begin()
      for i = 1, n do
        sp:replace { string.format("entity:%06d", i), item(i) }
        if i % 10000 == 0 then box.commit() box.begin() end
      end
      box.commit()
      t0 = clock.time()
      box.snapshot()
      print(string.format("snapshot %.6f", clock.time() - t0))
    else
      print(string.format("recovery %.6f count %d", recovered, box.space.game:count()))
    end
    os.exit(0)
  ]])
  f:close()
  local p = io.popen(("cd %s && tarantool %s fill %s %d 2>&1"):format(q(tdir), q(script), q(tdir), N))
  local o1 = p:read("a")
  p:close()
  local snap = tonumber(o1:match("snapshot ([%d.]+)"))
  local t0 = now()
  p = io.popen(("cd %s && tarantool %s recover %s %d 2>&1"):format(q(tdir), q(script), q(tdir), N))
  local o2 = p:read("a")
  p:close()
  local wall = now() - t0
  local rec = tonumber(o2:match("recovery ([%d.]+)"))
  local snapfile
  local lp = io.popen("ls " .. q(tdir) .. "/*.snap 2>/dev/null | tail -1")
  snapfile = lp:read("l")
  lp:close()
  if snap and rec then
    row("tarantool snapshot/recovery", snap, rec, snapfile and size_of(snapfile),
      ("process restart %.2f s"):format(wall))
  else
    print("tarantool run failed:\n" .. o1 .. o2)
  end
else
  print("skipped: tarantool (not installed)")
end

-- ---------------------------------------------------------------------------
local base = rows[2]  -- instate level 1
print()
print(("%-28s %10s %10s %12s %9s %9s %9s  %s"):format("", "dump s", "load s", "bytes",
  "dump/l1", "load/l1", "size/l1", ""))
for _, r in ipairs(rows) do
  print(("%-28s %10.3f %10.3f %12s %9.2f %9.2f %9s  %s"):format(r.name, r.dump, r.load,
    r.bytes or "?", r.dump / base.dump, r.load / base.load,
    r.bytes and ("%.2f"):format(r.bytes / base.bytes) or "?", r.note))
end
sh("rm -rf " .. q(dir))
