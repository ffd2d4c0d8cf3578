#!/usr/bin/env bash
# Builds every image the kit runs, on a machine whose Docker has no images and reaches no
# registry (PyPI, Debian's packages and crates.io are enough):
#
#   deploy/build-images.sh [all|sandport|openhands|agent-server|locks]      (default: all)
#
#   sandport:local                      the gateway: a static binary in an empty image
#   sandport-openhands:local            the OpenHands app (deploy/locks/openhands-app.txt) with
#                                       the integration, patched at build time and at every start
#   sandport-agent-server:VERSION-python  the sandbox the app starts per conversation
#                                       (deploy/locks/agent-server.txt, the SDK patched by
#                                       integrations/openhands/agent-server-patches.toml)
#   locks                               re-resolves deploy/locks/*.txt from the *.in files
#
# The two Python images share one Debian root filesystem (debootstrap, then `docker import`),
# with their virtualenvs where upstream's images have them (/app/.venv, /agent-server/.venv).
# What is slow is cached under SANDPORT_CACHE and reused while its inputs are unchanged: the
# root filesystem (keyed by suite and package list) and each virtualenv (keyed by its lock
# file, its patch manifest and the root filesystem).
#
# Environment:
#   SANDPORT_CACHE          cache directory (default /var/cache/sandport-ci)
#   SANDPORT_BINARY         a static sandport binary to use instead of building one
#   SANDPORT_PROFILE        cargo profile for the binary it builds: release (default) or dev
#   SANDPORT_IMAGE, OPENHANDS_IMAGE, AGENT_SERVER_IMAGE_REPOSITORY   image names
#   OPENHANDS_BASE_IMAGE    with a registry: build the app image from upstream's app image
#                           (Python 3.13, /app/.venv) instead of the local root filesystem
#   DEBIAN_MIRROR           for debootstrap (default http://deb.debian.org/debian)
#   SANDPORT_CA_BUNDLE      CA bundle handed to the virtualenv builds (default: the host's)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
what=${1:-all}
cache=${SANDPORT_CACHE:-/var/cache/sandport-ci}
suite=trixie
# What both Python images need: the agent runs shell commands, git and tmux in the sandbox.
base_packages=python3,python3-venv,ca-certificates,git,tmux,procps,curl,sudo,tini,jq,less
sandport_image=${SANDPORT_IMAGE:-sandport:local}
openhands_image=${OPENHANDS_IMAGE:-sandport-openhands:local}
agent_repository=${AGENT_SERVER_IMAGE_REPOSITORY:-sandport-agent-server}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

mkdir -p "$cache"
exec 8>"$cache/build-images.lock"
flock 8

# uv resolves and installs the locked virtualenvs in seconds where pip takes many minutes.
uv_binary() {
    if command -v uv >/dev/null 2>&1; then
        command -v uv
        return
    fi
    local tools=$cache/uv-tool
    if [ ! -x "$tools/bin/uv" ]; then
        say "installing uv into $tools"
        python3 -m venv "$tools"
        "$tools/bin/pip" install -q uv
    fi
    echo "$tools/bin/uv"
}

# Sets $binary, building it once unless SANDPORT_BINARY names one.
binary=
sandport_binary() {
    [ -z "$binary" ] || return 0
    if [ -n "${SANDPORT_BINARY:-}" ]; then
        binary=$(cd "$(dirname "$SANDPORT_BINARY")" && pwd)/$(basename "$SANDPORT_BINARY")
    else
        local profile=${SANDPORT_PROFILE:-release} dir
        dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
        say "building the static sandport binary ($profile)"
        (cd "$repo" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked -q \
            --profile "$profile" --target x86_64-unknown-linux-gnu -p sandport) >&2
        binary=$repo/target/x86_64-unknown-linux-gnu/$dir/sandport
    fi
    check_static "$binary"
}

