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

-- What the rock needs of the source tree (luarocks make builds from a copy,
-- so the build leaves no objects in the source tree).
local TREE_PARTS = { "CMakeLists.txt", "instate.pc.in", "cmake", "src", "lua",
  "rockspec", "docs", "third_party", "bin" }

-- Build the rock from a copy of the tree into a fresh tree; `prefix` runs
-- before luarocks (in the same shell). Returns the tree, and the build's output.
local function build_rock(prefix)
  local tree = helpers.tmpdir()
  local work = helpers.tmpdir()
  local parts = {}
  for _, p in ipairs(TREE_PARTS) do parts[#parts + 1] = helpers.sh_quote(p) end
  local ok, out = sh(("cd %s && tar cf - %s | (cd %s && tar xf -) && cd %s && %s "
    .. "env -u LD_PRELOAD luarocks --lua-version 5.4 --tree %s make rockspec/instate-scm-1.rockspec")
    :format(helpers.sh_quote(src), table.concat(parts, " "), helpers.sh_quote(work),
            helpers.sh_quote(work), prefix or "", helpers.sh_quote(tree)))
  assert.is_true(ok, out)
  return tree, out
end

-- The installed module loads in a fresh lua5.4 process, from the tree.
local function check_loads(tree)
  local probe = [[
    local instate = require "instate"
    assert(package.searchpath("instate.core", package.cpath):find(TREE, 1, true))
    assert(package.searchpath("instate.defstate", package.path):find(TREE, 1, true))
    assert(instate.decode(instate.encode({1, 2.5, "x"}))[2] == 2.5)
    local dir = os.tmpname(); os.remove(dir)
    local store = assert(instate.open(dir))
    store:namespace("n"):set("k", {v = 1})
    assert(store:namespace("n"):get("k").v == 1)
    local dump = dir .. ".dump"
    assert(store:dump(dump))
    store:close()
    os.execute("rm -rf " .. dir .. " " .. dump)
    print("loaded")
  ]]
  local cmd = ("cd / && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s")
    :format(
      helpers.sh_quote(tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua"),
      helpers.sh_quote(tree .. "/lib/lua/5.4/?.so"),
      helpers.sh_quote("TREE = " .. ("%q"):format(tree) .. "\n" .. probe))
  local ok, out = sh(cmd)
  assert.is_true(ok, out)
  assert.matches("loaded", out)
  -- the instate command, wrapped by luarocks to run with its Lua and tree
  local ok3, out3 = sh(("cd / && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH %s --version")
    :format(helpers.sh_quote(tree .. "/bin/instate")))
  assert.is_true(ok3, out3)
  assert.matches("^instate %d+%.%d+%.%d+ %(Lua 5%.4%)\n$", out3)
end

-- The libraries the installed module needs (readelf's NEEDED entries).
local function needed(tree)
  local ok, out = sh("readelf -d " .. helpers.sh_quote(tree .. "/lib/lua/5.4/instate/core.so"))
  assert.is_true(ok, out)
  local libs = {}
  for lib in out:gmatch("%(NEEDED%)%s+Shared library: %[([^%]]+)%]") do libs[#libs + 1] = lib end
  return table.concat(libs, " ")
end

describe("rockspec", function()
  it("builds with CMake from the tree's sources and installs every Lua file of lua/instate/", function()
    local spec = load_rockspec()
    assert.equal("cmake", spec.build.type)
    assert.equal("AUTO", spec.build.variables.INSTATE_BUNDLED_DEPS)
    assert.equal("OFF", spec.build.variables.INSTATE_TESTS)
    for _, p in ipairs(TREE_PARTS) do
      assert.is_true(helpers.execute("test -e " .. helpers.sh_quote(src .. "/" .. p)), p)
    end
  end)

  it("builds offline against the system LMDB and zstd into a temporary tree and loads from there", function()
    local tree, out = build_rock()
    assert.matches("LMDB and zstd: the system's", out)
    local libs = needed(tree)
    assert.matches("liblmdb%.so", libs)
    assert.matches("libzstd%.so", libs)
    local ok, files = sh("cd " .. helpers.sh_quote(src) .. " && ls lua/instate/*.lua")
    assert.is_true(ok)
    for f in files:gmatch("[^\n]+") do
      local installed = tree .. "/share/lua/5.4/" .. f:gsub("^lua/", "")
      assert.is_true(helpers.execute("test -f " .. helpers.sh_quote(installed)), installed)
    end
    -- The rock installs the module, not the C library or its header.
    assert.is_false(helpers.execute("test -e " .. helpers.sh_quote(tree .. "/include/instate.h")))
    check_loads(tree)
  end)

  -- A machine without liblmdb-dev: lmdb.h is hidden (an empty file in a
  -- private mount namespace, so no mdb_env_create is declared), and the
  -- rock builds LMDB and zstd from third_party/ into the module.
  -- Building zstd takes most of a minute: once per CI run, in the plain 5.4
  -- suite (make test); the other Luas and the sanitizer build make the same
  -- rock, with the same lua5.4, so there this case is not registered at all.
  local once = (os.getenv("INSTATE_LUA_INTERP") or "lua5.4") == "lua5.4"
    and not os.getenv("INSTATE_SANITIZE")
  local bundled_it = once and it or function() end
  bundled_it("builds with the bundled LMDB and zstd where no system LMDB is found", function()
    assert.is_true(helpers.execute("unshare -m true 2>/dev/null"),
      "unshare -m is needed (CI runs as root)")
    local tree, out = build_rock("unshare -m sh -c 'mount --bind /dev/null /usr/include/lmdb.h && exec \"$0\" \"$@\"'")
    assert.matches("LMDB and zstd: bundled", out)
    local libs = needed(tree)
    assert.is_nil(libs:find("lmdb", 1, true), libs)
    assert.is_nil(libs:find("zstd", 1, true), libs)
    local ok, syms = sh("nm -D --defined-only " .. helpers.sh_quote(tree .. "/lib/lua/5.4/instate/core.so"))
    assert.is_true(ok, syms)
    assert.is_nil(syms:find(" mdb_", 1, true), "core.so exports LMDB's symbols")
    assert.is_nil(syms:find(" ZSTD_", 1, true), "core.so exports zstd's symbols")
    check_loads(tree)
  end)
end)
