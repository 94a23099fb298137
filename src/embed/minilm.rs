//! Sentence embeddings with all-MiniLM-L6-v2 on ONNX Runtime.
//!
//! Recipe (sentence-transformers' own): BERT uncased WordPiece tokens with `[CLS]`/`[SEP]`,
//! truncated to [`MAX_TOKENS`]; the graph's `last_hidden_state` (`[batch, seq, 384]`) averaged
//! over the positions whose attention mask is 1; the mean L2-normalised. The cosine similarity of
//! two embeddings is then their dot product.
//!
//! `tokenizer.json` ships with truncation to 128 and fixed padding to 128. Both are overridden
//! here: truncation to 256 (the length the model was trained with) and no tokenizer padding;
//! texts are sorted by token count and each batch of [`BATCH_SIZE`] is padded to its own longest
//! text when the input tensors are built, so short texts don't pay for long ones.
//!
//! ONNX Runtime's `Session::run` takes `&mut self` (some of its internals are not thread safe), so
//! the session sits behind a `Mutex`: an `Arc<Embedder>` can be shared by worker threads, and
//! their batches take turns on the session (each batch already uses `threads` cores). Tokenising
//! happens outside the lock.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::Error;

/// Dimension of every embedding.
pub const DIM: usize = 384;
/// Longest input in word pieces, `[CLS]` and `[SEP]` included; longer texts are truncated.
pub const MAX_TOKENS: usize = 256;
/// Texts per ONNX Runtime call. 16 keeps the attention buffers small (~50 MB at 256 tokens)
/// while amortising the per-call overhead.
pub const BATCH_SIZE: usize = 16;

/// Directory of the model files inside the models directory.
const MODEL_DIR: &str = "minilm-l6-v2";
/// The graph's inputs (all i64 `[batch, seq]`) and output.
const INPUTS: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
const OUTPUT: &str = "last_hidden_state";

/// Loads `<models_dir>/onnxruntime/libonnxruntime.so` and builds the ONNX Runtime environment,
/// once per process, through [`crate::speech::onnx::init_runtime`]: `ort` allows one environment
/// per process, shared with the speech models. Later calls return the first environment whatever
/// their `models_dir`.
fn ensure_runtime(models_dir: &Path) -> Result<&'static Environment, Error> {
    let lib = models_dir.join("onnxruntime/libonnxruntime.so");
    let missing =
        |e: crate::speech::onnx::SpeechError| Error::RuntimeMissing { path: lib.clone(), reason: e.to_string() };
    crate::speech::onnx::init_runtime(models_dir).map_err(missing)?;
    crate::speech::onnx::environment().map_err(missing)
}

