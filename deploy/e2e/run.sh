#!/usr/bin/env bash
# The kit end to end (`make e2e`): builds the images if their inputs changed (cached), then
# runs deploy/e2e/test_stack.py: the shipped compose file, two users, headless Chromium.
#
# Needs Docker, debootstrap, chromium and chromium-driver (.ci/run installs them).
# Environment: SANDPORT_BINARY (a static sandport binary; default: build-images.sh builds
# one), SANDPORT_CACHE (default /var/cache/sandport-ci).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SANDPORT_CACHE:-/var/cache/sandport-ci}
started=$SECONDS

"$repo/deploy/build-images.sh" all
built=$SECONDS

# pytest only: the test itself uses the standard library
tools=$cache/e2e-venv
if [ ! -x "$tools/bin/pytest" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q 'pytest>=8,<10'
fi
cd "$here"
"$tools/bin/python" -m pytest -q -p no:cacheprovider -rA test_stack.py
echo "==> e2e: images $((built - started)) s, test $((SECONDS - built)) s"
