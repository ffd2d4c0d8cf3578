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

# Picks a port now and binds it later: racy, which is acceptable for benchmarks run by hand
# (they are not tests). The integration tests bind port 0 and read the bound address instead.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
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

# start_upstream PORT: the test upstream on PORT; sets UPSTREAM_PID.
start_upstream() {
    log "upstream sandbox-server on 127.0.0.1:$1"
    SANDBOX_PORTS="$1" "$UPSTREAM_BIN" 2>"$WORK/upstream.log" &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
}

# start_sandport PORT ADMIN_PORT [WRAPPER...]: sandport on static discovery with the one
# bench sandbox and token identity, run under WRAPPER when given; sets SANDPORT_PID.
start_sandport() {
    local port="$1" admin_port="$2"
    shift 2
    cat >"$WORK/sandport.toml" <<EOF
[server]
listen = "127.0.0.1:$port"

[admin]
listen = "127.0.0.1:$admin_port"

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
level = "${BENCH_LOG_LEVEL:-warn}"
EOF
    log "sandport on 127.0.0.1:$port"
    # Variables would override the file: drop any SANDPORT_* from the caller's environment.
    # shellcheck disable=SC2046
    env $(env | sed -n 's/^\(SANDPORT_[A-Z0-9_]*\)=.*/-u \1/p') \
        "$@" "$SANDPORT_BIN" serve --config "$WORK/sandport.toml" 2>"$WORK/sandport.log" &
    SANDPORT_PID=$!
    PIDS+=("$SANDPORT_PID")
}

# The measured sandport URL of a path on the upstream at PORT.
sandport_url() {
    printf 'http://127.0.0.1:%s/runtime/%s/%s%s' "$1" "$CONVERSATION" "$2" "$3"
}
