-- Every ```lua block of README.md runs as written, in a fresh process and a
-- scratch directory (a block that continues an earlier one gets the names
-- it needs from a short prelude).
local helpers = require "helpers"

local preludes = {
  -- blocks that use names set up by the text around them
  ["local hero = instate.defstate"] = 'local instate = require "instate"; instate.setup("save")\n',
  ["-- a nightly backup"] = 'local instate = require "instate"\n'
    .. 'local store = assert(instate.open("store"))\n'
    .. 'store:namespace("state"):set("score", 10)\n'
    .. 'os.execute("mkdir -p backup")\n',
}

local function blocks()
  local text = assert(helpers.read_file(helpers.source_dir() .. "/README.md"))
  local list = {}
  for code in text:gmatch("```lua\n(.-)```") do list[#list + 1] = code end
  return list
end

describe("README examples", function()
  for i, code in ipairs(blocks()) do
    it("block " .. i .. " runs", function()
      local prelude = ""
      for marker, p in pairs(preludes) do
        if code:find(marker, 1, true) then prelude = p end
      end
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/example.lua", prelude .. code)
      local out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && " .. helpers.lua_cmd()
        .. " example.lua 2>&1")
      assert.is_true(ok, out)
    end)
  end
end)

-- The ```c block of "The C API" compiles against this build's header and
-- static library, runs in a scratch directory, and writes what Lua reads.
describe("README C example", function()
  it("compiles, runs, and Lua reads the value it wrote", function()
    local text = assert(helpers.read_file(helpers.source_dir() .. "/README.md"))
    local section = assert(text:match("\n## The C API\n(.-)\n## "), "no C API section")
    local code = assert(section:match("```c\n(.-)```"), "no ```c block in the C API section")
    local build, dir = helpers.build_dir(), helpers.tmpdir()
    helpers.write_file(dir .. "/example.c", code)
    -- the build's own link line: its pkg-config file names what the static
    -- library needs beside it (nothing more with bundled LMDB and zstd)
    local pc = assert(helpers.read_file(build .. "/instate.pc"))
    local libs = (pc:match("\nRequires.private: libzstd") and "-lzstd " or "")
      .. (pc:match("\nLibs.private: ([^\n]*)") or "")
    local cflags = os.getenv("INSTATE_SANITIZE") and "-fsanitize=address,undefined " or ""
    local out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && cc -std=c99 -Wall -Werror "
      .. cflags .. "-I" .. helpers.sh_quote(helpers.source_dir() .. "/src") .. " example.c "
      .. helpers.sh_quote(build .. "/libinstate.a") .. " " .. libs .. " -o example 2>&1"
      .. " && ./example 2>&1")
    assert.is_true(ok, out)
    local version = out:match("^(instate [^\n]*)\n")
    assert.matches("^instate %d+%.%d+%.%d+ %(LMDB ", version)
    assert.equal(version .. "\n  name\n  hp\n  pos\n", out)
    out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && " .. helpers.lua_cmd() .. " -e "
      .. helpers.sh_quote([[
local hero = require("instate").open("game.store"):namespace("game"):get("hero")
local mt = math.type or function() return "n/a" end
io.write(table.concat({hero.name, tostring(hero.hp), mt(hero.hp), tostring(hero.pos[1]),
  tostring(hero.pos[2]), mt(hero.pos[2])}, " "))]]) .. " 2>&1")
    assert.is_true(ok, out)
    if math.type then
      assert.equal("Ayla 42 integer 1.5 -2.0 float", out)
    else
      assert.equal("Ayla 42 n/a 1.5 -2 n/a", out)
    end
  end)
end)
