--- Shared spec helpers: temporary directories, child Lua processes.
local helpers = {}

local floor = math.floor
local tmpdirs = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.sh_quote = sh_quote

--- A fresh empty directory, removed when the Lua state closes.
function helpers.tmpdir()
  local p = io.popen("mktemp -d /tmp/instate-spec.XXXXXX")
  local dir = p:read("*l")
  p:close()
  assert(dir and #dir > 0, "mktemp failed")
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

-- Remove every directory handed out, also when busted exits without
-- running finalizers in order: a to-be-collected sentinel and atexit-style
-- cleanup through a table with __gc.
setmetatable(tmpdirs, { __gc = function(t)
  for _, dir in ipairs(t) do os.execute("rm -rf " .. sh_quote(dir)) end
end })

-- Exit statuses: from 5.2 on, os.execute returns true for a status of 0 and
-- a pipe's close returns it too; 5.1 and LuaJIT return os.execute's status
-- as a number and nothing from a pipe's close, so the shell prints it.
local CLOSE_HAS_STATUS = _VERSION ~= "Lua 5.1"

--- Run a shell command; as os.execute does from 5.2 on: true (or nil)
-- when it exited with status 0 (or not), then "exit" and its status, or
-- "signal" and the signal that killed it. 5.1 and LuaJIT return the wait
-- status of system(3) as one number: it is decoded here.
function helpers.execute_status(cmd)
  local r, how, code = os.execute(cmd)
  if type(r) ~= "number" then return r or nil, how, code end
  if r % 256 == 0 then
    code = floor(r / 256)
    return code == 0 or nil, "exit", code
  end
  return nil, "signal", r % 128
end

--- Run a shell command; true when it exited with status 0.
function helpers.execute(cmd)
  return helpers.execute_status(cmd) == true
end

--- Run a shell command; its standard output, and true when it exited with
-- status 0 (false otherwise).
function helpers.shell(cmd)
  if CLOSE_HAS_STATUS then
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    return out, p:close() == true
  end
  local p = assert(io.popen("(" .. cmd .. "); echo \"\001$?\""))
  local all = p:read("*a")
  p:close()
  local out, status = all:match("^(.*)\001(%d+)\n$")
  assert(out, "helpers.shell: no exit status in the output of " .. cmd)
  return out, status == "0"
end

--- Lua's own message for indexing a value of a class that has no such
-- field or no __newindex (the handles' metatables name their class in
-- __name): 5.3 and 5.4 name the class, 5.1, 5.2 and LuaJIT say "userdata".
-- var is how the message names the value, e.g. "upvalue 'ns'".
function helpers.index_error(class, var)
  if _VERSION == "Lua 5.3" or _VERSION == "Lua 5.4" then
    return ("attempt to index a %s value (%s)"):format(class, var)
  end
  return ("attempt to index %s (a userdata value)"):format(var)
end

--- Give the collector an object whose finalizer calls fn: a table with
-- __gc from 5.2 on; on 5.1 and LuaJIT, whose tables have no finalizers, a
-- userdata (newproxy).
function helpers.on_gc(fn)
  if newproxy then
    local u = newproxy(true)
    getmetatable(u).__gc = fn
  else
    setmetatable({}, { __gc = fn })
  end
end

--- The build directory the specs run against (set by ctest).
--- Whether this Lua can tell a collector that runs from one the program
-- stopped (collectgarbage("isrunning"): all but plain 5.1). Where it can,
-- setup's bulk read stops the collector while it builds (and so runs no
-- finalizer in the middle of it).
function helpers.gc_tells_running()
  local ok, running = pcall(collectgarbage, "isrunning")
  return ok and type(running) == "boolean"
end

function helpers.build_dir()
  return os.getenv("INSTATE_BUILD_DIR") or "build"
end

--- The source tree root.
function helpers.source_dir()
  return os.getenv("INSTATE_SOURCE_DIR") or "."
end

