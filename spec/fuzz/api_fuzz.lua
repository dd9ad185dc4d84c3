--- A seeded random fuzzer of instate's public Lua API.
--
-- Calls every public function (instate.open, store, namespace, transaction,
-- snapshot and iterator methods, encode/decode, dump/load/dump_info, the
-- defstate layer) with random arguments of random types, on open and closed
-- handles, from update/validate/migrate callbacks, from __gc finalizers and
-- from coroutines that are closed or abandoned in the middle of a
-- transaction, through two handles on one store. After every call it checks:
--
-- * a result is the documented value, or `nil, msg, code` with a string
--   message and a code of the contract's list;
-- * a raise carries a string message that is not a bare code and not
--   "table: 0x..." (a table raised by a callback comes back as that table);
-- * a model of the committed state (a shadow table of what each successful
--   write committed) equals what a fresh read returns;
-- * the revision grows by exactly one per committed write transaction, and
--   both handles of the store agree on it.
--
-- Run:   lua5.4 spec/fuzz/api_fuzz.lua        (module paths as in the specs)
-- Env:   INSTATE_FUZZ_SEED     the seed (default: time-based), printed
--        INSTATE_FUZZ_SECONDS  how long to run (default 10)
--        INSTATE_FUZZ_CALLS    stop after this many calls (to replay a prefix)
--        INSTATE_FUZZ_KNOWN    comma-separated known-bug kinds that are
--                              counted and reported instead of failing
--                              (empty: every invariant is strict)
--        INSTATE_FUZZ_LOG      a file that receives every call as it is made
--                              (line-buffered: survives a crash)
--        INSTATE_FUZZ_VERBOSE  print every call
-- It prints the seed and the call count; on a broken invariant it prints the
-- seed, the failure and the calls that led to it, and exits with status 1.
local instate = require "instate"
local compat = require "instate.compat"
local math_type, unpack = compat.math_type, compat.unpack

local M = {}

local CODES = {
  IO = true, NOSPACE = true, MAP_FULL = true, READONLY = true, CORRUPT = true,
  VERSION = true, BUSY = true, NOTFOUND = true, LIMIT = true, ACCESS = true,
  LOCKED = true, CONFLICT = true,
}

-- Known-bug kinds (each names one defect of the contract, so a short run can
-- list them without failing on them):
M.KINDS = {
  ["gc-encode"] = "a finalizer that encodes corrupts the encoding in progress",
  ["bare-code"] = "a raise carries a bare upper-case code instead of a message",
  ["join"] = "a store-level write inside this coroutine's own write transaction joins it",
  ["coclose"] = "coroutine.close does not abort the transaction the coroutine is suspended in",
  ["table-error"] = "a table raised by a callback comes back as 'table: 0x...'",
  ["leaked-tx"] = "the transaction of an unreachable coroutine stays open after a full collection",
}

---------------------------------------------------------------------------
-- Random numbers, independent of math.random: xorshift64 where integers
-- are 64-bit (5.3, 5.4; compiled from a string, since its operators do not
-- parse before 5.3), Park-Miller's 31-bit generator elsewhere (exact in
-- doubles). A seed replays a run on the same Lua.
---------------------------------------------------------------------------
local rnd, reseed
if compat.integers then
  rnd, reseed = assert(load([[
    local rs = 1
    local function rnd(n) -- 1..n
      rs = rs ~ (rs << 13); rs = rs ~ (rs >> 7); rs = rs ~ (rs << 17)
      return (rs >> 1) % n + 1
    end
    local function reseed(seed)
      rs = seed ~ 0x5DEECE66D
      if rs == 0 then rs = 1 end
    end
    return rnd, reseed
  ]], "=xorshift64"))()
else
  local rs = 1
  rnd = function(n) -- 1..n
    rs = rs * 16807 % 2147483647
    return rs % n + 1
  end
  reseed = function(seed) rs = seed % 2147483646 + 1 end
