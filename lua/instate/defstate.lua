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
--  * setup() reads and decodes every saved variable in one snapshot and one
--    C call, which builds the variables too; defstate of a saved name then
--    only adopts one. If any process committed to the store since that read
--    (store:last_commit() moved), defstate reads the record itself, so it
--    never restores a stale value. A record that does not decode raises at
--    its defstate.
--  * save_all hands the store, in one call inside one write transaction, the
--    variables that may have changed: every table handed out (it may have
--    been changed in place) and every other value set since; the store
--    encodes them and writes only those whose record differs from the one it
--    holds. Nothing per variable is kept to compare with: the store is the
--    reference. A value restored but never used cannot have changed and is
--    not even encoded.
--  * A record written without a version (version 0) counts as version 1.
--
-- A variable is a table: its state in the array part (a constructor with
-- one hashed field, name, is the cheapest table with a name field Lua
-- builds; setup builds the restored ones in C the same way), version/migrate/validate
-- in the hash part only when declared, version 1 otherwise coming from the
-- class. Its methods come from a plain __index table: a method call then
-- costs no function call besides the method itself.

local compat = require "instate.compat"
local type, pairs, error, pcall, tostring, setmetatable, getmetatable, next =
      type, pairs, compat.error, pcall, tostring, setmetatable, getmetatable, next
local concat = table.concat
local math_type = compat.math_type

local KEY_MAX = 511

-- Slots of a variable, written as literal indices below (a constant index
-- is one VM instruction on every Lua; a named upvalue costs a second one):
--   [1] VALUE     the value, or UNREAD
--   [2] DIRTY     false, or the stamp of the last write since the last
--                 save or restore (see stamp)
--   [3] DEFAULT   the default as declared (tables: a copy)
--   [4] RESTORED  the restored value while VALUE is UNREAD
--   [5] PRINT     a table's fingerprint as of the last save, restore or
--                 reload_all (nil: unknown, so save_all encodes it); see
--                 save_all
--   [6], [7]      a tracked variable's proxies (instate.track)
--   [8]           a tracked variable's index in touched, nil when it is
--                 not there (see touch)
--   [9], [10], [11] a big tracked variable's entry cache, written keys
--                 and owner map (instate.track)
--   [12]          true when a tracked variable's value shares a table
--                 with another's: no entry cache (instate.track)

local typename, argerror, quote = compat.typename, compat.argerror, compat.quote

-- The metatable, raw (__metatable does not hide it), as the codec reads it.
local raw_getmetatable = debug and debug.getmetatable or getmetatable

-- A copy keeping the shape of references (shared sub-tables, cycles) and
-- the metatables (class instances stay instances), set once a copy is
-- filled so that no __newindex runs.
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
	local mt = raw_getmetatable(v)
	if mt then setmetatable(c, mt) end
	return c
end

-- The value of a variable restored but not handed out yet (the value waits
-- in RESTORED): save_all knows it cannot have changed, so it is not even
-- encoded. The first get, update or undo log moves it to VALUE.
local UNREAD = setmetatable({}, { __name = "instate.unread" })
-- What DEFAULT holds in a variable setup built and no defstate declared
-- yet (a declared one holds its default, never this).
local PENDING = setmetatable({}, { __name = "instate.pending" })
-- The slots before RESTORED of a variable setup builds: unread, clean,
-- not declared.
local RESTORED_TEMPLATE = { UNREAD, false, PENDING }

