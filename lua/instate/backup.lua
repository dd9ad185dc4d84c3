--- backup: the generations of a defstate store (instate.backup,
-- instate.backups, instate.restore_backup), kept as dump files beside it.
--
-- require("instate.backup")(instate, ctx) installs them; ctx is defstate's
-- view of its default store: ctx.store() (the store or nil), ctx.path(),
-- ctx.readonly(), ctx.keep() (the backups option), ctx.declared() (how many
-- variables are declared) and ctx.restored() (called after a restore).
--
-- Files, for the store at P (a trailing separator dropped):
--   P.backup.1.isd   the newest backup, P.backup.2.isd the one before...
--   P.backup.new.isd a backup being made: written (store:dump, itself
--                    atomic: temporary file, fsync, rename), read back,
--                    and only then moved into slot 1.
-- Rotation moves the files up one slot after the new one has been
-- verified: the oldest is removed first (it is the one let go), then k to
-- k + 1 from the top, then new to 1. Each step is one rename, so a crash
-- anywhere leaves every kept backup whole (at worst a gap in the slots, or
-- the verified new file still under its own name, which the next backup
-- replaces). A new backup that cannot be written or does not read back is
-- removed and the kept ones are untouched.

local compat = require "instate.compat"
local error, type, tostring, pcall = compat.error, type, tostring, pcall
local math_type = compat.math_type

return function(instate, ctx)
	local dump_info = instate.dump_info

	local function base_of(path)
		return (path:gsub("[/\\]+$", ""))
	end
	local function slot(path, k)
		return ("%s.backup.%s.isd"):format(base_of(path), tostring(k))
	end
	local function exists(p)
		local f = io.open(p, "rb")
		if f then f:close() return true end
		return false
	end

	-- Test hook: called with the new backup's path after it is written,
	-- before it is read back (spec/27 damages it there).
	instate._backup_written = nil

	local function need(fname, write)
		local store = ctx.store()
		if not store then
			error(("instate.%s: no store; call instate.setup(path) first"):format(fname), 3)
		end
		if write and ctx.readonly() then
			return nil, ("instate.%s: the store '%s' was set up read-only ({readonly = true})")
				:format(fname, ctx.path()), "READONLY"
		end
		return store
	end

	-- Read the whole file back: every block's checksum and framing
	-- (instate.dump_info), and, when known, what the dump said it wrote.
	local function verify(p, want)
		local info, msg, code = dump_info(p)
		if not info then return nil, msg, code end
		if want and (info.records ~= want.records or info.revision ~= want.revision) then
			return nil, ("%s holds %d records of revision %d, but %d of revision %d were written")
				:format(p, info.records, info.revision, want.records, want.revision), "CORRUPT"
		end
		return info
	end

	-- Make a backup and rotate; returns the new backup's dump info (with
	-- path), false when skip_empty and the store holds no record, or nil,
	-- msg, code. keep >= 1.
	local function make(store, path, keep, who, skip_empty)
		local new = slot(path, "new")
		local info, msg, code = store:dump(new)
		if not info then
			os.remove(new)
			return nil, ("%s: no backup made: %s; the kept backups are untouched"):format(who, msg), code
		end
		if skip_empty and info.records == 0 then
			os.remove(new)
			return false
		end
		local hook = instate._backup_written
		if hook then hook(new) end
		local ok
		ok, msg, code = verify(new, info)
		if not ok then
			os.remove(new)
			return nil, ("%s: the new backup did not read back: %s; it was removed and the kept backups are untouched")
				:format(who, msg), code
		end
		-- Verified: now, and only now, let the oldest go.
		local k = keep
		while exists(slot(path, k)) do
			local gone, err = os.remove(slot(path, k))
			if not gone then
				return nil, ("%s: cannot remove the oldest backup: %s"):format(who, tostring(err)), "IO"
			end
			k = k + 1
		end
		for i = keep - 1, 1, -1 do
			local from = slot(path, i)
			if exists(from) then
				local moved, err = os.rename(from, slot(path, i + 1))
				if not moved then
					return nil, ("%s: cannot rotate the backups: %s"):format(who, tostring(err)), "IO"
				end
			end
		end
		local moved, err = os.rename(new, slot(path, 1))
		if not moved then
			return nil, ("%s: cannot rotate the backups: %s"):format(who, tostring(err)), "IO"
		end
		info.path = slot(path, 1)
		return info
	end

	--- instate.backup() -> info | nil, msg, code: a backup of the default
	-- store now, keeping the setup's `backups` newest (1 when not given).
	function instate.backup()
		local store, msg, code = need("backup", true)
		if not store then return nil, msg, code end
		local keep = ctx.keep()
		if keep < 1 then keep = 1 end
		return make(store, ctx.path(), keep, "instate.backup")
	end

	-- setup's backup: only when the store holds records and changed since
	-- the newest backup, so restarts without play never rotate a good
	-- generation out for a copy of the same state, and a store emptied by
	-- an accident never pushes out what it lost. Returns true, or nil and
	-- the message of why none was made.
	function ctx.setup_backup(store, path, keep)
		local newest = dump_info(slot(path, 1))
		local stats = store:stats()
		if stats and newest and newest.revision == stats.revision then return true end
		local info, msg = make(store, path, keep, "instate.setup", true)
		if info == nil then return nil, msg end
		return true
	end

	--- instate.backups() -> array of {k, path, ok, revision, records,
	-- created_ms, bytes} or {k, path, ok = false, error, code}, newest first.
	function instate.backups()
		need("backups")
		local path, list = ctx.path(), {}
		local k = 1
		local keep = ctx.keep()
		-- the slots kept, and any past them a smaller `backups` left
		while k <= keep or exists(slot(path, k)) do
			local p = slot(path, k)
			if exists(p) then
				local info, msg, code = verify(p)
				if info then
					list[#list + 1] = { k = k, path = p, ok = true, revision = info.revision,
						records = info.records, created_ms = info.created_ms, bytes = info.bytes }
				else
					list[#list + 1] = { k = k, path = p, ok = false, error = msg, code = code }
				end
			end
			k = k + 1
		end
		return list
	end

	--- instate.restore_backup([k]) -> info | nil, msg, code: replace the
	-- default store's namespaces with backup k (1, the newest, by default).
	function instate.restore_backup(k)
		if k == nil then k = 1 end
		if math_type(k) ~= "integer" or k < 1 then
			error(("bad argument #1 to 'restore_backup' (an integer >= 1 expected, got %s)")
				:format(type(k) == "number" and tostring(k) or type(k)), 2)
		end
		local store, msg, code = need("restore_backup", true)
		if not store then return nil, msg, code end
		local n = ctx.declared()
		if n > 0 then
			error(("instate.restore_backup: %d variables are declared; restore before the first defstate (call instate.teardown() and instate.setup(path) again)")
				:format(n), 2)
		end
		local p = slot(ctx.path(), k)
		if not exists(p) then
			return nil, ("instate.restore_backup: no backup %d (%s)"):format(k, p), "NOTFOUND"
		end
		local info
		info, msg, code = verify(p)
		if not info then
			return nil, ("instate.restore_backup: backup %d is damaged: %s; the store is unchanged")
				:format(k, msg), code
		end
		local loaded
		loaded, msg, code = store:load(p, { mode = "replace" })
		if not loaded then
			return nil, ("instate.restore_backup: %s; the store is unchanged"):format(tostring(msg)), code
		end
		ctx.restored()
		loaded.path = p
		return loaded
	end
end
