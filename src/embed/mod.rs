//! Semantic embeddings for search: cutting a transcript into overlapping ~30 s chunks
//! ([`mod@chunk`]) and turning text into unit vectors with all-MiniLM-L6-v2 ([`minilm`]).
//!
//! Pure: transcript segments or strings in, chunks or `f32` vectors out. No actors, no journal, no
//! storage. The embed stage chunks a transcript, calls [`Embedder::embed`] on the chunk texts and
//! hands the vectors to the index.
//!
//! The model runs on ONNX Runtime, loaded at run time from `<models>/onnxruntime/libonnxruntime.so`
//! (`models/fetch.sh` puts it there with the model files; `models/README.md` describes the graph).
//! One [`Embedder`] is loaded per process and shared through an `Arc`: it is `Send + Sync`, and
//! calls from several threads take turns on the one ONNX Runtime session.

pub mod chunk;
pub mod minilm;

pub use chunk::{Chunk, ChunkParams, Seg, chunk_segments};
pub use minilm::{BATCH_SIZE, DIM, Embedder, MAX_TOKENS};

use std::path::PathBuf;

/// Errors produced by the embed module. None is transient: a missing or broken file stays so until
/// `models/fetch.sh` is run again, and the same input fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file (ONNX graph or tokenizer) is not where it should be.
    #[error("model file missing: {path} (run `bash models/fetch.sh`)")]
    ModelMissing {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A model file exists but cannot be loaded (truncated, garbage, or not the expected graph).
    #[error("invalid model file {path}: {reason}")]
    ModelInvalid {
        /// The file that failed to load.
        path: PathBuf,
        /// What ONNX Runtime or the tokenizer said.
        reason: String,
    },
    /// The ONNX Runtime shared library is missing or cannot be loaded.
    #[error("onnx runtime unavailable at {path}: {reason}")]
    RuntimeMissing {
        /// The library that was looked for.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// Tokenising or running the model failed, or its output had an unexpected shape.
    #[error("embedding inference failed: {0}")]
    InferenceFailed(String),
    /// A [`ChunkParams`] field is out of range.
    #[error("invalid chunk parameters: {0}")]
    InvalidParams(&'static str),
}

/// The name the brief and the embed stage use for [`Error`].
pub use Error as EmbedError;

impl Error {
    /// A stable, machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::ModelMissing { .. } => "model_missing",
            Error::ModelInvalid { .. } => "model_invalid",
            Error::RuntimeMissing { .. } => "runtime_missing",
            Error::InferenceFailed(_) => "inference_failed",
            Error::InvalidParams(_) => "invalid_config",
        }
    }

    /// Whether retrying the same operation could succeed (never: see the type's docs).
    pub fn is_transient(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let p = PathBuf::from("x");
        let r = String::new();
        assert_eq!(Error::ModelMissing { path: p.clone() }.code(), "model_missing");
        assert_eq!(Error::ModelInvalid { path: p.clone(), reason: r.clone() }.code(), "model_invalid");
        assert_eq!(Error::RuntimeMissing { path: p, reason: r }.code(), "runtime_missing");
        assert_eq!(Error::InferenceFailed("x".into()).code(), "inference_failed");
        assert!(!Error::InvalidParams("x").is_transient());
    }
}
