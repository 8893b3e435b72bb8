#!/usr/bin/env bash
# Runs mmmail's fuzz targets (fuzz/fuzz_targets, cargo-fuzz with libFuzzer) for a given
# time each and prints how many inputs each one ran.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default: 60 s, every target
#
# Seeds come from the protocol tests (fuzz/seeds/*.json, made by fuzz/seeds.py) and
# are expanded into fuzz/corpus/<target>/, which keeps what libFuzzer finds between
# runs. Every run is bounded: at most 512 MiB of memory (-rss_limit_mb), 10 s per input
# (-timeout: a slow input is reported as a hang), inputs up to 16 KiB. A crash, a hang,
# an out-of-memory or a failed assertion stops the script with libFuzzer's report and
# the input in fuzz/artifacts/<target>/.
#
# cargo-fuzz needs nightly features; on the stable toolchain RUSTC_BOOTSTRAP=1 allows
# them. No sanitizer is used: mmmail's crates forbid unsafe code, so the checks that
# matter are Rust's own (bounds, overflow with debug assertions, which cargo-fuzz turns
# on) and the targets' assertions, and the build is far faster without ASan.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
all=(smtp_command smtp_data pop3_command tmtp_frame stats_datagram address pattern)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1

python3 - "${targets[@]}" <<'EOF'
import json, pathlib, sys
for t in sys.argv[1:]:
    seeds = json.loads(pathlib.Path(f"fuzz/seeds/{t}.json").read_text())
    d = pathlib.Path(f"fuzz/corpus/{t}")
    d.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seeds):
        p = d / f"seed-{i:04}"
        if not p.exists():
            p.write_bytes(s.encode("latin-1"))
EOF

echo "==> building the fuzz targets"
build=$(mktemp)
if ! cargo fuzz build --sanitizer none --fuzz-dir fuzz >"$build" 2>&1; then
    tail -40 "$build"
    exit 1
fi
rm -f "$build"

summary=()
for t in "${targets[@]}"; do
    echo "==> $t for ${secs} s"
    log=$(mktemp)
    mkdir -p "fuzz/artifacts/$t"
    if ! cargo fuzz run --sanitizer none --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -timeout=10 -max_len=16384 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        tail -40 "$log"
        echo "FAILED: $t (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    summary+=("$(printf '%-16s %12s runs %8s/s  peak %4s MiB  corpus %5s' "$t" "$runs" "$rate" "$rss" "$corpus")")
    rm -f "$log"
done
echo "==> fuzzed ${secs} s per target, no crash, no hang, memory within 512 MiB"
printf '%s\n' "${summary[@]}"
