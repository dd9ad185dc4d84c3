--- Fault points known to fail, each with the reason (the breaks of the
-- hardening issue being fixed). The driver counts them apart and prints
-- them; an entry no longer seen is reported for removal. The assertions stay
-- as strict as ever: an entry only keeps a known break from failing the run.
-- Fields narrow the match: op, calls ("io"/"alloc"), errno, mode ("once",
-- "persist", "full"), hit (the call failed first), check (crash, raise,
-- result, message, code, swallowed, after, state, clean), detail (a Lua
-- pattern on the failure text).
-- Empty: every break this suite found is fixed, each with its own test.
return {}