--- The interpreter child processes run: INSTATE_LUA_INTERP (set by ctest),
-- else the one running the specs by its Debian name (lua5.1 .. lua5.4,
-- luajit).
helpers.lua_bin = os.getenv("INSTATE_LUA_INTERP")
  or (jit and "luajit") or ("lua" .. _VERSION:match("%d+%.%d+"))

--- A shell prefix that runs helpers.lua_bin with the module paths of this
-- run, e.g. helpers.lua_cmd() .. " child.lua".
function helpers.lua_cmd()
  local env = {
    "LUA_CPATH=" .. sh_quote(package.cpath),
    "LUA_PATH=" .. sh_quote(package.path),
  }
  return "env " .. table.concat(env, " ") .. " " .. helpers.lua_bin
end

--- Run a Lua chunk in a fresh helpers.lua_bin process; returns its stdout and
-- whether it exited with status 0.
function helpers.run_lua(code, ...)
  local dir = helpers.tmpdir()
  local file = dir .. "/child.lua"
  local f = assert(io.open(file, "w"))
  f:write(code)
  f:close()
  local args = {}
  for i = 1, select("#", ...) do args[i] = sh_quote(select(i, ...)) end
  return helpers.shell(helpers.lua_cmd() .. " " .. sh_quote(file) .. " "
    .. table.concat(args, " ") .. " 2>&1")
end

--- The message of the error fn(...) raises (fails when it does not raise).
function helpers.errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(err)
end

--- Start script in a background helpers.lua_bin process with the given
-- arguments, its stdout and stderr to file out; returns its pid.
function helpers.spawn_lua(script, out, ...)
  local args = {}
  for i = 1, select("#", ...) do args[i] = sh_quote(tostring((select(i, ...)))) end
  local p = io.popen(("%s %s %s > %s 2>&1 & echo $!"):format(helpers.lua_cmd(),
    sh_quote(script), table.concat(args, " "), sh_quote(out)))
  local pid = assert(tonumber(p:read("*l")), "no pid")
  p:close()
  return pid
end

--- Whether any thread of process pid still runs (Linux /proc). A killed
-- process's main thread can be a zombie while another of its threads still
-- finishes a system call (an fsync) and holds its files and locks open; a
-- zombie nobody reaps yet is dead.
function helpers.alive(pid)
  local p = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
  local tasks = p:read("*a")
  p:close()
  for tid in tasks:gmatch("%d+") do
    local f = io.open(("/proc/%d/task/%s/stat"):format(pid, tid))
    if f then
      local stat = f:read("*a")
      f:close()
      if stat:match("^%d+ %b() (%a)") ~= "Z" then return true end
    end
  end
  return false
end

--- SIGKILL process pid and wait (up to 2 s) until none of its threads runs;
-- fails if one still does.
function helpers.kill9(pid)
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  for _ = 1, 200 do
    if not helpers.alive(pid) then return end
    os.execute("sleep 0.01")
  end
  assert(not helpers.alive(pid), "process " .. pid .. " survived kill -9")
end

--- The number on the last complete line of file (0 if none): the last
-- round a child reported before it was killed.
function helpers.last_number(file)
  local data = helpers.read_file(file) or ""
  local last = 0
  for line in data:gmatch("([^\n]*)\n") do
    last = assert(tonumber(line), "unexpected child output: " .. line)
  end
  return last
end

--- The async crash specs' loop: kills times, run the Lua source child
-- (args: path, arg; it saves round after round and prints each round a
-- flush reported durable) and SIGKILL it after min_s plus up to 0.4 s
-- (0.5 s more under the sanitizers); then held(kill, flushed) opens the
-- store and returns the round it holds. Fails if that is ever older than
-- what flush reported or than an earlier run's; returns the last round.
function helpers.kill9_rounds(child, path, arg, kills, min_s, held)
  local dir = helpers.tmpdir()
  local script = dir .. "/child.lua"
  helpers.write_file(script, child)
  math.randomseed(os.time())
  local slow = os.getenv("INSTATE_SANITIZE") and 0.5 or 0
  local saved = 0
  for kill = 1, kills do
    local out = ("%s/out%d.txt"):format(dir, kill)
    local pid = helpers.spawn_lua(script, out, path, arg)
    os.execute(("sleep %.3f"):format(slow + min_s + math.random() * 0.4))
    helpers.kill9(pid)
    local flushed = helpers.last_number(out)
    local round = held(kill, flushed)
    assert(round >= flushed and round >= saved,
      ("kill %d: store holds round %d, flush reported %d, earlier runs saved %d")
        :format(kill, round, flushed, saved))
    saved = round
  end
  return saved
