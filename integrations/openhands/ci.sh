#!/usr/bin/env bash
# CI for the OpenHands integration, against the real openhands-ai from PyPI.
#
#   integrations/openhands/ci.sh [SANDPORT_BIN]      (or SANDPORT_BIN=... ci.sh)
#
# SANDPORT_BIN is the gateway binary (`sandport patch ...`) or the patch
# engine's own binary (`sandport-patch ...`); both are accepted.
#
# 1. creates or reuses a Python >= 3.12 virtualenv with the pinned openhands-ai
#    (the version in patches.toml's `upstream`), reinstalled when the pin changes;
# 2. applies the manifest to a copy of the installed `openhands` package:
#    every critical patch applied, compileall passes, a second apply changes
#    nothing, `check` is clean;
# 3. on a fresh copy with one critical anchor edited away, `apply` exits 1,
#    names that patch and writes nothing;
# 4. type-checks the installed integration package (mypy --strict);
# 5. runs the pytest suite with the patched tree first on PYTHONPATH (with a
#    gateway binary, including the app behind the real sandport).
#
# Environment: SANDPORT_CI_CACHE (default /var/cache/sandport-ci),
# PYTHON312 (a python >= 3.12 to use), PIP_INDEX_URL etc. as usual.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest=$here/patches.toml
cache=${SANDPORT_CI_CACHE:-/var/cache/sandport-ci}
venv=$cache/openhands-venv
started=$SECONDS

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'openhands ci: FAILED: %s\n' "$*" >&2; exit 1; }

bin=${1:-${SANDPORT_BIN:-}}
[ -n "$bin" ] || die "usage: $0 SANDPORT_BIN (or set SANDPORT_BIN)"
case $bin in
*/*) [ -x "$bin" ] || die "not executable: $bin"; bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin") ;;
*) bin=$(command -v "$bin" 2>/dev/null) || die "not found: ${1:-$SANDPORT_BIN}" ;;
esac
if "$bin" patch --help >/dev/null 2>&1; then
    patch_cmd=("$bin" patch)
else
    patch_cmd=("$bin")
fi
"${patch_cmd[@]}" apply --help >/dev/null 2>&1 || die "$bin has no patch command"

pinned=$(sed -n 's/^upstream = "openhands-ai \([0-9][^ "]*\).*/\1/p' "$manifest")
[ -n "$pinned" ] || die "no 'upstream = \"openhands-ai X.Y.Z ...\"' line in $manifest"

# --- Python >= 3.12 (the default python3 may be 3.11, which silently gets an old release)
find_python() {
    # 3.12 first: the release the manifest is tested with
    local candidates=("${PYTHON312:-}" python3.12)
    local pyenv_root=
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root=$(pyenv root)
        candidates+=("$pyenv_root"/versions/3.12*/bin/python3)
    fi
    candidates+=(/usr/local/bin/python3.12 /usr/bin/python3.12 python3.13)
    [ -z "$pyenv_root" ] || candidates+=("$pyenv_root"/versions/3.13*/bin/python3)
    candidates+=(python3)
    local c
    for c in "${candidates[@]}"; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

uv_binary() {
    if command -v uv >/dev/null 2>&1; then command -v uv; return; fi
    local tools=$cache/uv-tool
    [ -x "$tools/bin/uv" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q uv; } >&2 \
        || die "installing uv"
    echo "$tools/bin/uv"
}

mkdir -p "$cache"
exec 9>"$cache/openhands-venv.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

stamp_want="openhands-ai==$pinned"
tools="pytest>=8,<10 mypy>=1.10"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.sandport-pin" 2>/dev/null)" != "$stamp_want" ] \
    || ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    python=$(find_python) || die "no Python >= 3.12 found (install one, or set PYTHON312)"
    say "creating $venv with $python ($("$python" --version 2>&1)); installing openhands-ai==$pinned (takes minutes)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # uv resolves and installs openhands-ai in seconds; pip takes many minutes
    "$(uv_binary)" pip install --quiet --python "$venv/bin/python" "openhands-ai==$pinned" \
        || die "uv pip install openhands-ai==$pinned"
    echo "$stamp_want" > "$venv/.sandport-pin"
else
    say "reusing $venv (openhands-ai==$pinned)"
fi
if [ "$(cat "$venv/.sandport-tools" 2>/dev/null)" != "$tools" ]; then
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $tools \
        || die "pip install $tools"
    echo "$tools" > "$venv/.sandport-tools"
fi
installed=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("openhands-ai"))')
[ "$installed" = "$pinned" ] || die "venv has openhands-ai $installed, manifest pins $pinned"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$site/openhands/app_server/sandbox/docker_sandbox_service.py" ] || die "no openhands package in $site"

# verify commands in the manifest run `python3`: make it the venv's 3.12
export PATH="$venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1 OPENHANDS_SUPPRESS_BANNER=1 LITELLM_LOCAL_MODEL_COST_MAP=True

work=$(mktemp -d "${TMPDIR:-/tmp}/sandport-openhands-ci.XXXXXX")
trap 'rm -rf "$work"' EXIT

fresh_copy() {
    mkdir -p "$1"
    cp -a "$site/openhands" "$1/"
    find "$1" -name __pycache__ -type d -prune -exec rm -rf {} +
}

