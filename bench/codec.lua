--- Codec benchmark: instate.encode/decode against lua-cjson and
-- lua-messagepack (pure Lua) on a "game state", on any of Lua 5.1, 5.2, 5.3,
-- 5.4 and LuaJIT 2.1 (bench_compat.lua holds what differs).
--
-- The state is N variables, each a small table such as
--   {x = 1.5, y = -3, name = "item-123", tags = {"a", "b", "c"}, hp = 100, alive = true}
-- with varied values from a fixed seed. Two shapes are timed:
--   whole:   the N variables as one array, one encode/decode call
--   per-var: N calls, one per variable (what saving every variable does)
-- Rounds interleave instate, cjson and MessagePack in this process; the
-- medians are shown with MB/s (of each codec's own output) and speed ratios
-- (> 1: instate is faster). The values come from a generator that gives the
-- same ones on every Lua. The floor is the
-- time plain Lua takes to build the same tables from ready values, which no
-- decoder can beat.
--
-- Canonical encoding (opts.canonical: every map sorted) is timed on the same
-- shapes, with its cost over plain encoding; "with references" adds one
-- shared table to the whole state, which takes the second, id-ordering pass.
--
-- Run: make bench   (make bench LUA=luajit, make bench-luas: every Lua; or
-- LUA_CPATH='build/lib/?.so;;' LUA_PATH='lua/?.lua;lua/?/init.lua;;' lua5.4 bench/codec.lua)
package.path = (arg and arg[0] and arg[0]:match("^(.*)/") or "bench") .. "/?.lua;" .. package.path
local instate = require "instate"
local bc = require "bench_compat"
local ok_cjson, cjson = pcall(require, "cjson")
if not ok_cjson then
  io.stderr:write("lua-cjson is not installed (apt-get install lua-cjson)\n")
  os.exit(1)
end
local mp, mp_err = bc.messagepack()
if not mp then
  io.stderr:write(mp_err, "\n")
  os.exit(1)
end

local clock = os.clock
local tags_pool = {"a", "b", "c", "fire", "ice", "rare", "quest", "npc", "boss", "loot"}

-- Deterministic values: the same state on every run and machine.
local function make_values(n)
  local random = bc.random
  bc.randomseed(12345)
  local v = {xs = {}, ys = {}, names = {}, tags = {}, hps = {}, alive = {}}
  for i = 1, n do
    v.xs[i] = random(-100000, 100000) / 64 + random() -- a mix of exact and long floats
    v.ys[i] = random(-5000, 5000)
    v.names[i] = "item-" .. random(1, 1000000)
    local t = {}
    for k = 1, random(0, 4) do t[k] = tags_pool[random(1, #tags_pool)] end
    v.tags[i] = t
    v.hps[i] = random(0, 100000)
    v.alive[i] = random() < 0.8
  end
  return v
end

-- The floor: building the state in plain Lua from ready values.
local function build(v, n)
  local xs, ys, names, tags, hps, alive = v.xs, v.ys, v.names, v.tags, v.hps, v.alive
  local state = {}
  for i = 1, n do
    local src = tags[i]
    local t = {}
    for k = 1, #src do t[k] = src[k] end
    state[i] = {x = xs[i], y = ys[i], name = names[i], tags = t, hp = hps[i], alive = alive[i]}
  end
  return state
end

local function median(t)
  table.sort(t)
  local n = #t
  local h = bc.idiv2(n)
  if n % 2 == 1 then return t[h + 1] end
  return (t[h] + t[h + 1]) / 2
end

local function time(fn, ...)
  collectgarbage("collect")
  local t0 = clock()
  local r = fn(...)
  return clock() - t0, r
end

local function whole_enc(enc, state) return enc(state) end
local function whole_dec(dec, s) return dec(s) end
local function per_enc(enc, state)
  local out, bytes = {}, 0
  for i = 1, #state do
    local s = enc(state[i]); out[i] = s; bytes = bytes + #s
  end
  out.bytes = bytes
  return out
end
local function per_dec(dec, list)
  local r
  for i = 1, #list do r = dec(list[i]) end
  return r
end

local function row(fmt, ...) io.write(string.format(fmt, ...), "\n") end

local function run(n, rounds)
  local v = make_values(n)
  local state = build(v, n)
  local samples = {}
  local function add(k, t) samples[k] = samples[k] or {}; table.insert(samples[k], t) end
  local sizes = {}
  -- sanity: instate round-trips exactly
  local back = instate.decode(instate.encode(state))
  assert(#back == n and back[n].name == state[n].name and back[n].x == state[n].x)
  back = mp.unpack(mp.pack(state))
  assert(#back == n and back[n].name == state[n].name and back[n].x == state[n].x)

  local canon_opts = {canonical = true}
  local function canon(x) return instate.encode(x, nil, canon_opts) end
  -- the same state plus one reference: GRAPH, and canonical pass 2
  local shared = {}
  for i = 1, n do shared[i] = state[i] end
  shared[n + 1] = shared[1]
  local back2 = instate.decode(canon(shared))
  assert(back2[n + 1] == back2[1] and canon(back2) == canon(shared))
  assert(canon(instate.decode(canon(state))) == canon(state))

  sizes.r = #instate.encode(shared)
  -- The checks' decoded copies go before timing: kept alive, they doubled
  -- both codecs' decode times on LuaJIT (a larger heap for the collector).
  back, back2 = nil, nil
  -- canonical against plain: timed back to back, in alternating order
  local canon_pairs = {
    {"i.cenc", "i.enc2", whole_enc, state},
    {"i.cpenc", "i.penc2", per_enc, state},
    {"i.crenc", "i.renc", whole_enc, shared},
  }

  for round = 1, rounds do
    local t, s
    t = time(build, v, n); add("floor", t)
    for _, p in ipairs(canon_pairs) do
      local function c() add(p[1], (time(p[3], canon, p[4]))) end
      local function e() add(p[2], (time(p[3], instate.encode, p[4]))) end
      if round % 2 == 0 then c(); e() else e(); c() end
    end
    t, s = time(whole_enc, instate.encode, state); add("i.enc", t); sizes.i = #s
    t = time(whole_dec, instate.decode, s); add("i.dec", t)
    t, s = time(whole_enc, cjson.encode, state); add("c.enc", t); sizes.c = #s
    t = time(whole_dec, cjson.decode, s); add("c.dec", t)
    t, s = time(per_enc, instate.encode, state); add("i.penc", t); sizes.ip = s.bytes
    t = time(per_dec, instate.decode, s); add("i.pdec", t)
    t, s = time(per_enc, cjson.encode, state); add("c.penc", t); sizes.cp = s.bytes
    t = time(per_dec, cjson.decode, s); add("c.pdec", t)
    t, s = time(whole_enc, mp.pack, state); add("m.enc", t); sizes.m = #s
    t = time(whole_dec, mp.unpack, s); add("m.dec", t)
    t, s = time(per_enc, mp.pack, state); add("m.penc", t); sizes.mp = s.bytes
    t = time(per_dec, mp.unpack, s); add("m.pdec", t)
  end
  local m = {}
  for k, list in pairs(samples) do m[k] = median(list) end
  local function mbs(bytes, t) return bytes / 1e6 / t end

  row("N = %d (%d rounds, medians; as one value: instate %.2f MB, cjson %.2f MB, MessagePack %.2f MB)",
    n, rounds, sizes.i / 1e6, sizes.c / 1e6, sizes.m / 1e6)
  row("  %-26s %10s %7s %10s %7s %10s %7s %9s %9s", "", "instate ms", "MB/s", "cjson ms", "MB/s",
    "MsgPack ms", "MB/s", "vs cjson", "vs MsgPk")
  local function line(what, ik, ck, mk, si, sc, sm)
    local fmt = "  %-26s %10.1f %7.1f %10.1f %7.1f"
    local args = {what, m[ik] * 1e3, mbs(si, m[ik]), m[ck] * 1e3, mbs(sc, m[ck])}
    if mk then
      fmt = fmt .. " %10.1f %7.1f %8.2fx %8.2fx"
      args[#args + 1] = m[mk] * 1e3
      args[#args + 1] = mbs(sm, m[mk])
      args[#args + 1] = m[ck] / m[ik]
      args[#args + 1] = m[mk] / m[ik]
    else
      fmt = fmt .. " %10s %7s %8.2fx"
      args[#args + 1] = ""
      args[#args + 1] = ""
      args[#args + 1] = m[ck] / m[ik]
    end
    row(fmt, bc.unpack(args))
  end
  line("encode, whole state", "i.enc", "c.enc", "m.enc", sizes.i, sizes.c, sizes.m)
  line("decode, whole state", "i.dec", "c.dec", "m.dec", sizes.i, sizes.c, sizes.m)
  line("encode, per variable", "i.penc", "c.penc", "m.penc", sizes.ip, sizes.cp, sizes.mp)
  line("decode, per variable", "i.pdec", "c.pdec", "m.pdec", sizes.ip, sizes.cp, sizes.mp)
  line("encode canonical, whole", "i.cenc", "c.enc", nil, sizes.i, sizes.c)
  line("encode canonical, per var", "i.cpenc", "c.penc", nil, sizes.ip, sizes.cp)
  row("  %-26s %10.1f %7.1f", "encode, with references", m["i.renc"] * 1e3, mbs(sizes.r, m["i.renc"]))
  row("  %-26s %10.1f %7.1f", "  canonical (2 passes)", m["i.crenc"] * 1e3, mbs(sizes.r, m["i.crenc"]))
  row("  %-26s %10.1f", "floor: build in Lua", m.floor * 1e3)
  row("  decode / floor: whole %.2fx, per variable %.2fx (target <= 1.5x)",
    m["i.dec"] / m.floor, m["i.pdec"] / m.floor)
  row("  canonical / plain encode (back to back): whole %+.0f%%, per variable %+.0f%%, with references %+.0f%%",
    (m["i.cenc"] / m["i.enc2"] - 1) * 100, (m["i.cpenc"] / m["i.penc2"] - 1) * 100,
    (m["i.crenc"] / m["i.renc"] - 1) * 100)
  row("")
end

local function load_now()
  local p = io.popen("uptime")
  local out = p:read(bc.read_all)
  p:close()
  return (out:gsub("^%s+", ""):gsub("%s+$", ""))
end

io.write(string.format("instate %s codec vs lua-cjson %s and lua-messagepack %s (%s)\n",
  instate._VERSION or "?", cjson._VERSION or "?", mp._VERSION or "?", jit and jit.version or _VERSION))
io.write("load before: ", load_now(), "\n\n")
run(10000, 9)
run(100000, 5)
io.write("load after:  ", load_now(), "\n")
