-- A smoke suite in plain Lua (no busted), for the Windows builds under
-- Wine and for the Linux build that reads back what they wrote:
--
--   lua smoke.lua suite DIR     open, namespaces, defstate saved by one
--                               process and restored by another, dump and
--                               load, growth past the initial map, a
--                               non-ASCII store path (DIR/sauvegarde-é
--                               must exist), replacing an existing dump
--   lua smoke.lua write DIR     a store (DIR/store) and a dump (DIR/dump.isd)
--   lua smoke.lua read DIR      checks both, as written by `write` anywhere
--
-- The module comes from INSTATE_CPATH (a package.cpath entry), the Lua
-- layer from this file's tree. Runs on Lua 5.1 to 5.4 and LuaJIT. Exits 1
-- naming the first check that failed.
local script = arg[0]
local root = (script:match("^(.*)[/\\]") or ".") .. "/../.."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
if os.getenv("INSTATE_CPATH") then
  package.cpath = os.getenv("INSTATE_CPATH") .. ";" .. package.cpath
end
local instate = require "instate"

local windows = package.config:sub(1, 1) == "\\"
local mode, dir = arg[1], arg[2]
assert(mode and dir, "usage: smoke.lua suite|write|read DIR")

local checks = 0
local function check(cond, what, ...)
  if not cond then
    io.stderr:write("smoke: FAILED: ", what, "\n")
    for _, v in ipairs({ ... }) do io.stderr:write("  ", tostring(v), "\n") end
    os.exit(1)
  end
  checks = checks + 1
end

-- An open that must succeed, naming the path when it does not.
local function open(path, opts)
  local store, msg, code = instate.open(path, opts)
  check(store ~= nil, "open " .. path, msg, code)
  return store
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Run this script again as a child process; true when it exited with 0.
local function child(...)
  local words = { arg[-1], script, ... }
  for i, w in ipairs(words) do words[i] = '"' .. w .. '"' end
  local cmd = table.concat(words, " ")
  -- cmd.exe drops the first and last quote of a command that has more
  -- than two: give it a pair of its own.
  if windows then cmd = '"' .. cmd .. '"' end
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- The records `write` puts in each namespace, and `read` expects.
local function expected()
  return {
    settings = { volume = 0.75, name = "Zoë", keys = { "w", "a", "s", "d" } },
    scores = { [1] = 1200, [2] = 980, best = { who = "ana", at = 3 } },
    blob = string.rep("\0\1\2\255", 64),
    big = 2 ^ 40 + 1,
  }
end

local function same(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a == b then return true end
    return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b)
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": extra" end
  end
  return true
end

local function check_records(store, where)
  local want = expected()
  local game = store:namespace("game")
  for k, v in pairs(want) do
    local got, msg, code = game:get(k)
    local ok, why = same(v, got)
    check(ok, where .. ": game/" .. k, why, msg, code)
  end
  check(game:count() == 4, where .. ": 4 records in game", game:count())
  check(store:namespace("other"):get("k") == "v", where .. ": other/k")
end

local function write_records(store)
  local game = store:namespace("game")
  for k, v in pairs(expected()) do assert(game:set(k, v)) end
  assert(store:namespace("other"):set("k", "v"))
end