end

--- The crash specs' state: variables v0001..v<n> each stamped with the
-- save round that wrote them ({round = r, pad = ..., list = {r, i}} or the
-- integer r). Opens path with instate.setup as a new run would and returns
-- the one round every variable holds; fails naming the first variable that
-- holds another (a mixed save) or a damaged stamp.
function helpers.saved_round(instate, path, n)
  assert(instate.setup(path))
  local first
  for i = 1, n do
    local v = instate.defstate(("v%04d"):format(i), 0):get()
    local r = type(v) == "table" and v.round or v
    if type(v) == "table" and not (type(v.list) == "table" and v.list[1] == r
        and v.list[2] == i and v.pad == ("x"):rep((i * 37 + r) % 900)) then
      instate.teardown()
      error(("v%04d holds a damaged stamp of round %s"):format(i, tostring(r)))
    end
    first = first or r
    if r ~= first then
      instate.teardown()
      error(("mixed save: v0001 holds round %d but v%04d holds round %d"):format(first, i, r))
    end
  end
  instate.teardown()
  return first
end

--- A new run of the same program: instate.teardown() and setup(path,
-- opts) again; returns the store.
function helpers.restart(instate, path, opts)
  instate.teardown()
  return assert(instate.setup(path, opts))
end

--- The value saved for a variable, read back in a new run, around the
-- defstate layer (the store is left set up, with nothing declared); nil
-- when there is no record.
function helpers.saved(instate, path, name)
  local store = helpers.restart(instate, path)
  local bytes = store:namespace("state", "state"):get_encoded(name)
  return bytes and instate.decode(bytes)
end

--- The methods of every namespace handle: the __index of the Namespace
-- class, which stands behind every namespace's own fields (specs wrap them
-- to count calls).
function helpers.ns_methods()
  local methods = debug.getregistry()["instate.Namespace"].__index
  assert(type(methods) == "table" and methods.save_many and methods.set_encoded,
    "no namespace method table")
  return methods
end

--- The values ns:save_many is handed (it encodes each one in C) while
-- fn runs: what save_all found it had to encode.
function helpers.count_save_many(fn)
  local methods = helpers.ns_methods()
  local real, n = methods.save_many, 0
  methods.save_many = function(ns, count, ...) n = n + count; return real(ns, count, ...) end
  local ok, err = pcall(fn)
  methods.save_many = real
  assert(ok, err)
  return n
end

