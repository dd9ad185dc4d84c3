#!/bin/sh
# The Lua smoke suite (smoke.lua suite) under a Windows Lua in Wine, in a
# scratch directory; then, from the Linux side, the files it wrote: the
# non-ASCII store and dump under their UTF-8 names, and the sizes of the
# data files (the initial one, and after growth).
#
#   smoke.sh WINE LUA.EXE MODULE_DIR      (MODULE_DIR holds instate/core.dll)
set -eu
wine=$1 lua=$2 lib=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/instate-win-smoke.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/sauvegarde-é"
# Windows paths of the Unix files: Wine's Z: drive is the Unix root.
WINEDEBUG=-all INSTATE_CPATH="Z:$lib/?.dll" \
  "$wine" "Z:$lua" "Z:$src/spec/windows/smoke.lua" suite "Z:$tmp"
for f in "sauvegarde-é/日本/data.mdb" "sauvegarde-é/日本.isd"; do
  if [ ! -f "$tmp/$f" ]; then
    echo "smoke.sh: $f is missing; the directory holds:" >&2
    find "$tmp" >&2
    exit 1
  fi
done
echo "as Linux sees them: sauvegarde-é/日本/data.mdb and sauvegarde-é/日本.isd exist;" \
  "basic/data.mdb is $(stat -c %s "$tmp/basic/data.mdb") bytes" \
  "($(du -k "$tmp/basic/data.mdb" | cut -f1) KiB allocated)," \
  "growth/data.mdb $(stat -c %s "$tmp/growth/data.mdb") bytes"
