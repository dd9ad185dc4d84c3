--- opts.progress of store:dump and store:load (README "Dump and load").
local instate = require "instate"
local helpers = require "helpers"

local file_size = helpers.file_size

local dir_entries = helpers.dir_entries

-- A recorder: every call's done and total.
local function recorder()
  local calls = {}
  return calls, function(done, total) calls[#calls + 1] = { done, total } end
end

-- Per block, done never going back, the last call done == total.
local function assert_calls(calls, total)
  assert.is_true(#calls >= 3, "only " .. #calls .. " calls")
  for i, c in ipairs(calls) do
    assert.equal(total, c[2])
    assert.is_true(c[1] <= c[2])
    if i > 1 then assert.is_true(c[1] > calls[i - 1][1]) end
  end
  assert.equal(total, calls[#calls][1])
end

describe("progress of dump and load", function()
  local dir, s, path
  before_each(function()
    dir = helpers.tmpdir()
    s = assert(instate.open(dir .. "/store", { sync = "none" }))
    local big = string.rep("x", 1000)
    s:transaction(function(tx)
      local kv = tx:namespace("kv")
      for i = 1, 2000 do kv:set(string.format("k%05d", i), big .. i) end
    end)
    s:namespace("other"):set("a", 1)
    assert(os.execute("mkdir " .. helpers.sh_quote(dir .. "/out")))
    path = dir .. "/out/s.isd"
  end)
  after_each(function()
    s:close()
  end)

  it("dump counts records, the live records of the dumped namespaces as total", function()
    for _, level in ipairs({ 0, 1, 9 }) do
      local calls, fn = recorder()
      local info = assert(s:dump(path, { compression = level, progress = fn }))
      assert.equal(2001, info.records)
      assert_calls(calls, 2001)
    end
    local calls, fn = recorder()
    assert(s:dump(path, { namespaces = { "other" }, progress = fn }))
    assert.same({ { 1, 1 } }, calls)
  end)

  it("load counts file bytes, the file size as total", function()
    assert(s:dump(path, { compression = 0 }))
    local fresh = assert(instate.open(dir .. "/fresh", { sync = "none" }))
    local calls, fn = recorder()
    local info = assert(fresh:load(path, { progress = fn }))
    assert.equal(2001, info.records)
    assert_calls(calls, file_size(path))
    fresh:close()
  end)

  it("an error in the dump's callback removes the temporary file, keeps the old dump and is raised as it was", function()
    assert(s:dump(path, { namespaces = { "other" } }))
    local before = helpers.read_file(path)
    for _, stop in ipairs({ 1, 3, "last" }) do
      local n, last = 0, nil
      local function fn(done, total)
        n = n + 1
        if n == stop or (stop == "last" and done == total) then
          last = n
          error("stop at " .. n, 0)
        end
      end
      local ok, e = pcall(s.dump, s, path, { progress = fn })
      assert.is_false(ok)
      assert.equal("stop at " .. last, e)
      assert.equal(before, helpers.read_file(path))
      assert.same({ "s.isd" }, dir_entries(dir .. "/out"))
    end
    -- a table raised stays that table
    local t = { why = "cancelled" }
    local ok, e = pcall(function() return s:dump(path, { progress = function() error(t) end }) end)
    assert.is_false(ok)
    assert.equal(t, e)
  end)

  it("an error in the load's callback leaves the store unchanged and the file in place", function()
    assert(s:dump(path, { compression = 0 }))
    local fresh = assert(instate.open(dir .. "/fresh", { sync = "none" }))
    fresh:namespace("kv"):set("mine", "kept")
    local rev = fresh:revision()
    for _, stop in ipairs({ 1, 2, "last" }) do
      local n = 0
      local function fn(done, total)
        n = n + 1
        if n == stop or (stop == "last" and done == total) then error({ at = n }) end
      end
      local ok, e = pcall(fresh.load, fresh, path,
        { mode = "replace", on_corrupt = "delete", progress = fn })
      assert.is_false(ok)
      assert.equal(n, e.at)
      assert.equal(rev, fresh:revision())
      assert.same({ mine = "kept" }, helpers.contents(fresh:namespace("kv")))
      assert.is_truthy(io.open(path, "rb")):close()
    end
    -- a string error keeps its message
    assert.has_error(function()
      fresh:load(path, { progress = function() error("no room on the screen", 0) end })
    end, "no room on the screen")
    fresh:close()
  end)

  it("checks the option", function()
    assert.has_error(function() s:dump(path, { progress = 1 }) end,
      "bad argument #2 to 'dump' (option 'progress' must be a function)")
    assert.has_error(function() s:load(path, { progress = "x" }) end,
      "bad argument #2 to 'load' (option 'progress' must be a function)")
  end)
end)

describe("dump and load messages", function()
  it("say each thing once", function()
    local dir = helpers.tmpdir()
    local s = assert(instate.open(dir .. "/store", { sync = "none" }))
    s:namespace("kv"):set("a", 1)
    local function failure(...)
      local r, msg, code = ...
      assert.is_nil(r)
      return msg, code
    end
    local msg, code = failure(s:dump(dir .. "/nodir/x.isd"))
    assert.equal("dump " .. dir .. "/nodir/x.isd: cannot create a temporary file: "
      .. "No such file or directory", msg)
    assert.equal("NOTFOUND", code)
    msg, code = failure(instate.dump_info(dir .. "/nope.isd"))
    assert.equal("no dump file at " .. dir .. "/nope.isd", msg)
    assert.equal("NOTFOUND", code)
    helpers.write_file(dir .. "/junk.isd", "junk")
    msg, code = failure(instate.dump_info(dir .. "/junk.isd"))
    assert.equal("corrupt dump " .. dir .. "/junk.isd at byte 4: truncated: the file ends "
      .. "inside the header", msg)
    assert.equal("CORRUPT", code)
    msg, code = failure(s:load(dir .. "/junk.isd"))
    assert.equal("corrupt dump " .. dir .. "/junk.isd at byte 4: truncated: the file ends "
      .. "inside the header", msg)
    assert.equal("CORRUPT", code)
    s:close()
  end)
end)

describe("the instate command's progress bar", function()
  local q = helpers.sh_quote
  local function absolute(paths)
    local pwd = os.getenv("PWD")
    return (paths:gsub("[^;]+", function(p)
      return p:sub(1, 1) == "/" and p or (pwd .. "/" .. p)
    end))
  end
  local ENV = ("env LUA_PATH=%s LUA_CPATH=%s"):format(q(absolute(package.path)),
    q(absolute(package.cpath)))
  local BIN = helpers.build_dir() .. "/bin/instate"
  local dir
  before_each(function()
    dir = helpers.tmpdir()
    local s = assert(instate.open(dir .. "/store", { sync = "none" }))
    s:transaction(function(tx)
      local kv = tx:namespace("kv")
      for i = 1, 3000 do kv:set(string.format("k%05d", i), string.rep("y", 500) .. i) end
    end)
    s:close()
  end)
  local function cmd(...)
    local t = { ENV, q(BIN) }
    for _, a in ipairs({ ... }) do t[#t + 1] = q(a) end
    return table.concat(t, " ")
  end

  it("is drawn on a terminal's stderr, for dump and load", function()
    -- script(1) gives the command a terminal; its output is the terminal's
    local function on_tty(c)
      local p = assert(io.popen("script -qec " .. q(c) .. " /dev/null"))
      local all = p:read("*a")
      p:close()
      return all
    end
    local d = on_tty(cmd("dump", dir .. "/store", dir .. "/s.isd", "--level", "0"))
    assert.matches("dumping %[#+%] 100%%", d)
    assert.matches("dumped 3000 records in 1 section", d)
    local l = on_tty(cmd("load", dir .. "/copy", dir .. "/s.isd"))
    assert.matches("loading %[[#.]+%]  *%d+%%\r", l)
    assert.matches("loading %[#+%] 100%%", l)
    assert.matches("loaded 3000 records in 1 section", l)
  end)

  it("is not drawn when stderr is not a terminal", function()
    local errfile = dir .. "/err"
    assert.is_true(helpers.execute(cmd("dump", dir .. "/store", dir .. "/s.isd") ..
      " >/dev/null 2>" .. q(errfile)))
    assert.equal("", helpers.read_file(errfile))
    assert.is_true(helpers.execute(cmd("load", dir .. "/copy", dir .. "/s.isd") ..
      " >/dev/null 2>" .. q(errfile)))
    assert.equal("", helpers.read_file(errfile))
  end)
end)
