-- The store is plain LMDB: python3-lmdb opens it and python3-msgpack decodes
-- its values, following docs/FORMAT.md section 2 ("Store layout") alone.
local helpers = require "helpers"
local instate = require "instate"

local PYTHON = "/usr/bin/python3"

local function have_python()
  return helpers.execute(PYTHON .. " -c 'import lmdb, msgpack' >/dev/null 2>&1")
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
local function unhex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end

-- Reads the store by the documented layout only. Prints one line per fact:
--   dbs <names of every named database, sorted, comma separated>
--   meta format|revision|nsid <n>
--   ns <name hex> <id> <type>
--   rec <ns name hex> <key hex> <flags> <expires_ms> <version> <value hex> <repacked hex>
local READER = [[
import sys, lmdb, msgpack
def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xFFFFFFFF
path = sys.argv[1]
env = lmdb.open(path, readonly=True, lock=False, max_dbs=64, subdir=True)
names = []
with env.begin() as txn:
    for k, _ in txn.cursor():
        names.append(k)
print("dbs " + ",".join(n.decode() for n in sorted(names)))
meta = env.open_db(b"__meta", create=False)
nss = []
with env.begin(db=meta) as txn:
    fmt = txn.get(b"format")
    print("meta format %d" % int.from_bytes(fmt, "big"))
    print("meta revision %d" % int.from_bytes(txn.get(b"revision"), "big"))
    for k, v in txn.cursor():
        if k.startswith(b"ns:"):
            name = k[3:]
            assert len(v) == 5, "ns entry of %d bytes" % len(v)
            print("ns %s %d %d" % (name.hex(), int.from_bytes(v[:4], "big"), v[4]))
            nss.append(name)
for name in nss:
    db = env.open_db(name, create=False)
    with env.begin(db=db) as txn:
        for k, v in txn.cursor():
            flags = v[0]
            assert flags & 0x04, "record without checksum"
            assert int.from_bytes(v[1:5], "big") == crc32c(k + v[:1] + v[5:]), "bad checksum"
            pos, expires, version = 5, 0, 0
            if flags & 0x01:
                expires = int.from_bytes(v[pos:pos + 8], "big"); pos += 8
            if flags & 0x02:
                version = int.from_bytes(v[pos:pos + 4], "big"); pos += 4
            assert flags & ~0x07 == 0, "unknown record flags %x" % flags
            body = v[pos:]
            obj = msgpack.unpackb(body, raw=True, strict_map_key=False)
            again = msgpack.packb(obj, use_bin_type=True)
            print("rec %s %s %d %d %d %s %s" % (name.hex(), k.hex(), flags, expires, version,
                                                body.hex(), again.hex()))
]]

