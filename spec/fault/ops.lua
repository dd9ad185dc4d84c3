--- The operations the fault driver (spec/fault/driver.lua) runs under the
-- shim, each with three steps run in separate processes:
--   prepare(dir)           the store (and files) before the operation;
--   begin(dir) -> op       open everything and build the inputs, unarmed;
--                          op() is then called armed, once, under pcall;
--   after(dir, ctx)        the same process, disarmed: what the handle still
--                          in use reads (nil or a failure message);
--   state(dir) -> st       a fresh process with no faults: the state on disk,
--                          st.state is "old", "new" or a description of the
--                          mix, st.revision the store's revision.
-- Each operation also says what an error may leave: strict = true means
-- "unchanged on any error" (load, save_all); otherwise the old or the new
-- state (a commit whose last step failed, a dump renamed into place whose
-- directory could not be synced).
local instate = require "instate"

local ops = {}

local NKEYS = 24

-- Values that span several pages, differing between the old and new state.
local function value(i, round, reps)
  reps = reps or 40
  return { i = i, round = round, reps = reps, pad = ("%s-%d-"):format(round, i):rep(reps),
           list = { round, i, round .. i } }
end

local function round_of(v)
  return type(v) == "table" and v.round or nil
end

local function open(dir)
  return assert(instate.open(dir .. "/store"))
end

-- "old", "new", or what is wrong, for a table name -> value expected to hold
-- value(i, round) for keys k1..kNKEYS, all of one round.
local function classify(get, nkeys, extra_old)
  local rounds, bad = {}, nil
  for i = 1, nkeys do
    local v = get("k" .. i)
    local r = round_of(v)
    if r == nil then
      bad = bad or ("k%d is %s"):format(i, tostring(v))
    else
      local want = value(i, r, v.reps)
      if v.pad ~= want.pad or v.i ~= i or v.list[3] ~= want.list[3] then
        bad = bad or ("k%d is damaged"):format(i)
      end
      rounds[r] = (rounds[r] or 0) + 1
    end
  end
  if bad then return bad end
  local old, new = rounds.old or 0, rounds.new or 0
  if old == nkeys then
    if extra_old ~= nil and not extra_old then return "old values without the deleted key" end
    return "old"
  elseif new == nkeys then
    if extra_old then return "new values with the deleted key" end
    return "new"
  end
  return ("a mix: %d old, %d new"):format(old, new)
end

local function fill(ns, round)
  for i = 1, NKEYS do assert(ns:set("k" .. i, value(i, round))) end
end

-- ---------------------------------------------------------------------
-- ns:set: one key, one write transaction.
-- ---------------------------------------------------------------------
ops.set = {
  prepare = function(dir)
    local s = open(dir)
    fill(s:namespace("kv"), "old")
    s:close()
  end,
  begin = function(dir)
    local s = open(dir)
    local ns = s:namespace("kv")
    local v = value(1, "new")
    return function() return ns:set("k1", v) end, { s = s, ns = ns }
  end,
  state = function(dir)
    local s = open(dir)
    local v = s:namespace("kv"):get("k1")
    local st = { revision = s:revision() }
    local r = round_of(v)
    st.state = (r == "old" or r == "new") and r or ("k1 is " .. tostring(v))
    s:close()
    return st
  end,
}

-- ---------------------------------------------------------------------
-- store:transaction: every key rewritten and one deleted, all or nothing.
-- ---------------------------------------------------------------------
local function tx_state(s)
  local ns = s:namespace("kv")
  return classify(function(k) return ns:get(k) end, NKEYS, ns:get("gone") ~= nil)
end

