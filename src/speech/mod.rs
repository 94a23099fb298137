//! Speech: everything between 16 kHz mono samples and a timed transcript.
//!
//! - Pure parts: Whisper's log-mel spectrogram ([`mel`]), the cutting of long recordings into
//!   ≤ 30 s windows at pauses from voice-activity probabilities ([`mod@segment`]), Whisper's token
//!   rules (timestamps, suppression, repetition guard: [`tokens`]) and the transcript formats
//!   ([`transcript`]: podcast JSON, WebVTT, SubRip).
//! - Model parts, on ONNX Runtime ([`onnx`]: one environment per process, loaded from the PyPI
//!   wheel's library): Silero VAD ([`vad`]) and Whisper encoder + KV-cache decoder ([`whisper`]).
//!   No actors, journal or storage here: the `transcribe` step (`actors/speech.rs`) drives them.

pub mod mel;
pub mod onnx;
pub mod segment;
pub mod tokens;
pub mod transcript;
pub mod vad;
pub mod whisper;

pub use mel::LogMel;
pub use segment::{SegmentParams, SpeechRegion, Window, segment, speech_regions};

/// Errors produced by the speech module. None is transient: the same input fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More samples than one Whisper window ([`mel::WINDOW_SAMPLES`]) were passed to [`LogMel`].
    #[error("input has {got} samples, at most {max} fit one window")]
    InputTooLong {
        /// Number of samples passed.
        got: usize,
        /// Largest accepted number of samples.
        max: usize,
    },
    /// The output buffer does not have exactly [`mel::OUTPUT_LEN`] values.
    #[error("output buffer has {got} values, expected {expected}")]
    OutputSize {
        /// Length of the buffer passed.
        got: usize,
        /// Required length.
        expected: usize,
    },
    /// A [`SegmentParams`] field is out of range.
    #[error("invalid segment parameters: {0}")]
    InvalidParams(&'static str),
}

impl Error {
    /// A stable, machine-readable code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InputTooLong { .. } | Error::OutputSize { .. } => "speech_input",
            Error::InvalidParams(_) => "invalid_config",
        }
    }

    /// Whether retrying the same operation could succeed (never: these are pure functions).
    pub fn is_transient(&self) -> bool {
        false
    }
}
