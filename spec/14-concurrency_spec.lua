-- Several processes on one store: atomic increments, and readers that never
-- see half of a transaction.
local helpers = require "helpers"
local instate = require "instate"

local q = helpers.sh_quote

-- Write a child script into dir and return the command that runs it.
local function child(dir, name, code, ...)
  local file = dir .. "/" .. name .. ".lua"
  helpers.write_file(file, code)
  local args = {}
  for i = 1, select("#", ...) do args[i] = q(select(i, ...)) end
  return helpers.lua_cmd() .. " " .. q(file) .. " " .. table.concat(args, " ")
end

-- Start every command at once, wait for all; returns each one's output and
-- exit status.
local function run_all(dir, cmds)
  local parts = {}
  for i, cmd in ipairs(cmds) do
    parts[#parts + 1] = ("(%s > %s 2>&1; echo $? > %s) &"):format(cmd,
      q(dir .. "/out" .. i), q(dir .. "/rc" .. i))
  end
  os.execute(table.concat(parts, " ") .. " wait")
  local results = {}
  for i = 1, #cmds do
    results[i] = {
      out = helpers.read_file(dir .. "/out" .. i) or "",
      rc = tonumber(helpers.read_file(dir .. "/rc" .. i) or ""),
    }
  end
  return results
end

local INCR = [[
local instate = require "instate"
local path, n = arg[1], tonumber(arg[2])
local store = assert(instate.open(path, { sync = "none" }))
local ns = store:namespace("counters")
for _ = 1, n do
  local v, msg = ns:incr("hits")
  if not v then error(msg) end
end
store:close()
print("done")
]]

describe("several processes", function()
  it("4 x 1,000 incr on one key end at exactly 4,000", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/s"
    -- create the store first so the children race on records, not on creation
    local store = assert(instate.open(path, { sync = "none" }))
    store:close()
    local cmds = {}
    for i = 1, 4 do cmds[i] = child(dir, "incr" .. i, INCR, path, "1000") end
    for i, r in ipairs(run_all(dir, cmds)) do
      assert.are.equal(0, r.rc, "child " .. i .. ": " .. r.out)
      assert.are.equal("done\n", r.out)
    end
    store = assert(instate.open(path))
    assert.are.equal(4000, store:namespace("counters"):get("hits"))
    assert.are.equal(4000, store:revision())
    store:close()
  end)

  it("4 processes creating the store at once all succeed", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/s"
    local cmds = {}
    for i = 1, 4 do cmds[i] = child(dir, "incr" .. i, INCR, path, "50") end
    for i, r in ipairs(run_all(dir, cmds)) do
      assert.are.equal(0, r.rc, "child " .. i .. ": " .. r.out)
    end
    local store = assert(instate.open(path))
    assert.are.equal(200, store:namespace("counters"):get("hits"))
    store:close()
  end)

  it("readers in other processes never see a partial transaction", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/s"
    local store = assert(instate.open(path, { sync = "none" }))
    store:transaction(function(tx)
      for i = 1, 10 do tx:namespace("acct"):set("k" .. i, 0) end
      tx:namespace("log"):set("last", 0)
    end)
    store:close()
    -- Each transaction moves every key and a second namespace to round r.
    -- Round r + 1 is written once both readers have seen round r, while they
    -- keep reading: every write overlaps their reads, and however loaded the
    -- machine, each reader sees every round, in order (no deadline decides
    -- the outcome: the waits have a watchdog of 120 s without progress).
    -- A reader tells the round it last saw in the file seen<i> (replaced by
    -- a rename, so never read half-written).
    local writer = child(dir, "writer", [[
local instate = require "instate"
local store = assert(instate.open(arg[1], { sync = "none" }))
local rounds, dir = tonumber(arg[2]), arg[3]
local function seen(i)
  local f = io.open(dir .. "/seen" .. i)
  if not f then return -1 end
  local n = tonumber(f:read("*l") or "")
  f:close()
  return n or -1
end
local function wait_for(r)
  local t = os.time() + 120
  while seen(1) < r or seen(2) < r do
    if os.time() > t then error(("the readers did not see round %d within 120 s"):format(r)) end
    os.execute("sleep 0.001")
  end
end
for round = 1, rounds do
  wait_for(round - 1)
  assert(store:transaction(function(tx)
    local acct = tx:namespace("acct")
    for i = 1, 10 do acct:set("k" .. i, round) end
    tx:namespace("log"):set("last", round)
    return true
  end))
end
store:close()
print("done")
]], path, "300", dir)
    local reader = [[
local instate = require "instate"
local store = assert(instate.open(arg[1]))
local rounds, dir, id = tonumber(arg[2]), arg[3], arg[4]
local function report(round)
  local tmp = dir .. "/seen" .. id .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(round, "\n")
  f:close()
  assert(os.rename(tmp, dir .. "/seen" .. id))
end
local checks, bad, last_seen, moves = 0, 0, -1, 0
local deadline = os.time() + 120
repeat
  local round = store:snapshot(function(tx)
    local want = tx:namespace("log"):get("last")
    local n = 0
    for _, v in tx:namespace("acct"):pairs() do
      n = n + 1
      if v ~= want then bad = bad + 1 end
    end
    if n ~= 10 then bad = bad + 1 end
    return want
  end)
  checks = checks + 1
  if round < last_seen then bad = bad + 1 end
  if round ~= last_seen then
    moves = moves + 1
    last_seen = round
    report(round)
    deadline = os.time() + 120
  end
until round == rounds or os.time() > deadline
store:close()
print(checks, bad, moves, last_seen)
]]
    local results = run_all(dir, { writer, child(dir, "reader1", reader, path, "300", dir, "1"),
                                   child(dir, "reader2", reader, path, "300", dir, "2") })
    assert.are.equal(0, results[1].rc, results[1].out)
    for i = 2, 3 do
      local r = results[i]
      assert.are.equal(0, r.rc, r.out)
      local checks, bad, moves, last = r.out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)")
      assert.is_not_nil(checks, r.out)
      assert.are.equal(0, tonumber(bad), r.out)
      assert.are.equal(300, tonumber(last), r.out)
      -- the reader read while the writer wrote: it saw every round, 0 to 300
      assert.are.equal(301, tonumber(moves), r.out)
    end
  end)

  it("a process killed inside a write transaction leaves the store usable and unchanged", function()
    local dir = helpers.tmpdir()
    local path = dir .. "/s"
    local store = assert(instate.open(path))
    store:namespace("n"):set("k", "before")
    store:close()
    local cmd = child(dir, "killed", [[
local instate = require "instate"
local store = assert(instate.open(arg[1]))
store:transaction(function(tx)
  tx:namespace("n"):set("k", "half")
  io.stdout:write("inside\n"); io.stdout:flush()
  os.execute("kill -9 $PPID")
end)
]], path)
    local r = run_all(dir, { cmd })[1]
    assert.are_not.equal(0, r.rc)
    assert.matches("inside", r.out)
    store = assert(instate.open(path))
    local ns = store:namespace("n")
    assert.are.equal("before", ns:get("k"))
    assert.is_true(ns:set("k", "after"))
    assert.are.equal("after", ns:get("k"))
    store:close()
  end)
end)
