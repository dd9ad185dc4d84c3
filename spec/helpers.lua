--- Shared spec helpers: temporary directories, child Lua processes.
local helpers = {}

local tmpdirs = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helpers.sh_quote = sh_quote

--- A fresh empty directory, removed when the Lua state closes.
function helpers.tmpdir()
  local p = io.popen("mktemp -d /tmp/instate-spec.XXXXXX")
  local dir = p:read("l")
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

--- The build directory the specs run against (set by ctest).
function helpers.build_dir()
  return os.getenv("INSTATE_BUILD_DIR") or "build"
end

--- The source tree root.
function helpers.source_dir()
  return os.getenv("INSTATE_SOURCE_DIR") or "."
end

--- A shell prefix that runs lua5.4 with the module paths of this run,
-- e.g. helpers.lua_cmd() .. " child.lua".
function helpers.lua_cmd()
  local env = {
    "LUA_CPATH=" .. sh_quote(package.cpath),
    "LUA_PATH=" .. sh_quote(package.path),
  }
  return "env " .. table.concat(env, " ") .. " lua5.4"
end

--- Run a Lua chunk in a fresh lua5.4 process; returns its stdout and
-- whether it exited with status 0.
function helpers.run_lua(code, ...)
  local dir = helpers.tmpdir()
  local file = dir .. "/child.lua"
  local f = assert(io.open(file, "w"))
  f:write(code)
  f:close()
  local args = {}
  for i = 1, select("#", ...) do args[i] = sh_quote(select(i, ...)) end
  local p = io.popen(helpers.lua_cmd() .. " " .. sh_quote(file) .. " "
    .. table.concat(args, " ") .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

--- Read a whole file (nil if missing).
function helpers.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Write a whole file.
function helpers.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

--- Every record of a namespace as a table key -> value.
function helpers.contents(ns)
  local t = {}
  for k, v in ns:pairs() do t[k] = v end
  return t
end

--- Bits of a float as an integer (NaN payloads, -0.0).
function helpers.float_bits(x)
  return (string.unpack("<i8", string.pack("<d", x)))
end

local crc_table
--- CRC-32C (Castagnoli) of a string, as the store and dump files use it.
function helpers.crc32c(s)
  if not crc_table then
    crc_table = {}
    for i = 0, 255 do
      local c = i
      for _ = 1, 8 do c = (c & 1 ~= 0) and ((c >> 1) ~ 0x82F63B78) or (c >> 1) end
      crc_table[i] = c
    end
  end
  local c = 0xFFFFFFFF
  for i = 1, #s do c = crc_table[(c ~ s:byte(i)) & 0xff] ~ (c >> 8) end
  return c ~ 0xFFFFFFFF
end

--- The bytes of a store record of key `key` (docs/FORMAT.md section 2):
-- flags, CRC-32C (of the key, the flags and what follows the CRC), then the
-- expiry and version when given, then the payload. For writing records
-- behind the store's back.
function helpers.record_bytes(key, payload, expires_ms, version)
  local flags, rest = 0x04, ""
  if expires_ms then flags, rest = flags | 0x01, rest .. string.pack(">i8", expires_ms) end
  if version then flags, rest = flags | 0x02, rest .. string.pack(">I4", version) end
  rest = rest .. payload
  return string.char(flags)
    .. string.pack(">I4", helpers.crc32c(key .. string.char(flags) .. rest)) .. rest
end

return helpers
