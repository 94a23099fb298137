#!/usr/bin/env bash
# Whisper tiny.en in Lectern (Rust, ort) next to the Python onnxruntime reference, same ONNX models,
# same LibriVox clips, same machine, alternating, 2 intra-op threads each:
#
#   bash benches/asr/compare.sh            # 3 rounds
#   BENCH_ROUNDS=1 bash benches/asr/compare.sh
#
# Rust: the release build of tests/speech_models.rs `whisper_wer_on_librivox_fp32_and_int8` (log-mel
# in Rust + encoder + greedy decoding with the KV cache, per clip, after a warm-up), which prints
# "[variant] WER …, RTF …". Python: benches/asr/reference.py --repeat 1. Needs `bash models/fetch.sh`.
# Each clip is one 30 s Whisper window, so on these short clips RTF is dominated by the encoder;
# compare the two sides with each other, and see the transcribe step's own RTF on long audio in the
# job output (`rtf`).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${BENCH_ROUNDS:-3}
PY=${LECTERN_MODELS_DIR:-models/cache}/.venv/bin/python
[ -x "$PY" ] || { echo "run: bash models/fetch.sh" >&2; exit 1; }
cargo test --release --test speech_models --no-run >/dev/null 2>&1
for r in $(seq "$ROUNDS"); do
  echo "== round $r: rust"
  cargo test --release --test speech_models whisper_wer_on_librivox -- --nocapture 2>/dev/null |
    grep -E '^\[[a-z0-9+]+\] (WER|load)' || true
  echo "== round $r: python"
  "$PY" benches/asr/reference.py --repeat 1 --quiet --variants fp32,int8 | grep -v '^{' || true
  "$PY" benches/asr/reference.py --repeat 1 --quiet --variants fp32,int8 --timestamps | grep -v '^{' || true
done
