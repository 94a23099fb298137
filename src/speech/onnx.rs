//! The ONNX Runtime behind the speech models: loading `libonnxruntime.so` once per process
//! ([`init_runtime`]), building sessions with a chosen thread count ([`session`]), and the
//! [`SpeechError`] every model operation returns.
//!
//! The runtime is loaded at run time (`ort`'s `load-dynamic`) from
//! `<models dir>/onnxruntime/libonnxruntime.so`, which `lectern models fetch` puts there; a missing
//! library is an error, never a panic. No other `ort` call is made before [`init_runtime`]
//! succeeded: without it, `ort` would try to load a library of its own choosing.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

/// Where the runtime library lives inside the models directory.
pub const RUNTIME_LIBRARY: &str = "onnxruntime/libonnxruntime.so";

/// Hint appended to every "file is missing" message.
const FETCH_HINT: &str = "run `lectern models fetch` (or `bash models/fetch.sh`)";

/// The process-wide ONNX Runtime environment, set once by [`init_runtime`].
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
/// Serialises the first initialisation, so two threads never load the library concurrently.
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Errors of the speech models (runtime, VAD, Whisper). None is transient: the same files and
/// input fail the same way, so the job fails instead of retrying.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// A model file (or the models directory) does not exist.
    #[error("model file {} is missing: {FETCH_HINT}", path.display())]
    ModelMissing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A model file exists but cannot be loaded (truncated, corrupt, wrong graph).
    #[error("model file {} is invalid: {reason}", path.display())]
    ModelInvalid {
        /// The offending file.
        path: PathBuf,
        /// What the loader said.
        reason: String,
    },
    /// ONNX Runtime failed while running a loaded model, or returned outputs of the wrong shape.
    #[error("inference failed in {model}: {reason}")]
    InferenceFailed {
        /// Which model (`whisper encoder`, `whisper decoder`, `vad`).
        model: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The ONNX Runtime library is missing or cannot be loaded, or [`init_runtime`] was not called.
    #[error("onnx runtime unavailable: {reason}")]
    RuntimeMissing {
        /// Why, including the library path when known.
        reason: String,
    },
    /// The input does not fit the model (more than one 30 s Whisper window).
    #[error(transparent)]
    Input(#[from] super::Error),
}

impl SpeechError {
    /// A stable, machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SpeechError::ModelMissing { .. } => "model_missing",
            SpeechError::ModelInvalid { .. } => "model_invalid",
            SpeechError::InferenceFailed { .. } => "inference_failed",
            SpeechError::RuntimeMissing { .. } => "runtime_missing",
            SpeechError::Input(inner) => inner.code(),
        }
    }

    /// Whether retrying the same operation could succeed (never: models and input are fixed).
    pub fn is_transient(&self) -> bool {
        false
    }

    /// An [`SpeechError::InferenceFailed`] for `model`.
    pub(crate) fn inference(model: &'static str, reason: impl std::fmt::Display) -> Self {
        SpeechError::InferenceFailed { model, reason: reason.to_string() }
    }

    /// A [`SpeechError::ModelInvalid`] for `path`.
    pub(crate) fn invalid(path: &Path, reason: impl std::fmt::Display) -> Self {
        SpeechError::ModelInvalid { path: path.to_path_buf(), reason: reason.to_string() }
    }
}

/// Loads ONNX Runtime from `<models_dir>/onnxruntime/libonnxruntime.so` and creates the process's
/// environment. Idempotent and thread-safe: once it succeeded, later calls return `Ok(())` at once
/// (whatever `models_dir` they pass: a process has exactly one runtime). A failed call may be retried.
pub fn init_runtime(models_dir: &Path) -> Result<(), SpeechError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let _guard = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let library = models_dir.join(RUNTIME_LIBRARY);
    if !library.is_file() {
        return Err(SpeechError::RuntimeMissing { reason: format!("{} is missing: {FETCH_HINT}", library.display()) });
    }
    let runtime_error = |e: &dyn std::fmt::Display| SpeechError::RuntimeMissing {
        reason: format!("failed to load {}: {e}", library.display()),
    };
    // ort resolves relative paths against the executable's directory: make it absolute first.
    let library = std::path::absolute(&library).map_err(|e| runtime_error(&e))?;
    let builder = ort::init_from(&library).map_err(|e| runtime_error(&e))?;
    let environment = builder.with_name("lectern").with_telemetry(false).build().map_err(|e| runtime_error(&e))?;
    // Only this function sets the cell, under INIT_LOCK, so it is still empty here.
    let _ = ENVIRONMENT.set(environment);
    Ok(())
}

