-- One owner: instate.setup takes the store's owner lock; a second process
-- gets nil, msg, "LOCKED" naming the owner's pid, or opens read-only when
-- asked; store-level access (instate.open) stays multi-process; the lock
-- goes with its process however it ends (teardown, exit, kill -9).
local helpers = require "helpers"
local instate = require "instate"

local q = helpers.sh_quote

local function sleep(s) os.execute("sleep " .. s) end

local function alive(pid)
  return helpers.execute("kill -0 " .. pid .. " 2>/dev/null")
end

-- A child that waits for `go` to exist (when given), sets up the store,
-- prints "won <pid>" or "refused <code> <msg>", then, having won, holds the
-- store until `stop` exists. Its pid comes from the shell ($!).
local CHILD = [[
local instate = require "instate"
local path, go, stop = ...
local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
if go ~= "" then
  for _ = 1, 3000 do if exists(go) then break end os.execute("sleep 0.01") end
end
local store, msg, code = instate.setup(path)
if store then
  instate.defstate("owner_test", 0)
  assert(instate.save_all())
  io.write("won\n") io.flush()
  for _ = 1, 3000 do if exists(stop) then break end os.execute("sleep 0.01") end
  instate.teardown()
else
  io.write("refused ", tostring(code), " ", tostring(msg), "\n") io.flush()
end
]]

local dir, script

-- Start a child in the background; returns its pid and output file.
local function spawn(path, go, stop, tag)
  local out = ("%s/out-%s.txt"):format(dir, tag)
  local p = io.popen(("%s %s %s %s %s > %s 2>&1 & echo $!"):format(helpers.lua_cmd(),
    q(script), q(path), q(go or ""), q(stop), q(out)))
  local pid = assert(tonumber(p:read("*l")))
  p:close()
  return pid, out
end

-- The child's first line, once it has written one (waiting up to 30 s).
local function first_line(out)
  for _ = 1, 3000 do
    local s = helpers.read_file(out)
    if s and s:find("\n") then return (s:match("^[^\n]*")) end
    sleep(0.01)
  end
  error("no output in " .. out .. ": " .. tostring(helpers.read_file(out)))
end

local function wait_exit(pid)
  for _ = 1, 3000 do
    if not alive(pid) then return end
    sleep(0.01)
  end
  error("process " .. pid .. " did not exit")
end

