--- Store paths: missing parents are made (mkdir -p, 0700), permission denied
-- is ACCESS, and after a failed setup the next call says why.
local instate = require "instate"
local helpers = require "helpers"
local q = helpers.sh_quote

local function mode_of(path)
  local out = helpers.shell("stat -c %a " .. q(path))
  return (out:gsub("%s+$", ""))
end

local function is_dir(path)
  return helpers.execute("test -d " .. q(path))
end

-- As root, a child process as nobody (setpriv): root bypasses permissions,
-- nobody does not. As another user, the child runs as that user.
local function as_unprivileged()
  if helpers.shell("id -u"):match("^0") then
    return "setpriv --reuid=65534 --regid=65534 --clear-groups "
  end
  return ""
end

describe("store paths", function()
  local dir
  before_each(function()
    dir = helpers.tmpdir()
  end)
  after_each(function()
    instate.teardown()
  end)

  it("open makes missing parent directories, mode 0700", function()
    local path = dir .. "/saves/slot/1/store"
    local s = assert(instate.open(path, { sync = "none" }))
    s:namespace("kv"):set("k", 1)
    s:close()
    for _, d in ipairs({ "/saves", "/saves/slot", "/saves/slot/1", "/saves/slot/1/store" }) do
      assert.equal("700", mode_of(dir .. d))
    end
    s = assert(instate.open(path .. "/", { sync = "none" }))
    assert.equal(1, s:namespace("kv"):get("k"))
    s:close()
  end)

  it("open with single_file makes the file's missing parents", function()
    local path = dir .. "/a/b/save.mdb"
    local s = assert(instate.open(path, { single_file = true, sync = "none" }))
    s:close()
    assert.equal("700", mode_of(dir .. "/a"))
    assert.equal("700", mode_of(dir .. "/a/b"))
    assert.is_true(helpers.execute("test -f " .. q(path)))
  end)

  it("a read-only open makes nothing", function()
    local ok, msg, code = instate.open(dir .. "/x/y/store", { readonly = true })
    assert.is_nil(ok)
    assert.equal("NOTFOUND", code)
    assert.matches(dir .. "/x/y/store", msg, 1, true)
    assert.is_false(is_dir(dir .. "/x"))
  end)

  it("setup makes missing parents, and defstate then works", function()
    assert(instate.setup(dir .. "/new/save", { sync = "none" }))
    local v = instate.defstate("hero", { hp = 3 })
    assert.equal(3, v:get().hp)
    assert(instate.save_all())
    assert.equal("700", mode_of(dir .. "/new"))
  end)

  it("after a failed setup, defstate, save_all and reload_all say why it failed", function()
    helpers.write_file(dir .. "/file", "not a directory")
    local path = dir .. "/file/save"
    local ok, msg, code = instate.setup(path)
    assert.is_nil(ok)
    assert.equal("IO", code)
    assert.equal(("cannot open store '%s': Not a directory"):format(path), msg)
    local why = ("instate.setup failed: %s (IO)"):format(msg)
    local function raised(fn, ...)
      local r, e = pcall(fn, ...)
      assert.is_false(r)
      return e
    end
    assert.matches("instate.defstate: no store for variable 'hero'; " .. why,
      raised(instate.defstate, "hero", 1), 1, true)
    assert.matches("instate.save_all: no store; " .. why, raised(instate.save_all), 1, true)
    assert.matches("instate.reload_all: no store; " .. why, raised(instate.reload_all), 1, true)
    -- a later successful setup forgets the failure; teardown too
    assert(instate.setup(dir .. "/good", { sync = "none" }))
    instate.teardown()
    assert.matches("instate.defstate: no store for variable 'hero'; call instate.setup(path) first",
      raised(instate.defstate, "hero", 1), 1, true)
    assert.is_nil(instate.setup(path))
    instate.teardown()
    assert.matches("call instate.setup(path) first", raised(instate.defstate, "hero", 1), 1, true)
  end)

  it("permission denied is ACCESS, in open and in setup, for the store and a missing parent", function()
    -- a directory the child cannot write: root's 0755 one as nobody, or
    -- one's own 0555 one as another user
    assert.is_true(helpers.execute("chmod 755 " .. q(dir)))
    local locked = dir .. "/locked"
    assert.is_true(helpers.execute("mkdir -m 755 " .. q(locked)))
    local prefix = as_unprivileged()
    if prefix == "" then assert.is_true(helpers.execute("chmod 555 " .. q(locked))) end
    local child = dir .. "/child.lua"
    helpers.write_file(child, [[
local instate = require "instate"
local function show(...) print((select(2, ...)), (select(3, ...))) end
show(instate.open(arg[1] .. "/store"))
show(instate.open(arg[1] .. "/new/parent/store"))
show(instate.open(arg[1] .. "/new/save.mdb", { single_file = true }))
show(instate.setup(arg[1] .. "/save"))
local ok, e = pcall(instate.defstate, "x", 1)
print(e)
]])
    local out = helpers.shell(prefix .. helpers.lua_cmd() .. " " .. q(child) .. " " .. q(locked) .. " 2>&1")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(("cannot open store '%s/store': Permission denied\tACCESS"):format(locked), lines[1])
    assert.equal(("cannot open store '%s/new/parent/store': Permission denied\tACCESS"):format(locked),
      lines[2])
    assert.equal(("cannot open store '%s/new/save.mdb': Permission denied\tACCESS"):format(locked),
      lines[3])
    assert.equal(("cannot open store '%s/save': Permission denied\tACCESS"):format(locked), lines[4])
    assert.equal(("instate.defstate: no store for variable 'x'; instate.setup failed: "
      .. "cannot open store '%s/save': Permission denied (ACCESS)"):format(locked), lines[5])
    assert.is_false(is_dir(locked .. "/new"))
    assert.is_false(is_dir(locked .. "/store"))
  end)
end)
