-- The fingerprint of a restored value taken from its stored bytes by the
-- decoder, in its own pass (instate._fingerprint_bytes, instate._decode_print,
-- setup's read through get_all_objects' fpslot, a declaration's read of its
-- record): it must be what the walk (instate._fingerprint) gives the decoded
-- value, or none. Never the walk of another value: that would be a false
-- "unchanged", an edit not saved.
local helpers = require "helpers"
local instate = require "instate"

local fp, fpb, decode_print = instate._fingerprint, instate._fingerprint_bytes, instate._decode_print
local encode, decode = instate.encode, instate.decode
local CANON = { canonical = true }
local has_subtypes = math.type ~= nil and math.type(1) == "integer"
local count_save_many = helpers.count_save_many

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- The property, for bytes that decode: none, or the walk of the decoded
-- value.
local function check(bytes, what)
  local v = decode(bytes)
  local b = fpb(bytes)
  if b ~= nil then
    local w = fp(v)
    assert(b == w, ("%s: bytes %s give a fingerprint the decoded value's walk does not")
      :format(what, hex(bytes)))
  end
  -- the same from the decoder's value-and-fingerprint call, on its value
  local v2, b2 = decode_print(bytes)
  assert(b2 == b, ("%s: bytes %s: _decode_print's fingerprint is not _fingerprint_bytes'")
    :format(what, hex(bytes)))
  if b2 ~= nil then assert(b2 == fp(v2), what) end
  return b
end

-- What restored variables hold for the same bytes, each stored twice: as
-- a record of version 1 (setup's read takes the fingerprint, in C, while it
-- builds the variables) and of version 0 (setup leaves it to the
-- declaration, which reads the record itself). Each variable's PRINT
-- slot ([5], beside the unread value [4]) must be the walk of that value,
-- or none, the same both ways and the same as _fingerprint_bytes'.
-- Returns the list of fingerprints (nil: none).
local function check_restored(list, what)
  local path = helpers.tmpdir() .. "/restored"
  assert(assert(instate.setup(path)):transaction(function(tx)
    local ns = tx:namespace("state", "state")
    for i, bytes in ipairs(list) do
      assert(ns:set_encoded(("s%05d"):format(i), bytes, { version = 1 }))
      assert(ns:set_encoded(("d%05d"):format(i), bytes, { version = 0 }))
    end
    return true
  end))
  instate.teardown()
  assert(instate.setup(path))
  local got = {}
  for i, bytes in ipairs(list) do
    local prints = {}
    for k, prefix in ipairs({ "s", "d" }) do
      local var = instate.defstate(("%s%05d"):format(prefix, i), false)
      local v, p = rawget(var, 4), rawget(var, 5)
      if p ~= nil then
        assert(type(v) == "table", what .. " " .. i)
        assert(p == fp(v), ("%s %d (%s): bytes %s: the restored table's fingerprint is not its walk")
          :format(what, i, prefix == "s" and "setup's read" or "the declaration's read", hex(bytes)))
      end
      prints[k] = p
    end
    assert(prints[1] == prints[2], ("%s %d: setup's read and the declaration's differ for %s")
      :format(what, i, hex(bytes)))
    local v = decode(bytes)
    assert(prints[1] == (type(v) == "table" and fpb(bytes) or nil), what .. " " .. i)
    got[i] = prints[1]
  end
  instate.teardown()
  return got
end

-- A small deterministic generator (the same sequence on every Lua).
local function rng(seed)
  local s = seed
  return function(n)
    s = (s * 1103515245 + 12345) % 2147483648
    return s % n
  end
end

