--- instate: a durable state store for Lua.
-- The C module instate.core provides the codec and the store; this file
-- extends it with what is nicer in Lua (defstate variables).
local core = require "instate.core"

local instate = {}
for k, v in pairs(core) do instate[k] = v end
require("instate.defstate")(instate)

return instate
