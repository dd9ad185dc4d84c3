--- format: storable values as deterministic, readable text, and back.
--
-- format(value [, opts]) renders a value as a Lua literal: the same value
-- gives the same text in any process and on any Lua (keys sorted, floats
-- exact, bytes escaped), for logs, diffs and the instate command.
-- parse(text) reads that text, and JSON, back without running anything.
--
-- The text (README, "Readable values", documents it for users):
--  * nil, true, false; integers in decimal (the smallest 64-bit integer,
--    which has no decimal literal in Lua, as 0x8000000000000000); floats as
--    the shortest %.Ng (N = 1..17) that reads back equal, with ".0" added
--    when that looks like an integer, 1/0, -1/0 and 0/0 (every NaN);
--    LuaJIT int64 cdata as 123LL / 123ULL (their tostring).
--  * Strings in double quotes: printable ASCII and well-formed UTF-8 of
--    code points from U+00A0 on as they are; '"', '\' and every other byte
--    escaped as \n, \r, \t, \", \\ or a three-digit \ddd, which every Lua
--    (5.1 has no \x) and parse read.
--  * Tables: the array part 1..n first (n: the last index before the first
--    nil), then the other keys in a total order: false, true, numbers
--    ascending, strings by bytes, int64 cdata by text, tables by their own
--    text. Keys that are identifiers (ASCII, no reserved word) are written
--    name = v, others [k] = v.
--  * A table reached twice (shared, or a cycle) is labelled at its first
--    appearance, <1>{...}, and written <ref 1> after that: the labels are
--    numbered in the order of the text. Such text is for reading and for
--    parse, not a Lua chunk; a value that reaches no table twice is a valid
--    Lua expression.
--  * Truncation is visible: a table beyond opts.max_depth is written
--    <truncated: max_depth N, M entries>, and text that would pass
--    opts.max_bytes stops before the token that would (within a string,
--    before the character or escape that would), followed by
--    " <truncated: max_bytes N>". parse refuses both.
--  * An instance of a registered class (instate.register_class) is its table
--    prefixed with the class name: Vec2{x = 1, y = 2}, game.Vec2{...} (a
--    name of identifiers joined by dots), else <class "the name">{...};
--    after a label, <1>Vec2{...}. parse reads these back with the class's
--    metatable, registered by then (else it refuses, naming the class).
--    Other metatables are ignored: tables are read raw.

local compat = require "instate.compat"
local type, next, tostring, tonumber, error, pcall, rawget, setmetatable =
      type, next, tostring, tonumber, compat.error, pcall, rawget, setmetatable
local concat, sort, floor, huge = table.concat, table.sort, math.floor, math.huge
local math_type = compat.math_type
local integers = compat.integers
local mininteger = math.mininteger
local char, byte = string.char, string.byte

local M = {}

-- The nesting limit of parse: the codec's (instate.max_depth), set by init.
M.max_depth = 200

-- ---------------------------------------------------------------------------
-- Scalars
-- ---------------------------------------------------------------------------

-- Byte -> its escape inside a double-quoted string; bytes absent stay as
-- they are.
local ESCAPE = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
for b = 0, 255 do
	if (b < 0x20 or b > 0x7E) and not ESCAPE[char(b)] then
		ESCAPE[char(b)] = ("\\%03d"):format(b)
	end
end

-- The length of the well-formed UTF-8 sequence of 2 to 4 bytes at i of s
-- (no overlong forms, surrogates or code points past U+10FFFF), or nil.
local UTF8 = {
	"^[\194-\223][\128-\191]",
	"^\224[\160-\191][\128-\191]", "^[\225-\236\238\239][\128-\191][\128-\191]",
	"^\237[\128-\159][\128-\191]",
	"^\240[\144-\191][\128-\191][\128-\191]",
	"^[\241-\243][\128-\191][\128-\191][\128-\191]",
	"^\244[\128-\143][\128-\191][\128-\191]",
}
local function utf8_seq(s, i)
	for k = 1, #UTF8 do
		local _, e = s:find(UTF8[k], i)
		if e then return e - i + 1 end
	end
	return nil
