--- Damaged data.mdb: record checksums (docs/FORMAT.md section 2), store:check(),
-- and single-byte flips of the data file read in child processes, so that a
-- crash is observed instead of killing the spec.
local instate = require "instate"
local helpers = require "helpers"

local T0 = 1700000000000

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

-- Flip byte `pos` (1-based) of a file with xor mask.
local function flip(path, pos, mask)
  local data = assert(helpers.read_file(path))
  helpers.write_file(path, helpers.flip_byte(data, pos, mask))
end

-- The only place of `needle` in a file (1-based), or an error.
local function find_once(path, needle)
  local data = assert(helpers.read_file(path))
  local at = data:find(needle, 1, true)
  assert(at, "bytes not found in " .. path)
  assert(not data:find(needle, at + 1, true), "bytes found twice in " .. path)
  return at
end

describe("a record whose checksum does not match", function()
  local dir, value
  before_each(function()
    instate._set_clock(T0)
    dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    value = { name = "a unique marker 7f3a", hp = 10 }
    assert(store:transaction(function(tx)
      local a = tx:namespace("a")
      a:set("good", 1)
      a:set("bad", value, { ttl = 60 })
      a:set("later", "z")
      tx:namespace("other"):set("k", true)
      return true
    end))
    store:close()
    -- one byte of the stored value, by its bytes in the file
    local rec = helpers.record_bytes("bad", instate.encode(value), T0 + 60000)
    flip(dir .. "/data.mdb", find_once(dir .. "/data.mdb", rec) + #rec - 3, 0x20)
  end)
  after_each(function() instate._set_clock(nil) end)

  it("reads as nil, a message and CORRUPT from get, has and ttl", function()
    local store = assert(instate.open(dir))
    local a = store:namespace("a")
    for _, call in ipairs({ "get", "has", "ttl", "get_encoded" }) do
      local v, msg, code = a[call](a, "bad")
      assert.is_nil(v, call)
      assert.are.equal("cannot read key 'bad': corrupt data", msg, call)
      assert.are.equal("CORRUPT", code, call)
    end
    assert.are.equal(1, a:get("good"))
    assert.are.equal("z", a:get("later"))
    local n, _, code = a:count()
    assert.is_nil(n)
    assert.are.equal("CORRUPT", code)
    store:close()
  end)

  it("stops pairs with an error, never a wrong value", function()
    local store = assert(instate.open(dir))
    local seen = {}
    local ok, err = pcall(function()
      for k, v in store:namespace("a"):pairs() do seen[k] = v end
    end)
    assert.is_false(ok)
    assert.matches("cannot iterate at key 'bad': corrupt data$", err)
    assert.is_nil(seen.bad)
    store:close()
  end)

  it("makes incr and update return nil, a message naming the key and CORRUPT, writing nothing",
    function()
    local store = assert(instate.open(dir))
    local a = store:namespace("a")
    local rev = store:revision()
    local called = false
    for i, call in ipairs({
      function() return a:incr("bad") end,
      function() return a:update("bad", function(v) called = true; return v end) end,
      function() return store:transaction(function(tx) return tx:namespace("a"):incr("bad") end) end,
    }) do
      local v, msg, code = call()
      assert.is_nil(v)
      assert.are.equal("cannot read key 'bad': corrupt data", msg)
      assert.are.equal("CORRUPT", code)
      -- the store-level calls commit nothing; the caller's own transaction
      -- commits when its function returns
      assert.are.equal(rev + (i == 3 and 1 or 0), store:revision())
    end
    assert.is_false(called)
    assert.are.same({ a = { "bad" } }, assert(store:check()).corrupt)
    store:close()
  end)

  it("store:check() names it; deleting or rewriting it repairs the store", function()
    local store = assert(instate.open(dir))
    local r = assert(store:check())
    assert.are.equal(4, r.records)
    assert.are.equal(2, r.namespaces)
    assert.are.same({ a = { "bad" } }, r.corrupt)
    assert.are.same({}, r.corrupt_namespaces)
    local a = store:namespace("a")
    assert.is_true(a:set("bad", "new"))
    assert.are.equal("new", a:get("bad"))
    assert.are.same({}, assert(store:check()).corrupt)
    store:close()
  end)

  it("is deleted by delete", function()
    local store = assert(instate.open(dir))
    local a = store:namespace("a")
    a:delete("bad")
    assert.is_nil(a:get("bad"))
    assert.are.equal(2, a:count())
    assert.are.same({}, assert(store:check()).corrupt)
    store:close()
  end)
end)

describe("a defstate variable whose record's checksum does not match", function()
  it("raises at its defstate naming it, never restores the default over it", function()
    local dir = helpers.tmpdir() .. "/s"
    instate.setup(dir)
    instate.defstate("good", 0):set(1)
    instate.defstate("hurt", 0):set({ gold = 250 })
    assert(instate.save_all())
    instate.teardown()
    local rec = helpers.record_bytes("hurt", instate.encode({ gold = 250 }), nil, 1)
    flip(dir .. "/data.mdb", find_once(dir .. "/data.mdb", rec) + #rec - 1, 0x01)
    assert(instate.setup(dir))
    assert.are.equal(1, instate.defstate("good", 0):get())
    local ok, err = pcall(instate.defstate, "hurt", 0)
    assert.is_false(ok)
    assert.are.equal("instate.defstate: cannot restore variable 'hurt': cannot read key 'hurt':"
      .. " corrupt data (code CORRUPT)", err:gsub("^[^:]+:%d+: ", ""))
    -- a save now would make the defaults look saved: it raises, naming it
    assert.has_error(function() instate.save_all() end,
      "instate.save_all: the saved values of 'hurt' could not be restored (their defstate raised);"
      .. " nothing was saved. Restore a backup (instate.restore_backup) or delete those records,"
      .. " then declare them again")
    instate.teardown()
    local store = assert(instate.open(dir))
    assert.are.same({ state = { "hurt" } }, assert(store:check()).corrupt)
    -- deleting the record is the choice of the default: saves work again
    assert.is_true(store:namespace("state", "state"):delete("hurt"))
    store:close()
    assert(instate.setup(dir))
    assert.are.equal(0, instate.defstate("hurt", 0):get())
    assert(instate.save_all())
    instate.teardown()
  end)
end)

describe("a namespace entry of __meta with an unknown type byte", function()
  it("reads as CORRUPT, not as a type mismatch, and the rest of the store works", function()
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    assert(store:transaction(function(tx)
      tx:namespace("x"):set("k", 1)
      tx:namespace("y"):set("k", 2)
      return true
    end))
    store:close()
    -- "ns:x" -> u32 id 1, u8 type 1 (kv), right after the key in its
    -- LMDB node: make the type 3
    local at = find_once(dir .. "/data.mdb", "ns:x\0\0\0\1\1")
    flip(dir .. "/data.mdb", at + 8, 0x02)
    store = assert(instate.open(dir))
    for _, kind in ipairs({ "kv", "state" }) do
      local ns, msg, code = store:namespace("x", kind)
      assert.is_nil(ns)
      assert.are.equal("cannot open namespace 'x': corrupt data", msg)
      assert.are.equal("CORRUPT", code)
    end
    assert.are.equal(2, store:namespace("y"):get("k"))
    local r = assert(store:check())
    assert.are.same({ "x" }, r.corrupt_namespaces)
    assert.are.equal(2, r.records)
    store:close()
  end)
end)

-- ---------------------------------------------------------------------------
-- Single-byte flips of data.mdb outside its two meta pages.
-- ---------------------------------------------------------------------------

-- The child: for flips [start..] of the list, copy the pristine file with
-- one byte flipped into a fresh store directory, open it read-only, read
-- everything every way, and print one token per answer between BEGIN/END.
local CHILD = [[
local instate = require "instate"
local helpers = require "helpers"
local pristine, list, start, work = arg[1], arg[2], tonumber(arg[3]), arg[4]
local NAMES, KEYS = %s, %s
instate._set_clock(%d)
local f = assert(io.open(pristine, "rb")); local data = f:read("*a"); f:close()
local flips = {}
for line in io.lines(list) do
  local p, m = line:match("(%%d+) (%%d+)"); flips[#flips + 1] = { tonumber(p), tonumber(m) }
end
local function hex(s) return (s:gsub(".", function(c) return ("%%02x"):format(c:byte()) end)) end
local function err_tok(msg, code)
  if code == "CORRUPT" or tostring(msg):upper():find("CORRUPT", 1, true) then return "E:CORRUPT" end
  return "E:" .. tostring(code or msg):gsub("%%s", "_")
end
local function val_tok(v, msg, code)
  if v == nil and msg then return err_tok(msg, code) end
  if v == nil then return "nil" end
  return "v:" .. hex(instate.encode(v, "v", { canonical = true }))
end
-- One "label token" line per answer.
local function answers(dir)
  local out = {}
  local function put(label, tok) out[#out + 1] = label .. " " .. tok end
  local s, msg, code = instate.open(dir, { readonly = true })
  if not s then put("open", err_tok(msg, code)); return out end
  for _, name in ipairs(NAMES) do
    local ok, ns = pcall(s.namespace, s, name, name == "s" and "state" or nil)
    if not ok then put("ns:" .. name, err_tok(ns)) else
      for _, k in ipairs(KEYS[name]) do
        for _, call in ipairs({ "get", "has", "ttl" }) do
          local okc, v, m, c = pcall(ns[call], ns, k)
          put(name .. "/" .. call .. "/" .. k, okc and val_tok(v, m, c) or err_tok(v))
        end
      end
      local okp, list = pcall(function()
        local t = {}
        for k, v in ns:pairs() do t[#t + 1] = hex(k) .. "=" .. hex(instate.encode(v, "v", { canonical = true })) end
        return "P:" .. table.concat(t, ",")
      end)
      put(name .. "/pairs", okp and list or err_tok(list))
      local okn, n, m, c = pcall(ns.count, ns)
      put(name .. "/count", okn and val_tok(n, m, c) or err_tok(n))
    end
  end
  local okr, r, m, c = pcall(s.check, s)
  if okr and r then
    local bad = #r.corrupt_namespaces
    for _, keys in pairs(r.corrupt) do bad = bad + #keys end
    put("check", bad > 0 and "E:CORRUPT" or ("C:" .. r.records))
  else
    put("check", err_tok(okr and m or r, c))
  end
  s:close()
  return out
end
for i = start, #flips do
  local dir = work .. "/f" .. i
  os.execute("mkdir -p " .. dir)
  local p, m = flips[i][1], flips[i][2]
  local g = assert(io.open(dir .. "/data.mdb", "wb"))
  if p == 0 then g:write(data) else
    g:write(helpers.flip_byte(data, p, m))
  end
  g:close()
  io.write("BEGIN ", i, "\n", table.concat(answers(dir), "\n"), "\nEND ", i, "\n")
  io.flush()
  os.remove(dir .. "/data.mdb"); os.remove(dir .. "/lock.mdb"); os.remove(dir)
end
]]

-- A Lua table constructor for a list of strings / a map of lists.
local function lua_list(t)
  local parts = {}
  for _, s in ipairs(t) do parts[#parts + 1] = ("%q"):format(s) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Run the child over every flip; returns results[i] = array of tokens, or
-- "crash <status>" for a flip during which the child died.
local function run_flips(pristine, flips, names, keys)
  local work = helpers.tmpdir()
  local listfile = work .. "/flips.txt"
  local lines = {}
  for i, f in ipairs(flips) do lines[i] = f[1] .. " " .. f[2] end
  helpers.write_file(listfile, table.concat(lines, "\n") .. "\n")
  local keymap = {}
  for _, n in ipairs(names) do keymap[#keymap + 1] = ("[%q]=%s"):format(n, lua_list(keys[n])) end
  local script = work .. "/child.lua"
  helpers.write_file(script, CHILD:format(lua_list(names), "{" .. table.concat(keymap, ",") .. "}",
    T0))
  local results, start = {}, 1
  while start <= #flips do
    local p = io.popen(helpers.lua_cmd() .. " " .. helpers.sh_quote(script) .. " "
      .. helpers.sh_quote(pristine) .. " " .. helpers.sh_quote(listfile) .. " " .. start .. " "
      .. helpers.sh_quote(work) .. " 2>/dev/null; echo \"EXIT $?\"")
    local out = p:read("*a")
    p:close()
    local last = start - 1
    for i, body in out:gmatch("BEGIN (%d+)\n(.-)\nEND %d+\n") do
      local toks = {}
      for t in body:gmatch("[^\n]+") do toks[#toks + 1] = t end
      results[tonumber(i)] = toks
      last = tonumber(i)
    end
    local status = tonumber(out:match("EXIT (%d+)\n$"))
    if last < #flips then
      -- the child died during flip last + 1
      results[last + 1] = "crash " .. tostring(status)
      os.execute("rm -rf " .. helpers.sh_quote(work .. "/f" .. (last + 1)))
    end
    start = last + 2
  end
  return results
end

-- correct / detected / silent / crash, against the answers of the pristine
-- file: every answer must be the right one or CORRUPT; an answer that is
-- missing is covered by a CORRUPT of the open or of its namespace.
local function classify(base, got)
  if type(got) == "string" then return "crash" end
  local map, detected = {}, false
  for _, line in ipairs(got) do
    local label, tok = line:match("^(%S+) (.*)$")
    map[label] = tok
    if tok == "E:CORRUPT" then detected = true end
  end
  for _, line in ipairs(base) do
    local label, tok = line:match("^(%S+) (.*)$")
    local g = map[label]
    if g == nil then
      local ns = label:match("^([^/]+)/")
      if map.open ~= "E:CORRUPT" and not (ns and map["ns:" .. ns] == "E:CORRUPT") then
        if os.getenv("INSTATE_FLIPS_DEBUG") then print(label, tok, "missing", got[1]) end
        return "silent"
      end
    elseif g ~= tok and g ~= "E:CORRUPT" then
      if os.getenv("INSTATE_FLIPS_DEBUG") then print(label, tok, g) end
      return "silent"
    end
  end
  return detected and "detected" or "correct"
end

describe("single-byte flips of data.mdb", function()
  it("give no silent wrong answer and no crash inside records; LMDB's own pages are counted", function()
    instate._set_clock(T0)
    local dir = helpers.tmpdir() .. "/s"
    local store = assert(instate.open(dir))
    local recs = {
      { "a", "plain", "a plain string value, 39 bytes long...." },
      { "a", "timed", { x = 1.5, y = -3, tag = "timed" }, 120 },
      { "a", "table", { 1, 2, 3, { deep = { "nested", true, false } } } },
      { "s", "var", { hp = 100, name = "Alice", inv = { "sword", "shield" } } },
    }
    local names, keys = { "a", "s" }, { a = {}, s = {} }
    assert(store:transaction(function(tx)
      for _, r in ipairs(recs) do
        local ns = tx:namespace(r[1], r[1] == "s" and "state" or nil)
        assert(ns:set(r[2], r[3], r[4] and { ttl = r[4] } or nil))
      end
      local a = tx:namespace("a")
      assert(a:set_encoded("versioned", instate.encode("v7"), { version = 7 }))
      for i = 1, 40 do assert(a:set(("k%03d"):format(i), i * 1000)) end
      return true
    end))
    store:close()
    instate._set_clock(nil)
    for _, r in ipairs(recs) do table.insert(keys[r[1]], r[2]) end
    table.insert(keys.a, "versioned")
    for i = 1, 40 do table.insert(keys.a, ("k%03d"):format(i)) end

    local pristine = dir .. "/data.mdb"
    local data = helpers.read_file(pristine)
    if os.getenv("INSTATE_FLIPS_KEEP") then helpers.write_file(os.getenv("INSTATE_FLIPS_KEEP"), data) end
    local page = 4096
    assert(#data > 2 * page)
    -- The byte ranges of whole records (header and value), found by their bytes.
    local in_record = {}
    local function mark(key, payload, exp, ver)
      local bytes = helpers.record_bytes(key, payload, exp, ver)
      local at = find_once(pristine, bytes)
      for p = at, at + #bytes - 1 do in_record[p] = true end
      return at, #bytes
    end
    local every, size_bytes = {}, {}
    for _, r in ipairs(recs) do
      local at, n = mark(r[2], instate.encode(r[3]), r[4] and T0 + r[4] * 1000 or nil)
      every[#every + 1] = { at, n }
      -- LMDB's node header right before the key: u16 data size low, u16
      -- data size high (little-endian), u16 flags, u16 key size. The data
      -- size is outside the checksum, but the core checks it against the page.
      local node = at - #r[2] - 8
      for p = node, node + 3 do size_bytes[p] = true end
    end
    mark("versioned", instate.encode("v7"), nil, 7)
    for i = 1, 40 do mark(("k%03d"):format(i), instate.encode(i * 1000)) end

    -- Deterministic choice: every byte of the four records above, then
    -- random positions after the meta pages.
    math.randomseed(20261201)
    local flips = { { 0, 0 } } -- the pristine file first
    for _, e in ipairs(every) do
      for p = e[1], e[1] + e[2] - 1 do flips[#flips + 1] = { p, math.random(1, 255) } end
    end
    for p in pairs(size_bytes) do flips[#flips + 1] = { p, 0x80 } end
    table.sort(flips, function(x, y) return x[1] < y[1] end)
    local nrandom = tonumber(os.getenv("INSTATE_FLIPS")) or 250
    for _ = 1, nrandom do
      flips[#flips + 1] = { math.random(2 * page + 1, #data), math.random(1, 255) }
    end
    local results = run_flips(pristine, flips, names, keys)
    local base = results[1]
    assert.are.equal("table", type(base), "the pristine file reads")
    for _, t in ipairs(base) do assert.is_nil(t:find(" E:"), t) end

    local counts = { record = {}, lmdb = {} }
    for _, k in pairs(counts) do k.correct, k.detected, k.silent, k.crash = 0, 0, 0, 0 end
    local bad = {}
    for i = 2, #flips do
      local region = in_record[flips[i][1]] and "record" or "lmdb"
      local c = classify(base, results[i])
      counts[region][c] = counts[region][c] + 1
      if os.getenv("INSTATE_FLIPS_DEBUG") and c ~= "correct" and c ~= "detected" then
        print(("%s flip at byte %d (page %d + %d) ^ %d: %s"):format(region, flips[i][1] - 1,
          math.floor((flips[i][1] - 1) / page), (flips[i][1] - 1) % page, flips[i][2], c))
      end
      if (region == "record" or size_bytes[flips[i][1]]) and (c == "silent" or c == "crash") then
        bad[#bad + 1] = ("byte %d ^ %d: %s"):format(flips[i][1] - 1, flips[i][2], c)
      end
    end
    for _, region in ipairs({ "record", "lmdb" }) do
      local k = counts[region]
      print(("flips in %-6s: %4d correct, %4d CORRUPT, %4d silent wrong, %4d crash"):format(
        region, k.correct, k.detected, k.silent, k.crash))
    end
    assert.are.same({}, bad)
    assert.is_true(counts.record.detected > 100)
  end)
end)
