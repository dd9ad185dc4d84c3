--- Integers read on every Lua: exact, or refused by name, never a nearby
-- double. On 5.3 and 5.4 every 64-bit integer is exact; where numbers are
-- doubles (5.1, 5.2, LuaJIT) an integer beyond 2^53 is refused.
local instate = require "instate"
local helpers = require "helpers"

local INTEGERS = _VERSION == "Lua 5.3" or _VERSION == "Lua 5.4"

-- MessagePack: uint64 2^53 + 1, int64 -(2^53 + 1), uint64 2^53, int64 -2^53
local BIG = "\207\0\32\0\0\0\0\0\1"
local NEG_BIG = "\211\255\223\255\255\255\255\255\255"
local EDGE = "\207\0\32\0\0\0\0\0\0"
local NEG_EDGE = "\211\255\224\0\0\0\0\0\0"

describe("integers beyond 2^53", function()
  it("read exactly up to 2^53 on every Lua", function()
    assert.are.equal(2 ^ 53, instate.decode(EDGE))
    assert.are.equal(-2 ^ 53, instate.decode(NEG_EDGE))
    assert.are.equal("9007199254740992", ("%.0f"):format(instate.decode(EDGE)))
  end)

  if INTEGERS then
    it("read exactly past 2^53 where Lua has 64-bit integers", function()
      assert.are.equal("9007199254740993", tostring(instate.decode(BIG)))
      assert.are.equal("-9007199254740993", tostring(instate.decode(NEG_BIG)))
    end)
  else
    it("are refused with CORRUPT and a message naming the byte, never rounded", function()
      for _, bytes in ipairs({ BIG, NEG_BIG, "\145" .. BIG }) do
        local v, msg, code = instate.decode(bytes)
        assert.is_nil(v)
        assert.matches("at byte %d+: an integer beyond 2%^53, which this Lua's numbers cannot"
          .. " hold exactly$", msg)
        assert.are.equal("CORRUPT", code)
      end
    end)

    it("in a store, reads as nil, a message naming the key and CORRUPT", function()
      local dir = helpers.tmpdir() .. "/s"
      local store = assert(instate.open(dir))
      assert(store:namespace("n"):set("id", 1))
      store:close()
      helpers.put_raw(dir, "n", "id", helpers.record_bytes("id", BIG))
      store = assert(instate.open(dir))
      local v, msg, code = store:namespace("n"):get("id")
      assert.is_nil(v)
      assert.matches("^corrupt value at key 'id': .*an integer beyond 2%^53", msg)
      assert.are.equal("CORRUPT", code)
      store:close()
    end)
  end
end)
