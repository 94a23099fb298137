//! Whisper speech recognition on ONNX Runtime: one ≤ 30 s window of 16 kHz audio in, timed text
//! [`Segment`]s out.
//!
//! Per window: log-mel ([`LogMel`], into a reused buffer) → encoder (cross-attention keys and
//! values for every decoder layer) → greedy decoding with the decoder's self-attention KV cache
//! (the cache tensors ONNX Runtime returns are fed straight back, never copied) under the logit
//! rules of [`super::tokens`] → text through the `tokenizers` crate. The graphs and the recipe are
//! described in `models/README.md`; `benches/asr/reference.py` is the Python reference.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, TensorRef};
use serde::Deserialize;
use tokenizers::Tokenizer;

use super::mel::{LogMel, N_FRAMES, N_MELS, OUTPUT_LEN, SAMPLE_RATE};
use super::onnx::{self, SpeechError};
use super::tokens::{self, LogitRules, MAX_NEW_TOKENS, SpecialTokens};

pub use super::tokens::Segment;

/// When a window's decoding stops early (see [`tokens::resume_time`]) with at least this much
/// audio left, the rest is decoded again from the last timestamp, like Whisper's own seek loop.
const MIN_RESUME_TAIL_S: f64 = 1.0;
/// …provided the stop is at least this far into the audio decoded (so every pass progresses).
const MIN_RESUME_PROGRESS_S: f64 = 1.0;
/// Most decoding passes per window (the first plus resumptions).
const MAX_PASSES: usize = 4;

/// Vocabulary size from which a model is multilingual (its prompt names language and task).
const MULTILINGUAL_VOCAB: i64 = 51_865;

/// The suppression lists of `config.json` (other fields are ignored).
#[derive(Debug, Deserialize)]
struct Config {
    suppress_ids: Vec<u32>,
    suppress_ids_begin: Vec<u32>,
}

/// The outcome of greedy decoding of one window.
struct Decoded {
    /// The sampled ids, EOT excluded.
    ids: Vec<u32>,
    /// Whether the repetition guard stopped the decoding (then it is not resumed).
    looped: bool,
}

/// Per-call buffers, pooled so that a window allocates neither the mel nor the logits.
struct Scratch {
    mel: LogMel,
    features: Vec<f32>,
    logits: Vec<f32>,
}

/// A loaded Whisper model (encoder + decoder sessions, tokenizer, decoding rules), shared by the
/// transcription workers through an `Arc`.
///
/// `ort` 2.0's `Session::run` takes `&mut self`, so each session sits behind its own [`Mutex`]:
/// the encoder's is held for one encoder pass, the decoder's for one decoding step, so two
/// workers interleave (one encodes while the other decodes, or they alternate steps). Reusable
/// buffers live in a small pool, one per concurrent caller.
pub struct Whisper {
    encoder: Mutex<Session>,
    decoder: Mutex<Session>,
    tokenizer: Tokenizer,
    rules: LogitRules,
    scratch: Mutex<Vec<Scratch>>,
}

impl std::fmt::Debug for Whisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Whisper").field("tokens", &self.rules.tokens).finish_non_exhaustive()
    }
}