check_static() {
    [ -x "$1" ] || die "missing $1"
    if command -v file >/dev/null 2>&1 && ! file -L "$1" | grep -q 'statically linked\|static-pie linked'; then
        die "$1 is not statically linked (it must run in an empty image)"
    fi
}

# The Debian root filesystem both Python images start from, as image sandport-base:HASH.
base_image() {
    local key tar image
    key=$(echo "$suite $base_packages" | sha256sum | cut -c1-16)
    image=sandport-base:$key
    if image_exists "$image"; then
        echo "$image"
        return
    fi
    tar=$cache/rootfs-$suite-$key.tar
    if [ ! -s "$tar" ]; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        local dir=$cache/rootfs-$suite-$key.tmp
        rm -rf "$dir"
        say "debootstrap $suite into $dir (about a minute; cached as $tar)"
        debootstrap --variant=minbase --include="$base_packages" "$suite" "$dir" \
            "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$cache/debootstrap.log" 2>&1 \
            || { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed"; }
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
        tar -C "$dir" --numeric-owner -cf "$tar.part" .
        mv "$tar.part" "$tar"
        rm -rf "$dir"
    fi
    say "importing $tar as $image"
    docker import --change 'CMD ["/bin/bash"]' "$tar" "$image" >/dev/null
    echo "$image"
}

# A locked virtualenv built inside the base image at the path it has in the final image, kept
# in the cache as a directory. Args: name, path in the image, lock file, [patch manifest].
venv() {
    local name=$1 path=$2 lock=$3 manifest=${4:-} base key dir uv ca
    base=$(base_image)
    # the recipe is part of the key: change it, and every virtualenv is rebuilt
    key=$(hash_of "$lock" ${manifest:+"$manifest"} <(echo "$base $path") <(declare -f venv))
    dir=$cache/venv-$name-$key
    if [ -x "$dir/bin/python" ]; then
        echo "$dir"
        return
    fi
    uv=$(uv_binary)
    ca=${SANDPORT_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
    rm -rf "$dir.part"
    mkdir -p "$dir.part" "$cache/uv-cache"
    say "building the $name virtualenv from $(basename "$lock") (cached as $dir)"
    local mounts=(-v "$dir.part:$path" -v "$lock:/sandport/lock.txt:ro" -v "$uv:/usr/local/bin/uv:ro"
        -v "$cache/uv-cache:/sandport/uv-cache")
    [ ! -f "$ca" ] || mounts+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    local script="python3 -m venv --without-pip $path && UV_CACHE_DIR=/sandport/uv-cache UV_SYSTEM_CERTS=1 UV_NATIVE_TLS=1 uv pip install -q --python $path/bin/python --no-deps --link-mode copy --compile-bytecode -r /sandport/lock.txt"
    if [ -n "$manifest" ]; then
        mounts+=(-v "$manifest:/sandport/patches.toml:ro" -v "$binary:/usr/local/bin/sandport:ro")
        script+=" && site=\$($path/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
        script+=" && PATH=$path/bin:\$PATH sandport patch apply --manifest /sandport/patches.toml --root \$site"
        script+=" && $path/bin/python -m compileall -q \$site/openhands/sdk"
    fi
    docker run --rm --name "sandport-build-$name-$$" --network bridge "${mounts[@]}" "$base" \
        sh -c "$script" >&2 || { rm -rf "$dir.part"; die "building the $name virtualenv failed"; }
    # byte code stays: without it every new sandbox spends seconds compiling before it answers
    mv "$dir.part" "$dir"
    echo "$dir"
}

# A small build context: the Dockerfile, what it copies, and (hard links to) a virtualenv.
stage() {
    local stage
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    mkdir -p "$stage/deploy" "$stage/integrations/openhands" "$stage/bin"
    cp "$repo"/deploy/*.Dockerfile "$repo/deploy/openhands-entrypoint.sh" "$stage/deploy/"
    cp -r "$repo/integrations/openhands/patches.toml" "$repo/integrations/openhands/sandport_openhands" \
        "$stage/integrations/openhands/"
    find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
    echo "$stage"
}

# Builds IMAGE from DOCKERFILE in STAGE (then removed) unless an image of that name was built
# from the same inputs: the staged files (a virtualenv by its cache key) and the build args.
# Sending a virtualenv of a gigabyte to the daemon is what takes the time, not the layers.
build() { # image dockerfile stage venv-key build-arg...
    local image=$1 dockerfile=$2 stage=$3 venv_key=$4 inputs
    shift 4
    inputs=$( (cd "$stage" && find . -path ./venv -prune -o -type f -print0 | sort -z \
        | xargs -0 sha256sum; echo "$venv_key $*") | sha256sum | cut -c1-16)
    if [ "$(docker image inspect -f '{{index .Config.Labels "org.sandport.inputs"}}' "$image" 2>/dev/null)" = "$inputs" ]; then
        say "$image is up to date"
    else
        say "building $image"
        local args=() arg
        for arg in "$@"; do args+=(--build-arg "$arg"); done
        docker build -q "${args[@]}" --label "org.sandport.inputs=$inputs" \
            -f "$stage/deploy/$dockerfile" -t "$image" "$stage" >/dev/null
    fi
    rm -rf "$stage"
}

build_sandport() {
    local stage
    stage=$(stage)
    cp "$binary" "$stage/bin/sandport"
    build "$sandport_image" sandport.Dockerfile "$stage" -
}

build_openhands() {
    local stage venv base
    stage=$(stage)
    cp "$binary" "$stage/bin/sandport"
    if [ -n "${OPENHANDS_BASE_IMAGE:-}" ]; then
        # upstream's image already holds /app/.venv; the COPY of an empty directory adds nothing
        mkdir -p "$stage/venv"
        build "$openhands_image" openhands.Dockerfile "$stage" - "BASE_IMAGE=$OPENHANDS_BASE_IMAGE"
    else
        venv=$(venv openhands /app/.venv "$repo/deploy/locks/openhands-app.txt")
        base=$(base_image)
        cp -al "$venv" "$stage/venv"
        build "$openhands_image" openhands.Dockerfile "$stage" "$(basename "$venv")" "BASE_IMAGE=$base"
    fi
}

agent_server_version() {
    sed -n 's/^openhands-agent-server==\([^ ]*\).*/\1/p' "$repo/deploy/locks/agent-server.txt"
}

build_agent_server() {
    local stage version venv base
    version=$(agent_server_version)
    [ -n "$version" ] || die "no openhands-agent-server pin in deploy/locks/agent-server.txt"
    stage=$(stage)
    venv=$(venv agent-server /agent-server/.venv "$repo/deploy/locks/agent-server.txt" \
        "$repo/integrations/openhands/agent-server-patches.toml")
    base=$(base_image)
    cp -al "$venv" "$stage/venv"
    # upstream's app names the image REPOSITORY:VERSION-python (AGENT_SERVER_IMAGE_REPOSITORY)
    build "$agent_repository:$version-python" agent-server.Dockerfile "$stage" "$(basename "$venv")" \
        "BASE_IMAGE=$base"
}

locks() {
    local uv n
    uv=$(uv_binary)
    for n in openhands-app agent-server; do
        say "resolving deploy/locks/$n.txt"
        "$uv" pip compile -q --python-version 3.13 --python-platform x86_64-unknown-linux-gnu \
            --no-annotate --custom-compile-command "deploy/build-images.sh locks" \
            "$repo/deploy/locks/$n.in" -o "$repo/deploy/locks/$n.txt"
    done
}

started=$SECONDS
case $what in
all | sandport | openhands | agent-server) sandport_binary ;;
esac
case $what in
all)
    build_sandport
    build_agent_server
    build_openhands
    ;;
sandport) build_sandport ;;
openhands) build_openhands ;;
agent-server) build_agent_server ;;
locks) locks ;;
*) die "usage: $0 [all|sandport|openhands|agent-server|locks]" ;;
esac
say "done in $((SECONDS - started)) s"
