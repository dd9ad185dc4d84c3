# Thin wrapper around CMake. `make demo` and `make test` do all set-up on a
# fresh Debian machine: they install missing packages when run as root, or
# print the one apt-get line to run and stop.

BUILD      ?= build
SAN_BUILD  ?= build-sanitize
FUZZ_BUILD ?= build-fuzz
BUNDLED_BUILD ?= build-bundled
WIN_BUILD  ?= build-windows
FUZZ_SECONDS ?= 60
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=
MAKEFLAGS += --no-print-directory

# Debian packages: what building needs (all `make demo` installs), what
# testing adds, and what benchmarks add.
BUILD_DEPS = cmake make gcc pkg-config lua5.4 liblua5.4-dev liblmdb-dev libzstd-dev
TEST_DEPS  = lmdb-utils lua-busted luarocks python3-lmdb python3-msgpack lua-messagepack util-linux
DEPS       = $(BUILD_DEPS) $(TEST_DEPS)
BENCH_DEPS = lua-cjson lua-sql-sqlite3 tarantool zstd sqlite3
FUZZ_DEPS  = clang
VALGRIND_DEPS = valgrind
WINDOWS_DEPS  = mingw-w64 wine64 wine dpkg-dev

define need_packages
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else \
	    echo "missing packages; run:"; echo "  sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

# Other Luas: `make test-lua LUA=5.3` builds against that Lua into
# build-lua5.3/ (LUA=luajit: build-luajit/) and runs its C tests and the
# specs registered for it; `make test-luas` does so for 5.1, 5.2, 5.3 and
# LuaJIT.
LUA        ?= 5.4
LUAS       = 5.1 5.2 5.3 luajit
LUA_BUILD  = build-$(if $(filter luajit,$(LUA)),luajit,lua$(LUA))
LUA_DEPS_5.1    = lua5.1 liblua5.1-0-dev
LUA_DEPS_5.2    = lua5.2 liblua5.2-dev
LUA_DEPS_5.3    = lua5.3 liblua5.3-dev
LUA_DEPS_5.4    = lua5.4 liblua5.4-dev
LUA_DEPS_luajit = luajit libluajit-5.1-dev love xvfb xauth
LUA_INTERP = $(if $(filter luajit,$(LUA)),luajit,lua$(LUA))

