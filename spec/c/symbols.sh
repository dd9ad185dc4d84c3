#!/bin/sh
# The exported symbols are the declared ones:
#   symbols.sh SRC_DIR LIBINSTATE_SO [CORE_SO LIBINSTATE_LUA_A]
# libinstate.so exports exactly what src/instate.h declares INSTATE_API,
# the module core.so luaopen_instate_core alone, and libinstate_lua.a
# defines every INSTATE_API of src/instate_lua.h (and instate.h's none:
# they come from libinstate.a).
set -eu
src=$1 so=$2 core=${3:-} embed=${4:-}
tmp=$(mktemp -d /tmp/instate-symbols.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0

# A header as one line, without its comments and preprocessor lines.
code() {
	grep -v '^[[:space:]]*#' "$1" | tr '\n' ' ' | sed 's:/\*\([^*]\|\*\+[^*/]\)*\*\+/: :g'
}
# The names INSTATE_API declares in a header (a declaration may span lines).
declared() {
	code "$1" | grep -oE 'INSTATE_API[^;(]*\(' |
		sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\($/\1/' | sort -u
}
# The defined global symbols of a file, as nm shows them (-D: the dynamic
# table), without the linker's own.
defined() {
	nm $1 --defined-only "$2" | awk 'NF == 3 && $2 ~ /^[A-Z]$/ { print $3 }' |
		grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u
}
same() { # what, want file, got file
	if ! diff -u "$2" "$3" > "$tmp/diff"; then
		echo "$1 (- declared, + exported):"; sed 1,2d "$tmp/diff"; fail=1
	else
		echo "$1: $(wc -l < "$3") symbols, as declared"
	fi
}

declared "$src/instate.h" > "$tmp/api"
[ -s "$tmp/api" ] || { echo "no INSTATE_API declaration found in $src/instate.h"; exit 1; }
# Every function the header declares is INSTATE_API (a prototype without
# it would be hidden, and missing from the list above).
code "$src/instate.h" |
	grep -oE '(^|[;}{] *)[A-Za-z_][A-Za-z0-9_ *]*[ *]instate_[a-z0-9_]+ *\(' |
	grep -v 'INSTATE_API' | grep -v typedef > "$tmp/unmarked" || true
if [ -s "$tmp/unmarked" ]; then
	echo "declared without INSTATE_API in instate.h:"; cat "$tmp/unmarked"; fail=1
fi
defined -D "$so" > "$tmp/so"
same "libinstate.so" "$tmp/api" "$tmp/so"

if [ -n "$core" ]; then
	echo luaopen_instate_core > "$tmp/core-want"
	defined -D "$core" > "$tmp/core"
	same "core.so" "$tmp/core-want" "$tmp/core"
fi
if [ -n "$embed" ]; then
	declared "$src/instate_lua.h" > "$tmp/lua-api"
	defined "" "$embed" > "$tmp/embed"
	missing=$(comm -23 "$tmp/lua-api" "$tmp/embed")
	core_in=$(comm -12 "$tmp/api" "$tmp/embed")
	if [ -n "$missing" ]; then echo "libinstate_lua.a lacks: $missing"; fail=1; fi
	if [ -n "$core_in" ]; then echo "libinstate_lua.a holds the core's: $core_in"; fail=1; fi
	[ -n "$missing$core_in" ] || echo "libinstate_lua.a: defines $(tr '\n' ' ' < "$tmp/lua-api")"
fi
exit $fail