end
M.utf8_seq = utf8_seq

-- s in double quotes: printable ASCII as it is, well-formed UTF-8 of code
-- points from U+00A0 on as it is, every other byte escaped.
local function quote_string(s)
	if not s:find("[\128-\255]") then return '"' .. s:gsub(".", ESCAPE) .. '"' end
	local parts, n, i, len = { '"' }, 1, 1, #s
	while i <= len do
		local j = s:find("[\128-\255]", i) or len + 1
		if j > i then n = n + 1; parts[n] = (s:sub(i, j - 1):gsub(".", ESCAPE)) end
		if j > len then break end
		local l = utf8_seq(s, j)
		if l and not s:find("^\194[\128-\159]", j) then
			n = n + 1; parts[n] = s:sub(j, j + l - 1)
			i = j + l
		else
			n = n + 1; parts[n] = ESCAPE[s:sub(j, j)]
			i = j + 1
		end
	end
	parts[n + 1] = '"'
	return concat(parts)
end
M.quote_string = quote_string

local FMT = {}
for p = 1, 17 do FMT[p] = "%." .. p .. "g" end

-- The shortest %.Ng that reads back equal; ".0" when it reads as an integer.
local function float_text(x)
	if x ~= x then return "0/0" end
	if x == huge then return "1/0" end
	if x == -huge then return "-1/0" end
	local s
	for p = 1, 17 do
		s = FMT[p]:format(x)
		if tonumber(s) == x then break end
	end
	if x == 0 and 1 / x < 0 then s = "-0" end
	if not s:find("[%.eEn]") then s = s .. ".0" end
	return s
end

local function number_text(x)
	if math_type(x) == "integer" then
		if integers then
			if x == mininteger then return "0x8000000000000000" end
			return ("%d"):format(x)
		end
		return ("%.0f"):format(x)       -- an integral double: exact
	end
	return float_text(x)
end
M.number_text = number_text

-- ---------------------------------------------------------------------------
-- format
-- ---------------------------------------------------------------------------

local RESERVED = {}
for w in ([[and break do else elseif end false for function goto if in
	local nil not or repeat return then true until while]]):gmatch("%a+") do
	RESERVED[w] = true
end

local function is_name(k)
	return type(k) == "string" and k:find("^[A-Za-z_][A-Za-z0-9_]*$") ~= nil and not RESERVED[k]
end

local function int64_text(v)
	local s = tostring(v)
	if s:find("^%-?%d+U?LL$") then return s end
	return nil
end

local RANK = { boolean = 1, number = 2, string = 3, cdata = 4, table = 5 }

local OPTS = { indent = true, max_depth = true, max_bytes = true }

local TRUNCATED = {}   -- raised to stop at max_bytes

local render

-- The sort key of a table key: its rank, and a value comparable within it.
local function key_order(k, cache)
	local t = type(k)
	if t == "boolean" then return 1, k and 1 or 0 end
	if t == "number" then return 2, k end
	if t == "string" then return 3, k end
	if t == "cdata" then return 4, tostring(k) end
	if t ~= "table" then return 6, tostring(k) end   -- raises when written
	local s = cache[k]
	if not s then
		s = render(k, nil, nil, nil)
		cache[k] = s
	end
	return 5, s
end

local function sorted_keys(t, n, cache)
	local keys, m = {}, 0
	for k in next, t do
		if not (math_type(k) == "integer" and k >= 1 and k <= n) then
			m = m + 1
			keys[m] = k
		end
	end
	if m > 1 then
		local rank, val = {}, {}
		for i = 1, m do
			local k = keys[i]
			local r, v = key_order(k, cache)
			rank[k], val[k] = r, v
		end
		sort(keys, function(a, b)
			local ra, rb = rank[a], rank[b]
			if ra ~= rb then return ra < rb end
			return val[a] < val[b]
		end)
	end
	return keys, m
