#!/usr/bin/env bash
# Build the deployment images from a small staged context (the repository root
# holds target/, several GB, which the legacy builder would send whole).
#
#   deploy/build-images.sh [sandport|openhands|all]     (default: sandport)
#
# Needs the static gateway binary:
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu -p sandport
#
# Environment: SANDPORT_BINARY (the static binary to use instead of the one in
# target/), SANDPORT_IMAGE (default sandport:local), OPENHANDS_IMAGE
# (default sandport-openhands:local), OPENHANDS_BASE_IMAGE (the upstream image,
# default in deploy/openhands.Dockerfile).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
what=${1:-sandport}
binary=target/x86_64-unknown-linux-gnu/release/sandport
source_binary=${SANDPORT_BINARY:-$repo/$binary}

[ -x "$source_binary" ] || {
    echo "missing $source_binary; build it with:" >&2
    echo "  RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu -p sandport" >&2
    exit 1
}
if command -v file >/dev/null 2>&1 && ! file -L "$source_binary" | grep -q 'statically linked\|static-pie linked'; then
    echo "$binary is not statically linked (it must run in an empty image)" >&2
    exit 1
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/sandport-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$(dirname "$binary")" "$stage/deploy" "$stage/integrations/openhands"
cp "$source_binary" "$stage/$binary"
cp "$repo/deploy/sandport.Dockerfile" "$repo/deploy/openhands.Dockerfile" \
   "$repo/deploy/openhands-entrypoint.sh" "$stage/deploy/"
cp -r "$repo/integrations/openhands/patches.toml" "$repo/integrations/openhands/sandport_openhands" \
   "$stage/integrations/openhands/"
find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +

case $what in
sandport | all)
    docker build -f "$stage/deploy/sandport.Dockerfile" -t "${SANDPORT_IMAGE:-sandport:local}" "$stage"
    ;;&
openhands | all)
    docker build -f "$stage/deploy/openhands.Dockerfile" \
        ${OPENHANDS_BASE_IMAGE:+--build-arg "OPENHANDS_IMAGE=$OPENHANDS_BASE_IMAGE"} \
        -t "${OPENHANDS_IMAGE:-sandport-openhands:local}" "$stage"
    ;;
sandport) ;;
*)
    echo "usage: $0 [sandport|openhands|all]" >&2
    exit 2
    ;;
esac
