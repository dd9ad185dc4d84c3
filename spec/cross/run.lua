--- The cross-Lua round trip: each of Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT
-- writes the value set of spec/cross/roundtrip.lua (store records and a
-- dump file) in a process of its own, then each reads what every one wrote
-- (25 reader/writer pairs, the store and the dump each), value by value.
--
-- Needs the module built for each Lua: build/ (5.4, `make test`) and
-- build-lua5.1/, build-lua5.2/, build-lua5.3/, build-luajit/
-- (`make test-lua LUA=...`). A missing build or interpreter is a failure,
-- never a skip. Run from the source tree: `make test-cross`, or
--   lua5.4 spec/cross/run.lua [SOURCE_DIR]
-- Ends with "cross-Lua round trip: N passed, M failed"; exits 1 on any
-- failure.
local src = arg[1] or "."

local LUAS = {
  { name = "5.1", build = "build-lua5.1", interp = "lua5.1" },
  { name = "5.2", build = "build-lua5.2", interp = "lua5.2" },
  { name = "5.3", build = "build-lua5.3", interp = "lua5.3" },
  { name = "5.4", build = "build", interp = "lua5.4" },
  { name = "luajit", build = "build-luajit", interp = "luajit" },
}

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function shell(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("*a")
  p:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  return out:gsub("exit=%d+%s*$", ""), status
end

local passed, failed = 0, 0
local function fail(what)
  failed = failed + 1
  io.write("FAIL ", what, "\n")
end

local tmp = shell("mktemp -d /tmp/instate-cross.XXXXXX"):match("[^\n]+")
assert(tmp and #tmp > 0, "mktemp failed")

local function run(lua, ...)
  local cmd = ("LUA_CPATH=%s LUA_PATH=%s %s %s"):format(
    q(src .. "/" .. lua.build .. "/lib/?.so;;"),
    q(src .. "/lua/?.lua;" .. src .. "/lua/?/init.lua;;"),
    lua.interp, q(src .. "/spec/cross/roundtrip.lua"))
  for _, a in ipairs({ ... }) do cmd = cmd .. " " .. q(a) end
  return shell(cmd)
end

-- Every Lua must be there: a missing one fails the run.
local ready = {}
for _, lua in ipairs(LUAS) do
  local so = src .. "/" .. lua.build .. "/lib/instate/core.so"
  local f = io.open(so, "rb")
  local _, st = shell("command -v " .. lua.interp)
  if not f then
    fail(lua.name .. ": no module at " .. so .. " (build it: make test-lua LUA=" .. lua.name .. ")")
  elseif st ~= 0 then
    f:close()
    fail(lua.name .. ": no interpreter " .. lua.interp)
  else
    f:close()
    ready[#ready + 1] = lua
  end
end

-- Writers
local wrote = {}
for _, lua in ipairs(ready) do
  local dir = tmp .. "/" .. lua.name
  shell("mkdir -p " .. q(dir))
  local out, st = run(lua, "write", dir)
  if st == 0 then
    wrote[#wrote + 1] = lua
    io.write(out)
  else
    fail(lua.name .. " could not write:\n" .. out)
  end
end

-- Readers: every Lua reads what every one wrote
for _, reader in ipairs(ready) do
  for _, writer in ipairs(wrote) do
    local out, st = run(reader, "read", tmp .. "/" .. writer.name, writer.name)
    local p, f = out:match("(%d+) passed, (%d+) failed%s*$")
    if p then
      passed, failed = passed + tonumber(p), failed + tonumber(f)
      io.write(out)
      if st ~= 0 and tonumber(f) == 0 then fail(reader.name .. " <- " .. writer.name .. " exited " .. st) end
    else
      fail(reader.name .. " <- " .. writer.name .. " did not finish:\n" .. out)
    end
  end
end
if #wrote ~= #LUAS then fail((#LUAS - #wrote) .. " of " .. #LUAS .. " Luas did not write") end

shell("rm -rf " .. q(tmp))
io.write(("cross-Lua round trip: %d passed, %d failed\n"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
