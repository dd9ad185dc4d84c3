-- Generations: setup(path, {backups = N}) and instate.backup() keep the N
-- newest good saves as dump files beside the store, each verified before
-- the oldest goes; instate.restore_backup brings a store back after
-- corruption; a save never writes defaults over records that failed to read.
local helpers = require "helpers"
local instate = require "instate"

local function slot(path, k) return ("%s.backup.%s.isd"):format(path, tostring(k)) end
local function exists(p) local f = io.open(p, "rb") if f then f:close() end return f ~= nil end

-- The value of state variable `name` in a dump file, read through a scratch
-- store (the file loaded whole, as a restore would).
local function value_in(file, name)
  local s = assert(instate.open(helpers.tmpdir() .. "/probe"))
  assert(s:load(file))
  local v = s:namespace("state", "state"):get(name)
  s:close()
  return v
end

-- Flip the last byte of every copy of the record of `name` holding `value`
-- in the store's data file (its checksum then fails).
local function damage_record(dir, name, value)
  local rec = helpers.record_bytes(name, instate.encode(value), nil, 1)
  local data = assert(helpers.read_file(dir .. "/data.mdb"))
  local at, n = 1, 0
  while true do
    local i = data:find(rec, at, true)
    if not i then break end
    data = helpers.flip_byte(data, i + #rec - 1, 0x01)
    at, n = i + #rec, n + 1
  end
  assert(n > 0, "record not found")
  helpers.write_file(dir .. "/data.mdb", data)
end

-- One session: setup, set the variable `gen` to v, save, teardown.
local function session(path, v, opts)
  assert(instate.setup(path, opts))
  instate.defstate("gen", 0):set(v)
  assert(instate.save_all())
  instate.teardown()
end

describe("defstate backups", function()
  local dir, path
  before_each(function()
    dir = helpers.tmpdir()
    path = dir .. "/save"
  end)
  after_each(function()
    instate._backup_written = nil
    instate.teardown()
  end)

  it("rotates: the newest first, the oldest dropped only after a new one", function()
    assert(instate.setup(path, { backups = 3 }))
    local gen = instate.defstate("gen", 0)
    for v = 1, 5 do
      gen:set(v)
      assert(instate.save_all())
      local info = assert(instate.backup())
      assert.equal(slot(path, 1), info.path)
      assert.equal(1, info.records)
    end
    assert.equal(5, value_in(slot(path, 1), "gen"))
    assert.equal(4, value_in(slot(path, 2), "gen"))
    assert.equal(3, value_in(slot(path, 3), "gen"))
    assert.is_false(exists(slot(path, 4)))
    assert.is_false(exists(slot(path, "new")))
    local list = instate.backups()
    assert.equal(3, #list)
    for k = 1, 3 do
      assert.equal(k, list[k].k)
      assert.is_true(list[k].ok)
      assert.equal(1, list[k].records)
    end
    assert.is_true(list[1].revision > list[2].revision and list[2].revision > list[3].revision)
  end)

  it("backs up at setup a store read cleanly that changed since the newest backup", function()
    -- an empty store: nothing to keep
    assert(instate.setup(path, { backups = 2 }))
    assert.is_false(exists(slot(path, 1)))
    instate.teardown()
    session(path, 1, { backups = 2 })   -- its setup saw an empty store
    assert.is_false(exists(slot(path, 1)))
    session(path, 2, { backups = 2 })   -- backs up gen = 1, then saves 2
    assert.equal(1, value_in(slot(path, 1), "gen"))
    -- restarts without a save rotate nothing out
    for _ = 1, 3 do
      assert(instate.setup(path, { backups = 2 }))
      instate.teardown()
    end
    assert.equal(2, value_in(slot(path, 1), "gen"))
    assert.equal(1, value_in(slot(path, 2), "gen"))
    -- without the option, setup makes none
    session(path, 3)
    session(path, 4)
    assert.equal(2, value_in(slot(path, 1), "gen"))
  end)

  it("makes no backup at setup of a store with a damaged record, and keeps the old ones", function()
    session(path, 1, { backups = 2 })
    session(path, "the-value-to-damage", { backups = 2 })
    local before = helpers.read_file(slot(path, 1))
    damage_record(path, "gen", "the-value-to-damage")
    local store, msg = instate.setup(path, { backups = 2 })
    assert.truthy(store)
    assert.equal("instate.setup: no backup made: dump " .. slot(path, "new")
      .. ": corrupt data; the kept backups are untouched", msg)
    assert.equal(before, helpers.read_file(slot(path, 1)))
    assert.is_false(exists(slot(path, 2)))
    assert.is_false(exists(slot(path, "new")))
  end)

  it("leaves the old backups intact when writing the new one fails", function()
    assert(instate.setup(path, { backups = 2 }))
    local gen = instate.defstate("gen", 0)
    gen:set(1)
    assert(instate.save_all())
    assert(instate.backup())
    gen:set(2)
    assert(instate.save_all())
    assert(instate.backup())
    local b1, b2 = helpers.read_file(slot(path, 1)), helpers.read_file(slot(path, 2))
    -- the new backup cannot be put in place: a directory is in its way
    assert(os.execute("mkdir " .. helpers.sh_quote(slot(path, "new"))))
    helpers.write_file(slot(path, "new") .. "/keep", "x")
    gen:set(3)
    assert(instate.save_all())
    local info, msg, code = instate.backup()
    assert.is_nil(info)
    assert.equal("IO", code)
    assert.matches("^instate%.backup: no backup made: .*; the kept backups are untouched$", msg)
    assert.equal(b1, helpers.read_file(slot(path, 1)))
    assert.equal(b2, helpers.read_file(slot(path, 2)))
    assert.is_false(exists(slot(path, 3)))
  end)

  it("verifies the new backup before rotating: a truncated one replaces nothing", function()
    assert(instate.setup(path, { backups = 2 }))
    local gen = instate.defstate("gen", 0)
    for v = 1, 2 do
      gen:set(v)
      assert(instate.save_all())
      assert(instate.backup())
    end
    local b1, b2 = helpers.read_file(slot(path, 1)), helpers.read_file(slot(path, 2))
    gen:set({ big = ("x"):rep(10000) })
    assert(instate.save_all())
    local seen
    instate._backup_written = function(p)
      seen = p
      local data = helpers.read_file(p)
      helpers.write_file(p, data:sub(1, #data - 7))
    end
    local info, msg, code = instate.backup()
    assert.equal(slot(path, "new"), seen)
    assert.is_nil(info)
    assert.equal("CORRUPT", code)
    assert.matches("^instate%.backup: the new backup did not read back: .*; it was removed and the kept backups are untouched$", msg)
    assert.equal(b1, helpers.read_file(slot(path, 1)))
    assert.equal(b2, helpers.read_file(slot(path, 2)))
    assert.is_false(exists(slot(path, "new")))
    -- a kept backup damaged later is seen as such, and not restored
    instate._backup_written = nil
    helpers.write_file(slot(path, 2), b2:sub(1, #b2 - 3))
    local list = instate.backups()
    assert.is_true(list[1].ok)
    assert.is_false(list[2].ok)
    assert.equal("CORRUPT", list[2].code)
    instate.teardown()
    assert(instate.setup(path))
    local r
    r, msg, code = instate.restore_backup(2)
    assert.is_nil(r)
    assert.equal("CORRUPT", code)
    assert.matches("^instate%.restore_backup: backup 2 is damaged: .*; the store is unchanged$", msg)
    assert.equal(10000, #instate.defstate("gen", 0):get().big)
  end)

  it("restores a store whose record was damaged", function()
    session(path, "good", { backups = 2 })
    assert(instate.setup(path, { backups = 2 }))   -- backs up gen = "good"
    instate.defstate("gen", 0):set("latest-and-damaged")
    instate.defstate("other", 0):set(7)
    assert(instate.save_all())
    instate.teardown()
    damage_record(path, "gen", "latest-and-damaged")

    assert(instate.setup(path))
    local ok, err = pcall(instate.defstate, "gen", 0)
    assert.is_false(ok)
    assert.matches("instate.defstate: cannot restore variable 'gen': .*CORRUPT", err)
    -- the game goes on without it: its save must not look complete
    instate.defstate("other", 0):set(8)
    assert.has_error(function() instate.save_all() end,
      "instate.save_all: the saved values of 'gen' could not be restored (their defstate raised);"
      .. " nothing was saved. Restore a backup (instate.restore_backup) or delete those records,"
      .. " then declare them again")
    -- recovery: restore before declaring
    assert.has_error(function() instate.restore_backup() end,
      "instate.restore_backup: 1 variables are declared; restore before the first defstate"
      .. " (call instate.teardown() and instate.setup(path) again)")
    instate.teardown()
    assert(instate.setup(path))
    local info = assert(instate.restore_backup())
    assert.equal(slot(path, 1), info.path)
    assert.equal("good", instate.defstate("gen", 0):get())
    assert.equal(0, instate.defstate("other", 0):get())   -- not in that backup
    assert(instate.save_all())
    local store = assert(instate.open(path))
    assert.same({}, assert(store:check()).corrupt)
    store:close()
  end)

  it("restores a store whose data file was destroyed (the README's steps)", function()
    session(path, { level = 3 }, { backups = 1 })
    assert(instate.setup(path, { backups = 1 }))
    instate.teardown()
    assert.same({ level = 3 }, value_in(slot(path, 1), "gen"))
    helpers.write_file(path .. "/data.mdb", ("\255"):rep(20000))
    local store, msg, code = instate.setup(path)
    assert.is_nil(store)
    assert.equal("CORRUPT", code)
    assert.truthy(msg)
    -- move the broken store aside, start an empty one, restore into it
    assert(os.rename(path, path .. ".broken"))
    assert(instate.setup(path))
    assert(instate.restore_backup(1))
    assert.same({ level = 3 }, instate.defstate("gen", {}):get())
  end)

  it("saves over a damaged record of a variable not declared this run", function()
    session(path, "never-declared-again")
    damage_record(path, "gen", "never-declared-again")
    assert(instate.setup(path))
    instate.defstate("other", 0):set(1)
    assert(instate.save_all())
  end)

  it("says what is wrong with a restore that cannot run", function()
    assert(instate.setup(path, { backups = 2 }))
    local r, msg, code = instate.restore_backup(2)
    assert.is_nil(r)
    assert.equal("NOTFOUND", code)
    assert.equal(("instate.restore_backup: no backup 2 (%s)"):format(slot(path, 2)), msg)
    assert.has_error(function() instate.restore_backup(0) end,
      "bad argument #1 to 'restore_backup' (an integer >= 1 expected, got 0)")
    assert.has_error(function() instate.setup(path, { backups = -1 }) end,
      "bad argument #2 to 'setup' (backups must be an integer >= 0, got -1)")
    instate.teardown()
    assert.has_error(function() instate.backup() end,
      "instate.backup: no store; call instate.setup(path) first")
    session(path, 1)
    assert(instate.setup(path, { readonly = true }))
    r, msg, code = instate.backup()
    assert.is_nil(r)
    assert.equal("READONLY", code)
    assert.equal(("instate.backup: the store '%s' was set up read-only ({readonly = true})"):format(path), msg)
    assert.equal("READONLY", select(3, instate.restore_backup()))
  end)
end)
