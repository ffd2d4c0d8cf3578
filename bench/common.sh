# Shared by the bench scripts (sourced, not run): tools, release binaries, a work directory
# whose processes are stopped on exit, and the upstream and sandport under test.
#
# The sourcing script sets BENCH_NAME (its log prefix) first.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONVERSATION="0123456789abcdef0123456789abcdef"
TOKEN="bench-token-0123456789abcdef"
USER_ID="bench"
AUTH_HEADER="Authorization: Bearer $TOKEN"
# nginx lives in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() { log "$*"; exit 1; }

# install_missing PACKAGE...: installs from Debian each package whose command of the same name
# is missing.
install_missing() {
    local missing=() package
    for package in "$@"; do
        command -v "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} from Debian"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    command -v curl >/dev/null 2>&1 || die "curl is required"
}

# Builds the release binaries unless BENCH_NO_BUILD=1, and sets SANDPORT_BIN and UPSTREAM_BIN.
release_binaries() {
    if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
        log "building release binaries (cargo build --release)"
        (cd "$ROOT" && cargo build --release --quiet -p sandport --bin sandport \
            && cargo build --release --quiet -p sandport-testkit --bin sandbox-server)
    fi
    local target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    SANDPORT_BIN="$target_dir/release/sandport"
    UPSTREAM_BIN="$target_dir/release/sandbox-server"
    [ -x "$SANDPORT_BIN" ] || die "missing $SANDPORT_BIN"
    [ -x "$UPSTREAM_BIN" ] || die "missing $UPSTREAM_BIN"
}

# Creates WORK; every PID added to PIDS is stopped, and WORK removed, on exit.
WORK="$(mktemp -d "/tmp/sandport-$BENCH_NAME.XXXXXX")"
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Picks a port now and binds it later: racy, another process may take it in between. Only
# nginx uses it: it cannot bind port 0 and report the port it got. The upstream and sandport
# bind port 0 and log the address they bound (see wait_log_line).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_log_line NAME PID FILE PATTERN: polls FILE (ANSI colours stripped) until a line
# matches the extended regex PATTERN, then sets LOG_LINE to it. Gives up, with the end of the
# log, when PID exits first or after BENCH_START_TIMEOUT seconds (default 10).
wait_log_line() {
    local name="$1" pid="$2" file="$3" pattern="$4"
    local timeout="${BENCH_START_TIMEOUT:-10}"
    local deadline=$((SECONDS + timeout))
    LOG_LINE=""
    while :; do
        LOG_LINE="$(sed 's/\x1b\[[0-9;]*m//g' "$file" 2>/dev/null | grep -E -m1 -e "$pattern" || true)"
        [ -z "$LOG_LINE" ] || return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$file" >&2 2>/dev/null || true
            die "$name exited before logging that it listens"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$file" >&2 2>/dev/null || true
            die "$name did not log that it listens within ${timeout}s"
        fi
        sleep 0.05
    done
}

# Waits until GET $1 answers 200 (extra curl arguments follow).
wait_ready() {
    local url="$1" name="$2"
    shift 2
    local i
    for i in $(seq 1 150); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer 200 on $url (logs in $WORK)"
}

# start_upstream: the test upstream on a port of its choosing (SANDBOX_PORTS=0; it binds
# 0.0.0.0, only loopback traffic is sent); waits for its `listening on` line and sets
# UPSTREAM_PORT and UPSTREAM_PID.
start_upstream() {
    SANDBOX_PORTS=0 "$UPSTREAM_BIN" 2>"$WORK/upstream.log" &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    wait_log_line upstream "$UPSTREAM_PID" "$WORK/upstream.log" \
        '^sandbox-server: listening on [^ ]+:[0-9]+$'
    UPSTREAM_PORT="${LOG_LINE##*:}"
    log "upstream sandbox-server on port $UPSTREAM_PORT"
}

# start_sandport [WRAPPER...]: sandport on static discovery with the one bench sandbox and
# token identity, run under WRAPPER when given, both listeners on 127.0.0.1 port 0; waits for
# its `sandport listening` line and sets SANDPORT_PORT, ADMIN_PORT and SANDPORT_PID.
start_sandport() {
    cat >"$WORK/sandport.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[identity]
mode = "token"
token = "$TOKEN"
user_id = "$USER_ID"

[discovery]
backend = "static"

[[discovery.sandboxes]]
conversation_id = "$CONVERSATION"
user_id = "$USER_ID"
address = "127.0.0.1"

[log]
# sandport::app=info keeps the "sandport listening" line, which gives the bound addresses.
level = "${BENCH_LOG_LEVEL:-warn},sandport::app=info"
format = "text"
EOF
    # Variables would override the file: drop any SANDPORT_* from the caller's environment.
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(SANDPORT_[A-Z0-9_]*\)=.*/-u \1/p') \
        "$@" "$SANDPORT_BIN" serve --config "$WORK/sandport.toml" 2>"$WORK/sandport.log" &
    SANDPORT_PID=$!
    PIDS+=("$SANDPORT_PID")
    wait_log_line sandport "$SANDPORT_PID" "$WORK/sandport.log" 'sandport listening'
    SANDPORT_PORT="$(sed -nE 's/.* listen=127\.0\.0\.1:([0-9]+)( .*)?$/\1/p' <<<"$LOG_LINE")"
    ADMIN_PORT="$(sed -nE 's/.* admin=127\.0\.0\.1:([0-9]+)( .*)?$/\1/p' <<<"$LOG_LINE")"
    [ -n "$SANDPORT_PORT" ] && [ -n "$ADMIN_PORT" ] \
        || die "no listen= and admin= addresses in: $LOG_LINE"
    log "sandport on port $SANDPORT_PORT (admin $ADMIN_PORT)"
}

# The measured sandport URL of a path on the upstream at PORT.
sandport_url() {
    printf 'http://127.0.0.1:%s/runtime/%s/%s%s' "$1" "$CONVERSATION" "$2" "$3"
}
