#!/usr/bin/env bash
# Loopback throughput benchmark: the upstream directly, sandport, and nginx (plain proxy_pass
# with upstream keepalive, the best-case peer), measured in one run with the same wrk settings.
#
#   bench/run.sh
#
# Environment (all optional):
#   BENCH_DURATION     measured seconds per target            (default 10)
#   BENCH_CONNECTIONS  wrk connections                         (default 64)
#   BENCH_THREADS      wrk threads                             (default 2)
#   BENCH_WARMUP       warm-up seconds per target, discarded   (default 2)
#   BENCH_ROUNDS       rounds; each measures every target once (default 3)
#   BENCH_PATH         upstream path measured                  (default /__sandbox/status?code=200)
#   BENCH_NO_BUILD=1   use the existing release binaries instead of running cargo build
#   BENCH_LOG_LEVEL    sandport's log level: `info` writes the access log (default warn)
#
# Installs wrk and nginx from Debian when missing. Every process it starts listens on
# 127.0.0.1 (the test upstream binds 0.0.0.0 but only loopback traffic is sent) and is stopped
# on exit. Writes bench/results/<date>-<hostname>.md and prints the same table.

set -euo pipefail

BENCH_NAME=bench
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION="${BENCH_DURATION:-10}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
WARMUP="${BENCH_WARMUP:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
BENCH_PATH="${BENCH_PATH:-/__sandbox/status?code=200}"

install_missing wrk nginx
NGINX="$(command -v nginx)"
release_binaries