--- Read a whole file (nil if missing).
function helpers.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Write a whole file.
function helpers.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- A file's size in bytes.
function helpers.file_size(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

--- The names in a directory (dot files too), sorted.
function helpers.dir_entries(dir)
  local p = io.popen("ls -A " .. sh_quote(dir))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  table.sort(t)
  return t
end

--- Every record of a namespace as a table key -> value.
function helpers.contents(ns)
  local t = {}
  for k, v in ns:pairs() do t[k] = v end
  return t
end

--- -0.0, made at run time: Lua 5.1 stores a -0.0 literal in a function that
-- also uses the constant 0 as that 0 (its constants are keyed by value).
helpers.neg_zero = -1 / math.huge

-- ---------------------------------------------------------------------------
-- Bytes and bits, written with arithmetic so that they run alike on every
-- Lua (5.1 and LuaJIT have no bitwise operators and no string.pack). Exact
-- for the integers they are given: 0 <= n < 2^53.
-- ---------------------------------------------------------------------------

local function check_uint(n, what)
  assert(type(n) == "number" and n >= 0 and n < 2 ^ 53 and n == floor(n),
    what .. ": a non-negative integer below 2^53 expected, got " .. tostring(n))
end

--- n as `width` bytes, big-endian (string.pack(">I<width>", n)).
function helpers.be(n, width)
  check_uint(n, "helpers.be")
  local t = {}
  for i = width, 1, -1 do
    local b = n % 256
    t[i] = string.char(b)
    n = (n - b) / 256
  end
  assert(n == 0, "helpers.be: value does not fit in " .. width .. " bytes")
  return table.concat(t)
end

--- n as `width` bytes, little-endian (string.pack("<I<width>", n)).
function helpers.le(n, width)
  return helpers.be(n, width):reverse()
end

--- The length-prefixed string of string.pack(">s1", s).
function helpers.s1(s)
  assert(#s < 256, "helpers.s1: string longer than 255 bytes")
  return string.char(#s) .. s
end

--- The subset of string.pack the specs use, on every Lua: "<" or ">"
-- (little or big-endian, the latter by default), B, I1..I8, i1..i8 for
-- values >= 0, s1. Raises on anything else.
function helpers.pack(fmt, ...)
  local out, n, big = {}, 0, true
  for code, size in fmt:gmatch("([<>BIis])(%d*)") do
    if code == "<" or code == ">" then
      big = code == ">"
    else
      n = n + 1
      local v = select(n, ...)
      if code == "s" then
        assert(size == "1", "helpers.pack: only s1 is supported")
        out[#out + 1] = helpers.s1(v)
      else
        local w = code == "B" and 1 or tonumber(size)
        assert(w and w >= 1 and w <= 8, "helpers.pack: bad size in " .. fmt)
        out[#out + 1] = big and helpers.be(v, w) or helpers.le(v, w)
      end
    end
  end
  assert(not fmt:find("[^<>BIis%d]"), "helpers.pack: unsupported format " .. fmt)
  return table.concat(out)
end

-- XOR of two bytes, from a 256 x 256 table built once.
local xor8
local function bxor8(a, b)
  if not xor8 then
    xor8 = {}
    for x = 0, 255 do
      for y = 0, 255 do
        local r, m, xx, yy = 0, 1, x, y
        for _ = 1, 8 do
          local bx, by = xx % 2, yy % 2
          if bx ~= by then r = r + m end
          xx, yy, m = (xx - bx) / 2, (yy - by) / 2, m * 2
        end
        xor8[x * 256 + y] = r
      end
    end
  end
  return xor8[a * 256 + b]
end

--- XOR of two integers in [0, 2^32).
local function bxor32(a, b)
  local r, m = 0, 1
  for _ = 1, 4 do
    local x, y = a % 256, b % 256
    r = r + bxor8(x, y) * m
    a, b, m = (a - x) / 256, (b - y) / 256, m * 256
  end
  return floor(r)
end
helpers.bxor32 = bxor32

--- The byte at position i of s with the bits of mask flipped.
function helpers.flip_byte(s, i, mask)
  return s:sub(1, i - 1) .. string.char(bxor8(s:byte(i), mask)) .. s:sub(i + 1)
end

--- The 8 bytes of a double as 16 hex digits, little-endian (NaN payloads,
-- -0.0): through string.pack on 5.3 and 5.4, the FFI on LuaJIT. Lua 5.1
-- and 5.2 cannot see the sign or payload of a NaN: every NaN gives "nan".
local float_bits
if string.pack then
  local pack = string.pack
  float_bits = function(x)
    return (pack("<d", x):gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  end
elseif jit then
  local ffi = require "ffi"
  local box = ffi.new("union { double d; uint8_t b[8]; }")
  float_bits = function(x)
    box.d = x
    local t = {}
    for i = 0, 7 do t[#t + 1] = ("%02x"):format(box.b[i]) end
    return table.concat(t)
  end
else
  float_bits = function(x)
    if x ~= x then return "nan" end
    local sign = (x < 0 or 1 / x < 0) and 2 ^ 63 or 0
    x = math.abs(x)
    local e, m
    if x == math.huge then
      e, m = 2047, 0
    elseif x == 0 then
      e, m = 0, 0
    else
      local f, ex = math.frexp(x)       -- x = f * 2^ex, 0.5 <= f < 1
      if ex + 1022 >= 1 then
        e, m = ex + 1022, (f * 2 - 1) * 2 ^ 52
      else                              -- subnormal
        e, m = 0, x / 2 ^ -1074
      end
    end
    -- sign + e * 2^52 + m can exceed 2^53: build the bytes in two halves.
    local hi = sign / 2 ^ 32 + e * 2 ^ 20 + floor(m / 2 ^ 32)
    local lo = m % 2 ^ 32
    return (helpers.le(lo, 4) .. helpers.le(hi, 4)):gsub(".", function(c)
      return ("%02x"):format(c:byte())
    end)
  end
end
function helpers.float_bits(x) return (float_bits(x)) end

--- n incompressible bytes, the same for the same seed (a positive
-- integer, default 1) on every Lua: MINSTD (x * 48271 mod 2^31 - 1), whose
-- products stay below 2^53, so that they are exact in doubles too.
function helpers.noise(n, seed)
  local x, t = (seed or 1) % 2147483647, {}
  if x == 0 then x = 1 end
  for i = 1, n do
    x = x * 48271 % 2147483647
    t[i] = string.char(floor(x / 8388608) % 256)
  end
  return table.concat(t)
end

local crc_table
--- CRC-32C (Castagnoli) of a string, as the store and dump files use it;
-- crc continues the CRC of what came before s.
function helpers.crc32c(s, crc)
  if not crc_table then
    crc_table = {}
    for i = 0, 255 do
      local c = i
      for _ = 1, 8 do
        if c % 2 == 1 then c = bxor32((c - 1) / 2, 0x82F63B78) else c = c / 2 end
      end
      crc_table[i] = floor(c)
    end
  end
  local c = bxor32(crc or 0, 0xFFFFFFFF)
  for i = 1, #s do
    local low = c % 256
    c = bxor32(crc_table[bxor8(low, s:byte(i))], (c - low) / 256)
  end
  return bxor32(c, 0xFFFFFFFF)
end

--- The bytes of a store record of key `key` (docs/FORMAT.md section 2):
-- flags, CRC-32C (of the key, the flags and what follows the CRC), then the
-- expiry and version when given, then the payload. For writing records
-- behind the store's back.
function helpers.record_bytes(key, payload, expires_ms, version)
  local flags, rest = 0x04, ""
  if expires_ms then flags, rest = flags + 0x01, rest .. helpers.be(expires_ms, 8) end
  if version then flags, rest = flags + 0x02, rest .. helpers.be(version, 4) end
  rest = rest .. payload
  return string.char(flags)
    .. helpers.be(helpers.crc32c(key .. string.char(flags) .. rest), 4) .. rest
end

--- Write one raw record behind the store's back (python3-lmdb): in the LMDB
-- database of namespace ns of the store directory dir, key -> bytes.
function helpers.put_raw(dir, ns, key, bytes)
  local function py_bytes(b)
    return (b:gsub(".", function(c) return ("\\x%02x"):format(c:byte()) end))
  end
  local py = ([[
import lmdb
env = lmdb.open(%q, max_dbs=8)
db = env.open_db(b"%s")
with env.begin(write=True) as txn:
    txn.put(b"%s", b"%s", db=db)
]]):format(dir, py_bytes(ns), py_bytes(key), py_bytes(bytes))
  local script = helpers.tmpdir() .. "/put_raw.py"
  helpers.write_file(script, py)
  local out, ok = helpers.shell("/usr/bin/python3 " .. helpers.sh_quote(script) .. " 2>&1")
  assert(ok, out)
end

return helpers
