--- Fault injection driver, SQLite's way: each operation of spec/fault/ops.lua
-- runs in a child process with the shim (spec/fault/shim.c) failing its Nth
-- counted call, for N = 1, 2, 3, ... until the operation completes without
-- reaching the fault. After every fault point:
--   * the child did not crash (no signal, no abort, no uncaught error);
--   * it returned `nil, msg, code` with the code of the errno (IO for EIO,
--     NOSPACE for ENOSPC, IO for ENOMEM) and a message naming the cause;
--     for an allocator fault Lua's own "not enough memory" raise is
--     accepted too; a success means the fault was absorbed (allowed only for
--     the allocators: an I/O call that failed cannot be taken back);
--   * the handle still in use reads the store (one fault does not disable it);
--   * a fresh process without faults finds exactly the old or the new state,
--     never a mix, with the matching revision (load: the old one on any
--     error), the new one after a success; a dump leaves the old file whole
--     or the new one complete and no temporary file.
--
-- Used by spec/60-faults_spec.lua (a reduced set) and `make faults` (every
-- point): lua5.4 spec/fault/driver.lua [--full] [op ...]. The children run
-- the Lua under test (helpers.lua_bin: the build's, under ctest; else the
-- one running the driver).
local instate = require "instate"
local helpers = require "helpers"
local ops = require "fault.ops"

local driver = {}

local q, read = helpers.sh_quote, helpers.read_file

--- The shim's path: INSTATE_FAULT_SHIM (set by ctest), else in the build.
local function shim_path()
  local p = os.getenv("INSTATE_FAULT_SHIM")
  if p then return p end
  local build = os.getenv("INSTATE_BUILD_DIR") or "build"
  return build .. "/fault/libfaultshim.so"
end

driver.shim_path = shim_path

local function child_cmd(env)
  local shim = shim_path()
  local cpath = shim:match("^(.*)/[^/]*$") .. "/?.so;" .. package.cpath
  local src = os.getenv("INSTATE_SOURCE_DIR") or "."
  local parts = { "env", "LUA_CPATH=" .. q(cpath), "LUA_PATH=" .. q(package.path) }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = helpers.lua_bin .. " " .. q(src .. "/spec/fault/child.lua")
  return table.concat(parts, " ")
end