/// all-MiniLM-L6-v2, loaded once and shared (`Send + Sync`) between worker threads.
pub struct Embedder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    name: &'static str,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the model from `<models_dir>/minilm-l6-v2/` (`model.onnx`, the int8 export, when
    /// `int8`; otherwise `model.fp32.onnx`) and ONNX Runtime from `<models_dir>/onnxruntime/`.
    /// `threads` is ONNX Runtime's intra-op thread count (0 lets it choose: one per core).
    ///
    /// Fails with `model_missing` when a file is absent, `runtime_missing` when the library cannot
    /// be loaded and `model_invalid` when a file is corrupt or not the expected graph.
    pub fn load(models_dir: &Path, int8: bool, threads: usize) -> Result<Self, Error> {
        let dir = models_dir.join(MODEL_DIR);
        let (file, name) =
            if int8 { ("model.onnx", "all-minilm-l6-v2-int8") } else { ("model.fp32.onnx", "all-minilm-l6-v2-fp32") };
        let model = existing(dir.join(file))?;
        let tokenizer = load_tokenizer(&existing(dir.join("tokenizer.json"))?)?;
        let env = ensure_runtime(models_dir)?;
        let session = load_session(env, &model, threads)?;
        Ok(Self { session: Mutex::new(session), tokenizer, name })
    }

    /// The model's name and variant, e.g. `all-minilm-l6-v2-int8`, to store with the vectors.
    pub fn model_name(&self) -> &str {
        self.name
    }

    /// Embeds each text into a unit vector of [`DIM`] values, in input order. Texts longer than
    /// [`MAX_TOKENS`] word pieces are truncated; an empty text gets the embedding of `[CLS] [SEP]`.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        let encodings = texts.iter().map(|t| self.encode(t)).collect::<Result<Vec<_>, _>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH_SIZE) {
            let refs: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
            for (&i, v) in batch.iter().zip(self.run_batch(&refs)?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn encode(&self, text: &str) -> Result<Encoding, Error> {
        self.tokenizer.encode_fast(text, true).map_err(|e| Error::InferenceFailed(format!("tokenizer: {e}")))
    }

    /// Pads `batch` to its longest encoding, runs the graph and mean-pools each row.
    fn run_batch(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>, Error> {
        let seq = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let (ids, mask, types) = pad_inputs(batch, seq);
        let fail = |e: ort::Error| Error::InferenceFailed(e.to_string());
        let shape = [batch.len(), seq];
        let inputs = ort::inputs![
            INPUTS[0] => Tensor::from_array((shape, ids)).map_err(fail)?,
            INPUTS[1] => Tensor::from_array((shape, mask.clone())).map_err(fail)?,
            INPUTS[2] => Tensor::from_array((shape, types)).map_err(fail)?,
        ];
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(inputs).map_err(fail)?;
        let output = outputs.get(OUTPUT).ok_or_else(|| Error::InferenceFailed(format!("no {OUTPUT} output")))?;
        let (out_shape, hidden) = output.try_extract_tensor::<f32>().map_err(fail)?;
        if **out_shape != [batch.len() as i64, seq as i64, DIM as i64] {
            return Err(Error::InferenceFailed(format!("unexpected {OUTPUT} shape {out_shape:?}")));
        }
        Ok(mean_pool(hidden, &mask, seq))
    }
}

fn existing(path: PathBuf) -> Result<PathBuf, Error> {
    if path.is_file() { Ok(path) } else { Err(Error::ModelMissing { path }) }
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, Error> {
    let invalid = |reason: String| Error::ModelInvalid { path: path.to_path_buf(), reason };
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
    let truncation = TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() };
    tokenizer.with_truncation(Some(truncation)).map_err(|e| invalid(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn load_session(env: &Environment, model: &Path, threads: usize) -> Result<Session, Error> {
    let invalid = |reason: String| Error::ModelInvalid { path: model.to_path_buf(), reason };
    let builder = Session::builder(env).map_err(|e| invalid(e.to_string()))?;
    let builder = builder.with_intra_threads(threads).map_err(|e| invalid(e.to_string()))?;
    let mut builder =
        builder.with_intra_op_spinning(crate::speech::onnx::intra_op_spinning()).map_err(|e| invalid(e.to_string()))?;
    let session = builder.commit_from_file(model).map_err(|e| invalid(e.to_string()))?;
    let has_input = |name: &str| session.inputs().iter().any(|o| o.name() == name);
    if let Some(name) = INPUTS.iter().find(|n| !has_input(n)) {
        return Err(invalid(format!("graph has no input `{name}`")));
    }
    if !session.outputs().iter().any(|o| o.name() == OUTPUT) {
        return Err(invalid(format!("graph has no output `{OUTPUT}`")));
    }
    Ok(session)
}

/// Row-major `[batch, seq]` input ids, attention mask and token type ids, zero-padded.
fn pad_inputs(batch: &[&Encoding], seq: usize) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut ids = vec![0i64; batch.len() * seq];
    let mut mask = ids.clone();
    let mut types = ids.clone();
    for (row, enc) in batch.iter().enumerate() {
        let at = row * seq;
        for (c, ((&id, &m), &t)) in
            enc.get_ids().iter().zip(enc.get_attention_mask()).zip(enc.get_type_ids()).enumerate()
        {
            (ids[at + c], mask[at + c], types[at + c]) = (i64::from(id), i64::from(m), i64::from(t));
        }
    }
    (ids, mask, types)
}

/// Mean of `hidden` (`[batch, seq, DIM]`) over the positions where `mask` is 1, L2-normalised, as
/// sentence-transformers does (count clamped at 1e-9, norm at 1e-12).
fn mean_pool(hidden: &[f32], mask: &[i64], seq: usize) -> Vec<Vec<f32>> {
    mask.chunks(seq.max(1))
        .zip(hidden.chunks(seq.max(1) * DIM))
        .map(|(m, h)| {
            let mut sum = [0f32; DIM];
            let mut count = 0f32;
            for (row, _) in h.chunks_exact(DIM).zip(m).filter(|(_, m)| **m != 0) {
                sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                count += 1.0;
            }
            let mean: Vec<f32> = sum.iter().map(|s| s / count.max(1e-9)).collect();
            let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            mean.iter().map(|x| x / norm).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Embedder>();
    }

    #[test]
    fn mean_pool_ignores_padding_and_normalises() {
        // Two rows of seq 2: row 0 has one real token, row 1 two.
        let mut hidden = vec![0f32; 2 * 2 * DIM];
        hidden[0] = 3.0; // row 0, pos 0
        hidden[DIM] = 100.0; // row 0, pos 1 (padding)
        hidden[2 * DIM + 1] = 2.0; // row 1, pos 0
        hidden[3 * DIM + 1] = 4.0; // row 1, pos 1
        let pooled = mean_pool(&hidden, &[1, 0, 1, 1], 2);
        assert_eq!(pooled.len(), 2);
        assert_eq!((pooled[0][0], pooled[0][1]), (1.0, 0.0));
        assert_eq!((pooled[1][0], pooled[1][1]), (0.0, 1.0));
    }

    #[test]
    fn missing_files_are_model_missing_before_runtime() {
        let dir = std::env::temp_dir().join("lectern-embed-no-such-models-dir");
        let err = Embedder::load(&dir, true, 1).unwrap_err();
        assert_eq!(err.code(), "model_missing");
    }

    #[test]
    fn missing_runtime_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join("lectern-embed-no-runtime-here");
        let err = ensure_runtime(&dir);
        // Another test in this process may already have loaded the runtime from the real cache.
        if crate::speech::onnx::environment().is_err() {
            assert_eq!(err.unwrap_err().code(), "runtime_missing");
        }
    }
}