-- The operation of both transaction scenarios: every key rewritten and one
-- deleted in one transaction of s. A namespace that cannot be opened aborts
-- the transaction (a table raised by fn comes back as that table) and is
-- reported as a triple.
local function rewrite_all(s, new)
  return function()
    local ok, r, msg, code = pcall(s.transaction, s, function(tx)
      local ns, nmsg, ncode = tx:namespace("kv")
      if not ns then error({ nmsg, ncode }) end
      for i = 1, NKEYS do ns:set("k" .. i, new[i]) end
      ns:delete("gone")
      return true
    end)
    if ok then return r, msg, code end
    if type(r) == "table" then return nil, r[1], r[2] end
    error(r, 0)
  end
end

ops.transaction = {
  prepare = function(dir)
    local s = open(dir)
    local ns = s:namespace("kv")
    fill(ns, "old")
    assert(ns:set("gone", "here"))
    s:close()
  end,
  begin = function(dir)
    local s = open(dir)
    local new = {}
    for i = 1, NKEYS do new[i] = value(i, "new") end
    -- A write that fails inside is ignored on purpose: the transaction
    -- must then refuse to commit the writes before and after it.
    return rewrite_all(s, new), { s = s }
  end,
  state = function(dir)
    local s = open(dir)
    local st = { state = tx_state(s), revision = s:revision() }
    s:close()
    return st
  end,
}

-- ---------------------------------------------------------------------
-- Map growth: a transaction that outgrows a 64 KiB map (ftruncate, mmap,
-- the retry of the whole transaction).
-- ---------------------------------------------------------------------
local SMALL = { map_size = 65536 }

ops.grow = {
  prepare = function(dir)
    local s = assert(instate.open(dir .. "/store", SMALL))
    local ns = s:namespace("kv")
    fill(ns, "old")
    assert(ns:set("gone", "here"))
    s:close()
  end,
  begin = function(dir)
    local s = assert(instate.open(dir .. "/store", SMALL))
    local new = {}
    for i = 1, NKEYS do new[i] = value(i, "new", 600) end
    return rewrite_all(s, new), { s = s }
  end,
  state = function(dir)
    local s = assert(instate.open(dir .. "/store", SMALL))
    local st = { state = tx_state(s), revision = s:revision() }
    s:close()
    return st
  end,
}

-- ---------------------------------------------------------------------
-- instate.save_all: every defstate variable in one transaction.
-- ---------------------------------------------------------------------
local function declare()
  local vars = {}
  for i = 1, NKEYS do vars[i] = instate.defstate("k" .. i, false) end
  return vars
end

ops.save_all = {
  strict = true,     -- API: a runtime failure "writes nothing"
  prepare = function(dir)
    assert(instate.setup(dir .. "/store"))
    for i, var in ipairs(declare()) do var:set(value(i, "old")) end
    assert(instate.save_all())
    instate.teardown()
  end,
  begin = function(dir)
    local s = assert(instate.setup(dir .. "/store"))
    for i, var in ipairs(declare()) do var:set(value(i, "new")) end
    return instate.save_all, { s = s }
  end,
  state = function(dir)
    local s = assert(instate.setup(dir .. "/store"))
    local vars = declare()
    local st = { revision = s:revision() }
    st.state = classify(function(k) return vars[tonumber(k:sub(2))]:get() end, NKEYS)
    instate.teardown()
    return st
  end,
}

-- ---------------------------------------------------------------------
-- store:dump over an existing dump: the old file whole or the new one.
-- ---------------------------------------------------------------------
local function dump_file(dir) return dir .. "/out/saves.dump" end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function entries(d)
  local p = io.popen("ls -A '" .. d .. "'")
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  table.sort(t)
  return t
end

