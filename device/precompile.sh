#!/bin/sh
# Bring build/ (beside this script) up to date: the firmware's and the protocol's modules
# compiled with mpy-cross, which the unix port imports like a board would. A 64 KiB heap
# cannot compile the sources themselves. main.py runs this before importing anything.
#   usage: precompile.sh [path of the micropython command]
# mpy-cross is looked for beside that command, then on PATH. Several drives may start at
# once: each writes its own temporary file and renames it into place.
set -e
cd "$(dirname "$0")"
proto=..
IFS=:
for dir in ${MICROPYPATH:-}; do
    if [ -f "$dir/protocol/__init__.py" ]; then
        proto=$dir
        break
    fi
done
unset IFS
tool=mpy-cross
if [ -n "${1:-}" ] && [ -x "$(dirname "$1")/mpy-cross" ]; then
    tool=$(dirname "$1")/mpy-cross
fi
mkdir -p build/fw build/protocol
for src in board.py fw/*.py "$proto"/protocol/*.py; do
    out=build/${src#"$proto"/}
    out=${out%.py}.mpy
    if [ "$out" -nt "$src" ]; then
        continue
    fi
    # One source name for every module: each distinct name would cost heap at run time.
    "$tool" -O3 -s sealkeep -o "$out.$$" "$src"
    mv -f "$out.$$" "$out"
done
