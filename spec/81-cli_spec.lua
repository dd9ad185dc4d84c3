-- The instate command, run as a user runs it: the build's bin/instate in a
-- fresh process, in a scratch directory, against real stores and dumps.
local helpers = require "helpers"
local instate = require "instate"

local q = helpers.sh_quote
local BIN = helpers.build_dir() .. "/bin/instate"
if BIN:sub(1, 1) ~= "/" then BIN = os.getenv("PWD") .. "/" .. BIN end

-- The module paths of this run, made absolute (the command runs elsewhere).
local function absolute(paths)
  local pwd = os.getenv("PWD")
  return (paths:gsub("[^;]+", function(p)
    if p:sub(1, 1) == "/" then return p end
    return pwd .. "/" .. p
  end))
end
local ENV = ("env LUA_PATH=%s LUA_CPATH=%s"):format(q(absolute(package.path)), q(absolute(package.cpath)))

local cwd

-- Run a shell command: its stdout, stderr and exit status.
local function shell_status(cmd)
  local errfile = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. q(errfile) .. "; echo \"\001$?\""))
  local all = p:read("*a")
  p:close()
  local out, status = all:match("^(.*)\001(%d+)\n$")
  local err = helpers.read_file(errfile)
  os.remove(errfile)
  return out, err, tonumber(status)
end

-- Run `instate args...` in cwd; returns stdout, stderr and the exit status.
local function run(...)
  local args = {}
  for i = 1, select("#", ...) do args[i] = q(select(i, ...)) end
  return shell_status(("cd %s && %s %s %s"):format(q(cwd), ENV, q(BIN), table.concat(args, " ")))
end

-- Run it with standard input from a string.
local function run_stdin(input, ...)
  local file = cwd .. "/.stdin"
  helpers.write_file(file, input)
  local args = {}
  for i = 1, select("#", ...) do args[i] = q(select(i, ...)) end
  return shell_status(("cd %s && %s %s %s < %s"):format(q(cwd), ENV, q(BIN),
    table.concat(args, " "), q(file)))
end

local function ok(...)
  local out, err, status = run(...)
  assert.equal("", err)
  assert.equal(0, status)
  return out
end

local function exists(path)
  return helpers.execute("test -e " .. q(cwd .. "/" .. path))
end

local function lines(...)
  return table.concat({ ... }, "\n") .. "\n"
end

-- A store "save" with kv records set through the command and defstate
-- variables saved by a Lua process.
local function make_store()
  ok("set", "save", "items", "sword", '{dmg = 3, name = "Excalibur"}')
  ok("set", "save", "items", "potion", "2")
  ok("set", "save", "items", "bytes", [["\0\255"]])
  ok("set", "save", "items", "two words", "[1, 2.5]")
  local out, good = helpers.run_lua([[
    local instate = require "instate"
    assert(instate.setup(...))
    instate.defstate("hp", 20, { version = 2 })
    instate.defstate("name", "hero")
    assert(instate.save_all())
    instate.teardown()
  ]], cwd .. "/save")
  assert(good, out)
end

local function stats(path)
  local s = assert(instate.open(path, { readonly = true }))
  local st = s:stats()
  s:close()
  return st
end

