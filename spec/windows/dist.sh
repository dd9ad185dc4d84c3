#!/bin/sh
# What a LÖVE game (or any LuaJIT program) ships on 64-bit Windows, from the
# LuaJIT cross build: NAME/instate/core.dll (against lua51.dll, LÖVE's
# LuaJIT ABI), NAME/instate/*.lua, the licences and a README, as a folder
# and as NAME.zip in OUT. Refuses a core.dll that needs a DLL a player does
# not have (libgcc's, winpthreads'...).
#
#   dist.sh LUAJIT_BUILD_DIR OUT NAME [WINE LUAJIT.EXE]
#
# With WINE and LUAJIT.EXE, the folder is then tried as a game would use it:
# LuaJIT for Windows loads instate from it (package.cpath and package.path
# pointed at it, nothing else) and writes and reads a store.
set -eu
build=$1 out=$2 name=$3 wine=${4:-} luajit=${5:-}
src=$(cd "$(dirname "$0")/../.." && pwd)
dll=$build/lib/instate/core.dll
dir=$out/$name
mkdir -p "$dir/instate" "$dir/licenses"

imports=$(x86_64-w64-mingw32-objdump -p "$dll" | sed -n 's/^[[:space:]]*DLL Name: //p' | tr 'A-Z' 'a-z' | sort)
for d in $imports; do
  case $d in
    lua51.dll|kernel32.dll|msvcrt.dll|ntdll.dll|advapi32.dll|api-ms-win-*) ;;
    *) echo "dist.sh: core.dll needs $d, which a Windows player does not have" >&2; exit 1 ;;
  esac
done
exports=$(x86_64-w64-mingw32-objdump -p "$dll" | grep -c -E '\] (mdb_|ZSTD_|instate_)' || true)
if [ "$exports" != 0 ]; then
  echo "dist.sh: core.dll exports $exports symbols of the core, LMDB or zstd" >&2; exit 1
fi

# Without its debug information (the build's copy keeps it).
x86_64-w64-mingw32-strip --strip-unneeded -o "$dir/instate/core.dll" "$dll"
cp "$src"/lua/instate/*.lua "$dir/instate/"
cp "$src/third_party/lmdb/LICENSE" "$dir/licenses/LMDB-LICENSE.txt"
cp "$src/third_party/zstd/LICENSE" "$dir/licenses/zstd-LICENSE.txt"
licences="LMDB's (OpenLDAP Public License 2.8), zstd's (BSD)"
if [ -f "$src/LICENSE" ]; then
  cp "$src/LICENSE" "$dir/licenses/instate-LICENSE.txt"
  licences="instate's, $licences"
fi
cat > "$dir/README.txt" <<TXT
instate for 64-bit Windows, built for LuaJIT 2.1 (lua51.dll): LÖVE 11.x (64-bit).

  instate/core.dll    the C module (LMDB 0.9.24 and zstd 1.5.4 built in)
  instate/*.lua       the Lua layer (require "instate")
  licenses/           $licences

In a LÖVE game:
  - instate/*.lua go inside the game (the game folder or the .love), as
    instate/init.lua, instate/compat.lua, instate/defstate.lua.
  - the instate folder holding core.dll goes beside the game, in the folder
    love.filesystem.getSourceBaseDirectory() returns: beside the .love file
    or the game folder, or, for a fused game, beside the game's .exe (and
    lua51.dll): <that folder>\instate\core.dll. LÖVE cannot load a DLL
    from inside a .love archive.
  - Before the first require "instate":
      local base = love.filesystem.getSourceBaseDirectory()
      package.cpath = base .. "/?.dll;" .. package.cpath
  - Save under love.filesystem.getSaveDirectory() (%APPDATA%\\LOVE\\<identity>),
    which may hold non-ASCII characters (the user's name): paths are UTF-8.

Dependencies of core.dll: $(echo $imports | tr ' ' ',' | sed 's/,/, /g').
TXT
(cd "$out" && rm -f "$name.zip" && cmake -E tar cf "$name.zip" --format=zip "$name")

if [ -n "$wine" ]; then
  tmp=$(mktemp -d /tmp/instate-dist.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  abs=$(cd "$dir" && pwd)
  WINEDEBUG=-all "$wine" "Z:$luajit" -e "
    local base = 'Z:$abs'
    package.cpath = base .. '/?.dll'
    package.path = base .. '/?.lua;' .. base .. '/?/init.lua'
    local instate = require 'instate'
    local store = assert(instate.open('Z:$tmp/save'))
    assert(store:namespace('n'):set('k', { hp = 3 }))
    assert(store:namespace('n'):get('k').hp == 3)
    store:close()
    print('dist: the folder loads in LuaJIT for Windows (' .. jit.version .. ')')"
fi
echo "dist: $out/$name/ and $out/$name.zip"
find "$dir" -type f | sed "s|^$out/||" | sort
