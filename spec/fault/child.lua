--- One step of a fault point, in its own process (spec/fault/driver.lua):
--   LUA child.lua prepare|run|state OP DIR RESULT
-- "run" is started with the shim preloaded; it arms the shim only around
-- the operation. The result is written to RESULT with instate.encode.
local instate = require "instate"
local pack = require("instate.compat").pack
local ops = require "fault.ops"

local step, name, dir, result = ...
local op = assert(ops[name], "unknown operation")

local function save(t)
  local f = assert(io.open(result, "wb"))
  f:write(instate.encode(t))
  f:close()
end

if step == "prepare" then
  op.prepare(dir)
  save({ state = op.state(dir) })
elseif step == "state" then
  save({ state = op.state(dir) })
elseif step == "run" then
  local fault = require "fault"
  local fn, ctx = op.begin(dir)
  collectgarbage("collect")
  -- Disarmed before anything allocates the results: with persistent
  -- allocator faults, even table.pack would fail.
  local calls, hits
  local function capture(...)
    calls, hits = fault.disarm()
    return pack(...)
  end
  fault.arm()
  local r = capture(pcall(fn))
  -- The results as they came, but what cannot be encoded as a description.
  local res = { n = r.n - 1 }
  for i = 2, r.n do
    local v = r[i]
    local t = type(v)
    if t == "function" or t == "userdata" or t == "thread" then v = "<" .. tostring(v) .. ">" end
    res[i - 1] = v
  end
  local out = { calls = calls, hits = hits, ok = r[1], res = res }
  out.after = ops.after(name, ctx)
  save(out)
else
  error("unknown step " .. tostring(step))
end
