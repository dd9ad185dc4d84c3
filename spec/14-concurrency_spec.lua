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
    -- each transaction moves every key and a second namespace to round i
    local writer = child(dir, "writer", [[
local instate = require "instate"
local store = assert(instate.open(arg[1], { sync = "none" }))
-- start once both readers are reading, so they overlap the writes
local function ready(i) local f = io.open(arg[3] .. "/ready" .. i); if f then f:close() end; return f end
local t = os.time() + 20
while not (ready(1) and ready(2)) and os.time() < t do end
for round = 1, tonumber(arg[2]) do
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
store:namespace("log"):get("last")
io.open(arg[3] .. "/ready" .. arg[4], "w"):close()
local checks, bad, last_seen, moves = 0, 0, -1, 0
local deadline = os.time() + 20
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
  if round ~= last_seen then moves = moves + 1 end
  last_seen = round
until round == tonumber(arg[2]) or os.time() > deadline
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
      -- the reader ran while the writer did: it saw more than one round
      assert.is_true(tonumber(moves) > 1, r.out)
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