# summarise a --report: prints "<n> applied ..." and fails on unexpected outcomes
check_report() { # report expected(first|second)
    python3 - "$manifest" "$1" "$2" <<'PY'
import json, sys, tomllib
manifest, report, run = sys.argv[1:]
patches = {p['id']: p for p in tomllib.load(open(manifest, 'rb'))['patch']}
results = json.load(open(report))['patches']
bad = []
for r in results:
    spec = patches[r['id']]
    is_require = 'require' in spec
    if run == 'first':
        want = 'already_in_place' if is_require else 'applied'
    else:
        want = 'already_in_place'
    if r['critical'] and r['outcome'] != want:
        bad.append(f"{r['id']}: {r['outcome']} (expected {want}) {r.get('reason') or ''}")
    if not r['critical'] and r['outcome'] not in ('applied', 'already_in_place'):
        print(f"warning: non-critical patch {r['id']}: {r['outcome']} {r.get('reason') or ''}", file=sys.stderr)
counts = {}
for r in results:
    counts[r['outcome']] = counts.get(r['outcome'], 0) + 1
print(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))
if bad:
    print('unexpected outcomes:\n  ' + '\n  '.join(bad), file=sys.stderr)
    sys.exit(1)
PY
}

# --- 2. apply to a pristine copy
tree=$work/tree
fresh_copy "$tree"
say "apply (${patch_cmd[*]##*/}) to a copy of openhands-ai $pinned"
"${patch_cmd[@]}" apply --manifest "$manifest" --root "$tree" --report "$work/apply1.json" \
    > "$work/apply1.out" 2>&1 || { cat "$work/apply1.out" >&2; die "apply on the pristine tree"; }
summary=$(check_report "$work/apply1.json" first) || { cat "$work/apply1.out" >&2; die "not every critical patch applied"; }
say "first apply: $summary"

say "compileall on the patched tree"
python3 -m compileall -q "$tree" > "$work/compileall.out" 2>&1 \
    || { cat "$work/compileall.out" >&2; die "compileall on the patched tree"; }
find "$tree" -name __pycache__ -type d -prune -exec rm -rf {} +

"${patch_cmd[@]}" apply --manifest "$manifest" --root "$tree" --report "$work/apply2.json" \
    > "$work/apply2.out" 2>&1 || { cat "$work/apply2.out" >&2; die "second apply"; }
summary=$(check_report "$work/apply2.json" second) || { cat "$work/apply2.out" >&2; die "second apply was not a no-op"; }
written=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["written"]))' "$work/apply2.json")
[ "$written" = 0 ] || die "second apply wrote $written file(s)"
say "second apply: $summary (no file written)"

"${patch_cmd[@]}" check --manifest "$manifest" --root "$tree" > "$work/check.out" 2>&1 \
    || { cat "$work/check.out" >&2; die "check on the patched tree is not clean"; }
say "check: clean"

# --- 3. a critical anchor edited away: apply must fail, name the patch, write nothing
drift=$work/drift
fresh_copy "$drift"
dss=$drift/openhands/app_server/sandbox/docker_sandbox_service.py
sed -i "s/'sandbox_spec_id': sandbox_spec.id,/'sandbox_spec': sandbox_spec.id,/" "$dss"
grep -q "'sandbox_spec': sandbox_spec.id," "$dss" || die "could not edit the anchor of sandbox-labels"
before=$(cd "$drift" && find . -type f -exec sha256sum {} + | sort | sha256sum)
set +e
"${patch_cmd[@]}" apply --manifest "$manifest" --root "$drift" > "$work/drift.out" 2> "$work/drift.err"
rc=$?
set -e
after=$(cd "$drift" && find . -type f -exec sha256sum {} + | sort | sha256sum)
[ "$rc" = 1 ] || { cat "$work/drift.out" "$work/drift.err" >&2; die "apply with a missing anchor exited $rc, not 1"; }
grep -q '^CRITICAL PATCHES FAILED:' "$work/drift.err" || { cat "$work/drift.err" >&2; die "no CRITICAL PATCHES FAILED summary"; }
grep -q 'sandbox-labels' "$work/drift.err" || { cat "$work/drift.err" >&2; die "the summary does not name sandbox-labels"; }
[ "$before" = "$after" ] || die "apply with a failed critical patch changed the tree"
say "missing anchor: exit 1, names sandbox-labels, tree unchanged"

# --- 4. types of the integration package, as installed in the patched tree
say "mypy --strict sandport_openhands"
(cd "$tree" && MYPYPATH="$tree" python3 -m mypy --strict --follow-imports=silent \
    --ignore-missing-imports --cache-dir "$cache/mypy-cache" -p sandport_openhands) \
    > "$work/mypy.out" 2>&1 || { cat "$work/mypy.out" >&2; die "mypy"; }
say "mypy: $(tail -1 "$work/mypy.out")"

# --- 5. pytest against the patched tree
say "pytest (patched tree first on PYTHONPATH)"
set +e
# SANDPORT_BIN: the gateway end-to-end test runs it (skipped for the patch engine's binary)
(cd "$here" && PYTHONPATH="$tree${PYTHONPATH:+:$PYTHONPATH}" SANDPORT_BIN="$bin" \
    python3 -m pytest -q -p no:cacheprovider "$here/tests") > "$work/pytest.out" 2>&1
rc=$?
set -e
cat "$work/pytest.out"
line=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^(=+ )?(no tests ran|[0-9]+ error)' "$work/pytest.out" | tail -1)
echo "pytest summary: ${line:-<none>}"
[ "$rc" = 0 ] || die "pytest exited $rc"

say "openhands ci passed in $((SECONDS - started)) s"
