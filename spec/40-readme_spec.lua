-- Every ```lua block of README.md runs as written, alone: in a fresh
-- process and an empty scratch directory, with nothing before it. A print
-- whose output the README shows (`print(x)  --> 42`, or a `--> ...` line of
-- its own below it) must print exactly that (whitespace runs compare equal;
-- a trailing remark in parentheses is not part of the output).
local helpers = require "helpers"

-- The blocks, each with the README line it starts at.
local function blocks()
  local text = assert(helpers.read_file(helpers.source_dir() .. "/README.md"))
  local list, lineno, inside, code, start = {}, 0, false, nil, nil
  for line in (text .. "\n"):gmatch("(.-)\n") do
    lineno = lineno + 1
    if inside then
      if line:match("^```") then
        inside = false
        list[#list + 1] = { code = code, line = start }
      else
        code[#code + 1] = line
      end
    elseif line == "```lua" then
      inside, code, start = true, {}, lineno + 1
    end
  end
  return list
end

local function expected_text(s)
  return (s:gsub("%s+%([^()]*%)%s*$", ""))
end

-- The block with each shown print turned into a checked one.
local function instrument(block)
  local lines, out = block.code, {}
  local function shown_call(i, indent, args, shown)
    out[#out + 1] = ("%s__shown(%d, %q, %s)"):format(indent, block.line + i - 1,
      expected_text(shown), args:sub(2, -2))
  end
  local i = 1
  while i <= #lines do
    local line, nxt = lines[i], lines[i + 1]
    local indent, args, shown = line:match("^(%s*)print(%b())%s*%-%->%s*(.-)%s*$")
    local below = not indent and nxt and nxt:match("^%s*%-%->%s*(.-)%s*$")
    if indent then
      shown_call(i, indent, args, shown)
    elseif below and line:match("^%s*print%b()%s*$") then
      indent, args = line:match("^(%s*)print(%b())")
      shown_call(i, indent, args, below)
      out[#out + 1] = nxt
      i = i + 1
    else
      out[#out + 1] = line
    end
    i = i + 1
  end
  return table.concat(out, "\n") .. "\n"
end

-- What the instrumented block calls: print, then compare.
local SHOWN = [[
local function __norm(s) return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end
function __shown(line, want, ...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  local got = table.concat(parts, "\t")
  print(got)
  if __norm(got) ~= __norm(want) then
    error(("README.md:%d prints %q, but the README shows %q"):format(line, got, want), 2)
  end
end
]]

describe("README examples", function()
  it("has lua blocks", function()
    assert.is_true(#blocks() >= 5)
  end)

  it("checks what a shown print prints", function()
    local code = instrument({ line = 10, code = { 'print(1 + 1)   --> 3' } })
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/example.lua", SHOWN .. code)
    local out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && " .. helpers.lua_cmd()
      .. " example.lua 2>&1")
    assert.is_false(ok)
    assert.matches('README.md:10 prints "2", but the README shows "3"', out, 1, true)
  end)

  for _, block in ipairs(blocks()) do
    it("block at line " .. block.line .. " runs alone", function()
      local dir = helpers.tmpdir()
      -- SHOWN is one line ahead of the block's own lines: no line numbers
      -- of the block shift, since it goes on the same first line.
      helpers.write_file(dir .. "/example.lua", SHOWN:gsub("\n", " ") .. instrument(block))
      local out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && " .. helpers.lua_cmd()
        .. " example.lua 2>&1")
      assert.is_true(ok, ("README.md block at line %d:\n%s"):format(block.line, out))
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
