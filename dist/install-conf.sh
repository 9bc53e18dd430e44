#!/bin/sh
# meson install script: puts the default conf.d into place unless one is there already, so
# reinstalling never overwrites an operator's configuration. $1 the defaults, $2 conf.d.
set -eu
dst="${DESTDIR:-}$2"
mkdir -p "$dst"
if ls "$dst"/*.yaml >/dev/null 2>&1; then
    echo "berth: $2 already has configuration; defaults left in $1"
    exit 0
fi
cp "${DESTDIR:-}$1"/*.yaml "$dst"/
echo "berth: default configuration installed in $2"
