--- map: map variables, whose top-level entries are records of their own.
--
-- require("instate.map")(instate, host) installs defmap and maps into the
-- module table and returns the hooks defstate calls (save_all, reload_all,
-- transaction, setup/teardown). host gives what defstate owns:
-- host.store() -> the default store and its state namespace's name (nil
-- when there is none), host.no_store_why() -> why there is none.
--
-- A map named N of the state namespace S keeps its entries in the
-- namespace "__map." .. S .. "." .. N (type "state"), one record per entry:
-- key = the entry's key encoded as below, value = the entry's MessagePack
-- encoding, record version = the map's declared version. Names starting
-- "__" are instate's own: store:namespace() refuses them, and the map
-- reaches its namespace through store:_map_namespace(S .. "." .. N).
--
-- Key encoding (docs/FORMAT.md, Map variables): one type byte, then
--   s  a string: its bytes (0..510 of them)
--   i  an integer, or a float with an integral value in [-2^63, 2^63)
--      (a table key of that value is the same key in Lua): decimal, "-"
--      for negatives, no leading zeros ("i0", "i-12")
--   d  any other float but NaN: %.17g ("d0.5", "d1e+300"), "dinf", "d-inf"
--   t  true;  f  false
--
-- Decisions worth knowing (README documents them for users):
--  * Lazy: defmap and setup read nothing of the map. get(k) reads the one
--    record of k the first time it is asked for (a missing key too, once);
--    pairs() and count() read the whole map once, in one snapshot, and
--    from then on the map is all in memory.
--  * The cache holds every entry read or set: key -> value, or NONE (known
--    absent: never saved, or deleted since the save). dirty maps the keys
--    set since the last save to the stamp of their last write (mseq), and
--    cleared is false or the stamp of clear(): a save forgets only the
--    marks not newer than the start of its prepare, so a write that lands
--    while the save runs (a finalizer in the middle of it) stays for the
--    next save. handed lists the keys whose table value was handed out (it
--    may have been changed in place, as a defstate table may).
--  * save_all writes the dirty entries, and the handed-out tables whose
--    fingerprint moved since they were saved or first handed out (prints:
--    record key -> fingerprint; one with no print is compared with its
--    record before the write transaction begins), all inside save_all's
--    one transaction, through
--    one function, sink(ns, key, bytes_or_nil, version); key nil clears
--    the namespace (after clear()).
--  * An edit inside instate.transaction is logged per key (the key's
--    cache value, dirty and handed marks and the count before it), and
--    clear()/reload_all log the whole state, whose tables they replace.

local compat = require "instate.compat"
local type, pairs, next, error, pcall, tostring, setmetatable, getmetatable =
      type, pairs, next, compat.error, pcall, tostring, setmetatable, getmetatable
local floor, huge = math.floor, math.huge
local math_type = compat.math_type
local byte, sub, format = string.byte, string.sub, string.format

local KEY_MAX = 511
local NSNAME_MAX = 255
local PREFIX = "__map."

-- Known absent (not saved, or deleted since): a value of the cache.
local NONE = setmetatable({}, { __name = "instate.map.none" })

local TWO63 = 2 ^ 63
-- Equal entries give equal bytes: a handed-out table compares with its
-- record, as save_many's encodings do.
local CANONICAL = { canonical = true }

local typename, argerror, quote = compat.typename, compat.argerror, compat.quote

-- How a key reads in messages.
local function showkey(k)
	if type(k) == "string" then return format("%q", k) end
	return tostring(k)
end

