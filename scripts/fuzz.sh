#!/usr/bin/env bash
# The fuzzing campaign: every target of fuzz/ (docs/testing.md, "Fuzzing") for a set time each.
#   scripts/fuzz.sh [seconds per target, default 600] [target ...]
# Seeds are written into fuzz/corpus/<target>/, the corpus is minimised after the run
# (it is kept in the repository and replayed by `cargo test -p palisade-fuzz`), and a
# crash is copied to fuzz/regressions/<target>/, where the same tests replay it until
# it is fixed. Prints one line per target: inputs run, corpus size, crashes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-600}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^palisade-fuzz-targets$')
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked --quiet cargo-fuzz
fi
# cargo-fuzz passes unstable compiler flags (sanitizers, coverage options); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, so no other toolchain is needed.
export RUSTC_BOOTSTRAP=1
target_dir=${PALISADE_FUZZ_TARGET_DIR:-/var/tmp/palisade-fuzz-target}
fuzz=(cargo fuzz)
build_opts=(--target-dir "$target_dir" --sanitizer address)

# FUZZ_SKIP_SEEDS=1 keeps the corpora as they are (seeds written by an earlier run).
if [ -z "${FUZZ_SKIP_SEEDS:-}" ]; then
    echo "== writing seeds"
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/palisade-target} \
        cargo run --quiet -p palisade-fuzz --bin fuzz-seeds -- fuzz/corpus
fi

echo "== building the targets (instrumented, release)"
"${fuzz[@]}" build "${build_opts[@]}"

report=$(mktemp)
printf '%-18s %12s %10s %8s\n' target inputs corpus crashes >"$report"
status=0
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="fuzz/artifacts/$t/last-run.log"
    set +e
    "${fuzz[@]}" run "${build_opts[@]}" "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=0
    for f in "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/oom-* "fuzz/artifacts/$t"/timeout-* "fuzz/artifacts/$t"/leak-*; do
        [ -e "$f" ] || continue
        mkdir -p "fuzz/regressions/$t"
        cp "$f" "fuzz/regressions/$t/"
        crashes=$((crashes + 1))
    done
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        echo "fuzz: $t exited with $rc and left no crash input; see $log"
        status=1
    fi
    [ "$crashes" -eq 0 ] || status=1
    # Keep the smallest corpus that covers the same edges.
    "${fuzz[@]}" cmin "${build_opts[@]}" "$t" "fuzz/corpus/$t" >/dev/null 2>&1 || true
    size=$(find "fuzz/corpus/$t" -type f | wc -l)
    printf '%-18s %12s %10s %8s\n' "$t" "${runs:-?}" "$size" "$crashes" >>"$report"
done
echo
cat "$report"
[ "$status" -eq 0 ] || echo "fuzz: crash inputs are in fuzz/regressions/; cargo test -p palisade-fuzz replays them"
exit "$status"