# The upstream and sandport bind port 0 and report their ports (UPSTREAM_PORT, SANDPORT_PORT).
start_upstream
start_sandport
# nginx cannot bind port 0 and report the port it got: it takes a free port, picked just
# before it starts (racy, see free_port).
NGINX_PORT="$(free_port)"

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;

    upstream sandbox {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://sandbox;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
log "nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/logs/error.log" -c "$WORK/nginx/nginx.conf" \
    -g 'daemon off;' 2>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

AUTH=(-H "$AUTH_HEADER")
DIRECT_URL="http://127.0.0.1:$UPSTREAM_PORT$BENCH_PATH"
SANDPORT_URL="$(sandport_url "$SANDPORT_PORT" "$UPSTREAM_PORT" "$BENCH_PATH")"
NGINX_URL="http://127.0.0.1:$NGINX_PORT$BENCH_PATH"

wait_ready "$DIRECT_URL" upstream
wait_ready "$SANDPORT_URL" sandport "${AUTH[@]}"
wait_ready "$NGINX_URL" nginx
# sandport must enforce ownership on the measured route: no token, no answer.
[ "$(curl -s -o /dev/null -w '%{http_code}' "$SANDPORT_URL")" = 401 ] \
    || die "sandport answered without the token"

# --- measuring ----------------------------------------------------------------------------

# PIDs of nginx workers (children of the master).
nginx_workers() { pgrep -P "$NGINX_PID" | tr '\n' ' '; }

# Sum of utime+stime clock ticks over the given PIDs.
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        fields="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
        # After the command name: field 12 is utime, 13 stime (1-based from state).
        total=$((total + $(echo "$fields" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# kB of a /proc/PID/status field summed over PIDs.
status_kb() {
    local field="$1" total=0 pid value
    shift
    for pid in "$@"; do
        value="$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null)"
        total=$((total + ${value:-0}))
    done
    echo "$total"
}

# Converts a wrk latency (850.00us, 1.20ms, 1.01s) to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n = n / 1000
        else if (v ~ /ms$/) n = n
        else if (v ~ /s$/) n = n * 1000
        printf "%.2f", n
    }'
}

CLK_TCK="$(getconf CLK_TCK)"
# Per target, the space-separated values of every round.
declare -A RPS_ROUNDS P50_ROUNDS P99_ROUNDS CPU_ROUNDS RATIO_ROUNDS
# Per target, the median over the rounds.
declare -A RPS P50 P99 CPU_US RATIO

# measure NAME URL PIDS...: warm up, run wrk, record req/s, p50, p99 and CPU per request of PIDS.
measure() {
    local name="$1" url="$2" round="$3"
    shift 3
    local pids=("$@")
    log "$name: warm-up ${WARMUP}s"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${AUTH[@]}" "$url" >/dev/null
    log "$name: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency"
    local before after out
    before="$(cpu_ticks "${pids[@]}")"
    out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${AUTH[@]}" "$url")"
    after="$(cpu_ticks "${pids[@]}")"
    printf '%s\n' "$out" >"$WORK/wrk-$name-$round.txt"
    if grep -q 'Non-2xx or 3xx responses' <<<"$out"; then
        printf '%s\n' "$out" >&2
        die "$name answered errors under load"
    fi
    local requests
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    local rps p50 p99 cpu
    rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
    p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
    cpu="$(awk -v t="$((after - before))" -v hz="$CLK_TCK" -v n="$requests" \
        'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "0" }')"
    RPS_ROUNDS[$name]+="$rps "
    P50_ROUNDS[$name]+="$p50 "
    P99_ROUNDS[$name]+="$p99 "
    CPU_ROUNDS[$name]+="$cpu "
    LAST_RPS="$rps"
    log "$name (round $round): $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu µs CPU per request"
}

median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

read -r LOAD_BEFORE _ < /proc/loadavg
# The targets take turns, round after round, so that a slow spell of the machine lands on all
# of them; each ratio compares runs a few seconds apart, and the medians are reported.
for round in $(seq 1 "$ROUNDS"); do
    measure direct "$DIRECT_URL" "$round" "$UPSTREAM_PID"
    direct_rps="$LAST_RPS"
    measure sandport "$SANDPORT_URL" "$round" "$SANDPORT_PID"
    sandport_rps="$LAST_RPS"
    # shellcheck disable=SC2046
    measure nginx "$NGINX_URL" "$round" $(nginx_workers)
    RATIO_ROUNDS[direct]+="$(awk -v a="$direct_rps" -v b="$LAST_RPS" 'BEGIN { printf "%.3f", a / b }') "
    RATIO_ROUNDS[sandport]+="$(awk -v a="$sandport_rps" -v b="$LAST_RPS" 'BEGIN { printf "%.3f", a / b }') "
done
for name in direct sandport nginx; do
    RPS[$name]="$(median "${RPS_ROUNDS[$name]}")"
    P50[$name]="$(median "${P50_ROUNDS[$name]}")"
    P99[$name]="$(median "${P99_ROUNDS[$name]}")"
    CPU_US[$name]="$(median "${CPU_ROUNDS[$name]}")"
done
RATIO[direct]="$(median "${RATIO_ROUNDS[direct]}")"
RATIO[sandport]="$(median "${RATIO_ROUNDS[sandport]}")"

SANDPORT_HWM="$(status_kb VmHWM "$SANDPORT_PID")"
SANDPORT_RSS="$(status_kb VmRSS "$SANDPORT_PID")"
# shellcheck disable=SC2046
NGINX_RSS="$(status_kb VmRSS $(nginx_workers))"
# shellcheck disable=SC2046
NGINX_HWM="$(status_kb VmHWM $(nginx_workers))"
NGINX_MASTER_RSS="$(status_kb VmRSS "$NGINX_PID")"
NGINX_WORKER_COUNT="$(nginx_workers | wc -w)"

# --- report -------------------------------------------------------------------------------

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'; }

CORES="$(nproc)"
CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
KERNEL="$(uname -r)"
HOST="$(hostname)"
STAMP="$(date -u +%Y-%m-%dT%H%M%SZ)"
SANDPORT_VERSION="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "${BENCH_NO_BUILD:-0}" = 1 ]; then
    SANDPORT_VERSION="prebuilt binaries from ${SANDPORT_BIN%/sandport}, tree at $SANDPORT_VERSION"
else
    SANDPORT_VERSION="$SANDPORT_VERSION (release build)"
fi
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
WRK_VERSION="$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $2}')"

TABLE="$(
    printf '| target | req/s | p50 | p99 | RSS | CPU per request | ratio to nginx |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|\n'
    printf '| upstream directly | %s | %s ms | %s ms | - | %s µs | %s |\n' \
        "${RPS[direct]}" "${P50[direct]}" "${P99[direct]}" "${CPU_US[direct]}" \
        "$(ratio "${RATIO[direct]}" 1)"
    printf '| sandport | %s | %s ms | %s ms | %s (peak %s) | %s µs | %s |\n' \
        "${RPS[sandport]}" "${P50[sandport]}" "${P99[sandport]}" \
        "$(mib "$SANDPORT_RSS")" "$(mib "$SANDPORT_HWM")" "${CPU_US[sandport]}" \
        "$(ratio "${RATIO[sandport]}" 1)"
    printf '| nginx proxy_pass | %s | %s ms | %s ms | %s (peak %s, %s workers) | %s µs | 1.00× |\n' \
        "${RPS[nginx]}" "${P50[nginx]}" "${P99[nginx]}" \
        "$(mib "$NGINX_RSS")" "$(mib "$NGINX_HWM")" "$NGINX_WORKER_COUNT" "${CPU_US[nginx]}"
)"

mkdir -p "$ROOT/bench/results"
RESULT="$ROOT/bench/results/$STAMP-$HOST.md"
{
    printf '# Loopback benchmark, %s, %s\n\n' "$STAMP" "$HOST"
    printf '%s\n\n' "$TABLE"
    printf -- '- Machine: %s cores, %s, kernel %s; load average %s at start.\n' \
        "$CORES" "$CPU_MODEL" "$KERNEL" "$LOAD_BEFORE"
    printf -- '- sandport %s; %s; wrk %s.\n' \
        "$SANDPORT_VERSION" "$NGINX_VERSION" "$WRK_VERSION"
    printf -- '- Load: `wrk -t%s -c%s -d%ss --latency` after a %ss warm-up, each target in turn, %s rounds; path `%s`.\n' \
        "$THREADS" "$CONNECTIONS" "$DURATION" "$WARMUP" "$ROUNDS" "$BENCH_PATH"
    printf -- '- Figures are medians over the rounds; a ratio is the median of the per-round ratios (each against the nginx run of the same round).\n'
    printf -- '- Per round (req/s): direct %s; sandport %s; nginx %s. Ratios of sandport to nginx: %s.\n' \
        "${RPS_ROUNDS[direct]% }" "${RPS_ROUNDS[sandport]% }" "${RPS_ROUNDS[nginx]% }" \
        "${RATIO_ROUNDS[sandport]% }"
    printf -- '- CPU per request per round (µs): sandport %s; nginx %s.\n' \
        "${CPU_ROUNDS[sandport]% }" "${CPU_ROUNDS[nginx]% }"
    printf -- '- sandport: path form `/runtime/{id}/{port}...`, token identity, static discovery, log level %s.\n' "${BENCH_LOG_LEVEL:-warn}"
    printf -- '- RSS after the run (VmRSS, peak VmHWM); nginx summed over its workers (master: %s).\n' \
        "$(mib "$NGINX_MASTER_RSS")"
    printf -- '- CPU per request: user+system CPU time of the measured server process(es) during the run, divided by the requests served.\n'
    printf '\n## wrk output\n'
    for round in $(seq 1 "$ROUNDS"); do
        for name in direct sandport nginx; do
            printf '\n### %s, round %s\n\n```\n%s\n```\n' \
                "$name" "$round" "$(cat "$WORK/wrk-$name-$round.txt")"
        done
    done
} >"$RESULT"

printf '%s\n\n' "$TABLE"
log "written to ${RESULT#"$ROOT"/}"