-- The record key of k, or nil and why k cannot be a key.
local function encode_key(k)
	local t = type(k)
	if t == "string" then
		if #k > KEY_MAX - 1 then
			return nil, ("a string key is at most %d bytes, got %d"):format(KEY_MAX - 1, #k)
		end
		return "s" .. k
	elseif t == "number" then
		if k ~= k then return nil, "a key cannot be NaN" end
		if k == floor(k) and k >= -TWO63 and k < TWO63 then
			if k == 0 then return "i0" end
			return format("i%d", k)
		end
		if k == huge then return "dinf" end
		if k == -huge then return "d-inf" end
		return format("d%.17g", k)
	elseif t == "boolean" then
		return k and "t" or "f"
	end
	return nil, ("a key must be a string, number or boolean, got %s"):format(typename(k))
end

-- The Lua key of a record key, or nil.
local function decode_key(rk)
	local c = byte(rk)
	local rest = sub(rk, 2)
	if c == 115 then return rest end                 -- s
	if c == 105 then                                 -- i
		if rest:find("^%-?[1-9]%d*$") or rest == "0" then return tonumber(rest) end
		return nil
	end
	if c == 100 then                                 -- d
		if rest == "inf" then return huge end
		if rest == "-inf" then return -huge end
		local v = tonumber(rest)
		if v and v == v and not (v == floor(v) and v >= -TWO63 and v < TWO63) then return v end
		return nil
	end
	if rk == "t" then return true end
	if rk == "f" then return false end
	return nil
end

return function(instate, host)
	local decode, encode = instate.decode, instate.encode
	local fingerprint = instate._fingerprint

	local Map = {}
	Map.__index = Map
	Map.__name = "instate.Map"
	function Map:__tostring() return ("instate.map(%s)"):format(self.name) end

	local maps, order, norder = {}, {}, 0      -- name -> map; declaration order
	-- instate.transaction: the open undo log of map edits (nil outside),
	-- the enclosing transactions' logs below it.
	local undo, undo_stack = nil, {}
	-- Write stamps of dirty keys and clears (see the header).
	local mseq = 0
	local function mstamp()
		mseq = mseq + 1
		return mseq
	end

	local function bad_self(self, method)
		error(("bad self to '%s' (a map expected, got %s; call map:%s(...))")
			:format(method, typename(self), method), 3)
	end

	local function check(self, method)
		if getmetatable(self) ~= Map then bad_self(self, method) end
		if self.dead then
			error(("instate: map %s was forgotten by instate.teardown()"):format(quote(self.name)), 3)
		end
	end

	-- The store-level handle of the map's namespace, opened at first use.
	local function handle(self, level)
		local ns = self.ns
		if ns then return ns end
		local store = host.store()
		local msg, code
		ns, msg, code = store:_map_namespace(self.suffix)
		if not ns then
			error(("instate: cannot open map %s: %s (code %s)"):format(quote(self.name), msg, code), level + 1)
		end
		self.ns = ns
		return ns
	end

	local function key_of(self, method, k)
		local rk, why = encode_key(k)
		if not rk then argerror(3, method, 1, why) end
		return rk
	end

	-- A saved entry, decoded, into the value it has now: migrate, validate.
	-- Raises naming the map and the key.
	local function restore(self, k, bytes, ver, level)
		local v, msg = decode(bytes)
		if v == nil then
			error(("instate: entry %s of map %s is corrupt: %s (code CORRUPT)")
				:format(showkey(k), quote(self.name), tostring(msg or "it holds nil")), level)
		end
		if ver == 0 then ver = 1 end
		local want = self.version
		local migrated = false
		if ver ~= want then
			if ver > want then
				error(("instate: entry %s of map %s was saved with version %d, newer than its declared version %d")
					:format(showkey(k), quote(self.name), ver, want), level)
			end
			local migrate = self.migrate
			if not migrate then
				error(("instate: entry %s of map %s was saved with version %d but the map declares version %d and has no migrate function")
					:format(showkey(k), quote(self.name), ver, want), level)
			end
			local ok, nv = pcall(migrate, v, ver, k)
			if not ok then
				if type(nv) == "table" then error(nv, 0) end
				error(("instate: migrating entry %s of map %s from version %d to %d failed: %s")
					:format(showkey(k), quote(self.name), ver, want, tostring(nv)), level)
			end
			v, migrated = nv, true
		end
		local validate = self.validate
		if validate and v ~= nil then
			local ok, good, why = pcall(validate, v, k)
			if not ok then
				if type(good) == "table" then error(good, 0) end
				why, good = good, false
			end
			if not good then
				error(("instate: saved entry %s of map %s is invalid: %s")
					:format(showkey(k), quote(self.name), tostring(why or "validate returned false")), level)
			end
		end
		return v, migrated
	end

	-- Log key rk's state before an edit, once per transaction.
	local function log_key(self, rk)
		local seen = undo.seen[self]
		if not seen then
			seen = {}
			undo.seen[self] = seen
		end
		if seen[rk] then return end
		seen[rk] = true
		local n = undo.n + 1
		undo.n = n
		undo[n] = { self, rk, self.cache[rk], self.dirty[rk], self.handed[rk], self.n, self.all }
	end

	-- Log the whole state, whose tables the caller replaces.
	local function log_state(self)
		local n = undo.n + 1
		undo.n = n
		undo[n] = { self, false, self.cache, self.dirty, self.handed, self.n,
		            self.keys, self.all, self.cleared, self.prints }
		undo.seen[self] = nil
	end

	local function reset_state(self)
		self.cache, self.dirty, self.handed, self.keys, self.prints = {}, {}, {}, {}, {}
		self.n, self.all, self.cleared = 0, false, false
	end

	-- The value of record key rk (k the Lua key), reading its record the
	-- first time: a value, or NONE.
	local function lookup(self, rk, k, level)
		local v = self.cache[rk]
		if v ~= nil then return v end
		if self.all or self.cleared then return NONE end
		local bytes, ver, code = handle(self, level + 1):get_encoded(rk)
		if bytes == nil then
			if ver ~= nil then
				error(("instate: cannot read entry %s of map %s: %s (code %s)")
					:format(showkey(k), quote(self.name), ver, code), level)
			end
			v = NONE
		else
			local migrated
			v, migrated = restore(self, k, bytes, ver, level + 1)
			if migrated then self.dirty[rk] = mstamp() end
		end
		self.cache[rk], self.keys[rk] = v, k
		return v
	end

	-- Read every record, in one snapshot, into the cache (entries read or
	-- set already keep their value); count them.
	local function load_all(self, level)
		if self.all then return end
		local cache, keys = self.cache, self.keys
		if not self.cleared then
			local ns = handle(self, level + 1)
			local bytes, versions, values = ns:get_all_encoded(nil,
				{ decode = true, version_default = self.version })
			if not bytes then
				error(("instate: cannot read map %s: %s (code %s)")
					:format(quote(self.name), tostring(versions), tostring(values)), level)
			end
			local plain = not self.validate
			for rk, b in next, bytes do
				if cache[rk] == nil then
					local k = decode_key(rk)
					if k == nil then
						error(("instate: map %s holds a record whose key %q is not an encoded key (code CORRUPT)")
							:format(quote(self.name), rk), level)
					end
					local v = values[rk]
					local ver = versions[rk]
					if v == nil or ver ~= nil or not plain then
						local migrated
						v, migrated = restore(self, k, b, ver or self.version, level + 1)
						if migrated then self.dirty[rk] = mstamp() end
					end
					cache[rk], keys[rk] = v, k
				end
			end
		end
		local n = 0
		for _, v in next, cache do
			if v ~= NONE then n = n + 1 end
		end
		self.n, self.all = n, true
	end

	-- A table entry handed out for the first time is as its record holds
	-- it (or dirty, then its print is taken when it is saved): its
	-- fingerprint now is the saved one's, which save_all compares with.
	local function hand(self, rk, v)
		if type(v) == "table" then
			local handed = self.handed
			if not handed[rk] then
				handed[rk] = true
				if not self.dirty[rk] then self.prints[rk] = fingerprint(v) end
			end
		end
		return v
	end

	-- The one write of an entry in memory.
	local function put(self, rk, k, v, level)
		-- Read first: the undo log then holds the value the key had.
		local old = lookup(self, rk, k, level + 1)
		if undo then log_key(self, rk) end
		if self.all then
			if old == NONE and v ~= nil then
				self.n = self.n + 1
			elseif old ~= NONE and v == nil then
				self.n = self.n - 1
			end
		end
		if v == nil then
			self.cache[rk] = NONE
			self.handed[rk] = nil
		else
			self.cache[rk] = v
			if type(v) == "table" then self.handed[rk] = true else self.handed[rk] = nil end
		end
		-- (a print is taken when the new value is saved)
		self.prints[rk] = nil
		self.keys[rk] = k
		self.dirty[rk] = mstamp()
	end

	-- ---------------------------------------------------------------------
	-- defmap
	-- ---------------------------------------------------------------------

	local OPTS = { version = true, migrate = true, validate = true }

	function instate.defmap(name, opts)
		local m = maps[name]
		if m then return m end
		if type(name) ~= "string" then
			argerror(2, "defmap", 1, "string expected, got " .. typename(name))
		end
		if name == "" then argerror(2, "defmap", 1, "name must not be empty") end
		local version, migrate, validate = 1, nil, nil
		if opts ~= nil then
			if type(opts) ~= "table" then
				argerror(2, "defmap", 2, "table expected, got " .. typename(opts))
			end
			for k in pairs(opts) do
				if not OPTS[k] then
					argerror(2, "defmap", 2, ("unknown option '%s'"):format(tostring(k)))
				end
			end
			version, migrate, validate = opts.version or 1, opts.migrate, opts.validate
			if math_type(version) ~= "integer" or version < 1 then
				argerror(2, "defmap", 2, ("version must be an integer >= 1, got %s")
					:format(type(version) == "number" and tostring(version) or typename(version)))
			end
			if migrate ~= nil and type(migrate) ~= "function" then
				argerror(2, "defmap", 2, "migrate must be a function, got " .. typename(migrate))
			end
			if validate ~= nil and type(validate) ~= "function" then
				argerror(2, "defmap", 2, "validate must be a function, got " .. typename(validate))
			end
		end
		local store, ns_name = host.store()
		if not store then
			error(("instate.defmap: no store for map %s; %s"):format(quote(name), host.no_store_why()), 2)
		end
		local suffix = ns_name .. "." .. name
		if #PREFIX + #suffix > NSNAME_MAX then
			argerror(2, "defmap", 1, ("name is %d bytes: with %q and the state namespace %q it must fit in %d")
				:format(#name, PREFIX, ns_name, NSNAME_MAX))
		end
		m = setmetatable({ name = name, suffix = suffix, nsname = PREFIX .. suffix,
			version = version, migrate = migrate, validate = validate }, Map)
		reset_state(m)
		maps[name] = m
		norder = norder + 1
		order[norder] = m
		return m
	end

	function instate.maps()
		local i, list = 0, order
		return function()
			i = i + 1
			local m = list[i]
			if m then return m.name, m end
		end
	end

	-- ---------------------------------------------------------------------
	-- map methods
	-- ---------------------------------------------------------------------

	function Map:get(k, default)
		check(self, "get")
		local rk = key_of(self, "get", k)
		local v = lookup(self, rk, k, 3)
		if v == NONE then return default end
		return hand(self, rk, v)
	end

	function Map:has(k)
		check(self, "has")
		return lookup(self, key_of(self, "has", k), k, 3) ~= NONE
	end

	function Map:set(k, v)
		check(self, "set")
		put(self, key_of(self, "set", k), k, v, 3)
	end

	function Map:update(k, fn)
		check(self, "update")
		local rk = key_of(self, "update", k)
		if type(fn) ~= "function" then
			argerror(2, "update", 2, "function expected, got " .. typename(fn))
		end
		local v = lookup(self, rk, k, 3)
		if v == NONE then v = nil end
		v = fn(v)
		put(self, rk, k, v, 3)
		return v
	end

	function Map:count()
		check(self, "count")
		load_all(self, 3)
		return self.n
	end

	-- Every entry, in no particular order (next over the cache). Setting
	-- an entry met, or deleting it, during the walk is allowed, as in a
	-- Lua table; adding new keys is not.
	function Map:pairs()
		check(self, "pairs")
		load_all(self, 3)
		local cache, keys = self.cache, self.keys
		local rk
		return function()
			local v
			repeat
				rk, v = next(cache, rk)
			until v ~= NONE
			if rk == nil then return nil end
			return keys[rk], hand(self, rk, v)
		end
	end

	function Map:clear()
		check(self, "clear")
		if undo then log_state(self) end
		reset_state(self)
		self.all, self.cleared = true, mstamp()
	end

	function Map:saved(k)
		check(self, "saved")
		local rk = key_of(self, "saved", k)
		if self.cleared then return false end
		return handle(self, 3):get_encoded(rk) ~= nil
	end

	-- ---------------------------------------------------------------------
	-- hooks for defstate
	-- ---------------------------------------------------------------------

	local hooks = {}

	function hooks.declared() return norder > 0 end

	-- A failing validate or an unstorable value: raised at save_all's
	-- caller (save_error, entry_bytes, prepare, defstate's save_body, its
	-- pcall, save_all, the caller), nothing written.
	local function save_error(self, k, why)
		if type(why) == "table" then error(why, 0) end
		error(("instate.save_all: entry %s of map %s %s (nothing was saved)")
			:format(showkey(k), quote(self.name), why), 7)
	end

	-- The record bytes of entry rk (value v), validated.
	local function entry_bytes(self, rk, v)
		local k = self.keys[rk]
		local validate = self.validate
		if validate then
			local ok, good, why = pcall(validate, v, k)
			if not ok then
				if type(good) == "table" then error(good, 0) end
				why, good = good, false
			end
			if not good then
				save_error(self, k, "is invalid: " .. tostring(why or "validate returned false"))
			end
		end
		local ok, b = pcall(encode, v, ("%s[%s]"):format(self.name, showkey(k)), CANONICAL)
		if not ok then save_error(self, k, "cannot be saved: " .. tostring(b)) end
		return b
	end

	-- What save_all must write for the maps: nil when nothing, else a
	-- plan, { n = writes, [i] = { ns, rk, bytes_or_nil, version },
	-- maps = the maps written, np = prints, prints = { map, rk, print, ... } }
	-- (rk nil: clear ns). Validates and encodes everything first, so a
	-- failure raises before anything is begun. A handed-out table is
	-- looked at through its fingerprint: unchanged since it was saved (or
	-- read), nothing is encoded or read; moved, it is encoded and written.
	-- One with no print is encoded and compared with its record (read
	-- outside the write transaction: this process owns the store's
	-- variables). The prints of what is written are kept once it is saved
	-- (hooks.saved).
	function hooks.prepare(no_compare)
		local plan
		local seq0 = mseq     -- the marks up to here are this save's
		-- Inside a store transaction of the caller's, the records read
		-- here are the committed ones, not what that transaction wrote,
		-- and the prints are of the last save, not of what an earlier save
		-- in that transaction wrote: compare with nothing, write every
		-- candidate. An async save (no_compare) trusts the prints, but
		-- leaves the comparison with the records to the writer's thread.
		local writing
		for i = 1, norder do
			local self = order[i]
			local dirty, handed, cache = self.dirty, self.handed, self.cache
			local cleared = self.cleared
			if cleared or next(dirty) or next(handed) then
				local version, nsname, prints = self.version, self.nsname, self.prints
				if writing == nil then writing = host.store():_writing() end
				local nested = writing or no_compare
				local ns = not cleared and handle(self, 3) or nil
				local n0 = plan and plan.n or 0
				plan = plan or { n = 0, maps = {}, np = 0, prints = {}, seq = seq0 }
				local n, np, pl = n0, plan.np, plan.prints
				if cleared then
					n = n + 1
					plan[n] = { nsname, nil }
				end
				for rk in next, dirty do
					local v = cache[rk]
					if v ~= NONE then
						n = n + 1
						plan[n] = { nsname, rk, entry_bytes(self, rk, v), version }
						if handed[rk] then
							pl[np + 1], pl[np + 2], pl[np + 3] = self, rk, fingerprint(v)
							np = np + 3
						end
					elseif ns and (nested or ns:get_encoded(rk) ~= nil) then
						-- (a delete of what was never saved writes nothing)
						n = n + 1
						plan[n] = { nsname, rk, nil, version }
					end
				end
				for rk in next, handed do
					if not dirty[rk] then
						-- Handed out, maybe changed in place.
						local v = cache[rk]
						local old = prints[rk]
						local fp = nil
						if writing then
							-- Once the caller commits, the record holds what
							-- this writes, which the print does not say.
							n = n + 1
							plan[n] = { nsname, rk, entry_bytes(self, rk, v), version }
							prints[rk] = nil
						else
							fp = fingerprint(v, old)
						end
						if not writing and (fp == nil or fp ~= old) then
							local bytes = entry_bytes(self, rk, v)
							local write = true
							if old == nil and not nested then
								-- No print: the record is the reference.
								local rec, over = ns:get_encoded(rk)
								write = rec ~= bytes or (over ~= version and not (over == 0 and version == 1))
							end
							if write then
								n = n + 1
								plan[n] = { nsname, rk, bytes, version }
							end
							pl[np + 1], pl[np + 2], pl[np + 3] = self, rk, fp
							np = np + 3
						end
					end
				end
				plan.n, plan.np = n, np
				if n > n0 or next(dirty) or np > 0 then plan.maps[#plan.maps + 1] = self end
			end
		end
		if plan and plan.n == 0 then
			-- Nothing differs from the store: what is dirty is saved.
			hooks.saved(plan)
			return nil
		end
		return plan
	end

	-- Run plan's writes through sink(ns, key, bytes_or_nil, version).
	function hooks.write(plan, sink)
		for i = 1, plan.n do
			local w = plan[i]
			sink(w[1], w[2], w[3], w[4])
		end
		return plan.n
	end

	-- The sink of a synchronous save: the writes of an open store
	-- transaction tx. Raises { code = ..., msg = ... } on a runtime failure
	-- (the caller's pcall turns it into nil, msg, code).
	function hooks.tx_sink(tx)
		local handles = {}
		return function(nsname, rk, bytes, version)
			local ns = handles[nsname]
			if not ns then
				local msg, code
				ns, msg, code = tx:_map_namespace(sub(nsname, #PREFIX + 1))
				if not ns then error({ instate_fail = true, msg, code }) end
				handles[nsname] = ns
			end
			local ok, msg, code
			if rk == nil then
				ok, msg, code = ns:clear()
			elseif bytes == nil then
				ok, msg, code = ns:delete(rk)
				if ok == false then ok = true end
			else
				ok, msg, code = ns:set_encoded(rk, bytes, { version = version })
			end
			if ok == nil then error({ instate_fail = true, msg, code }) end
		end
	end

	-- save_all's commit when maps have writes: save_vars() (nil when no
	-- variable is to be written; else returns save_many's results) and the
	-- plan's writes in one store transaction, all or nothing. Returns the
	-- revision, the records written and whether this was nested in a
	-- store transaction of the caller's (then nothing is known saved yet),
	-- or nil, msg, code.
	function hooks.commit(store, plan, save_vars)
		local outer = store:_writing()
		local written, rev = 0, nil
		local ok, done, msg, code = pcall(store.transaction, store, function(tx)
			if save_vars then
				local r, w, c = save_vars()
				if not r then error({ instate_fail = true, w, c }) end
				written = w
			end
			written = written + hooks.write(plan, hooks.tx_sink(tx))
			rev = tx:revision()
			return true
		end)
		if not ok then
			if type(done) == "table" and done.instate_fail then return nil, done[1], done[2] end
			error(done, 0)
		end
		if not done then return nil, msg, code end
		if outer then return rev, written, true end
		hooks.saved(plan)
		return store:revision(), written, false
	end

	-- Whether the plan clears a map (which an async batch cannot hold).
	function hooks.clears(plan)
		for i = 1, plan.n do
			if plan[i][2] == nil then return true end
		end
		return false
	end

	-- The sink of an async save: the writes go into batch (a batch of the
	-- store's writer), compared with the records when it commits.
	function hooks.batch_sink(store, batch)
		local handles = {}
		return function(nsname, rk, bytes, version)
			local ns = handles[nsname]
			if not ns then
				local msg, code
				ns, msg, code = store:_map_namespace(sub(nsname, #PREFIX + 1))
				if not ns then error(("instate.save_all: %s (%s)"):format(tostring(msg), tostring(code)), 0) end
				handles[nsname] = ns
			end
			if bytes == nil then
				batch:delete(ns, rk)
			else
				batch:put_encoded(ns, rk, bytes, version)
			end
		end
	end

	-- An async save of the plan failed: its writes are unsaved again, so
	-- the next save writes them (with the values the map holds then).
	function hooks.unsaved(plan)
		for i = 1, #plan.maps do
			local self = plan.maps[i]
			for j = 1, plan.n do
				local w = plan[j]
				if w[1] == self.nsname and w[2] ~= nil then self.dirty[w[2]] = mstamp() end
			end
		end
	end

	-- The plan is committed for good: what it wrote is what is saved,
	-- and the prints taken of it are the saved ones.
	function hooks.saved(plan)
		local seq = plan.seq
		for i = 1, #plan.maps do
			local self = plan.maps[i]
			local dirty = self.dirty
			for rk, s in next, dirty do
				if s <= seq then dirty[rk] = nil end
			end
			local cleared = self.cleared
			if cleared and cleared <= seq then
				self.cleared = false
			end
			-- entries deleted are known absent; drop them from memory
			-- unless the whole map is loaded (they stay NONE there too)
		end
		local pl = plan.prints
		for i = 1, plan.np, 3 do
			pl[i].prints[pl[i + 1]] = pl[i + 2]
		end
	end

	-- reload_all: every map back to what its records hold (read lazily).
	function hooks.reload()
		for i = 1, norder do
			local self = order[i]
			if undo then log_state(self) end
			reset_state(self)
		end
	end

	function hooks.tx_begin()
		undo_stack[#undo_stack + 1] = undo or false
		undo = { n = 0, seen = {} }
	end

	function hooks.tx_end(ok)
		-- (a transaction begun before this module loaded has no log here)
		if #undo_stack == 0 then return end
		local log = undo
		local parent = undo_stack[#undo_stack]
		undo_stack[#undo_stack] = nil
		undo = parent or nil
		if ok then
			if undo then
				-- The enclosing transaction must be able to undo these too.
				for i = 1, log.n do
					local n = undo.n + 1
					undo.n = n
					undo[n] = log[i]
				end
				undo.seen = {}
			end
			return
		end
		for i = log.n, 1, -1 do
			local e = log[i]
			local self = e[1]
			if e[2] == false then
				self.cache, self.dirty, self.handed, self.n = e[3], e[4], e[5], e[6]
				self.keys, self.all, self.cleared, self.prints = e[7], e[8], e[9], e[10]
			else
				-- Dirty whatever it was: a save_all inside the transaction
				-- may have written the value undone, so the next one
				-- writes this one back (as defstate does for variables).
				local rk = e[2]
				self.cache[rk], self.dirty[rk], self.handed[rk], self.n = e[3], mstamp(), e[5], e[6]
				self.all = e[7]
			end
		end
	end

	function hooks.teardown()
		for i = 1, norder do order[i].dead = true end
		maps, order, norder = {}, {}, 0
		undo, undo_stack = nil, {}
	end

	return hooks
end
