--- bench_compat: what the benchmarks need that differs between Lua 5.1, 5.2,
-- 5.3, 5.4 and LuaJIT 2.1 (the Lua layer's own differences are in
-- lua/instate/compat.lua, which this file takes load from). Not a benchmark:
-- the Makefile's bench targets skip it.
--
--  * idiv2(n): n // 2 for a non-negative integral n.
--  * rshift(h, n): h >> n for a non-negative integral h below 2^53.
--  * random(a, b) / random(), randomseed(s): a generator that gives the same
--    sequence on every Lua (math.random does not: 5.4 has xoshiro, the
--    others the C library's rand), so that every Lua times the same values.
--    Park-Miller's minimal standard: the products stay below 2^53, exact in
--    doubles; on 5.3+ random(a, b) is an integer, as math.random's is.
--  * read_all: the read format that reads a whole file ("*a"; 5.3+ also
--    take "a", 5.1 and 5.2 only "*a").
--  * exists(path): `test -e`, from os.execute's true (5.2+) or 0 (5.1,
--    LuaJIT).
--  * load(chunk, name, mode, env), unpack(t, i, j): compat's.
--  * qnum(v): a number as a Lua literal that reads back the same: %q on
--    5.3+, %.17g elsewhere (5.1 and 5.2's %q quotes it as a string).
--  * s4(s): s with its 4-byte little-endian length before it,
--    string.pack("<s4", s).
--  * messagepack(): lua-messagepack's module, or nil and why. Debian's
--    package installs it for 5.1, 5.2 and 5.3 only; on 5.4 its 5.3 file
--    (string.pack, math.type: it runs on 5.4 alike) is found beside
--    package.path's 5.4 directories.
--  * floor_server(floor, db, recs, fifo): bench/lmdb_floor serving durable
--    one-record commits on request (its serve mode), so that a benchmark
--    takes one floor commit right before each of its own saves: a loaded
--    disk then slows both alike. Returns an object with :commit() (the
--    seconds of one floor commit) and :close(); nil and why when it cannot
--    run (no mkfifo). fifo is a path for the answers' named pipe.
local compat = require "instate.compat"

local floor, char = math.floor, string.char

local M = {}

function M.idiv2(n) return floor(n / 2) end

function M.rshift(h, n) return floor(h / 2 ^ n) end

local M31 = 2147483647
local seed = 1
function M.randomseed(s) seed = s % M31; if seed == 0 then seed = 1 end end
function M.random(a, b)
  seed = (seed * 16807) % M31
  local r = seed / M31
  if not a then return r end
  return a + floor(r * (b - a + 1))
end

M.read_all = "*a"

function M.exists(path)
  local ok = os.execute("test -e '" .. path:gsub("'", "'\\''") .. "'")
  return ok == true or ok == 0
end

M.load, M.unpack = compat.load, compat.unpack

if math.type then
  function M.qnum(v) return ("%q"):format(v) end
else
  function M.qnum(v) return ("%.17g"):format(v) end
end

if string.pack then
  function M.s4(s) return string.pack("<s4", s) end
else
  function M.s4(s)
    local n = #s
    return char(n % 256, floor(n / 256) % 256, floor(n / 65536) % 256, floor(n / 16777216) % 256) .. s
  end
end

function M.messagepack()
  local ok, mp = pcall(require, "MessagePack")
  if ok then return mp end
  if _VERSION == "Lua 5.4" then
    local path53 = package.path:gsub("5%.4", "5.3")
    local file = package.searchpath and package.searchpath("MessagePack", path53)
    if file then
      local f = assert(loadfile(file))
      mp = f("MessagePack")
      package.loaded.MessagePack = mp
      return mp, file
    end
  end
  return nil, "lua-messagepack is not installed (apt-get install lua-messagepack)"
end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function M.floor_server(floor, db, recs, fifo)
  if not M.exists(floor) then return nil, floor .. " is not built (make)" end
  local ok = os.execute("mkfifo " .. sh_quote(fifo) .. " 2>/dev/null")
  if not (ok == true or ok == 0) then return nil, "cannot make a named pipe (mkfifo)" end
  -- The shell opens the pipe for writing once this side opens it for
  -- reading, which io.open below does.
  local req = io.popen(("%s serve %s %s > %s"):format(sh_quote(floor), sh_quote(db),
    sh_quote(recs), sh_quote(fifo)), "w")
  local ans = req and io.open(fifo, "r")
  if not ans then
    if req then req:close() end
    os.remove(fifo)
    return nil, "cannot start " .. floor .. " serve"
  end
  local server = {}
  function server:commit()
    req:write("c\n")
    req:flush()
    local line = ans:read("*l")
    local t = line and tonumber(line:match("^t=([%d.]+)"))
    if not t then error("lmdb_floor serve: " .. tostring(line)) end
    return t
  end
  function server:close()
    req:close()
    ans:close()
    os.remove(fifo)
  end
  return server
end

return M
