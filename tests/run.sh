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
# A brief libFuzzer run of every target (BERTH_FUZZ_SECONDS each, 15 by default) on a
# clang build whose core is instrumented; new inputs go to a scratch directory, crashes to
# build-fuzz/. Skipped, and said so, where clang is not installed.
fuzz() {
    if ! command -v clang >/dev/null; then
        echo "fuzz: clang not found; libFuzzer runs skipped"
        return 0
    fi
    if [ ! -f build-fuzz/build.ninja ]; then
        CC=clang meson setup build-fuzz -Dfuzz=true >/dev/null || { echo "meson setup build-fuzz failed"; return 1; }
    fi
    local targets="conf:yaml http:http http_client:http_client json:json api:api docker_events:docker_events docker_json:docker_json sse:sse quota:quota caddy_json:caddy_json matrix_json:matrix_json" t frc=0
    ninja -C build-fuzz $(for t in $targets; do echo "tests/fuzz/fuzz_${t%%:*}"; done) || return 1
    for t in $targets; do
        local name=fuzz_${t%%:*} scratch log
        scratch=$(mktemp -d) log=build-fuzz/$name.log
        if build-fuzz/tests/fuzz/$name -max_total_time="${BERTH_FUZZ_SECONDS:-15}" \
            -artifact_prefix=build-fuzz/$name- "$scratch" "tests/fuzz/corpus/${t##*:}" >"$log" 2>&1; then
            passed=$((passed + 1))
            echo "$name: $(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2) edges," \
                 "$(grep -o 'Done [0-9]* runs' "$log" | cut -d' ' -f2) runs"
        else
            failed=$((failed + 1)) frc=1
            echo "$name FAILED:"; tail -40 "$log"
        fi
        rm -rf "$scratch"
    done
    return $frc
}

rc=0
run build-test --buildtype=debugoptimized || rc=1
run build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false || rc=1
fuzz || rc=1
echo "$passed passed, $failed failed"
exit $rc