return function(instate)
	local decode, open, newtable = instate.decode, instate.open, instate._newtable
	local fingerprint, decode_print = instate._fingerprint, instate._decode_print
	local fingerprint_pick = instate._fingerprint_pick

	local backup_ctx = {}

	local Var = { version = 1 }
	Var.__index = Var
	Var.__name = "instate.Var"
	function Var:__tostring() return ("instate.var(%s)"):format(self.name) end

	-- The default store and what this Lua state declared in it.
	local store, store_path, ns_name
	-- name -> variable, and the declaration order. While pending (below),
	-- vars also holds what setup read for the names not declared yet.
	local vars, order = {}, {}
	local norder = 0
	-- The variables save_all must look at, so a save after a restart that
	-- touched 1% of the variables walks 1% of them: an untracked one from
	-- when its value is handed out or set (VALUE is not UNREAD; it enters
	-- once: VALUE never returns to UNREAD); a tracked one from a write
	-- until a save has written it (see touch).
	local touched, ntouched = {}, 0
	-- The namespace handle (store level) of the variables.
	local state_ns
	-- store.last_commit, looked up once.
	local last_commit
	-- What setup read, used by the first defstate of each name, is in
	-- vars itself while pending is true: for a name not declared yet, a
	-- variable built from a version 1 record (its DEFAULT slot holds
	-- PENDING), or false for a record to read at declaration (another
	-- version, or corrupt); valid while store:last_commit() is still
	-- scan_commit. One table for both: declaring a restored name is one
	-- lookup and no insert. drop_pending() removes those entries once the
	-- read is stale (or may be), leaving only the declared variables.
	local pending, scan_commit = false, nil
	-- Every declared variable has version common_version, or it is false.
	local common_version
	-- Declared variables with a validate function.
	local nvalidate = 0
	-- instate.transaction: the open undo log (nil outside), logs of
	-- enclosing transactions below it.
	local undo, undo_stack = nil, {}
	-- save_all{async = true}: the writer and its bookkeeping
	-- (lua/instate/async.lua), made at setup.
	local async

	-- The hooks of map variables (set once setup's helpers exist).
	local maps

	-- The class of tracked variables (instate.track) once one is declared,
	-- and its entry caches (TE); tracked_class() below makes them.
	local TVar, TE, tracked_class

	-- Write stamps: DIRTY holds the stamp of the variable's last write,
	-- one more than the one before (wseq counts them). save_all marks a
	-- variable it wrote clean only if its stamp is not newer than the
	-- pick (seq0 in save_body): a write that lands while the save runs (a
	-- finalizer or a debug hook in the middle of it) was not in what was
	-- written, and stays dirty for the next save.
	local wseq = 0
	local function stamp(var)
		local s = wseq + 1
		wseq = s
		var[2] = s
	end

	-- save_all runs one at a time: one called while another runs (from a
	-- finalizer or a hook in the middle of it) returns nil, msg, "BUSY",
	-- since it would commit before the running one, whose older values
	-- would then overwrite its own. reload_all, setup and teardown are
	-- refused the same way meanwhile.
	local saving = false
	local function busy(fname)
		return nil, ("instate.%s: save_all is already running (a finalizer or a hook called this in the middle of a save); nothing was done")
			:format(fname), "BUSY"
	end

	-- A tracked variable enters touched when it is written, not when it
	-- is read (an unwritten one cannot have changed), and leaves it when a
	-- save has written it (untouch): save_all's loop meets only those
	-- written since the last save, and a run that declared (so wrote)
	-- 100k of them walks 100k once. Slot 8 holds its index, so it enters
	-- once and leaves in O(1).
	local function touch(var)
		local n = ntouched + 1
		if var.track then
			if var[8] then return end
			var[8] = n
		end
		ntouched = n
		touched[n] = var
	end

	-- Take a tracked variable out of touched (a save wrote it; it is clean):
	-- the last entry takes its place. The order of touched is only that of
	-- the keys handed to save_many, one transaction, so it does not matter.
	local function untouch(var)
		local i = var[8]
		if not i then return end
		local n = ntouched
		local last = touched[n]
		touched[i] = last
		if last.track then last[8] = i end
		touched[n] = nil
		ntouched = n - 1
		var[8] = nil
	end

	-- A variable of a failed async save: dirty again, and a tracked one
	-- back in touched (an untracked one never left it).
	local function retouch(var)
		stamp(var)
		if var.track then touch(var) end
	end

	-- Hand out a restored value: from now on it may change in place
	-- (a tracked one only through its proxy, which touches it then).
	local function read(var)
		local v = var[4]
		var[1], var[4] = v, nil
		if not var.track then touch(var) end
		return v
	end

	local function bad_self(self, method)
		error(("bad self to '%s' (a variable expected, got %s; call var:%s(...))")
			:format(method, typename(self), method), 3)
	end

	local function log_old(var)
		local log = undo
		if not log.seen[var] then
			log.seen[var] = true
			local n = log.n + 1
			log.n = n
			log[n] = var
			local v = var[1]
			if v == UNREAD then v = read(var) end
			log.old[n] = v
		end
	end

	local function assign(var, v)
		if undo then log_old(var) end
		if var[1] == UNREAD or var.track then touch(var) end
		var[1], var[4] = v, nil
		stamp(var)
	end

	-- The names whose saved record a defstate could not restore since
	-- setup (save_all refuses to run while any is left). A name enters when
	-- its declaration raises (decode_saved and restore, called by declare
	-- as DECLARE, mark it before raising), not while it runs: a finalizer
	-- that saves in the middle of a declaration is not refused for it.
	local failed = {}
	local DECLARE = "instate.defstate"

	-- With print, also the fingerprint of the value (or nil: unknown from
	-- the bytes), taken by the decoder in the same pass.
	local function decode_saved(name, bytes, who, print)
		local v, msg
		if print then v, msg = decode_print(bytes) else v, msg = decode(bytes) end
		if v == nil and type(msg) == "string" then
			-- a class not registered (yet) is not damage: say which
			local what = msg:find("^unknown class") and "cannot be read" or "is corrupt"
			if who == DECLARE then failed[name] = true end
			error(("%s: saved value of variable %s %s: %s"):format(who, quote(name), what, msg), 3)
		end
		return v, msg
	end

	-- Turn a saved record, already decoded to v, into the variable's value:
	-- migrate from an older version, validate. Returns the value and
	-- whether it is the record as stored (not migrated). Raises naming the
	-- variable; changes nothing. Both raise at the position of the user's
	-- call: they are called straight from reload_all and from declare, which
	-- runs in defstate's place.
	local function restore(var, v, ver, who)
		if ver == 0 then ver = 1 end
		local want = var.version
		local mark = who == DECLARE      -- a failure marks the name failed
		if ver ~= want then
			if ver > want then
				if mark then failed[var.name] = true end
				error(("%s: variable %s was saved with version %d, newer than its declared version %d")
					:format(who, quote(var.name), ver, want), 3)
			end
			local migrate = var.migrate
			if not migrate then
				if mark then failed[var.name] = true end
				error(("%s: variable %s was saved with version %d but declares version %d and has no migrate function")
					:format(who, quote(var.name), ver, want), 3)
			end
			local ok, nv = pcall(migrate, v, ver)
			if not ok then
				if mark then failed[var.name] = true end
				-- a raised table comes back as that table
				if type(nv) == "table" then error(nv, 0) end
				error(("%s: migrating variable %s from version %d to %d failed: %s")
					:format(who, quote(var.name), ver, want, tostring(nv)), 3)
			end
			v = nv
		end
		local validate = var.validate
		if validate then
			local ok, good, why = pcall(validate, v)
			if not ok then
				if mark and type(good) == "table" then failed[var.name] = true end
				if type(good) == "table" then error(good, 0) end
				why, good = good, false
			end
			if not good then
				if mark then failed[var.name] = true end
				error(("%s: saved value of variable %s is invalid: %s")
					:format(who, quote(var.name), tostring(why or "validate returned false")), 3)
			end
		end
		-- A record of another version must be rewritten by the next save.
		return v, ver == want
	end

	-- Setup's read may be stale: forget it (drop the undeclared entries,
	-- so their values can be collected; done once).
	local function drop_pending()
		if not pending then return end
		pending, scan_commit = false, nil
		for name, var in next, vars do
			if var == false or var[3] == PENDING then vars[name] = nil end
		end
	end

	-- Returns true, or nil, msg, code on a runtime failure.
	local function scan()
		local sns, msg, code = store:namespace(ns_name, "state")
		if not sns then return nil, msg, code end
		state_ns = sns
		last_commit = store.last_commit
		-- Read before the snapshot: a commit in between makes the cache
		-- look stale (safe), never a stale cache look fresh.
		local lc = last_commit(store)
		-- Nothing is declared yet: room in order for as many declared as
		-- there are records, and in touched for as many handed out. Made
		-- before the read: made after it, these large allocations are the
		-- first the collector meets once it runs again, and it would
		-- start its work on the whole restored heap there.
		local n = state_ns:_count_hint()
		local objects, count
		order, touched, ntouched = newtable(n, 0), newtable(n, 0), 0
		-- Each restored table with the fingerprint of its record (PRINT),
		-- taken from the bytes: the first save after it is read walks it
		-- rather than encoding it.
		objects, count, code = state_ns:get_all_objects(Var, RESTORED_TEMPLATE, 4, 1, 5)
		if not objects then
			return nil, ("instate.setup: cannot read the saved variables: %s"):format(count), code
		end
		-- objects is vars, with room for every saved name.
		vars, pending, scan_commit = objects, true, lc
		return true
	end

	-- One owner, backups (instate.backup does them): readonly is the
	-- setup's option, keep its `backups`.
	local readonly, keep = false, 0

	local function forget()
		failed = {}
		if maps then maps.teardown() end
		vars, order, norder = {}, {}, 0
		touched, ntouched = {}, 0
		pending, scan_commit = false, nil
		common_version, nvalidate = nil, 0
	end

	-- ---------------------------------------------------------------------
	-- setup / teardown
	-- ---------------------------------------------------------------------

	-- Why the last setup failed (nil after a successful one or teardown):
	-- what comes next says that, not "call setup", which was called.
	local setup_failed
	local function no_store_why()
		return setup_failed or "call instate.setup(path) first"
	end

	-- Map variables (lua/instate/map.lua), loaded by the first defmap: it
	-- installs the real defmap and maps, and returns the hooks used here.
	function instate.defmap(name, opts)
		if not maps then
			maps = require("instate.map")(instate, {
				store = function() return store, ns_name end,
				no_store_why = no_store_why,
			})
		end
		return instate.defmap(name, opts)
	end
	function instate.maps() return next, {}, nil end

	function instate.setup(path, opts)
		if type(path) ~= "string" then
			argerror(2, "setup", 1, "string expected, got " .. typename(path))
		end
		if path == "" then argerror(2, "setup", 1, "path must not be empty") end
		if saving then return busy("setup") end
		local name = "state"
		local oopts
		local ro, nkeep = false, 0
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
				elseif k == "backups" then
					if math_type(v) ~= "integer" or v < 0 then
						argerror(2, "setup", 2, "backups must be an integer >= 0, got " ..
							(type(v) == "number" and tostring(v) or typename(v)))
					end
					nkeep = v
				else
					if k == "readonly" then ro = v == true end
					oopts[k] = v
				end
			end
		end
		if store then
			if path == store_path and name == ns_name and ro == readonly then
				keep = nkeep
				return store
			end
			if norder > 0 or (maps and maps.declared()) then
				error(("instate.setup: variables are declared in %s (namespace %s); call instate.teardown() before setup(%q)")
					:format(store_path, quote(ns_name), path), 2)
			end
			store:close()
			if async then async.close() end
			store, store_path, ns_name, state_ns, async = nil, nil, nil, nil, nil
			forget()
		end
		local s, msg, code = open(path, oopts)
		if not s then
			setup_failed = ("instate.setup failed: %s (%s)"):format(tostring(msg), tostring(code))
			return nil, msg, code
		end
		if not ro then
			-- One owner: before anything is read, so that what this
			-- process restores is what no other process will save over.
			local owned, omsg, ocode = s:lock_owner()
			if not owned then
				s:close()
				if ocode == "LOCKED" then
					omsg = ("instate.setup: %s: another copy of the program has it set up; pass {readonly = true} to open it without owning it")
						:format(omsg)
				end
				setup_failed = ("instate.setup failed: %s (%s)"):format(tostring(omsg), tostring(ocode))
				return nil, omsg, ocode
			end
		end
		store, store_path, ns_name = s, path, name
		readonly, keep = ro, nkeep
		async = require("instate.async")(s, retouch)
		local ok, done, smsg, scode = pcall(scan)
		if not (ok and done) then
			store:close()
			async.close()
			store, store_path, ns_name, state_ns, async = nil, nil, nil, nil, nil
			forget()
			if ok then
				setup_failed = ("instate.setup failed: %s (%s)"):format(
					(tostring(smsg):gsub("^instate%.setup: ", "")), tostring(scode))
				return nil, smsg, scode
			end
			error(done, 0)
		end
		setup_failed = nil
		if keep > 0 and not ro then
			-- A backup of the state as it starts, read cleanly (a dump
			-- refuses a store with a damaged record).
			local _, bmsg = backup_ctx.setup_backup(s, path, keep)
			if bmsg then return store, bmsg end
		end
		return store
	end

	-- Returns true, or nil, msg, code when the async saves still pending
	-- failed (the variables are forgotten and the store closed all the
	-- same). The store closes first: that ends a transaction of it this
	-- coroutine may hold, which the writer would wait for.
	function instate.teardown()
		if saving then return busy("teardown") end
		setup_failed = nil
		if store then store:close() end
		local ok, msg, code = true, nil, nil
		if async then ok, msg, code = async.close() end
		store, store_path, ns_name, state_ns, async = nil, nil, nil, nil, nil
		readonly, keep = false, 0
		forget()
		undo, undo_stack = nil, {}
		return ok, msg, code
	end

	-- ---------------------------------------------------------------------
	-- defstate
	-- ---------------------------------------------------------------------

	local OPTS = { version = true, migrate = true, validate = true, track = true }

	-- Checks a name that is not a saved record's key (those are valid).
	local function check_name(name)
		if type(name) ~= "string" then
			argerror(3, "defstate", 1, "string expected, got " .. typename(name))
		end
		local n = #name
		if n == 0 then argerror(3, "defstate", 1, "name must not be empty") end
		if n > KEY_MAX then
			argerror(3, "defstate", 1, ("name is %d bytes, longer than %d"):format(n, KEY_MAX))
		end
	end

	local function note_version(version)
		if common_version == nil then
			common_version = version
		elseif common_version ~= version then
			common_version = false
		end
	end

	-- Every declaration but a saved name without options: check the
	-- arguments, read the record when setup's read is stale, restore.
	-- Only ever tail-called by defstate, so error levels are defstate's.
	local function declare(name, default, opts)
		local saved, ver, v, stored_fp, rec = false, nil, nil, nil, nil
		local lookup = true
		if pending then
			if last_commit(store) == scan_commit then
				-- Not declared (defstate returned a declared one): setup's
				-- variable, false (saved, but to be read here) or nil (not
				-- saved).
				local built = vars[name]
				if built then saved, ver, v, stored_fp = true, 1, built[4], built[5] end
				lookup = built == false
			else
				drop_pending()
			end
		end
		if not saved then check_name(name) end
		local version, migrate, validate, track = 1, nil, nil, nil
		if opts ~= nil then
			if type(opts) ~= "table" then
				argerror(2, "defstate", 3, "table expected, got " .. typename(opts))
			end
			for k in pairs(opts) do
				if not OPTS[k] then
					argerror(2, "defstate", 3, ("unknown option '%s'"):format(tostring(k)))
				end
			end
			version, migrate, validate, track = opts.version or 1, opts.migrate, opts.validate, opts.track
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
			if track ~= nil and type(track) ~= "boolean" then
				argerror(2, "defstate", 3, "track must be a boolean, got " .. typename(track))
			end
			if track and type(default) ~= "table" then
				argerror(2, "defstate", 2, "a tracked variable's default must be a table, got " .. typename(default))
			end
		end
		if not store then
			error(("instate.defstate: no store for variable %s; %s")
				:format(quote(name), no_store_why()), 2)
		end
		if lookup and not saved then
			local bytes, msg, code = state_ns:get_encoded(name)
			if bytes then
				ver, rec = msg, bytes
				saved, v, stored_fp = true, decode_saved(name, bytes, DECLARE, true)
				if type(v) ~= "table" then stored_fp = nil end
			elseif code then
				-- never the default in place of a record that failed to read:
				-- a later save_all would write over it
				failed[name] = true
				error(("instate.defstate: cannot restore variable %s: %s (code %s)")
					:format(quote(name), msg, code), 2)
			end
		end
		local var
		if saved then
			var = setmetatable({ UNREAD, false, default, false, name = name }, Var)
			if version ~= 1 then var.version = version end
			if migrate then var.migrate = migrate end
			if validate then var.validate = validate end
			local stored
			v, stored = restore(var, v, ver, DECLARE)
			if track then
				if type(v) ~= "table" then
					failed[name] = true
					error(("instate.defstate: variable %s is tracked but its saved value is %s (a table expected)")
						:format(quote(name), typename(v)), 2)
				end
				setmetatable(var, tracked_class())
			end
			if stored then
				-- Not handed out yet, like a restore on the common path;
				-- a table with its record's fingerprint (not tracked:
				-- those are never fingerprinted).
				var[4] = v
				if not track then
					var[5] = stored_fp
				else
					-- a big one's entry cache, from its record's bytes
					TE.attach(var, v, rec)
				end
			else
				-- Migrated: the next save rewrites it.
				var[1], var[4] = v, nil
				stamp(var)
				touch(var)
			end
		else
			wseq = wseq + 1
			var = setmetatable({ default, wseq, default, nil, name = name }, track and tracked_class() or Var)
			if version ~= 1 then var.version = version end
			if migrate then var.migrate = migrate end
			if validate then var.validate = validate end
			if type(default) == "table" then
				-- The default is the value; keep it as declared for reset().
				var[3] = deepcopy(default)
			end
			touch(var)
		end
		if failed[name] then failed[name] = nil end
		if validate then nvalidate = nvalidate + 1 end
		note_version(version)
		-- Declared: replaces setup's variable for the name (if any).
		vars[name] = var
		local n = norder + 1
		norder = n
		order[n] = var
		return var
	end

	function instate.defstate(name, default, opts)
		-- The common case first, kept short: a name saved with version 1,
		-- its variable built by setup, declared without options: one
		-- lookup, and no insert (the variable is in vars already). A
		-- declared variable answers a second declaration. Only while
		-- pending does vars hold a variable whose DEFAULT is PENDING.
		local var = vars[name]
		if var then
			if var[3] ~= PENDING then return var end
			if opts == nil and last_commit(store) == scan_commit then
				var[3] = default
				local n = norder + 1
				norder = n
				order[n] = var
				if common_version ~= 1 then note_version(1) end
				return var
			end
		end
		return declare(name, default, opts)
	end

	-- ---------------------------------------------------------------------
	-- variables
	-- ---------------------------------------------------------------------

	function Var:get()
		if getmetatable(self) ~= Var then bad_self(self, "get") end
		local v = self[1]
		if v == UNREAD then
			v = self[4]
			self[1], self[4] = v, nil
			local n = ntouched + 1
			ntouched = n
			touched[n] = self
		end
		return v
	end

	function Var:set(v)
		if getmetatable(self) ~= Var then bad_self(self, "set") end
		if undo then log_old(self) end
		if self[1] == UNREAD then touch(self) end
		local s = wseq + 1
		wseq = s
		self[1], self[2], self[4] = v, s, nil
	end

	function Var:update(fn)
		if getmetatable(self) ~= Var then bad_self(self, "update") end
		if type(fn) ~= "function" then
			argerror(2, "update", 1, "function expected, got " .. typename(fn))
		end
		local v = self[1]
		if v == UNREAD then v = read(self) end
		v = fn(v)
		assign(self, v)
		return v
	end

	function Var:reset()
		if getmetatable(self) ~= Var then bad_self(self, "reset") end
		assign(self, deepcopy(self[3]))
	end
	local function var_saved(self)
		if not store or vars[self.name] ~= self then
			error(("instate: variable %s was forgotten by instate.teardown()"):format(quote(self.name)), 3)
		end
		return state_ns:get_encoded(self.name) ~= nil
	end
	function Var:saved()
		if getmetatable(self) ~= Var then bad_self(self, "saved") end
		local is = var_saved(self)      -- not a tail call: its errors name the caller
		return is
	end

	-- Tracked variables: their class, and the proxy -> table unwrapping.
	-- Built at the first tracked declaration: a program that declares
	-- none does not even load the module.
	function tracked_class()
		if not TVar then
			local _
			TVar, _, TE = require("instate.track")(Var, {
				UNREAD = UNREAD, read = read, assign = assign, touch = touch, stamp = stamp,
				deepcopy = deepcopy,
				argerror = argerror, typename = typename, saved = var_saved,
				-- undo is false, not nil, after a transaction ended
				log_old = log_old, in_transaction = function() return not not undo end,
				entries = instate._entries, count_entries = instate._entries_count,
				-- the bytes of the record setup's read decoded (nil if it
				-- cannot be read, or a commit came since that read: then
				-- they may be another value's; no cache from them)
				read_record = function(name)
					local bytes = state_ns:get_encoded(name)
					if last_commit(store) ~= scan_commit then return nil end
					return bytes
				end,
				-- a tracked table of this many top-level entries or more
				-- is saved through an entry cache (docs/DESIGN.md)
				entries_min = 1024,
			})
		end
		return TVar
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

	-- Never the defaults in place of records that could not be read:
	-- the game runs without them, and its save must not look complete.
	local function refuse_unread()
		local names = {}
		for name in pairs(failed) do names[#names + 1] = quote(name) end
		table.sort(names)
		error(("instate.save_all: the saved values of %s could not be restored (their defstate raised); nothing was saved. Restore a backup (instate.restore_backup) or delete those records, then declare them again")
			:format(concat(names, ", ")), 3)
	end

	local function need_store(fname)
		if not store then
			error(("instate.%s: no store; %s"):format(fname, no_store_why()), 3)
		end
	end

	-- save_all's arguments to save_many, reused from save to save (and
	-- emptied after each) so that a save allocates nothing per variable.
	-- A save takes them (s_keys is nil while one runs: a save that a
	-- finalizer runs in the middle of it uses tables of its own) and gives
	-- them back when it returns; a save that raised (an unstorable value)
	-- never gives them back, so what it held is dropped with them.
	local s_keys, s_vals, s_vers = {}, {}, {}
	local s_scalars = {}                 -- non-tables among them
	-- The untracked tables among them, and their new fingerprints: set
	-- into PRINT once they are known saved.
	local s_tabs, s_prints               -- made by the first save needing them

	-- Drop the references to values; mark the scalars clean when clean is
	-- true (a tracked one leaves touched then: it is saved, and its next
	-- write brings it back), those not written since the pick (stamps up
	-- to seq0): one written since stays dirty, and a big tracked one also
	-- loses its entry cache (the write may have landed in the middle of
	-- its update, which then missed it: the next save encodes it in
	-- full); hand the tables back.
	local function save_clear(keys, vals, vers, scalars, n, ns, clean, seq0)
		for i = 1, n do vals[i] = nil end
		for i = 1, ns do
			local var = scalars[i]
			local d = var[2]
			if d and d > seq0 then
				if var[9] then TE.drop(var) end
			elseif clean then
				var[2] = false
				if var[8] then untouch(var) end
			end
			scalars[i] = nil
		end
		s_keys, s_vals, s_vers, s_scalars = keys, vals, vers, scalars
	end

	-- A validate failure: a raised table comes back as that table.
	local function invalid(var, why)
		if type(why) == "table" then error(why, 0) end
		error(("instate.save_all: variable %s is invalid: %s (nothing was saved)")
			:format(quote(var.name), tostring(why or "validate returned false")), 5)
	end

	local function save_opts(opts)
		if type(opts) ~= "table" then
			argerror(3, "save_all", 1, "table expected, got " .. typename(opts))
		end
		for k, v in pairs(opts) do
			if k ~= "async" then
				argerror(3, "save_all", 1, ("unknown option '%s'"):format(tostring(k)))
			end
			if type(v) ~= "boolean" then
				argerror(3, "save_all", 1, "async must be a boolean, got " .. typename(v))
			end
		end
		return opts.async
	end

	function instate.flush()
		need_store("flush")
		local rev, msg, code = async.flush()
		if not rev then return nil, msg, code end
		if rev == true then return store:revision() end
		return rev
	end

	-- save_all past its argument checks, run as the one save running
	-- (see saving). Its errors that name the caller of save_all raise at
	-- level 5: the function raising, this, pcall, save_all, its caller.
	local function save_body(is_async)
		-- The maps' writes, validated and encoded (raises first, like
		-- below). An async save leaves the comparison with the records to
		-- the writer's thread, which sees the saves still queued.
		local plan = maps and maps.prepare(is_async)
		if is_async and plan and maps.clears(plan) then
			-- A map's clear() is not a batch operation: this save runs
			-- synchronously (after the queued ones).
			is_async = false
		end
		if not is_async and async.active() then
			-- An earlier async save must not commit after this one.
			local ok, msg, code = async.flush()
			if not ok then return nil, msg, code end
		end
		-- Only variables handed out or set can have changed; those
		-- written from here on stay dirty (save_clear).
		local list, n = touched, ntouched
		local seq0 = wseq
		-- Every validate runs before anything is written.
		if nvalidate > 0 then
			for i = 1, n do
				local var = list[i]
				local validate, v = var.validate, var[1]
				if validate and v ~= UNREAD then
					local ok, good, why = pcall(validate, v)
					if not ok then invalid(var, good) end
					if not good then invalid(var, why) end
				end
			end
		end
		local keys, vals, vers, scalars = s_keys, s_vals, s_vers, s_scalars
		if keys then
			s_keys = nil
		else
			keys, vals, vers, scalars = {}, {}, {}, {}
		end
		local perver = common_version == false
		local tabs, prints = s_tabs, s_prints
		if tabs then
			s_tabs = nil
		else
			tabs, prints = {}, {}
		end
		-- One C call picks them (instate._fingerprint_pick, whose comment
		-- says it in full): a restored value never handed out cannot have
		-- changed and is skipped. A table may have changed in place:
		-- picked when its fingerprint moved (or is unknown; the new one
		-- goes to prints, PRINT made false if it was nil so that filling
		-- it after the commit allocates nothing). A tracked one, or any
		-- other value, when set or written since (to scalars; PRINT made
		-- false: the record stops being the table PRINT describes, so a
		-- table equal to it set back later must be written).
		local m, ns, nt = fingerprint_pick(list, n, UNREAD, perver, keys, vals, vers,
			scalars, tabs, prints, Var)
		-- A big tracked table goes as its entry cache, which encodes the
		-- entries written since the last save alone.
		if TE and m > 0 then TE.pick(vars, keys, vals, m) end
		if m == 0 and not plan then
			save_clear(keys, vals, vers, scalars, 0, 0, false, seq0)
			s_tabs, s_prints = tabs, prints
			if is_async then return async.ticket() end
			return store:revision()
		end
		if is_async then
			-- Encoded here, compared and committed on the writer's thread;
			-- the maps' writes go in the same batch.
			local batch, on_fail
			if plan then
				local bmsg, bcode
				batch, bmsg, bcode = async.batch()
				if not batch then
					save_clear(keys, vals, vers, scalars, m, ns, false, seq0)
					return nil, bmsg, bcode
				end
				maps.write(plan, maps.batch_sink(store, batch))
			end
			-- The tables' fingerprints are taken as saved now; if the save
			-- fails in the background they are forgotten (and the maps'
			-- writes are unsaved again), so the next save encodes them.
			local ftabs = {}
			for i = 1, nt do ftabs[i] = tabs[i] end
			on_fail = function()
				for i = 1, #ftabs do ftabs[i][5] = false end
				if plan then maps.unsaved(plan) end
			end
			local ticket, msg, code = async.submit(state_ns, m, keys, vals,
				perver and vers or common_version or 1, scalars, ns, batch, on_fail)
			save_clear(keys, vals, vers, scalars, m, ns, ticket ~= nil, seq0)
			for i = 1, nt do
				if ticket then tabs[i][5] = prints[i] end
				tabs[i], prints[i] = nil, nil
			end
			s_tabs, s_prints = tabs, prints
			if not ticket then return nil, msg, code end
			if plan then maps.saved(plan) end
			drop_pending()
			return ticket
		end
		-- One C call: encodes (raising, with nothing begun, on an
		-- unstorable value named by its variable), then writes what
		-- differs from the store in one write transaction of its own (a
		-- savepoint inside this coroutine's store transaction).
		local lc_in = last_commit(store)
		local rev, written, nested
		if plan then
			-- The variables and the maps in one transaction.
			rev, written, nested = maps.commit(store, plan, m > 0 and function()
				return state_ns:save_many(m, keys, vals, perver and vers or common_version)
			end or nil)
		else
			rev, written, nested = state_ns:save_many(m, keys, vals,
				perver and vers or common_version)
		end
		local saved = rev and not nested
		for i = 1, nt do
			if saved then tabs[i][5] = prints[i] end
			tabs[i], prints[i] = nil, nil
		end
		s_tabs, s_prints = tabs, prints
		if not rev then
			save_clear(keys, vals, vers, scalars, m, ns, false, seq0)
			return nil, written, nested     -- msg, code
		end
		-- Nested in a store transaction that may still abort, what was
		-- written is not known to be saved: the scalars stay dirty and the
		-- fingerprints unchanged, so the next save compares them with the
		-- store again.
		save_clear(keys, vals, vers, scalars, m, ns, not nested, seq0)
		-- Only declared variables were written, none of them still pending:
		-- the cache stays good if ours was the only commit since it was read.
		if pending and written > 0 then
			local lc = last_commit(store)
			if lc_in == scan_commit and lc == lc_in + 1 then
				scan_commit = lc
			else
				drop_pending()
			end
		end
		return rev
	end

	function instate.save_all(opts)
		local is_async = false
		if opts ~= nil then is_async = save_opts(opts) end
		need_store("save_all")
		if readonly then
			return nil, ("instate.save_all: the store '%s' was set up read-only ({readonly = true}); nothing was saved")
				:format(store_path), "READONLY"
		end
		if next(failed) then refuse_unread() end
		if saving then return busy("save_all") end
		saving = true
		local ok, a, b, c = pcall(save_body, is_async)
		saving = false
		if not ok then error(a, 0) end
		return a, b, c
	end

	function instate.reload_all()
		need_store("reload_all")
		if saving then return busy("reload_all") end
		if async.active() then
			-- The saved values include the async saves handed over.
			local ok, msg, code = async.flush()
			if not ok then return nil, msg, code end
		end
		local list, n = order, norder
		local got, gotver = {}, {}
		local name = ns_name
		local ok, msg, code = store:snapshot(function(tx)
			local ns, nmsg, ncode = tx:namespace(name, "state")
			if not ns then return nil, nmsg, ncode end
			for i = 1, n do
				local bytes, ver, rcode = ns:get_encoded(list[i].name)
				if bytes == nil and ver ~= nil then return nil, ver, rcode end
				got[i], gotver[i] = bytes, ver
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
		local values, stored = {}, {}
		for i = 1, n do
			local var = list[i]
			local v = decode_saved(var.name, got[i], "instate.reload_all")
			values[i], stored[i] = restore(var, v, gotver[i], "instate.reload_all")
			if var.track and type(values[i]) ~= "table" then
				error(("instate.reload_all: variable %s is tracked but its saved value is %s (nothing was changed)")
					:format(quote(var.name), typename(values[i])), 2)
			end
		end
		for i = 1, n do
			local var = list[i]
			if undo then log_old(var) end
			if var.track then
				-- as saved: off save_all's list (a migrated one is rewritten)
				if stored[i] then untouch(var) else touch(var) end
			elseif var[1] == UNREAD then
				touch(var)
			end
			local v = values[i]
			var[1], var[2], var[4] = v, false, nil
			if not stored[i] then stamp(var) end
			if var.track then
				-- the cache of what is stored, or one made at the next save
				TE.drop(var)
				if stored[i] then TE.attach(var, v, got[i]) end
			end
			-- The fingerprint of what the store holds (none after a
			-- migration: the next save rewrites it anyway).
			var[5] = nil
			if stored[i] and type(v) == "table" and not var.track then var[5] = fingerprint(v) end
		end
		if maps then maps.reload() end
		return true
	end

	-- ---------------------------------------------------------------------
	-- transaction: an undo log of variables set inside fn
	-- ---------------------------------------------------------------------

	local function finish(log, ok, ...)
		if maps then maps.tx_end(ok) end
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
			if var.track then TE.drop(var) end
			if var[1] == UNREAD or var.track then touch(var) end
			var[1], var[4] = log.old[i], nil
			stamp(var)
		end
		error((...), 0)
	end

	function instate.transaction(fn, ...)
		if type(fn) ~= "function" then
			argerror(2, "transaction", 1, "function expected, got " .. typename(fn))
		end
		local log = { n = 0, seen = {}, old = {} }
		if maps then maps.tx_begin() end
		undo_stack[#undo_stack + 1] = undo or false
		undo = log
		return finish(log, pcall(fn, ...))
	end

	backup_ctx.store = function() return store end
	backup_ctx.path = function() return store_path end
	backup_ctx.readonly = function() return readonly end
	backup_ctx.keep = function() return keep end
	backup_ctx.declared = function() return norder end
	backup_ctx.restored = function()
		-- The store changed under setup's read: read it again.
		failed = {}
		local ok, done = pcall(scan)
		if not (ok and done) then drop_pending() end
	end
	require("instate.backup")(instate, backup_ctx)

	return instate
end