-- Run a chunk in a fresh process; its output lines.
local function run(code, ...)
  local out, ok = helpers.run_lua("local instate = require 'instate'\n" .. code, ...)
  assert(ok, "child failed:\n" .. out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

local function locked_msg(path, pid)
  return ("instate.setup: cannot own store '%s': another process owns the store (pid %d): another copy of the program has it set up; pass {readonly = true} to open it without owning it")
    :format(path, pid)
end

describe("defstate's owner lock", function()
  local path, stop
  before_each(function()
    dir = helpers.tmpdir()
    script = dir .. "/child.lua"
    helpers.write_file(script, CHILD)
    path = dir .. "/save"
    stop = dir .. "/stop"
  end)
  after_each(function()
    helpers.write_file(stop, "")
    instate.teardown()
  end)

  it("refuses a second process with LOCKED naming the owner's pid", function()
    local pid, out = spawn(path, nil, stop, "owner")
    assert.equal("won", first_line(out))
    assert.equal(pid .. "\n", helpers.read_file(path .. "/owner.lock"))
    local store, msg, code = instate.setup(path)
    assert.is_nil(store)
    assert.equal("LOCKED", code)
    assert.equal(locked_msg(path, pid), msg)
    -- what comes next says why there is no store
    assert.has_error(function() instate.defstate("x", 1) end,
      ("instate.defstate: no store for variable 'x'; instate.setup failed: %s (LOCKED)"):format(msg))
    helpers.write_file(stop, "")
    wait_exit(pid)
    -- released with its owner: ours now, and the file names us
    assert.truthy(instate.setup(path))
    local mine = helpers.read_file(path .. "/owner.lock")
    assert.matches("^%d+\n$", mine)
    assert.not_equal(pid .. "\n", mine)
  end)

  it("lets exactly one of two racing processes win; the other names the winner", function()
    for round = 1, 5 do
      local go = ("%s/go%d"):format(dir, round)
      local rpath = ("%s/race%d"):format(dir, round)
      local rstop = ("%s/stop%d"):format(dir, round)
      local pa, oa = spawn(rpath, go, rstop, "a" .. round)
      local pb, ob = spawn(rpath, go, rstop, "b" .. round)
      sleep(0.1)
      helpers.write_file(go, "")
      local la, lb = first_line(oa), first_line(ob)
      local winner, loser_line
      if la == "won" then winner, loser_line = pa, lb else winner, loser_line = pb, la end
      assert.is_true((la == "won") ~= (lb == "won"), "round " .. round .. ": " .. la .. " / " .. lb)
      assert.equal("refused LOCKED " .. locked_msg(rpath, winner), loser_line)
      helpers.write_file(rstop, "")
      wait_exit(pa)
      wait_exit(pb)
    end
  end)

  it("is released when its owner is killed with SIGKILL", function()
    local pid, out = spawn(path, nil, stop, "killed")
    assert.equal("won", first_line(out))
    assert.equal("LOCKED", select(3, instate.setup(path)))
    os.execute("kill -9 " .. pid)
    wait_exit(pid)
    -- the dead owner's pid is still in the file; the lock is not
    assert.equal(pid .. "\n", helpers.read_file(path .. "/owner.lock"))
    local store, msg, code = instate.setup(path)
    assert.truthy(store, msg)
    assert.is_nil(code)
    instate.teardown()
    -- and after us, a new process wins too
    local pid2, out2 = spawn(path, nil, stop, "after")
    assert.equal("won", first_line(out2))
    helpers.write_file(stop, "")
    wait_exit(pid2)
  end)

  it("is released by teardown, and held again by the next setup", function()
    assert.truthy(instate.setup(path))
    assert.same({ "LOCKED" }, run([[
      local _, _, code = instate.setup(...)
      print(code)
    ]], path))
    instate.teardown()
    -- emptied at a clean release
    assert.equal("", helpers.read_file(path .. "/owner.lock"))
    assert.same({ "won", "released" }, run([[
      assert(instate.setup(...))
      print("won")
      instate.teardown()
      print("released")
    ]], path))
    assert.truthy(instate.setup(path))
    assert.same({ "LOCKED" }, run([[
      local _, _, code = instate.setup(...)
      print(code)
    ]], path))
  end)

  it("opens read-only without the lock: defstate restores, save_all returns READONLY", function()
    assert.truthy(instate.setup(path))
    instate.defstate("score", 0):set(42)
    assert.truthy(instate.save_all())
    assert.same({
      "score 42", "nil|instate.save_all: the store '" .. path ..
        "' was set up read-only ({readonly = true}); nothing was saved|READONLY",
      "still 42",
    }, run([[
      local path = ...
      assert(instate.setup(path, { readonly = true }))
      local score = instate.defstate("score", 0)
      print("score " .. score:get())
      score:set(1)
      local r, msg, code = instate.save_all()
      print(tostring(r) .. "|" .. msg .. "|" .. code)
      local s = assert(instate.open(path, { readonly = true }))
      print("still " .. s:namespace("state", "state"):get("score"))
    ]], path))
    -- the owner saves on, untouched
    instate.defstate("score", 0):set(43)
    assert.truthy(instate.save_all())
  end)

  it("keeps store-level access multi-process while the store is owned", function()
    assert.truthy(instate.setup(path))
    assert.same({ "true", "hello" }, run([[
      local s = assert(instate.open(...))
      local ns = s:namespace("notes")
      print(tostring(ns:set("k", "hello")))
      print(ns:get("k"))
    ]], path))
    local s = assert(instate.open(path))
    assert.equal("hello", s:namespace("notes"):get("k"))
    s:close()
  end)

  it("is one owner per process: another handle of this process may take it", function()
    local owned = assert(instate.setup(path))
    local other = assert(instate.open(path))
    local ok, pid = other:lock_owner()
    assert.is_true(ok)
    assert.equal(tonumber((helpers.read_file(path .. "/owner.lock"))), pid)
    -- the lock stays while either handle that took it is open
    instate.teardown()
    assert.same({ "LOCKED" }, run([[
      local _, _, code = instate.setup(...)
      print(code)
    ]], path))
    other:close()
    assert.same({ "won" }, run([[
      assert(instate.setup(...))
      print("won")
    ]], path))
    assert.is_false(owned == nil)
  end)

  it("store:lock_owner refuses a read-only handle", function()
    assert.truthy(instate.setup(path))
    instate.teardown()
    local s = assert(instate.open(path, { readonly = true }))
    local ok, msg, code = s:lock_owner()
    assert.is_nil(ok)
    assert.equal("READONLY", code)
    assert.equal("cannot own store '" .. path .. "': the store is read-only", msg)
    s:close()
  end)

  it("puts the lock file beside a single-file store", function()
    local file = dir .. "/save.db"
    assert.truthy(instate.setup(file, { single_file = true }))
    assert.matches("^%d+\n$", helpers.read_file(file .. "-owner"))
    assert.same({ "LOCKED" }, run([[
      local _, _, code = instate.setup(..., { single_file = true })
      print(code)
    ]], file))
  end)

  describe("the instate command", function()
    local BIN = helpers.build_dir() .. "/bin/instate"
    if BIN:sub(1, 1) ~= "/" then BIN = os.getenv("PWD") .. "/" .. BIN end
    local function absolute(paths)
      local pwd = os.getenv("PWD")
      return (paths:gsub("[^;]+", function(p)
        if p:sub(1, 1) == "/" then return p end
        return pwd .. "/" .. p
      end))
    end
    local ENV = ("env LUA_PATH=%s LUA_CPATH=%s"):format(q(absolute(package.path)), q(absolute(package.cpath)))
    local function cli(...)
      local args = {}
      for i = 1, select("#", ...) do args[i] = q(select(i, ...)) end
      local errfile = dir .. "/cli.err"
      local out, ok = helpers.shell(("%s %s %s 2>%s"):format(ENV, q(BIN), table.concat(args, " "), q(errfile)))
      return out, helpers.read_file(errfile), ok
    end

    it("reads an owned store, and writes to it only with --force", function()
      local pid, out = spawn(path, nil, stop, "cli")
      assert.equal("won", first_line(out))
      local got, err, ok = cli("get", path, "state", "owner_test")
      assert.equal("", err)
      assert.is_true(ok)
      assert.equal("0\n", got)
      local refused = ("instate: cannot own store '%s': another process owns the store (pid %d); a program has it set up: stop it first, or pass --force to write anyway (LOCKED)\n")
        :format(path, pid)
      -- dump is a read too
      got, err, ok = cli("dump", path, dir .. "/copy.isd")
      assert.equal("", err)
      assert.is_true(ok)
      for _, args in ipairs({
        { "set", path, "notes", "k", "1" },
        { "del", path, "state", "owner_test" },
        { "load", path, dir .. "/copy.isd" },
      }) do
        got, err, ok = cli((table.unpack or unpack)(args))
        assert.is_false(ok, args[1])
        assert.equal(refused, err, args[1])
      end
      got, err, ok = cli("set", path, "notes", "k", "1", "--force")
      assert.equal("", err)
      assert.is_true(ok)
      assert.equal("1\n", (cli("get", path, "notes", "k")))
      helpers.write_file(stop, "")
      wait_exit(pid)
      -- without an owner, the lock is the command's while it writes
      got, err, ok = cli("set", path, "notes", "k", "2")
      assert.equal("", err)
      assert.is_true(ok)
      assert.equal("", helpers.read_file(path .. "/owner.lock"))
    end)
  end)
end)
