#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a figure that,
# unlike req/s, does not move with the load on a shared machine, so two builds can be compared
# run against run. It leaves out the kernel (about half of the CPU a request costs).
#
#   bench/instructions.sh                  # builds the release binaries first
#   BENCH_NO_BUILD=1 bench/instructions.sh
#
# Environment (all optional):
#   BENCH_DURATION  measured seconds (default 8); the request count comes from /metrics
#   BENCH_PROFILE   keep the callgrind profile at this path (for callgrind_annotate)
#
# Installs valgrind and wrk from Debian when missing. Everything listens on 127.0.0.1 and is
# stopped on exit.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${BENCH_DURATION:-8}"
CONVERSATION="0123456789abcdef0123456789abcdef"
TOKEN="bench-token-0123456789abcdef"

log() { printf 'instructions: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

missing=()
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} from Debian"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release --quiet -p sandport --bin sandport \
        && cargo build --release --quiet -p sandport-testkit --bin sandbox-server)
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SANDPORT_BIN="$TARGET_DIR/release/sandport"
UPSTREAM_BIN="$TARGET_DIR/release/sandbox-server"
[ -x "$SANDPORT_BIN" ] && [ -x "$UPSTREAM_BIN" ] || die "missing release binaries in $TARGET_DIR"

WORK="$(mktemp -d /tmp/sandport-instructions.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
UPSTREAM_PORT="$(free_port)"
SANDPORT_PORT="$(free_port)"
ADMIN_PORT="$(free_port)"

SANDBOX_PORTS="$UPSTREAM_PORT" "$UPSTREAM_BIN" 2>"$WORK/upstream.log" &
PIDS+=("$!")
cat >"$WORK/sandport.toml" <<EOF
[server]
listen = "127.0.0.1:$SANDPORT_PORT"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[identity]
mode = "token"
token = "$TOKEN"
user_id = "bench"
[discovery]
backend = "static"
[[discovery.sandboxes]]
conversation_id = "$CONVERSATION"
user_id = "bench"
address = "127.0.0.1"
[log]
level = "warn"
EOF
# Variables would override the file: drop any SANDPORT_* from the caller's environment.
env $(env | sed -n 's/^\(SANDPORT_[A-Z0-9_]*\)=.*/-u \1/p') \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out" \
    "$SANDPORT_BIN" serve --config "$WORK/sandport.toml" 2>"$WORK/sandport.log" &
VALGRIND_PID=$!
PIDS+=("$VALGRIND_PID")

for _ in $(seq 1 150); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/health" && break
    sleep 0.2
done
URL="http://127.0.0.1:$SANDPORT_PORT/runtime/$CONVERSATION/$UPSTREAM_PORT/__sandbox/status?code=200"
AUTH="Authorization: Bearer $TOKEN"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "$URL")" = 200 ] \
    || die "sandport did not answer 200 (logs in $WORK)"

served() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^sandport_requests_total\{.*status="200"/ {n += $2} END {print n + 0}'
}

log "warm-up, then ${DURATION}s measured under callgrind"
wrk -t1 -c8 -d2s -H "$AUTH" "$URL" >/dev/null
callgrind_control --zero "$VALGRIND_PID" >/dev/null 2>&1
before="$(served)"
wrk -t1 -c8 -d"${DURATION}s" -H "$AUTH" "$URL" >/dev/null
after="$(served)"
callgrind_control --dump "$VALGRIND_PID" >/dev/null 2>&1
sleep 1
# The dump taken after zeroing holds exactly the measured interval.
dump="$(ls "$WORK"/callgrind.out.* 2>/dev/null | head -1)"
[ -n "$dump" ] || die "callgrind wrote no dump"
instructions="$(awk '/^(summary|totals):/ {n = $2} END {print n}' "$dump")"
requests=$((after - before))
[ "$requests" -gt 0 ] || die "no requests were served"
[ -z "${BENCH_PROFILE:-}" ] || cp "$dump" "$BENCH_PROFILE"
awk -v i="$instructions" -v n="$requests" -v v="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    'BEGIN { printf "%d requests, %d instructions: %.0f user-space instructions per request (tree %s)\n", n, i, i / n, v }'
