#!/usr/bin/env bash
# The docs stay true to the code: each binary's settings table (its --help-markdown output)
# appears in docs/configuration.md verbatim, every binary's --help works, and a bad value is refused with
# the variable and its range. (docs/configuration.md is held to the same tables by deploy_config.sh.)
# test-passes: asan
set -u
. "$(dirname "$0")/../lib/common.sh"

for bin in chatflow-producer chatflow-consumer chatflow-sqs; do
    exe="$CHATFLOW_BIN/$bin"
    if [ ! -x "$exe" ]; then
        tap_fail "$bin is built"
        continue
    fi
    if "$exe" --help >"$TEST_LOGDIR/$bin-help.txt" 2>&1 && grep -q CHATFLOW_ "$TEST_LOGDIR/$bin-help.txt"; then
        tap_ok "$bin --help exits 0 and lists its settings"
    else
        tap_fail "$bin --help exits 0 and lists its settings"
    fi
    if ! "$exe" --help-markdown >"$TEST_LOGDIR/$bin-table.md" 2>&1; then
        tap_fail "$bin --help-markdown exits 0"
        continue
    fi
    if python3 -c 'import sys; t=open(sys.argv[1]).read().strip(); sys.exit(0 if t and t in open(sys.argv[2]).read() else 1)' \
        "$TEST_LOGDIR/$bin-table.md" docs/configuration.md; then
        tap_ok "docs/configuration.md carries $bin's current settings table"
    else
        tap_fail "docs/configuration.md carries $bin's current settings table (regenerate: docs/settings-tables)"
    fi
done

# a bad value stops start-up with a message naming the variable and the accepted range
out=$(CHATFLOW_WS_PORT=70000 "$CHATFLOW_BIN/chatflow-producer" 2>&1)
rc=$?
if [ $rc -ne 0 ] && grep -q 'CHATFLOW_WS_PORT' <<<"$out" && grep -q '0\.\.65535' <<<"$out"; then
    tap_ok "a bad CHATFLOW_WS_PORT stops the producer with the variable and its range"
else
    tap_fail "a bad CHATFLOW_WS_PORT stops the producer with the variable and its range (rc $rc: $out)"
fi
# The repository stands alone: no tracked file refers to material outside it.
outside=$(git ls-files -z | xargs -0 grep -lE '\.\./shared|SPEC\.md|SPEC §|FIELD-NOTES' -- 2>/dev/null | grep -v '^test/integration/docs.sh$')
if [ -z "$outside" ]; then
    tap_ok "no tracked file refers to anything outside the repository"
else
    tap_fail "no tracked file refers to anything outside the repository: $(echo $outside)"
fi
finish
