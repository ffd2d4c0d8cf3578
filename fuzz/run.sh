#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for FUZZ_SECONDS (default 60) seconds, one after
# the other, on one core. Prints executions and crashes per target; exits non-zero if any
# target crashed (the reproducer is left in fuzz/artifacts/<target>/).
#
#   fuzz/run.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run.sh routing host_form
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). The corpus
# under fuzz/corpus/<target>/ is the seed; new inputs go to a scratch copy, so the repository
# is not touched (minimise with `cargo +nightly fuzz cmin <target>` before committing any).
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(routing host_form identity headers labels patch_manifest)
fi

CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo +nightly fuzz build -s "$sanitizer"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
printf '%-16s %14s %10s %8s\n' target executions exec/s crashes
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "artifacts/$target"
    cp -r "corpus/$target/." "$scratch/$target/"
    log="$scratch/$target.log"
    status=0
    cargo +nightly fuzz run -s "$sanitizer" "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(grep -c 'Test unit written to' "$log" || true)
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes=1
    fi
    printf '%-16s %14s %10s %8s\n' "$target" "${runs:-?}" "${rate:-?}" "$crashes"
    if [ "$crashes" -ne 0 ]; then
        failed=1
        grep -E 'panicked at|Test unit written to|SUMMARY' "$log" | head -5 >&2 || true
    fi
done
exit "$failed"
