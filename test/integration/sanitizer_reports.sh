#!/usr/bin/env bash
# sanitizer_reports — test/run's sanitizer and Valgrind passes see every report, wherever it is.
#
# Compiles test/integration/sanitizer_probe.c with ASan+UBSan, with TSan and plain (into
# $BUILD/sanitizer-probe/), runs each defect the way test/run runs a test (test/lib/sanitizers.sh:
# san_env, the memcheck wrapper) and requires san_scan to count exactly one report naming the
# defect and the program — also when the defect is in a child process and the parent exits 0,
# which an exit-status check alone would miss — and none for the clean program.
# No servers; a few seconds. Skipped by the sanitizer passes themselves (it is their check).
# test-passes: none (it checks these passes' report detection, with builds of its own)
. "$(dirname "$0")/../lib/common.sh"
. "$ROOT/test/lib/sanitizers.sh"

OUT="$ROOT/$BUILD/sanitizer-probe"
mkdir -p "$OUT"
SRC="$ROOT/test/integration/sanitizer_probe.c"
CFLAGS=(-std=c17 -D_GNU_SOURCE -O0 -g -Wall -Wextra -Werror -pthread)
build() {
    local out=$1
    shift
    if ${CC:-cc} "${CFLAGS[@]}" "$@" -o "$OUT/$out" "$SRC" 2>"$OUT/$out.err"; then return 0; fi
    tap_fail "sanitizer_probe compiled ($out: $(head -c 300 "$OUT/$out.err"))"
    return 1
}
build probe-asan -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all &&
    build probe-tsan -fsanitize=thread &&
    build probe-plain || finish
unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
san_defaults

# expect NAME BINARY MODE WHERE WANT_COUNT PATTERN: runs the probe, scans its report folder.
expect() {
    local name=$1 bin=$2 mode=$3 where=$4 want=$5 pattern=$6 dir="$OUT/reports-$1" out rc=0
    rm -rf "$dir"
    mkdir -p "$dir/logs"
    # the probe's output goes where a service's goes: a log under the test's log folder
    if [ "$bin" = probe-plain ]; then
        # shellcheck disable=SC2046 # the wrapper is a command line, split into words on purpose
        $(san_valgrind_wrapper "$dir") "$OUT/$bin" "$mode" $where >"$dir/logs/probe.log" 2>&1 || rc=$?
    else
        san_env "$dir" "$OUT/$bin" "$mode" $where >"$dir/logs/probe.log" 2>&1 || rc=$?
    fi
    out=$(san_scan "$name" "$dir")
    local found
    found=$(grep -c '^   not ok - ' <<<"$out")
    if [ "$found" -eq "$want" ] && { [ "$want" -eq 0 ] || grep -Eq "$pattern" <<<"$out"; }; then
        tap_ok "$name: $found report(s) found (probe exit $rc)${pattern:+, naming '$pattern'}"
    else
        tap_fail "$name: $found report(s) found, want $want matching '$pattern' (probe exit $rc)"
        printf '%s\n' "$out" | head -5 | sed 's/^/#   /'
    fi
}
expect asan-clean        probe-asan clean    child 0 ''
expect asan-overflow     probe-asan overflow child 1 'process probe-asan.*heap-buffer-overflow'
expect asan-overflow-top probe-asan overflow ''    1 'process probe-asan.*heap-buffer-overflow'
expect lsan-leak         probe-asan leak     child 1 'process probe-asan.*64 byte\(s\) leaked'
expect ubsan-overflow    probe-asan ub       child 1 'probe.log.*runtime error: signed integer overflow'
expect tsan-clean        probe-tsan clean    child 0 ''
expect tsan-race         probe-tsan race     child 1 'process probe-tsan.*data race'
expect valgrind-clean    probe-plain clean   ''    0 ''
expect valgrind-leak     probe-plain leak    ''    1 'process probe-plain.*definitely lost: 64 bytes'

# A Valgrind log without a summary (the service was SIGKILLed under memcheck) is no report, and
# san_valgrind_ran tells the pass that nothing was checked.
dir="$OUT/reports-valgrind-killed"
rm -rf "$dir"; mkdir -p "$dir"
# shellcheck disable=SC2046
$(san_valgrind_wrapper "$dir") sleep 30 >/dev/null 2>&1 &
vpid=$!
for _ in $(seq 1 100); do grep -qs 'Command:' "$dir"/valgrind.* && break; sleep 0.1; done
kill -KILL "$vpid" 2>/dev/null
wait "$vpid" 2>/dev/null
if san_valgrind_ran "$dir"; then tap_fail "a memcheck run killed before its exit counts as not checked"
else tap_ok "a memcheck run killed before its exit counts as not checked"; fi
finish
