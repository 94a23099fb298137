#!/usr/bin/env python3
"""Python + ONNX Runtime reference for Lectern's MiniLM embeddings (src/embed/minilm.rs).

Same model files (models/fetch.sh), same recipe: HF `tokenizers` with the tokenizer.json's fixed
padding removed and truncation set to 256 word pieces, `last_hidden_state` mean-pooled over the
attention mask, L2-normalised.

  reference.py --texts IN.json [--out OUT.json] [--variant int8|fp32] [--batch-size 1]
      Embeds a JSON list of strings; writes {"model", "onnxruntime", "vectors": [[384 floats]...]}.
      The default batch size 1 (no padding at all) is the ground truth the Rust test compares with.
  reference.py --dump-chunks OUT.json [--chunks 200]
      Writes the deterministic transcript-like benchmark chunks (a JSON list of strings).
  reference.py --bench [--variants int8,fp32] [--threads 2] [--repeat 5] [--chunks 200]
      Reports chunks/s on the benchmark chunks: batches of 16 sorted by token count, as Rust does.
      The last line printed is a one-line JSON summary.

Needs numpy, onnxruntime and tokenizers (see benches/embed/README.md for the venv).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MAX_TOKENS = 256
BATCH_SIZE = 16
MODEL_FILES = {"int8": "model.onnx", "fp32": "model.fp32.onnx"}


def default_models_dir() -> Path:
    env = os.environ.get("LECTERN_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models" / "cache"


def load(models_dir: Path, variant: str, threads: int) -> tuple[ort.InferenceSession, Tokenizer]:
    d = models_dir / "minilm-l6-v2"
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()  # tokenizer.json pads every input to 128: batches are padded below instead
    tok.enable_truncation(max_length=MAX_TOKENS)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(d / MODEL_FILES[variant]), opts, providers=["CPUExecutionProvider"])
    return sess, tok


def run_batch(sess: ort.InferenceSession, encs: list) -> np.ndarray:
    seq = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), seq), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for r, e in enumerate(encs):
        n = len(e.ids)
        ids[r, :n], mask[r, :n], types[r, :n] = e.ids, e.attention_mask, e.type_ids
    (hidden,) = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    m = mask[:, :, None].astype(np.float32)
    mean = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return mean / np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)


def embed(sess: ort.InferenceSession, tok: Tokenizer, texts: list[str], batch_size: int) -> np.ndarray:
    encs = [tok.encode(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out[idx] = run_batch(sess, [encs[i] for i in idx])
    return out


# ---- deterministic transcript-like benchmark text -------------------------------------------

OPENERS = ["so", "and", "now", "well", "you know", "but", "okay so", "and then", "right", "anyway"]
SUBJECTS = ["we", "I", "they", "the committee", "my grandmother", "the speaker", "our team", "the farmers",
            "the choir", "a listener", "the council", "everyone here", "the author", "the children"]
VERBS = ["talked about", "kept coming back to", "wanted to understand", "argued over", "wrote about",
         "remembered", "planned", "worried about", "asked about", "explained", "read a passage on",
         "spent the morning on", "disagreed about", "voted on", "prayed about"]
OBJECTS = ["the harvest", "forgiving old debts", "the new bridge", "the budget for next year", "the flood",
           "the history of the harbour", "what we owe each other", "the school roof", "the winter storms",
           "a letter from nineteen twelve", "the price of bread", "the recording schedule", "the old mill",
           "the second chapter", "the fishing season", "the museum archive", "the parish accounts"]
TAILS = ["for a long time", "last week", "again and again", "in some detail", "with real care", "before lunch",
         "at the meeting", "on the radio", "after the service", "in the end", "more than once", "quietly"]
ASIDES = ["which honestly surprised me", "if I remember correctly", "and I think that matters",
          "as you can imagine", "and nobody expected that", "which is a fair question",
          "and we will come back to it", "um", "uh", "I mean"]


def bench_chunks(n: int = 200, seed: int = 20261122) -> list[str]:
    """n chunks of about 30 s of speech each (60-90 words at ~150 words per minute)."""
    rng = random.Random(seed)
    chunks = []
    for _ in range(n):
        words: list[str] = []
        target = rng.randint(60, 90)
        while len(words) < target:
            parts = [rng.choice(OPENERS), rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
            if rng.random() < 0.6:
                parts.append(rng.choice(TAILS))
            if rng.random() < 0.3:
                parts.append(rng.choice(ASIDES))
            words.extend((" ".join(parts) + rng.choice([".", ".", ",", "?"])).split())
        chunks.append(" ".join(words[:target]))
    return chunks


# ---- modes ----------------------------------------------------------------------------------


def cmd_texts(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text(encoding="utf-8"))
    sess, tok = load(args.models_dir, args.variant, args.threads)
    vecs = embed(sess, tok, texts, args.batch_size)
    doc = {"model": f"all-minilm-l6-v2-{args.variant}", "onnxruntime": ort.__version__, "vectors": vecs.tolist()}
    text = json.dumps(doc)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)


def cmd_bench(args: argparse.Namespace) -> None:
    texts = bench_chunks(args.chunks)
    results = {}
    for variant in args.variants.split(","):
        t0 = time.perf_counter()
        sess, tok = load(args.models_dir, variant, args.threads)
        load_s = time.perf_counter() - t0
        embed(sess, tok, texts[:BATCH_SIZE], BATCH_SIZE)  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            embed(sess, tok, texts, BATCH_SIZE)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        tokens = sum(min(len(tok.encode(t).ids), MAX_TOKENS) for t in texts) / len(texts)
        results[variant] = {"chunks_per_s": round(len(texts) / med, 1), "median_s": round(med, 4),
                            "best_s": round(min(times), 4), "load_s": round(load_s, 3), "mean_tokens": round(tokens, 1)}
        print(f"{variant}: {len(texts) / med:.1f} chunks/s (median {med:.3f} s over {args.repeat} passes, "
              f"{tokens:.0f} tokens/chunk, load {load_s:.2f} s)", file=sys.stderr)
    print(json.dumps({"bench": "embed_reference", "onnxruntime": ort.__version__, "threads": args.threads,
                      "chunks": len(texts), "batch": BATCH_SIZE, "results": results}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=default_models_dir())
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra_op_num_threads")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--texts", help="JSON file with a list of strings to embed")
    mode.add_argument("--dump-chunks", help="write the benchmark chunks (JSON list) to this file")
    mode.add_argument("--bench", action="store_true", help="report chunks/s")
    p.add_argument("--out", help="with --texts: write the JSON here instead of stdout")
    p.add_argument("--variant", choices=sorted(MODEL_FILES), default="int8")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--variants", default="int8,fp32")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--chunks", type=int, default=200)
    args = p.parse_args()
    if args.texts:
        cmd_texts(args)
    elif args.dump_chunks:
        Path(args.dump_chunks).write_text(json.dumps(bench_chunks(args.chunks)), encoding="utf-8")
    else:
        cmd_bench(args)


if __name__ == "__main__":
    main()
