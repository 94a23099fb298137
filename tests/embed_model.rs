//! The MiniLM embedder on the real model files: agreement with the Python + ONNX Runtime
//! reference (`benches/embed/reference.py`), semantic sanity, norms, truncation, batching and
//! corrupt files.
//!
//! Needs the model cache (`bash models/fetch.sh`; `$LECTERN_MODELS_DIR` or `models/cache`) and,
//! for the reference comparison, a Python with numpy + onnxruntime + tokenizers
//! (`$LECTERN_EMBED_PYTHON`, or see `benches/embed/README.md`). Missing pieces fail the test with
//! the command that provides them.
//!
//! `cargo test --test embed_model -- --ignored bench_chunks_per_second --nocapture` prints the
//! Rust throughput on the reference script's benchmark chunks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use lectern::embed::{DIM, Embedder};

const MINILM: &str = "minilm-l6-v2";

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LECTERN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache"));
    for f in
        [format!("{MINILM}/model.onnx"), format!("{MINILM}/model.fp32.onnx"), "onnxruntime/libonnxruntime.so".into()]
    {
        assert!(dir.join(&f).is_file(), "{} is missing: run `bash models/fetch.sh` first", dir.join(&f).display());
    }
    dir
}

fn embedder(int8: bool) -> Arc<Embedder> {
    static INT8: OnceLock<Arc<Embedder>> = OnceLock::new();
    static FP32: OnceLock<Arc<Embedder>> = OnceLock::new();
    let slot = if int8 { &INT8 } else { &FP32 };
    slot.get_or_init(|| Arc::new(Embedder::load(&models_dir(), int8, 2).expect("load embedder"))).clone()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

/// A Python that can run the reference script: `$LECTERN_EMBED_PYTHON`, else the models venv or
/// the venv `benches/embed/README.md` sets up, whichever has numpy, onnxruntime and tokenizers.
fn python() -> PathBuf {
    let setup = "python3 -m venv /tmp/lectern-embed-venv && /tmp/lectern-embed-venv/bin/pip install \
                 numpy==2.4.6 onnxruntime==1.32.0 tokenizers==0.22.2 (see benches/embed/README.md)";
    let works = |p: &Path| {
        Command::new(p).args(["-c", "import numpy, onnxruntime, tokenizers"]).output().is_ok_and(|o| o.status.success())
    };
    if let Some(p) = std::env::var_os("LECTERN_EMBED_PYTHON").map(PathBuf::from) {
        assert!(
            works(&p),
            "LECTERN_EMBED_PYTHON={} cannot import numpy, onnxruntime, tokenizers; {setup}",
            p.display()
        );
        return p;
    }
    let candidates = [models_dir().join(".venv/bin/python"), PathBuf::from("/tmp/lectern-embed-venv/bin/python")];
    candidates.into_iter().find(|p| works(p)).unwrap_or_else(|| {
        panic!("no Python with numpy + onnxruntime + tokenizers for the reference; set LECTERN_EMBED_PYTHON or run: {setup}")
    })
}

fn reference_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/embed/reference.py")
}

