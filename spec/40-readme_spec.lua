-- Every ```lua block of README.md runs as written, in a fresh process and a
-- scratch directory (a block that continues an earlier one gets the names
-- it needs from a short prelude).
local helpers = require "helpers"

local preludes = {
  -- blocks that use names set up by the text around them
  ["local hero = instate.defstate"] = 'local instate = require "instate"; instate.setup("save")\n',
  ["-- a nightly backup"] = 'local instate = require "instate"\n'
    .. 'local store = assert(instate.open("store"))\n'
    .. 'store:namespace("state"):set("score", 10)\n'
    .. 'os.execute("mkdir -p backup")\n',
}

local function blocks()
  local text = assert(helpers.read_file(helpers.source_dir() .. "/README.md"))
  local list = {}
  for code in text:gmatch("```lua\n(.-)```") do list[#list + 1] = code end
  return list
end

describe("README examples", function()
  for i, code in ipairs(blocks()) do
    it("block " .. i .. " runs", function()
      local prelude = ""
      for marker, p in pairs(preludes) do
        if code:find(marker, 1, true) then prelude = p end
      end
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/example.lua", prelude .. code)
      local out, ok = helpers.shell("cd " .. helpers.sh_quote(dir) .. " && " .. helpers.lua_cmd()
        .. " example.lua 2>&1")
      assert.is_true(ok, out)
    end)
  end
end)
