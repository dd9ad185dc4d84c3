--- instate: a durable state store for Lua.
-- The C module instate.core provides the codec and the store; this file
-- extends it with what is nicer in Lua (defstate variables, readable
-- values).
local core = require "instate.core"

local instate = {}
for k, v in pairs(core) do instate[k] = v end
require("instate.defstate")(instate)

local format = require "instate.format"
format.max_depth = core.max_depth or format.max_depth
format.class_name, format.class_metatable = core.class_name, core.class_metatable
instate.format, instate.parse = format.format, format.parse

return instate
