#!/bin/sh
# Build Lua 5.4 (lua54.dll, lua.exe) and LuaJIT (lua51.dll, luajit.exe: the
# ABI LÖVE 11 ships) for 64-bit Windows with mingw-w64, from Debian's source
# packages, into OUT/lua5.4 and OUT/luajit (each: bin/ include/ lib/).
#
#   build-luas.sh OUT LUA54_VERSION LUAJIT_VERSION
#
# The sources: DEBIAN_SRC, a directory where the two are already unpacked
# (lua5.4-5.4.4/, luajit-2.1.0.../), or else `apt-get source` of exactly
# these versions into OUT/src (deb-src is enabled first when run as root).
# A Lua already built in OUT is kept: CI builds each once per build dir.
set -eu
out=$1 lua54_ver=$2 luajit_ver=$3
cross=x86_64-w64-mingw32-
cc=${cross}gcc
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The unpacked source of package $1 at Debian version $2 (upstream part
# before the last '-', epoch-less): prints its directory.
source_dir() {
  pkg=$1 ver=$2 upstream=${2%-*}
  for d in ${DEBIAN_SRC:+"$DEBIAN_SRC/$pkg-$upstream"} "$out/src/$pkg-$upstream"; do
    if [ -d "$d" ]; then echo "$d"; return; fi
  done
  mkdir -p "$out/src"
  if ! (cd "$out/src" && apt-get source --only-source -qq "$pkg=$ver" >&2); then
    if [ "$(id -u)" = 0 ] && ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d; then
      echo "enabling deb-src in /etc/apt/sources.list.d/debian.sources" >&2
      sed -i 's/^Types: deb$/Types: deb deb-src/' /etc/apt/sources.list.d/debian.sources
      apt-get update -qq >&2
      (cd "$out/src" && apt-get source --only-source -qq "$pkg=$ver" >&2)
    else
      echo "cannot get the source of $pkg $ver: enable deb-src, or set DEBIAN_SRC" >&2
      return 1
    fi
  fi
  echo "$out/src/$pkg-$upstream"
}

# Lua 5.4 as its own Makefile's mingw target builds it (LUA_BUILD_AS_DLL,
# lua54.dll, lua.exe on it), with Debian's patches to the C sources (two
# CVE fixes); Debian's build-system patch is Linux packaging, not used.
build_lua54() {
  dst=$out/lua5.4
  [ -f "$dst/bin/lua.exe" ] && return
  src=$(source_dir lua5.4 "$lua54_ver")/src
  tmp=$out/obj-lua5.4
  rm -rf "$tmp" "$dst"; mkdir -p "$tmp" "$dst/bin" "$dst/include" "$dst/lib"
  for f in "$src"/*.c; do
    case $(basename "$f") in lua.c|luac.c) continue ;; esac
    $cc -O2 -std=gnu99 -DLUA_COMPAT_5_3 -DLUA_BUILD_AS_DLL -c -o "$tmp/$(basename "$f" .c).o" "$f"
  done
  $cc -shared -s -static-libgcc -o "$dst/bin/lua54.dll" "$tmp"/*.o \
    -Wl,--out-implib,"$dst/lib/liblua54.dll.a"
  $cc -O2 -s -static-libgcc -DLUA_COMPAT_5_3 -DLUA_BUILD_AS_DLL -o "$dst/bin/lua.exe" "$src/lua.c" \
    -L"$dst/lib" -llua54
  cp "$src"/lua.h "$src"/luaconf.h "$src"/lualib.h "$src"/lauxlib.h "$src"/lua.hpp "$dst/include/"
  rm -rf "$tmp"
}

# LuaJIT with its own Makefile's cross build (a 64-bit host compiler builds
# the generators), in a copy of the tree: it builds in place.
build_luajit() {
  dst=$out/luajit
  [ -f "$dst/bin/luajit.exe" ] && return
  src=$(source_dir luajit "$luajit_ver")
  tmp=$out/obj-luajit
  rm -rf "$tmp" "$dst"; mkdir -p "$dst/bin" "$dst/include" "$dst/lib"
  cp -r "$src" "$tmp"
  make -s -C "$tmp/src" HOST_CC=gcc CROSS=$cross TARGET_SYS=Windows \
    TARGET_LDFLAGS=-static-libgcc -j "${JOBS:-2}" >/dev/null
  cp "$tmp/src/lua51.dll" "$tmp/src/luajit.exe" "$dst/bin/"
  mkdir -p "$dst/bin/lua/jit"
  cp "$tmp/src/jit/"*.lua "$dst/bin/lua/jit/"
  # mingw links a DLL directly: no import library needed.
  cp "$tmp/src/lua51.dll" "$dst/lib/"
  for h in lua.h luaconf.h lualib.h lauxlib.h luajit.h lua.hpp; do cp "$tmp/src/$h" "$dst/include/"; done
  rm -rf "$tmp"
}

build_lua54
build_luajit
echo "Windows Luas in $out: lua5.4/bin/lua.exe, luajit/bin/luajit.exe"