local SIGNALS = { [4] = "SIGILL", [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE",
                  [9] = "SIGKILL", [11] = "SIGSEGV" }

-- Run one step; the decoded result, or nil and what happened.
local function step(work, env, ...)
  local result, errf = work .. ".result", work .. ".stderr"
  os.remove(result)
  local args = {}
  for i = 1, select("#", ...) do args[i] = q(select(i, ...)) end
  local ok, how, code = helpers.execute_status(child_cmd(env) .. " " .. table.concat(args, " ")
    .. " " .. q(result) .. " 2>" .. q(errf) .. " >/dev/null")
  local data = read(result)
  local err = (read(errf) or ""):gsub("%s+$", "")
  if not ok or not data then
    local sig = how == "signal" and code or (code and code > 128 and code - 128) or nil
    -- Under ASan a fault signal is reported, then aborts: name the signal.
    local asan = err:match("AddressSanitizer: (%u+)")
    if asan then sig = ({ SEGV = 11, BUS = 7 })[asan] or sig end
    local why = sig and ("killed by " .. (SIGNALS[sig] or ("signal " .. sig)))
      or ("exit status " .. tostring(code))
    local summary = err:match("SUMMARY: [^\n]*") or err:sub(-300)
    return nil, why .. (summary ~= "" and (": " .. summary) or "")
  end
  return assert(instate.decode(data))
end

local STRERROR = { EIO = "Input/output error", ENOSPC = "No space left on device",
                   ENOMEM = "Cannot allocate memory" }
local CODE = { EIO = "IO", ENOSPC = "NOSPACE", ENOMEM = "IO" }

-- The checks of one fault point: a list of { check = ..., detail = ... }.
local function judge(name, cfg, r, st, st0, hit)
  local bad = {}
  local function fail(check, detail) bad[#bad + 1] = { check = check, detail = detail } end
  local op = ops[name]
  local alloc = cfg.calls == "alloc"
  local errname = alloc and "ENOMEM" or cfg.errno
  local writes = name ~= "dump"
  local rev0 = st0.revision
  local res = r.res
  local failed = true     -- the operation reported a failure
  if not r.ok then
    local msg = tostring(res[1])
    if not (alloc and msg:find("not enough memory", 1, true)) then
      fail("raise", "raised: " .. msg)
    end
  elseif res[1] == false then
    fail("result", "returned false (the file policy ran on a store error)")
  elseif res[1] == nil then
    local msg, code = res[2], res[3]
    if type(msg) ~= "string" or msg == "" then
      fail("message", "no message: " .. tostring(msg))
    else
      local text = STRERROR[errname]
      local at = msg:find(text, 1, true)
      if not at then
        fail("message", ("message does not name %s: %s"):format(errname, msg))
      elseif msg:find(text, at + #text, true) then
        fail("message", "message repeats itself: " .. msg)
      end
    end
    if code ~= CODE[errname] then
      fail("code", ("code %s, expected %s: %s"):format(tostring(code), CODE[errname], tostring(msg)))
    end
  else
    failed = false
    if not alloc then
      fail("swallowed", ("success reported although %s failed with %s"):format(hit or "a call", cfg.errno))
    end
  end
  if r.after then fail("after", "after the fault, the same handle: " .. r.after) end
  -- The state a fresh process finds.
  local state = st.state
  local newrev = writes and rev0 + 1 or rev0
  if state ~= "old" and state ~= "new" then
    fail("state", state)
  elseif state == "old" and st.revision ~= rev0 then
    fail("state", ("old state at revision %s, was %s"):format(tostring(st.revision), rev0))
  elseif state == "new" and st.revision ~= newrev then
    fail("state", ("new state at revision %s, expected %s"):format(tostring(st.revision), newrev))
  elseif not failed and state ~= "new" then
    fail("state", "success reported but the new state was not committed")
  elseif failed and op.strict and state ~= "old" then
    fail("state", "the store changed although the operation failed")
  end
  if not failed and name == "save_all" and res[1] ~= st.revision then
    fail("result", ("save_all returned %s, the store is at %s"):format(tostring(res[1]), tostring(st.revision)))
  end
  return bad, state
end

driver.judge = judge

-- The report file: the call hit first ("hit NAME N").
local function hit_call(path)
  local data = read(path) or ""
  return data:match("hit (%S+)")
end

local function matches(entry, f)
  for _, k in ipairs({ "op", "errno", "mode", "calls", "check", "hit" }) do
    if entry[k] and entry[k] ~= f[k] then return false end
  end
  return not entry.detail or (f.detail or ""):find(entry.detail) ~= nil
end

--- Run the configurations; returns a summary table:
-- { rows = { {op, calls, errno, mode, points, survived, expected, failed,
--   committed} ... }, failures = {...}, expected = {...}, unused = {...} }.
-- opts: ops (names), configs ({calls, errno, mode}...), points (per calls
-- group, about how many points to try: every Nth point, spread over the
-- calls counted; default every point), xfail (entries), used (a table the
-- indexes of the entries met go in: the caller reports the others), log
-- (function), verbose (log the known breaks too), trace (log every point).
function driver.run(opts)
  local log = opts.log or print
  local base = io.popen("mktemp -d /tmp/instate-faults.XXXXXX"):read("*l")
  local summary = { rows = {}, failures = {}, expected = {}, unused = {} }
  local used = opts.used or {}
  for _, name in ipairs(opts.ops or ops.names) do
    local pristine = base .. "/" .. name .. ".pristine"
    os.execute("mkdir -p " .. q(pristine))
    local p, why = step(pristine, nil, "prepare", name, pristine)
    assert(p, why)
    local st0 = p.state
    assert(st0.state == "old", name .. ": prepared state is " .. tostring(st0.state))
    for _, cfg in ipairs(opts.configs) do
      local row = { op = name, calls = cfg.calls, errno = cfg.calls == "alloc" and "ENOMEM" or cfg.errno,
                    mode = cfg.mode, points = 0, survived = 0, expected = 0, failed = 0,
                    committed = 0, calls_total = 0 }
      local work, report = base .. "/work", base .. "/report"
      local function env_for(n)
        return {
          LD_PRELOAD = ((os.getenv("LD_PRELOAD") or "") ~= "" and (os.getenv("LD_PRELOAD") .. ":") or "")
            .. shim_path(),
          FAULT_CALLS = cfg.calls, FAULT_N = n, FAULT_ERRNO = cfg.errno or "EIO",
          FAULT_PERSIST = (cfg.mode == "persist" or cfg.mode == "full") and "1" or "0",
          FAULT_SHORT = cfg.mode == "full" and "1" or "0",
          FAULT_REPORT = report,
        }
      end
      -- The reduced run tries about opts.points[calls] points spread over
      -- the calls counted in a run without faults.
      local stride = 1
      local limit = opts.points and opts.points[cfg.calls]
      if limit then
        os.execute("rm -rf " .. q(work) .. " && cp -a " .. q(pristine) .. " " .. q(work))
        local r = assert(step(work, env_for(0), "run", name, work))
        stride = math.max(1, math.floor(r.calls / limit))
      end
      local n = 1
      while true do
        os.execute("rm -rf " .. q(work) .. " && cp -a " .. q(pristine) .. " " .. q(work))
        os.remove(report)
        local r, crash = step(work, env_for(n), "run", name, work)
        local hit = hit_call(report)
        local where = { op = name, calls = cfg.calls, errno = row.errno, mode = cfg.mode, n = n, hit = hit }
        local bad, state = {}, nil
        if not r then
          bad = { { check = "crash", detail = crash } }
        elseif r.hits == 0 then
          -- Completed without reaching the fault: the last point.
          local st = assert(step(work, nil, "state", name, work)).state
          if not r.ok or not r.res[1] or st.state ~= "new" then
            bad = { { check = "clean", detail = ("without a fault: %s %s, state %s"):format(
              tostring(r.res[1]), tostring(r.res[2]), tostring(st.state)) } }
          end
          row.calls_total = r.calls
          for _, b in ipairs(bad) do
            b.op, b.calls, b.errno, b.mode, b.n = name, cfg.calls, row.errno, cfg.mode, n
            summary.failures[#summary.failures + 1] = b
            log(("FAIL %s %s/%s/%s N=%d: %s: %s"):format(name, cfg.calls, row.errno, cfg.mode, n, b.check, b.detail))
          end
          break
        else
          local st, serr = step(work, nil, "state", name, work)
          if not st then
            bad = { { check = "state", detail = "reopening failed: " .. serr } }
          else
            bad, state = judge(name, cfg, r, st.state, st0, hit)
          end
        end
        row.points = row.points + 1
        if opts.trace and r then
          log(("  %s N=%d hit %s: ok %s, %s, %s, %s; state %s; after %s"):format(name, n, tostring(hit), tostring(r.ok),
            tostring(r.res[1]), tostring(r.res[2]), tostring(r.res[3]), tostring(state), tostring(r.after)))
        end
        if state == "new" and r and not (r.ok and r.res[1]) then row.committed = row.committed + 1 end
        local unexpected = 0
        for _, b in ipairs(bad) do
          for k, v in pairs(where) do b[k] = v end
          local entry
          for i, e in ipairs(opts.xfail or {}) do
            if matches(e, b) then entry = e; used[i] = true; break end
          end
          local line = ("%s %s/%s/%s N=%d (%s): %s: %s"):format(name, cfg.calls, row.errno, cfg.mode,
            n, hit or "?", b.check, b.detail)
          if entry then
            b.reason = entry.reason
            summary.expected[#summary.expected + 1] = b
            if opts.verbose then log("xfail " .. line .. " [" .. entry.reason .. "]") end
          else
            unexpected = unexpected + 1
            summary.failures[#summary.failures + 1] = b
            log("FAIL " .. line)
          end
        end
        if #bad == 0 then
          row.survived = row.survived + 1
        elseif unexpected == 0 then
          row.expected = row.expected + 1
        else
          row.failed = row.failed + 1
        end
        n = n + stride
        if n > (opts.max_n or 100000) then
          summary.failures[#summary.failures + 1] = { op = name, check = "endless", detail = "no end in sight" }
          break
        end
      end
      summary.rows[#summary.rows + 1] = row
      log(("%-11s %-5s %-6s %-7s %4d points (of %d calls): %4d survived, %3d known breaks, %3d FAILED; %d committed despite the error"):format(
        name, cfg.calls, row.errno, cfg.mode, row.points, row.calls_total, row.survived, row.expected, row.failed, row.committed))
    end
  end
  for i, e in ipairs(opts.xfail or {}) do
    if not used[i] and not opts.used then
      summary.unused[#summary.unused + 1] = e
      log("note: an expected failure not seen in this run (remove it once fixed): " .. e.reason)
    end
  end
  os.execute("rm -rf " .. q(base))
  return summary
end

--- The configurations: every point of every operation with both errnos
-- (full), or the reduced set `make test` runs.
function driver.configs(full)
  local c = {  -- once: the Nth call fails; persist: every one from the Nth; full: a filling disk
    { calls = "io", errno = "EIO", mode = "once" },
    { calls = "io", errno = "ENOSPC", mode = "once" },
    { calls = "io", errno = "ENOSPC", mode = "full" },
  }
  if full then
    table.insert(c, 2, { calls = "io", errno = "EIO", mode = "persist" })
    table.insert(c, 4, { calls = "io", errno = "ENOSPC", mode = "persist" })
  end
  if not os.getenv("INSTATE_SANITIZE") then
    c[#c + 1] = { calls = "alloc", errno = "EIO", mode = "once" }
    if full then c[#c + 1] = { calls = "alloc", errno = "EIO", mode = "persist" } end
  end
  return c
end

if not pcall(debug.getlocal, 4, 1) then
  -- Run as a script: lua5.4 spec/fault/driver.lua [--full] [op ...]
  local full, names = false, {}
  for _, a in ipairs(arg) do
    if a == "--full" then full = true else names[#names + 1] = a end
  end
  local xfail = require "fault.expected"
  local s = driver.run({ ops = #names > 0 and names or nil, configs = driver.configs(full),
    points = not full and { alloc = 40 } or nil, xfail = xfail, verbose = true,
    trace = os.getenv("FAULT_TRACE") == "1" })
  print(("%d unexpected failures, %d known"):format(#s.failures, #s.expected))
  os.exit(#s.failures == 0 and 0 or 1)
end

return driver