ops.dump = {
  prepare = function(dir)
    local s = open(dir)
    fill(s:namespace("kv"), "old")
    fill(s:namespace("other"), "old")
    os.execute("mkdir -p '" .. dir .. "/out'")
    assert(s:dump(dump_file(dir)))
    os.execute("cp '" .. dump_file(dir) .. "' '" .. dir .. "/old.dump'")
    fill(s:namespace("kv"), "new")
    fill(s:namespace("other"), "new")
    s:close()
  end,
  begin = function(dir)
    local s = open(dir)
    local path = dump_file(dir)
    return function() return s:dump(path, { compression = 3 }) end, { s = s }
  end,
  state = function(dir)
    local st = {}
    local files = entries(dir .. "/out")
    if #files ~= 1 or files[1] ~= "saves.dump" then
      st.state = "files left in the directory: " .. table.concat(files, " ")
      return st
    end
    local bytes = read(dump_file(dir))
    if bytes == read(dir .. "/old.dump") then
      st.state = "old"
    else
      local s = assert(instate.open(dir .. "/check"))
      local info, msg, code = s:load(dump_file(dir))
      if not info then
        st.state = ("the dump file is neither the old one nor whole: %s (%s)"):format(msg, code)
      else
        local a, b = s:namespace("kv"), s:namespace("other")
        local ka = classify(function(k) return a:get(k) end, NKEYS)
        local kb = classify(function(k) return b:get(k) end, NKEYS)
        st.state = (ka == "new" and kb == "new") and "new" or ("the new dump holds " .. ka .. " / " .. kb)
      end
      s:close()
      os.execute("rm -rf '" .. dir .. "/check'")
    end
    local s = open(dir)
    st.revision = s:revision()
    s:close()
    return st
  end,
}

-- ---------------------------------------------------------------------
-- store:load (replace, on_corrupt = "delete"): all or nothing, and a store
-- error never deletes the file.
-- ---------------------------------------------------------------------
ops.load = {
  strict = true,
  prepare = function(dir)
    local src = assert(instate.open(dir .. "/src"))
    fill(src:namespace("kv"), "new")
    fill(src:namespace("other"), "new")
    assert(src:dump(dir .. "/in.dump"))
    src:close()
    os.execute("rm -rf '" .. dir .. "/src'")
    os.execute("cp '" .. dir .. "/in.dump' '" .. dir .. "/in.copy'")
    local s = open(dir)
    fill(s:namespace("kv"), "old")
    fill(s:namespace("other"), "old")
    s:close()
  end,
  begin = function(dir)
    local s = open(dir)
    local path = dir .. "/in.dump"
    return function() return s:load(path, { mode = "replace", on_corrupt = "delete" }) end, { s = s }
  end,
  state = function(dir)
    local st = {}
    if read(dir .. "/in.dump") ~= read(dir .. "/in.copy") then
      st.state = "the dump file was deleted or changed"
      return st
    end
    local s = open(dir)
    local a, b = s:namespace("kv"), s:namespace("other")
    local ka = classify(function(k) return a:get(k) end, NKEYS)
    local kb = classify(function(k) return b:get(k) end, NKEYS)
    st.state = ka == kb and ka or ("kv is " .. ka .. ", other is " .. kb)
    st.revision = s:revision()
    s:close()
    return st
  end,
}

-- What the handle kept open after the fault reads now: nil if it reads the
-- old or the new state, else what went wrong (an error must not disable the
-- store for the rest of the process).
function ops.after(name, ctx)
  local s = ctx.s
  local ok, st = pcall(function()
    if name == "save_all" then
      -- Every variable read back from one snapshot through the same store.
      local ok, msg, code = instate.reload_all()
      if not ok then return ("reload_all fails: %s (%s)"):format(msg, code) end
      local rev, rmsg, rcode = s:revision()
      if not rev then return ("revision fails: %s (%s)"):format(rmsg, rcode) end
      return nil
    end
    local ns, nmsg, ncode = s:namespace("kv")
    if not ns then return ("namespace fails: %s (%s)"):format(nmsg, ncode) end
    local v, msg, code = ns:get("k1")
    if v == nil and msg then return ("reads fail: %s (%s)"):format(msg, code) end
    local rev, rmsg, rcode = s:revision()
    if not rev then return ("revision fails: %s (%s)"):format(rmsg, rcode) end
    return nil
  end)
  if not ok then return "reading raises: " .. tostring(st) end
  return st
end

ops.names = { "set", "transaction", "grow", "save_all", "dump", "load" }

return ops
