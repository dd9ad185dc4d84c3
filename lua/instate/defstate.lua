--- defstate: variables that restore themselves from a store.
--
-- require("instate.defstate")(instate) installs setup, defstate, save_all,
-- reload_all, transaction, vars and teardown into the module table. Each
-- Lua state that requires instate gets its own set of variables.
--
-- Variables live in one namespace of type "state" (default name "state"):
-- key = the variable's name, value = its MessagePack encoding, record
-- version = the variable's declared version.
--
-- Decisions worth knowing (README documents them for users):
--  * A table default is used as the variable's value itself when nothing is
--    saved, so editing it in place edits the variable. reset() installs a
--    fresh copy of the default as it was when declared.
--  * setup() reads every saved variable's bytes in one scan; defstate then
--    only decodes. If anything was committed to the store since that scan,
--    defstate reads the record itself, so it never restores a stale value.
--  * Per variable we keep the bytes last saved or restored. save_all skips a
--    variable whose new encoding equals them, and skips even the encoding of
--    a non-table value that was not set since. Tables may have been changed
--    in place, so they are always encoded.
--  * A record written without a version (version 0) counts as version 1.

local type, pairs, error, pcall, tostring, setmetatable, getmetatable, next =
      type, pairs, error, pcall, tostring, setmetatable, getmetatable, next
local math_type, concat = math.type, table.concat

local KEY_MAX = 511

local function typename(v)
	local t = type(v)
	if t == "number" then return math_type(v) == "integer" and "integer" or "number" end
	return t
end

-- luaL_argerror's wording, with the position of the user's call.
local function argerror(level, fname, n, msg)
	error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), level + 1)
end

local function quote(name) return ("'%s'"):format(name) end

-- A copy keeping the shape of references (shared sub-tables, cycles).
local function deepcopy(v, seen)
	if type(v) ~= "table" then return v end
	seen = seen or {}
	local c = seen[v]
	if c then return c end
	c = {}
	seen[v] = c
	for k, x in next, v do
		c[deepcopy(k, seen)] = deepcopy(x, seen)
	end
	return c
end

-- The value of a variable restored but not used yet: its bytes are decoded
-- at first use (get, update, a set inside a transaction).
local UNREAD = setmetatable({}, { __name = "instate.unread" })

local Var = {}
Var.__index = Var
Var.__name = "instate.Var"
function Var:__tostring() return ("instate.var(%s)"):format(self.name) end

