#!/bin/sh
# Programs built against an installed instate alone, as users build them:
#   consumers.sh SRC BUILD CC CMAKE LUA BUNDLED
# LUA is this build's INSTATE_LUA (5.1 ... luajit, or OFF); BUNDLED its
# INSTATE_BUNDLED_DEPS. CONSUMER_FLAGS: the sanitizer build's flags.
#  1. the C core alone: instate configured with -DINSTATE_LUA=OFF where no
#     Lua can be found (pkg-config disabled), installed; consumer.c built
#     against that tree through pkg-config (install_check.sh) and through
#     find_package (instate::instate, instate::instate_static), and the
#     config-version file refusing another version;
#  2. this build, installed: find_package, and (with Lua) the c-engine
#     example through find_package and through pkg-config (instate-lua),
#     run twice against one save directory;
#  3. add_subdirectory: a parent project with the source tree inside.
set -eu
src=$1 build=$2 cc=$3 cmake=$4 lua=$5 bundled=$6
flags=${CONSUMER_FLAGS:-}
tmp=$(mktemp -d /tmp/instate-consumers.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
unset LD_PRELOAD LUA_PATH LUA_CPATH LUA_PATH_5_2 LUA_CPATH_5_2 LUA_PATH_5_3 LUA_CPATH_5_3 \
  LUA_PATH_5_4 LUA_CPATH_5_4 || true
jobs=${JOBS:-2}
cfg() { # source build [args...]: configure quietly, print the log on failure
	s=$1 b=$2; shift 2
	"$cmake" -S "$s" -B "$b" -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$flags" \
		-DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" "$@" \
		> "$b.log" 2>&1 || { cat "$b.log"; echo "configure failed: $s"; return 1; }
}
bld() {
	"$cmake" --build "$1" -j "$jobs" > "$1.build.log" 2>&1 ||
		{ tail -40 "$1.build.log"; echo "build failed: $1"; return 1; }
}
fail() { echo "FAIL: $*"; exit 1; }

# The engine's runs: the first saves runs=1 and player "ada"; the second
# restores them (runs=2) and halves the volume in place.
engine_runs() { # engine-binary what
	save="$tmp/save-$2"
	out1=$("$1" "$src/examples/c-engine/game.lua" "$save")
	out2=$("$1" "$src/examples/c-engine/game.lua" "$save")
	want1='lua: run 1, player ada, volume 0.80
c: runs = 1 (version 1)
c: player = "ada" (version 1)
c: settings = {"volume" = 0.8, "fullscreen" = false} (version 1)'
	want2='lua: run 2, player ada, volume 0.40
c: runs = 2 (version 1)
c: player = "ada" (version 1)
c: settings = {"volume" = 0.4, "fullscreen" = false} (version 1)'
	[ "$out1" = "$want1" ] || fail "$2, first run:
$out1
want:
$want1"
	[ "$out2" = "$want2" ] || fail "$2, second run:
$out2
want:
$want2"
	echo "c-engine ($2): restored and read from C"
}

# ---- 1. the C core alone -------------------------------------------------
mkdir "$tmp/none"
PKG_CONFIG_LIBDIR="$tmp/none" PKG_CONFIG_PATH="" cfg "$src" "$tmp/conly" -DINSTATE_LUA=OFF \
	-DINSTATE_TESTS=OFF -DINSTATE_BUNDLED_DEPS="$bundled" -DCMAKE_BUILD_TYPE=Release \
	-DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON
if grep -qiE '^(LUA_|INSTATE_LUA_PROGRAM|PKG_CONFIG_EXECUTABLE:)' "$tmp/conly/CMakeCache.txt"; then
	grep -iE '^(LUA_|INSTATE_LUA_PROGRAM|PKG_CONFIG_EXECUTABLE:)' "$tmp/conly/CMakeCache.txt"
	fail "INSTATE_LUA=OFF looked for Lua"
fi
bld "$tmp/conly"
CONSUMER_FLAGS="$flags" sh "$src/spec/c/install_check.sh" "$tmp/conly" "$cc" "$src/spec/c/consumer.c"
"$cmake" --install "$tmp/conly" --prefix "$tmp/p-conly" > /dev/null
p="$tmp/p-conly"
[ -f "$p/include/instate.h" ] || fail "no instate.h installed"
[ ! -e "$p/include/instate_lua.h" ] || fail "instate_lua.h installed without Lua"
[ -z "$(find "$p" -name '*.lua' -o -name 'core.so' -o -name 'libinstate_lua*' -o -name 'instate-lua.pc' -o -path '*/bin/instate')" ] ||
	fail "Lua files installed by INSTATE_LUA=OFF: $(find "$p" -name '*.lua' -o -name 'core.so' -o -path '*/bin/instate')"
cmakedir=$(dirname "$(find "$p" -name instateConfig.cmake)")
[ -f "$cmakedir/instateConfigVersion.cmake" ] || fail "no instateConfigVersion.cmake"
cfg "$src/spec/c/consumer-cmake" "$tmp/fp-conly" -DCMAKE_PREFIX_PATH="$p" \
	-DCONSUMER_C="$src/spec/c/consumer.c" -DWANT_LUA=OFF
bld "$tmp/fp-conly"
"$tmp/fp-conly/consumer_shared" "$tmp/store-fp1"
"$tmp/fp-conly/consumer_static" "$tmp/store-fp2"
if cfg "$src/spec/c/consumer-cmake" "$tmp/fp-v9" -DCMAKE_PREFIX_PATH="$p" \
	-DCONSUMER_C="$src/spec/c/consumer.c" -DWANT_LUA=OFF -DWANT_VERSION=9.0 > /dev/null 2>&1; then
	fail "find_package(instate 9.0) accepted instate $(sed -n 's/^project.instate VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")"
fi
grep -q 'not compatible\|unsuitable\|version' "$tmp/fp-v9.log" || { cat "$tmp/fp-v9.log"; fail "no version message"; }
echo "C core alone (INSTATE_LUA=OFF): pkg-config and find_package consumers work"

# ---- 2. this build, installed --------------------------------------------
"$cmake" --install "$build" --prefix "$tmp/p-full" > /dev/null
p="$tmp/p-full"
if [ "$lua" = OFF ]; then want_lua=OFF; else want_lua=ON; fi
cfg "$src/spec/c/consumer-cmake" "$tmp/fp-full" -DCMAKE_PREFIX_PATH="$p" \
	-DCONSUMER_C="$src/spec/c/consumer.c" -DWANT_LUA=$want_lua
bld "$tmp/fp-full"
"$tmp/fp-full/consumer_shared" "$tmp/store-fp3"
"$tmp/fp-full/consumer_static" "$tmp/store-fp4"
if [ "$lua" != OFF ]; then
	[ -f "$p/include/instate_lua.h" ] || fail "no instate_lua.h installed"
	cfg "$src/examples/c-engine" "$tmp/engine" -DCMAKE_PREFIX_PATH="$p"
	bld "$tmp/engine"
	engine_runs "$tmp/engine/c-engine" find_package
	pcdir=$(dirname "$(find "$p" -name instate-lua.pc)")
	PKG_CONFIG_PATH="$pcdir" $cc $flags -o "$tmp/engine-pc" "$src/examples/c-engine/main.c" \
		$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags --libs instate-lua)
	engine_runs "$tmp/engine-pc" pkg-config
fi

# ---- 3. add_subdirectory -------------------------------------------------
case $lua in
	luajit) lua_pc=luajit ;;
	OFF) lua_pc="" ;;
	*) lua_pc=lua$lua ;;
esac
cfg "$src/spec/c/consumer-subdir" "$tmp/subdir" -DINSTATE_SOURCE="$src" \
	-DCONSUMER_C="$src/spec/c/consumer.c" -DENGINE_C="$src/examples/c-engine/main.c" \
	-DPARENT_LUA="$lua" -DPARENT_LUA_PC="$lua_pc" -DPARENT_BUNDLED="$bundled"
bld "$tmp/subdir"
"$tmp/subdir/consumer" "$tmp/store-sub"
if [ "$lua" != OFF ]; then
	engine_runs "$tmp/subdir/engine" add_subdirectory
fi
echo "add_subdirectory consumer works"
