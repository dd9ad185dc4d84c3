--- async: the defstate layer's side of save_all{async = true}.
--
-- require("instate.async")(store, retouch) returns the async saves of one
-- default store: a writer (store:writer(), a thread of the C core that
-- commits batches in order) started at the first async save, and the
-- bookkeeping that keeps dirty flags right when a background save fails
-- (retouch(var) marks a variable dirty again and puts it back on
-- save_all's list: a tracked one left it when its save was handed over).
--
-- A save is encoded on the calling thread (ns:save_many with the writer),
-- then compared with the stored records and committed on the writer's
-- thread. The variables of a save are marked clean when it is handed over;
-- the saves not known to be committed are remembered, and when an error of
-- one of them is reported (by the next save or flush), every variable of
-- every save remembered is marked dirty again: the failed save and those
-- after it (which the writer does not commit, so the store holds a prefix
-- of the saves) are rewritten by the next save.

return function(store, retouch)
	local A = {}
	local writer
	-- Saves handed over and not known to be committed: batches[i] =
	-- { ticket, var, var, ... }, oldest first.
	local batches, nbatches = {}, 0
	local last_ticket = 0

	-- Mark every remembered variable dirty again and forget the saves.
	local function redirty()
		for i = 1, nbatches do
			local b = batches[i]
			for j = 2, #b do
				retouch(b[j])
			end
			if b.on_fail then b.on_fail() end
			batches[i] = nil
		end
		nbatches = 0
	end

	-- Forget the saves the writer has finished without an error.
	local function prune()
		if nbatches == 0 then return end
		local _, done, ecode = writer:info()
		if ecode then return end
		local k = 0
		for i = 1, nbatches do
			if batches[i][1] > done then
				k = k + 1
				batches[k] = batches[i]
			end
		end
		for i = k + 1, nbatches do batches[i] = nil end
		nbatches = k
	end

	local function start()
		if writer then return writer end
		local w, msg, code = store:writer()
		if not w then return nil, msg, code end
		writer = w
		return w
	end

	--- A Batch of the writer (batch:put(ns, key, value [, version]),
	-- batch:delete(ns, key)): writes of other namespaces (a map variable's
	-- entries) to commit in the same transaction as the next save, by
	-- passing it to A.submit. nil, msg, code if the writer cannot start.
	function A.batch()
		local w, msg, code = start()
		if not w then return nil, msg, code end
		return w:batch()
	end

	--- Hand a save to the writer: save_many's arguments, and the variables
	-- in it (list[1..m]) to mark dirty again if it fails; with batch (from
	-- A.batch()), its writes go in the same save, and on_fail() runs if
	-- that save fails (to mark the batch's writes unsaved). Returns the ticket, or
	-- nil, msg, code of an earlier save's error (then nothing was handed
	-- over, the batch is as it was and the variables stay as they were).
	function A.submit(ns, m, keys, vals, vers, vars, nvars, batch, on_fail)
		local w, wmsg, wcode = start()
		if not w then return nil, wmsg, wcode end
		prune()
		local ticket, msg, code = ns:save_many(m, keys, vals, vers, batch or writer)
		if not ticket then
			redirty()
			return nil, msg, code
		end
		local b = { ticket, on_fail = on_fail }
		for i = 1, nvars do b[i + 1] = vars[i] end
		nbatches = nbatches + 1
		batches[nbatches] = b
		last_ticket = ticket
		return ticket
	end

	--- The ticket of the last save handed over (0 before the first).
	function A.ticket() return last_ticket end

	--- Wait for every save handed over: true, or nil, msg, code (the first
	-- error of a save; the variables it and later saves held are dirty
	-- again).
	function A.flush()
		if not writer then return true end
		local rev, msg, code = writer:flush()
		if not rev then
			if code ~= "BUSY" then redirty() end
			return nil, msg, code
		end
		for i = 1, nbatches do batches[i] = nil end
		nbatches = 0
		return rev
	end

	--- Whether saves may be pending (a flush has something to wait for).
	function A.active() return writer ~= nil and nbatches > 0 end

	--- Flush and stop the writer: true, or nil, msg, code.
	function A.close()
		if not writer then return true end
		local ok, msg, code = writer:close()
		if ok or code ~= "BUSY" then writer = nil end
		for i = 1, nbatches do batches[i] = nil end
		nbatches = 0
		if not ok then return nil, msg, code end
		return true
	end

	return A
end
