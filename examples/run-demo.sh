#!/bin/sh
# `make demo`: the defstate demo, run as separate fresh processes against a
# scratch store, so that every start really begins from the disk.
set -eu
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$(pwd)/$BUILD ;; esac
export LUA_CPATH="$BUILD/lib/?.so;;"
export LUA_PATH="lua/?.lua;lua/?/init.lua;;"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/instate-demo.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
save="$scratch/save"

run() {
  echo
  echo "== $1"
  shift
  lua5.4 examples/demo.lua "$@"
}

echo "instate demo: a dungeon game whose variables restore themselves."
echo "Store: $save (a scratch directory, removed at the end)"
run "start 1: a fresh process, nothing saved yet" "$save" v1
run "start 2: another fresh process: the state is simply there" "$save" v1
run "start 3: the game is updated to hero version 2 (a purse for gems)" "$save" v2
run "start 4: version 2 again: already migrated, nothing to do" "$save" v2
run "the value codec: what instate.encode/decode keep exactly" codec