-- ---------------------------------------------------------------------------
-- The suite
-- ---------------------------------------------------------------------------
local function suite()
  -- open, namespaces, reopen
  local path = dir .. "/basic"
  local store = open(path)
  local a, b = store:namespace("a"), store:namespace("b")
  check(a:set("k", { 1, 2.5, "x", nested = { true } }), "set a/k")
  check(b:set("k", "in b"), "set b/k")
  check(a:get("k")[2] == 2.5 and a:get("k").nested[1] == true, "get a/k")
  check(b:get("k") == "in b", "namespaces keep their own keys")
  local names = {}
  for _, n in ipairs(store:namespaces()) do names[n] = true end
  check(names.a and names.b, "store:namespaces() lists a and b")
  local rev = store:revision()
  store:close()
  store = open(path)
  check(store:revision() == rev, "revision after reopen", store:revision(), rev)
  check(store:namespace("b"):get("k") == "in b", "b/k after reopen")

  -- the initial data file, then growth past the initial map
  local stats = store:stats()
  io.write(("data.mdb after open: %d bytes (map_size %d)\n")
    :format(file_size(path .. "/data.mdb") or -1, stats.map_size))
  store:close()
  local gpath = dir .. "/growth"
  store = open(gpath, { map_size = 1024 * 1024 })
  local map0 = store:stats().map_size
  io.write(("growth store: data.mdb %d bytes at open (map_size %d)\n")
    :format(file_size(gpath .. "/data.mdb") or -1, map0))
  local g = store:namespace("g")
  local chunk = string.rep("x", 16 * 1024)
  for i = 1, 256 do
    local ok, msg, code = g:set("k" .. i, chunk .. i)
    check(ok, "set past the initial map, record " .. i, msg, code)
  end
  local map1 = store:stats().map_size
  check(map1 > map0, "the map grew", map0, map1)
  check(g:get("k256") == chunk .. 256 and g:count() == 256, "records after growth")
  io.write(("growth store: 4 MiB written, data.mdb %d bytes (map_size %d)\n")
    :format(file_size(gpath .. "/data.mdb") or -1, map1))
  store:close()
  store = open(gpath)
  check(store:namespace("g"):get("k1") == chunk .. 1, "records after growth and reopen")
  store:close()

  -- defstate: one process saves, another restores
  local spath = dir .. "/state"
  check(child("child-save", spath), "child process saving defstate variables")
  check(child("child-restore", spath), "child process restoring them")

  -- one owner: while this process has the store set up, a child's setup
  -- is LOCKED naming this process; after teardown the child owns it
  local owned = instate.setup(spath)
  check(owned ~= nil, "setup to own the store")
  local _, me = owned:lock_owner()
  check(child("child-locked", spath, tostring(me)), "a second process is refused, naming the owner")
  instate.teardown()
  check(child("child-restore", spath), "the lock is released by teardown")

  -- dump and load, replacing an existing dump
  store = open(dir .. "/dumped")
  write_records(store)
  local dump = dir .. "/state.isd"
  local info, msg, code = store:dump(dump)
  check(info and info.records == 5, "dump", msg, code)
  store:namespace("game"):set("big", 0.25)
  info, msg, code = store:dump(dump)
  check(info and info.records == 5, "dump over an existing dump", msg, code)
  local fresh = open(dir .. "/loaded")
  info, msg, code = fresh:load(dump)
  check(info and info.records == 5, "load", msg, code)
  check(fresh:namespace("game"):get("big") == 0.25, "the load reads the replacing dump",
    fresh:namespace("game"):get("big"))
  local about = instate.dump_info(dump)
  check(about and about.records == 5, "dump_info")
  fresh:close()
  store:close()

  -- a non-ASCII path: UTF-8 here, UTF-16 to Windows
  local upath = dir .. "/sauvegarde-\195\169/\230\151\165\230\156\172"
  store = open(upath)
  check(store:namespace("n"):set("k", "é"), "set in the non-ASCII store")
  store:close()
  store = open(upath)
  check(store:namespace("n"):get("k") == "é", "reopen the non-ASCII store")
  local udump = upath .. "/../\230\151\165\230\156\172.isd"
  check(store:dump(udump), "dump to a non-ASCII path")
  check(store:dump(udump), "dump over it")
  check(store:load(udump), "load from a non-ASCII path")
  store:close()
end

local function child_save()
  assert(instate.setup(dir))
  local hero = instate.defstate("hero", { hp = 20, gold = 0, name = "Zoë" })
  check(not hero:saved(), "a fresh store holds no hero")
  hero:get().gold = 15
  hero:update(function(h) h.hp = h.hp - 3; return h end)
  local level = instate.defstate("level", 1)
  level:set(4)
  check(instate.save_all(), "save_all")
  instate.teardown()
end

local function child_restore()
  assert(instate.setup(dir))
  local hero = instate.defstate("hero", { hp = 20, gold = 0, name = "Zoë" })
  check(hero:saved(), "the hero was saved by the other process")
  check(hero:get().hp == 17 and hero:get().gold == 15 and hero:get().name == "Zoë",
    "the hero restored", hero:get().hp, hero:get().gold)
  check(instate.defstate("level", 1):get() == 4, "the level restored")
  instate.teardown()
end

local function child_locked()
  local owner = arg[3]
  local store, msg, code = instate.setup(dir)
  check(store == nil and code == "LOCKED", "setup of an owned store is LOCKED", msg, code)
  check(tostring(msg):find("(pid " .. owner .. ")", 1, true) ~= nil, "LOCKED names the owner", msg)
  check(instate.setup(dir, { readonly = true }), "a read-only setup beside the owner")
  check(instate.defstate("level", 1):get() == 4, "restored read-only")
  local r, _, rcode = instate.save_all()
  check(r == nil and rcode == "READONLY", "save_all of a read-only setup is READONLY", rcode)
  instate.teardown()
end

local function write()
  local store = open(dir .. "/store")
  write_records(store)
  local info, msg, code = store:dump(dir .. "/dump.isd")
  check(info, "dump", msg, code)
  store:close()
end

local function read()
  local store = open(dir .. "/store")
  check_records(store, "the store")
  local report = store:check()
  check(report and report.records == 5 and next(report.corrupt) == nil, "store:check()")
  store:close()
  local fresh = open(dir .. "/from-dump-" .. (windows and "windows" or "linux"))
  local info, msg, code = fresh:load(dir .. "/dump.isd")
  check(info and info.records == 5, "load the dump", msg, code)
  check_records(fresh, "the loaded dump")
  fresh:close()
end

local modes = { suite = suite, write = write, read = read,
  ["child-save"] = child_save, ["child-restore"] = child_restore,
  ["child-locked"] = child_locked }
check(modes[mode] ~= nil, "mode " .. tostring(mode))
modes[mode]()
io.write(("smoke %s: %d checks passed (%s on %s)\n"):format(mode, checks,
  jit and jit.version or _VERSION, windows and "Windows" or "Linux"))
