//! Silero VAD (v6, ONNX): one speech probability per 512-sample frame (32 ms) of 16 kHz audio.
//!
//! [`Vad`] holds the loaded model and is shared by every stream and worker thread (`Arc<Vad>`);
//! [`VadStream`] holds one recording's state (the RNN state, the last 64 samples of context, a
//! partial frame), so audio can be pushed in chunks of any size. The probabilities feed
//! [`super::segment()`].

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use ort::session::Session;
use ort::value::TensorRef;

use super::onnx::{self, SpeechError};

/// Sample rate the model is run at, in Hz.
pub const SAMPLE_RATE: i64 = 16_000;
/// New samples per frame (32 ms at 16 kHz): one probability each.
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the previous frame prepended to each frame (the model's context).
pub const CONTEXT_SAMPLES: usize = 64;
/// Length of the recurrent state: `[2, 1, 128]`.
const STATE_LEN: usize = 2 * 128;
/// Name used in errors.
const MODEL: &str = "vad";

/// The Silero VAD model, loaded once and shared.
///
/// ONNX Runtime's `Session::run` takes `&mut self` in `ort` 2.0, so the session sits behind a
/// [`Mutex`], held for one 32 ms frame at a time: streams on different threads interleave frame
/// by frame.
#[derive(Debug)]
pub struct Vad {
    session: Mutex<Session>,
}

impl Vad {
    /// Loads `silero_vad.onnx` with `threads` intra-op threads (1 is plenty: the model is tiny).
    /// [`onnx::init_runtime`] must have been called.
    pub fn load(path: &Path, threads: usize) -> Result<Self, SpeechError> {
        let session = onnx::session(path, threads)?;
        onnx::check_io(&session, path, &["input", "state", "sr"], &["output", "stateN"])?;
        Ok(Self { session: Mutex::new(session) })
    }

    /// A new stream (zero state, zero context) over this model.
    pub fn stream(&self) -> VadStream<'_> {
        VadStream {
            vad: self,
            input: vec![0.0; CONTEXT_SAMPLES + FRAME_SAMPLES],
            filled: 0,
            state: vec![0.0; STATE_LEN],
        }
    }

    /// Runs one frame: `input` is `[context | frame]`, `state` is updated in place.
    fn run_frame(&self, input: &[f32], state: &mut [f32]) -> Result<f32, SpeechError> {
        let err = |e: ort::Error| SpeechError::inference(MODEL, e);
        let sr = [SAMPLE_RATE];
        let inputs = ort::inputs![
            "input" => TensorRef::from_array_view(([1usize, input.len()], input)).map_err(err)?,
            "state" => TensorRef::from_array_view(([2usize, 1, 128], &*state)).map_err(err)?,
            "sr" => TensorRef::from_array_view(((), &sr[..])).map_err(err)?,
        ];
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(inputs).map_err(err)?;
        let output = |name| outputs.get(name).ok_or_else(|| SpeechError::inference(MODEL, format!("no output {name}")));
        let (_, probability) = output("output")?.try_extract_tensor::<f32>().map_err(err)?;
        let (_, new_state) = output("stateN")?.try_extract_tensor::<f32>().map_err(err)?;
        if new_state.len() != STATE_LEN {
            return Err(SpeechError::inference(MODEL, format!("state has {} values", new_state.len())));
        }
        state.copy_from_slice(new_state);
        probability.first().copied().ok_or_else(|| SpeechError::inference(MODEL, "empty output"))
    }
}

/// The per-recording state of [`Vad`]: push 16 kHz samples, get one probability per completed
/// frame. Not shared between threads; make one per recording.
#[derive(Debug)]
pub struct VadStream<'a> {
    vad: &'a Vad,
    /// `[context (64) | frame (512)]`; the frame part holds `filled` buffered samples.
    input: Vec<f32>,
    filled: usize,
    state: Vec<f32>,
}

impl VadStream<'_> {
    /// Appends `samples_16k` and returns the speech probability (0..1) of every 512-sample frame
    /// completed by them, in order. A trailing partial frame is kept for the next call.
    /// Non-finite samples are treated as silence.
    pub fn push(&mut self, samples_16k: &[f32]) -> Result<Vec<f32>, SpeechError> {
        let mut probabilities = Vec::with_capacity((self.filled + samples_16k.len()) / FRAME_SAMPLES);
        let mut rest = samples_16k;
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.filled).min(rest.len());
            let dst = &mut self.input[CONTEXT_SAMPLES + self.filled..CONTEXT_SAMPLES + self.filled + take];
            for (d, &s) in dst.iter_mut().zip(&rest[..take]) {
                *d = if s.is_finite() { s } else { 0.0 };
            }
            self.filled += take;
            rest = &rest[take..];
            if self.filled == FRAME_SAMPLES {
                probabilities.push(self.vad.run_frame(&self.input, &mut self.state)?);
                self.input.copy_within(FRAME_SAMPLES.., 0);
                self.filled = 0;
            }
        }
        Ok(probabilities)
    }

    /// Number of buffered samples that do not yet make a full frame.
    pub fn pending(&self) -> usize {
        self.filled
    }

    /// Forgets everything: the next sample starts a new recording.
    pub fn reset(&mut self) {
        self.input.fill(0.0);
        self.state.fill(0.0);
        self.filled = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vad_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Vad>();
        fn assert_send<T: Send>() {}
        assert_send::<VadStream<'static>>();
    }

    #[test]
    fn missing_model_is_model_missing() {
        let err = Vad::load(Path::new("/nonexistent/silero_vad.onnx"), 1).unwrap_err();
        assert_eq!(err.code(), "model_missing");
    }
}