# Benchmarks: `make bench` runs every bench/*.lua under 5.4 (build/);
# `make bench LUA=luajit` (or 5.1, 5.2, 5.3) builds the module for that Lua
# in its build directory and runs the benches that run on every Lua (codec,
# defstate); `make bench-luas` runs those on all five, one table each.
BENCHES      = $(filter-out bench/bench_compat.lua,$(wildcard bench/*.lua))
BENCHES_LUAS = bench/codec.lua bench/defstate.lua
BENCH_LUAS   = 5.1 5.2 5.3 5.4 luajit
BENCH_BUILD  = $(if $(filter 5.4,$(LUA)),$(BUILD),$(LUA_BUILD))

.PHONY: all build deps deps-build deps-bench deps-fuzz test test-bundled test-lua test-luas test-cross test-windows windows-luas dist-windows demo sanitize bench bench-lua bench-luas fuzz faults valgrind install clean check-portable

all: build

deps:
	$(call need_packages,$(DEPS))

deps-build:
	$(call need_packages,$(BUILD_DEPS))

deps-bench: deps
	$(call need_packages,$(BENCH_DEPS))

deps-fuzz: deps
	$(call need_packages,$(FUZZ_DEPS))

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_ARGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

test: deps build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The whole suite with LMDB and zstd built from third_party/ instead of
# Debian's libraries (what Windows builds and the rockspec's fallback use).
test-bundled: deps
	cmake -S . -B $(BUNDLED_BUILD) -DINSTATE_BUNDLED_DEPS=ON $(CMAKE_ARGS)
	cmake --build $(BUNDLED_BUILD) -j $(JOBS)
	cd $(BUNDLED_BUILD) && ctest --output-on-failure -j $(JOBS)

test-lua: deps
	$(call need_packages,$(LUA_DEPS_$(LUA)))
	cmake -S . -B $(LUA_BUILD) -DINSTATE_LUA=$(LUA) $(CMAKE_ARGS)
	cmake --build $(LUA_BUILD) -j $(JOBS)
	cd $(LUA_BUILD) && ctest --output-on-failure -j $(JOBS)

test-luas:
	@for v in $(LUAS); do \
	  echo "== Lua $$v"; $(MAKE) test-lua LUA=$$v || exit 1; \
	done
	@$(MAKE) test-cross

# Every Lua reads what every other wrote (spec/cross/run.lua): needs
# build/ (make test) and the four build-*/ (make test-lua); a missing one
# fails.
test-cross: build
	@echo "== cross-Lua round trip"
	lua5.4 spec/cross/run.lua $(CURDIR)


# Windows (64-bit), cross-built with Debian's mingw-w64 and tested under
# Wine. `make windows-luas` builds Lua 5.4 (lua54.dll, lua.exe) and LuaJIT
# (lua51.dll, luajit.exe: LÖVE's ABI) for Windows from Debian's source
# packages of exactly these versions (DEBIAN_SRC=dir: already unpacked
# there; else apt-get source) into $(WIN_BUILD)/luas/, once.
# `make test-windows` builds the core, the C tests and instate/core.dll for
# each ($(WIN_BUILD)/lua5.4, $(WIN_BUILD)/luajit), runs them under Wine
# (a prefix of its own in $(WIN_BUILD)/wineprefix), then has the Linux
# build ($(BUILD)) read what Windows wrote and the reverse.
# `make dist-windows`: what a LÖVE game ships, in $(WIN_BUILD)/dist/.
LUA54_DEB_VERSION  = 5.4.4-3+deb12u1
LUAJIT_DEB_VERSION = 2.1.0~beta3+git20220320+dfsg-4.1+deb12u1
WIN_LUAS   = $(abspath $(WIN_BUILD))/luas
WINE       = $(firstword $(wildcard /usr/lib/wine/wine64) wine64)
WIN_ENV    = WINEPREFIX=$(abspath $(WIN_BUILD))/wineprefix WINEDEBUG=-all
WIN_CMAKE  = -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/mingw-w64-x86_64.cmake \
  -DINSTATE_WINEPREFIX=$(abspath $(WIN_BUILD))/wineprefix
WIN_CMAKE_lua5.4 = -DINSTATE_LUA=5.4 -DINSTATE_LUA_INCLUDE_DIR=$(WIN_LUAS)/lua5.4/include \
  -DINSTATE_LUA_LIBRARY=$(WIN_LUAS)/lua5.4/lib/liblua54.dll.a \
  -DINSTATE_WINDOWS_LUA=$(WIN_LUAS)/lua5.4/bin/lua.exe
WIN_CMAKE_luajit = -DINSTATE_LUA=luajit -DINSTATE_LUA_INCLUDE_DIR=$(WIN_LUAS)/luajit/include \
  -DINSTATE_LUA_LIBRARY=$(WIN_LUAS)/luajit/lib/lua51.dll \
  -DINSTATE_WINDOWS_LUA=$(WIN_LUAS)/luajit/bin/luajit.exe
# The version: src/instate.h's, as CMake reads it.
WIN_VERSION = $(shell sed -n 's/^\#define INSTATE_VERSION_\(MAJOR\|MINOR\|PATCH\) *\([0-9]*\)$$/\2/p' src/instate.h | paste -sd.)

windows-luas:
	$(call need_packages,$(WINDOWS_DEPS))
	@JOBS=$(JOBS) sh spec/windows/build-luas.sh $(WIN_LUAS) $(LUA54_DEB_VERSION) $(LUAJIT_DEB_VERSION)

# One cross build per Windows Lua: $(WIN_BUILD)/lua5.4, $(WIN_BUILD)/luajit.
windows-build-%: windows-luas
	cmake -S . -B $(WIN_BUILD)/$* $(WIN_CMAKE) $(WIN_CMAKE_$*) $(CMAKE_ARGS)
	cmake --build $(WIN_BUILD)/$* -j $(JOBS)

test-windows: deps build windows-build-lua5.4 windows-build-luajit
	@# The prefix is made once, by one process (tests run in parallel).
	@[ -d $(WIN_BUILD)/wineprefix ] || { echo "setting up the Wine prefix"; \
	  $(WIN_ENV) $(WINE) cmd /c exit >/dev/null 2>&1; true; }
	cd $(WIN_BUILD)/lua5.4 && $(WIN_ENV) ctest --output-on-failure -j $(JOBS)
	cd $(WIN_BUILD)/luajit && $(WIN_ENV) ctest --output-on-failure -j $(JOBS)
	$(WIN_ENV) sh spec/windows/interop.sh $(WINE) $(WIN_BUILD) $(BUILD)

dist-windows: windows-build-luajit
	rm -rf $(WIN_BUILD)/dist
	@[ -d $(WIN_BUILD)/wineprefix ] || { echo "setting up the Wine prefix"; \
	  $(WIN_ENV) $(WINE) cmd /c exit >/dev/null 2>&1; true; }
	$(WIN_ENV) sh spec/windows/dist.sh $(WIN_BUILD)/luajit $(WIN_BUILD)/dist \
	  instate-$(WIN_VERSION)-windows-x64-luajit $(WINE) $(WIN_LUAS)/luajit/bin/luajit.exe

demo: deps-build build
	@BUILD=$(BUILD) sh examples/run-demo.sh

sanitize: deps
	cmake -S . -B $(SAN_BUILD) -DINSTATE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS)

ifeq ($(LUA),5.4)
bench: deps-bench build
	@for b in $(BENCHES); do \
	  echo "== $$b"; \
	  LUA_CPATH="$(BUILD)/lib/?.so;;" LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" \
	    INSTATE_BUILD_DIR=$(BUILD) lua5.4 $$b || exit 1; \
	done
else
bench: bench-lua
endif

# The module and the LMDB floor program only: what the benches load and run.
bench-lua: deps-bench
	$(call need_packages,$(filter-out love xvfb xauth,$(LUA_DEPS_$(LUA))))
	@test -f $(BENCH_BUILD)/CMakeCache.txt || cmake -S . -B $(BENCH_BUILD) -DINSTATE_LUA=$(LUA) $(CMAKE_ARGS)
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target instate_lua bench_lmdb_floor
	@for b in $(BENCHES_LUAS); do \
	  echo "== $$b ($(LUA_INTERP))"; \
	  LUA_CPATH="$(BENCH_BUILD)/lib/?.so;;" LUA_PATH="lua/?.lua;lua/?/init.lua;bench/?.lua;;" \
	    INSTATE_BUILD_DIR=$(BENCH_BUILD) $(LUA_INTERP) $$b || exit 1; \
	done

bench-luas:
	@for v in $(BENCH_LUAS); do \
	  echo "=== Lua $$v"; $(MAKE) bench-lua LUA=$$v || exit 1; \
	done

fuzz: deps-fuzz
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DINSTATE_FUZZ=ON -DINSTATE_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@for f in $(FUZZ_BUILD)/*_fuzz; do \
	  name=$$(basename $$f); mkdir -p $(FUZZ_BUILD)/corpus/$$name; \
	  echo "== $$name for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    $(FUZZ_BUILD)/corpus/$$name spec/fuzz/seeds/$$name || exit 1; \
	done

# Every fault point of every operation, with EIO and ENOSPC, once and
# persistent, and every allocator point (make test runs a reduced set).
faults: deps build
	@LUA_CPATH="$(abspath $(BUILD))/lib/?.so;;" \
	  LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	  INSTATE_BUILD_DIR=$(abspath $(BUILD)) INSTATE_SOURCE_DIR=$(CURDIR) \
	  INSTATE_FAULT_SHIM=$(abspath $(BUILD))/fault/libfaultshim.so \
	  lua5.4 spec/fault/driver.lua --full

# The specs under valgrind, but LÖVE's (it needs the LuaJIT build; busted's
# --exclude-pattern is a Lua pattern, so its dash is escaped).
valgrind: deps build
	$(call need_packages,$(VALGRIND_DEPS))
	@LUA_CPATH="$(abspath $(BUILD))/lib/?.so;;" \
	  LUA_PATH="$(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;" \
	  INSTATE_BUILD_DIR=$(abspath $(BUILD)) INSTATE_SOURCE_DIR=$(CURDIR) INSTATE_VALGRIND=1 \
	  valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
	    lua5.4 /usr/bin/busted --ignore-lua --exclude-pattern=70%-love_spec spec

# The portability rule (docs/DESIGN.md, Portability): no file of the core
# or the binding but src/instate_os.[ch] calls the OS, and the core compiles
# for Windows with mingw-w64 (-fsyntax-only, warnings are errors; lmdb.h
# and zstd.h are Debian's, copied so that no glibc header comes along).
MINGW_CC   ?= x86_64-w64-mingw32-gcc
OS_CALLS   = (open|openat|stat|fstat|lstat|fstatat|statvfs|fstatvfs|rename|fsync|fdatasync|mkdir|unlink|unlinkat|flock|fcntl|sysconf|clock_gettime|mkstemp|opendir|readdir|ftruncate|lseek|pread|pwrite|read|write|close|geteuid|sched_yield|posix_fallocate|fallocate|CreateFile[AW]?|MoveFileEx[AW]?)\(
check-portable:
	@if grep -nE '(^|[^_a-zA-Z0-9.>])$(OS_CALLS)|pthread_|<(unistd|fcntl|pthread|dirent|windows)\.h>|<sys/' \
	    $$(ls src/instate_*.[ch] src/l*.[ch] | grep -v '^src/instate_os\.[ch]$$') | grep -vE ':[0-9]+:\s*(/?\*|//)'; then \
	  echo "OS calls outside src/instate_os.[ch] (above)"; exit 1; fi
	@command -v $(MINGW_CC) >/dev/null || { echo "no $(MINGW_CC): apt-get install gcc-mingw-w64-x86-64"; exit 1; }
	@d=$$(mktemp -d) && cp /usr/include/lmdb.h /usr/include/zstd.h /usr/include/zstd_errors.h $$d/ && \
	  for f in src/instate_*.c; do \
	    $(MINGW_CC) -std=c99 -fsyntax-only -Wall -Wextra -Wshadow -Wno-unused-parameter -Werror \
	      -Isrc -I$$d $$f || { rm -rf $$d; exit 1; }; \
	  done; rm -rf $$d
	@echo "check-portable: OS calls only in src/instate_os.[ch]; src/instate_*.c compile with $(MINGW_CC)"

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(FUZZ_BUILD) $(BUNDLED_BUILD) $(WIN_BUILD) build-lua5.1 build-lua5.2 build-lua5.3 build-lua5.4 build-luajit