end

local function path_index(path, k)
	if is_name(k) then return path .. "." .. k end
	if type(k) == "string" then return path .. "[" .. quote_string(k) .. "]" end
	if type(k) == "number" then return path .. "[" .. number_text(k) .. "]" end
	return path .. "[" .. tostring(k) .. "]"
end

-- The text before a class instance's table: its name when that is
-- identifiers joined by dots, else <class "name">.
local function class_prefix(name)
	local dotted = true
	for part in (name .. "."):gmatch("([^.]*)%.") do
		if not is_name(part) then dotted = false; break end
	end
	if dotted then return name end
	return "<class " .. quote_string(name) .. ">"
end

-- Render v: indent (string or nil), max_depth, max_bytes (numbers or nil).
function render(v, indent, max_depth, max_bytes)
	-- Pass 1: how many times each table is reached.
	local seen = {}
	local function count(x)
		if type(x) ~= "table" then return end
		local c = seen[x]
		if c then seen[x] = c + 1; return end
		seen[x] = 1
		for k, y in next, x do count(k); count(y) end
	end
	count(v)

	local out, n, bytes = {}, 0, 0
	local labels, nlabels = {}, 0
	local cache = {}
	local function emit(s)
		n = n + 1
		out[n] = s
		bytes = bytes + #s
		if max_bytes and bytes > max_bytes then error(TRUNCATED, 0) end
	end

	local put
	local function put_table(t, depth, path)
		local label = labels[t]
		if label then emit("<ref " .. label .. ">"); return end
		local len = 0
		while rawget(t, len + 1) ~= nil do len = len + 1 end
		local keys, m = sorted_keys(t, len, cache)
		if max_depth and depth >= max_depth then
			emit(("<truncated: max_depth %d, %d %s>"):format(max_depth, len + m,
				len + m == 1 and "entry" or "entries"))
			return
		end
		if seen[t] > 1 then
			nlabels = nlabels + 1
			labels[t] = nlabels
			emit("<" .. nlabels .. ">")
		end
		local cname = M.class_name and M.class_name(t)
		if cname then emit(class_prefix(cname)) end
		if len + m == 0 then emit("{}"); return end
		local sep, open, close
		if indent then
			local inner = "\n" .. indent:rep(depth + 1)
			open, sep, close = "{" .. inner, "," .. inner, ",\n" .. indent:rep(depth) .. "}"
		else
			open, sep, close = "{", ", ", "}"
		end
		emit(open)
		for i = 1, len do
			if i > 1 then emit(sep) end
			put(rawget(t, i), depth + 1, path_index(path, i))
		end
		for i = 1, m do
			if len + i > 1 then emit(sep) end
			local k = keys[i]
			if is_name(k) then
				emit(k)
				emit(" = ")
			else
				emit("[")
				put(k, depth + 1, "a key of " .. path)
				emit("] = ")
			end
			put(rawget(t, k), depth + 1, path_index(path, k))
		end
		emit(close)
	end

	function put(x, depth, path)
		local t = type(x)
		if t == "string" then emit(quote_string(x))
		elseif t == "number" then emit(number_text(x))
		elseif t == "boolean" or t == "nil" then emit(tostring(x))
		elseif t == "table" then put_table(x, depth, path)
		else
			local s = t == "cdata" and int64_text(x)
			if not s then error(("cannot format a %s at %s"):format(t, path), 0) end
			emit(s)
		end
	end

	local ok, err = pcall(put, v, 0, "value")
	if not ok then
		if err ~= TRUNCATED then error(err, 0) end
		local last = out[n]
		bytes = bytes - #last
		local kept = ""
		if last:sub(1, 1) == '"' then
			-- a string keeps its head, cut between escapes and characters
			local room, i = max_bytes - bytes, 1
			while true do
				local c = byte(last, i)
				local l = c == 92 and (last:find("^\\%d%d%d", i) and 4 or 2)
					or c >= 0xC0 and (c >= 0xF0 and 4 or c >= 0xE0 and 3 or 2) or 1
				if i + l - 1 > room then break end
				i = i + l
			end
			kept = last:sub(1, i - 1)
		end
		out[n] = kept .. ((n > 1 or kept ~= "") and " " or "") .. ("<truncated: max_bytes %d>"):format(max_bytes)
	end
	return concat(out, "", 1, n)