local EDGE_NUMBERS = {
  0, 1, -1, 127, 128, 255, 256, -32, -33, -128, -129, 65535, 65536, -32768, -32769,
  4294967295, 4294967296, -2147483648, -2147483649, 2^53, -2^53, 2^53 + 2, 2^63, -2^63,
  1.5, -1.5, 0.1, 1e300, -1e-300, 2^-1074, helpers.neg_zero, 0.0, 1.0, -1.0, 16777217.0,
  math.huge, -math.huge, 0 / 0, -(0 / 0),
}
if has_subtypes then
  EDGE_NUMBERS[#EDGE_NUMBERS + 1] = math.maxinteger
  EDGE_NUMBERS[#EDGE_NUMBERS + 1] = math.mininteger
  EDGE_NUMBERS[#EDGE_NUMBERS + 1] = math.maxinteger - 1
end
-- Every length around the hash's word boundaries, and bytes of any value.
local EDGE_STRINGS = { "" }
for n = 1, 40 do
  local t = {}
  for i = 1, n do t[i] = string.char((i * 37 + n) % 256) end
  EDGE_STRINGS[#EDGE_STRINGS + 1] = table.concat(t)
end
EDGE_STRINGS[#EDGE_STRINGS + 1] = ("x"):rep(300)
EDGE_STRINGS[#EDGE_STRINGS + 1] = "\0"
EDGE_STRINGS[#EDGE_STRINGS + 1] = "\0\0\0\0\0\0\0\0"

local function random_value(r, depth)
  local k = r(depth > 3 and 6 or 9)
  if k == 0 then return EDGE_NUMBERS[r(#EDGE_NUMBERS) + 1] end
  if k == 1 then return r(2000) - 1000 end
  if k == 2 then return (r(2000) - 1000) / 8 end
  if k == 3 then return EDGE_STRINGS[r(#EDGE_STRINGS) + 1] end
  if k == 4 then return r(2) == 0 end
  if k == 5 then return "s" .. r(50) end
  local t = {}
  if k == 6 then
    for i = 1, r(12) do t[i] = random_value(r, depth + 1) end
  else
    for _ = 1, r(12) do
      local kk = r(5)
      local key
      if kk == 0 then key = r(40) - 5
      elseif kk == 1 then key = (r(100) + 0.5) / 4
      elseif kk == 2 then key = r(2) == 0
      else key = EDGE_STRINGS[r(#EDGE_STRINGS) + 1] end
      if key ~= nil then t[key] = random_value(r, depth + 1) end
    end
  end
  if k == 8 and depth < 3 then
    -- a key removed (another hash layout), a table key
    local key = next(t)
    if key ~= nil then t[key] = nil end
    t[{ r(3) }] = r(3)
  end
  return t
end

-- lua-messagepack (pure Lua): Debian ships it for 5.1-5.3; 5.4 loads 5.3's.
local function messagepack()
  local ok, mp = pcall(require, "MessagePack")
  if ok then return mp end
  local path53 = package.path:gsub("5%.4", "5.3")
  local file = package.searchpath and package.searchpath("MessagePack", path53)
  if file then
    mp = assert(loadfile(file))("MessagePack")
    package.loaded.MessagePack = mp
    return mp
  end
  error("lua-messagepack is needed: apt-get install lua-messagepack")
end

describe("the fingerprint of stored bytes", function()
  after_each(function() instate.teardown() end)

  it("equals the walk of the decoded value, for edge cases and random values, canonical or not", function()
    local values = { {}, { {} }, { 1, 2, 3 }, { [1] = "x", [3] = "z" }, { a = { b = { c = {} } } } }
    for _, x in ipairs(EDGE_NUMBERS) do
      values[#values + 1] = { x }
      values[#values + 1] = { v = x }
      if x == x and x ~= math.floor(x) then values[#values + 1] = { [x] = true } end
    end
    for _, s in ipairs(EDGE_STRINGS) do
      values[#values + 1] = { s }
      if s ~= "" then values[#values + 1] = { [s] = s } end
    end
    local r = rng(12345)
    for _ = 1, 3000 do
      local v = random_value(r, 0)
      if type(v) ~= "table" then v = { v } end
      values[#values + 1] = v
    end
    local deep = {}
    for _ = 1, 150 do deep = { deep } end
    values[#values + 1] = deep
    local big = {}
    for i = 1, 3000 do big["k" .. i] = { t = i % 17, h = i * 0.5, n = i } end
    values[#values + 1] = big
    local told, all = 0, {}
    for i, v in ipairs(values) do
      for _, opts in ipairs({ CANON, {} }) do
        local bytes = encode(v, nil, opts)
        -- what our encoder writes always has a fingerprint: no key is an
        -- integral float (Lua made it an integer, or it is one already)
        local b = check(bytes, "value " .. i)
        assert(b ~= nil, ("value %d: no fingerprint for %s"):format(i, hex(bytes)))
        told = told + 1
        all[#all + 1] = bytes
      end
    end
    assert.is_true(told > 6000)
    -- restored: every one of them holds its walk's
    local got = check_restored(all, "restored value")
    for i = 1, #all do assert(got[i] ~= nil, "restored value " .. i .. ": no fingerprint") end
  end)

  it("tells changes apart as the walk does: edits of the restored value move it", function()
    local base = { n = 1, z = 0.0, s = "abcdefghijklmnopq", t = { 1, 2, { x = true } } }
    local b = fpb(encode(base, nil, CANON))
    local edits = {
      function(v) v.n = 2 end,
      function(v) v.z = helpers.neg_zero end,
      function(v) v.z = 0 / 0 end,
      function(v) v.s = "abcdefghijklmnopr" end,
      function(v) v.t[3].x = false end,
      function(v) v.t[4] = 4 end,
      function(v) v.t[3].x = nil; v.t[3].y = true end,
      function(v) v.extra = {} end,
    }
    if has_subtypes then edits[#edits + 1] = function(v) v.n = 1.0 end end
    for i, edit in ipairs(edits) do
      local v = decode(encode(base, nil, CANON))
      assert.are.equal(b, fp(v))
      edit(v)
      assert.are_not.equal(b, fp(v), "edit " .. i)
    end
  end)

  it("hand-made bytes: wide forms and float32 give the walk's; duplicates, aliases and extensions none", function()
    local same = {
      "\129\161a\204\001",                  -- {a = 1}, 1 as uint8
      "\129\161a\205\000\001",              -- uint16
      "\129\161a\206\000\000\000\001",      -- uint32
      "\129\161a\207\000\000\000\000\000\000\000\001", -- uint64
      "\129\161a\208\255",                  -- -1 as int8
      "\129\161a\211\255\255\255\255\255\255\255\255", -- -1 as int64
      "\129\161a\202\063\192\000\000",      -- 1.5 as float32
      "\129\161a\202\127\192\000\001",      -- a float32 NaN with a payload
      "\129\161a\203\127\248\000\000\000\000\000\001", -- a float64 NaN with a payload
      "\129\161a\202\128\000\000\000",      -- -0.0 as float32
      "\129\217\001a\001",                  -- the key as str8
      "\129\196\001a\001",                  -- the key as bin8
      "\130\161b\002\161a\001",             -- keys not in canonical order
      "\130\161a\001\161b\192",             -- {a = 1, b = nil}: no entry b
      "\147\001\192\003",                   -- {1, nil, 3}
      "\220\000\002\001\002",               -- array16
      "\222\000\001\161a\001",              -- map16
      "\129\203\063\248\000\000\000\000\000\000\001", -- {[1.5] = 1}
      "\129\202\063\192\000\000\001",       -- {[1.5] = 1}, the key a float32
      "\129\145\001\002",                   -- a table key
    }
    for i, bytes in ipairs(same) do
      local b = check(bytes, "same " .. i)
      assert(b ~= nil, "same " .. i .. ": no fingerprint for " .. hex(bytes))
    end
    local none = {
      "\130\161a\001\161a\002",             -- a duplicate key: {a = 2}
      "\130\161a\001\161a\192",             -- a then deleted: {}
      "\130\161a\192\161a\001",             -- nil then a: {a = 1}
      "\130\001\161x\204\001\161y",         -- key 1 twice (fixint, uint8)
      "\130\161a\001\196\001a\002",         -- "a" as str and as bin
      "\130\203\063\248\000\000\000\000\000\000\001\202\063\192\000\000\002", -- 1.5 twice
      "\130\145\001\001\145\001\002",       -- two equal table keys (distinct in Lua)
      "\129\203\063\240\000\000\000\000\000\000\001", -- {[1.0] = 1}: an integral float key
      "\129\203\128\000\000\000\000\000\000\000\001", -- {[-0.0] = 1}
      "\129\203\127\240\000\000\000\000\000\000\001", -- {[inf] = 1}
    }
    -- maps of more than 16 keys (another way of finding duplicates):
    -- 17 keys a..q then one of them again, its value 1, or nil
    local function map17(last, value)
      local t = { "\222\000\018" }
      for c = ("a"):byte(), ("q"):byte() do t[#t + 1] = "\161" .. string.char(c) .. "\001" end
      t[#t + 1] = "\161" .. last .. value
      return table.concat(t)
    end
    none[#none + 1] = map17("a", "\002")  -- a twice: {a = 2, ...}
    none[#none + 1] = map17("q", "\192")  -- q then deleted
    none[#none + 1] = map17("q", "\001")  -- q twice, the same value
    -- a nil first, then the key with a value: {a = 1, ...}, which a long
    -- map tells exactly (a short one gives none: "nil then a" above)
    local nil_first = "\222\000\018\161a\192" .. map17("z", "\001"):sub(7)
    assert(check(nil_first, "nil first") ~= nil)
    assert.are.equal(fp(decode(nil_first)), fpb(nil_first))
    assert.are.equal(17, (function() local k = 0 for _ in pairs(decode(nil_first)) do k = k + 1 end return k end)())
    for i, bytes in ipairs(none) do
      check(bytes, "none " .. i)
      assert.is_nil(fpb(bytes), "none " .. i)
    end
    local nsame = #same
    local restored = {}
    for i = 1, nsame do restored[i] = same[i] end
    for i = 1, #none do restored[nsame + i] = none[i] end
    -- the deleted entry is not counted: never the walk of {a = 1}
    assert.are_not.equal(fp({ a = 1 }), fpb("\130\161a\001\161a\192"))
    -- an extension: a shared table (GRAPH and REF), a class instance
    local shared = {}
    local graph = encode({ shared, shared })
    assert.is_nil(fpb(graph))
    local Point = instate.register_class("fp_spec.Point", {})
    local instance = encode({ p = setmetatable({ x = 1 }, Point) })
    assert.is_nil(fpb(instance))
    assert.is_nil(select(2, decode_print(instance)))
    -- restored (the class registered): the same, at setup's read and at a
    -- declaration's; the hand-made wide forms have their walk's, the rest
    -- none
    restored[#restored + 1] = graph
    restored[#restored + 1] = instance
    local got = check_restored(restored, "hand-made")
    for i = 1, #restored do
      if i <= nsame then
        assert(got[i] ~= nil, "hand-made " .. i .. ": no fingerprint for " .. hex(restored[i]))
      else
        assert(got[i] == nil, "hand-made " .. i .. ": a fingerprint for " .. hex(restored[i]))
      end
    end
    instate.unregister_class("fp_spec.Point")
    -- bytes the decoder refuses: none, no error
    for _, bad in ipairs({ "", "\129\161a", "\145\001\001", "\129\192\001", "\129\203\127\248\000\000\000\000\000\000\001", "\193" }) do
      assert.is_nil(fpb(bad), hex(bad))
      local v, msg, code = decode_print(bad)
      assert.is_nil(v)
      assert.are.equal("CORRUPT", code)
      assert.are.same({ decode(bad) }, { v, msg, code })
    end
    assert.has_error(function() fpb({}) end)
  end)

  it("python3-msgpack's bytes (unsorted keys, None values, float32, bin) give the walk's or none", function()
    local PYTHON = "/usr/bin/python3"
    assert(helpers.execute(PYTHON .. " -c 'import msgpack' 2>/dev/null"),
      "python3-msgpack is needed: apt-get install python3-msgpack")
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/gen.py", [==[
import msgpack, random, struct, sys
random.seed(7)
def val(d):
    k = random.randrange(9 if d < 4 else 6)
    if k == 0: return random.choice([0, 1, -1, 127, 128, 255, 65536, -2**31, 2**40, 2**53, -2**53])
    if k == 1: return random.choice([1.5, -0.0, 0.0, 1.0, 1e300, float("inf"), float("nan")])
    if k == 2: return random.choice(["", "a", "abcdefgh", "abcdefghi", "x" * 17, "héllo"])
    if k == 3: return random.choice([True, False, None])
    if k == 4: return random.choice([b"a", b"\x00\xff", b"12345678"])
    if k == 5: return random.randrange(1000)
    if k == 6: return [val(d + 1) for _ in range(random.randrange(6))]
    m = {}
    for _ in range(random.randrange(8)):
        key = random.choice(["a", "b", "c", "d" * 9, 1, 2, 3, -4, 1.5, True, b"a", b"k"])
        m[key] = val(d + 1)
    return m
out = open(sys.argv[1], "wb")
for i in range(1500):
    v = val(0)
    if not isinstance(v, (list, dict)): v = [v]
    b = msgpack.packb(v, use_bin_type=True, use_single_float=(i % 2 == 0))
    out.write(struct.pack("<I", len(b)) + b)
]==])
    local out, ok = helpers.shell(PYTHON .. " " .. helpers.sh_quote(dir .. "/gen.py") .. " "
      .. helpers.sh_quote(dir .. "/all.bin") .. " 2>&1")
    assert(ok, out)
    local all = helpers.read_file(dir .. "/all.bin")
    local pos, n, told, list = 1, 0, 0, {}
    while pos <= #all do
      local a, b, c, d = all:byte(pos, pos + 3)
      local len = a + b * 256 + c * 65536 + d * 16777216
      local bytes = all:sub(pos + 4, pos + 3 + len)
      pos = pos + 4 + len
      n = n + 1
      -- a value the decoder refuses here (a NaN key cannot be made in
      -- python; an integer beyond 2^53 where numbers are doubles can)
      if pcall(decode, bytes) then
        if check(bytes, "python value " .. n) then told = told + 1 end
        list[#list + 1] = bytes
      end
    end
    check_restored(list, "python value")
    assert.are.equal(1500, n)
    assert.is_true(told > 1000, "only " .. told .. " fingerprints")
  end)

  it("lua-messagepack's bytes (unsorted keys, float32, int64 forms, holes) give the walk's or none", function()
    local mp = messagepack()
    local r = rng(99)
    local told, n, list = 0, 0, {}
    for _, number in ipairs({ "float", "double" }) do
      for _, integer in ipairs({ "signed", "unsigned" }) do
        mp.set_number(number)
        mp.set_integer(integer)
        mp.set_array("with_hole")
        for _ = 1, 300 do
          local v = random_value(r, 0)
          if type(v) ~= "table" then v = { v } end
          local okp, bytes = pcall(mp.pack, v)
          if okp and pcall(decode, bytes) then
            n = n + 1
            if check(bytes, "lua-messagepack value " .. n) then told = told + 1 end
            list[#list + 1] = bytes
          end
        end
      end
    end
    mp.set_number("double")
    mp.set_integer("signed")
    mp.set_array("without_hole")
    check_restored(list, "lua-messagepack value")
    assert.is_true(n > 1000 and told > 500, n .. " values, " .. told .. " fingerprints")
  end)
end)

describe("a restored table's fingerprint", function()
  after_each(function() instate.teardown() end)

  local function restart(path) return helpers.restart(instate, path) end
  local function saved(path, name) return helpers.saved(instate, path, name) end

  it("is the record's: read and not edited, it is not encoded; edited in place before the first save, it is saved", function()
    local path = helpers.tmpdir() .. "/s"
    assert(instate.setup(path))
    instate.defstate("a", { n = 1, list = { 1, 2 } })
    instate.defstate("b", { n = 1 })
    instate.defstate("c", { n = 1 }, { version = 2 })
    instate.defstate("d", { deep = { deeper = { x = 1 } } })
    assert(instate.save_all())
    restart(path)
    -- setup's read (a, b, d) and a declaration with options (c)
    local a, b = instate.defstate("a", {}), instate.defstate("b", {})
    local c = instate.defstate("c", {}, { version = 2 })
    local d = instate.defstate("d", {})
    a:get(); b:get(); c:get(); d:get()
    assert.are.equal(0, count_save_many(instate.save_all))
    a:get().list[3] = 3
    c:get().n = 7
    d:get().deep.deeper.x = 2
    assert.are.equal(3, count_save_many(instate.save_all))
    assert.are.same({ n = 1, list = { 1, 2, 3 } }, saved(path, "a"))
    assert.are.same({ n = 7 }, saved(path, "c"))
    assert.are.same({ deep = { deeper = { x = 2 } } }, saved(path, "d"))
    assert.are.same({ n = 1 }, saved(path, "b"))
  end)

  it("declared after a commit made setup's read stale: read from the record, edits saved", function()
    local path = helpers.tmpdir() .. "/s"
    assert(instate.setup(path))
    instate.defstate("a", { n = 1 })
    instate.defstate("b", { n = 1 })
    assert(instate.save_all())
    local store = restart(path)
    local a = instate.defstate("a", {})
    a:set({ n = 2 })
    assert(instate.save_all())        -- a commit: b is read by its defstate
    local b = instate.defstate("b", {})
    assert.are.equal(1, b:get().n)
    assert.are.equal(0, count_save_many(instate.save_all))
    b:get().n = 3
    assert.are.equal(1, count_save_many(instate.save_all))
    assert(store)
    assert.are.same({ n = 3 }, saved(path, "b"))
  end)

  it("of foreign bytes with a deleted key: an edit to the deleted entry's value is saved", function()
    local path = helpers.tmpdir() .. "/s"
    -- {a = 1, a = nil} and {b = 1, c = nil}: decoded {} and {b = 1}.
    -- Record version 1: setup's read takes the fingerprint (in C); version
    -- 0: each defstate reads its record (_fingerprint_bytes); with options:
    -- from setup's read again.
    for _, case in ipairs({ { 1 }, { 0 }, { 1, { version = 1 } } }) do
      local ns = assert(instate.setup(path)):namespace("state", "state")
      assert(ns:set_encoded("t", "\130\161a\001\161a\192", { version = case[1] }))
      assert(ns:set_encoded("u", "\130\161b\001\161c\192", { version = case[1] }))
      restart(path)
      local t, u = instate.defstate("t", {}, case[2]), instate.defstate("u", {}, case[2])
      assert.are.same({}, t:get())
      assert.are.same({ b = 1 }, u:get())
      t:get().a = 1
      u:get().c = 2
      assert(instate.save_all())
      assert.are.same({ a = 1 }, saved(path, "t"))
      assert.are.same({ b = 1, c = 2 }, saved(path, "u"))
      instate.teardown()
    end
  end)

  it("is forgotten when another value is saved: a table equal to the old record set back is saved", function()
    local path = helpers.tmpdir() .. "/s"
    assert(instate.setup(path))
    instate.defstate("r", { n = 1 })      -- restored below: the record's fingerprint
    local s = instate.defstate("s", { n = 1 })
    assert(instate.save_all())            -- s: fingerprinted by this save
    restart(path)
    local r = instate.defstate("r", {})
    s = instate.defstate("s", {})
    for _, var in ipairs({ r, s }) do
      var:set(5)
      assert(instate.save_all())
      var:set({ n = 1 })
      assert(instate.save_all())
    end
    assert.are.same({ n = 1 }, saved(path, "r"))
    assert.are.same({ n = 1 }, saved(path, "s"))
    -- the same within one run, after a table save
    local t = instate.defstate("t", { n = 1 })
    assert(instate.save_all())
    t:set("text")
    assert(instate.save_all())
    t:set({ n = 1 })
    assert(instate.save_all())
    assert.are.same({ n = 1 }, saved(path, "t"))
  end)

  it("picked in one pass among many unchanged ones: edits in place, sets, unread and tracked ones, versions", function()
    local path = helpers.tmpdir() .. "/s"
    local N = 600
    local function name(i) return ("v%03d"):format(i) end
    local function kind(i)
      if i % 5 == 0 then return "scalar" end
      if i % 7 == 0 then return "tracked" end
      return "table"
    end
    local function opts(i)
      local o = {}
      if kind(i) == "tracked" then o.track = true end
      if i % 11 == 0 then o.version = 2 end     -- save_many gets per-variable versions
      return next(o) and o or nil
    end
    local function default(i)
      if kind(i) == "scalar" then return i end
      return { n = i, list = { i, i + 1 }, sub = { s = name(i) } }
    end
    assert(instate.setup(path))
    for i = 1, N do instate.defstate(name(i), default(i), opts(i)) end
    assert(instate.save_all())
    local store = restart(path)
    local vars = {}
    -- v001..v010 stay unread; every other one is read
    for i = 1, N do
      vars[i] = instate.defstate(name(i), kind(i) == "scalar" and 0 or {}, opts(i))
      if i > 10 then vars[i]:get() end
    end
    assert.are.equal(0, count_save_many(instate.save_all))
    local rev = store:revision()
    -- a table edited in place deep inside, one at the top, one at the
    -- end of the list; a scalar set; a tracked one written
    vars[101]:get().sub.s = "edited"
    vars[302]:get().n = -1
    vars[N - 1]:get().list[3] = 0
    vars[300]:set(-300)
    vars[319]:get().n = 1        -- version 2 (319 = 11 * 29)
    vars[301]:get().n = 0        -- 301 = 7 * 43: tracked
    assert.are.equal("tracked", kind(301))
    assert.are.equal(6, count_save_many(instate.save_all))
    assert.are.equal(rev + 1, store:revision())
    assert.are.equal(0, count_save_many(instate.save_all))
    -- a table that cannot be fingerprinted among them: raises by name as
    -- the codec does, writes nothing, and saves once it is storable again
    vars[202]:get().list[3] = print
    vars[203]:get().n = 203.5    -- 203 = 7 * 29: tracked
    assert.are.equal("tracked", kind(203))
    local msg = helpers.errmsg(instate.save_all)
    assert.matches("cannot store a function at v202.list[3]", msg, 1, true)
    assert.are.equal(rev + 1, store:revision())
    -- v202 is back to its record (so not written), v203 (tracked) is saved
    vars[202]:get().list[3] = nil
    assert.are.equal(1, count_save_many(instate.save_all))
    vars[202]:get().list[3] = false
    assert.are.equal(1, count_save_many(instate.save_all))
    assert.are.equal(0, count_save_many(instate.save_all))
    local ns = restart(path):namespace("state", "state")
    local want = {
      [101] = { n = 101, list = { 101, 102 }, sub = { s = "edited" } },
      [302] = { n = -1, list = { 302, 303 }, sub = { s = "v302" } },
      [N - 1] = { n = N - 1, list = { N - 1, N, 0 }, sub = { s = name(N - 1) } },
      [301] = { n = 0, list = { 301, 302 }, sub = { s = "v301" } },
      [202] = { n = 202, list = { 202, 203, false }, sub = { s = "v202" } },
      [203] = { n = 203.5, list = { 203, 204 }, sub = { s = "v203" } },
      [300] = -300,
      [319] = { n = 1, list = { 319, 320 }, sub = { s = "v319" } },
    }
    for i = 1, N do
      local bytes, ver = ns:get_encoded(name(i))
      assert.are.same(want[i] or default(i), decode(assert(bytes)), name(i))
      assert.are.equal(i % 11 == 0 and 2 or 1, ver, name(i))
    end
  end)

  it("get_all_objects' fpslot: only for tables, and checked", function()
    local path = helpers.tmpdir() .. "/s"
    local store = assert(instate.setup(path))
    local ns = store:namespace("state", "state")
    assert(ns:set("t", { x = 1 }))
    assert(ns:set("n", 5))
    local shared = {}
    assert(ns:set("r", { shared, shared }))
    local mt = {}
    local objects = ns:get_all_objects(mt, {}, 1, 0, 2)
    assert.are.equal(fp({ x = 1 }), objects.t[2])
    assert.is_nil(objects.n[2])
    assert.is_nil(objects.r[2])      -- references: none
    local without = ns:get_all_objects(mt, {}, 1, 0)
    assert.is_nil(without.t[2])
    assert.matches("bad argument #%d to '[^']*' %(fpslot must be 1%.%.64%)",
      helpers.errmsg(ns.get_all_objects, ns, mt, {}, 1, 0, 65))
  end)
end)