/// The environment created by [`init_runtime`] (the one ONNX Runtime allows per process; the
/// embedder shares it).
pub fn environment() -> Result<&'static Environment, SpeechError> {
    ENVIRONMENT.get().ok_or_else(|| SpeechError::RuntimeMissing {
        reason: "onnx runtime not initialised: call speech::onnx::init_runtime first".into(),
    })
}

/// Fails with [`SpeechError::ModelMissing`] unless `path` is an existing file.
pub fn require_file(path: &Path) -> Result<(), SpeechError> {
    if path.is_file() { Ok(()) } else { Err(SpeechError::ModelMissing { path: path.to_path_buf() }) }
}

/// Whether ONNX Runtime's intra-op threads busy-wait for work (ONNX Runtime's default; ours is
/// off) — see
/// [`set_intra_op_spinning`].
static SPINNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets intra-op spinning for every session built afterwards (`models.intra-op-spinning`). On a
/// 2-vCPU node where transcode and transcription share the cores, spinning threads burn CPU that
/// the other stage needs.
pub fn set_intra_op_spinning(on: bool) {
    SPINNING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The current intra-op spinning setting.
pub fn intra_op_spinning() -> bool {
    SPINNING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Builds a CPU session for the ONNX file at `path` with `intra_threads` threads inside each
/// operator (at least 1) and one inter-operator thread, all graph optimisations on.
///
/// Fails with [`SpeechError::ModelMissing`] if the file does not exist,
/// [`SpeechError::RuntimeMissing`] before [`init_runtime`], and [`SpeechError::ModelInvalid`] if
/// ONNX Runtime rejects the file (truncated, garbage, unsupported).
pub fn session(path: &Path, intra_threads: usize) -> Result<Session, SpeechError> {
    require_file(path)?;
    let environment = environment()?;
    let options_error = |e: ort::Error<_>| SpeechError::RuntimeMissing { reason: format!("session options: {e}") };
    Session::builder(environment)
        .map_err(|e| SpeechError::RuntimeMissing { reason: format!("session builder: {e}") })?
        .with_intra_threads(intra_threads.max(1))
        .map_err(options_error)?
        .with_inter_threads(1)
        .map_err(options_error)?
        .with_intra_op_spinning(intra_op_spinning())
        .map_err(options_error)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(options_error)?
        .commit_from_file(path)
        .map_err(|e| SpeechError::invalid(path, e))
}

/// Checks that `session` (loaded from `path`) has every named input and output, so that a valid
/// ONNX file of the wrong model is [`SpeechError::ModelInvalid`] at load, not a failure per call.
pub fn check_io(session: &Session, path: &Path, inputs: &[&str], outputs: &[&str]) -> Result<(), SpeechError> {
    let missing_in = inputs.iter().find(|name| !session.inputs().iter().any(|o| o.name() == **name));
    let missing_out = outputs.iter().find(|name| !session.outputs().iter().any(|o| o.name() == **name));
    match (missing_in, missing_out) {
        (Some(name), _) => Err(SpeechError::invalid(path, format!("graph has no input `{name}`"))),
        (_, Some(name)) => Err(SpeechError::invalid(path, format!("graph has no output `{name}`"))),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let path = PathBuf::from("x.onnx");
        assert_eq!(SpeechError::ModelMissing { path: path.clone() }.code(), "model_missing");
        assert_eq!(SpeechError::invalid(&path, "bad").code(), "model_invalid");
        assert_eq!(SpeechError::inference("vad", "bad").code(), "inference_failed");
        assert_eq!(SpeechError::RuntimeMissing { reason: String::new() }.code(), "runtime_missing");
        let input = SpeechError::from(super::super::Error::InputTooLong { got: 2, max: 1 });
        assert_eq!(input.code(), "speech_input");
    }

    #[test]
    fn missing_runtime_names_the_file_and_the_fix() {
        // Never loads anything: the file check comes first.
        let dir = tempfile::tempdir().unwrap();
        if ENVIRONMENT.get().is_some() {
            return; // another test of this process already loaded the real runtime
        }
        let err = init_runtime(dir.path()).unwrap_err();
        assert_eq!(err.code(), "runtime_missing");
        let message = err.to_string();
        assert!(message.contains("libonnxruntime.so") && message.contains("lectern models fetch"), "{message}");
    }

    #[test]
    fn missing_model_is_reported_before_the_runtime() {
        let err = session(Path::new("/nonexistent/encoder.onnx"), 1).unwrap_err();
        assert_eq!(err.code(), "model_missing");
        assert!(err.to_string().contains("/nonexistent/encoder.onnx"));
    }
}