end

--- format(value [, opts]) -> string. opts: indent (a number of spaces or a
-- string: one item a line, indented; default: one line), max_depth (tables
-- nested deeper are truncated), max_bytes (the text stops before the token
-- that would pass it). Raises for what cannot be stored, naming the path.
function M.format(value, opts)
	local indent, max_depth, max_bytes
	if opts ~= nil then
		if type(opts) ~= "table" then
			error(("bad argument #2 to 'format' (table expected, got %s)"):format(type(opts)), 2)
		end
		for k in next, opts do
			if not OPTS[k] then
				error(("bad argument #2 to 'format' (unknown option '%s')"):format(tostring(k)), 2)
			end
		end
		indent, max_depth, max_bytes = opts.indent, opts.max_depth, opts.max_bytes
		if type(indent) == "number" then
			if math_type(indent) ~= "integer" or indent < 0 then
				error("bad argument #2 to 'format' (indent must be an integer >= 0 or a string)", 2)
			end
			indent = (" "):rep(indent)
		elseif indent ~= nil and type(indent) ~= "string" then
			error("bad argument #2 to 'format' (indent must be an integer >= 0 or a string)", 2)
		end
		if max_depth ~= nil and (math_type(max_depth) ~= "integer" or max_depth < 0) then
			error("bad argument #2 to 'format' (max_depth must be an integer >= 0)", 2)
		end
		if max_bytes ~= nil and (math_type(max_bytes) ~= "integer" or max_bytes < 1) then
			error("bad argument #2 to 'format' (max_bytes must be an integer >= 1)", 2)
		end
	end
	local ok, s = pcall(render, value, indent, max_depth, max_bytes)
	if not ok then error("instate.format: " .. tostring(s), 2) end
	return s
end

-- ---------------------------------------------------------------------------
-- parse: a data-only reader of Lua literals and JSON
-- ---------------------------------------------------------------------------

local PARSE_ERROR = {}

local SIMPLE_ESC = { n = "\n", t = "\t", r = "\r", a = "\a", b = "\b", f = "\f", v = "\v",
	["\\"] = "\\", ['"'] = '"', ["'"] = "'", ["/"] = "/", ["\n"] = "\n" }