impl Whisper {
    /// Loads `encoder.onnx`, `decoder.onnx` (or their `.int8.onnx` variants), `tokenizer.json` and
    /// `config.json` from `dir`, each session with `threads` intra-op threads.
    /// [`onnx::init_runtime`] must have been called.
    ///
    /// Fails with `model_missing` if `dir` or a file is missing, `model_invalid` if one cannot be
    /// loaded or is not the expected graph, `runtime_missing` before the runtime is loaded.
    pub fn load(dir: &Path, int8: bool, threads: usize) -> Result<Self, SpeechError> {
        if !dir.is_dir() {
            return Err(SpeechError::ModelMissing { path: dir.to_path_buf() });
        }
        let suffix = if int8 { ".int8.onnx" } else { ".onnx" };
        let files = ["encoder", "decoder"].map(|name| dir.join(format!("{name}{suffix}")));
        let (tokenizer_path, config_path) = (dir.join("tokenizer.json"), dir.join("config.json"));
        for file in files.iter().chain([&tokenizer_path, &config_path]) {
            onnx::require_file(file)?;
        }
        let config = read_config(&config_path)?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(|e| SpeechError::invalid(&tokenizer_path, e))?;
        let encoder = onnx::session(&files[0], threads)?;
        onnx::check_io(&encoder, &files[0], &["mel"], &["cross_k", "cross_v"])?;
        let decoder = onnx::session(&files[1], threads)?;
        let (inputs, outputs) = (DECODER_INPUTS, ["logits", "new_self_k", "new_self_v"]);
        onnx::check_io(&decoder, &files[1], &inputs, &outputs)?;
        let multilingual = vocab_size(&decoder).is_some_and(|v| v >= MULTILINGUAL_VOCAB);
        let tokens = special_tokens(&tokenizer, &tokenizer_path, multilingual)?;
        Ok(Self {
            encoder: Mutex::new(encoder),
            decoder: Mutex::new(decoder),
            tokenizer,
            rules: LogitRules { tokens, suppress: config.suppress_ids, suppress_begin: config.suppress_ids_begin },
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Transcribes one window (at most 30 s of 16 kHz mono samples) into segments timed by
    /// Whisper's timestamp tokens, in seconds from the window start (clamped to its length).
    /// Empty input gives no segments.
    ///
    /// When Whisper stops before the end of the audio by opening a segment it does not fill (it
    /// does so when speech runs past what it can finish, e.g. a window cut mid-sentence), the rest
    /// is decoded again from that timestamp, at most 4 passes in all.
    pub fn transcribe(&self, samples_16k: &[f32]) -> Result<Vec<Segment>, SpeechError> {
        let mut segments = Vec::new();
        let mut seek = 0;
        for _ in 0..MAX_PASSES {
            let audio = &samples_16k[seek..];
            if audio.is_empty() {
                break;
            }
            let Decoded { ids: generated, looped } = self.decode_window(audio, true)?;
            let (offset_s, duration_s) = (seconds(seek), seconds(audio.len()));
            let decode = |ids: &[u32]| self.detokenize(ids);
            for mut segment in tokens::segments(&generated, &self.rules.tokens, duration_s, decode)? {
                (segment.start_s, segment.end_s) = (segment.start_s + offset_s, segment.end_s + offset_s);
                segments.push(segment);
            }
            match tokens::resume_time(&generated, &self.rules.tokens) {
                Some(t) if !looped && t >= MIN_RESUME_PROGRESS_S && duration_s - t >= MIN_RESUME_TAIL_S => {
                    tracing::debug!(at_s = offset_s + t, "whisper stopped early, decoding the rest");
                    seek += (t * f64::from(SAMPLE_RATE)) as usize;
                }
                _ => break,
            }
        }
        Ok(segments)
    }

    /// Transcribes one window without timestamps (`<|notimestamps|>` prompt): the whole text,
    /// trimmed.
    pub fn transcribe_text(&self, samples_16k: &[f32]) -> Result<String, SpeechError> {
        if samples_16k.is_empty() {
            return Ok(String::new());
        }
        let decoded = self.decode_window(samples_16k, false)?;
        Ok(self.detokenize(&decoded.ids)?.trim().to_owned())
    }

    /// The special token ids of this model.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.rules.tokens
    }

    /// Log-mel, encoder and greedy decoding of one window.
    fn decode_window(&self, samples: &[f32], timestamps: bool) -> Result<Decoded, SpeechError> {
        let mut scratch = self.take_scratch();
        let result = self.decode_with(&mut scratch, samples, timestamps);
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner).push(scratch);
        result
    }

    fn decode_with(&self, scratch: &mut Scratch, samples: &[f32], timestamps: bool) -> Result<Decoded, SpeechError> {
        scratch.mel.compute(samples, &mut scratch.features)?;
        let (cross_k, cross_v) = self.encode(&scratch.features)?;
        let (layers, width) = cache_dims(&cross_k)?;
        let empty: [f32; 0] = [];
        let mut cache: Option<(DynValue, DynValue)> = None;
        let mut step: Vec<i64> = self.rules.tokens.prompt(timestamps);
        let mut generated: Vec<u32> = Vec::with_capacity(MAX_NEW_TOKENS);
        for _ in 0..MAX_NEW_TOKENS {
            let (self_k, self_v): (SessionInputValue<'_>, SessionInputValue<'_>) = match &cache {
                Some((k, v)) => (k.into(), v.into()),
                None => {
                    let shape = [layers, 1, 0, width];
                    let k = TensorRef::from_array_view((shape, &empty[..])).map_err(decoder_err)?;
                    let v = TensorRef::from_array_view((shape, &empty[..])).map_err(decoder_err)?;
                    (k.into(), v.into())
                }
            };
            let step_ids = TensorRef::from_array_view(([1, step.len()], &step[..])).map_err(decoder_err)?;
            let inputs = [step_ids.into(), self_k, self_v, (&cross_k).into(), (&cross_v).into()];
            cache = Some(self.decode_step(inputs, &mut scratch.logits)?);
            self.rules.apply(&mut scratch.logits, &generated, timestamps);
            let next = tokens::argmax(&scratch.logits).unwrap_or(self.rules.tokens.eot);
            if next == self.rules.tokens.eot {
                break;
            }
            generated.push(next);
            if let Some(cut) = tokens::loop_cut(&generated, &self.rules.tokens) {
                tracing::debug!(tokens = generated.len(), kept = cut, "whisper repetition loop cut");
                generated.truncate(cut);
                return Ok(Decoded { ids: generated, looped: true });
            }
            step.clear();
            step.push(i64::from(next));
        }
        Ok(Decoded { ids: generated, looped: false })
    }

    /// Runs the encoder on a `[N_MELS, N_FRAMES]` log-mel; returns `(cross_k, cross_v)`.
    fn encode(&self, features: &[f32]) -> Result<(DynValue, DynValue), SpeechError> {
        let err = |e: ort::Error| SpeechError::inference("whisper encoder", e);
        let mel = TensorRef::from_array_view(([1, N_MELS, N_FRAMES], features)).map_err(err)?;
        let mut encoder = self.encoder.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outputs = encoder.run(ort::inputs!["mel" => mel]).map_err(err)?;
        let missing = || SpeechError::inference("whisper encoder", "missing output");
        Ok((outputs.remove("cross_k").ok_or_else(missing)?, outputs.remove("cross_v").ok_or_else(missing)?))
    }

    /// One decoder call (`inputs` in [`DECODER_INPUTS`] order): copies the last position's
    /// logits into `logits` and returns the grown self-attention cache `(new_self_k, new_self_v)`.
    fn decode_step(
        &self,
        inputs: [SessionInputValue<'_>; 5],
        logits: &mut Vec<f32>,
    ) -> Result<(DynValue, DynValue), SpeechError> {
        let named: Vec<_> = DECODER_INPUTS.iter().map(|&n| std::borrow::Cow::Borrowed(n)).zip(inputs).collect();
        let mut decoder = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
        let mut outputs = decoder.run(named).map_err(decoder_err)?;
        let logits_value = outputs.get("logits").ok_or_else(|| decoder_err("missing logits output"))?;
        let (_, values) = logits_value.try_extract_tensor::<f32>().map_err(decoder_err)?;
        if values.len() <= self.rules.tokens.timestamp_begin as usize {
            return Err(decoder_err(format!("logits have {} values", values.len())));
        }
        logits.clear();
        logits.extend_from_slice(values);
        let missing = || decoder_err("missing cache output");
        Ok((outputs.remove("new_self_k").ok_or_else(missing)?, outputs.remove("new_self_v").ok_or_else(missing)?))
    }

    /// Text of `ids` (special tokens skipped), as the tokenizer decodes it (not trimmed).
    fn detokenize(&self, ids: &[u32]) -> Result<String, SpeechError> {
        let text: Vec<u32> = ids.iter().copied().filter(|&t| t < self.rules.tokens.eot).collect();
        self.tokenizer.decode(&text, true).map_err(|e| SpeechError::inference("whisper tokenizer", e))
    }

    fn take_scratch(&self) -> Scratch {
        let pooled = self.scratch.lock().unwrap_or_else(PoisonError::into_inner).pop();
        pooled.unwrap_or_else(|| Scratch { mel: LogMel::new(), features: vec![0.0; OUTPUT_LEN], logits: Vec::new() })
    }
}

/// Decoder input names, in the order [`Whisper::decode_step`] receives them.
const DECODER_INPUTS: [&str; 5] = ["tokens", "self_k", "self_v", "cross_k", "cross_v"];

/// Duration of `samples` at 16 kHz, in seconds.
fn seconds(samples: usize) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

fn decoder_err(e: impl std::fmt::Display) -> SpeechError {
    SpeechError::inference("whisper decoder", e)
}

/// `(layers, width)` of a `[L, 1, 1500, D]` cross-attention tensor.
fn cache_dims(cross_k: &DynValue) -> Result<(usize, usize), SpeechError> {
    let shape = cross_k.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    match shape[..] {
        [layers, 1, _, width] if layers > 0 && width > 0 => Ok((layers as usize, width as usize)),
        _ => Err(SpeechError::inference("whisper encoder", format!("cross_k has shape {shape:?}"))),
    }
}

/// The vocabulary size from the decoder's `logits` output (`[1, V]`), if the graph states it.
fn vocab_size(decoder: &Session) -> Option<i64> {
    let logits = decoder.outputs().iter().find(|o| o.name() == "logits")?;
    logits.dtype().tensor_shape()?.get(1).copied().filter(|&v| v > 0)
}

fn read_config(path: &PathBuf) -> Result<Config, SpeechError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpeechError::invalid(path, e))?;
    serde_json::from_str(&text).map_err(|e| SpeechError::invalid(path, e))
}

/// Reads the special ids from the tokenizer (timestamps follow `<|notimestamps|>`).
fn special_tokens(tokenizer: &Tokenizer, path: &Path, multilingual: bool) -> Result<SpecialTokens, SpeechError> {
    let id = |token: &str| {
        tokenizer.token_to_id(token).ok_or_else(|| SpeechError::invalid(path, format!("no token {token}")))
    };
    let no_timestamps = id("<|notimestamps|>")?;
    let task = if multilingual { vec![id("<|en|>")?, id("<|transcribe|>")?] } else { Vec::new() };
    Ok(SpecialTokens {
        eot: id("<|endoftext|>")?,
        sot: id("<|startoftranscript|>")?,
        no_timestamps,
        timestamp_begin: no_timestamps + 1,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Whisper>();
    }

    #[test]
    fn missing_dir_and_files_are_model_missing() {
        let err = Whisper::load(Path::new("/nonexistent/whisper"), false, 1).unwrap_err();
        assert_eq!(err.code(), "model_missing");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("encoder.onnx"), b"x").unwrap();
        let err = Whisper::load(dir.path(), false, 1).unwrap_err();
        assert_eq!(err.code(), "model_missing");
        assert!(err.to_string().contains("decoder.onnx"), "{err}");
    }
}
