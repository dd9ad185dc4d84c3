--- compat: what differs between Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1.
--
-- The Lua layer's only version-dependent file: every other file uses what
-- all five parse and run alike, and takes from here what they do not.
-- Callers copy these to locals when they load, so no hot path pays a
-- table lookup or an extra call on any Lua.
--
--  * math_type(v): math.type where it exists (5.3, 5.4). Elsewhere numbers
--    have no subtypes: an integral number in [-2^63, 2^63) but -0.0 is
--    "integer", any other number (fraction, NaN, inf, -0.0) is "float"
--    (the binding's rule for integer arguments), a non-number nil.
--  * integers: true when numbers have an integer subtype (5.3, 5.4).
--  * unpack(t, i, j), pack(...): table.unpack/table.pack, or 5.1's unpack
--    and an equivalent of table.pack (the field n holds the count).
--  * to_be_closed: true where `local x <close>` and coroutine.close exist
--    (5.4). Elsewhere the documented equivalent is an explicit close()
--    (and __gc as the last resort).
--  * yield_across_c: true where a coroutine can yield inside a C call such
--    as store:transaction (5.2+, lua_callk); on 5.1 and LuaJIT such a
--    yield raises.
--  * error(msg, level): error, except on 5.1, where a function reached by
--    a tail call has a marker level without a position above it: the
--    level that marker takes is skipped, so that the position is the
--    caller's, as on the others.
--  * load(chunk, name, mode, env), loadfile(path, mode, env): as in 5.2+
--    and LuaJIT; on 5.1 through loadstring/setfenv (mode is not checked
--    there).
--  * int64: true on LuaJIT, where a MessagePack integer beyond 2^53 reads
--    as an int64_t cdata (uint64_t above 2^63-1) of the exact value, and
--    such cdata are stored as the integer of the same value. Loading this
--    file gives the C codec the two FFI converters it needs (it has no FFI
--    itself): core._set_int64_hooks(make, classify).

local type, select, floor, error = type, select, math.floor, error

local compat = {}

local math_type = math.type
if not math_type then
	local TWO63 = 2 ^ 63
	math_type = function(v)
		if type(v) ~= "number" then return nil end
		if v == floor(v) and v >= -TWO63 and v < TWO63 and (v ~= 0 or 1 / v > 0) then
			return "integer"
		end
		return "float"
	end
end
compat.math_type = math_type
compat.integers = math.type ~= nil

compat.unpack = table.unpack or unpack
compat.pack = table.pack or function(...)
	return { n = select("#", ...), ... }
end

compat.to_be_closed = coroutine.close ~= nil
compat.yield_across_c = _VERSION ~= "Lua 5.1"

if _VERSION == "Lua 5.1" and not jit then
	local getinfo = debug.getinfo
	compat.error = function(msg, level)
		level = level or 1
		if level <= 0 then error(msg, 0) end
		-- level + 1: this function's own frame
		local l = level + 1
		local info = getinfo(l, "S")
		if info and info.what == "tail" then l = l + 1 end
		error(msg, l)
	end
else
	compat.error = error
end

-- What the Lua layer's messages share.

--- The type of v as messages name it: "integer" or "number" for numbers.
function compat.typename(v)
	local t = type(v)
	if t == "number" then return math_type(v) == "integer" and "integer" or "number" end
	return t
end

--- Raise luaL_argerror's wording at the position of the user's call, level
-- levels above the caller of argerror (as error's level, from there).
local cerror = compat.error
function compat.argerror(level, fname, n, msg)
	cerror(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), level + 1)
end

--- A name in quotes, as messages show variables and keys.
function compat.quote(name) return ("'%s'"):format(name) end

if pcall(load, "return") then          -- load takes a string: 5.2+, LuaJIT
	compat.load, compat.loadfile = load, loadfile
else
	local load51, loadstring, loadfile51, setfenv = load, loadstring, loadfile, setfenv
	compat.load = function(chunk, name, _, env)
		local f, err
		if type(chunk) == "string" then
			f, err = loadstring(chunk, name)
		else
			f, err = load51(chunk, name)
		end
		if f and env then setfenv(f, env) end
		return f, err
	end
	compat.loadfile = function(path, _, env)
		local f, err = loadfile51(path)
		if f and env then setfenv(f, env) end
		return f, err
	end
end

compat.int64 = false
local ok_ffi, ffi = pcall(require, "ffi")
local ok_core, core = pcall(require, "instate.core")
if jit and ok_ffi and ok_core then
	local istype, int64_t, uint64_t = ffi.istype, ffi.typeof("int64_t"), ffi.typeof("uint64_t")
	-- One buffer, made once: converting through it creates no object on
	-- the classify side (the encoder calls it in the middle of a value).
	local box = ffi.new("union { int64_t i; uint64_t u; uint32_t w[2]; }")
	local w = ffi.cast("uint32_t *", box)
	local HI, LO = 0, 1
	if ffi.abi("le") then HI, LO = 1, 0 end
	-- hi, lo: the upper and lower 32 bits; signed: an int64_t, else uint64_t
	local function make(hi, lo, signed)
		w[HI], w[LO] = hi, lo
		if signed then return int64_t(box.i) end
		return uint64_t(box.u)
	end
	-- 1 (int64_t) or 2 (uint64_t), hi, lo; nil for any other cdata
	local function classify(v)
		if istype(int64_t, v) then
			box.i = v
			return 1, w[HI], w[LO]
		elseif istype(uint64_t, v) then
			box.u = v
			return 2, w[HI], w[LO]
		end
		return nil
	end
	-- Interpreted only: compiling a trace creates objects, which could run
	-- a collector step in the middle of an encoding.
	jit.off(make)
	jit.off(classify)
	core._set_int64_hooks(make, classify)
	compat.int64 = true
end

return compat