-- The UTF-8 bytes of code point c (0 <= c < 2^31, as Lua 5.3's \u{}).
local function utf8_char(c)
	if c < 0x80 then return char(c) end
	if c < 0x800 then return char(0xC0 + floor(c / 64), 0x80 + c % 64) end
	if c < 0x10000 then
		return char(0xE0 + floor(c / 4096), 0x80 + floor(c / 64) % 64, 0x80 + c % 64)
	end
	return char(0xF0 + floor(c / 262144), 0x80 + floor(c / 4096) % 64,
		0x80 + floor(c / 64) % 64, 0x80 + c % 64)
end

--- parse(text) -> value | nil, message, "CORRUPT". Reads what format
-- writes (labels and references included) and JSON; runs nothing.
-- The message names the byte offset (from 0) at fault.
function M.parse(text)
	if type(text) ~= "string" then
		error(("bad argument #1 to 'parse' (string expected, got %s)"):format(type(text)), 2)
	end
	local pos, len = 1, #text
	local labels = {}
	local max_depth = M.max_depth

	local function fail(msg, at)
		error({ PARSE_ERROR, ("%s at byte %d"):format(msg, (at or pos) - 1) }, 0)
	end

	local function skip()
		while true do
			local _, e = text:find("^[ \t\r\n\f\v]+", pos)
			if e then pos = e + 1 end
			if text:sub(pos, pos + 1) ~= "--" then return end
			local level = text:match("^%[(=*)%[", pos + 2)
			if level then
				local close = "]" .. level .. "]"
				local _, ce = text:find(close, pos, true)
				if not ce then fail("unfinished long comment") end
				pos = ce + 1
			else
				local nl = text:find("\n", pos, true)
				pos = nl and nl + 1 or len + 1
			end
		end
	end

	local function peek() return text:sub(pos, pos) end

	local function describe(at)
		if at > len then return "the end of the text" end
		local c = text:sub(at, at)
		if c:find("^[%w%p ]$") then return "'" .. c .. "'" end
		return ("byte %d"):format(byte(c))
	end

	local function long_string(at)
		local level = text:match("^%[(=*)%[", at)
		local start = at + #level + 2
		local close = "]" .. level .. "]"
		local s, e = text:find(close, start, true)
		if not s then fail("unfinished long string", at) end
		local body = text:sub(start, s - 1)
		if body:sub(1, 2) == "\r\n" or body:sub(1, 2) == "\n\r" then body = body:sub(3)
		elseif body:sub(1, 1) == "\n" or body:sub(1, 1) == "\r" then body = body:sub(2) end
		pos = e + 1
		return body
	end

	local function short_string()
		local q, start = peek(), pos
		local parts, np = {}, 0
		pos = pos + 1
		local stop = q == '"' and '[\\"\n\r]' or "[\\'\n\r]"
		while true do
			local s = text:find(stop, pos)
			if not s then fail("unfinished string", start) end
			if s > pos then np = np + 1; parts[np] = text:sub(pos, s - 1) end
			local c = text:sub(s, s)
			if c == q then pos = s + 1; return concat(parts) end
			if c ~= "\\" then fail("unfinished string", start) end
			local e = text:sub(s + 1, s + 1)
			local piece
			pos = s + 2
			if SIMPLE_ESC[e] then
				piece = SIMPLE_ESC[e]
			elseif e == "\r" then
				piece = "\n"
				if text:sub(pos, pos) == "\n" then pos = pos + 1 end
			elseif e:find("^%d$") then
				local d = text:match("^%d%d?%d?", s + 1)
				local b = tonumber(d)
				if b > 255 then fail("decimal escape too large", s) end
				piece, pos = char(b), s + 1 + #d
			elseif e == "x" then
				local h = text:match("^%x%x", pos)
				if not h then fail("hexadecimal digits expected after \\x", s) end
				piece, pos = char(tonumber(h, 16)), pos + 2
			elseif e == "z" then
				local _, ze = text:find("^[ \t\r\n\f\v]*", pos)
				pos = ze + 1
				piece = ""
			elseif e == "u" then
				local h = text:match("^{(%x+)}", pos)
				if h then
					local c = tonumber(h, 16)
					if #h > 8 or c >= 2 ^ 31 then fail("UTF-8 value too large", s) end
					piece, pos = utf8_char(c), pos + #h + 2
				else
					h = text:match("^%x%x%x%x", pos)
					if not h then fail("\\u{X} or \\uXXXX expected", s) end
					local c = tonumber(h, 16)
					pos = pos + 4
					if c >= 0xD800 and c <= 0xDBFF then
						local lo = text:match("^\\u(%x%x%x%x)", pos)
						lo = lo and tonumber(lo, 16)
						if not lo or lo < 0xDC00 or lo > 0xDFFF then
							fail("a high surrogate without its low surrogate", s)
						end
						c = 0x10000 + (c - 0xD800) * 1024 + (lo - 0xDC00)
						pos = pos + 6
					elseif c >= 0xDC00 and c <= 0xDFFF then
						fail("a low surrogate without its high surrogate", s)
					end
					piece = utf8_char(c)
				end
			else
				fail("invalid escape \\" .. (e == "" and "" or e), s)
			end
			np = np + 1
			parts[np] = piece
		end
	end

	local function number()
		local start = pos
		local tok = text:match("^%-?0[xX]%x+", pos)
		if not tok then
			tok = text:match("^%-?%d*%.?%d*", pos)
			local ex = text:match("^[eE][%+%-]?%d+", pos + #tok)
			if ex then tok = tok .. ex end
		end
		local v = tonumber(tok)
		if not v or text:find("^[%w_%.]", pos + #tok) then
			local bad = text:match("^[%w_%.%+%-]+", pos) or tok
			fail("malformed number '" .. bad .. "'", start)
		end
		pos = pos + #tok
		if tok:find("^%-?%d+$") then
			-- a decimal integer that has no exact value here is refused
			if integers then
				if math_type(v) ~= "integer" then fail("integer out of range '" .. tok .. "'", start) end
			else
				local norm = tok:gsub("^(%-?)0+(%d)", "%1%2")
				if ("%.0f"):format(v) ~= norm and norm ~= "-0" then
					fail("integer not exact on " .. _VERSION .. " '" .. tok .. "'", start)
				end
			end
		end
		local save = pos
		skip()
		if peek() == "/" then
			pos = pos + 1
			skip()
			local d = text:match("^0%.?0*", pos)
			if not d or text:find("^[%w_%.]", pos + #d) or (v ~= 1 and v ~= -1 and v ~= 0) then
				fail("only 1/0, -1/0 and 0/0 may divide", start)
			end
			pos = pos + #d
			if v == 0 then return 0 / 0 end
			return v / 0
		end
		pos = save
		return v
	end

	local value

	local function table_body(t, depth)
		local index = 1
		local start = pos
		pos = pos + 1
		while true do
			skip()
			local c = peek()
			if c == "}" then pos = pos + 1; return t end
			if c == "" then fail("'}' expected (the table began at byte " .. (start - 1) .. "), got the end of the text") end
			local k, v
			local at = pos
			local name = text:match("^[A-Za-z_][A-Za-z0-9_]*", pos)
			if c == "[" and not text:find("^%[=*%[", pos) then
				pos = pos + 1
				k = value(depth + 1)
				skip()
				if peek() ~= "]" then fail("']' expected, got " .. describe(pos)) end
				pos = pos + 1
				skip()
				if peek() ~= "=" then fail("'=' expected, got " .. describe(pos)) end
				pos = pos + 1
				v = value(depth + 1)
			elseif name and not RESERVED[name] and name ~= "null"
				and text:find("^[ \t\r\n\f\v]*=[^=]", pos + #name) then
				pos = pos + #name
				skip()
				pos = pos + 1
				k, v = name, value(depth + 1)
			else
				v = value(depth + 1)
				skip()
				if peek() == ":" then
					if type(v) ~= "string" then fail("an object key must be a string", at) end
					pos = pos + 1
					k, v = v, value(depth + 1)
				else
					k, index = index, index + 1
				end
			end
			if k == nil then fail("a table key is nil", at) end
			if k ~= k then fail("a table key is NaN", at) end
			if rawget(t, k) ~= nil then fail("duplicate key " .. (type(k) == "string"
				and quote_string(k) or tostring(k)), at) end
			t[k] = v
			skip()
			c = peek()
			if c == "," or c == ";" then
				pos = pos + 1
			elseif c ~= "}" then
				if text:find("^<truncated", pos) then fail("a truncated value cannot be read") end
				fail("',' or '}' expected, got " .. describe(pos))
			end
		end
	end

	local function json_array(depth)
		local t, n = {}, 0
		local start = pos
		pos = pos + 1
		skip()
		if peek() == "]" then pos = pos + 1; return t end
		while true do
			n = n + 1
			t[n] = value(depth + 1)
			skip()
			local c = peek()
			if c == "]" then pos = pos + 1; return t end
			if c ~= "," then
				if text:find("^<truncated", pos) then fail("a truncated value cannot be read") end
				fail("',' or ']' expected (the array began at byte " .. (start - 1) .. "), got " .. describe(pos))
			end
			pos = pos + 1
		end
	end

	-- A class prefix at pos (Name.Sub or <class "name">) followed by a
	-- table: its metatable, pos past the prefix; else nil, pos unchanged.
	local function class_prefix_at()
		local at, name = pos, nil
		if text:find("^<class[ \t]", pos) then
			pos = pos + 6
			skip()
			if peek() ~= '"' and peek() ~= "'" then fail("a class name expected after <class", at) end
			name = short_string()
			skip()
			if peek() ~= ">" then fail("'>' expected after the class name, got " .. describe(pos)) end
			pos = pos + 1
		else
			local e = pos
			while true do
				local _, ne = text:find("^[A-Za-z_][A-Za-z0-9_]*", e)
				if not ne then return nil end
				e = ne + 1
				if text:sub(e, e) ~= "." then break end
				e = e + 1
			end
			local _, be = text:find("^[ \t\r\n\f\v]*{", e)
			if not be then return nil end
			name = text:sub(pos, e - 1)
			pos = e
		end
		skip()
		if peek() ~= "{" then fail("a table expected after the class name", at) end
		local mt = M.class_metatable and M.class_metatable(name)
		if not mt then fail("unknown class " .. quote_string(name) .. " (not registered)", at) end
		return mt
	end

	function value(depth)
		if depth > max_depth then fail("nested deeper than " .. max_depth .. " tables") end
		skip()
		local c = peek()
		if c == "{" then return table_body({}, depth) end
		local mt = (c == "<" or c:find("^[A-Za-z_]$")) and class_prefix_at()
		if mt then return setmetatable(table_body({}, depth), mt) end
		if c == '"' or c == "'" then return short_string() end
		if c == "[" then
			if text:find("^%[=*%[", pos) then return long_string(pos) end
			return json_array(depth)
		end
		if c == "-" or c == "." or c:find("^%d$") then return number() end
		if c == "<" then
			local at = pos
			local label = text:match("^<(%d+)>", pos)
			if label then
				pos = pos + #label + 2
				skip()
				local cmt = class_prefix_at()
				if peek() ~= "{" then fail("a table expected after the label <" .. label .. ">") end
				if labels[label] then fail("label <" .. label .. "> defined twice", at) end
				local t = {}
				labels[label] = t
				table_body(t, depth)
				if cmt then setmetatable(t, cmt) end
				return t
			end
			local ref = text:match("^<ref (%d+)>", pos)
			if ref then
				if not labels[ref] then fail("<ref " .. ref .. "> before its label", at) end
				pos = pos + #ref + 6
				return labels[ref]
			end
			if text:find("^<truncated", pos) then
				fail("a truncated value cannot be read")
			end
			fail("unexpected '<'")
		end
		local name = text:match("^[A-Za-z_][A-Za-z0-9_]*", pos)
		if name then
			if name == "nil" or name == "null" then pos = pos + #name; return nil end
			if name == "true" then pos = pos + 4; return true end
			if name == "false" then pos = pos + 5; return false end
			fail("unexpected name '" .. name .. "' (values are nil, booleans, numbers, strings and tables)")
		end
		fail("a value expected, got " .. describe(pos))
	end

	local ok, v = pcall(function()
		local r = value(1)
		skip()
		if pos <= len then fail("unexpected " .. describe(pos) .. " after the value") end
		return r
	end)
	if ok then return v end
	if type(v) == "table" and v[1] == PARSE_ERROR then return nil, v[2], "CORRUPT" end
	error(v, 0)
end

return M
