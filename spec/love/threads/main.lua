-- Two love.threads write one store while the main thread reads it (one LMDB
-- environment in the process, shared by three Lua states). Each writer puts
-- N keys in its own transactions; the main thread's snapshots must only ever
-- see whole transactions (pairs of keys) and, at the end, all 2 * N records.
-- Prints one line: "threads: OK <reads>" or "threads: FAIL <why>".
local N = 200
local cpath, lpath = os.getenv("INSTATE_CPATH"), os.getenv("INSTATE_PATH")
package.cpath = cpath .. ";" .. package.cpath
package.path = lpath .. ";" .. package.path
local instate = require "instate"
local store_dir = os.getenv("INSTATE_LOVE_STORE")

local writer = [[
local cpath, lpath, dir, id, n = ...
package.cpath = cpath .. ";" .. package.cpath
package.path = lpath .. ";" .. package.path
local instate = require "instate"
local store = assert(instate.open(dir))
for i = 1, n do
  -- two keys per transaction: a reader sees both or neither
  assert(store:transaction(function(tx)
    local ns = tx:namespace("t")
    ns:set(id .. ":a" .. i, i)
    ns:set(id .. ":b" .. i, i)
    return true
  end))
end
store:close()
love.thread.getChannel("done"):push(id)
]]

local threads, done, reads, failure = {}, 0, 0, nil

function love.load()
  local store = assert(instate.open(store_dir))
  store:namespace("t"):set("start", true)
  store:close()
  for _, id in ipairs({ "w1", "w2" }) do
    local th = love.thread.newThread(writer)
    th:start(cpath, lpath, store_dir, id, N)
    threads[#threads + 1] = th
  end
end

local function check(store, final)
  local a, b = 0, 0
  store:snapshot(function(tx)
    for k in tx:namespace("t"):pairs() do
      if k:find(":a", 1, true) then a = a + 1 elseif k:find(":b", 1, true) then b = b + 1 end
    end
  end)
  reads = reads + 1
  if a ~= b then failure = ("a snapshot saw %d a-keys and %d b-keys"):format(a, b) end
  if final and a ~= 2 * N then failure = ("%d of %d records at the end"):format(a + b, 4 * N) end
end

local store
function love.update()
  store = store or assert(instate.open(store_dir))
  for _, th in ipairs(threads) do
    local err = th:getError()
    if err then failure = "writer: " .. err end
  end
  while love.thread.getChannel("done"):pop() do done = done + 1 end
  check(store, false)
  if done == 2 or failure then
    if not failure then check(store, true) end
    store:close()
    io.write(failure and ("threads: FAIL " .. failure) or ("threads: OK " .. reads), "\n")
    love.event.quit()
  end
end
