-- The rockspec builds and installs offline into a private tree, and the
-- installed module loads in a fresh lua5.4 process.
local helpers = require "helpers"
local compat = require "instate.compat"

local src = helpers.source_dir()
local rockspec = src .. "/rockspec/instate-scm-1.rockspec"

local function sh(cmd)
  local out, ok = helpers.shell(cmd .. " 2>&1")
  return ok, out
end

local function load_rockspec()
  local env = {}
  local chunk = assert(compat.loadfile(rockspec, "t", env))
  chunk()
  return env
end

describe("rockspec", function()
  it("lists every C source of src/ and every Lua file of lua/instate/", function()
    local spec = load_rockspec()
    local listed = {}
    for _, f in ipairs(spec.build.modules["instate.core"].sources) do listed[f] = true end
    local ok, out = sh("cd " .. helpers.sh_quote(src) .. " && ls src/*.c")
    assert.is_true(ok)
    local n = 0
    for f in out:gmatch("[^\n]+") do
      n = n + 1
      assert.is_true(listed[f] ~= nil, f .. " is missing from the rockspec")
      listed[f] = nil
    end
    assert.is_nil(next(listed), "the rockspec lists a file that does not exist")
    assert.is_true(n > 0)
    local ok2, lua_files = sh("cd " .. helpers.sh_quote(src) .. " && ls lua/instate/*.lua")
    assert.is_true(ok2)
    local mods = {}
    for _, v in pairs(spec.build.modules) do
      if type(v) == "string" then mods[v] = true end
    end
    for f in lua_files:gmatch("[^\n]+") do
      assert.is_true(mods[f] ~= nil, f .. " is missing from the rockspec")
    end
  end)

  it("builds offline into a temporary tree and loads from there", function()
    local tree = helpers.tmpdir()
    local work = helpers.tmpdir()
    -- Build from a copy, so the build leaves no objects in the source tree.
    local ok, out = sh(("cp -r %s/src %s/lua %s/rockspec %s/docs %s/bin %s/ && cd %s && "
      .. "env -u LD_PRELOAD luarocks --lua-version 5.4 --tree %s make rockspec/instate-scm-1.rockspec")
      :format(helpers.sh_quote(src), helpers.sh_quote(src), helpers.sh_quote(src),
              helpers.sh_quote(src), helpers.sh_quote(src), helpers.sh_quote(work), helpers.sh_quote(work),
              helpers.sh_quote(tree)))
    assert.is_true(ok, out)
    local probe = [[
      local instate = require "instate"
      assert(package.searchpath("instate.core", package.cpath):find(TREE, 1, true))
      assert(instate.decode(instate.encode({1, 2.5, "x"}))[2] == 2.5)
      local dir = os.tmpname(); os.remove(dir)
      local store = assert(instate.open(dir))
      store:namespace("n"):set("k", {v = 1})
      assert(store:namespace("n"):get("k").v == 1)
      store:close()
      os.execute("rm -rf " .. dir)
      print("loaded")
    ]]
    local cmd = ("cd / && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s")
      :format(
        helpers.sh_quote(tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua"),
        helpers.sh_quote(tree .. "/lib/lua/5.4/?.so"),
        helpers.sh_quote("TREE = " .. ("%q"):format(tree) .. "\n" .. probe))
    local ok2, out2 = sh(cmd)
    assert.is_true(ok2, out2)
    assert.matches("loaded", out2)
    -- the instate command, wrapped by luarocks to run with its Lua and tree
    local ok3, out3 = sh(("cd / && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH %s --version")
      :format(helpers.sh_quote(tree .. "/bin/instate")))
    assert.is_true(ok3, out3)
    assert.matches("^instate %d+%.%d+%.%d+ %(Lua 5%.4%)\n$", out3)
  end)
end)
