#!/usr/bin/env bash
# fuzz_short — a short libFuzzer run of every target in test/fuzz/ as part of `make test`.
#
# Builds the targets (test/fuzz/run, clang + libFuzzer + ASan/UBSan, into $BUILD/fuzz-short so it
# does not race a developer's build/fuzz) and runs each for FUZZ_SHORT_SECONDS (default 8) over
# its committed seed corpus, committed regression inputs (corpus/<name>/regress-*) first. Prints
# one ok / not ok line per target; a crash names its reproducer. No servers are used.
# The whole run stays under ~90 s on this 2-core machine (6-7 targets x 8 s plus the build).
# test-passes: none (an ASan+UBSan libFuzzer run already, with builds of its own)
. "$(dirname "$0")/../lib/common.sh"

seconds=${FUZZ_SHORT_SECONDS:-8}
export FUZZ_BUILD="$BUILD/fuzz-short"
# libFuzzer -max_total_time is per target; test/fuzz/run prints the ok / not ok lines itself.
"$ROOT/test/fuzz/run" --seconds "$seconds"
