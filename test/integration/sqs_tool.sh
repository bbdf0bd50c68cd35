#!/usr/bin/env bash
# chatflow-sqs setup/stats/purge against the stack's fauxqs (AWS_ENDPOINT_URL_SQS from test/run).
# Messages are put in and attributes read back with plain curl: fauxqs does not check signatures.
# test-passes: asan
set -u
BIN=${CHATFLOW_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build}/chatflow-sqs
fails=0
ok() { echo "ok - $*"; }
nok() { echo "not ok - $*"; fails=$((fails + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else nok "$what"; fi; }

if [ -z "${AWS_ENDPOINT_URL_SQS:-}" ]; then nok "AWS_ENDPOINT_URL_SQS is set (run through test/run)"; exit 1; fi
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
run=$$-$(date +%s)
export CHATFLOW_QUEUE_PREFIX="tooltest-$run-room-" CHATFLOW_DLQ_NAME="tooltest-$run-db-dlq.fifo"
export CHATFLOW_SPILL_QUEUE_NAME="tooltest-$run-db-spill"
export CHATFLOW_QUEUE_SHARDS=2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sqs() { # action json -> answer on stdout
    curl -s -X POST "$AWS_ENDPOINT_URL_SQS/" -H "Content-Type: application/x-amz-json-1.0" \
        -H "X-Amz-Target: AmazonSQS.$1" --data "$2"
}
queue_url() { sqs GetQueueUrl "{\"QueueName\":\"$1\"}" | sed -n 's/.*"QueueUrl":"\([^"]*\)".*/\1/p'; }

"$BIN" setup >"$tmp/setup1" 2>"$tmp/err"
check "setup exits 0 ($(head -c 300 "$tmp/err"))" [ $? -eq 0 ]
check "setup prints one line per queue (2 shards, 2 shard DLQs, db DLQ, spill queue)" [ "$(wc -l <"$tmp/setup1")" -eq 6 ]
check "setup names the shard queue" grep -q "${CHATFLOW_QUEUE_PREFIX}1.fifo" "$tmp/setup1"
check "setup names the shard DLQ" grep -q "${CHATFLOW_QUEUE_PREFIX}2-dlq.fifo" "$tmp/setup1"
check "setup says which shard a queue is" grep -q "${CHATFLOW_QUEUE_PREFIX}2\.fifo .*(shard 2 of 2;" "$tmp/setup1"
check "setup creates no queue past the last shard" bash -c "! grep -q '${CHATFLOW_QUEUE_PREFIX}3' '$tmp/setup1'"
check "setup names the db DLQ" grep -q "$CHATFLOW_DLQ_NAME" "$tmp/setup1"
check "setup names the spill queue" grep -q "$CHATFLOW_SPILL_QUEUE_NAME" "$tmp/setup1"
"$BIN" setup >"$tmp/setup2" 2>&1
check "setup again exits 0 (idempotent)" [ $? -eq 0 ]
check "setup again finds every queue ready" [ "$(grep -c '^ready' "$tmp/setup2")" -eq 6 ]

url1=$(queue_url "${CHATFLOW_QUEUE_PREFIX}1.fifo")
check "shard queue 1 exists ($url1)" [ -n "$url1" ]
attrs=$(sqs GetQueueAttributes "{\"QueueUrl\":\"$url1\",\"AttributeNames\":[\"All\"]}")
check "shard queue is FIFO" grep -q '"FifoQueue":"true"' <<<"$attrs"
check "shard queue long-polls 20 s" grep -q '"ReceiveMessageWaitTimeSeconds":"20"' <<<"$attrs"
check "shard queue retention is the default 345600 s" grep -q '"MessageRetentionPeriod":"345600"' <<<"$attrs"
check "shard queue redrives to its DLQ" grep -q "${CHATFLOW_QUEUE_PREFIX}1-dlq.fifo" <<<"$attrs"
check "redrive after 5 receives" grep -Eq 'maxReceiveCount[^0-9]*5' <<<"$attrs"

CHATFLOW_SQS_RETENTION_SECONDS=7200 "$BIN" setup >"$tmp/setup3" 2>&1
check "setup with a new retention exits 0" [ $? -eq 0 ]
attrs=$(sqs GetQueueAttributes "{\"QueueUrl\":\"$url1\",\"AttributeNames\":[\"MessageRetentionPeriod\"]}")
check "the existing queue was updated to 7200 s" grep -q '"MessageRetentionPeriod":"7200"' <<<"$attrs"

for i in 1 2; do
    sqs SendMessage "{\"QueueUrl\":\"$url1\",\"MessageBody\":\"m$i\",\"MessageGroupId\":\"room-$i\",\"MessageDeduplicationId\":\"d$run-$i\"}" >/dev/null
done
"$BIN" stats >"$tmp/stats" 2>&1
check "stats exits 0" [ $? -eq 0 ]
check "stats has a header" grep -q '^QUEUE' "$tmp/stats"
check "stats shows 2 visible messages in shard 1 (two rooms)" grep -Eq "^${CHATFLOW_QUEUE_PREFIX}1\.fifo +2 +0\$" "$tmp/stats"
check "stats shows an empty shard 2" grep -Eq "^${CHATFLOW_QUEUE_PREFIX}2\.fifo +0 +0\$" "$tmp/stats"

"$BIN" purge >"$tmp/purge" 2>&1
check "purge exits 0" [ $? -eq 0 ]
check "purge prints one line per queue" [ "$(grep -c '^purged' "$tmp/purge")" -eq 6 ]
"$BIN" stats >"$tmp/stats2" 2>&1
check "after purge shard 1 is empty" grep -Eq "^${CHATFLOW_QUEUE_PREFIX}1\.fifo +0 +0\$" "$tmp/stats2"

"$BIN" --queue-shards 3 stats >"$tmp/stats3" 2>"$tmp/err3"
check "stats with a missing queue exits 1" [ $? -eq 1 ]
check "stats shows the missing shard 3" grep -Eq "^${CHATFLOW_QUEUE_PREFIX}3\.fifo +missing" "$tmp/stats3"
check "stats says how many queues are missing and what to do" \
    grep -q '2 queue(s) missing (for 3 shards); run "chatflow-sqs setup" with the same CHATFLOW_QUEUE_SHARDS' "$tmp/err3"
CHATFLOW_QUEUE_SHARDS=0 "$BIN" stats >/dev/null 2>"$tmp/err7"
check "0 shards exits 2" [ $? -eq 2 ]
check "the error names CHATFLOW_QUEUE_SHARDS and its range" grep -q 'CHATFLOW_QUEUE_SHARDS.*1\.\.1000' "$tmp/err7"
"$BIN" --room-max 3 stats >/dev/null 2>&1
check "the old room range is gone: --room-max is an unknown flag (exit 2)" [ $? -eq 2 ]

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 9)
AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$port "$BIN" stats >/dev/null 2>"$tmp/err4"
check "unreachable SQS exits non-zero" [ $? -ne 0 ]
check "unreachable SQS: clear error ($(head -c 200 "$tmp/err4"))" grep -q 'cannot reach SQS' "$tmp/err4"

CHATFLOW_SQS_RETENTION_SECONDS=10 "$BIN" setup >/dev/null 2>"$tmp/err5"
check "retention out of range exits 2" [ $? -eq 2 ]
check "the error names the variable and range" grep -q 'CHATFLOW_SQS_RETENTION_SECONDS.*60..1209600' "$tmp/err5"
"$BIN" frobnicate >/dev/null 2>"$tmp/err6"
check "an unknown command exits 2" [ $? -eq 2 ]
"$BIN" --help >"$tmp/help" 2>&1
check "--help exits 0 and lists the settings" grep -q CHATFLOW_SQS_MAX_RECEIVE_COUNT "$tmp/help"
check "--help lists CHATFLOW_QUEUE_SHARDS" grep -q CHATFLOW_QUEUE_SHARDS "$tmp/help"
check "--help says setup works per shard" grep -q 'queue of each shard' "$tmp/help"

[ "$fails" -eq 0 ]
