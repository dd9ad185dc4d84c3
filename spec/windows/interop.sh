#!/bin/sh
# Data across systems: a store and a dump written by each Windows build
# (Lua 5.4 and LuaJIT, under Wine) read back by the Linux build, and a store
# and a dump written by the Linux build read under Wine (smoke.lua write,
# smoke.lua read). A store file is LMDB's own: it reads across the two
# because both are little-endian x86-64 with 4 KiB pages (docs/FORMAT.md).
#
#   interop.sh WINE WINDOWS_BUILD_DIR LINUX_BUILD_DIR
set -eu
wine=$1 winbuild=$(cd "$2" && pwd) linbuild=$(cd "$3" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
smoke=$src/spec/windows/smoke.lua
tmp=$(mktemp -d /tmp/instate-win-interop.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export WINEDEBUG=-all

on_linux() { INSTATE_CPATH="$linbuild/lib/?.so" lua5.4 "$smoke" "$@"; }
on_windows() { # LUA: lua5.4 | luajit
  lua=$1; shift
  exe=$winbuild/luas/$lua/bin/$([ "$lua" = luajit ] && echo luajit.exe || echo lua.exe)
  INSTATE_CPATH="Z:$winbuild/$lua/lib/?.dll" "$wine" "Z:$exe" "Z:$smoke" "$1" "Z:$2"
}

for lua in lua5.4 luajit; do
  echo "== written by $lua under Wine, read on Linux"
  mkdir "$tmp/win-$lua"
  on_windows $lua write "$tmp/win-$lua"
  echo "data.mdb written under Wine: $(stat -c %s "$tmp/win-$lua/store/data.mdb") bytes"
  on_linux read "$tmp/win-$lua"
done

echo "== written on Linux, read under Wine"
for lua in lua5.4 luajit; do
  mkdir "$tmp/linux-$lua"
  on_linux write "$tmp/linux-$lua"
  on_windows $lua read "$tmp/linux-$lua"
done
echo "interop: stores and dumps read across Windows (Wine) and Linux"