end
local function chance(p) return rnd(1000000) <= p * 1000000 end
local function pick(t) return t[rnd(#t)] end

---------------------------------------------------------------------------
-- Values
---------------------------------------------------------------------------
-- (-0.0 made at run time: 5.1 would fold the literal into the constant 0)
local FLOATS = { 0.5, -1 / math.huge, 0.0, 1 / 0, -1 / 0, 0 / 0, 1e308, -2.5e-300, 3.0 }
-- the widest integers of this Lua: 64-bit on 5.3/5.4; elsewhere 2^52, so
-- that incr's sums stay within the +-2^53 such a Lua reads back exactly
-- (what an integral number beyond becomes is the codec's to settle, and
-- spec/06-numbers_spec.lua's to test: README, Lua versions)
local WIDE = compat.integers and 2 ^ 53 or 2 ^ 52
local INTS = { 0, 1, -1, 42, 255, 65536, -129, compat.integers and math.maxinteger or WIDE,
  compat.integers and math.mininteger or -WIDE, WIDE }

local function rstring()
  local r = rnd(6)
  if r == 1 then return "" end
  if r == 2 then return string.rep("x", rnd(3000)) end
  local n = rnd(24)
  local b = {}
  for i = 1, n do b[i] = string.char(rnd(256) - 1) end
  return table.concat(b)
end

local function a_function() return "a function" end
local unstorable = { a_function, coroutine.create(function() end), io.stdout }

-- A random storable value (or, with `bad`, one that hides something
-- unstorable somewhere).
local function rvalue(depth, bad, pool)
  depth = depth or 0
  pool = pool or {}
  local r = rnd(depth > 2 and 6 or 9)
  if r == 1 then return nil end
  if r == 2 then return rnd(2) == 1 end
  if r == 3 then return chance(0.5) and rnd(1000) - 500 or pick(INTS) end
  if r == 4 then return pick(FLOATS) end
  if r == 5 or r == 6 then return rstring() end
  if bad and chance(0.3) then return pick(unstorable) end
  if #pool > 0 and chance(0.3) then return pick(pool) end -- shared sub-table or cycle
  local t = {}
  pool[#pool + 1] = t
  for i = 1, rnd(5) - 1 do t[i] = rvalue(depth + 1, bad, pool) end
  for _ = 1, rnd(4) - 1 do
    local k = rnd(3) == 1 and rnd(100) or rstring()
    if k == "" then k = "e" end
    t[k] = rvalue(depth + 1, bad, pool)
  end
  if chance(0.2) then t[pick({ true, 2.5, math.mininteger })] = rvalue(depth + 1, bad, pool) end
  return t
end

-- A random argument of any type.
local function rany()
  local r = rnd(8)
  if r <= 5 then return rvalue(1, true) end
  if r == 6 then return pick(unstorable) end
  if r == 7 then return {} end
  return setmetatable({}, { __index = function() error("metatable trap") end })
end

-- Deep equality with the contract's exactness: integer vs float, NaN, -0.0,
-- and the shape of shared references.
local function same(a, b, seen)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if math_type(a) ~= math_type(b) then return false end
    if a ~= a then return b ~= b end
    if a == 0 and math_type(a) == "float" then return 1 / a == 1 / b end
    return a == b
  end
  if type(a) ~= "table" then return a == b end
  seen = seen or {}
  if seen[a] then return seen[a] == b end
  seen[a] = b
  for k, v in pairs(a) do
    local bv = rawget(b, k)
    if bv == nil or not same(v, bv, seen) then return false end
  end
  for k in pairs(b) do if rawget(a, k) == nil then return false end end
  return true
end

-- A copy keeping shared references (the model keeps what was written).
local function copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  for k, x in pairs(v) do t[copy(k, seen)] = copy(x, seen) end
  return t
end

local function storable(v, seen)
  local t = type(v)
  if t == "function" or t == "thread" or t == "userdata" then return false end
  if t ~= "table" then return true end
  seen = seen or {}
  if seen[v] then return true end
  seen[v] = true
  if getmetatable(v) then return false end -- our traps: keep them out of the model
  for k, x in pairs(v) do
    if k ~= k or not storable(k, seen) or not storable(x, seen) then return false end
  end
  return true
end

local function show(v)
  local t = type(v)
  if t == "string" then
    if #v > 24 then return ("%q..(%d)"):format(v:sub(1, 16), #v) end
    return (("%q"):format(v):gsub("\n", "n"))
  end
  if t == "number" then
    if v ~= v then return "nan" end
    return math_type(v) == "float" and ("%.17g"):format(v) or tostring(v)
  end
  if t == "table" then return "{..}" end
  if t == "nil" or t == "boolean" then return tostring(v) end
  return t
end

-- Bytes as hex, the first 48 of them.
local function hex(b)
  local h = b:sub(1, 48):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  return #b > 48 and h .. ".." .. #b or h
end

local function showargs(...)
  local n = select("#", ...)
  local out = {}
  for i = 1, n do out[i] = show((select(i, ...))) end
  return table.concat(out, ", ")
end

---------------------------------------------------------------------------
-- The run
---------------------------------------------------------------------------
function M.run(opts)
  local seed = opts.seed
  reseed(seed)
  for _ = 1, 10 do rnd(2) end
  -- wall-clock bound (the store's fsyncs are time too)
  local deadline = os.time() + math.max(1, math.floor((opts.seconds or 10) + 0.5))
  local max_calls = opts.max_calls or math.maxinteger or math.huge
  local known = opts.known or {}
  local logf = opts.log
  local verbose = opts.verbose

  local calls = 0
  local history = {}
  local known_hits = {}
  local FAILED = {}

  local function note(desc)
    calls = calls + 1
    local line = calls .. " " .. desc
    history[#history + 1] = line
    if #history > 4000 then for i = 2001, #history do history[i - 2000] = history[i] end; for i = 2001, 4000 do history[i] = nil end end
    if logf then logf:write(line, "\n") end
    if verbose then print(line) end
  end

  local failure -- the first broken invariant (kept: a callback's caller may swallow the raise)
  local function fail(kind, msg)
    if kind and known[kind] then
      known_hits[kind] = (known_hits[kind] or 0) + 1
      if logf then logf:write("known bug [", kind, "]: ", msg, "\n") end
      return
    end
    failure = failure or setmetatable({ kind = kind, msg = msg }, FAILED)
    error(failure, 0)
  end

  local function check(cond, kind, msg)
    if not cond then fail(kind, msg) end
    return cond
  end

  local dir = opts.dir
  -- A random path argument that stays inside dir: a random string or number
  -- would otherwise name a file relative to the working directory, or at /.
  local function rpath()
    local v = rany()
    if type(v) == "number" then v = tostring(v) end
    if type(v) ~= "string" then return v end
    return dir .. "/junk-" .. v:gsub("[/.]", "_")
  end
  local T0 = 1700000000000
  local now = T0
  instate._set_clock(now)

  -- Model of the committed state: model[ns][key] = { v = value, exp = ms|nil }
  local model = { n1 = {}, n2 = {} }
  local NSNAMES = { "n1", "n2" }
  local gmodel = {}          -- namespace "g", written only by finalizers
  local gc_commits = 0       -- commits made by finalizers (they bump the revision too)
  local gc_quiet = false     -- no finalizer writes while a check reads
  local gc_bad = 0           -- encodes inside finalizers that did not round-trip
  local path = dir .. "/store"
  local handles = {}         -- [1], [2]: two handles on one store (nil when closed)
  local closed = {}          -- closed store handles and their namespaces/iterators
  local pending              -- a transaction suspended in a coroutine
  local tables_raised = {}   -- tables our callbacks raised (identity check)

  local function live(m)
    local out = {}
    for k, r in pairs(m) do
      if not r.exp or r.exp > now then out[k] = r end
    end
    return out
  end

  -- Results: checks the shape every call must have, returns ok, results.
  local function classify(desc, ok, ...)
    local n = select("#", ...)
    if not ok then
      local err = ...
      if type(err) == "table" then
        if getmetatable(err) == FAILED then error(err, 0) end
        check(tables_raised[err], "table-error", desc .. " raised a table the test did not raise")
      else
        check(type(err) == "string", nil, desc .. " raised a " .. type(err))
        local bare = err:gsub("^.-:%d+: ", "")
        check(not bare:match("^%u[%u_]*$"), "bare-code", desc .. " raised a bare code: " .. err)
        check(not bare:find("table: 0x", 1, true), "table-error", desc .. " raised " .. err)
        check(#err > 0, nil, desc .. " raised an empty message")
      end
      return false, ...
    end
    local a, msg, code = ...
    if a == nil and n >= 2 then
      check(type(msg) == "string" and #msg > 0, nil, desc .. " returned nil with message " .. show(msg))
      check(CODES[code], nil, desc .. " returned nil, msg, " .. show(code) .. " (" .. tostring(msg) .. ")")
    end
    return true, ...
  end

  -- Calls f(...) protected, records it, checks the result's shape.
  local function call(desc, f, ...)
    if desc:find(":", 1, true) and type((...)) == "userdata" then
      note(desc .. "(" .. showargs(select(2, ...)) .. ")")
    else
      note(desc .. "(" .. showargs(...) .. ")")
    end
    return classify(desc, pcall(f, ...))
  end

  local function open_handle(i)
    local s, msg, code = instate.open(path, { sync = "none" })
    check(s, nil, ("open of handle %d failed: %s %s"):format(i, tostring(msg), tostring(code)))
    handles[i] = s
    return s
  end

  local function any_handle()
    if handles[1] and handles[2] then return handles[rnd(2)] end
    return handles[1] or handles[2]
  end

  local function revision()
    local h = any_handle()
    if not h then return nil end
    local r = h:revision()
    for i = 1, 2 do
      if handles[i] then
        check(handles[i]:revision() == r, nil, "the two handles disagree on the revision")
      end
    end
    return r
  end

  -- The revision before a call, and how far the call moved it (finalizers'
  -- own commits in between taken out).
  local function mark()
    local r = revision()
    gc_commits = 0
    return r
  end
  local function moved(r0)
    local d = revision() - r0 - gc_commits
    gc_commits = 0
    return d
  end

  ---------------------------------------------------------------------------
  -- Checking a model against a fresh read
  ---------------------------------------------------------------------------
  local function compare_ns(ns, m, where)
    local seen = {}
    local count = 0
    for k, v in ns:pairs() do
      local r = m[k]
      check(r ~= nil, nil, ("%s: key %s is in the store but not in the model"):format(where, show(k)))
      check(same(r.v, v), nil, ("%s: key %s reads %s, the model holds %s"):format(where, show(k), show(v), show(r.v)))
      seen[k] = true
      count = count + 1
      if r then
        local t = ns:ttl(k)
        local want = r.exp and (r.exp - now) / 1000 or false
        check(t == want or (want and type(t) == "number" and math.abs(t - want) < 1e-6), nil,
          ("%s: key %s has ttl %s, the model %s"):format(where, show(k), show(t), show(want)))
      end
    end
    for k in pairs(m) do
      check(seen[k], nil, ("%s: key %s is in the model but not in the store"):format(where, show(k)))
    end
    check(ns:count() == count, nil, where .. ": count() differs from the records iterated")
  end

  -- A namespace's records as a model (values and expiry) read through ns.
  local function read_view(ns)
    local m = {}
    for k, v in ns:pairs() do
      local t = ns:ttl(k)
      m[k] = { v = v, exp = t and now + t * 1000 or nil }
    end
    return m
  end

  local function check_model(why)
    local h = any_handle()
    if not h then return end
    gc_quiet = true
    note("check_model(" .. why .. ")")
    for _, name in ipairs(NSNAMES) do
      compare_ns(h:namespace(name), live(model[name]), why .. ": namespace " .. name)
    end
    compare_ns(h:namespace("g"), gmodel, why .. ": namespace g (finalizer writes)")
    gc_quiet = false
  end

  ---------------------------------------------------------------------------
  -- Random keys, namespace names, options
  ---------------------------------------------------------------------------
  local KEYS = { "a", "b", "c", "k1", "k2", "\0", "a\0b", string.rep("K", 511) }
  local function rkey()
    if chance(0.9) then return pick(KEYS), true end
    local r = rnd(6)
    if r == 1 then return "", false end
    if r == 2 then return string.rep("L", 512), false end
    if r == 3 then return nil, false end
    return rany(), false
  end

  local function rttl_opts()
    local r = rnd(10)
    if r <= 6 then return nil, nil, true end
    if r <= 8 then local t = pick({ 10, 1000 }); return { ttl = t }, t, true end
    if r == 9 then return pick({ { ttl = -1 }, { ttl = "x" }, { tll = 1 }, "ttl", { ttl = 0 } }), nil, false end
    local o = rany()
    if o == nil then return nil, nil, true end
    return o, nil, nil -- may happen to be valid (an empty table)
  end

  ---------------------------------------------------------------------------
  -- Namespace operations against a model view `m` (the committed model, or a
  -- transaction's copy). `level` is "store" (each write commits on its own)
  -- or "tx". Returns whether the model changed (a committed write).
  ---------------------------------------------------------------------------
  local ns_op -- forward

  -- A callback for ns:update: returns new_value and does random re-entrant work.
  local function update_callback(ctx, ns, key)
    local mode = rnd(12)
    return function(old)
      note(("update callback %d(%s)"):format(mode, show(old)))
      if mode == 1 then error("update callback raised") end
      if mode == 2 then local t = {}; tables_raised[t] = true; error(t) end
      if mode == 3 then return print end
      if mode == 4 and ctx.level == "store" then
        -- a store-level write from inside update's own write transaction
        local ok, r1, _, code = call("update>set", ns.set, ns, "b", 1)
        if ok and r1 == true then
          ctx.joined = true
        end
        check(not ok or r1 ~= true or code == nil, nil, "impossible")
        return old
      end
      if mode == 5 then
        call("update>get", ns.get, ns, key)
        return old
      end
      if mode == 6 then
        local v = rvalue()
        local s = instate.encode(v)
        check(same(instate.decode(s), v) or not storable(v), "gc-encode", "encode inside update does not round-trip")
        return v
      end
      if mode == 7 then collectgarbage(); return old end
      if mode == 8 then
        local h = any_handle()
        if h then call("update>transaction", h.transaction, h, function() return 1 end) end
        return old
      end
      return rvalue()
    end
  end

  local function key_present(m, key)
    local r = m[key]
    return r ~= nil and (not r.exp or r.exp > now)
  end

  ns_op = function(ctx)
    -- ctx: { ns = handle, m = model view of its namespace, level, name, valid }
    local ns, m = ctx.ns, ctx.m
    local valid = ctx.valid
    local which = rnd(18)
    local changed = false
    local key = rkey()
    -- a number is a key too (Lua's string coercion)
    local mk = type(key) == "number" and tostring(key) or key
    local kvalid = type(mk) == "string" and #mk >= 1 and #mk <= 511
    if which == 1 then
      local default = chance(0.3) and rvalue() or nil
      local ok, v = call("ns:get", ns.get, ns, key, default)
      if valid and kvalid then
        check(ok, nil, "get raised")
        local want = default
        if key_present(m, mk) then want = m[mk].v end
        check(same(want, v), nil, ("get(%s) read %s, the model holds %s"):format(show(key), show(v), show(want)))
      end
    elseif which <= 4 then
      local value = chance(0.15) and rvalue(0, true) or rvalue()
      local o, ttl, ovalid = rttl_opts()
      local ok, r = call("ns:set", ns.set, ns, key, value, o)
      if valid and kvalid and ovalid and storable(value) then
        check(ok, nil, "a valid set raised")
      end
      if ok and r == true then
        check(kvalid and ovalid ~= false and storable(value), nil,
          ("set(%s, %s, %s) of an invalid argument succeeded"):format(show(key), show(value), show(o)))
        changed = value ~= nil or key_present(m, mk)
        if value == nil then m[mk] = nil
        else m[mk] = { v = copy(value), exp = ttl and now + ttl * 1000 or nil } end
      end
    elseif which == 5 then
      local value = rvalue()
      local o, ttl = rttl_opts()
      local present = key_present(m, mk)
      local ok, r = call("ns:add", ns.add, ns, key, value, o)
      if ok and r == true then
        check(not present, nil, "add succeeded on a present key")
        m[mk] = value ~= nil and { v = copy(value), exp = ttl and now + ttl * 1000 or nil } or nil
        changed = true
      elseif ok and r == false then
        check(present, nil, "add refused an absent key " .. show(key))
      end
    elseif which == 6 then
      local present = key_present(m, mk)
      local ok, r = call("ns:delete", ns.delete, ns, key)
      if ok and (r == true or r == false) then
        check(r == present, nil, ("delete(%s) returned %s, the model says %s"):format(show(key), show(r), show(present)))
        if r then m[mk] = nil; changed = true end
      end
    elseif which == 7 then
      local ok, r = call("ns:has", ns.has, ns, key)
      if ok and valid and kvalid then
        check(r == key_present(m, mk), nil, "has(" .. show(key) .. ") disagrees with the model")
      end
    elseif which == 8 then
      local default = chance(0.5) and rvalue() or nil
      local present = key_present(m, mk)
      local old = default
      if present then old = m[mk].v end
      local seen_old
      local cb = update_callback(ctx, ns, key)
      local fn = chance(0.95) and function(o) seen_old = { o }; return cb(o) end or rany()
      local ok, r, _, code = call("ns:update", ns.update, ns, key, fn, default)
      if ctx.joined then
        ctx.joined = nil
        fail("join", "a store-level set inside update's own write transaction succeeded")
        m.b = { v = 1 } -- it joined: the model follows what was committed
        changed = ok and r ~= nil
      end
      if ok and code == nil then
        if seen_old then
          check(same(old, seen_old[1]), nil, "update passed " .. show(seen_old[1]) .. ", the model holds " .. show(old))
        end
        if r == nil then
          if present then changed = true end
          m[mk] = nil
        else
          m[mk] = { v = copy(r), exp = present and m[mk].exp or nil }
          changed = true
        end
      end
    elseif which == 9 then
      local delta = chance(0.8) and pick({ 1, -1, 5, 0.5, math.maxinteger }) or rany()
      local init = chance(0.7) and pick({ 0, 10, 0.25, math.mininteger }) or nil
      local modelled = (delta == nil or math_type(delta)) and (init == nil or math_type(init))
      local present = key_present(m, mk)
      local ok, r, _, code = call("ns:incr", ns.incr, ns, key, delta, init)
      if ok and code == nil and r ~= nil then
        check(type(r) == "number", nil, "incr returned a " .. type(r))
        local base = init or 0
        if present then base = m[mk].v end
        if modelled then
          local want = base + (delta or 1)
          check(same(want, r), nil, ("incr gave %s, the model expects %s"):format(show(r), show(want)))
        end
        m[mk] = { v = r, exp = present and m[mk].exp or nil }
        changed = true
      end
    elseif which == 10 then
      local ok, r = call("ns:ttl", ns.ttl, ns, key)
      if ok and valid and kvalid then
        local rec = key_present(m, mk) and m[mk]
        if not rec then check(r == nil, nil, "ttl of an absent key is " .. show(r))
        elseif not rec.exp then check(r == false, nil, "ttl without expiry is " .. show(r))
        else
          check(type(r) == "number" and math.abs(r - (rec.exp - now) / 1000) < 1e-6, nil,
            ("ttl(%s) is %s, the model expects %s"):format(show(key), show(r), show((rec.exp - now) / 1000)))
        end
      end
    elseif which == 11 then
      local secs = chance(0.8) and pick({ 0, 10, 1000 }) or rany()
      local present = key_present(m, mk)
      local ok, r = call("ns:expire", ns.expire, ns, key, secs)
      if ok and (r == true or r == false) then
        check(r == present, nil, "expire(" .. show(key) .. ") returned " .. show(r))
        if r then
          m[mk].exp = secs ~= 0 and now + secs * 1000 or nil
          changed = true
        end
      end
    elseif which == 12 then
      local ok, r = call("ns:count", ns.count, ns)
      if ok and valid then
        local c = 0
        for _ in pairs(live(m)) do c = c + 1 end
        check(r == c, nil, ("count is %s, the model holds %d"):format(show(r), c))
      end
    elseif which == 13 then
      if chance(0.2) then
        local livec = 0
        for _ in pairs(live(m)) do livec = livec + 1 end
        local ok, r = call("ns:clear", ns.clear, ns)
        if ok and type(r) == "number" then
          check(r >= livec, nil, ("clear removed %d, the model holds %d live records"):format(r, livec))
          for k in pairs(m) do m[k] = nil end
          changed = true
        end
      end
    elseif which == 15 then
      -- the encoded view: set_encoded / get_encoded / get_all_encoded
      -- (a record holding nil is defstate's; kv namespaces are not given one)
      local v = rvalue()
      if v == nil then v = 0 end
      local bytes = chance(0.85) and instate.encode(v) or rstring()
      if bytes == instate.encode(nil) then bytes = "\0" end
      local o, ttl, ovalid = rttl_opts()
      if chance(0.2) and ovalid then o = o or {}; o.version = pick({ 0, 1, 7, -1, 2 ^ 32 }) end
      local ok, r = call("ns:set_encoded", ns.set_encoded, ns, key, bytes, o)
      if ok and r == true then
        local back = instate.decode(bytes)
        check(back ~= nil or bytes == instate.encode(nil), nil, "set_encoded stored bytes that do not decode")
        changed = back ~= nil or key_present(m, mk)
        m[mk] = back ~= nil and { v = back, exp = ttl and now + ttl * 1000 or nil } or nil
      end
    elseif which == 16 then
      local ok, bytes = call("ns:get_encoded", ns.get_encoded, ns, key)
      if ok and valid and kvalid then
        if key_present(m, mk) then
          check(type(bytes) == "string" and same(m[mk].v, instate.decode(bytes)), nil,
            "get_encoded(" .. show(key) .. ") differs from the model")
        else
          check(bytes == nil, nil, "get_encoded of an absent key gave " .. show(bytes))
        end
      end
      local ok2, all = call("ns:get_all_encoded", ns.get_all_encoded, ns, chance(0.3) and "k" or nil, chance(0.1) and rany() or nil)
      if ok2 and valid and type(all) == "table" then
        for k, b in pairs(all) do
          local back, dmsg = instate.decode(b)
          if not (key_present(m, k) and same(m[k].v, back)) then
            fail(nil, ("get_all_encoded holds %s unlike the model: bytes %s (%s), the model %s"):format(show(k),
              hex(b), dmsg or show(back), m[k] and (hex(instate.encode(m[k].v)) .. (key_present(m, k) and "" or ", expired"))
              or "has no such key"))
          end
        end
      end
    elseif which == 17 then
      -- save_many: defstate's bulk write, in a write transaction of its own
      -- (a store-level namespace only): all or nothing, no commit when it
      -- writes nothing
      local n = chance(0.85) and rnd(4) - 1 or pick({ -1, 100, 2 ^ 40 })
      local keys, values, versions = {}, {}, {}
      for i = 1, math.min(n, 4) do
        keys[i] = chance(0.95) and pick(KEYS) or rany()
        values[i] = chance(0.95) and rvalue() or rvalue(0, true)
        if values[i] == nil then values[i] = false end
        versions[i] = chance(0.95) and rnd(3) or rany()
      end
      local ok, rev, written = call("ns:save_many", ns.save_many, ns, n, keys, values,
        chance(0.3) and 1 or versions)
      if ok and math_type(rev) == "integer" then
        check(ctx.level ~= "tx", nil, "save_many on a transaction's namespace succeeded")
        check(math_type(written) == "integer", nil, "save_many returned no count")
        for i = 1, n do
          local rec = m[keys[i]]
          -- a rewritten record loses its expiry (save_many writes none)
          if not (key_present(m, keys[i]) and same(rec.v, values[i]) and not rec.exp) then
            m[keys[i]] = { v = copy(values[i]) }
          end
        end
        changed = written > 0
      end
    else
      local prefix = chance(0.5) and pick({ "a", "k", "", "\0", "zz" }) or (chance(0.2) and rany() or nil)
      local ok, step, st, code = call("ns:pairs", ns.pairs, ns, prefix)
      if ok and type(step) ~= "function" then
        check(step == nil and CODES[code], nil, "pairs returned " .. show(step))
        return false
      end
      if ok and valid and (prefix == nil or type(prefix) == "string") then
        local mode = rnd(4)
        local got = {}
        if mode == 1 then
          -- abandoned mid-way: closes itself when collected
          step(st)
        elseif mode == 2 then
          step(st)
          call("iter:close", st.close, st)
          call("iter:close", st.close, st)
          local ok2 = call("iter after close", step, st)
          check(not ok2, nil, "an iterator stepped after close")
        else
          for k, v in step, st do got[#got + 1] = { k, v } end
          local want = {}
          for k, r in pairs(live(m)) do
            if type(prefix) ~= "string" or k:sub(1, #prefix) == prefix then want[#want + 1] = { k, r.v } end
          end
          table.sort(want, function(x, y) return x[1] < y[1] end)
          check(#want == #got, nil, ("pairs(%s) gave %d records, the model holds %d"):format(show(prefix), #got, #want))
          for i = 1, #want do
            check(got[i][1] == want[i][1] and same(want[i][2], got[i][2]), nil,
              "pairs record " .. i .. " differs from the model")
          end
        end
        if chance(0.1) then closed[#closed + 1] = { step = step, st = st } end
      end
    end
    return changed
  end

  ---------------------------------------------------------------------------
  -- Top-level operations
  ---------------------------------------------------------------------------
  local ops = {}

  -- A store-level namespace call; each successful write is its own commit.
  ops[#ops + 1] = { 30, function()
    local h = any_handle()
    if not h then return end
    local name = pick(NSNAMES)
    local ok, ns = call("store:namespace", h.namespace, h, name)
    check(ok, nil, "namespace(" .. name .. ") raised")
    local r0 = mark()
    -- another coroutine's transaction is open (closing its handle aborts it)
    local own = pending and (handles[1] == pending.handle or handles[2] == pending.handle)
    local ctx = { ns = ns, m = model[name], level = "store", valid = true, name = name }
    local changed = ns_op(ctx)
    if r0 and any_handle() then
      local d = moved(r0)
      check(d == 0 or d == 1, nil, ("one store-level call moved the revision by %d"):format(d))
      if changed then check(d == 1, nil, "a committed write did not move the revision by one") end
      if own and changed then fail(nil, "a store-level write committed while another coroutine's transaction is open") end
    end
  end }

  -- Namespace handles and the store's accessors with random arguments.
  ops[#ops + 1] = { 6, function()
    local h = any_handle()
    if not h then return end
    local r = rnd(9)
    if r == 1 then
      local name = chance(0.5) and pick({ "", "__meta", "__x", string.rep("z", 256), "g" }) or rany()
      local ok, ns = call("store:namespace", h.namespace, h, name, chance(0.3) and pick({ "kv", "state", "table", 1 }) or nil)
      if ok and type(name) == "string" then check(ns.name == name, nil, "ns.name differs") end
    elseif r == 2 then
      local ok, list = call("store:namespaces", h.namespaces, h)
      check(ok and type(list) == "table", nil, "namespaces failed")
      for i = 2, #list do check(list[i - 1] < list[i], nil, "namespaces is not sorted") end
    elseif r == 3 then
      local ok, st = call("store:stats", h.stats, h)
      check(ok and type(st) == "table" and st.map_size and st.used_bytes and st.namespaces, nil, "stats lacks fields")
    elseif r == 4 then
      local ok, p = call("store:path", h.path, h)
      check(ok and p == path, nil, "path differs")
    elseif r == 5 then
      call("store:last_commit", h.last_commit, h)
    elseif r == 6 then
      local r0 = mark()
      local ok, n = call("store:purge", h.purge, h)
      if ok and n then check(math_type(n) == "integer" and n >= 0, nil, "purge returned " .. show(n)) end
      if ok and n and r0 then
        local d = moved(r0)
        check(d == 0 or d == 1, nil, "purge moved the revision by " .. d)
      end
    elseif r == 7 then
      -- drop a namespace we model, or a random one
      local name = pick(NSNAMES)
      if chance(0.3) then name = chance(0.5) and pick({ "__meta", "", "nope" }) or rany() end
      local present = type(name) == "string" and model[name] and next(live(model[name])) ~= nil
      local ok, r1 = call("store:drop", h.drop, h, name)
      if ok and r1 == true and model[name] then
        for k in pairs(model[name]) do model[name][k] = nil end
      elseif ok and r1 == false and present then
        fail(nil, "drop(" .. show(name) .. ") said it did not exist")
      end
    elseif r == 8 then
      -- a method called on the wrong object
      local targets = { h, {}, "x", 1, nil }
      local ok = call("store:revision on a non-store", h.revision, pick({ {}, "x", 1 }))
      check(not ok, nil, "revision accepted a non-store")
      local ns = h:namespace("n1")
      ok = call("ns:get on a non-namespace", ns.get, pick(targets), "k")
      check(not ok, nil, "get accepted a non-namespace")
    else
      local ok, s = call("tostring(store)", tostring, h)
      check(ok and type(s) == "string", nil, "tostring(store)")
      -- defstate's bulk read and table sizing, with random arguments
      local ns = h:namespace(pick({ "n1", "x" }))
      local mt = chance(0.8) and { __index = {} } or rany()
      local ok2, t = call("ns:get_all_objects", ns.get_all_objects, ns, mt, chance(0.8) and {} or rany(),
        chance(0.8) and rnd(3) or rany(), chance(0.8) and rnd(2) or rany())
      if ok2 and t ~= nil then check(type(t) == "table", nil, "get_all_objects returned " .. show(t)) end
      call("instate._newtable", instate._newtable, chance(0.8) and rnd(10) - 2 or rany(), chance(0.8) and rnd(10) - 2 or rany())
    end
  end }

  -- Clock: advance so TTLs expire (never on a boundary: TTLs are 10 s and
  -- 1000 s, steps 70 s).
  ops[#ops + 1] = { 2, function()
    now = now + 70000
    note("_set_clock(" .. now .. ")")
    instate._set_clock(now)
    for _, m in pairs(model) do
      for k, r in pairs(m) do if r.exp and r.exp <= now then m[k] = nil end end
    end
    call("instate.now", instate.now)
    call("_set_clock bad", instate._set_clock, pick({ "x", 1.5, {} }))
  end }

  -- Closing and reopening handles; using closed ones.
  ops[#ops + 1] = { 4, function()
    local r = rnd(5)
    if r == 1 then
      local i = rnd(2)
      local h = handles[i]
      if h then
        if not (pending and pending.handle == h) or chance(0.3) then
          local ns = h:namespace(pick(NSNAMES))
          call("store:close", h.close, h)
          call("store:close (again)", h.close, h)
          handles[i] = nil
          closed[#closed + 1] = { store = h, ns = ns }
        end
      else
        open_handle(i)
      end
    elseif r == 2 and #closed > 0 then
      local c = pick(closed)
      if c.store then
        local ok = call("closed store:revision", c.store.revision, c.store)
        if check(not ok, nil, "revision of a closed store succeeded") then
          local _, err = pcall(c.store.revision, c.store)
          check(tostring(err):find("closed", 1, true), nil, "closed store error: " .. tostring(err))
        end
        ok = call("closed store:namespace", c.store.namespace, c.store, "n1")
        check(not ok, nil, "namespace of a closed store succeeded")
        ok = call("closed store:transaction", c.store.transaction, c.store, function() end)
        check(not ok, nil, "transaction of a closed store succeeded")
      end
      if c.ns then
        local ok = call("ns of a closed store:get", c.ns.get, c.ns, "a")
        check(not ok, nil, "get through a closed store succeeded")
        ok = call("ns of a closed store:set", c.ns.set, c.ns, "a", 1)
        check(not ok, nil, "set through a closed store succeeded")
      end
      if c.tx then
        local ok = call("ended tx:namespace", c.tx.namespace, c.tx, "n1")
        check(not ok, nil, "an ended transaction gave a namespace")
        call("ended tx:close", c.tx.close, c.tx)
      end
      if c.txns then
        local ok = call("ns of an ended tx:set", c.txns.set, c.txns, "a", 1)
        check(not ok, nil, "a write through an ended transaction succeeded")
        ok = call("ns of an ended tx:get", c.txns.get, c.txns, "a")
        check(not ok, nil, "a read through an ended transaction succeeded")
      end
      if c.step then
        call("old iterator step", c.step, c.st)
        call("old iterator close", c.st.close, c.st)
      end
      if #closed > 50 then table.remove(closed, 1) end
    elseif r == 3 then
      -- a third handle with other options: works, or refuses with a code
      local o = pick({ { readonly = true }, { sync = "full" }, { sync = "none" }, { map_size = 1 }, { max_size = 1 } })
      local ok, s = call("instate.open (third handle)", instate.open, path, o)
      if ok and s then
        call("third:revision", s.revision, s)
        call("third:close", s.close, s)
      end
    elseif r == 4 then
      local p = chance(0.5) and pick({ "", dir .. "/no/such/dir/x", "/proc/self/x", dir .. "/a\0b" }) or rpath()
      local ok, s = call("instate.open", instate.open, p, chance(0.5) and rany() or nil)
      if ok and s then s:close() end
    else
      for i = 1, 2 do if not handles[i] then open_handle(i) end end
    end
  end }

  -- Finish or drop the suspended transaction.
  local function resolve_pending(how)
    local p = pending
    pending = nil
    local co = p.co
    if how == "resume" then
      local r0 = mark()
      note("coroutine.resume(pending tx)")
      local ok, a = coroutine.resume(co, "go")
      while ok and coroutine.status(co) == "suspended" do
        ok, a = coroutine.resume(co, "go")
      end
      if failure then error(failure, 0) end
      if not ok then error(a, 0) end
      closed[#closed + 1] = p.leaked
      if ok and a == "committed" then
        for _, name in ipairs(NSNAMES) do model[name] = p.txm[name] end
        check_model("after a resumed transaction committed")
        if r0 then
          local d = moved(r0)
          check(d == 1, nil, "a resumed transaction moved the revision by " .. d)
        end
      else
        if r0 then
          local d = moved(r0)
          check(d == 0, nil, "a failed resumed transaction moved the revision by " .. d)
        end
        check_model("after a resumed transaction failed")
      end
      return
    end
    if how == "close" then
      note("coroutine.close(pending tx)")
      local ok = coroutine.close(co)  -- only picked on 5.4
      check(ok, nil, "coroutine.close of a suspended transaction failed")
    else
      -- abandoned: with or without handles of the transaction kept elsewhere
      p.keep = chance(0.5)
      note("abandon(pending tx)" .. (p.keep and ", its handles kept" or ""))
      if not p.keep then closed = {}; p.leaked.tx, p.leaked.txns = nil, nil end
      co = nil
      p.co = nil
      collectgarbage()
      collectgarbage()
    end
    -- the transaction must be aborted: a store-level write goes through
    local h = p.handle
    if handles[1] ~= h and handles[2] ~= h then h = any_handle() end
    if not h then return end
    local ns = h:namespace("n1")
    local ok, r, msg, code = call("store-level ns:set after the suspended tx ended", ns.set, ns, "after", true)
    if ok and r == nil and code == "BUSY" then
      if how == "close" then
        fail("coclose", "coroutine.close left its transaction open: " .. tostring(msg))
      elseif not p.keep then
        fail("leaked-tx", "the transaction of an unreachable coroutine stayed open")
      end
      -- a kept handle keeps the transaction, and so its coroutine, reachable:
      -- it stays open until they are let go (README, "Lifetimes")
      closed = {}
      p.leaked.tx, p.leaked.txns = nil, nil
      collectgarbage()
      collectgarbage()
      ok, r, msg, code = call("store-level ns:set after a full collection", ns.set, ns, "after", true)
    end
    check(ok and r == true, nil, ("the writer stays locked after the suspended transaction ended (%s): %s %s")
      :format(how, tostring(msg), tostring(code)))
    model.n1.after = { v = true }
    check_model("after a suspended transaction was " .. how)
  end

  -- A write transaction: inline, or in a coroutine that yields inside it.
  local function run_tx(h, in_co)
    local txm
    local leaked = {}
    local results = { rnd(100), "r" }
    local raise = rnd(10)
    local raised_table
    local tx_closed = false
    local fn = function(tx, x, y)
      check(x == results[1] and y == results[2], nil, "transaction arguments were not passed through")
      txm = {}
      for _, name in ipairs(NSNAMES) do txm[name] = copy(model[name]) end
      leaked.tx = tx
      for _ = 1, rnd(6) do
        local name = pick(NSNAMES)
        local ok, ns = call("tx:namespace", tx.namespace, tx, name)
        if not ok and handles[1] ~= h and handles[2] ~= h then error(ns, 0) end -- closed meanwhile
        check(ok, nil, "tx:namespace raised: " .. tostring(ns))
        leaked.txns = ns
        local ctx = { ns = ns, m = txm[name], level = "tx", valid = true, name = name, sync = read_view }
        local r = rnd(12)
        if r == 1 then
          -- a savepoint: its writes stay if it returns, go if it raises
          local saved = {}
          for _, n in ipairs(NSNAMES) do saved[n] = copy(txm[n]) end
          local inner_raise = chance(0.4)
          local ok2 = call("nested transaction", h.transaction, h, function(tx2)
            local ns2 = tx2:namespace(name)
            ns_op({ ns = ns2, m = txm[name], level = "tx", valid = true, name = name, sync = read_view })
            if inner_raise then error("inner") end
            return true
          end)
          if not ok2 then txm = saved end
        elseif r == 2 then
          -- a store-level write inside our own transaction: BUSY for every call
          local sns = h:namespace(name)
          local which = rnd(4)
          local ok2, r2, _, code
          if which == 1 then ok2, r2, _, code = call("own-tx store-level ns:set", sns.set, sns, "a", 7)
          elseif which == 2 then ok2, r2, _, code = call("own-tx store-level ns:incr", sns.incr, sns, "k1")
          elseif which == 3 then ok2, r2, _, code = call("own-tx store-level ns:update", sns.update, sns, "c", function() return 3 end)
          else ok2, r2, _, code = call("own-tx store-level ns:delete", sns.delete, sns, "a") end
          if ok2 and code == nil and (r2 ~= nil) then
            fail("join", "a store-level write inside its own write transaction succeeded")
            -- it joined the transaction: follow it
            if which == 1 then txm[name].a = { v = 7 }
            elseif which == 2 then
              local rec = txm[name].k1
              if rec and (not rec.exp or rec.exp > now) then rec.v = r2 else txm[name].k1 = { v = r2 } end
            elseif which == 3 then txm[name].c = { v = 3, exp = key_present(txm[name], "c") and txm[name].c.exp or nil }
            else txm[name].a = nil end
          end
        elseif r == 3 and in_co then
          coroutine.yield("suspended")
        elseif r == 4 then
          call("tx:revision", tx.revision, tx)
        elseif r == 5 and chance(0.2) and not in_co then
          -- closed inside its function: aborted, and the transaction raises
          call("tx:close", tx.close, tx)
          call("tx:close", tx.close, tx)
          local ok2 = call("tx:namespace after close", tx.namespace, tx, "n1")
          check(not ok2, nil, "a closed transaction gave a namespace")
          tx_closed = true
          return unpack(results)
        else
          ns_op(ctx)
        end
      end
      if in_co and chance(0.5) then coroutine.yield("suspended") end
      if raise == 1 then error("tx function raised") end
      if raise == 2 then raised_table = {}; tables_raised[raised_table] = true; error(raised_table) end
      if raise == 3 then
        -- an error from a bad call in the function
        local ns = tx:namespace("n1")
        ns:set({}, 1)
      end
      return unpack(results)
    end
    if not in_co then
      local r0 = mark()
      local ok, a, b = call("store:transaction", h.transaction, h, fn, results[1], results[2])
      closed[#closed + 1] = leaked
      check(not (ok and tx_closed), nil, "a transaction closed inside its function committed")
      if ok and a ~= nil then
        check(a == results[1] and b == results[2], nil, "transaction did not return fn's results")
        for _, name in ipairs(NSNAMES) do model[name] = txm[name] end
        if r0 then
          local d = moved(r0)
          check(d == 1, nil, "a committed transaction moved the revision by " .. d)
        end
        check_model("after a committed transaction")
      elseif not ok then
        if tx_closed then
          check(type(a) == "string" and a:find("transaction was closed before its function returned", 1, true), nil,
            "a transaction closed inside its function raised " .. tostring(a))
        elseif raised_table then
          check(a == raised_table, "table-error", "the transaction re-raised " .. tostring(a) .. ", not the table fn raised")
        elseif raise == 1 then
          check(type(a) == "string" and a:find("tx function raised", 1, true), nil, "the transaction re-raised " .. tostring(a))
        end
        if r0 then
          local d = moved(r0)
          check(d == 0, nil, "an aborted transaction moved the revision by " .. d)
        end
        check_model("after an aborted transaction")
      end
      return
    end
    local co = coroutine.create(function()
      local ok, a = pcall(h.transaction, h, fn, results[1], results[2])
      if ok and a == results[1] then return "committed" end
      if not ok and type(a) == "table" and getmetatable(a) == FAILED then error(a, 0) end
      return "failed"
    end)
    note("coroutine: store:transaction")
    local ok, st = coroutine.resume(co)
    if not ok then error(st, 0) end
    if st ~= "suspended" then closed[#closed + 1] = leaked end
    if st == "committed" then
      for _, name in ipairs(NSNAMES) do model[name] = txm[name] end
      check_model("after a committed transaction (coroutine)")
    elseif st == "suspended" then
      pending = { co = co, handle = h, leaked = leaked, txm = setmetatable({}, { __index = function(_, k) return txm[k] end }) }
      -- while it is suspended, another write transaction here is BUSY
      local ok2, r2, _, code = call("second transaction while one is suspended", h.transaction, h, function() return 1 end)
      check(not ok2 or (r2 == nil and code == "BUSY"), nil, "a second write transaction did not return BUSY")
    end
    gc_commits = 0
  end

  ops[#ops + 1] = { 8, function()
    local h = any_handle()
    if not h then return end
    if pending then
      -- coroutine.close is 5.4's
      local how = pick(compat.to_be_closed and { "resume", "resume", "close", "abandon" }
        or { "resume", "resume", "abandon" })
      resolve_pending(how)
      return
    end
    run_tx(h, chance(0.4))
  end }

  -- Snapshots: a consistent read of the committed model; writes refused.
  ops[#ops + 1] = { 4, function()
    local h = any_handle()
    if not h then return end
    local leaked = {}
    local ok = call("store:snapshot", h.snapshot, h, function(tx)
      leaked.tx = tx
      for _ = 1, rnd(4) do
        local name = pick(NSNAMES)
        local ns = tx:namespace(name)
        leaked.txns = ns
        local m = copy(model[name])
        local ok2, r = call("snapshot ns:set", ns.set, ns, "a", 1)
        check(not ok2 or r == nil, nil, "a write inside a snapshot succeeded")
        compare_ns(ns, live(m), "snapshot of " .. name)
      end
      if chance(0.2) then error("snapshot function raised") end
      return 1
    end)
    closed[#closed + 1] = leaked
    local _ = ok
  end }

  -- The codec: random values and random bytes.
  ops[#ops + 1] = { 8, function()
    local r = rnd(5)
    if r <= 2 then
      local v = chance(0.2) and rvalue(0, true) or rvalue()
      local o = chance(0.3) and { canonical = true } or (chance(0.1) and rany() or nil)
      local ok, s = call("instate.encode", instate.encode, v, nil, o)
      if ok then
        check(type(s) == "string", nil, "encode returned a " .. type(s))
        local ok2, back = call("instate.decode", instate.decode, s)
        check(ok2 and same(v, back), nil, "decode(encode(v)) differs from v")
      end
    elseif r == 3 then
      local b = rstring()
      if chance(0.5) then
        local s = instate.encode(rvalue())
        local i = rnd(#s)
        b = s:sub(1, i - 1) .. string.char(rnd(256) - 1) .. s:sub(i + 1, rnd(#s + 1) - 1)
      end
      local ok, v, msg, code = call("instate.decode", instate.decode, b)
      check(ok, nil, "decode raised on bytes")
      if v == nil and msg then check(code == "CORRUPT", nil, "decode failed with " .. tostring(code)) end
    elseif r == 4 then
      call("instate.decode bad", instate.decode, rany())
      call("instate.encode no value", instate.encode)
    else
      -- encoding while finalizers that encode and write are pending
      local sv = {}
      local v = { sv, sv, { sv, { 1, 2, "three" } }, x = sv, y = rvalue() }
      for _ = 1, rnd(400) do
        setmetatable({}, { __gc = function()
          local w = { 1, { 2 }, "gc" }
          local ok, s = pcall(instate.encode, w, nil, { canonical = true })
          if ok and not same(instate.decode(s), w) then gc_bad = gc_bad + 1 end
        end })
      end
      local ok, s = call("instate.encode canonical under finalizers", instate.encode, v, nil, { canonical = true })
      if ok then
        local back = instate.decode(s)
        check(same(v, back), "gc-encode", "a canonical encode under finalizers that encode came out different")
      end
    end
  end }

  -- Finalizers that call the API: encode, namespace writes, reads.
  ops[#ops + 1] = { 3, function()
    note("finalizers that call the API")
    for i = 1, rnd(50) do
      local k = "g" .. rnd(8)
      local v = i
      -- drawn now: when a finalizer runs depends on the collector, and a
      -- draw then would make a seed replay another run
      local r = rnd(3)
      setmetatable({}, { __gc = function()
        if gc_quiet then return end
        local h = handles[1] or handles[2]
        if not h then return end
        if r == 1 then
          local ok, res = pcall(function() return h:namespace("g"):set(k, v) end)
          if ok and res == true then
            gmodel[k] = { v = v }
            gc_commits = gc_commits + 1
          end
        elseif r == 2 then
          pcall(function() return h:namespace("n1"):get("a") end)
        else
          local ok, s = pcall(instate.encode, { k, v, { k } }, nil, { canonical = true })
          if ok then
            local back = instate.decode(s)
            if not same(back, { k, v, { k } }) then gc_bad = gc_bad + 1 end
          end
        end
      end })
    end
    if chance(0.5) then collectgarbage() else collectgarbage("step") end
  end }

  -- Dump, dump_info, load.
  local dumps = 0
  ops[#ops + 1] = { 4, function()
    local h = any_handle()
    if not h then return end
    dumps = dumps + 1
    local file = dir .. "/dump" .. (dumps % 3)
    local r = rnd(6)
    if r <= 3 then
      local o
      if chance(0.7) then o = { compression = rnd(10) - 1 }
      elseif chance(0.5) then o = pick({ { compression = 10 }, { namespaces = { "n1" } }, { namespaces = "n1" }, { bogus = 1 }, { max_bytes = 10 } })
      else o = rany() end
      local ok, info = call("store:dump", h.dump, h, file, o)
      if ok and info then
        check(type(info.records) == "number" and type(info.bytes) == "number", nil, "dump info lacks fields")
        local ok2, di = call("instate.dump_info", instate.dump_info, file)
        check(ok2 and di and type(di.section_list) == "table", nil, "dump_info of a fresh dump failed")
        if type(o) == "table" and o.namespaces == nil and o.max_bytes == nil and not pending then
          -- the dump restores into a fresh store exactly
          local q = dir .. "/restore" .. dumps
          local s2 = assert(instate.open(q, { sync = "none" }))
          local ok3, li = call("store:load (fresh store)", s2.load, s2, file, { mode = "replace" })
          check(ok3 and li, nil, "a fresh dump did not load")
          gc_quiet = true
          for _, name in ipairs(NSNAMES) do
            compare_ns(s2:namespace(name), live(model[name]), "restored dump, namespace " .. name)
          end
          gc_quiet = false
          s2:close()
          os.execute("rm -rf '" .. q .. "'")
        end
      end
    elseif r == 4 then
      -- load a damaged or foreign file
      local f = io.open(file, "rb")
      local s = f and f:read("*a") or instate.encode(rvalue())
      if f then f:close() end
      if #s > 0 and chance(0.8) then
        local i = rnd(#s)
        s = s:sub(1, i - 1) .. string.char(rnd(256) - 1) .. s:sub(i + 1)
      end
      local bad = dir .. "/bad"
      local g = assert(io.open(bad, "wb")); g:write(s); g:close()
      local r0 = mark()
      local o = pick({ nil, { on_corrupt = "ignore" }, { on_corrupt = "delete" }, { mode = "replace" }, { max_bytes = 100 }, { on_corrupt = "x" } })
      local ok, info, _, code = call("store:load (damaged)", h.load, h, bad, o)
      call("instate.dump_info (damaged)", instate.dump_info, bad)
      if ok and type(info) == "table" then
        -- the byte may have hit nothing checked (a load of our own dump): resync the model
        gc_quiet = true
        for _, name in ipairs(NSNAMES) do
          local m = {}
          local ns = h:namespace(name)
          for k, v in ns:pairs() do
            local t = ns:ttl(k)
            m[k] = { v = v, exp = t and now + t * 1000 or nil }
          end
          model[name] = m
        end
        gmodel = {}
        for k, v in h:namespace("g"):pairs() do gmodel[k] = { v = v } end
        gc_quiet = false
        gc_commits = 0
      elseif r0 then
        local d = moved(r0)
        check(d == 0, nil, "a refused load moved the revision by " .. d)
        local _ = code
      end
      check_model("after a load")
    elseif r == 5 then
      -- merge our own latest dump: nothing changes
      local ok, info = call("store:dump", h.dump, h, file)
      if ok and info and not pending then
        local r0 = mark()
        local ok2, li = call("store:load (own dump)", h.load, h, file)
        check(ok2 and li, nil, "loading the store's own dump failed")
        local d = moved(r0)
        check(d == 1, nil, "a load moved the revision by " .. d)
        check_model("after loading the store's own dump")
      end
    else
      call("instate.dump_info", instate.dump_info, chance(0.5) and dir .. "/missing" or rpath())
      call("store:load missing", h.load, h, dir .. "/missing")
      call("store:dump bad path", h.dump, h, chance(0.5) and "" or rpath())
    end
  end }

  ---------------------------------------------------------------------------
  -- defstate
  ---------------------------------------------------------------------------
  local ds_path = dir .. "/defstate"
  local ds_save_all, ds_reload_all
  local wild_depth = 0
  local function ds_depth() return wild_depth end
  local ds = { up = false, vars = {}, order = {}, saved = {}, current = {}, defaults = {} }
  local DSNAMES = { "hero", "gold", "map", "flag" }
  local WILD = { "w1", "w2" } -- with validate/migrate callbacks; not modelled

  local function ds_setup()
    local ok, s = call("instate.setup", instate.setup, ds_path, { sync = "none" })
    check(ok and s, nil, "setup failed")
    ds.up = true
    ds.store = s
  end

  local function ds_teardown()
    call("instate.teardown", instate.teardown)
    ds.up = false
    ds.vars, ds.order, ds.current = {}, {}, {}
  end

  -- save_all and reload_all, also called from inside validate/migrate.
  local ds_inner = 0 -- commits of nested saves
  local ds_reloading = false
  ds_save_all = function(desc, kind)
    local s = ds.up and ds.store
    local r0 = s and s:revision()
    local inner0 = ds_inner
    local ok, rev, msg, code = call(desc, instate.save_all)
    if ok and rev then
      check(math_type(rev) == "integer", nil, "save_all returned " .. show(rev))
      if r0 then
        check(rev == s:revision(), nil, "save_all returned another revision than the store's")
        local d = rev - r0 - (ds_inner - inner0)
        check(d == 0 or d == 1, nil, "save_all moved the revision by " .. d)
        ds_inner = ds_inner + d
      end
      for name in pairs(ds.vars) do ds.saved[name] = { v = copy(ds.current[name]) } end
      if r0 then
        -- what the store holds now is what the model saved
        local sns = s:namespace("state", "state")
        local bad = false
        for _, name in ipairs(DSNAMES) do
          local rec = ds.saved[name]
          local got = sns:get(name)
          if not check(rec == nil and got == nil or rec ~= nil and same(rec.v, got), kind,
            ("after %s the store holds %s for %s, the model %s"):format(desc, show(got), name, show(rec and rec.v))) then
            bad = true
          end
        end
        if bad and ds_depth() == 0 then
          -- a known defect wrote a wrong record: start the defstate store afresh
          note("defstate store reset after a known bad save")
          pcall(instate.teardown)
          os.execute("rm -rf '" .. ds_path .. "'")
          ds.up, ds.vars, ds.order, ds.current, ds.saved = false, {}, {}, {}, {}
        end
      end
    elseif ok then
      check(CODES[code], nil, "save_all failed: " .. tostring(msg))
    end
  end

  ds_reload_all = function(desc)
    local was = ds_reloading
    ds_reloading = true
    local ok = call(desc, instate.reload_all)
    ds_reloading = was
    local unsaved = false
    for name in pairs(ds.vars) do if not ds.saved[name] then unsaved = true end end
    if ok then
      check(not unsaved, nil, "reload_all succeeded with a never-saved variable")
      for name in pairs(ds.vars) do ds.current[name] = copy(ds.saved[name].v) end
    end
  end

  wild_depth = 0 -- re-entry is bounded: two variables whose validate
                       -- both save would otherwise branch at every level
  local function wild_callback(kind)
    local r = rnd(9)
    return function(v, ver)
      if wild_depth >= 3 then r = 9 end
      if r == 1 then error(kind .. " raised") end
      if r == 2 then local t = {}; tables_raised[t] = true; error(t) end
      if r == 3 then return false, kind .. " refused" end
      -- (not while reload_all restores: what a save in the middle of a
      -- reload writes is not specified)
      if r == 4 and not ds_reloading then
        wild_depth = wild_depth + 1
        pcall(ds_save_all, kind .. ">instate.save_all")
        wild_depth = wild_depth - 1
      end
      if r == 5 then pcall(instate.encode, { v, { v } }, nil, { canonical = true }) end
      if r == 6 then collectgarbage() end
      -- (not from validate: which values a save_all writes after a reload_all
      -- inside it is not specified)
      if r == 7 and kind == "migrate" then
        wild_depth = wild_depth + 1
        pcall(ds_reload_all, kind .. ">instate.reload_all")
        wild_depth = wild_depth - 1
      end
      if kind == "validate" then return true end
      return v
    end
  end

  ops[#ops + 1] = { 12, function()
    if not ds.up then ds_setup() return end
    local r = rnd(14)
    if r <= 2 then
      local name = pick(DSNAMES)
      local default = rvalue()
      local ok, var = call("instate.defstate", instate.defstate, name, default)
      if ok then
        if ds.vars[name] then
          check(var == ds.vars[name], nil, "a second defstate returned another variable")
        else
          ds.vars[name] = var
          ds.order[#ds.order + 1] = name
          ds.defaults[name] = copy(default)
          local want
          if ds.saved[name] ~= nil then want = ds.saved[name].v else want = default end
          ds.current[name] = copy(want)
          local got = var:get()
          check(same(want, got), nil, ("defstate(%s) restored %s, the model holds %s"):format(name, show(got), show(want)))
          ds.current[name] = copy(got)
        end
      end
    elseif r == 3 then
      local name = pick(WILD)
      local o = { version = rnd(3), migrate = wild_callback("migrate"), validate = wild_callback("validate") }
      if chance(0.2) then o = rany() end
      call("instate.defstate (wild)", instate.defstate, name, rvalue(), o)
    elseif r <= 6 then
      local name = pick(DSNAMES)
      local var = ds.vars[name]
      if not var then return end
      local which = rnd(4)
      if which == 1 then
        local ok, v = call("var(" .. name .. "):get", var.get, var)
        check(ok and same(ds.current[name], v), nil, ("var %s reads %s, the model holds %s"):format(name, show(v), show(ds.current[name])))
        check(var.name == name, nil, "var.name is " .. show(var.name))
        local ok2, saved = call("var(" .. name .. "):saved", var.saved, var)
        check(ok2 and saved == (ds.saved[name] ~= nil), nil,
          ("var(%s):saved() is %s, the model says %s"):format(name, show(saved), show(ds.saved[name] ~= nil)))
      elseif which == 2 then
        local v = chance(0.1) and rvalue(0, true) or rvalue()
        local ok = call("var(" .. name .. "):set", var.set, var, v)
        if ok then ds.current[name] = copy(v) end
      elseif which == 3 then
        local nv = rvalue()
        local ok = call("var(" .. name .. "):update", var.update, var, function() return nv end)
        if ok then ds.current[name] = copy(nv) end
      else
        local ok = call("var(" .. name .. "):reset", var.reset, var)
        if ok then ds.current[name] = copy(ds.defaults[name]) end
      end
    elseif r <= 7 then
      ds_save_all("instate.save_all")
    elseif r == 8 then
      -- a save while finalizers that encode are pending: every record it
      -- writes must decode to the value saved
      for _ = 1, rnd(300) do
        setmetatable({}, { __gc = function()
          pcall(instate.encode, { 1, { 2, { 3 } }, "gc" }, nil, { canonical = true })
        end })
      end
      ds_save_all("instate.save_all under finalizers", "gc-encode")
    elseif r == 9 then
      ds_reload_all("instate.reload_all")
    elseif r == 10 then
      local name = pick(DSNAMES)
      local var = ds.vars[name]
      if not var then return end
      local before = copy(ds.current[name])
      local nv = rvalue()
      local raise = chance(0.6)
      local ok = call("instate.transaction", instate.transaction, function()
        var:set(nv)
        if raise then error("undo") end
        return true
      end)
      if ok then ds.current[name] = copy(nv) else ds.current[name] = before end
    elseif r == 11 then
      local names = {}
      local ok = call("instate.vars", function()
        for n in instate.vars() do names[#names + 1] = n end
      end)
      if ok then
        local i = 0
        for _, n in ipairs(names) do
          if ds.vars[n] then i = i + 1; check(ds.order[i] == n, nil, "vars() is not in declaration order") end
        end
        check(i == #ds.order, nil, "vars() misses a variable")
      end
    elseif r == 12 then
      -- restart: every variable comes back as saved
      ds_teardown()
      ds_setup()
    elseif r == 13 then
      call("instate.setup (other path)", instate.setup, dir .. "/other", chance(0.5) and rany() or nil)
      ds.up = false
      ds.vars, ds.order, ds.current = {}, {}, {}
      call("instate.teardown", instate.teardown)
    else
      call("instate.defstate bad", instate.defstate, rany(), rvalue(), chance(0.5) and rany() or nil)
      call("instate.transaction bad", instate.transaction, rany())
    end
  end }

  ---------------------------------------------------------------------------
  -- Main loop
  ---------------------------------------------------------------------------
  local total_w = 0
  for _, o in ipairs(ops) do total_w = total_w + o[1] end
  local function pick_op()
    local x = rnd(total_w)
    for _, o in ipairs(ops) do
      x = x - o[1]
      if x <= 0 then return o[2] end
    end
  end

  local ok, err = pcall(function()
    open_handle(1)
    open_handle(2)
    while calls < max_calls and os.time() < deadline do
      pick_op()()
      if failure then error(failure, 0) end
      if gc_bad > 0 then
        gc_bad = 0
        fail("gc-encode", "an encode inside a finalizer did not round-trip")
      end
      if rnd(20) == 1 then check_model("periodic") end
    end
    if pending then resolve_pending("resume") end
    check_model("final")
  end)
  gc_quiet = true
  pcall(instate.teardown)
  for i = 1, 2 do if handles[i] then pcall(handles[i].close, handles[i]) end end
  instate._set_clock(nil)
  local result = { ok = ok, calls = calls, known = known_hits, history = history, seed = seed }
  if not ok then
    if type(err) == "table" and getmetatable(err) == FAILED then
      result.kind, result.msg = err.kind, err.msg
    else
      result.msg = "the fuzzer itself raised: " .. tostring(err) .. "\n" .. debug.traceback()
    end
  end
  return result
end

---------------------------------------------------------------------------
-- Command line
---------------------------------------------------------------------------
function M.main()
  local seed = tonumber(os.getenv("INSTATE_FUZZ_SEED") or "")
  if not seed then
    local f = io.open("/dev/urandom", "rb")
    local b = f:read(4)
    f:close()
    seed = b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216
  end
  if compat.integers then seed = math.tointeger(seed) end
  local seconds = tonumber(os.getenv("INSTATE_FUZZ_SECONDS") or "") or 10
  local max_calls = tonumber(os.getenv("INSTATE_FUZZ_CALLS") or "")
  local known = {}
  for k in (os.getenv("INSTATE_FUZZ_KNOWN") or ""):gmatch("[^,%s]+") do
    assert(M.KINDS[k], "INSTATE_FUZZ_KNOWN: unknown kind '" .. k .. "'")
    known[k] = true
  end
  local log
  if os.getenv("INSTATE_FUZZ_LOG") then
    log = assert(io.open(os.getenv("INSTATE_FUZZ_LOG"), "w"))
    log:setvbuf("line")
  end
  local p = io.popen("mktemp -d /tmp/instate-fuzz.XXXXXX")
  local dir = p:read("*l")
  p:close()
  print(("api_fuzz: seed %d, %g s%s"):format(seed, seconds, next(known) and ", known bugs allowed" or ", strict"))
  io.stdout:flush()
  local r = M.run({ seed = seed, seconds = seconds, max_calls = max_calls, known = known, dir = dir,
    log = log, verbose = os.getenv("INSTATE_FUZZ_VERBOSE") })
  os.execute("rm -rf '" .. dir .. "'")
  for kind, n in pairs(r.known) do
    print(("api_fuzz: known bug [%s] hit %d times: %s"):format(kind, n, M.KINDS[kind]))
  end
  if r.ok then
    print(("api_fuzz: seed %d: %d calls, all invariants held"):format(seed, r.calls))
    return true
  end
  print(("api_fuzz: FAILED at call %d, seed %d%s"):format(r.calls, seed, r.kind and (" [" .. r.kind .. "]") or ""))
  print("  " .. r.msg)
  print(("  reproduce: INSTATE_FUZZ_SEED=%d INSTATE_FUZZ_CALLS=%d %s spec/fuzz/api_fuzz.lua"):format(seed, r.calls,
    arg and arg[-1] or "lua5.4"))
  print("  the calls that led to it (last 60):")
  for i = math.max(1, #r.history - 59), #r.history do print("    " .. r.history[i]) end
  return false
end

if arg and arg[0] and arg[0]:match("api_fuzz%.lua$") then
  os.exit(M.main() and 0 or 1)
end

return M