return function(instate)
	local decode, open = instate.decode, instate.open

	-- The default store and what this Lua state declared in it.
	local store, store_path, ns_name
	local vars, order = {}, {}       -- name -> var; declaration order
	-- Saved bytes (and versions other than 1) read by setup's scan, consumed
	-- by the first defstate of each name; valid while the store's revision
	-- is still scan_rev.
	local pending, pending_ver, scan_rev
	-- instate.transaction: the open undo log (nil outside), logs of
	-- enclosing transactions below it.
	local undo, undo_stack = nil, {}

	local function read(var)
		local v, msg = decode(var.bytes)
		if v == nil and msg ~= nil then
			error(("instate: saved value of variable %s is corrupt: %s"):format(quote(var.name), msg), 3)
		end
		var.value = v
		return v
	end

	local function check_var(self, method)
		if getmetatable(self) ~= Var then
			error(("bad self to '%s' (a variable expected, got %s; call var:%s(...))")
				:format(method, typename(self), method), 3)
		end
	end

	local function log_old(var)
		local log = undo
		if not log.seen[var] then
			log.seen[var] = true
			local n = log.n + 1
			log.n = n
			log[n] = var
			local v = var.value
			if v == UNREAD then v = read(var) end
			log.old[n] = v
		end
	end

	local function assign(var, v)
		if undo then log_old(var) end
		var.value = v
		var.dirty = true
	end

	-- Turn a saved record into the variable's value: decode, migrate from an
	-- older version, validate. Raises naming the variable; changes nothing.
	local function restore(var, bytes, ver, who)
		local v, msg = decode(bytes)
		if v == nil and msg ~= nil then
			error(("%s: saved value of variable %s is corrupt: %s"):format(who, quote(var.name), msg), 0)
		end
		if ver == 0 then ver = 1 end
		local want = var.version
		if ver ~= want then
			if ver > want then
				error(("%s: variable %s was saved with version %d, newer than its declared version %d")
					:format(who, quote(var.name), ver, want), 0)
			end
			local migrate = var.migrate
			if not migrate then
				error(("%s: variable %s was saved with version %d but declares version %d and has no migrate function")
					:format(who, quote(var.name), ver, want), 0)
			end
			local ok, nv = pcall(migrate, v, ver)
			if not ok then
				error(("%s: migrating variable %s from version %d to %d failed: %s")
					:format(who, quote(var.name), ver, want, tostring(nv)), 0)
			end
			v = nv
		end
		local validate = var.validate
		if validate then
			local ok, good, why = pcall(validate, v)
			if not ok then why, good = good, false end
			if not good then
				error(("%s: saved value of variable %s is invalid: %s")
					:format(who, quote(var.name), tostring(why or "validate returned false")), 0)
			end
		end
		-- Bytes of another version must be rewritten by the next save.
		return v, ver == want and bytes or nil
	end

	local function scan()
		local ns = store:namespace(ns_name, "state")
		scan_rev = store:revision()
		pending, pending_ver = {}, {}
		local p, pv = pending, pending_ver
		-- Nothing in the loop can raise: the iterator runs to its end,
		-- where it ends its read transaction itself.
		local step, it = ns:pairs_encoded()
		for k, bytes, ver in step, it do
			p[k] = bytes
			if ver > 1 then pv[k] = ver end
		end
	end

	local norder = 0
	local function forget()
		vars, order, norder = {}, {}, 0
		pending, pending_ver, scan_rev = nil, nil, nil
	end

	-- ---------------------------------------------------------------------
	-- setup / teardown
	-- ---------------------------------------------------------------------

	function instate.setup(path, opts)
		if type(path) ~= "string" then
			argerror(2, "setup", 1, "string expected, got " .. typename(path))
		end
		if path == "" then argerror(2, "setup", 1, "path must not be empty") end
		local name = "state"
		local oopts
		if opts ~= nil then
			if type(opts) ~= "table" then
				argerror(2, "setup", 2, "table expected, got " .. typename(opts))
			end
			oopts = {}
			for k, v in pairs(opts) do
				if k == "namespace" then
					if type(v) ~= "string" or v == "" then
						argerror(2, "setup", 2, "namespace must be a non-empty string, got " .. typename(v))
					end
					name = v
				else
					oopts[k] = v
				end
			end
		end
		if store then
			if path == store_path and name == ns_name then return store end
			if norder > 0 then
				error(("instate.setup: variables are declared in %s (namespace %s); call instate.teardown() before setup(%q)")
					:format(store_path, quote(ns_name), path), 2)
			end
			store:close()
			store, store_path, ns_name = nil, nil, nil
			forget()
		end
		local s, msg, code = open(path, oopts)
		if not s then return nil, msg, code end
		store, store_path, ns_name = s, path, name
		local ok, err = pcall(scan)
		if not ok then
			store:close()
			store, store_path, ns_name = nil, nil, nil
			forget()
			error(err, 0)
		end
		return store
	end

	function instate.teardown()
		if store then store:close() end
		store, store_path, ns_name = nil, nil, nil
		forget()
		undo, undo_stack = nil, {}
	end

	-- ---------------------------------------------------------------------
	-- defstate
	-- ---------------------------------------------------------------------

	local OPTS = { version = true, migrate = true, validate = true }
	local vopts_cache = {}   -- version -> {version = v}, shared by variables

	function instate.defstate(name, default, opts)
		if type(name) ~= "string" then
			argerror(2, "defstate", 1, "string expected, got " .. typename(name))
		end
		local var = vars[name]
		if var then return var end
		local n = #name
		if n == 0 then argerror(2, "defstate", 1, "name must not be empty") end
		if n > KEY_MAX then
			argerror(2, "defstate", 1, ("name is %d bytes, longer than %d"):format(n, KEY_MAX))
		end
		local version, migrate, validate = 1, nil, nil
		if opts ~= nil then
			if type(opts) ~= "table" then
				argerror(2, "defstate", 3, "table expected, got " .. typename(opts))
			end
			for k in pairs(opts) do
				if not OPTS[k] then
					argerror(2, "defstate", 3, ("unknown option '%s'"):format(tostring(k)))
				end
			end
			version, migrate, validate = opts.version or 1, opts.migrate, opts.validate
			if math_type(version) ~= "integer" or version < 1 then
				argerror(2, "defstate", 3, ("version must be an integer >= 1, got %s")
					:format(type(version) == "number" and tostring(version) or typename(version)))
			end
			if migrate ~= nil and type(migrate) ~= "function" then
				argerror(2, "defstate", 3, "migrate must be a function, got " .. typename(migrate))
			end
			if validate ~= nil and type(validate) ~= "function" then
				argerror(2, "defstate", 3, "validate must be a function, got " .. typename(validate))
			end
		end
		if not store then
			error(("instate.defstate: no store for variable %s; call instate.setup(path) first")
				:format(quote(name)), 2)
		end
		if not vopts_cache[version] then vopts_cache[version] = { version = version } end
		var = setmetatable({
			name = name, value = default, default = default, version = version,
			bytes = false, dirty = true,
		}, Var)
		if migrate then var.migrate = migrate end
		if validate then var.validate = validate end

		local bytes, ver
		if pending then
			if store:revision() == scan_rev then
				bytes = pending[name]
				if bytes then ver = pending_ver[name] or 1 end
			else
				pending, pending_ver = nil, nil
			end
		end
		if not pending then
			bytes, ver = store:namespace(ns_name, "state"):get_encoded(name)
		end
		if bytes then
			if (ver == version or ver == 0 and version == 1) and not validate then
				-- Nothing to check: decode at first use. The store only
				-- accepts valid MessagePack, so this defers no error that a
				-- sound store can produce.
				var.value, var.bytes, var.dirty = UNREAD, bytes, false
			else
				local v, kept = restore(var, bytes, ver, "instate.defstate")
				var.value, var.bytes, var.dirty = v, kept or false, kept == nil
			end
			if pending then pending[name], pending_ver[name] = nil, nil end
		elseif type(default) == "table" then
			-- The default is the value; keep it as declared for reset().
			var.default = deepcopy(default)
		end
		vars[name] = var
		norder = norder + 1
		order[norder] = var
		return var
	end

	-- ---------------------------------------------------------------------
	-- variables
	-- ---------------------------------------------------------------------

	function Var:get()
		check_var(self, "get")
		local v = self.value
		if v == UNREAD then v = read(self) end
		return v
	end

	function Var:set(v)
		check_var(self, "set")
		if undo then log_old(self) end
		self.value = v
		self.dirty = true
	end

	function Var:update(fn)
		check_var(self, "update")
		if type(fn) ~= "function" then
			argerror(2, "update", 1, "function expected, got " .. typename(fn))
		end
		local v = self.value
		if v == UNREAD then v = read(self) end
		v = fn(v)
		assign(self, v)
		return v
	end

	function Var:reset()
		check_var(self, "reset")
		assign(self, deepcopy(self.default))
	end

	function Var:saved()
		check_var(self, "saved")
		if not store or vars[self.name] ~= self then
			error(("instate: variable %s was forgotten by instate.teardown()"):format(quote(self.name)), 2)
		end
		return store:namespace(ns_name, "state"):get_encoded(self.name) ~= nil
	end

	function instate.vars()
		local i, list = 0, order
		return function()
			i = i + 1
			local var = list[i]
			if var then return var.name, var end
		end
	end

	-- ---------------------------------------------------------------------
	-- save_all / reload_all
	-- ---------------------------------------------------------------------

	local function need_store(fname)
		if not store then
			error(("instate.%s: no store; call instate.setup(path) first"):format(fname), 3)
		end
	end

	function instate.save_all()
		need_store("save_all")
		-- Everything that can raise happens before the write transaction,
		-- which the store may run more than once (map growth).
		local encode = instate.encode
		local wvars, wbytes, wn = {}, {}, 0
		for i = 1, norder do
			local var = order[i]
			local v = var.value
			-- Never handed out, so not changed in place either.
			if v == UNREAD then goto next end
			local validate = var.validate
			if validate then
				local ok, good, why = pcall(validate, v)
				if not ok then why, good = good, false end
				if not good then
					error(("instate.save_all: variable %s is invalid: %s (nothing was saved)")
						:format(quote(var.name), tostring(why or "validate returned false")), 2)
				end
			end
			local old = var.bytes
			if var.dirty or not old or type(v) == "table" then
				local bytes = encode(v, var.name)
				if bytes ~= old then
					wn = wn + 1
					wvars[wn], wbytes[wn] = var, bytes
				elseif type(v) ~= "table" then
					var.dirty = false
				end
			end
			::next::
		end
		local rev0 = store:revision()
		if wn == 0 then return rev0 end
		local name = ns_name
		local ok, msg, code = store:transaction(function(tx)
			local ns = tx:namespace(name, "state")
			for i = 1, wn do
				local var = wvars[i]
				ns:set_encoded(var.name, wbytes[i], vopts_cache[var.version])
			end
			return true
		end)
		if not ok then return nil, msg, code end
		for i = 1, wn do
			local var = wvars[i]
			var.bytes, var.dirty = wbytes[i], false
		end
		local rev = store:revision()
		-- Only declared variables were written, none of them pending: the
		-- scan is still good if nobody else committed meanwhile.
		if pending and scan_rev == rev0 and rev == rev0 + 1 then scan_rev = rev end
		return rev
	end

	function instate.reload_all()
		need_store("reload_all")
		local list, n = order, norder
		local got, gotver = {}, {}
		local name = ns_name
		local ok, msg, code = store:snapshot(function(tx)
			local ns = tx:namespace(name, "state")
			for i = 1, n do
				got[i], gotver[i] = ns:get_encoded(list[i].name)
			end
			return true
		end)
		if not ok then return nil, msg, code end
		local missing = {}
		for i = 1, n do
			if not got[i] then missing[#missing + 1] = list[i].name end
		end
		if #missing > 0 then
			error(("instate.reload_all: never saved: %s (nothing was changed)")
				:format(concat(missing, ", ")), 2)
		end
		local values, kept = {}, {}
		for i = 1, n do
			values[i], kept[i] = restore(list[i], got[i], gotver[i], "instate.reload_all")
		end
		for i = 1, n do
			local var = list[i]
			if undo then log_old(var) end
			var.value, var.bytes, var.dirty = values[i], kept[i] or false, kept[i] == nil
		end
		return true
	end

	-- ---------------------------------------------------------------------
	-- transaction: an undo log of variables set inside fn
	-- ---------------------------------------------------------------------

	local function finish(log, ok, ...)
		local parent = undo_stack[#undo_stack]
		undo_stack[#undo_stack] = nil
		undo = parent
		if ok then
			if parent then
				-- The enclosing transaction must be able to undo these too.
				for i = 1, log.n do
					local var = log[i]
					if not parent.seen[var] then
						parent.seen[var] = true
						local n = parent.n + 1
						parent.n = n
						parent[n], parent.old[n] = var, log.old[i]
					end
				end
			end
			return ...
		end
		for i = log.n, 1, -1 do
			local var = log[i]
			var.value, var.dirty = log.old[i], true
		end
		error((...), 0)
	end

	function instate.transaction(fn, ...)
		if type(fn) ~= "function" then
			argerror(2, "transaction", 1, "function expected, got " .. typename(fn))
		end
		local log = { n = 0, seen = {}, old = {} }
		undo_stack[#undo_stack + 1] = undo or false
		undo = log
		return finish(log, pcall(fn, ...))
	end

	return instate
end
