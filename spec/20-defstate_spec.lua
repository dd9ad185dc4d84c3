-- defstate variables: setup, declaration and restore, save_all, reload_all,
-- transaction, vars, teardown, versions and validation, and every misuse.
local helpers = require "helpers"
local instate = require "instate"
local compat = require "instate.compat"

-- A store path under a fresh temporary directory.
local function new_path()
  return helpers.tmpdir() .. "/save"
end

-- A new run of the same program: forget everything, set up again.
local function restart(path, opts) return helpers.restart(instate, path, opts) end

-- The raw record of a variable, read around the defstate layer.
local function record(store, name, nsname)
  return store:namespace(nsname or "state", "state"):get_encoded(name)
end

local errmsg = helpers.errmsg

local ns_methods = helpers.ns_methods

-- Count the values encoded while fn runs: instate.encode calls, plus the
-- values handed to ns:save_many (which encodes each one in C).
local function count_encodes(fn)
  local methods = ns_methods()
  local real, real_save, n = instate.encode, methods.save_many, 0
  instate.encode = function(...) n = n + 1; return real(...) end
  methods.save_many = function(ns, count, ...) n = n + count; return real_save(ns, count, ...) end
  local ok, err = pcall(fn)
  instate.encode, methods.save_many = real, real_save
  assert(ok, err)
  return n
end

