#!/bin/sh
# Install the build into a scratch prefix, then build consumer.c against it
# with pkg-config (shared, then static) and run it.
set -eu
build=$1 cc=$2 consumer=$3
flags=${CONSUMER_FLAGS:-}  # the sanitizer build adds its flags
tmp=$(mktemp -d /tmp/instate-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
env -u LD_PRELOAD cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name instate.pc)
export PKG_CONFIG_PATH="$(dirname "$pc")"
env -u LD_PRELOAD $cc $flags -o "$tmp/shared" "$consumer" $(pkg-config --cflags --libs instate)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir instate)" "$tmp/shared" "$tmp/store1"
env -u LD_PRELOAD $cc $flags -o "$tmp/static" "$consumer" $(pkg-config --cflags instate) \
  "$(pkg-config --variable=libdir instate)/libinstate.a" $(pkg-config --libs-only-l --static instate | sed 's/-linstate//')
"$tmp/static" "$tmp/store2"
echo "installed tree works through pkg-config"
