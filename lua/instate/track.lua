--- track: tracked defstate variables (defstate(name, default, {track = true})).
--
-- A tracked variable holds a table. What get() returns is not that table
-- but a proxy: an empty table whose metatable forwards reads to it and
-- records writes (sets the variable's DIRTY slot), so save_all encodes a
-- tracked variable only when something was written through it, without
-- even fingerprinting it. A table read through a proxy comes back as a
-- proxy of its own (kept while it is in use), so nested writes are
-- recorded too. docs/DESIGN.md (defstate: tracked
-- variables) says why a proxy and not a write barrier; README lists the
-- limits (rawset, next, #, table.insert/remove, pairs on each Lua).
--
-- require("instate.track")(Var, internals) returns the class of tracked
-- variables: Var's slots, its own get/set/update/reset/saved.

local compat = require "instate.compat"
local type, next, setmetatable, getmetatable, rawset, error =
      type, next, setmetatable, getmetatable, rawset, compat.error

-- A proxy is a table holding two private keys, its table and its
-- variable, under one metatable shared by every proxy: one allocation per
-- proxy, and no weak table the collector must revisit. User keys never
-- equal the private keys, so every user read and write reaches the
-- metamethods.
local REAL, OWNER = setmetatable({}, { __name = "instate.tracked.table" }),
                    setmetatable({}, { __name = "instate.tracked.var" })
local WEAK_V = { __mode = "v" }
local PROXY = { __name = "instate.tracked" }

local function unwrap(x)
	if getmetatable(x) == PROXY then return rawget(x, REAL) end
	return x
end

-- Whether x is the proxy of another variable's table: stored in var, that
-- table is shared by two variables, and writes through the other one's
-- proxies are not var's (see share).
local function foreign(var, x)
	return getmetatable(x) == PROXY and rawget(x, OWNER) ~= var
end

local mark

-- The proxy of t for var: var[6] holds the one of its value itself;
-- var[7], made at the first read of a sub-table, those of sub-tables
-- (weak values: kept while the user holds one, so a proxy keeps its
-- identity while in use).
local function wrap(var, t)
	local p = var[6]
	if p and rawget(p, REAL) == t then return p end
	if t == var[1] then
		p = setmetatable({ [REAL] = t, [OWNER] = var }, PROXY)
		var[6] = p
		return p
	end
	local cache = var[7]
	if not cache then
		cache = setmetatable({}, WEAK_V)
		var[7] = cache
	end
	p = cache[t]
	if p then return p end
	p = setmetatable({ [REAL] = t, [OWNER] = var }, PROXY)
	cache[t] = p
	return p
end

-- A big tracked variable's entry cache (src/lentries.c; docs/DESIGN.md,
-- defstate: tracked variables): var[9] the cache (false: none this run,
-- nil: not known yet), var[10] the top-level keys written since the last
-- save, var[11] the owner map (weak keys: a table of the value -> the
-- top-level key it is under). Forgetting all three is always safe: the
-- next save encodes the value whole and builds a new cache from that.
local WEAK_K = { __mode = "k" }
local function drop(var)
	var[9], var[10], var[11] = nil, nil, nil
end

-- var's value is to hold x, the proxy of another variable's table: the
-- two values share it, and either's entries may then change where its
-- own proxies do not see, so neither keeps an entry cache (slot 12) until
-- a restore or reload_all gives it a value of its own: saves encode them
-- whole.
local function share(var, x)
	local other = rawget(x, OWNER)
	drop(var)
	drop(other)
	var[12], other[12] = true, true
end

-- The top-level key of t (a table of var's value), or nil if unknown.
local function top_of(var, t, k)
	if t == var[1] then return k end
	return var[11][t]
end

-- x, a table read at t[k], escapes to the program: record its entry; one
-- under another entry already is shared (or moved): forget the cache.
local function escape(var, t, k, x)
	local top = top_of(var, t, k)
	if top == nil then return drop(var) end
	local owner = var[11]
	local was = owner[x]
	if was == nil then
		owner[x] = top
	elseif was ~= top then
		drop(var)
	end
end

function PROXY.__index(p, k)
	local t = p[REAL]
	local x = t[k]
	if type(x) == "table" then
		local var = p[OWNER]
		if var[9] then escape(var, t, k, x) end
		return wrap(var, x)
	end
	return x
end

function PROXY.__newindex(p, k, x)
	local var, t = p[OWNER], p[REAL]
	if type(x) == "table" then
		if foreign(var, x) then share(var, x) end
		x = unwrap(x)
	end
	mark(var)
	rawset(t, k, x)
	if var[9] then
		local top = top_of(var, t, k)
		if top == nil then drop(var) else var[10][top] = true end
	end
end

-- 5.2 and later only: 5.1 and LuaJIT ignore both on tables.
function PROXY.__pairs(p)
	local t, var = p[REAL], p[OWNER]
	return function(_, k)
		local nk, nv = next(t, k)
		-- a table key comes out as itself: recorded as the value is
		if type(nk) == "table" and var[9] then escape(var, t, nk, nk) end
		if type(nv) == "table" then
			if var[9] then escape(var, t, nk, nv) end
			nv = wrap(var, nv)
		end
		return nk, nv
	end, p, nil
end

function PROXY.__len(p)
	return #p[REAL]
end

return function(Var, internals)
	local UNREAD, read, assign, deepcopy, argerror, typename =
		internals.UNREAD, internals.read, internals.assign, internals.deepcopy,
		internals.argerror, internals.typename
	local in_transaction, log_old = internals.in_transaction, internals.log_old
	local touch, stamp = internals.touch, internals.stamp
	function mark(var)
		if in_transaction() then log_old(var) end
		touch(var)
		stamp(var)
	end

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
		return wrap(self, v)
	end

	function TVar:set(v)
		if getmetatable(self) ~= TVar then bad_self(self, "set") end
		if foreign(self, v) then share(self, v) end
		v = unwrap(v)
		need_table("set", v, 2)
		drop(self)
		assign(self, v)
	end

	function TVar:update(fn)
		if getmetatable(self) ~= TVar then bad_self(self, "update") end
		if type(fn) ~= "function" then
			argerror(2, "update", 1, "function expected, got " .. typename(fn))
		end
		local v = self[1]
		if v == UNREAD then v = read(self) end
		v = fn(wrap(self, v))
		if foreign(self, v) then share(self, v) end
		v = unwrap(v)
		if type(v) ~= "table" then
			error(("update: the function returned %s for tracked variable '%s' (a table expected)")
				:format(typename(v), self.name), 2)
		end
		drop(self)
		assign(self, v)
		return wrap(self, v)
	end

	function TVar:reset()
		if getmetatable(self) ~= TVar then bad_self(self, "reset") end
		drop(self)
		assign(self, deepcopy(self[3]))
	end

	local saved = internals.saved
	function TVar:saved()
		if getmetatable(self) ~= TVar then bad_self(self, "saved") end
		local is = saved(self)          -- not a tail call: its errors name the caller
		return is
	end

	-- The entry caches, for defstate: E.attach at a restore, E.pick at a
	-- save, E.drop when the value is replaced.
	local new_entries, count_entries = internals.entries, internals.count_entries
	local read_record = internals.read_record
	local MIN = internals.entries_min
	local E = { drop = drop, min = MIN }

	-- v was decoded from bytes, var's record (nil: read it again, only
	-- for a big v): a cache ready from the bytes when they are canonical.
	-- Not for a variable with validate (it gets the table itself, and may
	-- change it where no proxy sees).
	function E.attach(var, v, bytes)
		drop(var)
		var[12] = nil
		if var.validate or count_entries(v, MIN) < MIN then
			var[9] = false
			return
		end
		if bytes == nil then bytes = read_record(var.name) end
		local dirty, owner = {}, setmetatable({}, WEAK_K)
		var[9] = new_entries(v, dirty, owner, bytes)
		var[10], var[11] = dirty, owner
	end

	-- save_all's values: a big tracked table goes as its cache (made
	-- empty at its first save in a run, when it has MIN entries: then
	-- built from that save's full encode).
	function E.pick(vars, keys, vals, m)
		for i = 1, m do
			local v = vals[i]
			if type(v) == "table" then
				local var = vars[keys[i]]
				if var.track then
					local c = var[9]
					if c == nil then
						if var[12] then
							c = false
						elseif var.validate or count_entries(v, MIN) < MIN then
							var[9] = false
						else
							local dirty, owner = {}, setmetatable({}, WEAK_K)
							c = new_entries(v, dirty, owner)
							var[9], var[10], var[11] = c, dirty, owner
						end
					end
					if c then vals[i] = c end
				end
			end
		end
	end

	return TVar, unwrap, E
end