describe("store interop with python3-lmdb and python3-msgpack", function()
  if not have_python() then
    it("needs /usr/bin/python3 with lmdb and msgpack", function()
      error("install python3-lmdb and python3-msgpack")
    end)
    return
  end

  local T0 = 1700000000000
  local values = {
    players = {
      alice = { hp = 100, pos = { x = 1.5, y = -3 }, name = "Alice", alive = true },
      bob = { 1, 2, 3, "four" },
      ["\0bin"] = "bytes \0\255 here",
    },
    items = {
      sword = { dmg = 7, tags = { "sharp", "iron" } },
      count = 42,
      big = math.maxinteger,
      neg = math.mininteger,
      f = 0.1,
      nothing = false,
    },
  }

  local path, lines
  setup(function()
    path = helpers.tmpdir() .. "/s"
    instate._set_clock(T0)
    local store = assert(instate.open(path))
    for nsname, recs in pairs(values) do
      local ns = store:namespace(nsname)
      for k, v in pairs(recs) do assert(ns:set(k, v)) end
    end
    local items = store:namespace("items")
    assert(items:set("timed", "soon", { ttl = 60 }))
    assert(items:set_encoded("versioned", instate.encode("v"), { version = 7 }))
    assert(items:set_encoded("both", instate.encode({ 1 }), { version = 3, ttl = 2 }))
    assert(items:set("deleted", 1))
    assert(items:delete("deleted"))
    store:namespace("emptied"):set("k", 1)
    store:namespace("emptied"):delete("k")
    store:close()
    instate._set_clock(nil)

    local script = helpers.tmpdir() .. "/read_store.py"
    helpers.write_file(script, READER)
    local out, ok = helpers.shell(PYTHON .. " " .. helpers.sh_quote(script) .. " "
      .. helpers.sh_quote(path) .. " 2>&1")
    assert(ok, "python reader failed:\n" .. out)
    lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  end)

  local function find(pattern)
    local found = {}
    for _, l in ipairs(lines) do
      local caps = { l:match(pattern) }
      if #caps > 0 then found[#found + 1] = caps end
    end
    return found
  end

  it("has one named database per namespace plus __meta", function()
    local dbs = find("^dbs (.*)$")[1][1]
    assert.are.equal("__meta,emptied,items,players", dbs)
  end)

  it("keeps the format version and the revision in __meta", function()
    local meta = {}
    for _, c in ipairs(find("^meta (%a+) (%d+)$")) do meta[c[1]] = tonumber(c[2]) end
    assert.are.equal(2, meta.format)
    local store = assert(instate.open(path, { readonly = true }))
    assert.are.equal(store:revision(), meta.revision)
    store:close()
  end)

  it("lists every namespace in __meta with a distinct id and the kv type", function()
    local seen, ids = {}, {}
    for _, c in ipairs(find("^ns (%x+) (%d+) (%d+)$")) do
      local name = unhex(c[1])
      seen[#seen + 1] = name
      assert.is_nil(ids[c[2]], "id reused")
      ids[c[2]] = true
      assert.are.equal("1", c[3], name)
    end
    table.sort(seen)
    assert.are.same({ "emptied", "items", "players" }, seen)
  end)

  it("stores every record as header + MessagePack that python decodes", function()
    local recs = {}
    for _, c in ipairs(find("^rec (%x+) (%x+) (%d+) (%d+) (%d+) (%x+) (%x+)$")) do
      local nsname, key = unhex(c[1]), unhex(c[2])
      recs[nsname] = recs[nsname] or {}
      recs[nsname][key] = {
        flags = tonumber(c[3]), expires = tonumber(c[4]), version = tonumber(c[5]),
        body = unhex(c[6]), repacked = unhex(c[7]),
      }
    end
    for nsname, expect in pairs(values) do
      local n = 0
      for key, v in pairs(expect) do
        local r = recs[nsname] and recs[nsname][key]
        assert.is_not_nil(r, nsname .. "/" .. key)
        assert.are.equal(4, r.flags, key)
        -- the value bytes are exactly the codec's output
        assert.are.equal(hex(instate.encode(v)), hex(r.body), key)
        -- python's decoding of them is the same value
        assert.are.same(v, instate.decode(r.repacked), key)
        n = n + 1
      end
      local extra = { players = 0, items = 3 }
      local have = 0
      for _ in pairs(recs[nsname]) do have = have + 1 end
      assert.are.equal(n + extra[nsname], have, nsname)
    end
    local items = recs.items
    assert.are.same({ flags = 5, expires = T0 + 60000, version = 0 },
      { flags = items.timed.flags, expires = items.timed.expires, version = items.timed.version })
    assert.are.equal("soon", instate.decode(items.timed.repacked))
    assert.are.same({ flags = 6, expires = 0, version = 7 },
      { flags = items.versioned.flags, expires = items.versioned.expires,
        version = items.versioned.version })
    assert.are.same({ flags = 7, expires = T0 + 2000, version = 3 },
      { flags = items.both.flags, expires = items.both.expires, version = items.both.version })
    assert.are.same({ 1 }, instate.decode(items.both.repacked))
    assert.is_nil(items.deleted)
    assert.is_nil(recs.emptied)
  end)

  it("the documented layout is written down in docs/FORMAT.md", function()
    local doc = helpers.read_file(helpers.source_dir() .. "/docs/FORMAT.md")
    local section = doc and doc:match("## 2%. Store layout(.-)\n## 3")
    assert.is_not_nil(section)
    for _, word in ipairs({ "__meta", "revision", "format", "ns:", "expir", "version" }) do
      assert.matches(word, section, 1, true)
    end
  end)
end)
