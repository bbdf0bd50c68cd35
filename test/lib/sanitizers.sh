# test/lib/sanitizers.sh — finding the sanitizer reports and Valgrind errors of every process a
# test starts (test/run --sanitizers, and test/integration/sanitizer_reports.sh, which proves it).
# shellcheck shell=bash
#
#   . test/lib/sanitizers.sh
#   san_defaults                 exports ASAN_OPTIONS, UBSAN_OPTIONS, TSAN_OPTIONS (unless set)
#   san_env DIR CMD...           runs CMD with every sanitized process writing its reports to
#                                DIR/<asan|tsan>.<program>.<pid> (log_path, log_exe_name), and the
#                                test's logs (those of the services it starts) under DIR/logs/
#                                (TEST_LOGDIR for scripts, CHATFLOW_TEST_LOGS for the C test libs)
#   san_valgrind_wrapper DIR     prints the memcheck command line services are started under
#                                (CHATFLOW_SERVICE_WRAPPER); one log per process, DIR/valgrind.<pid>
#   san_scan NAME DIR [LOG...]   prints one "not ok - NAME: report in ..." line per report file or
#                                Valgrind log with errors or definite leaks in DIR, and per log
#                                under DIR/logs/ (and each LOG) that holds a report; "#" notes for
#                                output that is not a report; sets SAN_FOUND to the count
#   san_valgrind_ran DIR         true when at least one process ran to its exit under memcheck
#
# UBSan in the ASan+UBSan build (gcc: libubsan runs as a plug-in of libasan) ignores log_path and
# reports on stderr, which is why the logs are scanned too: a service's stderr is its log.
#
# Contract: a report is found however the process ended (exit, crash, SIGTERM, SIGKILL after the
# report) and whoever started it (a test program's child, a script's background service), because
# it is a file, not an exit status. A report also makes its process exit non-zero
# (-fno-sanitize-recover, ASan/LSan exitcode, TSan exitcode=66, memcheck --error-exitcode=99), so
# a test that checks a service's stop status fails on its own as well.

SAN_REPORT_RE='ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|runtime error:|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|LeakSanitizer)'
SAN_ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

san_defaults() {
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:exitcode=66}
}

san_env() {
    local dir=$1
    shift
    mkdir -p "$dir/logs"
    TEST_LOGDIR="$dir/logs/script" CHATFLOW_TEST_LOGS="$dir/logs" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:log_path=$dir/asan:log_exe_name=1" \
        UBSAN_OPTIONS="${UBSAN_OPTIONS:-}:log_path=$dir/ubsan:log_exe_name=1" \
        TSAN_OPTIONS="${TSAN_OPTIONS:-}:log_path=$dir/tsan:log_exe_name=1" "$@"
}

san_valgrind_wrapper() {
    printf '%s' "valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite" \
        " --errors-for-leak-kinds=definite --error-exitcode=99 --num-callers=30" \
        " --suppressions=$SAN_ROOT/test/lib/valgrind.supp --log-file=$1/valgrind.%p"
}

# san_program FILE: the program a report or Valgrind log is about (memcheck's "Command:" line, or
# the file name <kind>.<program>.<pid>).
san_program() {
    local exe
    exe=$(grep -m1 -oE 'Command: [^ ]+' "$1" | sed 's/Command: //')
    if [ -n "$exe" ]; then basename "$exe"; return; fi
    exe=$(basename "$1")
    exe=${exe#*.}
    echo "${exe%.*}"
}

san_scan() {
    local name=$1 dir=$2 f what
    shift 2
    SAN_FOUND=0
    # reports on stderr: in the logs of the test and of everything it started
    while IFS= read -r -d '' f; do
        what=$(grep -E -m2 "$SAN_REPORT_RE" "$f" | tr '\n' ' ')
        SAN_FOUND=$((SAN_FOUND + 1))
        printf '   not ok - %s: report in the log %s: %.300s\n' "$name" "$f" "$what"
    done < <({ [ -d "$dir/logs" ] && find "$dir/logs" -type f -print0; [ $# -gt 0 ] && printf '%s\0' "$@"; } |
             xargs -0 -r grep -lZE "$SAN_REPORT_RE" 2>/dev/null)
    for f in "$dir"/*; do
        [ -f "$f" ] || continue
        what=
        case "$(basename "$f")" in
            valgrind.*)
                # clean: "definitely lost: 0 bytes in 0 blocks" (or no leak summary at all when
                # nothing was in use) and "ERROR SUMMARY: 0 errors"
                if grep -Eq 'definitely lost: [1-9]|ERROR SUMMARY: [1-9]' "$f"; then
                    what=$(grep -E 'definitely lost:|ERROR SUMMARY:' "$f" | sed 's/^==[0-9]*== *//' | tr '\n' ' ')
                elif ! grep -q 'ERROR SUMMARY:' "$f"; then
                    printf '   # %s: %s has no memcheck summary (the process was killed before its exit)\n' "$name" "$f"
                fi ;;
            *)
                if grep -Eq "$SAN_REPORT_RE" "$f"; then
                    what=$(grep -E -m3 'SUMMARY:|runtime error:|WARNING: ThreadSanitizer' "$f" | tr '\n' ' ')
                else
                    printf '   # %s: sanitizer output that is not a report: %s\n' "$name" "$f"
                    sed 's/^/   #   /' "$f" | head -5
                fi ;;
        esac
        [ -n "$what" ] || continue
        SAN_FOUND=$((SAN_FOUND + 1))
        printf '   not ok - %s: report in %s (process %s): %.300s\n' "$name" "$f" "$(san_program "$f")" "$what"
    done
}

san_valgrind_ran() { grep -qs 'ERROR SUMMARY:' "$1"/valgrind.*; }
