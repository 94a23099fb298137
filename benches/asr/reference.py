#!/usr/bin/env python3
"""Python + ONNX Runtime reference for Lectern's Whisper transcription.

Loads the ONNX graphs written by models/fetch.sh (models/convert_whisper.py), computes the Whisper
log-mel front end in numpy, decodes greedily with the decoder's KV cache, and reports per-clip and
overall WER plus the real-time factor (processing time / audio duration) for each variant.

  python benches/asr/reference.py [--models-dir DIR] [--clips DIR] [--variants fp32,int8]
                                  [--threads 2] [--timestamps] [--repeat N]

The last line printed is a one-line JSON summary. Needs numpy + onnxruntime only (use the venv
that fetch.sh creates: $LECTERN_MODELS_DIR/.venv/bin/python).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import wave
from pathlib import Path

import numpy as np

# ---- Whisper front end constants -------------------------------------------------------------
SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
CHUNK_S = 30
N_SAMPLES = CHUNK_S * SAMPLE_RATE  # 480 000
N_FRAMES = N_SAMPLES // HOP  # 3000

# ---- tiny.en / base special tokens (English-only vocab; see models/README.md) -----------------
# The multilingual vocab shifts everything after <|endoftext|> by one; WhisperOnnx reads the ids
# from tokenizer.json / vocabulary.txt instead of trusting these constants.
EOT = 50256
SOT = 50257
NO_TIMESTAMPS = 50362
TIMESTAMP_BEGIN = 50363  # <|0.00|>, then one id per 0.02 s up to <|30.00|>
MAX_NEW_TOKENS = 224  # half the text context, as Whisper does
MAX_INITIAL_TIMESTAMP = 50  # first timestamp <= 1.00 s


# ---------------------------------------------------------------------------------------------
# Audio + log-mel
# ---------------------------------------------------------------------------------------------


def load_wav(path: Path | str) -> np.ndarray:
    """16-bit PCM WAV -> float32 mono in [-1, 1] at 16 kHz (linear resampling if needed)."""
    with wave.open(str(path), "rb") as w:
        ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        raw = w.readframes(n)
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM is supported (got {8 * width}-bit)")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    if rate != SAMPLE_RATE:
        t_out = np.arange(int(round(len(x) * SAMPLE_RATE / rate))) * (rate / SAMPLE_RATE)
        x = np.interp(t_out, np.arange(len(x)), x).astype(np.float32)
    return x


def _hz_to_mel(f):
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-12) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), m * f_sp)


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                fmax: float | None = None) -> np.ndarray:
    """[n_mels, n_fft//2+1] triangular filters on the Slaney scale with Slaney (area) norm."""
    fmax = sr / 2 if fmax is None else fmax
    fft_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz[None, :] - lo) / (mid - lo)
    falling = (hi - fft_hz[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    fb *= (2.0 / (hi - lo))  # each filter has unit area
    return fb.astype(np.float32)


_FILTERS = None
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic


def log_mel(audio: np.ndarray) -> np.ndarray:
    """One 30 s window -> [80, 3000] float32 normalised log-mel, as Whisper expects."""
    global _FILTERS
    if _FILTERS is None:
        _FILTERS = mel_filters()
    x = np.zeros(N_SAMPLES, np.float32)
    n = min(len(audio), N_SAMPLES)
    x[:n] = audio[:n]
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")  # centre=True, reflect
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]  # [3001, 400]
    spec = np.fft.rfft(frames * _WINDOW, axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2)[:-1].astype(np.float32)  # drop last frame
    mel = _FILTERS @ power.T  # [80, 3000]
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Tokenizer (decode only): byte-level BPE vocab from tokenizer.json
# ---------------------------------------------------------------------------------------------


def _byte_level_alphabet() -> dict[str, int]:
    """Printable byte values stand for themselves; the rest are shifted to code points >= 256."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    char_to_byte = {chr(b): b for b in keep}
    shift = 0
    for b in range(256):
        if b not in keep:
            char_to_byte[chr(256 + shift)] = b
            shift += 1
    return char_to_byte


class Tokenizer:
    def __init__(self, model_dir: Path):
        tj = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
        self.id_to_piece: dict[int, str] = {i: p for p, i in tj["model"]["vocab"].items()}
        self.special: dict[str, int] = {}
        for t in tj.get("added_tokens", []):
            self.id_to_piece[t["id"]] = t["content"]
            self.special[t["content"]] = t["id"]
        # tokenizer.json of the CTranslate2 export lacks the timestamp tokens; the CTranslate2
        # vocabulary.txt (one token per line, line number = id) has the full list.
        vocab_txt = model_dir / "vocabulary.txt"
        if vocab_txt.is_file():
            for i, line in enumerate(vocab_txt.read_text(encoding="utf-8").split("\n")):
                if line.startswith("<|") and line.endswith("|>"):
                    self.special.setdefault(line, i)
        self._bytes = _byte_level_alphabet()

    def id(self, token: str) -> int:
        return self.special[token]

    def decode(self, ids) -> str:
        out = bytearray()
        for i in ids:
            piece = self.id_to_piece.get(int(i))
            if piece is None or (piece.startswith("<|") and piece.endswith("|>")):
                continue
            out.extend(self._bytes[c] for c in piece)
        return out.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class WhisperOnnx:
    def __init__(self, model_dir: Path | str, variant: str = "fp32", threads: int = 2):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        sfx = "" if variant == "fp32" else "." + variant
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        t0 = time.perf_counter()
        prov = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(model_dir / f"encoder{sfx}.onnx"), so, providers=prov)
        self.decoder = ort.InferenceSession(str(model_dir / f"decoder{sfx}.onnx"), so, providers=prov)
        self.load_s = time.perf_counter() - t0
        self.tok = Tokenizer(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        self.suppress = np.array(cfg.get("suppress_ids", []), dtype=np.int64)
        self.suppress_begin = np.array(cfg.get("suppress_ids_begin", []), dtype=np.int64)
        self.eot = self.tok.id("<|endoftext|>")
        self.sot = self.tok.id("<|startoftranscript|>")
        self.no_ts = self.tok.id("<|notimestamps|>")
        self.ts_begin = self.tok.special.get("<|0.00|>", self.no_ts + 1)
        shp = self.decoder.get_inputs()[1].shape  # [L, 1, P, D]
        self.n_layers, self.d_model = int(shp[0]), int(shp[3])
        # Whisper's rule: the multilingual vocabulary has 51865+ entries, the English-only 51864
        self.multilingual = int(self.decoder.get_outputs()[0].shape[1]) >= 51865

    def prompt(self, timestamps: bool, language: str | None = None) -> list[int]:
        p = [self.sot]
        if self.multilingual:  # <|lang|><|transcribe|>; no language detection here: default en
            p += [self.tok.id(f"<|{language or 'en'}|>"), self.tok.id("<|transcribe|>")]
        if not timestamps:
            p.append(self.no_ts)
        return p

    def _apply_rules(self, logits: np.ndarray, generated: list[int], timestamps: bool) -> None:
        logits[self.suppress] = -np.inf
        if not generated:
            logits[self.suppress_begin] = -np.inf
        if not timestamps:
            logits[self.eot + 1:] = -np.inf
            return
        # timestamp mode: other special tokens never, timestamps by Whisper's pairing rules
        logits[self.eot + 1:self.ts_begin] = -np.inf
        ts = [t for t in generated if t >= self.ts_begin]
        last_ts = len(generated) >= 1 and generated[-1] >= self.ts_begin
        prev_ts = len(generated) < 2 or generated[-2] >= self.ts_begin
        if last_ts:
            if prev_ts:  # a closed pair: text must follow
                logits[self.ts_begin:] = -np.inf
            else:  # an opened pair: close it (or end)
                logits[:self.eot] = -np.inf
        if ts:  # never go back in time
            floor = ts[-1] if (last_ts and not prev_ts) else ts[-1] + 1
            logits[self.ts_begin:floor] = -np.inf
        if not generated:  # start with a timestamp <= 1 s
            logits[:self.ts_begin] = -np.inf
            logits[self.ts_begin + MAX_INITIAL_TIMESTAMP + 1:] = -np.inf
        # if the timestamps together are likelier than any single text token, emit one
        m = np.max(logits)
        lp = logits - m - np.log(np.sum(np.exp(logits - m)))
        ts_lp = np.logaddexp.reduce(lp[self.ts_begin:])
        if ts_lp > np.max(lp[:self.ts_begin]):
            logits[:self.ts_begin] = -np.inf

    def decode_window(self, mel: np.ndarray, timestamps: bool = False,
                      language: str | None = None) -> list[int]:
        cross_k, cross_v = self.encoder.run(None, {"mel": mel[None]})
        empty = np.zeros((self.n_layers, 1, 0, self.d_model), np.float32)
        self_k, self_v = empty, empty
        tokens = np.array([self.prompt(timestamps, language)], dtype=np.int64)
        generated: list[int] = []
        for _ in range(MAX_NEW_TOKENS):
            logits, self_k, self_v = self.decoder.run(None, {
                "tokens": tokens, "self_k": self_k, "self_v": self_v,
                "cross_k": cross_k, "cross_v": cross_v})
            logits = logits[0].astype(np.float64)
            self._apply_rules(logits, generated, timestamps)
            nxt = int(np.argmax(logits))
            if nxt == self.eot:
                break
            generated.append(nxt)
            tokens = np.array([[nxt]], dtype=np.int64)
        return generated

    def transcribe(self, audio: np.ndarray, timestamps: bool = False,
                   language: str | None = None) -> str:
        """Greedy transcription in consecutive 30 s windows."""
        texts = []
        for start in range(0, max(len(audio), 1), N_SAMPLES):
            ids = self.decode_window(log_mel(audio[start:start + N_SAMPLES]), timestamps, language)
            if timestamps:
                texts.append(self.render_timestamps(ids, start / SAMPLE_RATE))
            else:
                texts.append(self.tok.decode(ids).strip())
        return " ".join(t for t in texts if t)

    def render_timestamps(self, ids: list[int], offset_s: float) -> str:
        out, text = [], []
        for t in ids:
            if t >= self.ts_begin:
                if text:
                    out.append(self.tok.decode(text).strip())
                    text = []
                out.append(f"[{offset_s + (t - self.ts_begin) * 0.02:.2f}]")
            else:
                text.append(t)
        if text:
            out.append(self.tok.decode(text).strip())
        return " ".join(out)


# ---------------------------------------------------------------------------------------------
# WER
# ---------------------------------------------------------------------------------------------

_TS = re.compile(r"\[\d+(\.\d+)?\]")


def normalize(text: str) -> list[str]:
    """lowercase, drop timestamps and apostrophes, other punctuation -> space, collapse spaces."""
    text = _TS.sub(" ", text.lower())
    text = text.replace("'", "").replace("\u2019", "")
    text = re.sub(r"[^\w\s]|_", " ", text)
    return text.split()


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, wb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> dict:
    errors = words = 0
    for r, h in zip(refs, hyps):
        rw, hw = normalize(r), normalize(h)
        errors += edit_distance(rw, hw)
        words += len(rw)
    return {"errors": errors, "words": words, "wer": errors / max(words, 1)}


# ---------------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------------


def load_clips(clips_dir: Path) -> list[tuple[str, str]]:
    rows = []
    for line in (clips_dir / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, text = line.split("\t", 1)
            rows.append((name, text))
    return rows


def main(argv=None) -> int:
    default_models = Path(os.environ.get("LECTERN_MODELS_DIR", "models/cache"))
    ap = argparse.ArgumentParser(description="Whisper ONNX reference: WER + RTF")
    ap.add_argument("--models-dir", type=Path, default=default_models)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--clips", type=Path, help="dir with *.wav + transcripts.tsv "
                                               "(default: MODELS_DIR/librivox)")
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timestamps", action="store_true", help="decode with timestamp tokens")
    ap.add_argument("--language", help="language of multilingual models (default en)")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes over the clips")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)

    model_dir = a.models_dir / a.model
    clips_dir = a.clips or (a.models_dir / "librivox")
    clips = load_clips(clips_dir)
    audio = {name: load_wav(clips_dir / name) for name, _ in clips}
    audio_s = sum(len(x) for x in audio.values()) / SAMPLE_RATE

    summary = {"bench": "asr_reference", "model": a.model, "threads": a.threads,
               "timestamps": a.timestamps, "clips": len(clips), "audio_s": round(audio_s, 2),
               "results": {}}
    for variant in [v for v in a.variants.split(",") if v]:
        asr = WhisperOnnx(model_dir, variant, a.threads)
        asr.transcribe(audio[clips[0][0]][: SAMPLE_RATE], a.timestamps, a.language)  # warm-up
        proc_s = 0.0
        hyps = []
        per_clip = []
        for rep in range(a.repeat):
            hyps = []
            for name, ref in clips:
                t0 = time.perf_counter()
                hyp = asr.transcribe(audio[name], a.timestamps, a.language)
                dt = time.perf_counter() - t0
                proc_s += dt
                hyps.append(hyp)
                if rep == 0:
                    w = wer([ref], [hyp])
                    dur = len(audio[name]) / SAMPLE_RATE
                    per_clip.append({"clip": name, "audio_s": round(dur, 2), "proc_s": round(dt, 3),
                                     "wer": round(w["wer"], 4), "hyp": hyp})
                    if not a.quiet:
                        print(f"[{variant}] {name} ({dur:.2f}s, {dt:.2f}s, WER {w['wer']:.1%})\n"
                              f"    ref: {ref}\n    hyp: {hyp}", flush=True)
        total = wer([r for _, r in clips], hyps)
        rtf = proc_s / (audio_s * a.repeat)
        summary["results"][variant] = {
            "wer": round(total["wer"], 4), "errors": total["errors"], "words": total["words"],
            "rtf": round(rtf, 4), "proc_s": round(proc_s / a.repeat, 3),
            "load_s": round(asr.load_s, 3), "per_clip": per_clip,
        }
        print(f"[{variant}] WER {total['wer']:.2%} ({total['errors']}/{total['words']}), "
              f"RTF {rtf:.3f} over {audio_s:.1f}s x{a.repeat}, load {asr.load_s:.2f}s", flush=True)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
