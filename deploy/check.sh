#!/usr/bin/env bash
# Checks of the deployment kit that need no registry.
#
#   deploy/check.sh SANDPORT_BIN [--image]
#
# * compose.yaml is valid (`docker compose config` or `docker-compose config`),
#   publishes only sandport's listener, mounts the Docker socket read-only for
#   sandport;
# * every COPY source of the Dockerfiles exists in the context build-images.sh stages;
# * openhands-entrypoint.sh, run on a copy of the installed openhands-ai (the
#   virtualenv integrations/openhands/ci.sh maintains), patches, passes the
#   self-check and execs the command; on a tree with a critical anchor edited
#   away it exits 1 without starting the command;
# * with --image: builds the sandport image (FROM scratch) from the static
#   binary (target/x86_64-unknown-linux-gnu/release/sandport, or SANDPORT_BINARY)
#   and checks that it answers /health.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SANDPORT_CI_CACHE:-/var/cache/sandport-ci}
venv=$cache/openhands-venv
say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'deploy check: FAILED: %s\n' "$*" >&2; exit 1; }

bin=${1:-${SANDPORT_BIN:-}}
[ -n "$bin" ] || die "usage: $0 SANDPORT_BIN [--image]"
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[ -x "$bin" ] || die "not executable: $bin"
image=${2:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/sandport-deploy-check.XXXXXX")
cleanup() {
    [ -z "${container:-}" ] || docker rm -f "$container" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

[ -x "$venv/bin/python" ] || die "no $venv (run integrations/openhands/ci.sh first)"

# --- compose
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    compose=()
fi
if [ ${#compose[@]} -gt 0 ]; then
    "${compose[@]}" -f "$repo/deploy/compose.yaml" config > "$work/compose.yaml" \
        || die "compose config"
    "$venv/bin/python" - "$work/compose.yaml" <<'PY' || die "compose.yaml does not have the required shape"
import sys
import yaml  # PyYAML, a dependency of openhands-ai

doc = yaml.safe_load(open(sys.argv[1]))
services = doc['services']
published = {name: s.get('ports') for name, s in services.items() if s.get('ports')}
assert list(published) == ['sandport'], f'services publishing ports: {list(published)}'
sock = [v for v in services['sandport']['volumes']
        if (v['target'] if isinstance(v, dict) else v.split(':')[1]) == '/var/run/docker.sock']
assert sock, 'sandport has no Docker socket'
ro = sock[0].get('read_only') if isinstance(sock[0], dict) else sock[0].endswith(':ro')
assert ro, 'the Docker socket is not read-only for sandport'
assert doc['networks']['app'].get('internal') is True, 'the app network is not internal'
print('compose: only sandport publishes ports; Docker socket read-only for sandport')
PY
    say "compose.yaml valid (${compose[*]})"
else
    say "SKIPPED compose validation: neither 'docker compose' nor docker-compose found"
fi

# --- Dockerfile COPY sources, in the context build-images.sh stages
for dockerfile in "$repo"/deploy/*.Dockerfile; do
    while read -r src; do
        # bin/sandport and venv/ are staged by build-images.sh, not taken from the repository
        [ -e "$repo/$src" ] || [ "$src" = bin/sandport ] || [ "$src" = venv/ ] \
            || die "$(basename "$dockerfile"): COPY source $src does not exist"
    done < <(sed -n 's/^COPY \(--[^ ]* \)*\([^ ]*\) .*/\2/p' "$dockerfile")
done
say "Dockerfile COPY sources present"

# --- the app's entrypoint, against the real openhands-ai
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$work/bin" "$work/ok" "$work/drift"
# the entrypoint calls `sandport patch ...`; accept the patch engine's own binary too
if "$bin" patch --help >/dev/null 2>&1; then
    ln -s "$bin" "$work/bin/sandport"
else
    printf '#!/bin/sh\n[ "$1" = patch ] && shift\nexec %s "$@"\n' "$bin" > "$work/bin/sandport"
    chmod +x "$work/bin/sandport"
fi
cp -a "$site/openhands" "$work/ok/"
cp -a "$site/openhands" "$work/drift/"
sed -i "s/'sandbox_spec_id': sandbox_spec.id,/'sandbox_spec': sandbox_spec.id,/" \
    "$work/drift/openhands/app_server/sandbox/docker_sandbox_service.py"
printf 'sandport-deploy-check-assertion-key\n' > "$work/assertion-key"

run_entrypoint() { # root command...
    env -i PATH="$work/bin:$venv/bin:/usr/bin:/bin" HOME="$work" \
        SANDPORT_MANIFEST="$repo/integrations/openhands/patches.toml" \
        SANDPORT_PATCH_ROOT="$1" SANDPORT_PYTHON="$venv/bin/python" \
        UPSTREAM_ENTRYPOINT=/nonexistent \
        SANDPORT_ASSERTION_KEY_FILE="$work/assertion-key" SANDPORT_TRUSTED_PROXIES=172.28.0.2/32 \
        OH_PERSISTENCE_DIR="$work/persistence" SANDPORT_USER_DATA="$work/user-data" \
        OPENHANDS_SUPPRESS_BANNER=1 LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONDONTWRITEBYTECODE=1 \
        "$repo/deploy/openhands-entrypoint.sh" "${@:2}"
}
run_entrypoint "$work/ok" touch "$work/started-ok" > "$work/ok.log" 2>&1 \
    || { cat "$work/ok.log" >&2; die "entrypoint on a pristine tree"; }
[ -f "$work/started-ok" ] || die "entrypoint did not run the command"
grep -q 'self-check passed' "$work/ok.log" || die "entrypoint did not run the self-check"
set +e
run_entrypoint "$work/drift" touch "$work/started-drift" > "$work/drift.log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] || { cat "$work/drift.log" >&2; die "entrypoint on a drifted tree exited $rc, not 1"; }
[ ! -e "$work/started-drift" ] || die "entrypoint started the app despite a failed critical patch"
{ grep -q '^CRITICAL PATCHES FAILED:' "$work/drift.log" && grep -q 'sandbox-labels' "$work/drift.log"; } \
    || { cat "$work/drift.log" >&2; die "no CRITICAL PATCHES FAILED summary naming sandbox-labels"; }
grep -q 'refusing to start OpenHands' "$work/drift.log" || die "no refusal message"
say "openhands-entrypoint.sh: starts the app when patched, refuses (exit 1) on a failed critical patch"

# uvicorn must keep the transport's peer address: --no-proxy-headers is added, --proxy-headers refused
printf '#!/bin/sh\necho "$@" > %s\n' "$work/uvicorn-args" > "$work/bin/uvicorn"
chmod +x "$work/bin/uvicorn"
run_entrypoint "$work/ok" "$work/bin/uvicorn" app:app --port 3000 > "$work/uvicorn.log" 2>&1 \
    || { cat "$work/uvicorn.log" >&2; die "entrypoint with uvicorn"; }
grep -q -- '--port 3000 --no-proxy-headers' "$work/uvicorn-args" || die "uvicorn was not given --no-proxy-headers"
set +e
run_entrypoint "$work/ok" "$work/bin/uvicorn" app:app --proxy-headers > "$work/uvicorn-refused.log" 2>&1
rc=$?
set -e
[ "$rc" = 1 ] && grep -q 'X-Forwarded-For' "$work/uvicorn-refused.log" \
    || { cat "$work/uvicorn-refused.log" >&2; die "entrypoint accepted uvicorn --proxy-headers (exit $rc)"; }
say "openhands-entrypoint.sh: uvicorn gets --no-proxy-headers; --proxy-headers is refused"

# --- the gateway image
if [ "$image" = --image ]; then
    tag=sandport-deploy-check:$$
    SANDPORT_IMAGE=$tag "$repo/deploy/build-images.sh" sandport > "$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; die "docker build of deploy/sandport.Dockerfile"; }
    mkdir -p "$work/etc"
    sed -e 's/^listen = "172.27.0.2:9090"/listen = "0.0.0.0:9090"/' \
        -e 's#^shared_secret_file = .*#shared_secret_file = "/etc/sandport/origin-verify"#' \
        -e 's#^assertion_key_file = .*#assertion_key_file = "/etc/sandport/app-assertion-key"#' \
        -e 's#^docker_socket = .*#docker_socket = "/nonexistent.sock"#' \
        "$repo/deploy/sandport.toml" > "$work/etc/sandport.toml"
    printf 'sandport-deploy-check-origin-secret\n' > "$work/etc/origin-verify"
    printf 'sandport-deploy-check-assertion-key\n' > "$work/etc/app-assertion-key"
    chmod 0644 "$work/etc/"*
    chmod 0755 "$work/etc"
    container=$(docker run -d -p 127.0.0.1::9090 -v "$work/etc:/etc/sandport:ro" "$tag")
    port=$(docker port "$container" 9090/tcp | head -1 | sed 's/.*://')
    ok=
    for _ in $(seq 1 50); do
        if curl -fsS "http://127.0.0.1:$port/health" > "$work/health" 2>/dev/null; then ok=1; break; fi
        sleep 0.2
    done
    if [ -z "$ok" ]; then docker logs "$container" >&2 || true; die "the sandport image does not answer /health"; fi
    docker rm -f "$container" >/dev/null; container=
    docker rmi "$tag" >/dev/null 2>&1 || true
    say "sandport image (FROM scratch) built and answered /health: $(head -c 200 "$work/health")"
fi

say "deploy kit checks passed"