describe("defstate", function()
  after_each(function() instate.teardown() end)

  describe("setup", function()
    it("opens the store and returns it; the same path returns the same store", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      assert.are.equal(path, store:path())
      assert.are.equal(store, instate.setup(path))
      instate.defstate("a", 1)
      assert.are.equal(store, instate.setup(path))
    end)

    it("refuses another path while variables exist", function()
      local path, other = new_path(), new_path()
      assert(instate.setup(path))
      instate.defstate("a", 1)
      local msg = errmsg(instate.setup, other)
      assert.matches("variables are declared in " .. path, msg, 1, true)
      assert.matches("instate.teardown()", msg, 1, true)
    end)

    it("switches to another path while no variables exist", function()
      local path, other = new_path(), new_path()
      local s1 = assert(instate.setup(path))
      local s2 = assert(instate.setup(other))
      assert.are_not.equal(s1, s2)
      assert.are.equal(other, s2:path())
      assert.has_error(function() s1:revision() end, "store is closed")
    end)

    it("keeps variables in the namespace given, of type state", function()
      local path = new_path()
      local store = assert(instate.setup(path, { namespace = "game" }))
      instate.defstate("gold", 5)
      instate.save_all()
      assert.are.same({ "game" }, store:namespaces())
      assert.are.equal("\5", record(store, "gold", "game"))
      assert.has_error(function() store:namespace("game", "kv") end,
        "namespace 'game' has type 'state', not 'kv'")
      -- Another namespace holds other variables.
      store = restart(path, { namespace = "other" })
      assert.are.equal(0, instate.defstate("gold", 0):get())
      store = restart(path, { namespace = "game" })
      assert.are.equal(5, instate.defstate("gold", 0):get())
    end)

    it("refuses another namespace while variables exist", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("a", 1)
      assert.matches("variables are declared", errmsg(instate.setup, path, { namespace = "x" }))
    end)

    it("passes the store options to instate.open", function()
      local path = new_path()
      assert(instate.setup(path, { sync = "none" }))
      instate.defstate("a", 1)
      assert.is_number(instate.save_all())
      instate.teardown()
      local ok, err = pcall(instate.setup, new_path(), { sync = "sometimes" })
      assert.is_false(ok)
      assert.matches("bad argument #2 to '", err, 1, true)
      assert.matches([[(option 'sync' must be "full", "nometa" or "none", got "sometimes")]],
        err, 1, true)
      ok, err = pcall(instate.setup, new_path(), { no_such_option = 1 })
      assert.is_false(ok)
      assert.matches("bad argument #2 to '", err, 1, true)
      assert.matches("(unknown option 'no_such_option')", err, 1, true)
    end)

    it("returns nil, message, code when the store cannot be opened", function()
      local dir = helpers.tmpdir()
      helpers.write_file(dir .. "/file", "x")
      local s, msg, code = instate.setup(dir .. "/file/below")
      assert.is_nil(s)
      assert.is_string(msg)
      assert.is_string(code)
      assert.matches(("instate.setup failed: %s (%s)"):format(msg, code),
        errmsg(instate.defstate, "a", 1), 1, true)
    end)

    it("checks its arguments", function()
      assert.matches("bad argument #1 to 'setup' (string expected, got nil)",
        errmsg(instate.setup), 1, true)
      assert.matches("bad argument #1 to 'setup' (path must not be empty)",
        errmsg(instate.setup, ""), 1, true)
      assert.matches("bad argument #2 to 'setup' (table expected, got string)",
        errmsg(instate.setup, new_path(), "x"), 1, true)
      assert.matches("bad argument #2 to 'setup' (namespace must be a non-empty string, got integer)",
        errmsg(instate.setup, new_path(), { namespace = 3 }), 1, true)
      assert.matches("namespace must be a non-empty string, got string",
        errmsg(instate.setup, new_path(), { namespace = "" }), 1, true)
    end)
  end)

  describe("defstate", function()
    it("before setup raises naming the variable and the fix", function()
      local msg = errmsg(function() instate.defstate("score", 0) end)
      assert.matches("instate.defstate: no store for variable 'score'; call instate.setup(path) first", msg, 1, true)
      assert.matches("20%-defstate_spec.lua:%d+:", msg)   -- points at the caller
    end)

    it("starts at the default when nothing is saved", function()
      assert(instate.setup(new_path()))
      local score = instate.defstate("score", 42)
      assert.are.equal(42, score:get())
      assert.are.equal("score", score.name)
      assert.is_false(score:saved())
      assert.is_nil(instate.defstate("nothing"):get())
    end)

    it("uses a table default as the value itself", function()
      assert(instate.setup(new_path()))
      local default = { sword = false }
      local inv = instate.defstate("inventory", default)
      assert.are.equal(default, inv:get())
      inv:get().sword = true
      assert.is_true(default.sword)
    end)

    it("returns the same variable, untouched, when declared again", function()
      assert(instate.setup(new_path()))
      local v = instate.defstate("score", 1)
      v:set(7)
      local again = instate.defstate("score", 100, { version = 3 })
      assert.are.equal(v, again)
      assert.are.equal(7, again:get())
      assert.are.equal(1, again.version)
    end)

    it("restores the saved value in the next run", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("score", 0):set(10)
      instate.defstate("inventory", {}):get().sword = true
      instate.save_all()
      restart(path)
      local score = instate.defstate("score", 0)
      local inv = instate.defstate("inventory", {})
      assert.are.equal(10, score:get())
      assert.are.same({ sword = true }, inv:get())
      assert.is_true(score:saved())
    end)

    it("reads the record itself when the store changed since setup", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      instate.defstate("a", 0):set(1)
      instate.save_all()
      restart(path)
      -- Another writer, after setup read the saved variables.
      local other = assert(instate.open(path))
      other:namespace("state", "state"):set_encoded("b", instate.encode("fresh"))
      other:namespace("state", "state"):set_encoded("a", instate.encode(2))
      other:close()
      assert.are.equal(2, instate.defstate("a", 0):get())
      assert.are.equal("fresh", instate.defstate("b", ""):get())
      assert.is_truthy(store)
    end)

    it("checks its arguments", function()
      assert(instate.setup(new_path()))
      assert.matches("bad argument #1 to 'defstate' (string expected, got integer)",
        errmsg(instate.defstate, 1, 0), 1, true)
      assert.matches("bad argument #1 to 'defstate' (string expected, got nil)",
        errmsg(instate.defstate), 1, true)
      assert.matches("bad argument #1 to 'defstate' (name must not be empty)",
        errmsg(instate.defstate, "", 0), 1, true)
      assert.matches("bad argument #1 to 'defstate' (name is 512 bytes, longer than 511)",
        errmsg(instate.defstate, ("n"):rep(512), 0), 1, true)
      assert.are.equal(0, instate.defstate(("n"):rep(511), 0):get())
      assert.matches("bad argument #3 to 'defstate' (table expected, got string)",
        errmsg(instate.defstate, "a", 0, "v2"), 1, true)
      assert.matches("bad argument #3 to 'defstate' (unknown option 'versoin')",
        errmsg(instate.defstate, "a", 0, { versoin = 2 }), 1, true)
      assert.matches("bad argument #3 to 'defstate' (version must be an integer >= 1, got 0)",
        errmsg(instate.defstate, "a", 0, { version = 0 }), 1, true)
      assert.matches("version must be an integer >= 1, got 1.5",
        errmsg(instate.defstate, "a", 0, { version = 1.5 }), 1, true)
      assert.matches("version must be an integer >= 1, got string",
        errmsg(instate.defstate, "a", 0, { version = "2" }), 1, true)
      assert.matches("bad argument #3 to 'defstate' (migrate must be a function, got boolean)",
        errmsg(instate.defstate, "a", 0, { migrate = true }), 1, true)
      assert.matches("bad argument #3 to 'defstate' (validate must be a function, got table)",
        errmsg(instate.defstate, "a", 0, { validate = {} }), 1, true)
      assert.matches("20%-defstate_spec.lua:%d+:", errmsg(function() instate.defstate("") end))
      -- None of the refused declarations exists.
      local names = {}
      for name in instate.vars() do names[#names + 1] = name end
      assert.are.same({ ("n"):rep(511) }, names)
    end)
  end)

  describe("variables", function()
    it("get, set, update, reset", function()
      assert(instate.setup(new_path()))
      local v = instate.defstate("hp", 100)
      v:set(50)
      assert.are.equal(50, v:get())
      assert.are.equal(45, v:update(function(x) return x - 5 end))
      assert.are.equal(45, v:get())
      v:reset()
      assert.are.equal(100, v:get())
      v:set(nil)
      assert.is_nil(v:get())
    end)

    it("reset installs a fresh copy of the default as declared", function()
      assert(instate.setup(new_path()))
      local v = instate.defstate("inv", { items = { "stick" } })
      v:get().items[2] = "rock"
      v:reset()
      assert.are.same({ items = { "stick" } }, v:get())
      v:get().items[2] = "gem"
      v:reset()
      assert.are.same({ items = { "stick" } }, v:get())
    end)

    it("reset keeps the shape of references in the default", function()
      assert(instate.setup(new_path()))
      local shared = { 1 }
      local d = { a = shared, b = shared }
      d.self = d
      local v = instate.defstate("d", d)
      v:reset()
      local x = v:get()
      assert.are_not.equal(d, x)
      assert.are.equal(x.a, x.b)
      assert.are.equal(x, x.self)
    end)

    it("raises on misuse", function()
      assert(instate.setup(new_path()))
      local v = instate.defstate("hp", 1)
      assert.matches("bad argument #1 to 'update' (function expected, got integer)",
        errmsg(v.update, v, 3), 1, true)
      assert.matches("bad self to 'set' (a variable expected, got integer; call var:set(...))",
        errmsg(v.set, 5), 1, true)
      assert.matches("bad self to 'get'", errmsg(v.get, {}), 1, true)
      assert.matches("bad self to 'reset'", errmsg(v.reset), 1, true)
      assert.matches("bad self to 'saved'", errmsg(v.saved, "hp"), 1, true)
      assert.matches("bad self to 'update'", errmsg(v.update, nil, print), 1, true)
      assert.are.equal("instate.var(hp)", tostring(v))
    end)

    it("saved() raises after teardown", function()
      assert(instate.setup(new_path()))
      local v = instate.defstate("hp", 1)
      instate.teardown()
      assert.matches("variable 'hp' was forgotten by instate.teardown()", errmsg(v.saved, v), 1, true)
    end)

    it("vars() iterates in declaration order", function()
      assert(instate.setup(new_path()))
      local declared = {}
      for i, name in ipairs({ "zeta", "alpha", "mid", "b" }) do
        declared[i] = instate.defstate(name, i)
      end
      instate.defstate("alpha", 0)
      local names, list = {}, {}
      for name, var in instate.vars() do
        names[#names + 1] = name
        list[#list + 1] = var
      end
      assert.are.same({ "zeta", "alpha", "mid", "b" }, names)
      for i = 1, 4 do assert.are.equal(declared[i], list[i]) end
    end)
  end)

  describe("save_all", function()
    it("before setup raises", function()
      assert.matches("instate.save_all: no store; call instate.setup(path) first",
        errmsg(instate.save_all), 1, true)
      assert.matches("instate.reload_all: no store; call instate.setup(path) first",
        errmsg(instate.reload_all), 1, true)
    end)

    it("saves every variable in one transaction and returns the revision", function()
      local store = assert(instate.setup(new_path()))
      local a, b = instate.defstate("a", 1), instate.defstate("b", "x")
      local r0 = store:revision()
      local r1 = instate.save_all()
      assert.are.equal(r0 + 1, r1)
      assert.are.equal(r1, store:revision())
      a:set(2)
      b:set("y")
      assert.are.equal(r1 + 1, instate.save_all())
      assert.are.equal(instate.encode(2), record(store, "a"))
      assert.are.equal(instate.encode("y"), record(store, "b"))
    end)

    it("saves in-place changes to tables", function()
      local path = new_path()
      assert(instate.setup(path))
      local inv = instate.defstate("inventory", {})
      instate.save_all()
      inv:get().sword = true
      inv:get().bag = { "apple", n = 2 }
      instate.save_all()
      restart(path)
      assert.are.same({ sword = true, bag = { "apple", n = 2 } }, instate.defstate("inventory", {}):get())
    end)

    it("saves and restores every kind of storable value", function()
      local path = new_path()
      assert(instate.setup(path))
      local shared = { "s" }
      local cyc = { name = "loop" }
      cyc.me = cyc
      local values = {
        -- the widest integers of this Lua: 64-bit on 5.3/5.4, 2^53 elsewhere
        int = compat.integers and math.maxinteger or 2 ^ 53,
        neg = compat.integers and math.mininteger or -2 ^ 53, f = 0.1, nan = 0 / 0,
        inf = math.huge, ninf = -math.huge, negzero = helpers.neg_zero,
        bin = "\0\1\255" .. ("z"):rep(300), t = true, f2 = false,
        nested = { a = shared, b = shared, [1.5] = "float key", [true] = "bool key" },
        cyc = cyc,
      }
      for k, v in pairs(values) do instate.defstate(k, v) end
      instate.defstate("nothing", "not nil"):set(nil)
      instate.save_all()
      restart(path)
      local got = {}
      for k in pairs(values) do got[k] = instate.defstate(k, "default"):get() end
      assert.are.equal(values.int, got.int)
      assert.are.equal(values.neg, got.neg)
      assert.are.equal("integer", compat.math_type(got.int))
      assert.are.equal(0.1, got.f)
      assert.are.equal(helpers.float_bits(0 / 0), helpers.float_bits(got.nan))
      assert.are.equal(math.huge, got.inf)
      assert.are.equal(-math.huge, got.ninf)
      assert.are.equal(helpers.float_bits(helpers.neg_zero), helpers.float_bits(got.negzero))
      assert.are.equal(values.bin, got.bin)
      assert.is_true(got.t)
      assert.is_false(got.f2)
      assert.are.equal(got.nested.a, got.nested.b)
      assert.are.same({ "s" }, got.nested.a)
      assert.are.equal("float key", got.nested[1.5])
      assert.are.equal("bool key", got.nested[true])
      assert.are.equal(got.cyc, got.cyc.me)
      local nothing = instate.defstate("nothing", "default")
      assert.is_nil(nothing:get())
      assert.is_true(nothing:saved())
    end)

    it("raises naming the variable and path of an unstorable value; writes nothing", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      local gold = instate.defstate("gold", 1)
      local inv = instate.defstate("inventory", { items = {} })
      instate.save_all()
      local rev = store:revision()
      gold:set(2)
      inv:get().items[3] = { on_use = print }
      local msg = errmsg(instate.save_all)
      assert.matches("cannot store a function at inventory.items[3].on_use", msg, 1, true)
      assert.are.equal(rev, store:revision())
      assert.are.equal(instate.encode(1), record(store, "gold"))
      inv:get().items[3] = nil
      assert.are.equal(rev + 1, instate.save_all())
      assert.are.equal(instate.encode(2), record(store, "gold"))
      -- A top-level unstorable value names the variable.
      gold:set(coroutine.create(function() end))
      assert.matches("cannot store a thread at gold", errmsg(instate.save_all), 1, true)
    end)

    it("names a variable whose name is too long to serve as the path root", function()
      local store = assert(instate.setup(new_path()))
      local name = ("long-name-"):rep(8)
      local ok = instate.defstate("ok", 1)
      local long = instate.defstate(name, {})
      instate.save_all()
      ok:set(2)
      long:get().f = print
      local rev = store:revision()
      assert.matches("cannot store a function at " .. name .. ".f", errmsg(instate.save_all), 1, true)
      assert.are.equal(rev, store:revision())
      assert.are.equal(instate.encode(1), record(store, "ok"))
    end)

    it("inside a store transaction that aborts, what it wrote is written again next time", function()
      local store = assert(instate.setup(new_path()))
      local a, t = instate.defstate("a", 1), instate.defstate("t", { 1 })
      instate.save_all()
      a:set(2)
      t:get()[1] = 2
      local ok, err = pcall(store.transaction, store, function()
        instate.save_all()
        error("abort the enclosing transaction")
      end)
      assert.is_false(ok)
      assert.matches("abort the enclosing transaction", err)
      assert.are.equal(instate.encode(1), record(store, "a"))
      instate.save_all()
      assert.are.equal(instate.encode(2), record(store, "a"))
      assert.are.equal(instate.encode({ 2 }), record(store, "t"))
    end)

    it("inside a store transaction that aborts, a second save that finds nothing new still counts for nothing", function()
      local store = assert(instate.setup(new_path()))
      local a = instate.defstate("a", 1)
      instate.save_all()
      a:set(2)
      local ok = pcall(store.transaction, store, function()
        instate.save_all()      -- writes 2, not committed
        instate.save_all()      -- the transaction already holds 2
        error("abort the enclosing transaction")
      end)
      assert.is_false(ok)
      assert.are.equal(instate.encode(1), record(store, "a"))
      instate.save_all()
      assert.are.equal(instate.encode(2), record(store, "a"))
    end)

    it("raises naming a variable whose validate fails; writes nothing", function()
      local store = assert(instate.setup(new_path()))
      local other = instate.defstate("other", 1)
      local hp = instate.defstate("hp", 10, {
        validate = function(v) return v >= 0, "hp must not be negative" end,
      })
      instate.save_all()
      local rev = store:revision()
      other:set(2)
      hp:set(-1)
      local msg = errmsg(function() instate.save_all() end)
      assert.matches("instate.save_all: variable 'hp' is invalid: hp must not be negative (nothing was saved)", msg, 1, true)
      assert.matches("20%-defstate_spec.lua:%d+:", msg)
      assert.are.equal(rev, store:revision())
      assert.are.equal(instate.encode(1), record(store, "other"))
    end)

    it("reports a validate that raises or gives no message", function()
      assert(instate.setup(new_path()))
      instate.defstate("a", 1, { validate = function() error("boom") end })
      assert.matches("variable 'a' is invalid: .*boom", errmsg(instate.save_all))
      instate.teardown()
      assert(instate.setup(new_path()))
      instate.defstate("b", 1, { validate = function() return false end })
      assert.matches("variable 'b' is invalid: validate returned false", errmsg(instate.save_all), 1, true)
    end)

    it("calls validate before every save, with the current value", function()
      assert(instate.setup(new_path()))
      local seen = {}
      local v = instate.defstate("a", 1, { validate = function(x) seen[#seen + 1] = x; return true end })
      instate.save_all()
      instate.save_all()
      v:set(3)
      instate.save_all()
      assert.are.same({ 1, 1, 3 }, seen)
    end)

    it("keeps saved variables that this run does not declare", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("a", 0):set(1)
      instate.defstate("b", 0):set(2)
      instate.save_all()
      restart(path)
      instate.defstate("a", 0):set(10)
      instate.save_all()
      restart(path)
      assert.are.equal(2, instate.defstate("b", 0):get())
      assert.are.equal(10, instate.defstate("a", 0):get())
    end)

    it("writes nothing when nothing changed", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      local n, t = instate.defstate("n", 1), instate.defstate("t", { 1, 2 })
      local rev = instate.save_all()
      assert.are.equal(rev, instate.save_all())
      n:set(1)                          -- the same value again
      t:set({ 1, 2 })                   -- an equal table
      assert.are.equal(rev, instate.save_all())
      assert.are.equal(rev, store:revision())
      -- After a restore, too.
      restart(path)
      instate.defstate("n", 1)
      instate.defstate("t", {})
      assert.are.equal(rev, instate.save_all())
      t = instate.defstate("t")
      t:get()[3] = 3
      assert.are.equal(rev + 1, instate.save_all())
    end)

    it("does not even encode a scalar that was not set since the last save or restore", function()
      local path = new_path()
      assert(instate.setup(path))
      local n = instate.defstate("n", 1)
      instate.defstate("s", "text")
      instate.defstate("t", { 1 })
      assert.are.equal(3, count_encodes(instate.save_all))
      -- the table neither: its fingerprint did not move
      assert.are.equal(0, count_encodes(instate.save_all))
      n:set(5)
      assert.are.equal(1, count_encodes(instate.save_all))
      assert.are.equal(0, count_encodes(instate.save_all))
      -- Restored values not used yet cannot have changed: nothing to encode.
      restart(path)
      instate.defstate("n", 1)
      instate.defstate("s", "x")
      local t = instate.defstate("t", {})
      assert.are.equal(0, count_encodes(instate.save_all))
      assert.are.same({ 1 }, t:get())
      -- handed out after a restore: it has its record's fingerprint, so
      -- it is encoded only when it moves
      assert.are.equal(0, count_encodes(instate.save_all))
      t:get()[2] = 2                            -- an edit in place moves it
      assert.are.equal(1, count_encodes(instate.save_all))
      instate.reload_all()
      assert.are.equal(0, count_encodes(instate.save_all))
      t:get()[2] = 3
      assert.are.equal(1, count_encodes(instate.save_all))
    end)

    it("after a restart looks only at the variables used since, however they were used", function()
      local path = new_path()
      assert(instate.setup(path))
      for i = 1, 50 do instate.defstate("v" .. i, { i }) end
      instate.save_all()
      restart(path)
      local v = {}
      for i = 1, 50 do v[i] = instate.defstate("v" .. i, {}) end
      assert.are.equal(0, count_encodes(instate.save_all))
      v[1]:set({ "set" })                       -- set without a get
      v[2]:get()[1] = "in place"                -- get, then edit
      v[3]:update(function(t) t[2] = "upd" return t end)
      v[4]:reset()                              -- back to the default {}
      instate.transaction(function() v[5]:set(0) end)
      assert.are.equal(5, count_encodes(instate.save_all))
      restart(path)
      for i = 1, 50 do v[i] = instate.defstate("v" .. i, {}) end
      assert.are.same({ "set" }, v[1]:get())
      assert.are.same({ "in place" }, v[2]:get())
      assert.are.same({ 3, "upd" }, v[3]:get())
      assert.are.same({}, v[4]:get())
      assert.are.equal(0, v[5]:get())
      -- reload_all hands every value out: each may be edited in place now
      restart(path)
      for i = 1, 50 do v[i] = instate.defstate("v" .. i, {}) end
      instate.reload_all()
      v[50]:get()[1] = "after reload"
      -- only the table whose fingerprint moved
      assert.are.equal(1, count_encodes(instate.save_all))
      restart(path)
      assert.are.same({ "after reload" }, instate.defstate("v50", {}):get())
    end)

    it("a set to an equal scalar costs one encoding, then none", function()
      assert(instate.setup(new_path()))
      local n = instate.defstate("n", 1)
      instate.save_all()
      n:set(1)
      assert.are.equal(1, count_encodes(instate.save_all))
      assert.are.equal(0, count_encodes(instate.save_all))
    end)

    it("writes only the changed variables", function()
      local store = assert(instate.setup(new_path()))
      local a, b = instate.defstate("a", 1), instate.defstate("b", 1)
      instate.save_all()
      -- Change b's record behind the layer: only a write of b would restore it.
      store:namespace("state", "state"):set_encoded("b", instate.encode(99))
      a:set(2)
      instate.save_all()
      assert.are.equal(instate.encode(2), record(store, "a"))
      assert.are.equal(instate.encode(99), record(store, "b"))
    end)

    it("returns the store's runtime failure as nil, message, code", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("a", 1)
      instate.save_all()
      instate.teardown()
      assert(instate.setup(path, { readonly = true }))
      local a = instate.defstate("a", 1)
      a:set(2)
      local ok, msg, code = instate.save_all()
      assert.is_nil(ok)
      assert.is_string(msg)
      assert.are.equal("READONLY", code)
    end)

    -- (holding the writer from another coroutine needs a yield inside a
    -- transaction: 5.2+)
    if compat.yield_across_c then
      it("a failed save records nothing as saved: the next save writes it", function()
        local store = assert(instate.setup(new_path()))
        local a, t = instate.defstate("a", 1), instate.defstate("t", { 1 })
        instate.save_all()
        -- Another coroutine holds the write transaction: save_all is BUSY.
        local co = coroutine.wrap(function()
          store:transaction(function() coroutine.yield() end)
        end)
        co()
        a:set(2)
        t:get()[1] = 2
        local ok, msg, code = instate.save_all()
        assert.is_nil(ok)
        assert.is_string(msg)
        assert.are.equal("BUSY", code)
        co()
        local rev = store:revision()
        assert.are.equal(rev + 1, instate.save_all())
        assert.are.equal(instate.encode(2), record(store, "a"))
        assert.are.equal(instate.encode({ 2 }), record(store, "t"))
      end)
    end
  end)

  describe("the start-up read", function()
    -- Count ns:get_encoded calls (the per-record read) while fn runs.
    local function count_reads(fn)
      local methods = ns_methods()
      local real, n = methods.get_encoded, 0
      methods.get_encoded = function(...) n = n + 1; return real(...) end
      local ok, err = pcall(fn)
      methods.get_encoded = real
      assert(ok, err)
      return n
    end

    local function saved_store(values)
      local path = new_path()
      assert(instate.setup(path))
      for k, v in pairs(values) do instate.defstate(k, v) end
      instate.save_all()
      instate.teardown()
      return path
    end

    it("restores from what setup read, without a read per variable", function()
      local path = saved_store({ a = 1, b = { 2 } })
      assert(instate.setup(path))
      local a, b
      assert.are.equal(0, count_reads(function()
        a, b = instate.defstate("a", 0), instate.defstate("b", {})
      end))
      assert.are.equal(1, a:get())
      assert.are.same({ 2 }, b:get())
    end)

    it("stays in use after this state's own save_all", function()
      local path = saved_store({ a = 1, b = 2 })
      assert(instate.setup(path))
      instate.defstate("a", 0):set(10)
      instate.save_all()
      local b
      assert.are.equal(0, count_reads(function() b = instate.defstate("b", 0) end))
      assert.are.equal(2, b:get())
    end)

    it("a defstate after another handle committed sees the new saved value", function()
      local path = saved_store({ a = 1 })
      local store = assert(instate.setup(path))
      local other = assert(instate.open(path))
      other:namespace("state", "state"):set_encoded("a", instate.encode(2))
      other:namespace("state", "state"):set_encoded("b", instate.encode("new"))
      local a, b
      assert.are.equal(2, count_reads(function()
        a, b = instate.defstate("a", 0), instate.defstate("b", "default")
      end))
      assert.are.equal(2, a:get())
      assert.are.equal("new", b:get())
      -- A commit to another namespace counts too: the read is per variable.
      other:namespace("other"):set("x", 1)
      assert.are.equal(1, count_reads(function() instate.defstate("c", 0) end))
      other:close()
      assert.are.equal(store, instate.setup(path))
    end)

    it("a defstate after another process committed sees the new saved value", function()
      local path = saved_store({ a = 1, b = 1 })
      assert(instate.setup(path))
      local out, ok = helpers.run_lua([[
        local instate = require "instate"
        local store = assert(instate.open(...))
        store:namespace("state", "state"):set_encoded("a", instate.encode(42))
        store:close()
      ]], path)
      assert(ok, out)
      assert.are.equal(42, instate.defstate("a", 0):get())
      assert.are.equal(1, instate.defstate("b", 0):get())
    end)

    it("a record another handle deleted after setup's read gives the default", function()
      local path = saved_store({ a = 1, b = 2, c = 3 })
      assert(instate.setup(path))
      local a = instate.defstate("a", 0)
      local other = assert(instate.open(path))
      assert.is_true(other:namespace("state", "state"):delete("b"))
      assert.are.equal(1, count_reads(function()
        assert.are.equal(0, instate.defstate("b", 0):get())
      end))
      -- declared before the commit: the same variable, not read again
      assert.are.equal(0, count_reads(function()
        assert.are.equal(a, instate.defstate("a", 0))
      end))
      assert.are.equal(1, a:get())
      assert.are.equal(3, instate.defstate("c", 0):get())
      other:close()
      -- the save writes b's default: the deletion is not undone by a stale value
      assert(instate.save_all())
      restart(path)
      assert.are.equal(0, instate.defstate("b", 5):get())
    end)

    it("lets go of what setup read and nobody declared once the store changed", function()
      local path = saved_store({ a = { 1 }, b = { 2 } })
      local weak = setmetatable({}, { __mode = "v" })
      local methods = ns_methods()
      local real = methods.get_all_objects
      methods.get_all_objects = function(...)
        local objects, count = real(...)
        weak.a, weak.b = objects.a, objects.b
        return objects, count
      end
      local ok, err = pcall(instate.setup, path)
      methods.get_all_objects = real
      assert(ok, err)
      local a = instate.defstate("a", {})
      local other = assert(instate.open(path))
      other:namespace("other"):set("x", 1)
      other:close()
      assert.are.same({}, instate.defstate("c", {}):get())   -- notices the commit
      collectgarbage()
      collectgarbage()
      assert.are.equal(a, weak.a)
      assert.is_nil(weak.b)
      assert.are.same({ 2 }, instate.defstate("b", {}):get())
    end)

    -- Capture what setup's ns:get_all_objects returns while fn runs.
    local function capture_startup_read(fn)
      local methods = ns_methods()
      local real, got = methods.get_all_objects, nil
      methods.get_all_objects = function(...)
        got = compat.pack(real(...))
        return compat.unpack(got, 1, got.n)
      end
      local ok, err = pcall(fn)
      methods.get_all_objects = real
      assert(ok, err)
      return got
    end

    it("hands out the variables setup built, without reading or decoding again", function()
      local path = saved_store({ a = { 1 }, b = { k = "v" }, n = 3 })
      local got = capture_startup_read(function() assert(instate.setup(path)) end)
      local built = got[1]
      local names = {}
      for k in pairs(built) do names[#names + 1] = k end
      table.sort(names)
      assert.are.same({ "a", "b", "n" }, names)
      local built_a, built_b, built_n = built.a, built.b, built.n
      local a, b, n
      assert.are.equal(0, count_reads(function()
        a, b, n = instate.defstate("a", {}), instate.defstate("b", {}), instate.defstate("n", 0)
      end))
      -- The very variables setup built, holding what it decoded.
      assert.are.equal(built_a, a)
      assert.are.equal(built_b, b)
      assert.are.equal(built_n, n)
      assert.are.same({ 1 }, a:get())
      assert.are.same({ k = "v" }, b:get())
      assert.are.equal(3, n:get())
    end)

    it("leaves records of another version or that do not decode to the declaration", function()
      local path = new_path()
      local store = assert(instate.open(path))
      local ns = store:namespace("state", "state")
      ns:set_encoded("v2", instate.encode("two"), { version = 2 })
      ns:set_encoded("v1", instate.encode("one"), { version = 1 })
      store:close()
      local got = capture_startup_read(function() assert(instate.setup(path)) end)
      assert.is_false(got[1].v2)
      assert.are.equal("one", got[1].v1:get())
      assert.are.equal("two", instate.defstate("v2", "x", { version = 2 }):get())
    end)

    -- Write a record behind the store's back, straight into LMDB (the
    -- store refuses to write bytes that are not a valid encoding): a
    -- well-formed record header with its checksum, then the value bytes
    -- (docs/FORMAT.md, section 2).
    local function write_raw(path, name, value_bytes, version)
      local hex = helpers.record_bytes(name, value_bytes, nil, version):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
      local script = helpers.tmpdir() .. "/write_raw.py"
      helpers.write_file(script, [[
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=256)
db = env.open_db(b"state", create=False)
with env.begin(write=True) as tx:
    tx.put(sys.argv[2].encode(), bytes.fromhex(sys.argv[3]), db=db)
env.close()
]])
      local out, ok = helpers.shell(("/usr/bin/python3 %s %s %s %s 2>&1"):format(helpers.sh_quote(script),
        helpers.sh_quote(path), helpers.sh_quote(name), hex))
      assert(ok, "python3-lmdb failed:\n" .. out)
    end
    -- An array of two elements holding one: truncated, never valid.
    local TRUNCATED = "\146\001"

    it("a saved record that does not decode raises at its defstate, naming the variable", function()
      local path = saved_store({ good = 1, bad = 2, other = { 3 } })
      write_raw(path, "bad", TRUNCATED)
      assert(instate.setup(path))
      assert.are.equal(1, instate.defstate("good", 0):get())
      local msg = errmsg(function() instate.defstate("bad", 0) end)
      assert.matches("instate.defstate: saved value of variable 'bad' is corrupt: ", msg, 1, true)
      assert.matches("20%-defstate_spec.lua:%d+:", msg)   -- points at the caller
      -- Nothing was declared, so a later declaration raises again.
      assert.matches("variable 'bad' is corrupt", errmsg(instate.defstate, "bad", 0, { version = 1 }), 1, true)
      local names = {}
      for name in instate.vars() do names[#names + 1] = name end
      assert.are.same({ "good" }, names)
      assert.are.same({ 3 }, instate.defstate("other", {}):get())
    end)

    it("a corrupt record of another version raises at defstate before any migrate", function()
      local path = saved_store({ x = 1 })
      write_raw(path, "bad", TRUNCATED, 1)
      write_raw(path, "old", TRUNCATED, 3)
      assert(instate.setup(path))
      local migrated = false
      local opts = { version = 4, migrate = function(v) migrated = true; return v end }
      assert.matches("instate.defstate: saved value of variable 'old' is corrupt: ",
        errmsg(instate.defstate, "old", 0, opts), 1, true)
      assert.matches("instate.defstate: saved value of variable 'bad' is corrupt: ",
        errmsg(instate.defstate, "bad", 0, { validate = function() return true end }), 1, true)
      assert.is_false(migrated)
    end)

    it("a corrupt record read after another commit raises at defstate too", function()
      local path = saved_store({ a = 1 })
      assert(instate.setup(path))
      -- Written after setup's read: defstate reads the record itself.
      write_raw(path, "late", TRUNCATED)
      assert.matches("instate.defstate: saved value of variable 'late' is corrupt: ",
        errmsg(instate.defstate, "late", 0), 1, true)
      assert.are.equal(1, instate.defstate("a", 0):get())
    end)

    it("reload_all raises naming a corrupt record and changes nothing", function()
      local path = saved_store({ a = 1, b = 2 })
      assert(instate.setup(path))
      local a, b = instate.defstate("a", 0), instate.defstate("b", 0)
      a:set(10)
      write_raw(path, "b", TRUNCATED)
      assert.matches("instate.reload_all: saved value of variable 'b' is corrupt: ",
        errmsg(instate.reload_all), 1, true)
      assert.are.equal(10, a:get())
      assert.are.equal(2, b:get())
    end)

    it("a value restored through migrate or validate is not encoded until used", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("v", { 1 }, { version = 2 })
      instate.defstate("w", { 2 }, { validate = function() return true end })
      instate.save_all()
      restart(path)
      local v = instate.defstate("v", {}, { version = 2 })
      local w = instate.defstate("w", {}, { validate = function(x) return x[1] == 2, "not 2" end })
      assert.are.equal(0, count_encodes(instate.save_all))
      assert.are.same({ 1 }, v:get())
      assert.are.same({ 2 }, w:get())
      -- read: not encoded while unchanged (each has its record's
      -- fingerprint, declared with options too)
      assert.are.equal(0, count_encodes(instate.save_all))
      -- Handed out, the value is checked before every save again.
      w:get()[1] = 5
      assert.matches("variable 'w' is invalid: not 2", errmsg(instate.save_all), 1, true)
    end)
  end)

  describe("reload_all", function()
    it("reverts sets and in-place changes to the saved values", function()
      assert(instate.setup(new_path()))
      local gold = instate.defstate("gold", 5)
      local inv = instate.defstate("inv", { "stick" })
      instate.save_all()
      gold:set(0)
      inv:get()[1] = "broken stick"
      assert.is_true(instate.reload_all())
      assert.are.equal(5, gold:get())
      assert.are.same({ "stick" }, inv:get())
    end)

    it("raises naming every never-saved variable and changes nothing", function()
      local store = assert(instate.setup(new_path()))
      local gold = instate.defstate("gold", 5)
      instate.save_all()
      gold:set(1)
      instate.defstate("fresh", 0)
      instate.defstate("newer", 0)
      local rev = store:revision()
      local msg = errmsg(function() instate.reload_all() end)
      assert.matches("instate.reload_all: never saved: fresh, newer (nothing was changed)", msg, 1, true)
      assert.matches("20%-defstate_spec.lua:%d+:", msg)
      assert.are.equal(1, gold:get())
      assert.are.equal(rev, store:revision())
    end)

    it("raises naming a variable whose saved value fails validate; changes nothing", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      local a = instate.defstate("a", 1)
      local b = instate.defstate("b", 1, { validate = function(v) return v < 10, "b too big" end })
      instate.save_all()
      a:set(2)
      b:set(3)
      store:namespace("state", "state"):set_encoded("b", instate.encode(50))
      assert.matches("instate.reload_all: saved value of variable 'b' is invalid: b too big",
        errmsg(instate.reload_all), 1, true)
      assert.are.equal(2, a:get())
      assert.are.equal(3, b:get())
    end)

    it("migrates an older saved version and raises on a newer one", function()
      local store = assert(instate.setup(new_path()))
      local calls = {}
      local v = instate.defstate("v", 0, {
        version = 2,
        migrate = function(old, ver) calls[#calls + 1] = ver; return old * 100 end,
      })
      local w = instate.defstate("w", "w")
      instate.save_all()
      local ns = store:namespace("state", "state")
      ns:set_encoded("v", instate.encode(7), { version = 1 })
      w:set("changed")
      assert.is_true(instate.reload_all())
      assert.are.equal(700, v:get())
      assert.are.same({ 1 }, calls)
      assert.are.equal("w", w:get())
      ns:set_encoded("v", instate.encode(7), { version = 3 })
      w:set("again")
      assert.matches("instate.reload_all: variable 'v' was saved with version 3, newer than its declared version 2",
        errmsg(instate.reload_all), 1, true)
      assert.are.equal("again", w:get())
    end)

    it("returns true with no variables", function()
      assert(instate.setup(new_path()))
      assert.is_true(instate.reload_all())
    end)
  end)

  describe("versions", function()
    local function saved_with(path, name, value, version)
      local store = assert(instate.open(path))
      store:namespace("state", "state"):set_encoded(name, instate.encode(value), { version = version })
      store:close()
    end

    it("migrate runs on restore when the saved version is older", function()
      local path = new_path()
      saved_with(path, "pos", { 3, 4 }, 1)
      assert(instate.setup(path))
      local args
      local pos = instate.defstate("pos", { x = 0, y = 0 }, {
        version = 2,
        migrate = function(old, ver)
          args = { old, ver }
          return { x = old[1], y = old[2] }
        end,
      })
      assert.are.same({ { 3, 4 }, 1 }, args)
      assert.are.same({ x = 3, y = 4 }, pos:get())
      assert.are.equal(2, pos.version)
    end)

    it("the next save rewrites a migrated value with the new version", function()
      local path = new_path()
      saved_with(path, "n", 5, 1)
      local store = assert(instate.setup(path))
      -- The migrated value encodes to the very same bytes.
      instate.defstate("n", 0, { version = 2, migrate = function(v) return v end })
      local rev = store:revision()
      assert.are.equal(rev + 1, instate.save_all())
      local bytes, version = record(store, "n")
      assert.are.equal(instate.encode(5), bytes)
      assert.are.equal(2, version)
      restart(path)
      assert.are.equal(5, instate.defstate("n", 0, { version = 2 }):get())
    end)

    it("a record without a version counts as version 1", function()
      local path = new_path()
      local store = assert(instate.open(path))
      store:namespace("state", "state"):set_encoded("n", instate.encode(5))
      store:close()
      assert(instate.setup(path))
      assert.are.equal(5, instate.defstate("n", 0):get())
    end)

    it("saves the declared version with the value", function()
      local store = assert(instate.setup(new_path()))
      instate.defstate("a", 1, { version = 7 })
      instate.defstate("b", 1)
      instate.save_all()
      assert.are.equal(7, select(2, record(store, "a")))
      assert.are.equal(1, select(2, record(store, "b")))
    end)

    it("a newer saved version is an error naming the variable and both versions", function()
      local path = new_path()
      saved_with(path, "pos", 1, 5)
      assert(instate.setup(path))
      local msg = errmsg(instate.defstate, "pos", 0, { version = 4 })
      assert.matches("instate.defstate: variable 'pos' was saved with version 5, newer than its declared version 4", msg, 1, true)
      -- The failed declaration left nothing behind.
      assert.is_nil(instate.vars()())
    end)

    it("an older version without migrate is an error", function()
      local path = new_path()
      saved_with(path, "pos", 1, 1)
      assert(instate.setup(path))
      assert.matches("variable 'pos' was saved with version 1 but declares version 2 and has no migrate function",
        errmsg(instate.defstate, "pos", 0, { version = 2 }), 1, true)
    end)

    it("a migrate that raises is an error naming the variable", function()
      local path = new_path()
      saved_with(path, "pos", 1, 1)
      assert(instate.setup(path))
      assert.matches("instate.defstate: migrating variable 'pos' from version 1 to 3 failed: .*no way",
        errmsg(instate.defstate, "pos", 0, { version = 3, migrate = function() error("no way") end }))
    end)

    it("validate runs on restore", function()
      local path = new_path()
      saved_with(path, "hp", -5, 1)
      assert(instate.setup(path))
      local seen
      assert.matches("instate.defstate: saved value of variable 'hp' is invalid: negative hp",
        errmsg(instate.defstate, "hp", 10, {
          validate = function(v) seen = v; return v >= 0, "negative hp" end,
        }), 1, true)
      assert.are.equal(-5, seen)
      -- validate sees the migrated value.
      assert.are.equal(5, instate.defstate("hp", 10, {
        version = 2,
        migrate = function(v) return -v end,
        validate = function(v) return v >= 0, "negative hp" end,
      }):get())
    end)
  end)

  describe("transaction", function()
    it("returns fn's results and keeps the changes", function()
      assert(instate.setup(new_path()))
      local a = instate.defstate("a", 1)
      local r1, r2 = instate.transaction(function(x, y)
        a:set(x)
        return x + y, "done"
      end, 10, 5)
      assert.are.equal(15, r1)
      assert.are.equal("done", r2)
      assert.are.equal(10, a:get())
    end)

    it("restores every variable set inside when fn raises, and re-raises", function()
      assert(instate.setup(new_path()))
      local a, b, c = instate.defstate("a", 1), instate.defstate("b", { 1 }), instate.defstate("c", 3)
      local b0 = b:get()
      local err = { code = "oops" }
      local ok, got = pcall(instate.transaction, function()
        a:set(2)
        a:set(3)
        b:set({ 2 })
        c:update(function(x) return x + 1 end)
        error(err)
      end)
      assert.is_false(ok)
      assert.are.equal(err, got)
      assert.are.equal(1, a:get())
      assert.are.equal(b0, b:get())
      assert.are.equal(3, c:get())
    end)

    it("undoes reset and reload_all too", function()
      assert(instate.setup(new_path()))
      local a = instate.defstate("a", 1)
      instate.save_all()
      a:set(5)
      assert.has_error(function()
        instate.transaction(function()
          instate.reload_all()
          assert.are.equal(1, a:get())
          error("x")
        end)
      end, "x")
      assert.are.equal(5, a:get())
      assert.has_error(function()
        instate.transaction(function() a:reset(); error("x") end)
      end, "x")
      assert.are.equal(5, a:get())
    end)

    it("nests: an inner failure undoes the inner sets only", function()
      assert(instate.setup(new_path()))
      local a, b = instate.defstate("a", 1), instate.defstate("b", 1)
      instate.transaction(function()
        a:set(2)
        local ok = pcall(instate.transaction, function()
          a:set(3)
          b:set(3)
          error("inner")
        end)
        assert.is_false(ok)
        assert.are.equal(2, a:get())
        assert.are.equal(1, b:get())
      end)
      assert.are.equal(2, a:get())
      assert.are.equal(1, b:get())
    end)

    it("nests: an outer failure undoes what committed inner transactions set", function()
      assert(instate.setup(new_path()))
      local a, b = instate.defstate("a", 1), instate.defstate("b", 1)
      local ok, err = pcall(instate.transaction, function()
        instate.transaction(function() b:set(2) end)
        a:set(2)
        instate.transaction(function() b:set(3); a:set(3) end)
        error("outer")
      end)
      assert.is_false(ok)
      assert.matches("outer", err)
      assert.are.equal(1, a:get())
      assert.are.equal(1, b:get())
      -- And the log is gone: later sets stay.
      a:set(9)
      assert.are.equal(9, a:get())
    end)

    it("a restored variable is saved again", function()
      local path = new_path()
      assert(instate.setup(path))
      local a = instate.defstate("a", 1)
      instate.save_all()
      pcall(instate.transaction, function()
        a:set(2)
        instate.save_all()
        error("after saving")
      end)
      assert.are.equal(1, a:get())
      instate.save_all()
      restart(path)
      assert.are.equal(1, instate.defstate("a", 0):get())
    end)

    it("restores a restored variable that was not used before the transaction", function()
      local path = new_path()
      assert(instate.setup(path))
      instate.defstate("inv", { "stick" })
      instate.save_all()
      restart(path)
      local inv = instate.defstate("inv", {})
      assert.has_error(function()
        instate.transaction(function() inv:set({ "gem" }); error("x") end)
      end, "x")
      assert.are.same({ "stick" }, inv:get())
      assert.are.equal("stick", instate.defstate("inv"):update(function(t) return t[1] end))
    end)

    it("checks its argument", function()
      assert.matches("bad argument #1 to 'transaction' (function expected, got nil)",
        errmsg(instate.transaction), 1, true)
    end)
  end)

  describe("teardown", function()
    it("forgets the variables and closes the store", function()
      local path = new_path()
      local store = assert(instate.setup(path))
      instate.defstate("a", 1):set(2)
      instate.teardown()
      assert.has_error(function() store:revision() end, "store is closed")
      assert.is_nil(instate.vars()())
      assert.matches("call instate.setup(path) first", errmsg(instate.defstate, "a", 1), 1, true)
      instate.teardown()   -- twice is fine
      assert(instate.setup(path))
      assert.are.equal(1, instate.defstate("a", 1):get())   -- never saved
    end)
  end)

  describe("hot reload", function()
    it("running a script twice keeps its variables", function()
      assert(instate.setup(new_path()))
      local script = helpers.tmpdir() .. "/script.lua"
      helpers.write_file(script, [[
        local instate = require "instate"
        local runs = instate.defstate("runs", 0)
        local log = instate.defstate("log", {})
        runs:set(runs:get() + 1)
        log:get()[#log:get() + 1] = "run " .. runs:get()
        return runs, log
      ]])
      local r1, l1 = dofile(script)
      local r2, l2 = dofile(script)
      assert.are.equal(r1, r2)
      assert.are.equal(l1, l2)
      assert.are.equal(2, r2:get())
      assert.are.same({ "run 1", "run 2" }, l2:get())
    end)
  end)

  describe("setup and the collector", function()
    -- setup stops the collector while it builds the restored variables
    -- (where it can tell the program did not stop it), and must leave it
    -- as the program had it.
    local function saved_store()
      local path = new_path()
      assert(instate.setup(path))
      for i = 1, 300 do instate.defstate("v" .. i, { i = i, name = "n" .. i }) end
      assert(instate.save_all())
      instate.teardown()
      return path
    end

    -- KB of heap after making about mb MB of garbage tables.
    local function churn(mb)
      -- kept in a ring, so that no compiler can leave them unmade
      local ring = {}
      for i = 1, mb * 1024 * 1024 / 64 do ring[i % 16 + 1] = { i, 2 } end
      return collectgarbage("count")
    end

    after_each(function()
      collectgarbage("restart")
      instate.teardown()
    end)

    it("leaves a collector the program stopped stopped", function()
      local path = saved_store()
      collectgarbage()
      collectgarbage("stop")
      assert(instate.setup(path))
      assert.are.equal(300, instate.defstate("v300", false):get().i)
      local before = collectgarbage("count")
      local after = churn(8)
      -- nothing was collected: every garbage table is still counted
      assert.is_true(after - before > 4 * 1024,
        ("heap grew by %.0f KB only: the collector ran"):format(after - before))
    end)

    it("leaves a running collector running", function()
      local path = saved_store()
      collectgarbage()
      local base = collectgarbage("count")
      assert(instate.setup(path))
      assert.are.equal(300, instate.defstate("v300", false):get().i)
      local after = churn(64)
      assert.is_true(after - base < 24 * 1024,
        ("heap grew by %.0f KB: the collector did not run"):format(after - base))
    end)
  end)
end)
