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

BENCH_NAME=instructions
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION="${BENCH_DURATION:-8}"

install_missing valgrind wrk
release_binaries

start_upstream
# callgrind runs sandport some fifty times slower: give it time to start.
BENCH_START_TIMEOUT="${BENCH_START_TIMEOUT:-120}" start_sandport \
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out"

wait_ready "http://127.0.0.1:$ADMIN_PORT/health" sandport
URL="$(sandport_url "$SANDPORT_PORT" "$UPSTREAM_PORT" "/__sandbox/status?code=200")"
wait_ready "$URL" sandport -H "$AUTH_HEADER"

served() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^sandport_requests_total\{.*status="200"/ {n += $2} END {print n + 0}'
}

log "warm-up, then ${DURATION}s measured under callgrind"
wrk -t1 -c8 -d2s -H "$AUTH_HEADER" "$URL" >/dev/null
callgrind_control --zero "$SANDPORT_PID" >/dev/null 2>&1
before="$(served)"
wrk -t1 -c8 -d"${DURATION}s" -H "$AUTH_HEADER" "$URL" >/dev/null
after="$(served)"
callgrind_control --dump "$SANDPORT_PID" >/dev/null 2>&1
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
