--- Corrupt, truncated, foreign and newer dump files (README "Dump and load").
-- A load that fails leaves the store exactly as it was: contents and revision.
local instate = require "instate"
local helpers = require "helpers"

-- CRC-32C (docs/FORMAT.md 3), to craft files with valid checksums.
local crc32c = helpers.crc32c
local pack = helpers.pack

local MAGIC = "\137ISD\r\n\026\n"

-- A whole file around a raw body, in blocks of `bs` bytes.
local function craft(body, sections, records, opts)
  opts = opts or {}
  local prefix = MAGIC .. pack(">I4", opts.format or 1)
  local h2 = pack(">I4I8i8", 0, opts.revision or 5, 1800000000000)
  local parts = { prefix, pack(">I4", crc32c(prefix)), h2, pack(">I4", crc32c(h2)) }
  local bs = opts.block or 64
  for off = 1, #body, bs do
    local chunk = body:sub(off, off + bs - 1)
    local h = pack(">BBI2I4I4", 0x42, 0, 0, #chunk, #chunk)
    parts[#parts + 1] = h .. pack(">I4", crc32c(chunk, crc32c(h))) .. chunk
  end
  local so_far = table.concat(parts)
  local t = pack(">BBBBI8I8I8I8", 0x45, 0, 0, 0, sections, records, #body, #so_far + 40)
  return so_far .. t .. pack(">I4", crc32c(t, crc32c(so_far)))
end

local function section(name, type_, recs)
  local out = { pack(">BBs1", 0x53, type_ or 1, name) }
  for _, r in ipairs(recs) do
    out[#out + 1] = pack(">BBI2I4", 0x52, 0, #r[1], #r[2]) .. r[1] .. r[2]
  end
  out[#out + 1] = pack(">BI8", 0x54, #recs)
  return table.concat(out)
end

local all = helpers.contents

describe("corrupt dumps", function()
  local dir, src, dst, path, bad
  before_each(function()
    dir = helpers.tmpdir()
    src = assert(instate.open(dir .. "/src", { sync = "none" }))
    dst = assert(instate.open(dir .. "/dst", { sync = "none" }))
    path = dir .. "/good.dump"
    bad = dir .. "/bad.dump"
    local ns = src:namespace("game")
    for i = 1, 6 do ns:set("k" .. i, { x = i, name = string.rep("n", 20) }) end
    src:namespace("z"):set("ttl", "v", { ttl = 1000 })
    dst:namespace("game"):set("mine", "untouched")
    dst:namespace("other"):set("k", 1)
  end)
  after_each(function()
    src:close()
    dst:close()
  end)

  local function snapshot()
    return { rev = dst:revision(), game = all(dst:namespace("game")),
             other = all(dst:namespace("other")), z = all(dst:namespace("z")) }
  end

  for _, level in ipairs({ 0, 1 }) do
    it("detects every single-byte change and every truncation (compression " .. level .. ")",
      function()
        assert(src:dump(path, { compression = level }))
        local good = helpers.read_file(path)
        if level == 1 then
          -- the compressed case must really hold a zstd block
          assert.equal(1, good:byte(42))
        end
        local before = snapshot()
        local missed = {}
        local function try(data, what)
          helpers.write_file(bad, data)
          local r, msg, code = dst:load(bad, { mode = "replace" })
          if r ~= nil or code ~= "CORRUPT" or not msg:match("at byte %d+") then
            missed[#missed + 1] = what .. ": " .. tostring(r) .. " " .. tostring(msg)
          end
        end
        for i = 1, #good do
          for _, x in ipairs({ 0x01, 0x80 }) do
            try(helpers.flip_byte(good, i, x),
              ("byte %d ^ 0x%02x"):format(i - 1, x))
          end
        end
        for n = 0, #good - 1 do try(good:sub(1, n), "truncated to " .. n) end
        try(good .. "\0", "one byte appended")
        assert.same({}, missed)
        assert.same(before, snapshot())
        -- and the intact file loads
        assert(dst:load(path, { mode = "replace" }))
        assert.equal(before.rev + 1 <= dst:revision(), true)
      end)
  end

  it("follows on_corrupt: error, ignore, delete", function()
    assert(src:dump(path))
    local good = helpers.read_file(path)
    local damaged = helpers.flip_byte(good, 61, 4)
    local before = snapshot()
    helpers.write_file(bad, damaged)
    local r, msg, code = dst:load(bad)
    assert.is_nil(r)
    assert.equal("CORRUPT", code)
    assert.matches("bad.dump at byte 40", msg)
    r, msg, code = dst:load(bad, { on_corrupt = "error" })
    assert.equal("CORRUPT", code)
    r = dst:load(bad, { on_corrupt = "ignore" })
    assert.is_false(r)
    assert.truthy(helpers.read_file(bad))
    r = dst:load(bad, { on_corrupt = "delete" })
    assert.is_false(r)
    assert.is_nil(helpers.read_file(bad))
    assert.same(before, snapshot())
  end)

  it("rejects foreign files: empty, text, text-mode damage", function()
    assert(src:dump(path, { compression = 0 }))
    local good = helpers.read_file(path)
    for what, data in pairs({
      empty = "", text = "hello, world\n", json = '{"game": {}}',
      crlf = good:gsub("\n", "\r\n"), lf = good:gsub("\r\n", "\n"),
      seven_bit = string.char(good:byte(1) % 128) .. good:sub(2),
    }) do
      helpers.write_file(bad, data)
      local r, msg, code = dst:load(bad)
      assert.is_nil(r, what)
      assert.equal("CORRUPT", code, what)
      assert.matches("at byte %d+", msg)
      local n, _, c2 = instate.dump_info(bad)
      assert.is_nil(n)
      assert.equal("CORRUPT", c2, what)
    end
  end)

  it("returns VERSION for a newer format whatever the policy, and keeps the file", function()
    assert(src:dump(path))
    local good = helpers.read_file(path)
    local prefix = MAGIC .. pack(">I4", 2)
    local newer = prefix .. pack(">I4", crc32c(prefix)) .. "future layout"
    helpers.write_file(bad, newer)
    local before = snapshot()
    for _, policy in ipairs({ "error", "ignore", "delete" }) do
      local r, msg, code = dst:load(bad, { on_corrupt = policy, max_bytes = 10 })
      assert.is_nil(r)
      assert.equal("VERSION", code)
      assert.matches("format version 2", msg)
      assert.equal(newer, helpers.read_file(bad))
    end
    local n, _, code = instate.dump_info(bad)
    assert.is_nil(n)
    assert.equal("VERSION", code)
    assert.same(before, snapshot())
    -- the format field damaged in place reads as corruption, not a newer version
    helpers.write_file(bad, good:sub(1, 11) .. "\2" .. good:sub(13))
    local _, _, c2 = dst:load(bad)
    assert.equal("CORRUPT", c2)
  end)

  it("treats a file over max_bytes as corrupt", function()
    local info = assert(src:dump(path))
    local before = snapshot()
    local r, msg, code = dst:load(path, { max_bytes = info.bytes - 1 })
    assert.is_nil(r)
    assert.equal("CORRUPT", code)
    assert.matches("max_bytes", msg)
    assert.same(before, snapshot())
    assert.is_false(dst:load(path, { max_bytes = info.bytes - 1, on_corrupt = "delete" }))
    assert.is_nil(helpers.read_file(path))
  end)

  it("loads values as bytes: the file layer does not read MessagePack", function()
    local body = section("a", 1, { { "k", "\1" } }) ..
      section("b", 1, { { "c1", "\193" }, { "empty", "" }, { "two", "\1\2" } })
    helpers.write_file(bad, craft(body, 2, 4))
    local info = assert(dst:load(bad))
    assert.equal(4, info.records)
    assert.equal(1, dst:namespace("a"):get("k"))
    -- the codec finds them when they are read, naming the key
    local ok, err = pcall(function() return dst:namespace("b"):get("c1") end)
    local v, msg, code = dst:namespace("b"):get("c1")
    if ok then
      assert.is_nil(v)
      assert.equal("CORRUPT", code)
      assert.matches("c1", msg)
    else
      assert.matches("c1", err)
    end
    assert.equal(3, assert(instate.dump_info(bad)).section_list[2].records)
  end)

  it("bounds memory by max_bytes and the block size, whatever the file claims", function()
    -- a zstd frame of 1 MiB of zeros in 41 bytes: 8 RLE blocks of 128 KiB
    local z = { "\040\181\047\253\160", pack("<I4", 1048576) }
    for i = 1, 8 do z[#z + 1] = (i < 8 and "\002\000\016" or "\003\000\016") .. "\0" end
    z = table.concat(z)
    local function block(codec, raw_len, stored)
      local h = pack(">BBI2I4I4", 0x42, codec, 0, raw_len, #stored)
      return h .. pack(">I4", crc32c(stored, crc32c(h))) .. stored
    end
    -- one well-formed record of 200 MiB of zeros, in a file of about 11 KB
    local n = 200
    local first = pack(">BBs1", 0x53, 1, "a") .. pack(">BBI2I4", 0x52, 0, 1,
      n * 1048576) .. "k"
    local prefix = MAGIC .. pack(">I4", 1)
    local h2 = pack(">I4I8i8", 0, 5, 1800000000000)
    local parts = { prefix, pack(">I4", crc32c(prefix)), h2,
      pack(">I4", crc32c(h2)), block(0, #first, first) }
    local zb = block(1, 1048576, z)
    for _ = 1, n do parts[#parts + 1] = zb end
    local last = pack(">BI8", 0x54, 1)
    parts[#parts + 1] = block(0, #last, last)
    local so_far = table.concat(parts)
    local t = pack(">BBBBI8I8I8I8", 0x45, 0, 0, 0, 1, 1, #first + n * 1048576 + #last,
      #so_far + 40)
    helpers.write_file(bad, so_far .. t .. pack(">I4", crc32c(t, crc32c(so_far))))
    assert.is_true(#so_far < 12000)
    -- in a child process: the growth of its peak memory (VmHWM) during each call
    local out = helpers.run_lua([[
      local instate = require "instate"
      local function hwm()
        local f = io.open("/proc/self/status")
        local kb = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
        f:close()
        return kb
      end
      local s = assert(instate.open(arg[2], { sync = "none" }))
      local h0 = hwm()
      local info, msg = instate.dump_info(arg[1])
      io.write(tostring(info and info.records), " ", tostring(msg), "\n", hwm() - h0, "\n")
      h0 = hwm()
      local r, msg2, code = s:load(arg[1], { max_bytes = 1e6 })
      io.write(tostring(r), " ", tostring(code), " ", tostring(msg2), "\n", hwm() - h0, "\n")
    ]], bad, dir .. "/child-store")
    local info_line, info_kb, load_line, load_kb = out:match("^(.-)\n(%d+)\n(.-)\n(%d+)\n$")
    assert.is_truthy(info_line, out)
    -- dump_info verifies it all and never holds the value
    assert.equal("1 nil", info_line)
    assert.is_true(tonumber(info_kb) < 16 * 1024, info_kb .. " KiB")
    -- load refuses it at its first block, before reading the value
    assert.equal("nil CORRUPT corrupt dump " .. bad .. " at byte 40: a record of 209715200 "
      .. "value bytes would take the body past 16000000 bytes (16 x max_bytes 1000000) "
      .. "(body byte 4)", load_line)
    assert.is_true(tonumber(load_kb) < 16 * 1024, load_kb .. " KiB")
    -- a corrupt file, so the policy applies
    assert.is_false(dst:load(bad, { max_bytes = 1e6, on_corrupt = "delete" }))
    assert.is_nil(helpers.read_file(bad))
  end)

  it("never applies the file policy to the store's own errors", function()
    assert(src:dump(path))
    local good = helpers.read_file(path)
    -- another process leaves a damaged entry for namespace "z" in dst's catalogue
    -- (LMDB's own tool), so dst reports CORRUPT on it: the good file is kept
    helpers.write_file(dir .. "/meta.txt", "ns:z\nxy\n")
    assert.is_true(helpers.execute("mdb_load -T -s __meta -f " .. helpers.sh_quote(dir .. "/meta.txt")
      .. " " .. helpers.sh_quote(dir .. "/dst")))
    -- ("z" itself now reads as corrupt: the snapshot leaves it out)
    local function state()
      return { rev = dst:revision(), game = all(dst:namespace("game")),
               other = all(dst:namespace("other")) }
    end
    local before = state()
    for _, policy in ipairs({ "error", "ignore", "delete" }) do
      local r, msg, code = dst:load(path, { on_corrupt = policy })
      assert.is_nil(r, policy)
      assert.equal("CORRUPT", code)
      assert.equal("load " .. path .. ": the store failed on namespace \"z\": corrupt data", msg)
      assert.equal(good, helpers.read_file(path))
    end
    assert.same(before, state())
    -- a full store (max_size): MAP_FULL, the file kept
    local big = assert(instate.open(dir .. "/big", { sync = "none" }))
    local blob = string.rep("\0", 200000)
    for i = 1, 20 do big:namespace("blobs"):set("b" .. i, blob .. i) end
    local bigpath = dir .. "/big.dump"
    assert(big:dump(bigpath))
    big:close()
    local small = assert(instate.open(dir .. "/small", { sync = "none", map_size = 1048576,
      max_size = 1048576 }))
    local r, msg, code = small:load(bigpath, { on_corrupt = "delete" })
    assert.is_nil(r)
    assert.equal("MAP_FULL", code)
    assert.matches("^load " .. bigpath:gsub("%p", "%%%0"), msg)
    assert.is_truthy(helpers.read_file(bigpath))
    small:close()
  end)

  it("rejects a section whose type clashes with the existing namespace", function()
    src:namespace("vars", "state"):set("hp", 10)
    assert(src:dump(path))
    dst:namespace("vars"):set("hp", "kv here")
    local before = snapshot()
    local r, msg, code = dst:load(path)
    assert.is_nil(r)
    assert.equal("CORRUPT", code)
    assert.matches("\"vars\" has type state", msg)
    assert.same(before, snapshot())
    assert.equal("kv here", dst:namespace("vars"):get("hp"))
    -- skipping that section with the namespaces option loads the rest
    local info = assert(dst:load(path, { namespaces = { "game" } }))
    assert.equal(1, info.sections)
    -- and dump_info lists it with its type
    local di = assert(instate.dump_info(path))
    local types = {}
    for _, s in ipairs(di.section_list) do types[s.name] = s.type end
    assert.equal("state", types.vars)
  end)
end)
