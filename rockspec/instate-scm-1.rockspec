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

external_dependencies = {
   LMDB = { header = "lmdb.h", library = "lmdb" },
   ZSTD = { header = "zstd.h", library = "zstd" },
}

build = {
   type = "builtin",
   modules = {
      ["instate.core"] = {
         -- Every file of src/*.c: spec/00-luarocks_spec.lua checks the list.
         sources = {
            "src/instate_buf.c",
            "src/instate_crc32c.c",
            "src/instate_dump.c",
            "src/instate_env.c",
            "src/instate_error.c",
            "src/instate_meta.c",
            "src/instate_mpack.c",
            "src/instate_os.c",
            "src/instate_txn.c",
            "src/lcheck.c",
            "src/lcodec.c",
            "src/lcore.c",
            "src/ldump.c",
            "src/linstate.c",
            "src/liter.c",
            "src/lns.c",
            "src/lopt.c",
            "src/lstore.c",
            "src/ltxn.c",
         },
         defines = { "_POSIX_C_SOURCE=200809L" },
         incdirs = { "src", "$(LMDB_INCDIR)", "$(ZSTD_INCDIR)" },
         libdirs = { "$(LMDB_LIBDIR)", "$(ZSTD_LIBDIR)" },
         libraries = { "lmdb", "zstd", "pthread" },
      },
      ["instate"] = "lua/instate/init.lua",
      ["instate.compat"] = "lua/instate/compat.lua",
      ["instate.defstate"] = "lua/instate/defstate.lua",
      ["instate.format"] = "lua/instate/format.lua",
   },
   -- the instate command; luarocks wraps it to run with this Lua
   install = { bin = { instate = "bin/instate" } },
   copy_directories = { "docs" },
}