/// Runs the reference script with `args` plus `--models-dir`, failing with its stderr.
fn run_reference(args: &[&str]) {
    let out = Command::new(python())
        .arg(reference_script())
        .args(args)
        .arg("--models-dir")
        .arg(models_dir())
        .output()
        .expect("spawn the reference script");
    assert!(out.status.success(), "reference.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The reference embeddings (batch size 1, no padding) of `texts` for `variant`.
fn python_vectors(texts: &[&str], variant: &str) -> Vec<Vec<f32>> {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("texts.json"), tmp.path().join("vectors.json"));
    std::fs::write(&input, serde_json::to_string(texts).unwrap()).unwrap();
    run_reference(&["--texts", input.to_str().unwrap(), "--out", output.to_str().unwrap(), "--variant", variant]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    serde_json::from_value(doc["vectors"].clone()).expect("vectors: list of lists of floats")
}

fn long_text(words: usize) -> String {
    let base = "the harbour master kept a careful record of every ship that came in during the long winter";
    base.split(' ').cycle().take(words).collect::<Vec<_>>().join(" ")
}

fn sentences() -> Vec<String> {
    let mut s: Vec<String> = [
        "he talked about forgiving debts",
        "A sermon on forgiveness and what we owe.",
        "The weather in the harbour was stormy all week!",
        "Café crème, naïve façades and a résumé — with accents.",
        "In 1912 the council voted 7-2 to rebuild the bridge for £3,400.",
        "um so uh we we kind of you know started again",
        "Speech recognition turns audio into text; embeddings turn text into vectors.",
        "日本語のテキストも少し",
        "",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
    ]
    .map(String::from)
    .to_vec();
    s.push(long_text(400)); // past MAX_TOKENS: both sides must truncate the same way
    s
}

#[test]
fn matches_python_reference() {
    let texts = sentences();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (int8, variant) in [(true, "int8"), (false, "fp32")] {
        let ours = embedder(int8).embed(&refs).unwrap();
        let theirs = python_vectors(&refs, variant);
        assert_eq!(theirs.len(), ours.len());
        let mut worst = 1.0f32;
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            let c = cosine(a, b);
            assert!(c >= 0.999, "{variant} sentence {i} ({:?}): cosine {c} with the Python reference", refs[i]);
            worst = worst.min(c);
        }
        eprintln!("{variant}: lowest cosine with the Python reference over {} texts: {worst:.7}", refs.len());
    }
}

#[test]
fn paraphrases_score_higher_than_unrelated() {
    let e = embedder(true);
    let cases = [
        [
            "he talked about forgiving debts",
            "a sermon on forgiveness and what we owe",
            "the weather in the harbour was stormy",
        ],
        [
            "the choir sang at the funeral",
            "singers performed at the memorial service",
            "the council raised parking fees",
        ],
        ["how do I reset my password", "I forgot my login credentials", "the recipe needs two eggs"],
    ];
    for [a, para, other] in cases {
        let v = e.embed(&[a, para, other]).unwrap();
        let (near, far) = (dot(&v[0], &v[1]), dot(&v[0], &v[2]));
        eprintln!("{a:?}: paraphrase {near:.3}, unrelated {far:.3}");
        assert!(near > far + 0.1, "{a:?}: paraphrase {near} not above unrelated {far}");
    }
}

#[test]
fn embeddings_are_unit_vectors() {
    let texts = sentences();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for int8 in [true, false] {
        for v in embedder(int8).embed(&refs).unwrap() {
            assert_eq!(v.len(), DIM);
            let norm = dot(&v, &v).sqrt();
            assert!((norm - 1.0).abs() <= 1e-4, "norm {norm}");
        }
    }
    assert!(embedder(true).embed(&[]).unwrap().is_empty());
}

#[test]
fn long_text_is_truncated_not_an_error() {
    let e = embedder(true);
    let long = long_text(2000);
    let longer = format!("{long} and then something completely different about volcanoes and jazz");
    let v = e.embed(&[&long, &longer]).unwrap();
    // Everything past the first 256 word pieces is cut, so the tails make no difference.
    assert!(cosine(&v[0], &v[1]) > 0.99999, "cosine {}", cosine(&v[0], &v[1]));
}

#[test]
fn batching_sorting_and_threads_keep_order_and_values() {
    let e = embedder(true);
    let texts: Vec<String> = (0..37).map(|i| long_text(1 + (i * 7919) % 120)).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let alone: Vec<Vec<f32>> = refs.iter().map(|t| e.embed(&[t]).unwrap().remove(0)).collect();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (e, texts) = (e.clone(), texts.clone());
            std::thread::spawn(move || e.embed(&texts.iter().map(String::as_str).collect::<Vec<_>>()).unwrap())
        })
        .collect();
    for h in handles {
        let batched = h.join().unwrap();
        for (i, (a, b)) in batched.iter().zip(&alone).enumerate() {
            assert!(cosine(a, b) > 0.9999, "text {i}: batched vs alone cosine {}", cosine(a, b));
        }
    }
}

/// A models directory with the real tokenizer and runtime and `model.onnx` replaced by `bytes`.
fn models_dir_with_model(bytes: &[u8]) -> tempfile::TempDir {
    let real = models_dir();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join(MINILM)).unwrap();
    std::fs::write(tmp.path().join(MINILM).join("model.onnx"), bytes).unwrap();
    std::fs::copy(real.join(MINILM).join("tokenizer.json"), tmp.path().join(MINILM).join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink(real.join("onnxruntime"), tmp.path().join("onnxruntime")).unwrap();
    tmp
}

#[test]
fn corrupt_model_is_model_invalid() {
    let real = std::fs::read(models_dir().join(MINILM).join("model.onnx")).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (what, bytes) in [("truncated", &real[..real.len() / 3]), ("garbage", &garbage[..]), ("empty", &[][..])] {
        let dir = models_dir_with_model(bytes);
        let err = Embedder::load(dir.path(), true, 1).expect_err(what);
        assert_eq!(err.code(), "model_invalid", "{what}: {err}");
    }
    let dir = models_dir_with_model(&real);
    std::fs::write(dir.path().join(MINILM).join("tokenizer.json"), b"{not json").unwrap();
    assert_eq!(Embedder::load(dir.path(), true, 1).unwrap_err().code(), "model_invalid");
    let err = Embedder::load(dir.path(), false, 1).unwrap_err(); // no model.fp32.onnx there
    assert_eq!(err.code(), "model_missing", "{err}");
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_chunks_per_second() {
    let repeat: usize = std::env::var("LECTERN_EMBED_BENCH_REPEAT").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let threads: usize = std::env::var("LECTERN_EMBED_BENCH_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("chunks.json");
    run_reference(&["--dump-chunks", path.to_str().unwrap()]);
    let texts: Vec<String> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    for int8 in [true, false] {
        let t0 = Instant::now();
        let e = Embedder::load(&models_dir(), int8, threads).unwrap();
        let load_s = t0.elapsed().as_secs_f64();
        e.embed(&refs[..16]).unwrap(); // warm-up
        let mut times: Vec<f64> = (0..repeat)
            .map(|_| {
                let t0 = Instant::now();
                e.embed(&refs).unwrap();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{}: {:.1} chunks/s (median {median:.3} s, best {:.3} s over {repeat} passes of {} chunks, {threads} threads, load {load_s:.2} s)",
            e.model_name(),
            texts.len() as f64 / median,
            times[0],
            texts.len()
        );
    }
}
