--- store:dump, store:load and instate.dump_info (README "Dump and load").
local instate = require "instate"
local compat = require "instate.compat"
local helpers = require "helpers"

local function new_store(dir, name)
  return assert(instate.open(dir .. "/" .. (name or "store"), { sync = "none" }))
end

local file_size = helpers.file_size

local function game_item(i)
  return {
    x = i * 1.5, y = -i % 7, name = "item-" .. i, tags = { "a", "b", "c" },
    hp = 100 - i % 50, alive = i % 3 ~= 0,
  }
end

local all = helpers.contents

local function keys(ns)
  local t = {}
  for k in pairs(all(ns)) do t[#t + 1] = k end
  table.sort(t)
  return t
end

local noise = helpers.noise

local dir_entries = helpers.dir_entries

describe("store:dump / store:load", function()
  local dir, s
  before_each(function()
    dir = helpers.tmpdir()
    s = new_store(dir)
  end)
  after_each(function()
    s:close()
    instate._set_clock(nil)
  end)

  it("round-trips every compression level 0..9 with exact values", function()
    local ns = s:namespace("game")
    for i = 1, 200 do ns:set("k" .. i, game_item(i)) end
    -- the widest integers of this Lua: 64-bit on 5.3/5.4, 2^53 elsewhere
    local imax = compat.integers and math.maxinteger or 2 ^ 53
    local imin = compat.integers and math.mininteger or -2 ^ 53
    local weird = { 0.1, helpers.neg_zero, 1 / 0, -1 / 0, imax, imin, "\0\255bytes" }
    ns:set("weird", weird)
    s:namespace("other"):set("z", true)
    local sizes = {}
    for level = 0, 9 do
      local path = dir .. "/l" .. level .. ".dump"
      local info = assert(s:dump(path, { compression = level }))
      assert.same({ records = 202, dropped = 0, sections = 2, revision = s:revision() },
        { records = info.records, dropped = info.dropped, sections = info.sections,
          revision = info.revision })
      assert.equal(file_size(path), info.bytes)
      sizes[level] = info.bytes
      local t = new_store(dir, "t" .. level)
      local li = assert(t:load(path))
      assert.equal(202, li.records)
      assert.equal(2, li.sections)
      assert.equal(0, li.expired)
      assert.equal(info.revision, li.revision)
      assert.same(all(ns), all(t:namespace("game")))
      local w = t:namespace("game"):get("weird")
      assert.equal(helpers.float_bits(helpers.neg_zero), helpers.float_bits(w[2]))
      assert.equal(imin, w[6])
      assert.is_true(t:namespace("other"):get("z"))
      t:close()
    end
    -- Every level compresses. That a higher level is smaller is zstd's
    -- business and not guaranteed on 10 kB (Lua's table order, and so the
    -- encoded values, change from run to run); test_dump.c checks that
    -- option n writes exactly zstd level n.
    for level = 1, 9 do
      assert.is_true(sizes[level] < sizes[0] / 2, "level " .. level .. " compresses")
    end
  end)

  it("defaults to compression 1", function()
    s:namespace("a"):set("k", string.rep("x", 10000))
    local d = assert(s:dump(dir .. "/d.dump"))
    local one = assert(s:dump(dir .. "/one.dump", { compression = 1 }))
    local raw = assert(s:dump(dir .. "/raw.dump", { compression = 0 }))
    assert.equal(one.bytes, d.bytes)
    assert.is_true(d.bytes < raw.bytes)
  end)

  it("dumps only the chosen namespaces", function()
    s:namespace("a"):set("k", 1)
    s:namespace("b"):set("k", 2)
    s:namespace("c"):set("k", 3)
    local path = dir .. "/x.dump"
    local info = assert(s:dump(path, { namespaces = { "c", "a", "missing" } }))
    assert.equal(2, info.sections)
    local di = assert(instate.dump_info(path))
    assert.equal(2, di.sections)
    assert.same({ { name = "a", type = "kv", records = 1 }, { name = "c", type = "kv", records = 1 } },
      di.section_list)
  end)

  it("dump_info reports the header and the sections without loading", function()
    instate._set_clock(1800000000000)
    s:namespace("b"):set("k1", 1)
    s:namespace("b"):set("k2", 2)
    s:namespace("a"):set("k", 1)
    local path = dir .. "/x.dump"
    local info = assert(s:dump(path))
    local di = assert(instate.dump_info(path))
    assert.equal(1, di.format)
    assert.equal(s:revision(), di.revision)
    assert.equal(1800000000000, di.created_ms)
    assert.equal(3, di.records)
    assert.equal(2, di.sections)
    assert.equal(info.bytes, di.bytes)
    assert.same({ { name = "a", type = "kv", records = 1 }, { name = "b", type = "kv", records = 2 } },
      di.section_list)
    local n, msg, code = instate.dump_info(dir .. "/missing.dump")
    assert.is_nil(n)
    assert.equal("NOTFOUND", code)
    assert.matches("missing.dump", msg)
  end)

  it("merge overwrites clashing keys and keeps the others", function()
    s:namespace("a"):set("shared", "dumped")
    s:namespace("a"):set("only_dump", 1)
    local path = dir .. "/x.dump"
    assert(s:dump(path))
    local t = new_store(dir, "t")
    t:namespace("a"):set("shared", "mine")
    t:namespace("a"):set("only_mine", 2)
    t:namespace("z"):set("k", 3)
    local li = assert(t:load(path, { mode = "merge" }))
    assert.equal(2, li.records)
    assert.same({ shared = "dumped", only_dump = 1, only_mine = 2 }, all(t:namespace("a")))
    assert.equal(3, t:namespace("z"):get("k"))
    t:close()
  end)

  it("replace leaves loaded namespaces exactly as dumped, others untouched", function()
    s:namespace("a"):set("k1", 1)
    s:namespace("b")  -- never written: not dumped
    local path = dir .. "/x.dump"
    assert(s:dump(path))
    local t = new_store(dir, "t")
    t:namespace("a"):set("old", true)
    t:namespace("a"):set("k1", "old")
    t:namespace("other"):set("keep", true)
    assert(t:load(path, { mode = "replace" }))
    assert.same({ k1 = 1 }, all(t:namespace("a")))
    assert.same({ keep = true }, all(t:namespace("other")))
    t:close()
  end)

  it("loads only the namespaces asked for; other sections are skipped", function()
    s:namespace("a"):set("k", 1)
    s:namespace("b"):set("k", 2)
    s:namespace("c"):set("k", 3)
    local path = dir .. "/x.dump"
    assert(s:dump(path))
    local t = new_store(dir, "t")
    local li = assert(t:load(path, { namespaces = { "b" }, mode = "replace" }))
    assert.equal(1, li.sections)
    assert.equal(1, li.records)
    assert.same({ "b" }, t:namespaces())
    t:close()
  end)

  it("skips expired records and keeps absolute expiry: TTL shrinks by the downtime", function()
    local t0 = 1800000000000
    instate._set_clock(t0)
    local ns = s:namespace("cache")
    ns:set("soon", 1, { ttl = 10 })
    ns:set("later", 2, { ttl = 100 })
    ns:set("forever", 3)
    local path = dir .. "/x.dump"
    assert.equal(3, assert(s:dump(path)).records)
    instate._set_clock(t0 + 30000)  -- 30 s of downtime
    local t = new_store(dir, "t")
    local li = assert(t:load(path))
    assert.equal(2, li.records)
    assert.equal(1, li.expired)
    local tn = t:namespace("cache")
    assert.is_nil(tn:get("soon"))
    assert.near(70, tn:ttl("later"), 0.01)
    assert.is_false(tn:ttl("forever"))
    -- and a dump leaves out what has expired meanwhile
    assert.equal(2, assert(s:dump(path)).records)
    t:close()
  end)

  it("raises the revision above its old value and to at least the dump's", function()
    for i = 1, 20 do s:namespace("a"):set("k" .. i, i) end
    local path = dir .. "/x.dump"
    local info = assert(s:dump(path))
    local t = new_store(dir, "t")
    t:namespace("b"):set("k", 1)
    local before = t:revision()
    assert(t:load(path))
    assert.is_true(t:revision() > before)
    assert.is_true(t:revision() >= info.revision)
    -- a store already past the dump's revision still moves forward
    local r = t:revision()
    assert(t:load(path))
    assert.equal(r + 1, t:revision())
    t:close()
  end)

  it("caps: max_record_bytes and max_records_per_section", function()
    local ns = s:namespace("a")
    for i = 1, 50 do ns:set(string.format("k%02d", i), string.rep("x", i * 10)) end
    s:namespace("b"):set("k", 1)
    local path = dir .. "/x.dump"
    local info = assert(s:dump(path, { max_record_bytes = 3 + 2 + 200 }))
    -- key 3 bytes + str header 2 bytes (str8 from 32 bytes) + value
    assert.equal(21, info.records)  -- k01..k20 and b.k
    assert.equal(30, info.dropped)
    info = assert(s:dump(path, { max_records_per_section = 5 }))
    assert.equal(6, info.records)
    assert.equal(45, info.dropped)
    local t = new_store(dir, "t")
    assert(t:load(path))
    assert.same({ "k01", "k02", "k03", "k04", "k05" }, keys(t:namespace("a")))
    t:close()
  end)

  it("caps: max_bytes leaves out the largest records first, LIMIT when impossible", function()
    local ns = s:namespace("a")
    -- half noise, half compressible
    for i = 1, 60 do
      ns:set(string.format("k%02d", i), noise(i * 25, i) .. string.rep("x", i * 25))
    end
    local path = dir .. "/x.dump"
    local kept_raw
    for _, level in ipairs({ 0, 1, 9 }) do
      local info = assert(s:dump(path, { max_bytes = 40000, compression = level }))
      assert.is_true(info.bytes <= 40000)
      assert.equal(file_size(path), info.bytes)
      assert.equal(60, info.records + info.dropped)
      assert.is_true(info.dropped > 0)
      -- compression lets more records in than a raw file of the same size
      if level == 0 then kept_raw = info.records else assert.is_true(info.records > kept_raw) end
      local t = new_store(dir, "t" .. level)
      assert(t:load(path))
      -- the kept records are the smallest ones
      local kept = 0
      for i = 1, 60 do
        local v = t:namespace("a"):get(string.format("k%02d", i))
        if v then
          kept = kept + 1
          assert.equal(i, kept, "record " .. i .. " kept after a smaller one was dropped")
        end
      end
      assert.equal(info.records, kept)
      t:close()
    end
    local n, msg, code = s:dump(path .. "2", { max_bytes = 50 })
    assert.is_nil(n)
    assert.equal("LIMIT", code)
    assert.matches("max_bytes", msg)
    assert.is_nil(io.open(path .. "2"))
  end)

  it("returns false for a missing file", function()
    local r, msg = s:load(dir .. "/nope.dump")
    assert.is_false(r)
    assert.matches("nope.dump", msg)
    r = s:load(dir .. "/nope.dump", { on_corrupt = "delete" })
    assert.is_false(r)
  end)

  it("returns BUSY inside a write transaction of the same thread", function()
    s:namespace("a"):set("k", 1)
    local path = dir .. "/x.dump"
    assert(s:dump(path))
    local r = { s:transaction(function()
      return s:load(path)
    end) }
    assert.is_nil(r[1])
    assert.equal("BUSY", r[3])
  end)

  it("a failed dump leaves the old file intact and no temporary file", function()
    s:namespace("a"):set("k", 1)
    local sub = dir .. "/out"
    os.execute("mkdir " .. helpers.sh_quote(sub))
    local path = sub .. "/x.dump"
    assert(s:dump(path, { compression = 0 }))
    local old = helpers.read_file(path)
    -- a path in a missing directory (ENOENT: a directory that must exist does not)
    local n, msg, code = s:dump(dir .. "/missing/x.dump")
    assert.is_nil(n)
    assert.equal("NOTFOUND", code)
    -- one message naming the path, the reason said once
    assert.equal("dump " .. dir .. "/missing/x.dump: cannot create a temporary file: "
      .. "No such file or directory", msg)
    -- a write failing half way: a child process under a file size limit
    local big = noise(3000)
    for i = 1, 300 do s:namespace("a"):set("big" .. i, big) end
    s:close()
    -- (as root a read-only directory would not stop the write; a size limit does)
    local script = dir .. "/limited.lua"
    helpers.write_file(script, [[
      local instate = require "instate"
      local s = assert(instate.open(arg[1]))
      local n, msg, code = s:dump(arg[2], { compression = 0 })
      io.write(tostring(n), " ", tostring(code), " ", tostring(msg))
    ]])
    local p = io.popen("sh -c " .. helpers.sh_quote("trap '' XFSZ; ulimit -f 200; exec "
      .. helpers.lua_cmd() .. " " .. helpers.sh_quote(script) .. " "
      .. helpers.sh_quote(dir .. "/store") .. " " .. helpers.sh_quote(path)) .. " 2>&1")
    local res = p:read("*a")
    p:close()
    assert.matches("^nil IO ", res)
    assert.equal(old, helpers.read_file(path))
    assert.same({ "x.dump" }, dir_entries(sub))
    s = new_store(dir)
  end)
  it("removes the temporary files of killed dumps, keeping the old file meanwhile", function()
    -- a store whose level-9 dump takes a while: time to be killed mid-write
    local base = noise(65536, 3)
    s:transaction(function(tx)
      local ns = tx:namespace("big")
      for i = 1, 12000 do
        local o = (i * 7919) % 60000
        ns:set(string.format("k%05d", i), base:sub(o + 1, o + 4096))
      end
    end)
    local sub = dir .. "/out"
    os.execute("mkdir " .. helpers.sh_quote(sub))
    local path = sub .. "/x.dump"
    s:namespace("small"):set("k", 1)
    assert(s:dump(path, { namespaces = { "small" } }))
    local old = helpers.read_file(path)
    local child = dir .. "/child.lua"
    helpers.write_file(child, [[
      local instate = require "instate"
      local s = assert(instate.open(arg[1]))
      assert(s:dump(arg[2], { compression = 9 }))
    ]])
    -- start a dump, wait for a temporary file it made, kill -9 the process
    local round = [[
      D=$1; old=$(ls -A "$D" | grep '^x\.dump\..' || true)
      ]] .. helpers.lua_cmd() .. [[ "$2" "$3" "$4" & pid=$!
      i=0; new=
      while [ $i -lt 4000 ]; do
        new=$(ls -A "$D" | grep '^x\.dump\..' | grep -vxF "$old")
        [ -n "$new" ] && break
        i=$((i + 1)); sleep 0.005
      done
      kill -9 $pid; wait $pid 2>/dev/null
      echo "$new"
    ]]
    local temps
    for _ = 1, 4 do
      local p = io.popen("sh -c " .. helpers.sh_quote(round) .. " sh " .. helpers.sh_quote(sub)
        .. " " .. helpers.sh_quote(child) .. " " .. helpers.sh_quote(dir .. "/store") .. " "
        .. helpers.sh_quote(path))
      local made = p:read("*l")
      p:close()
      assert.is_truthy(made and made:match("^x%.dump%.tmp%-%w%w%w%w%w%w$"), tostring(made))
      -- the killed dump's file is all that is left: the previous one was removed
      temps = dir_entries(sub)
      assert.same({ "x.dump", made }, temps)
      assert.equal(old, helpers.read_file(path))
    end
    local info = assert(s:dump(path, { compression = 1 }))
    assert.equal(12001, info.records)
    assert.same({ "x.dump" }, dir_entries(sub))
    assert.equal(12001, assert(instate.dump_info(path)).records)
  end)

  it("never loads, deletes or overwrites the store's own files", function()
    s:namespace("a"):set("k", "v")
    local path = dir .. "/x.dump"
    assert(s:dump(path))
    for _, name in ipairs({ "data.mdb", "lock.mdb" }) do
      local f = dir .. "/store/" .. name
      local before = helpers.read_file(f)
      assert.has_error(function() s:load(f, { on_corrupt = "delete" }) end,
        "bad argument #1 to 'load' (load " .. f
        .. ": this is the store's own data or lock file, not a dump)")
      assert.has_error(function() s:dump(f) end, "bad argument #1 to 'dump' (dump " .. f
        .. ": this is the store's own data or lock file)")
      assert.is_truthy(helpers.read_file(f))
      if name == "data.mdb" then assert.equal(before, helpers.read_file(f)) end
    end
    -- the same file by another name
    os.execute("ln -s " .. helpers.sh_quote(dir .. "/store/data.mdb") .. " "
      .. helpers.sh_quote(dir .. "/link.dump"))
    assert.has_error(function() s:load(dir .. "/link.dump", { on_corrupt = "delete" }) end,
      "bad argument #1 to 'load' (load " .. dir
      .. "/link.dump: this is the store's own data or lock file, not a dump)")
    assert.equal("v", s:namespace("a"):get("k"))
    assert(s:load(path))
    assert.equal("v", s:namespace("a"):get("k"))
  end)
end)

describe("misuse raises naming the argument", function()
  local dir, s
  before_each(function()
    dir = helpers.tmpdir()
    s = new_store(dir)
  end)
  after_each(function() s:close() end)

  local function raises(pattern, fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    assert.matches(pattern, err)
  end

  it("in dump options", function()
    local p = dir .. "/x.dump"
    raises("compression", s.dump, s, p, { compression = 10 })
    raises("compression", s.dump, s, p, { compression = -1 })
    raises("compression", s.dump, s, p, { compression = 1.5 })
    raises("unknown option 'level'", s.dump, s, p, { level = 1 })
    raises("max_bytes", s.dump, s, p, { max_bytes = -1 })
    raises("max_record_bytes", s.dump, s, p, { max_record_bytes = "x" })
    raises("max_records_per_section", s.dump, s, p, { max_records_per_section = 0.5 })
    raises("namespaces", s.dump, s, p, { namespaces = "a" })
    raises("namespaces%[2%]", s.dump, s, p, { namespaces = { "a", 7 } })
    raises("namespaces%[1%]", s.dump, s, p, { namespaces = { "" } })
    raises("table expected", s.dump, s, p, 5)
    raises("string expected", s.dump, s, {}, nil)
    assert.is_nil(io.open(p))
  end)

  it("in load options", function()
    local p = dir .. "/x.dump"
    assert(s:dump(p))
    raises("mode", s.load, s, p, { mode = "append" })
    raises("on_corrupt", s.load, s, p, { on_corrupt = "panic" })
    raises("unknown option 'compression'", s.load, s, p, { compression = 1 })
    raises("max_bytes", s.load, s, p, { max_bytes = -5 })
    raises("namespaces%[1%]", s.load, s, p, { namespaces = { {} } })
    raises("string expected", instate.dump_info, nil)
  end)

  it("on a closed store", function()
    local p = dir .. "/x.dump"
    s:close()
    raises("closed", s.dump, s, p)
    raises("closed", s.load, s, p)
  end)
end)
