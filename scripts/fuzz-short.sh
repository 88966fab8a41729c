#!/usr/bin/env bash
# A short fuzz run of every target in fuzz/ (CI and `make fuzz-short`): installs cargo-fuzz if
# missing, builds the seed corpus from the recorded fixtures (fuzz/seed.sh), then runs each target
# for FUZZ_SECS seconds (default 30), one job at a time, failing on any crash, panic, hang
# (> 10 s on one input) or allocation over 2 GiB. Without a nightly toolchain it prints why it
# skips and exits 0.
#   FUZZ_SECS=60 FUZZ_SANITIZER=address scripts/fuzz-short.sh
#   scripts/fuzz-short.sh build   # only install, seed and build (CI starts this early, niced)
#   scripts/fuzz-short.sh run     # only run (builds first if needed)
set -euo pipefail
phase="${1:-all}"
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-30}"
# No ASan by default: the targets and the crate are safe Rust (a bug shows as a panic, which
# libFuzzer catches without a sanitizer), and an ASan build of every dependency is the slow part.
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(frame stream_framer stream_decoder config)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped: no nightly toolchain (cargo +nightly); cargo-fuzz needs it"
    exit 0
fi
t0=$(date +%s)
if [ "$phase" != run ]; then
    scripts/install-fuzz-deps.sh
    fuzz/seed.sh
    (cd fuzz && cargo +nightly fuzz build -O --sanitizer "$sanitizer")
    echo "fuzz: built ${#targets[@]} targets (sanitizer $sanitizer) in $(( $(date +%s) - t0 )) s"
fi
[ "$phase" = build ] && exit 0
[ -d fuzz/corpus ] || fuzz/seed.sh
cd fuzz
for t in "${targets[@]}"; do
    echo "== fuzz $t (${secs} s)"
    cargo +nightly fuzz run -O --sanitizer "$sanitizer" "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -print_final_stats=1 > "target/fuzz-$t.log" 2>&1 \
        || { tail -n 60 "target/fuzz-$t.log" >&2; echo "fuzz: $t failed; the reproducer is under fuzz/artifacts/$t/" >&2; exit 1; }
    grep -E '^(#[0-9]+ *DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "target/fuzz-$t.log" || true
done
echo "fuzz: all ${#targets[@]} targets ran ${secs} s each with no crash, hang or OOM ($(( $(date +%s) - t0 )) s in all)"
