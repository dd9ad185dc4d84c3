--- track: tracked defstate variables (defstate(name, default, {track = true})).
--
-- A tracked variable holds a table. What get() returns is not that table
-- but a proxy: an empty table whose metatable forwards reads to it and
-- records writes (sets the variable's DIRTY slot), so save_all encodes a
-- tracked variable only when something was written through it, without
-- even fingerprinting it. A table read through a proxy comes back as a
-- proxy of its own (one per table and variable, kept while it is in use),
-- so nested writes are recorded too. docs/DESIGN.md (defstate: tracked
-- variables) says why a proxy and not a write barrier; README lists the
-- limits (rawset, next, #, table.insert/remove, pairs on each Lua).
--
-- require("instate.track")(Var, internals) returns the class of tracked
-- variables: Var's slots, its own get/set/update/reset/saved.

local compat = require "instate.compat"
local type, next, setmetatable, getmetatable, rawset, error =
      type, next, setmetatable, getmetatable, rawset, compat.error

-- The table behind each proxy (weak keys: a proxy dropped by the user
-- goes away; its table is not held by it).
local real_of = setmetatable({}, { __mode = "k" })
-- Each variable's proxies by table (weak values: the entry lasts while
-- the user holds the proxy, so a proxy keeps its identity while in use).
local WEAK_V = { __mode = "v" }

local function unwrap(x)
	return real_of[x] or x
end

local wrap

local function mark(var, internals)
	if internals.in_transaction() then internals.log_old(var) end
	var[2] = true
end

function wrap(var, t, internals)
	local cache = var[6]
	if not cache then
		cache = setmetatable({}, WEAK_V)
		var[6] = cache
	end
	local p = cache[t]
	if p then return p end
	p = {}
	setmetatable(p, {
		__name = "instate.tracked",
		__index = function(_, k)
			local x = t[k]
			if type(x) == "table" then return wrap(var, x, internals) end
			return x
		end,
		__newindex = function(_, k, x)
			if type(x) == "table" then x = real_of[x] or x end
			mark(var, internals)
			rawset(t, k, x)
		end,
		-- 5.2 and later only: 5.1 and LuaJIT ignore both on tables.
		__pairs = function()
			return function(_, k)
				local nk, nv = next(t, k)
				if type(nv) == "table" then nv = wrap(var, nv, internals) end
				return nk, nv
			end, p, nil
		end,
		__len = function() return #t end,
	})
	cache[t] = p
	real_of[p] = t
	return p
end

return function(Var, internals)
	local UNREAD, read, assign, deepcopy, argerror, typename =
		internals.UNREAD, internals.read, internals.assign, internals.deepcopy,
		internals.argerror, internals.typename

	local TVar = {}
	for k, v in next, Var do TVar[k] = v end
	TVar.__index = TVar
	TVar.__name = "instate.Var"
	TVar.track = true

	local function bad_self(self, method)
		error(("bad self to '%s' (a variable expected, got %s; call var:%s(...))")
			:format(method, typename(self), method), 3)
	end

	local function need_table(fname, v, level)
		if type(v) ~= "table" then
			argerror(level + 1, fname, 1, "table expected for a tracked variable, got " .. typename(v))
		end
	end

	function TVar:get()
		if getmetatable(self) ~= TVar then bad_self(self, "get") end
		local v = self[1]
		if v == UNREAD then v = read(self) end
		return wrap(self, v, internals)
	end

	function TVar:set(v)
		if getmetatable(self) ~= TVar then bad_self(self, "set") end
		v = unwrap(v)
		need_table("set", v, 2)
		assign(self, v)
	end

	function TVar:update(fn)
		if getmetatable(self) ~= TVar then bad_self(self, "update") end
		if type(fn) ~= "function" then
			argerror(2, "update", 1, "function expected, got " .. typename(fn))
		end
		local v = self[1]
		if v == UNREAD then v = read(self) end
		v = unwrap(fn(wrap(self, v, internals)))
		if type(v) ~= "table" then
			error(("update: the function returned %s for tracked variable '%s' (a table expected)")
				:format(typename(v), self.name), 2)
		end
		assign(self, v)
		return wrap(self, v, internals)
	end

	function TVar:reset()
		if getmetatable(self) ~= TVar then bad_self(self, "reset") end
		assign(self, deepcopy(self[3]))
	end

	local saved = internals.saved
	function TVar:saved()
		if getmetatable(self) ~= TVar then bad_self(self, "saved") end
		return saved(self)
	end

	return TVar, unwrap
end
