--- Store benchmark: instate against the raw LMDB floor, SQLite and Tarantool
-- on the same game-state records.
--
-- Run by `make bench` (LUA_PATH/LUA_CPATH set, INSTATE_BUILD_DIR=<builddir>).
-- Environment: INSTATE_BENCH_N (records, default 100000),
-- INSTATE_BENCH_COMMITS (single-record durable commits, default 200),
-- INSTATE_BENCH_ONLY=instate to run instate alone (for profiling).
--
-- Workloads, all durable (sync "full" and its equivalents):
--   put     every record in one write transaction
--   get     every key once, in one read snapshot (values decoded)
--   get1    every key once, each read on its own (instate and SQLite only)
--   scan    one ordered pass over every record (values decoded)
--   update  every 100th record rewritten in one write transaction
--   commit  single-record write transactions, each durable
--   put_raw, get_raw  put and get of pre-encoded bytes (instate without the codec)
local instate = require "instate"

local N = tonumber(os.getenv("INSTATE_BENCH_N")) or 100000
local COMMITS = tonumber(os.getenv("INSTATE_BENCH_COMMITS")) or 200
local ONLY = os.getenv("INSTATE_BENCH_ONLY")
local BUILD = os.getenv("INSTATE_BUILD_DIR") or "build"
local STEP = 100

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/instate-bench.XXXXXX")
  local dir = p:read("l")
  p:close()
  assert(dir and #dir > 0, "mktemp failed")
  return dir
end

local clock = os.clock
do
  -- wall time matters for fsync-bound work: prefer a monotonic clock
  local ok, socket = pcall(require, "socket")
  if ok and socket.gettime then clock = socket.gettime end
end
if clock == os.clock then
  -- os.clock is CPU time, blind to fsync; date +%s%N is wall time at ~ms cost,
  -- negligible against the runs it brackets.
  clock = function()
    local p = io.popen("date +%s%N")
    local ns = tonumber(p:read("l"))
    p:close()
    return ns / 1e9
  end
end

-- Deterministic game-state data, written to run unchanged on LuaJIT
-- (Tarantool) too: no integer division, no string.pack.
local GEN = [[
local N = ...
local function key(i) return string.format("item:%06d", (i * 7919) % N) end
local function value(i)
  local v = { x = (i % 1000) / 4 + 0.5, y = -(i % 97), name = "item-" .. i,
              tags = { "a", "b", "c" }, hp = 100 - i % 100, alive = i % 3 ~= 0 }
  local kind = i % 4
  if kind == 1 then
    v.tags = { "rare", "weapon" }
    v.dmg = i % 50 + 0.25
  elseif kind == 2 then
    v.inventory = { { id = i, n = 2 }, { id = i + 1, n = 1, note = "stack" } }
  elseif kind == 3 then
    v.pos = { x = i * 0.5, y = -i * 0.25, z = 3 }
    v.tags = nil
  end
  return v
end
return key, value
]]

local key_of, value_of = assert(load(GEN))(N)
local keys, values = {}, {}
for i = 1, N do
  keys[i] = key_of(i)
  values[i] = value_of(i)
end
-- the 1% update writes these
local updated = {}
for i = 1, N, STEP do
  local v = value_of(i)
  v.hp = v.hp - 1
  updated[i] = v
end

local results = {} -- results[workload][engine] = { seconds, ops }
local function record(workload, engine, seconds, ops)
  results[workload] = results[workload] or {}
  results[workload][engine] = { seconds = seconds, ops = ops }
end

local function timed(f)
  -- garbage left by the previous workload must not be collected on this
  -- one's clock
  collectgarbage()
  collectgarbage()
  local t0 = clock()
  local ops = f()
  return clock() - t0, ops
end

-- ---------------------------------------------------------------------------
-- instate
-- ---------------------------------------------------------------------------
local function bench_instate(dir)
  local store = assert(instate.open(dir .. "/instate"))
  local bytes = 0

  record("put", "instate", timed(function()
    assert(store:transaction(function(tx)
      local ns = tx:namespace("bench")
      for i = 1, N do ns:set(keys[i], values[i]) end
      return true
    end))
    return N
  end))

  local ns = store:namespace("bench")
  record("get", "instate", timed(function()
    return store:snapshot(function(tx)
      local sns = tx:namespace("bench")
      local n = 0
      for i = 1, N do
        if sns:get(keys[i]) then n = n + 1 end
      end
      return n
    end)
  end))

  record("get1", "instate", timed(function()
    local n = 0
    for i = 1, N do
      if ns:get(keys[i]) then n = n + 1 end
    end
    return n
  end))

  record("scan", "instate", timed(function()
    local n = 0
    for _, v in ns:pairs() do
      if v then n = n + 1 end
    end
    return n
  end))

  record("update", "instate", timed(function()
    return assert(store:transaction(function(tx)
      local uns = tx:namespace("bench")
      local n = 0
      for i = 1, N, STEP do
        uns:set(keys[i], updated[i])
        n = n + 1
      end
      return n
    end))
  end))

  record("commit", "instate", timed(function()
    for i = 1, COMMITS do assert(ns:set(keys[i], values[i])) end
    return COMMITS
  end))

  assert(ns:count() == N, "instate lost records")

  -- The same store work without the codec: what the binding and the core
  -- cost over raw LMDB, apart from building and reading Lua tables.
  local encoded = {}
  for i = 1, N do encoded[i] = instate.encode(values[i]) end
  record("put_raw", "instate", timed(function()
    assert(store:transaction(function(tx)
      local rns = tx:namespace("raw")
      for i = 1, N do rns:set_encoded(keys[i], encoded[i]) end
      return true
    end))
    return N
  end))
  record("get_raw", "instate", timed(function()
    return store:snapshot(function(tx)
      local rns = tx:namespace("raw")
      local n = 0
      for i = 1, N do
        if rns:get_encoded(keys[i]) then n = n + 1 end
      end
      return n
    end)
  end))
  -- The codec alone, no store: how much of put and get it is, and what a
  -- store on the floor would take with this codec.
  local encode, decode = instate.encode, instate.decode
  record("encode", "instate", timed(function()
    for i = 1, N do encode(values[i]) end
    return N
  end))
  record("decode", "instate", timed(function()
    for i = 1, N do decode(encoded[i]) end
    return N
  end))
  bytes = store:stats().used_bytes
  store:close()
  return bytes
end

-- ---------------------------------------------------------------------------
-- the raw LMDB floor: the same encoded bytes, straight into LMDB from C
-- ---------------------------------------------------------------------------
local function bench_floor(dir)
  local exe = BUILD .. "/bench/lmdb_floor"
  local f = io.open(exe)
  if not f then return "not built (" .. exe .. ")" end
  f:close()
  local recfile = dir .. "/records.bin"
  local out = assert(io.open(recfile, "wb"))
  local chunk = {}
  for i = 1, N do
    chunk[#chunk + 1] = string.pack("<s4s4", keys[i], instate.encode(values[i]))
    if #chunk == 1000 then out:write(table.concat(chunk)); chunk = {} end
  end
  out:write(table.concat(chunk))
  out:close()
  local db = dir .. "/floor"
  local function run(mode, arg)
    local cmd = table.concat({ sh_quote(exe), mode, sh_quote(db), sh_quote(recfile),
                               arg and tostring(arg) or "" }, " ")
    local p = io.popen(cmd)
    local line = p:read("a")
    local ok = p:close()
    local s, n = line:match("seconds=([%d.]+) ops=(%d+)")
    assert(ok and s, "lmdb_floor " .. mode .. " failed: " .. line)
    record(mode, "lmdb floor", tonumber(s), tonumber(n))
  end
  run("put")
  run("get")
  run("scan")
  run("update", STEP)
  run("commit", COMMITS)
  results.put_raw["lmdb floor"] = results.put["lmdb floor"]
  results.get_raw["lmdb floor"] = results.get["lmdb floor"]
end

-- ---------------------------------------------------------------------------
-- SQLite through LuaSQL (WAL, synchronous FULL; values as cjson text, since
-- LuaSQL has no bound parameters and string literals cannot hold NUL bytes)
-- ---------------------------------------------------------------------------
local function bench_sqlite(dir)
  local ok, driver = pcall(require, "luasql.sqlite3")
  if not ok then return "luasql.sqlite3 not installed" end
  local ok2, cjson = pcall(require, "cjson")
  if not ok2 then return "cjson not installed" end
  local env = driver.sqlite3()
  local con = assert(env:connect(dir .. "/sqlite.db"))
  local mode = con:execute("PRAGMA journal_mode=WAL")
  assert(mode:fetch() == "wal")
  mode:close()
  assert(con:execute("PRAGMA synchronous=FULL"))
  assert(con:execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID"))
  local escape = function(s) return con:escape(s) end
  local function put(i, v)
    assert(con:execute("INSERT OR REPLACE INTO kv VALUES ('" .. escape(keys[i]) .. "', '"
      .. escape(cjson.encode(v)) .. "')"))
  end

  record("put", "sqlite", timed(function()
    con:setautocommit(false)
    for i = 1, N do put(i, values[i]) end
    assert(con:commit())
    con:setautocommit(true)
    return N
  end))

  local function get_all()
    local n = 0
    for i = 1, N do
      local cur = assert(con:execute("SELECT v FROM kv WHERE k = '" .. escape(keys[i]) .. "'"))
      local v = cur:fetch()
      cur:close()
      if v and cjson.decode(v) then n = n + 1 end
    end
    return n
  end
  record("get", "sqlite", timed(function()
    con:setautocommit(false)
    local n = get_all()
    con:commit()
    con:setautocommit(true)
    return n
  end))
  record("get1", "sqlite", timed(get_all))

  record("scan", "sqlite", timed(function()
    local cur = assert(con:execute("SELECT k, v FROM kv ORDER BY k"))
    local n = 0
    local k, v = cur:fetch()
    while k do
      if cjson.decode(v) then n = n + 1 end
      k, v = cur:fetch()
    end
    cur:close()
    return n
  end))

  record("update", "sqlite", timed(function()
    con:setautocommit(false)
    local n = 0
    for i = 1, N, STEP do put(i, updated[i]); n = n + 1 end
    assert(con:commit())
    con:setautocommit(true)
    return n
  end))

  record("commit", "sqlite", timed(function()
    for i = 1, COMMITS do put(i, values[i]) end
    return COMMITS
  end))
  con:close()
  env:close()
end

-- ---------------------------------------------------------------------------
-- Tarantool (memtx, WAL in fsync mode so a commit is durable as instate's)
-- ---------------------------------------------------------------------------
local TARANTOOL_SCRIPT = [=[
local N, COMMITS, STEP, work = tonumber(arg[1]), tonumber(arg[2]), tonumber(arg[3]), arg[4]
box.cfg { work_dir = work, wal_mode = "fsync", log_level = 1, memtx_memory = 1024 * 1024 * 1024 }
local clock = require("clock").monotonic
local key_of, value_of = loadstring(arg[5])(N)
local keys, values, updated = {}, {}, {}
for i = 1, N do keys[i] = key_of(i); values[i] = value_of(i) end
for i = 1, N, STEP do local v = value_of(i); v.hp = v.hp - 1; updated[i] = v end
local s = box.schema.space.create("kv", { if_not_exists = true })
s:create_index("pk", { type = "TREE", parts = { 1, "string" }, if_not_exists = true })
local function report(name, t0, n) print(string.format("%s %.6f %d", name, clock() - t0, n)) end

local t0 = clock()
box.begin()
for i = 1, N do s:replace({ keys[i], values[i] }) end
box.commit()
report("put", t0, N)

t0 = clock()
local n = 0
for i = 1, N do local t = s:get(keys[i]); if t and t[2] then n = n + 1 end end
report("get", t0, n)

t0 = clock()
n = 0
for _, t in s:pairs() do if t[2] then n = n + 1 end end
report("scan", t0, n)

t0 = clock()
n = 0
box.begin()
for i = 1, N, STEP do s:replace({ keys[i], updated[i] }); n = n + 1 end
box.commit()
report("update", t0, n)

t0 = clock()
for i = 1, COMMITS do s:replace({ keys[i], values[i] }) end
report("commit", t0, COMMITS)
os.exit(0)
]=]

local function bench_tarantool(dir)
  if not os.execute("command -v tarantool >/dev/null 2>&1") then
    return "tarantool not installed"
  end
  local work = dir .. "/tarantool"
  os.execute("mkdir -p " .. sh_quote(work))
  local script = dir .. "/tarantool_bench.lua"
  local f = assert(io.open(script, "w"))
  f:write(TARANTOOL_SCRIPT)
  f:close()
  local p = io.popen(table.concat({ "cd", sh_quote(work), "&& tarantool", sh_quote(script),
    tostring(N), tostring(COMMITS), tostring(STEP), sh_quote(work), sh_quote(GEN),
    "2>&1" }, " "))
  local out = p:read("a")
  p:close()
  local any = false
  for name, s, n in out:gmatch("(%a+) ([%d.]+) (%d+)") do
    record(name, "tarantool", tonumber(s), tonumber(n))
    any = true
  end
  if not any then return "tarantool failed: " .. out:sub(1, 300) end
end

-- ---------------------------------------------------------------------------
-- run and report
-- ---------------------------------------------------------------------------
local dir = tmpdir()
local notes = {}
local ok, err = pcall(function()
  local used = bench_instate(dir)
  notes[#notes + 1] = ("instate store size: %.1f MiB used"):format(used / 1048576)
  if ONLY ~= "instate" then
    for _, b in ipairs({ { "lmdb floor", bench_floor }, { "sqlite", bench_sqlite },
                         { "tarantool", bench_tarantool } }) do
      local note = b[2](dir)
      if note then notes[#notes + 1] = b[1] .. ": skipped, " .. note end
    end
  end
end)
os.execute("rm -rf " .. sh_quote(dir))
if not ok then error(err, 0) end

local ENGINES = { "instate", "lmdb floor", "sqlite", "tarantool" }
local WORKLOADS = {
  { "put", ("batch put, %d records, 1 txn"):format(N) },
  { "get", "get each key, 1 snapshot" },
  { "get1", "get each key, 1 read each" },
  { "scan", "full ordered scan" },
  { "update", ("1%% update, %d records, 1 txn"):format(N // STEP) },
  { "commit", ("durable single-record commits x%d"):format(COMMITS) },
  { "put_raw", "batch put, pre-encoded (set_encoded)" },
  { "get_raw", "get each key, bytes only (get_encoded)" },
  { "encode", "encode each value, no store" },
  { "decode", "decode each value, no store" },
}

print(("instate store benchmark: N = %d, %s"):format(N, _VERSION))
print(("%-40s %-11s %10s %12s %10s"):format("workload", "engine", "seconds", "ops/s",
  "vs instate"))
print(string.rep("-", 87))
for _, w in ipairs(WORKLOADS) do
  local row = results[w[1]] or {}
  local base = row.instate
  for _, e in ipairs(ENGINES) do
    local r = row[e]
    if r then
      local ratio = base and (r.seconds / base.seconds) or 0
      print(("%-40s %-11s %10.4f %12.0f %9.2fx"):format(w[2], e, r.seconds,
        r.ops / math.max(r.seconds, 1e-9), ratio))
    end
  end
end
print("('vs instate' is the engine's time over instate's: above 1 means instate is faster)")

local function target(desc, pass)
  if pass == nil then
    print(("target: %-58s n/a"):format(desc))
  else
    print(("target: %-58s %s"):format(desc, pass and "met" or "MISSED"))
  end
end
local function ratio(w, a, b)
  local r = results[w]
  if r and r[a] and r[b] then return r[a].seconds / r[b].seconds end
end
local rp, rg = ratio("put", "instate", "lmdb floor"), ratio("get", "instate", "lmdb floor")
local rs, rt = ratio("put", "sqlite", "instate"), ratio("put", "tarantool", "instate")
target(("batch put within 2x of the LMDB floor (%.2fx)"):format(rp or 0), rp and rp <= 2)
target(("get within 2x of the LMDB floor (%.2fx)"):format(rg or 0), rg and rg <= 2)
local rpr, rgr = ratio("put_raw", "instate", "lmdb floor"), ratio("get_raw", "instate", "lmdb floor")
print(("without the codec: put %.2fx, get %.2fx the LMDB floor"):format(rpr or 0, rgr or 0))
-- The floor stores bytes encoded beforehand and reads bytes it never
-- decodes; a Lua store has to do both. Floor plus the codec's own time is
-- the fastest any store could be with this codec.
do
  local r = results
  if r.put and r.put["lmdb floor"] and r.encode and r.decode then
    local fp = r.put["lmdb floor"].seconds + r.encode.instate.seconds
    local fg = r.get["lmdb floor"].seconds + r.decode.instate.seconds
    print(("floor + codec: put %.4f s (instate %.2fx it), get %.4f s (instate %.2fx it)")
      :format(fp, r.put.instate.seconds / fp, fg, r.get.instate.seconds / fg))
    print(("decoding alone takes %.2fx the floor's whole get"):format(
      r.decode.instate.seconds / r.get["lmdb floor"].seconds))
  end
end
target(("batch put >= 10x faster than sqlite (%.1fx)"):format(rs or 0), rs and rs >= 10)
target(("batch put faster than tarantool (%.2fx)"):format(rt or 0), rt and rt > 1)
for _, n in ipairs(notes) do print("note: " .. n) end
