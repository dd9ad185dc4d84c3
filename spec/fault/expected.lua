--- Fault points known to fail, each with the reason (the breaks of the
-- hardening issue being fixed). The driver counts them apart and prints
-- them; an entry no longer seen is reported for removal. The assertions stay
-- as strict as ever: an entry only keeps a known break from failing the run.
-- Fields narrow the match: op, calls ("io"/"alloc"), errno, mode ("once",
-- "persist", "full"), hit (the call failed first), check (crash, raise,
-- result, message, code, swallowed, after, state, clean), detail (a Lua
-- pattern on the failure text).
return {
  { check = "after", detail = "CORRUPT",
    reason = "break 5: after one failed write LMDB's fatal state reads as CORRUPT"
      .. " until every handle closes" },
  { mode = "full", check = "code", detail = "^code IO, expected NOSPACE",
    reason = "break 6: a short write (a filling disk) is reported as IO, not NOSPACE" },
  { mode = "full", check = "message", detail = "^message does not name ENOSPC",
    reason = "break 6: a short write (a filling disk) is reported as EIO" },
  -- Found by this suite, not in the issue's list.
  { op = "grow", hit = "mmap", check = "crash", detail = "SIGSEGV",
    reason = "new: SIGSEGV when the growth ahead of need fails in mmap: instate_txn.c"
      .. " begin_write ignores instate__grow's error and mdb_txn_begin reads LMDB's NULL map" },
}
