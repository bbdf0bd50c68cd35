# shellcheck shell=bash
# test/bench/lib.sh — what the benchmark scripts share; sourced, after ROOT, BUILD and OUT are set.
#
#   bench_stack_up NAME   a private stack (deploy/local/stack: PostgreSQL, fauxqs, Redis) in
#                         $CHATFLOW_STACK_DIR — which the caller exports before it sets the EXIT
#                         trap that runs `deploy/local/stack down --purge`, so that trap never
#                         reaches another stack — its endpoints exported, the schema migrated by
#                         $BUILD/chatflow-consumer --migrate; logs $OUT/NAME-stack.log and
#                         $OUT/NAME-migrate.log.
#   sql STATEMENT         one statement on that stack's database, unaligned, quiet.

bench_stack_up() {
    local name=$1
    [ -n "${CHATFLOW_STACK_DIR:-}" ] || { echo "bench_stack_up: CHATFLOW_STACK_DIR is not set" >&2; return 1; }
    deploy/local/stack up >"$OUT/$name-stack.log" 2>&1 || { tail "$OUT/$name-stack.log"; return 1; }
    set -a
    # shellcheck disable=SC1091 # written by deploy/local/stack up
    . "$CHATFLOW_STACK_DIR/stack.env"
    set +a
    export CHATFLOW_MIGRATIONS_DIR="$ROOT/db/migrations"
    "$BUILD/chatflow-consumer" --migrate >"$OUT/$name-migrate.log" 2>&1
}

sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }
