#!/usr/bin/env bash
# The whole suite, twice: an optimised build with -Werror, and an ASan+UBSan build whose
# berthd must exit 0 with no leak at the end of every test.
set -uo pipefail
cd "$(dirname "$0")/.."
passed=0 failed=0
run() {
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >/dev/null || { echo "meson setup $dir failed"; return 1; }
    fi
    ninja -C "$dir" || return 1
    meson test -C "$dir" --print-errorlogs --num-processes 2
    local rc=$?
    local log="$dir/meson-logs/testlog.json"
    passed=$((passed + $(grep -c '"result": "OK"' "$log")))
    failed=$((failed + $(grep -c '"result": "\(FAIL\|TIMEOUT\|ERROR\)"' "$log")))
    return $rc
}
rc=0
run build-test --buildtype=debugoptimized || rc=1
run build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false || rc=1
echo "$passed passed, $failed failed"
exit $rc
