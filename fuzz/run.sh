#!/usr/bin/env bash
# Builds the fuzz targets with coverage instrumentation on the stable toolchain and runs each for a
# fixed budget on its committed corpus (fuzz/corpus/<target>). New inputs go to a scratch corpus
# under target/, never into the committed one; a crash is written to target/fuzz/artifacts/<target>/
# and fails the run (turn it into a byte-literal regression test in tests/fuzz_regressions.rs).
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 30 s, every target)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sniff decode http_inputs packager)
triple=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps the instrumentation off build scripts and proc macros (libFuzzer's hooks are
# linked into the fuzz binaries only).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR=../target/fuzz
cargo build --locked --release --target "$triple" --bins
for t in "${targets[@]}"; do
  work=../target/fuzz/corpus/$t
  artifacts=../target/fuzz/artifacts/$t
  mkdir -p "$work" "$artifacts"
  echo "=== fuzz $t for ${seconds}s"
  # -rss_limit_mb: a decoder that allocates without bound on a small input is a finding too.
  "../target/fuzz/$triple/release/$t" "$work" "corpus/$t" -max_total_time="$seconds" -rss_limit_mb=1024 \
    -max_len=65536 -timeout=10 -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | \
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|thread .* panicked|.*deadly signal)" || true
  if compgen -G "$artifacts/*" >/dev/null; then
    echo "fuzz $t found a crash: $(ls "$artifacts")" >&2
    exit 1
  fi
done
