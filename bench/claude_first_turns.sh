#!/bin/bash
# Claude Code first turns against `pensieve serve`: session 1 (cold), session 2 (a new
# session, warm memory), then the server is restarted and session 3 runs (warm disk;
# with --no-disk-cache given as the first argument: nothing cached). Each session is a
# fresh `claude -p "say hi"` in the same project folder. Prints the server's log line of
# each first-turn request (ttft_ms) and the wall time of each session.
#
#   bench/claude_first_turns.sh [--no-disk-cache] [MODEL]
#
# Needs build/pensieve and the Claude Code CLI (PATH or .tools/claude-code). Uses a
# private Claude Code config directory, a temporary project folder and cache directory.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/build/pensieve
DISK=(--cache-dir "${TMPDIR:-/tmp}/pensieve-bench-kv.$$")
[ "${1:-}" = "--no-disk-cache" ] && { DISK=(--no-disk-cache); shift; }
MODEL=${1:-}
PORT=${PORT:-18650}
WORK=$(mktemp -d)
LOG=$WORK/server.log
mkdir -p "$WORK/project" "$WORK/claude-config"
export CLAUDE_CONFIG_DIR=$WORK/claude-config
CLAUDE=$(command -v claude || echo "$ROOT/.tools/claude-code/node_modules/.bin/claude")

start() {
    "$B" serve ${MODEL:+-m "$MODEL"} --port "$PORT" --ctx-size 32768 "${DISK[@]}" \
        --log-file "$LOG" &
    SERVER=$!
    for _ in $(seq 600); do curl -sf "localhost:$PORT/health" >/dev/null && return; sleep 0.5; done
    echo "the server did not start: see $LOG" >&2
    exit 1
}
stop() { kill -TERM "$SERVER"; wait "$SERVER"; }
session() {
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$WORK/project" && "$B" claude -p "$PORT" --claude "$CLAUDE" -- -p "say hi" \
        >"$WORK/out-$1.txt" 2>&1)
    t1=$(date +%s.%N)
    printf 'session %s: %.1f s wall, answer: %s\n' "$1" "$(echo "$t1 - $t0" | bc)" \
        "$(head -c 60 "$WORK/out-$1.txt" | tr '\n' ' ')"
    grep "POST /v1/messages " "$LOG" | grep -v count_tokens | tail -1 | sed 's/^/    /'
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); disk cache: ${DISK[*]}"
start
session 1
session 2
# the writer finishes what is queued before the server exits (SIGTERM)
stop
start
session 3
stop
[ "${DISK[0]}" = "--cache-dir" ] && rm -rf "${DISK[1]}"
rm -rf "$WORK"