describe("instate (the command)", function()
  before_each(function() cwd = helpers.tmpdir() end)

  it("prints its version and help, for every subcommand", function()
    local version = ("instate %s (%s)\n"):format(instate._VERSION, jit and jit.version or _VERSION)
    assert.equal(version, ok("--version"))
    local help = ok("--help")
    assert.matches("^usage: instate COMMAND %[ARGS%] %[%-%-json%]\n", help)
    assert.equal(help, ok("-h"))
    local usage = {
      stat = "instate stat STORE [--json]",
      ls = "instate ls STORE [NS] [--prefix P] [--json]",
      get = "instate get STORE NS KEY [--json]",
      vars = "instate vars STORE [--json]",
      set = "instate set STORE NS KEY VALUE [--force] [--ttl SECONDS] [--json]",
      del = "instate del STORE NS KEY [--force] [--json]",
      dump = "instate dump STORE FILE [--level N] [--ns NS...] [--json]",
      load = "instate load STORE FILE [--force] [--replace] [--json]",
      info = "instate info FILE [--json]",
      check = "instate check PATH [--json]",
      export = "instate export STORE [--json]",
      import = "instate import STORE FILE [--force] [--json]",
    }
    for name, line in pairs(usage) do
      assert.matches("\n  " .. name .. " ", help, 1, true)
      local sub = ok(name, "--help")
      assert.equal("usage: " .. line .. "\n", sub:match("^[^\n]*\n"))
      assert.matches("Exit status: 0 success; 1", sub, 1, true)
      assert.equal(sub, ok("help", name))
      assert.equal(sub, ok(name, "x", "-h"))
    end
  end)

  it("exits with 2 on a usage error, naming it", function()
    local function usage(err, ...)
      local out, e, status = run(...)
      assert.equal("", out)
      assert.equal(err, e)
      assert.equal(2, status)
    end
    usage("instate: no command given\ntry 'instate --help'\n")
    usage("instate: unknown command 'frob'\ntry 'instate --help'\n", "frob")
    usage("instate: unknown option '--bogus' for ls\ntry 'instate ls --help'\n", "ls", "save", "--bogus")
    usage("instate: missing NS; usage: instate get STORE NS KEY [--json]\ntry 'instate get --help'\n",
      "get", "save")
    usage("instate: unexpected argument 'd'; usage: instate get STORE NS KEY [--json]\n"
      .. "try 'instate get --help'\n", "get", "a", "b", "c", "d")
    usage("instate: --level needs a value (N)\ntry 'instate dump --help'\n", "dump", "s", "f", "--level")
    usage("instate: --level must be an integer 0..9, got '12'\ntry 'instate dump --help'\n",
      "dump", "s", "f", "--level", "12")
    usage("instate: --json takes no value\ntry 'instate stat --help'\n", "stat", "s", "--json=1")
    assert.is_false(exists("save"))
    assert.is_false(exists("s"))
  end)

  it("read commands on a missing store exit with 1 and create nothing", function()
    for _, args in ipairs({ { "stat", "nosuch" }, { "ls", "nosuch" }, { "get", "nosuch", "n", "k" },
      { "vars", "nosuch" }, { "dump", "nosuch", "out.isd" }, { "export", "nosuch" },
      { "del", "nosuch", "n", "k" } }) do
      local out, err, status = run((table.unpack or unpack)(args))
      assert.equal("", out)
      assert.equal("instate: no store at 'nosuch'\n", err)
      assert.equal(1, status)
    end
    local out, err, status = run("check", "nosuch")
    assert.equal("", out)
    assert.equal("instate: no store or dump file at 'nosuch'\n", err)
    assert.equal(1, status)
    assert.is_false(exists("nosuch"))
    assert.is_false(exists("out.isd"))
  end)

  it("sets values given as Lua literals or JSON, and refuses bad ones naming the byte", function()
    local out, err, status = run("set", "save", "items", "x", "{a = 1,, }")
    assert.equal("", out)
    assert.equal("instate: cannot read VALUE: a value expected, got ',' at byte 7\n"
      .. "try 'instate set --help'\n", err)
    assert.equal(2, status)
    assert.is_false(exists("save"))            -- checked before the store is opened
    out, err, status = run("set", "save", "items", "x", "os.exit(3)")
    assert.equal("instate: cannot read VALUE: unexpected name 'os' (values are nil, booleans, "
      .. "numbers, strings and tables) at byte 0\ntry 'instate set --help'\n", err)
    assert.equal(2, status)

    ok("set", "save", "items", "json", '{"name": "hero", "pos": [1, -2.5], "ok": true}')
    ok("set", "save", "items", "lua", "{1, 2.0, 'x', [10] = 0/0, sub = {deep = true}}")
    ok("set", "save", "items", "neg", "-1")
    local _, e2, s2 = run_stdin('"from stdin"', "set", "save", "items", "stdin", "-")
    assert.equal("", e2)
    assert.equal(0, s2)
    local two_zero = instate.format(2.0)
    assert.equal(lines("{", '  name = "hero",', "  ok = true,", "  pos = {", "    1,", "    -2.5,",
      "  },", "}"), ok("get", "save", "items", "json"))
    assert.equal(lines("{", "  1,", "  " .. two_zero .. ",", '  "x",', "  [10] = 0/0,", "  sub = {",
      "    deep = true,", "  },", "}"), ok("get", "save", "items", "lua"))
    assert.equal('{"name":"hero","ok":true,"pos":[1,-2.5]}\n', ok("get", "save", "items", "json", "--json"))
    assert.equal('{"$lua":"{1, ' .. two_zero .. ', \\"x\\", [10] = 0/0, sub = {deep = true}}"}\n',
      ok("get", "save", "items", "lua", "--json"))
    assert.equal("-1\n", ok("get", "save", "items", "neg"))
    assert.equal('"from stdin"\n', ok("get", "save", "items", "stdin"))
    -- nil deletes
    ok("set", "save", "items", "neg", "nil")
    out, err, status = run("get", "save", "items", "neg")
    assert.equal("", out)
    assert.equal("instate: no key \"neg\" in namespace 'items'\n", err)
    assert.equal(1, status)
    -- what was stored is what the module reads
    local s = assert(instate.open(cwd .. "/save", { readonly = true }))
    local v = s:namespace("items"):get("lua")
    assert.equal("x", v[3])
    assert.is_true(v[10] ~= v[10])
    s:close()
  end)

  it("stat, ls, get and vars print for people and, with --json, for scripts", function()
    make_store()
    local st = stats(cwd .. "/save")
    assert.equal(lines(
      "store       save",
      "format      2",
      "revision    " .. st.revision,
      "map size    67108864",
      "max size    1099511627776",
      "used        " .. st.used_bytes,
      "page size   " .. st.page_size,
      "readers     0 of " .. st.max_readers,
      "namespaces  2",
      "  items  kv     4 records",
      "  state  state  2 records"), ok("stat", "save"))
    assert.equal(('{"path":"save","format":2,"revision":%d,"map_size":67108864,"max_size":1099511627776,'
      .. '"used_bytes":%d,"page_size":%d,"readers":0,"max_readers":%d,"namespaces":['
      .. '{"name":"items","type":"kv","records":4},{"name":"state","type":"state","records":2}]}\n')
      :format(st.revision, st.used_bytes, st.page_size, st.max_readers), ok("stat", "save", "--json"))

    assert.equal(lines("items  kv     4 records", "state  state  2 records"), ok("ls", "save"))
    assert.equal('[{"name":"items","type":"kv","records":4},{"name":"state","type":"state","records":2}]\n',
      ok("ls", "save", "--json"))
    assert.equal(ok("ls", "save", "--json"), ok("--json", "ls", "save"))
    assert.equal(lines(
      [[bytes        "\000\255"]],
      [[potion       2]],
      [[sword        {dmg = 3, name = "Excalibur"}]],
      [["two words"  {1, 2.5}]]), ok("ls", "save", "items"))
    assert.equal(lines([[potion  2]]), ok("ls", "save", "items", "--prefix", "p"))
    assert.equal(lines([[sword  {dmg = 3, name = "Excalibur"}]]), ok("ls", "save", "items", "--prefix=s"))
    assert.equal('[{"key":"bytes","value":{"$lua":"\\"\\\\000\\\\255\\""}},{"key":"potion","value":2},'
      .. '{"key":"sword","value":{"dmg":3,"name":"Excalibur"}},{"key":"two words","value":[1,2.5]}]\n',
      ok("ls", "save", "items", "--json"))
    assert.equal(lines("hp    20", 'name  "hero"'), ok("ls", "save", "state"))

    assert.equal("2\n", ok("get", "save", "items", "potion"))
    assert.equal('"\\000\\255"\n', ok("get", "save", "items", "bytes"))
    assert.equal('{"$lua":"\\"\\\\000\\\\255\\""}\n', ok("get", "save", "items", "bytes", "--json"))

    assert.equal(lines("state  hp    v2  20", 'state  name  v1  "hero"'), ok("vars", "save"))
    assert.equal('[{"namespace":"state","name":"hp","version":2,"value":20},'
      .. '{"namespace":"state","name":"name","version":1,"value":"hero"}]\n', ok("vars", "save", "--json"))

    -- missing namespaces and keys exit with 1; the store is unchanged
    local rev = st.revision
    local out, err, status = run("ls", "save", "nope")
    assert.equal("", out)
    assert.equal("instate: no namespace 'nope' in save\n", err)
    assert.equal(1, status)
    out, err, status = run("get", "save", "items", "nope")
    assert.equal("instate: no key \"nope\" in namespace 'items'\n", err)
    assert.equal(1, status)
    assert.equal(rev, stats(cwd .. "/save").revision)
  end)

  it("set keeps the version of a defstate variable, and the variable reads it", function()
    make_store()
    ok("set", "save", "state", "hp", "99")
    assert.equal(lines("state  hp    v2  99", 'state  name  v1  "hero"'), ok("vars", "save"))
    local out, good = helpers.run_lua([[
      local instate = require "instate"
      assert(instate.setup(...))
      io.write(instate.defstate("hp", 20, { version = 2 }):get(), "\n")
    ]], cwd .. "/save")
    assert(good, out)
    assert.equal("99\n", out)
  end)

  it("cuts long values in listings visibly, keeps TTLs, and reads them in export", function()
    make_store()
    ok("set", "save", "items", "long", '"' .. ("x"):rep(300) .. '"')
    ok("set", "save", "items", "brief", "true", "--ttl", "100")
    local listing = ok("ls", "save", "items", "--prefix", "l")
    assert.equal("long  \"" .. ("x"):rep(199) .. " <truncated: max_bytes 200>\n", listing)
    assert.equal('"' .. ("x"):rep(300) .. '"\n', ok("get", "save", "items", "long"))
    local ttl = assert(ok("export", "save"):match('{"key":"brief","value":true,"ttl":([%d%.]+)}'))
    assert.is_true(tonumber(ttl) > 90 and tonumber(ttl) <= 100)
    local s = assert(instate.open(cwd .. "/save", { readonly = true }))
    assert.equal(2, s:stats().format)
    assert.is_true(s:namespace("items"):ttl("brief") > 90)
    s:close()
    local out, err, status = run("set", "save", "items", "brief", "true", "--ttl", "-1")
    assert.equal("instate: --ttl must be a number of seconds > 0\ntry 'instate set --help'\n", err)
    assert.equal(2, status)
    -- several --ns
    assert.matches("^dumped 8 records in 2 sections to two.isd ",
      ok("dump", "save", "two.isd", "--ns", "items", "--ns", "state"))
  end)

  it("del deletes one key; a missing key exits with 1", function()
    make_store()
    assert.equal("", ok("del", "save", "items", "potion"))
    local out, err, status = run("del", "save", "items", "potion")
    assert.equal("", out)
    assert.equal("instate: no key \"potion\" in namespace 'items'\n", err)
    assert.equal(1, status)
    out, err, status = run("del", "save", "nope", "potion")
    assert.equal("instate: no namespace 'nope' in save\n", err)
    assert.equal(1, status)
    assert.equal(lines("items  kv     3 records", "state  state  2 records"), ok("ls", "save"))
  end)

  it("dump, info, load and check a dump file", function()
    make_store()
    local rev = stats(cwd .. "/save").revision
    local out = ok("dump", "save", "all.isd", "--level", "3")
    local info = assert(instate.dump_info(cwd .. "/all.isd"))
    assert.equal(("dumped 6 records in 2 sections to all.isd (%d bytes, revision %d)\n"):format(info.bytes, rev),
      out)
    local jout = ok("dump", "save", "state.isd", "--ns", "state", "--json")
    local sinfo = assert(instate.dump_info(cwd .. "/state.isd"))
    assert.equal(('{"records":2,"dropped":0,"sections":1,"bytes":%d,"revision":%d}\n'):format(sinfo.bytes, rev),
      jout)
    assert.equal(1, sinfo.sections)

    local ms = info.created_ms
    local created = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(ms / 1000))
      .. (".%03dZ"):format(ms % 1000)
    assert.equal(lines(
      "format    1",
      "revision  " .. rev,
      "created   " .. created,
      "bytes     " .. info.bytes,
      "records   6",
      "sections  2",
      "  items  kv     4 records",
      "  state  state  2 records"), ok("info", "all.isd"))
    assert.equal(('{"format":1,"revision":%d,"created_ms":%d,"bytes":%d,"records":6,"sections":['
      .. '{"name":"items","type":"kv","records":4},{"name":"state","type":"state","records":2}]}\n')
      :format(rev, ms, info.bytes), ok("info", "all.isd", "--json"))

    assert.equal("ok: dump, 6 records in 2 sections\n", ok("check", "all.isd"))
    assert.equal('{"ok":true,"kind":"dump","records":6,"sections":2}\n', ok("check", "all.isd", "--json"))
    assert.equal("ok: store, 6 records in 2 namespaces\n", ok("check", "save"))

    -- load into a new store; then with --replace over a changed one
    assert.equal("loaded 6 records in 2 sections from all.isd\n", ok("load", "copy", "all.isd"))
    assert.equal(ok("ls", "save", "items"), ok("ls", "copy", "items"))
    assert.equal(ok("vars", "save"), ok("vars", "copy"))
    ok("set", "copy", "items", "extra", "1")
    assert.equal(('{"records":6,"expired":0,"sections":2,"revision":%d}\n'):format(rev),
      ok("load", "copy", "all.isd", "--replace", "--json"))
    assert.equal(ok("ls", "save", "items"), ok("ls", "copy", "items"))

    -- a missing dump: exit 1, and no store is created
    local o2, err, status = run("load", "fresh", "missing.isd")
    assert.equal("", o2)
    assert.equal("instate: no dump file at 'missing.isd'\n", err)
    assert.equal(1, status)
    assert.is_false(exists("fresh"))
    o2, err, status = run("info", "missing.isd")
    assert.equal("instate: no dump file at 'missing.isd'\n", err)
    assert.equal(1, status)
  end)

  it("check exits with 1 on a damaged dump or store, naming the damage", function()
    make_store()
    ok("dump", "save", "all.isd")
    local bytes = helpers.read_file(cwd .. "/all.isd")
    helpers.write_file(cwd .. "/bad.isd", helpers.flip_byte(bytes, #bytes - 10, 0x01))
    local _, msg = instate.dump_info(cwd .. "/bad.isd")
    assert.is_string(msg)
    msg = msg:gsub(cwd:gsub("%p", "%%%0") .. "/", "")      -- the command was given bad.isd
    local out, err, status = run("check", "bad.isd")
    assert.equal("", out)
    assert.equal("instate: damaged: " .. msg .. "\n", err)
    assert.equal(1, status)
    out, err, status = run("check", "bad.isd", "--json")
    assert.equal(('{"ok":false,"kind":"dump","error":%s}\n'):format(('%q'):format(msg)), out)
    assert.equal(1, status)
    out, err, status = run("info", "bad.isd")
    assert.equal("", out)
    assert.matches("^instate: " .. msg:gsub("%p", "%%%0") .. " %(CORRUPT%)\n$", err)
    assert.equal(1, status)
    -- loading it changes nothing
    local before = ok("export", "save")
    out, err, status = run("load", "save", "bad.isd")
    assert.equal(1, status)
    assert.matches("(CORRUPT)", err, 1, true)
    assert.equal(before, ok("export", "save"))

    -- a record whose checksum no longer matches, written behind the store's back
    helpers.put_raw(cwd .. "/save", "items", "potion", "\4\0\0\0\0\1")
    out, err, status = run("check", "save")
    assert.equal("damaged record items potion\n", out)
    assert.equal("instate: 1 item damaged of 6 records\n", err)
    assert.equal(1, status)
    out, err, status = run("check", "save", "--json")
    assert.equal('{"ok":false,"kind":"store","records":6,"namespaces":2,"corrupt":[{"namespace":"items",'
      .. '"key":"potion"}],"corrupt_namespaces":[]}\n', out)
    assert.equal(1, status)
    out, err, status = run("get", "save", "items", "potion")
    assert.equal(1, status)
    assert.matches("CORRUPT", err, 1, true)
  end)

  it("export writes JSON that JSON readers read, and import reads it back", function()
    make_store()
    ok("set", "save", "odd", "inf", "1/0")
    ok("set", "save", "odd", "\1bin", "true")
    ok("set", "save", "odd", "mixed", "{1, 2, x = 3}")
    ok("set", "save", "odd", "one", '{"$lua": 1}')
    -- beyond 2^53 on the Luas with 64-bit integers; 2^53 on the others
    local big = require("instate.compat").integers and "9007199254740993" or "9007199254740992"
    ok("set", "save", "odd", "big", big)
    local rev = stats(cwd .. "/save").revision
    local out = ok("export", "save")
    assert.equal('{"instate_export":1,"revision":' .. rev .. ',"namespaces":['
      .. '{"name":"items","type":"kv","records":['
      .. '{"key":"bytes","value":{"$lua":"\\"\\\\000\\\\255\\""}},{"key":"potion","value":2},'
      .. '{"key":"sword","value":{"dmg":3,"name":"Excalibur"}},{"key":"two words","value":[1,2.5]}]},'
      .. '{"name":"odd","type":"kv","records":['
      .. '{"key":"\\u0001bin","value":true},{"key":"big","value":' .. big .. '},'
      .. '{"key":"inf","value":{"$lua":"1/0"}},'
      .. '{"key":"mixed","value":{"$lua":"{1, 2, x = 3}"}},{"key":"one","value":{"$lua":"{[\\"$lua\\"] = 1}"}}]},'
      .. '{"name":"state","type":"state","records":['
      .. '{"key":"hp","value":20,"version":2},{"key":"name","value":"hero","version":1}]}]}\n', out)
    -- python's json reads it, integers exactly
    helpers.write_file(cwd .. "/export.json", out)
    local py, good = helpers.shell("/usr/bin/python3 -c " .. q(
      "import json,sys; d=json.load(open(sys.argv[1])); print(d['namespaces'][1]['records'][1]['value'])")
      .. " " .. q(cwd .. "/export.json") .. " 2>&1")
    assert(good, py)
    assert.equal(big .. "\n", py)

    assert.equal("imported 11 records in 3 namespaces from export.json\n", ok("import", "copy", "export.json"))
    local again = ok("export", "copy")
    assert.equal(out:gsub('"revision":%d+', ""), again:gsub('"revision":%d+', ""))
    assert.equal(ok("vars", "save"), ok("vars", "copy"))
    local s = assert(instate.open(cwd .. "/copy", { readonly = true }))
    assert.equal(1 / 0, s:namespace("odd"):get("inf"))
    assert.equal(1, s:namespace("odd"):get("one")["$lua"])
    s:close()

    -- import from standard input, and a file that is not an export
    local _, e1, s1 = run_stdin(out, "import", "copy2", "-", "--json")
    assert.equal("", e1)
    assert.equal(0, s1)
    local o2, err, status = run_stdin('{"instate_export": 1, "namespaces": [{"name": "x"}]}', "import", "c3", "-")
    assert.equal("", o2)
    assert.equal("instate: - is not an instate export: namespaces[1]: name, type (kv or state) and records "
      .. "expected\n", err)
    assert.equal(2, status)
    o2, err, status = run_stdin('{"instate_export": 1, "namespaces": [}', "import", "c3", "-")
    assert.equal("instate: cannot read -: a value expected, got '}' at byte 37\ntry 'instate import --help'\n", err)
    assert.equal(2, status)
    assert.is_false(exists("c3"))
  end)

  it("runs the README's Tools session as written", function()
    local readme = assert(helpers.read_file(helpers.source_dir() .. "/README.md"))
    local section = assert(readme:match("\n## Tools\n(.-)\n## "))
    local script = assert(section:match("```sh\n(.-)```"))
    assert.matches("instate import restored save.json", script, 1, true)
    local bindir = BIN:match("^(.*)/[^/]*$")
    helpers.write_file(cwd .. "/session.sh", "set -e\n" .. script)
    local out, err, status = shell_status(("cd %s && PATH=%s:$PATH %s sh session.sh")
      :format(q(cwd), q(bindir), ENV))
    assert.equal("", err)
    assert.equal(0, status)
    assert.matches('\n{"dmg":3,"name":"Excalibur"}\nitems  kv  3 records\n', out, 1, true)
    assert.matches("\nok: dump, 2 records in 1 section\nok: store, 2 records in 1 namespace\n", out, 1, true)
    assert.is_true(exists("restored/data.mdb"))
  end)

  it("is installed by cmake --install and runs there with no module path set", function()
    local prefix = helpers.tmpdir()
    local out, good = helpers.shell(("cmake --install %s --prefix %s 2>&1"):format(q(helpers.build_dir()), q(prefix)))
    assert(good, out)
    local first = helpers.read_file(prefix .. "/bin/instate"):match("^[^\n]*")
    assert.matches("^#!/", first)
    assert.matches(helpers.lua_bin, first, 1, true)
    local o2, ok2 = helpers.shell(("cd %s && env -u LUA_PATH -u LUA_CPATH %s --version 2>&1")
      :format(q(cwd), q(prefix .. "/bin/instate")))
    assert(ok2, o2)
    assert.equal(("instate %s (%s)\n"):format(instate._VERSION, jit and jit.version or _VERSION), o2)
  end)
end)
