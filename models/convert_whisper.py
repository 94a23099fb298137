#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper `model.bin` into two ONNX graphs (encoder, decoder with KV cache).

Only numpy + onnx are needed to convert; onnxruntime is used for the optional int8 variant
(dynamic quantisation) and for the self-check. The graph I/O contract is documented in
models/README.md and relied on by the Rust side:

  encoder: mel f32 [1,80,3000] -> cross_k, cross_v f32 [L,1,1500,D]
  decoder: tokens i64 [1,T], self_k/self_v f32 [L,1,P,D], cross_k/cross_v f32 [L,1,1500,D]
           -> logits f32 [1,V] (last position), new_self_k/new_self_v f32 [L,1,P+T,D]

The position offset P is read from the shape of `self_k` inside the graph.

Usage:
  convert_whisper.py --ct2-dir DIR --out-dir DIR [--int8] [--check-wav WAV [--check-ref TEXT]]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization needs 17; ONNX Runtime 1.31 runs it natively.
IR_VERSION = 8  # conservative: any ONNX Runtime >= 1.10 accepts IR 8.

# CTranslate2 DataType enum values as stored in model.bin.
_CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    # 5 = bfloat16, handled separately
}


# --------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------------------------


class Ct2Model:
    """Variables of a CTranslate2 model.bin (binary format version 6).

    Layout (little endian): u32 version; str spec_name; u32 spec_revision; u32 n_vars; then per
    variable: str name, u8 rank, u32 dims[rank], u8 dtype, u32 n_bytes, raw data; then u32
    n_aliases and (str alias, str target) pairs. A `str` is a u16 byte length followed by the
    bytes (NUL-terminated).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_file():
            buf = self.path.read_bytes()
        else:  # split across packages: model.bin.part1, model.bin.part2, ... concatenated
            parts = sorted(self.path.parent.glob(self.path.name + ".part*"),
                           key=lambda p: int(p.name.rsplit("part", 1)[1]))
            if not parts:
                raise FileNotFoundError(f"{path} (nor {self.path.name}.part1, ...)")
            buf = b"".join(p.read_bytes() for p in parts)
        self._buf = buf
        self._pos = 0
        self.version = self._u32()
        if self.version < 5:
            raise ValueError(f"{path}: unsupported CTranslate2 model.bin version {self.version}")
        self.spec = self._str()
        self.revision = self._u32()
        self.vars: dict[str, np.ndarray] = {}
        for _ in range(self._u32()):
            name = self._str()
            rank = self._u8()
            dims = [self._u32() for _ in range(rank)]
            dtype = self._u8()
            nbytes = self._u32()
            raw = buf[self._pos : self._pos + nbytes]
            self._pos += nbytes
            self.vars[name] = self._decode(raw, dtype, dims, name)
        for _ in range(self._u32()):
            alias, target = self._str(), self._str()
            self.vars[alias] = self.vars[target]
        if self._pos != len(buf):
            raise ValueError(f"{path}: {len(buf) - self._pos} trailing bytes after the aliases")
        del self._buf

    def _take(self, fmt: str):
        (v,) = struct.unpack_from("<" + fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return v

    def _u8(self) -> int:
        return self._take("B")

    def _u32(self) -> int:
        return self._take("I")

    def _str(self) -> str:
        n = self._take("H")
        raw = self._buf[self._pos : self._pos + n]
        self._pos += n
        return raw.rstrip(b"\0").decode("utf-8")

    @staticmethod
    def _decode(raw: bytes, dtype: int, dims: list[int], name: str) -> np.ndarray:
        if dtype == 5:  # bfloat16: upper half of a float32
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        elif dtype in _CT2_DTYPES:
            arr = np.frombuffer(raw, dtype=np.dtype(_CT2_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ValueError(f"variable {name}: unknown CTranslate2 dtype {dtype}")
        return arr.reshape(dims) if dims else arr.reshape(())

    def weight(self, prefix: str) -> np.ndarray:
        """A float32 weight; int8 weights are dequantised with their per-row `weight_scale`."""
        w = self.vars[prefix + "/weight"]
        if w.dtype == np.int8:
            scale = self.vars[prefix + "/weight_scale"].astype(np.float32)
            return (w.astype(np.float32) / scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        return w.astype(np.float32)

    def f32(self, name: str) -> np.ndarray:
        return self.vars[name].astype(np.float32)

    def scalar(self, name: str) -> int:
        return int(self.vars[name])

    def n_layers(self, side: str) -> int:
        n = 0
        while f"{side}/layer_{n}/ffn/linear_0/bias" in self.vars:
            n += 1
        return n


# --------------------------------------------------------------------------------------------
# Small ONNX graph builder
# --------------------------------------------------------------------------------------------


class Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._consts: dict[tuple, str] = {}

    def _fresh(self, hint: str) -> str:
        i = 0
        name = hint
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def init(self, name: str, arr: np.ndarray) -> str:
        name = self._fresh(name)
        self.inits.append(numpy_helper.from_array(np.array(arr, order="C", copy=True), name))
        return name

    def const_i64(self, values) -> str:
        arr = np.asarray(values, dtype=np.int64)
        key = ("i64", arr.shape, tuple(arr.ravel().tolist()))
        if key not in self._consts:
            self._consts[key] = self.init("c_i64", arr)
        return self._consts[key]

    def const_f32(self, value: float) -> str:
        key = ("f32", float(value))
        if key not in self._consts:
            self._consts[key] = self.init("c_f32", np.asarray(value, dtype=np.float32))
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], name: str | None = None, n_out: int = 1,
           outputs: list[str] | None = None, **attrs):
        base = self._fresh(name or op_type.lower())
        if outputs is None:
            outputs = [base] if n_out == 1 else [self._fresh(f"{base}_o{i}") for i in range(n_out)]
        else:
            for o in outputs:
                self._names.add(o)
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=base, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    # -- building blocks -------------------------------------------------------------------

    def gelu(self, x: str) -> str:
        # exact GELU: 0.5 * x * (1 + erf(x / sqrt(2))); ONNX Runtime fuses this pattern.
        t = self.op("Div", [x, self.const_f32(np.sqrt(2.0))])
        t = self.op("Erf", [t])
        t = self.op("Add", [t, self.const_f32(1.0)])
        t = self.op("Mul", [x, t])
        return self.op("Mul", [t, self.const_f32(0.5)], name="gelu")

    def layer_norm(self, x: str, m: Ct2Model, prefix: str) -> str:
        g = self.init(f"{prefix}/gamma", m.f32(prefix + "/gamma"))
        b = self.init(f"{prefix}/beta", m.f32(prefix + "/beta"))
        return self.op("LayerNormalization", [x, g, b], name="ln", axis=-1, epsilon=1e-5)

    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, prefix: str) -> str:
        """x @ w.T + b with w in [out, in] layout (as CTranslate2 and PyTorch store it)."""
        wt = self.init(prefix + "/wT", np.ascontiguousarray(w.T.astype(np.float32)))
        y = self.op("MatMul", [x, wt], name="matmul")
        if b is not None:
            y = self.op("Add", [y, self.init(prefix + "/b", b.astype(np.float32))], name="bias")
        return y

    def split_heads(self, x: str, n_heads: int, d_head: int, perm: list[int]) -> str:
        r = self.op("Reshape", [x, self.const_i64([1, -1, n_heads, d_head])])
        return self.op("Transpose", [r], perm=perm)

    def attention(self, q: str, k: str, v: str, n_heads: int, d_model: int,
                  mask: str | None) -> str:
        """Scaled dot-product attention; q must already carry the 1/sqrt(d_head) scale."""
        dh = d_model // n_heads
        qh = self.split_heads(q, n_heads, dh, [0, 2, 1, 3])  # [1,H,T,dh]
        kh = self.split_heads(k, n_heads, dh, [0, 2, 3, 1])  # [1,H,dh,S]
        vh = self.split_heads(v, n_heads, dh, [0, 2, 1, 3])  # [1,H,S,dh]
        s = self.op("MatMul", [qh, kh], name="scores")
        if mask is not None:
            s = self.op("Add", [s, mask], name="masked")
        p = self.op("Softmax", [s], axis=-1)
        o = self.op("MatMul", [p, vh], name="context")
        o = self.op("Transpose", [o], perm=[0, 2, 1, 3])
        return self.op("Reshape", [o, self.const_i64([1, -1, d_model])])

    def ffn(self, x: str, m: Ct2Model, prefix: str) -> str:
        h = self.layer_norm(x, m, prefix + "/layer_norm")
        h = self.linear(h, m.weight(prefix + "/linear_0"), m.f32(prefix + "/linear_0/bias"),
                        prefix + "/linear_0")
        h = self.gelu(h)
        h = self.linear(h, m.weight(prefix + "/linear_1"), m.f32(prefix + "/linear_1/bias"),
                        prefix + "/linear_1")
        return self.op("Add", [x, h], name="residual")

    def model(self, name: str, inputs, outputs, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="lectern-convert-whisper", doc_string=doc)
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=False)
        return model


def _scaled_qkv(m: Ct2Model, prefix: str, d_model: int, n_heads: int):
    """Fused self-attention projection [3D, D] with the query part pre-scaled by 1/sqrt(d_head)."""
    w = m.weight(prefix + "/linear_0").copy()
    b = m.f32(prefix + "/linear_0/bias").copy()
    scale = np.float32(1.0 / np.sqrt(d_model // n_heads))
    w[:d_model] *= scale
    b[:d_model] *= scale
    return w, b


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


def build_encoder(m: Ct2Model) -> tuple[onnx.ModelProto, dict]:
    g = Graph()
    n_enc = m.n_layers("encoder")
    n_dec = m.n_layers("decoder")
    n_heads = m.scalar("encoder/num_heads")
    w1 = m.f32("encoder/conv1/weight")
    d_model, n_mels, _ = w1.shape
    pos = m.f32("encoder/position_encodings/encodings")
    n_ctx = pos.shape[0]
    n_frames = 2 * n_ctx

    x = g.op("Conv", ["mel", g.init("encoder/conv1/weight", w1),
                      g.init("encoder/conv1/bias", m.f32("encoder/conv1/bias"))],
             kernel_shape=[3], pads=[1, 1], strides=[1])
    x = g.gelu(x)
    x = g.op("Conv", [x, g.init("encoder/conv2/weight", m.f32("encoder/conv2/weight")),
                      g.init("encoder/conv2/bias", m.f32("encoder/conv2/bias"))],
             kernel_shape=[3], pads=[1, 1], strides=[2])
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [1, n_ctx, D]
    x = g.op("Add", [x, g.init("encoder/position_encodings", pos)])

    for i in range(n_enc):
        p = f"encoder/layer_{i}"
        h = g.layer_norm(x, m, p + "/self_attention/layer_norm")
        w, b = _scaled_qkv(m, p + "/self_attention", d_model, n_heads)
        qkv = g.linear(h, w, b, p + "/self_attention/linear_0")
        q, k, v = g.op("Split", [qkv, g.const_i64([d_model] * 3)], n_out=3, axis=-1)
        a = g.attention(q, k, v, n_heads, d_model, None)
        a = g.linear(a, m.weight(p + "/self_attention/linear_1"),
                     m.f32(p + "/self_attention/linear_1/bias"), p + "/self_attention/linear_1")
        x = g.op("Add", [x, a], name="residual")
        x = g.ffn(x, m, p + "/ffn")

    enc = g.layer_norm(x, m, "encoder/layer_norm")

    # Cross-attention keys/values for every decoder layer, computed once per window.
    ks, vs = [], []
    for i in range(n_dec):
        p = f"decoder/layer_{i}/attention/linear_1"
        kv = g.linear(enc, m.weight(p), m.f32(p + "/bias"), p)
        k, v = g.op("Split", [kv, g.const_i64([d_model, d_model])], n_out=2, axis=-1)
        ks.append(g.op("Unsqueeze", [k, g.const_i64([0])]))
        vs.append(g.op("Unsqueeze", [v, g.const_i64([0])]))
    g.op("Concat", ks, outputs=["cross_k"], axis=0)
    g.op("Concat", vs, outputs=["cross_v"], axis=0)

    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, n_mels, n_frames])]
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [n_dec, 1, n_ctx, d_model])
        for n in ("cross_k", "cross_v")
    ]
    info = dict(n_mels=n_mels, n_frames=n_frames, n_audio_ctx=n_ctx, d_model=d_model,
                n_heads=n_heads, n_encoder_layers=n_enc, n_decoder_layers=n_dec)
    return g.model("whisper_encoder", inputs, outputs, "Whisper encoder + cross-attention K/V"), info


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------


def build_decoder(m: Ct2Model) -> tuple[onnx.ModelProto, dict]:
    g = Graph()
    n_dec = m.n_layers("decoder")
    n_heads = m.scalar("decoder/num_heads")
    emb = m.f32("decoder/embeddings/weight")
    vocab, d_model = emb.shape
    pos = m.f32("decoder/position_encodings/encodings")
    n_text_ctx = pos.shape[0]
    n_audio_ctx = m.vars["encoder/position_encodings/encodings"].shape[0]
    if ("decoder/projection/weight" in m.vars
            and m.vars["decoder/projection/weight"] is not m.vars["decoder/embeddings/weight"]):
        raise ValueError("untied output projection is not supported")

    emb_name = g.init("decoder/embeddings", emb)

    # Past length P (from self_k's shape) and new length T (from tokens' shape).
    p_1 = g.op("Slice", [g.op("Shape", ["self_k"]), g.const_i64([2]), g.const_i64([3])],
               name="past_len")
    t_1 = g.op("Slice", [g.op("Shape", ["tokens"]), g.const_i64([1]), g.const_i64([2])],
               name="new_len")
    end_1 = g.op("Add", [p_1, t_1], name="total_len")

    # Token + positional embeddings for positions P .. P+T-1.
    x = g.op("Gather", [emb_name, "tokens"], axis=0)  # [1,T,D]
    pe = g.op("Slice", [g.init("decoder/position_encodings", pos), p_1, end_1, g.const_i64([0])],
              name="pos_slice")
    x = g.op("Add", [x, pe])

    # Causal mask [T, P+T]: query at absolute position P+i sees keys 0..P+i.
    p_s = g.op("Squeeze", [p_1, g.const_i64([0])])
    end_s = g.op("Squeeze", [end_1, g.const_i64([0])])
    one = g.const_i64(1)
    zero = g.const_i64(0)
    rows = g.op("Unsqueeze", [g.op("Range", [p_s, end_s, one]), g.const_i64([1])])
    cols = g.op("Range", [zero, end_s, one])
    future = g.op("Greater", [cols, rows])
    mask = g.op("Where", [future, g.const_f32(-1e9), g.const_f32(0.0)], name="causal_mask")

    new_k, new_v = [], []
    for i in range(n_dec):
        p = f"decoder/layer_{i}"
        li = g.const_i64(i)  # scalar index -> Gather drops the layer axis
        # masked self-attention with the KV cache
        h = g.layer_norm(x, m, p + "/self_attention/layer_norm")
        w, b = _scaled_qkv(m, p + "/self_attention", d_model, n_heads)
        qkv = g.linear(h, w, b, p + "/self_attention/linear_0")
        q, k, v = g.op("Split", [qkv, g.const_i64([d_model] * 3)], n_out=3, axis=-1)
        k_all = g.op("Concat", [g.op("Gather", ["self_k", li], axis=0), k], axis=1)  # [1,P+T,D]
        v_all = g.op("Concat", [g.op("Gather", ["self_v", li], axis=0), v], axis=1)
        new_k.append(g.op("Unsqueeze", [k_all, g.const_i64([0])]))
        new_v.append(g.op("Unsqueeze", [v_all, g.const_i64([0])]))
        a = g.attention(q, k_all, v_all, n_heads, d_model, mask)
        a = g.linear(a, m.weight(p + "/self_attention/linear_1"),
                     m.f32(p + "/self_attention/linear_1/bias"), p + "/self_attention/linear_1")
        x = g.op("Add", [x, a], name="residual")
        # cross-attention over the encoder's precomputed K/V
        h = g.layer_norm(x, m, p + "/attention/layer_norm")
        scale = np.float32(1.0 / np.sqrt(d_model // n_heads))
        q = g.linear(h, m.weight(p + "/attention/linear_0") * scale,
                     m.f32(p + "/attention/linear_0/bias") * scale, p + "/attention/linear_0")
        ck = g.op("Gather", ["cross_k", li], axis=0)
        cv = g.op("Gather", ["cross_v", li], axis=0)
        a = g.attention(q, ck, cv, n_heads, d_model, None)
        a = g.linear(a, m.weight(p + "/attention/linear_2"),
                     m.f32(p + "/attention/linear_2/bias"), p + "/attention/linear_2")
        x = g.op("Add", [x, a], name="residual")
        x = g.ffn(x, m, p + "/ffn")

    g.op("Concat", new_k, outputs=["new_self_k"], axis=0)
    g.op("Concat", new_v, outputs=["new_self_v"], axis=0)

    last = g.op("Gather", [x, g.const_i64(-1)], axis=1, name="last_position")  # [1,D]
    last = g.layer_norm(last, m, "decoder/layer_norm")
    # Output projection tied to the token embedding: logits = last @ emb.T
    g.op("Gemm", [last, emb_name], outputs=["logits"], transB=1)

    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "new_len"]),
        helper.make_tensor_value_info("self_k", f, [n_dec, 1, "past_len", d_model]),
        helper.make_tensor_value_info("self_v", f, [n_dec, 1, "past_len", d_model]),
        helper.make_tensor_value_info("cross_k", f, [n_dec, 1, n_audio_ctx, d_model]),
        helper.make_tensor_value_info("cross_v", f, [n_dec, 1, n_audio_ctx, d_model]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", f, [1, vocab]),
        helper.make_tensor_value_info("new_self_k", f, [n_dec, 1, "total_len", d_model]),
        helper.make_tensor_value_info("new_self_v", f, [n_dec, 1, "total_len", d_model]),
    ]
    info = dict(n_vocab=vocab, n_text_ctx=n_text_ctx, d_model=d_model, n_heads=n_heads,
                n_decoder_layers=n_dec)
    return g.model("whisper_decoder", inputs, outputs,
                   "Whisper decoder step with self-attention KV cache"), info


# --------------------------------------------------------------------------------------------
# Saving, quantisation, self-check
# --------------------------------------------------------------------------------------------


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(model, str(tmp))
    os.replace(tmp, path)


def quantize_int8(src: Path, dst: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # silence the "run pre-processing" advice
    tmp = dst.with_name(dst.name + ".tmp")
    quantize_dynamic(
        str(src), str(tmp),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        # per output channel: 2.8% WER on the LibriVox clips vs 8.5% per tensor (tiny.en)
        per_channel=True,
        # only weight x activation products; attention's activation x activation MatMuls
        # stay in float
        extra_options={"MatMulConstBOnly": True},
    )
    os.replace(tmp, dst)


def _load_reference():
    ref = Path(__file__).resolve().parent.parent / "benches" / "asr" / "reference.py"
    if not ref.is_file():
        return None
    sys.dont_write_bytecode = True  # keep benches/asr free of __pycache__
    spec = importlib.util.spec_from_file_location("lectern_asr_reference", ref)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def self_check(out_dir: Path, variants: list[str], wav: Path | None, ref_text: str | None) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    for variant in variants:
        sfx = "" if variant == "fp32" else "." + variant
        enc = ort.InferenceSession(str(out_dir / f"encoder{sfx}.onnx"), so,
                                   providers=["CPUExecutionProvider"])
        dec = ort.InferenceSession(str(out_dir / f"decoder{sfx}.onnx"), so,
                                   providers=["CPUExecutionProvider"])
        # 1) structural: cache-less decoding of 3 tokens == incremental decoding with the cache
        rng = np.random.default_rng(0)
        mel = rng.standard_normal((1, 80, 3000)).astype(np.float32) * 0.3
        ck, cv = enc.run(None, {"mel": mel})
        n_layers, _, _, d_model = ck.shape
        empty = np.zeros((n_layers, 1, 0, d_model), np.float32)
        toks = np.array([[50257, 50362, 440]], np.int64)
        full, fk, fv = dec.run(None, {"tokens": toks, "self_k": empty, "self_v": empty,
                                      "cross_k": ck, "cross_v": cv})
        sk, sv = empty, empty
        for j in range(toks.shape[1]):
            step, sk, sv = dec.run(None, {"tokens": toks[:, j:j + 1], "self_k": sk, "self_v": sv,
                                          "cross_k": ck, "cross_v": cv})
        assert sk.shape == fk.shape == (n_layers, 1, 3, d_model), (sk.shape, fk.shape)
        # relative to the logits' spread; int8 re-quantises activations per call (dynamic
        # range over the T rows), so a 1-row step and a 3-row pass differ slightly there
        diff = float(np.max(np.abs(step - full)) / (np.ptp(full) + 1e-9))
        tol = 1e-4 if variant == "fp32" else 0.15
        print(f"[self-check {variant}] cross_k {list(ck.shape)}, logits {list(full.shape)}, "
              f"cached vs uncached max|diff|/spread {diff:.1e}")
        if not diff < tol:
            raise SystemExit(f"self-check failed: {variant} KV-cache decoding diverges ({diff})")
        del enc, dec

    if wav is None:
        return
    ref = _load_reference()
    if ref is None:
        print("[self-check] benches/asr/reference.py not found; skipping transcription")
        return
    for variant in variants:
        asr = ref.WhisperOnnx(out_dir, variant=variant, threads=2)
        text = asr.transcribe(ref.load_wav(wav))
        print(f"[self-check {variant}] {wav.name}: {text!r}")
        if ref_text is not None:
            w = ref.wer([ref_text], [text])
            print(f"[self-check {variant}] WER vs reference: {w['wer']:.3f}")
            if w["wer"] > 0.5:
                raise SystemExit(f"self-check failed: {variant} transcription is wrong")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ct2-dir", type=Path, required=True,
                    help="directory with model.bin (CTranslate2), or model.bin.part1, .part2, ...")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--int8", action="store_true", help="also write *.int8.onnx")
    ap.add_argument("--check-wav", type=Path, help="16 kHz mono WAV to transcribe as a check")
    ap.add_argument("--check-ref", help="reference text for --check-wav")
    ap.add_argument("--skip-check", action="store_true")
    a = ap.parse_args(argv)

    t0 = time.time()
    m = Ct2Model(a.ct2_dir / "model.bin")
    if m.spec != "WhisperSpec":
        raise SystemExit(f"{a.ct2_dir}/model.bin holds a {m.spec}, not a WhisperSpec")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    enc, enc_info = build_encoder(m)
    save_atomic(enc, a.out_dir / "encoder.onnx")
    del enc
    dec, dec_info = build_decoder(m)
    save_atomic(dec, a.out_dir / "decoder.onnx")
    del dec, m
    print(f"[convert] fp32 graphs written in {time.time() - t0:.1f}s: {json.dumps({**enc_info, **dec_info})}")
    variants = ["fp32"]
    if a.int8:
        t1 = time.time()
        quantize_int8(a.out_dir / "encoder.onnx", a.out_dir / "encoder.int8.onnx")
        quantize_int8(a.out_dir / "decoder.onnx", a.out_dir / "decoder.int8.onnx")
        print(f"[convert] int8 graphs written in {time.time() - t1:.1f}s")
        variants.append("int8")
    if not a.skip_check:
        self_check(a.out_dir, variants, a.check_wav, a.check_ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
