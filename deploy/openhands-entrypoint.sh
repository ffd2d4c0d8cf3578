#!/bin/sh
# Start OpenHands only when the sandport patches are in place and the security
# wiring is in effect; then hand over to the upstream entrypoint.
#
#   SANDPORT_MANIFEST        the manifest (default /opt/sandport/openhands/patches.toml)
#   SANDPORT_PATCH_ROOT      directory holding the `openhands` package (default: found)
#   SANDPORT_PYTHON          the app's python (default: python3 on PATH)
#   UPSTREAM_ENTRYPOINT      default /app/entrypoint.sh; run the command directly if absent
#   SANDPORT_ONLY_PATCH=1    apply and exit (used while building the image)
set -eu

manifest=${SANDPORT_MANIFEST:-/opt/sandport/openhands/patches.toml}
python=${SANDPORT_PYTHON:-python3}
upstream=${UPSTREAM_ENTRYPOINT:-/app/entrypoint.sh}

fail() {
    echo "sandport: $*" >&2
    echo "sandport: refusing to start OpenHands" >&2
    exit 1
}

if [ -n "${SANDPORT_PATCH_ROOT:-}" ]; then
    root=$SANDPORT_PATCH_ROOT
else
    # find_spec locates the package without running its __init__
    root=$("$python" -c 'import importlib.util, os; s = importlib.util.find_spec("openhands.app_server"); print(os.path.dirname(os.path.dirname(os.path.dirname(s.origin))))') \
        || fail "cannot locate the openhands package with $python"
fi

# The manifest's verify commands run `python3`: make it the app's python.
py_dir=$(dirname "$(command -v "$python")")
PATH="$py_dir:$PATH"
export PATH

# Exit 1 (nothing written) when a critical patch fails; the summary is on stderr.
sandport patch apply --manifest "$manifest" --root "$root" \
    || fail "critical patches failed (see CRITICAL PATCHES FAILED above)"

if [ "${SANDPORT_ONLY_PATCH:-0}" = 1 ]; then
    exit 0
fi

# The package is importable from the patch root (the app's working directory
# or site-packages).
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" -m sandport_openhands.selfcheck \
    || fail "security self-check failed"

# uvicorn rewrites the client address from X-Forwarded-For by default when the peer is
# 127.0.0.1: the identity check would then see the edge's client instead of sandport, and
# refuse everybody. The peer address must stay the transport's.
case ${1:-} in
uvicorn | */uvicorn)
    for arg in "$@"; do
        case $arg in
        --proxy-headers | --forwarded-allow-ips | --forwarded-allow-ips=*)
            fail "$arg would let X-Forwarded-For replace the peer address the identity check relies on" ;;
        esac
    done
    set -- "$@" --no-proxy-headers
    ;;
esac

if [ -x "$upstream" ]; then
    exec "$upstream" "$@"
fi
exec "$@"
