-- The walk behind save_all's "may have changed" test
-- (instate._fingerprint, and _fingerprint_pick, which save_all calls once
-- per save): what it computes is fixed (the bytes fingerprint of a restored
-- record must stay exactly the walk's), so however it computes it, its
-- answers are checked here against an independent implementation of the
-- formula in Lua (where Lua has 64-bit integers), on shared tables, cycles,
-- metatables, deep nesting, huge arrays and mixed tables; and save_all
-- must save an in-place edit anywhere in such values.
local helpers = require "helpers"
local instate = require "instate"

local fp = instate._fingerprint
local has_int64 = math.type ~= nil and math.type(1) == "integer" and math.maxinteger == 9223372036854775807
-- A metatable's identity is hashed as its address: string.format's %p
-- gives it on 5.4 only.
local has_p = has_int64 and pcall(string.format, "%p", {})

-- ---------------------------------------------------------------------
-- The formula (src/lfingerprint.c), written again from its description;
-- loaded from a string so that older Luas, which cannot parse the
-- operators, still run the rest of this file.
-- ---------------------------------------------------------------------
local reference
if has_int64 then
  reference = assert((loadstring or load)([==[
    local has_p = ...
    local TAG_NIL, TAG_FALSE, TAG_TRUE = 0x6e696c0000000001, 0x626f6f6c00000002, 0x626f6f6c00000003
    local TAG_INT, TAG_FLT, TAG_STR = 0x696e740000000004, 0x666c740000000005, 0x7374720000000006
    local TAG_TAB, TAG_REF, TAG_GRAPH = 0x7461620000000007, 0x7265660000000008, 0x6772610000000009
    local GOLD, PRIME1, PRIME2 = 0x9e3779b97f4a7c15, 0x9e3779b185ebca87, 0xc2b2ae3d27d4eb4f
    local unpack, pack, byte = string.unpack, string.pack, string.byte

    local function fmix(x)
      x = x ~ (x >> 33)
      x = x * 0xff51afd7ed558ccd
      x = x ~ (x >> 33)
      x = x * 0xc4ceb9fe1a85ec53
      return x ~ (x >> 33)
    end
    local function mix2(a, b) return fmix(a * GOLD ~ b) end
    local function load64(s, i) return (unpack("<i8", s, i)) end
    local function load32(s, i) return (unpack("<I4", s, i)) end
    local function rotl(x, r) return x << r | x >> (64 - r) end
    local function round(h, w) return rotl(h ~ w * PRIME2, 31) * PRIME1 end

    local function str(s)
      local n = #s
      local h = TAG_STR ~ n * GOLD
      if n <= 16 then
        local a, b = 0, 0
        if n >= 8 then
          a, b = load64(s, 1), load64(s, n - 7)
        elseif n >= 4 then
          a = load32(s, 1) | load32(s, n - 3) << 32
        elseif n > 0 then
          a = byte(s, 1) | byte(s, (n >> 1) + 1) << 8 | byte(s, n) << 16
        end
        return fmix((a ~ h) * PRIME1 ~ b)
      end
      local i = 1
      while n > 8 do
        h = round(h, load64(s, i))
        i, n = i + 8, n - 8
      end
      return fmix(round(h, load64(s, i + n - 8)))
    end

    local function num(x)
      if math.type(x) == "integer" then return mix2(TAG_INT, x) end
      return mix2(TAG_FLT, (unpack("<i8", pack("<d", x))))
    end

    local function address(mt)
      if not mt then return 0 end
      assert(has_p, "a metatable's address needs string.format's %p")
      return math.tointeger(tonumber(string.format("%p", mt)))
    end

    -- graph: nil for the first mode (a table met twice: the walk starts
    -- again), else the numbers given to tables at their first visit.
    local function value(v, depth, st)
      local t = type(v)
      if t == "string" then return str(v) end
      if t == "number" then return num(v) end
      if t == "boolean" then return v and TAG_TRUE or TAG_FALSE end
      if t == "nil" then return TAG_NIL end
      if t ~= "table" then return nil, "none" end
      if depth > 200 then return nil, "none" end
      if st.seen[v] then
        if not st.ids then return nil, "repeat" end
        return mix2(TAG_REF, st.seen[v])
      end
      local id = st.next_id
      st.seen[v] = id
      st.next_id = id + 1
      local sum, count = 0, 0
      for k, x in next, v do
        local hk, why = value(k, depth + 1, st)
        if not hk then return nil, why end
        local hv, why2 = value(x, depth + 1, st)
        if not hv then return nil, why2 end
        sum = sum + mix2(hk, hv)
        count = count + 1
      end
      local h = mix2(mix2(mix2(TAG_TAB, count), sum), address(debug.getmetatable(v)))
      if st.ids then h = mix2(h, id) end
      return h
    end

    return function(v)
      local h, why = value(v, 0, { seen = {}, next_id = 0 })
      if why == "repeat" then
        h, why = value(v, 0, { seen = {}, next_id = 0, ids = true })
        if h then h = mix2(TAG_GRAPH, h) end
      end
      return h
    end
  ]==], "=reference"))(has_p)
end

-- ---------------------------------------------------------------------
-- The values
-- ---------------------------------------------------------------------
local function chain(depth, leaf)
  local t = leaf or { last = true }
  for i = 1, depth - 1 do t = { i, t } end
  return t
end

local function cases()
  local c = {}
  -- tree: no table met twice, no metatable (the bytes fingerprint of its
  -- encoding is the walk's too)
  local tree = true
  local function add(name, v) c[#c + 1] = { name, v, tree } end
  add("flat map", { x = 1.5, y = -3, name = "item-123", hp = 100, alive = true })
  add("a game variable with tags", { x = 2, name = "n", tags = { "a", "b", "fire" } })
  add("inventory", { inventory = { { id = 1, count = 2 }, { id = 7, count = 1 } } })
  add("empty", {})
  add("array", { 1, 2, 3, "four", false })
  add("holes", { [1] = 1, [3] = 3, [10] = 10 })
  local big = {}
  for i = 1, 70000 do big[i] = i % 7 == 0 and ("s" .. i) or i end
  add("huge array", big)
  local mixed = { 1, 2, 3, a = "a", [1.5] = "f", [-1] = "neg", [true] = { 1 } }
  for i = 4, 300 do mixed[i] = i * 2 end
  for i = 1, 300 do mixed["k" .. i] = { i } end
  add("mixed", mixed)
  add("long strings", { ("x"):rep(17), ("y"):rep(300), [("k"):rep(40)] = "" })
  add("table key", { [{ 1, 2 }] = "a", [{ x = {} }] = { y = 1 } })
  add("deep, 200 levels", chain(200))
  -- (the codec refuses a table 200 levels below the top, where the walk
  -- still hashes it; one more and the walk has none either)
  tree = false
  add("deep, at the walk's limit", chain(201))
  add("deep, past the walk's limit", chain(202))
  add("deep map of maps", (function()
    local t = { v = 0 }
    for i = 1, 150 do t = { v = i, next = t, s = "level" .. i } end
    return t
  end)())
  -- shared tables and cycles: the second mode
  local leaf = { 1, 2 }
  add("shared leaf", { a = leaf, b = leaf })
  add("shared leaf in an array", { leaf, leaf, leaf })
  local self = { x = 1 }
  self.self = self
  add("cycle to the top, as a value", self)
  local kself = { x = 1 }
  kself[kself] = true
  add("cycle to the top, as a key", kself)
  local a, b = { name = "a" }, { name = "b" }
  a.peer, b.peer = b, a
  add("cycle below the top", { a = a, n = 1 })
  local deepcyc = chain(50)
  local t = deepcyc
  while t[2] do t = t[2] end
  t.back = deepcyc
  add("cycle from deep down to the top", deepcyc)
  -- the top met again at the depth limit (200: a graph) and past it
  -- (none), through values and through keys only
  for _, d in ipairs({ 199, 200 }) do
    local top = { 1 }
    local t = top
    for _ = 1, d do
      local c = { 1 }
      t[2] = c
      t = c
    end
    t[2] = top
    add("cycle to the top at depth " .. (d + 1) .. ", as a value", top)
    local ktop = {}
    t = ktop
    for _ = 1, d do
      local c = {}
      t[c] = true
      t = c
    end
    t[ktop] = true
    add("cycle to the top at depth " .. (d + 1) .. ", through keys", ktop)
  end
  local sub = { z = 1 }
  add("shared at two depths", { sub, { { sub } } })
  add("a shared table as key and value", { [sub] = sub })
  -- values the walk cannot describe
  add("function", { f = print })
  add("function as key", { [print] = 1 })
  if has_p then
    local mt = { __index = {} }
    add("metatable at the top", setmetatable({ 1, 2 }, mt))
    add("metatables below, shared", { setmetatable({}, mt), setmetatable({ x = 1 }, mt) })
    add("metatable on a shared table", (function()
      local s = setmetatable({ q = 1 }, mt)
      return { s, s }
    end)())
  end
  return c
end

describe("the fingerprint walk", function()
  -- (where Lua has no 64-bit integers, the trees are checked against the
  -- bytes fingerprint below, the rest for stability and distinctness)
  if reference then it("gives what the formula gives, on shared tables, cycles, metatables, deep nesting, huge arrays, mixed tables", function()
    for _, case in ipairs(cases()) do
      local name, v = case[1], case[2]
      assert.are.equal(reference(v), fp(v), name)
      -- and the same again (the set of tables met is reused from walk to walk)
      assert.are.equal(reference(v), fp(v), name .. ", again")
    end
    assert.is_not_nil(fp(chain(201)))
    assert.is_nil(fp(chain(202)))
    for _, case in ipairs(cases()) do
      if case[1]:match("^cycle to the top at depth 200") then
        assert.is_not_nil(fp(case[2]), case[1])
      elseif case[1]:match("^cycle to the top at depth 201") then
        assert.is_nil(fp(case[2]), case[1])
      end
    end
  end) end

  it("gives a tree what the fingerprint of its encoding gives, on every Lua", function()
    local n = 0
    for _, case in ipairs(cases()) do
      if case[3] then
        local bytes = instate.encode(case[2])
        assert.are.equal(instate._fingerprint_bytes(bytes), fp(case[2]), case[1])
        assert.is_not_nil(fp(case[2]), case[1])
        n = n + 1
      end
    end
    assert.are.equal(11, n)
  end)

  it("tells apart what the codec tells apart, in both modes, on every Lua", function()
    local leaf = { 1, 2 }
    local shared, copied = { a = leaf, b = leaf }, { a = { 1, 2 }, b = { 1, 2 } }
    assert.are_not.equal(fp(shared), fp(copied))
    local self = { x = 1 }
    self.self = self
    local other = { x = 1 }
    other.self = { x = 1, self = other }
    assert.is_not_nil(fp(self))
    assert.are_not.equal(fp(self), fp(other))
    local before = fp(self)
    self.x = 2
    assert.are_not.equal(before, fp(self))
    local before2 = fp(shared)
    leaf[2] = 3
    assert.are_not.equal(before2, fp(shared))
    -- the top met again through a key
    local kself = { x = 1 }
    kself[kself] = true
    local kother = { x = 1 }
    kother[{ x = 1 }] = true
    assert.are_not.equal(fp(kself), fp(kother))
    for _, case in ipairs(cases()) do
      assert.are.equal(fp(case[2]), fp(case[2]), case[1])
    end
  end)
end)

describe("save_all over values of every shape", function()
  local dir
  before_each(function() dir = helpers.tmpdir() end)
  after_each(function() instate.teardown() end)

  -- An edit in place (edit(v) on the variable's table) is saved, in the
  -- run that declared the variable and in a later one that restored it.
  local stores = 0
  local function saves_edit(make, edit, check)
    instate.teardown()
    stores = stores + 1
    local path = dir .. "/s" .. stores
    assert(instate.setup(path))
    local var = instate.defstate("v", make())
    assert(instate.save_all())
    edit(var:get())
    local rev = assert(instate.save_all())
    instate.teardown()
    assert(instate.setup(path))
    var = instate.defstate("v", make())
    check(var:get())
    -- restored, read, edited again
    edit(var:get())
    assert.is_true(assert(instate.save_all()) > rev)
    instate.teardown()
    assert(instate.setup(path))
    var = instate.defstate("v", make())
    return var:get()
  end

  it("saves an edit inside a shared table, a cycle, a deep chain, a huge array and a mixed table", function()
    local v = saves_edit(function()
      local leaf = { n = 0 }
      return { a = leaf, b = leaf }
    end, function(t) t.a.n = t.a.n + 1 end, function(t)
      assert.are.equal(1, t.a.n)
      assert.are.equal(t.a, t.b)
    end)
    assert.are.equal(2, v.a.n)
    assert.are.equal(v.a, v.b)

    v = saves_edit(function()
      local t = { n = 0 }
      t.self = t
      return t
    end, function(t) t.n = t.n + 1 end, function(t)
      assert.are.equal(1, t.n)
      assert.are.equal(t, t.self)
    end)
    assert.are.equal(2, v.n)

    v = saves_edit(function() return chain(150, { n = 0 }) end, function(t)
      while t[2] do t = t[2] end
      t.n = t.n + 1
    end, function(t)
      while t[2] do t = t[2] end
      assert.are.equal(1, t.n)
    end)
    while v[2] do v = v[2] end
    assert.are.equal(2, v.n)

    v = saves_edit(function()
      local t = {}
      for i = 1, 50000 do t[i] = i end
      return t
    end, function(t) t[40000] = t[40000] + 1 end, function(t) assert.are.equal(40001, t[40000]) end)
    assert.are.equal(40002, v[40000])

    v = saves_edit(function()
      local t = { 1, 2, 3, a = { b = { c = 0 } }, [2.5] = "x" }
      return t
    end, function(t) t.a.b.c = t.a.b.c + 1 end, function(t) assert.are.equal(1, t.a.b.c) end)
    assert.are.equal(2, v.a.b.c)
  end)

  it("saves a table that becomes shared, or a cycle, by an edit in place; and one that stops being", function()
    local v = saves_edit(function() return { a = { 1 }, b = false } end,
      function(t) if t.b then t.b = false else t.b = t.a end end,
      function(t) assert.are.equal(t.a, t.b) end)
    assert.is_false(v.b)
    v = saves_edit(function() return { x = 1 } end,
      function(t) if t.self then t.self = nil else t.self = t end end,
      function(t) assert.are.equal(t, t.self) end)
    assert.is_nil(v.self)
  end)
end)
