rockspec_format = "3.0"
package = "instate"
version = "scm-1"

source = {
   url = "git+file:///dev/null/instate.git",
}

description = {
   summary = "A durable state store for Lua on LMDB",
   detailed = [[
      instate keeps Lua state across runs: an LMDB-backed store with named
      namespaces, atomic transactions, per-key TTLs and a revision counter;
      an exact MessagePack codec for Lua values (integers vs floats, NaN,
      -0.0, binary strings, shared tables and cycles) that never executes
      code from data; defstate-style variables that restore themselves at
      start-up; and portable, checksummed, compressed dump files.
   ]],
   license = "MIT",
   labels = { "database", "lmdb", "msgpack", "persistence", "serialization" },
}

dependencies = {
   "lua >= 5.1, < 5.5",
}

-- LMDB and zstd: the system's where their headers and libraries are found
-- (Debian: liblmdb-dev, libzstd-dev), else the pinned sources carried in
-- third_party/, built in (CMakeLists.txt, INSTATE_BUNDLED_DEPS=AUTO), so the
-- rock builds on a machine with neither.
build = {
   type = "cmake",
   variables = {
      CMAKE_BUILD_TYPE = "Release",
      CMAKE_INSTALL_PREFIX = "$(PREFIX)",
      INSTATE_BUNDLED_DEPS = "AUTO",
      INSTATE_TESTS = "OFF",
      INSTATE_INSTALL_CORE = "OFF",
      INSTATE_LUA_INCLUDE_DIR = "$(LUA_INCDIR)",
      LUA_CMOD_DIR = "$(LIBDIR)",
      LUA_LMOD_DIR = "$(LUADIR)",
   },
   platforms = {
      -- A Windows module links the Lua DLL it is loaded into.
      windows = {
         variables = {
            INSTATE_LUA_LIBRARY = "$(LUA_LIBDIR)/$(LUALIB)",
         },
      },
   },
   -- the instate command; luarocks wraps it to run with this Lua
   install = { bin = { instate = "bin/instate" } },
   copy_directories = { "docs" },
}
