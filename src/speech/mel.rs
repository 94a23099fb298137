//! Whisper's log-mel front end, bit-for-bit the recipe of OpenAI Whisper's `log_mel_spectrogram`.
//!
//! For one window of 16 kHz mono audio (at most 30 s, zero-padded to exactly 30 s):
//! 1. STFT: `n_fft` 400, hop 160, periodic Hann window (`0.5 - 0.5·cos(2πn/400)`), centred frames
//!    with 200 samples of *reflect* padding on each side; 3001 frames, the last one dropped.
//! 2. Power spectrum `|X|²` of the 201 bins.
//! 3. 80 Slaney mel filters (librosa `mel(sr=16000, n_fft=400, n_mels=80, htk=False,
//!    norm='slaney')`, which is Whisper's `mel_filters.npz`), `mel = filters @ power`.
//! 4. `log10(max(mel, 1e-10))`, clamped from below at (window maximum − 8), then `(x + 4) / 4`.
//!
//! The output is row-major `[N_MELS, N_FRAMES]` (mel bin major), the layout of Whisper's encoder
//! input. [`LogMel`] holds everything precomputed (window, sparse filterbank, FFT plan, scratch),
//! so computing a window allocates nothing. `tests/speech/mel_ref.py` is the independent numpy
//! reference the tests compare against.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::Error;

/// Sample rate the front end expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// FFT size (25 ms).
pub const N_FFT: usize = 400;
/// Hop between frames (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Number of FFT bins of a real input of length [`N_FFT`].
pub const N_BINS: usize = N_FFT / 2 + 1;
/// Number of mel bins.
pub const N_MELS: usize = 80;
/// Frames per window (30 s at 10 ms).
pub const N_FRAMES: usize = 3000;
/// Samples per window (30 s at 16 kHz); shorter input is zero-padded to this length.
pub const WINDOW_SAMPLES: usize = 480_000;
/// Length of the output of one window: `N_MELS * N_FRAMES`.
pub const OUTPUT_LEN: usize = N_MELS * N_FRAMES;

/// Reflect padding on each side (`center=True`).
const PAD: usize = N_FFT / 2;
/// Floor applied to mel energies before the logarithm.
const LOG_FLOOR: f32 = 1e-10;
/// Dynamic range kept below the window's maximum, in log10 units (80 dB).
const DYNAMIC_RANGE: f32 = 8.0;

/// One mel filter: its non-zero weights, which cover the bins `first_bin..first_bin + weights.len()`.
struct Band {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Computes Whisper log-mel spectrograms, one 30 s window at a time. Build once, reuse per window.
pub struct LogMel {
    window: Vec<f32>,
    bands: Vec<Band>,
    fft: Arc<dyn RealToComplex<f32>>,
    padded: Vec<f32>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").field("n_mels", &N_MELS).field("n_frames", &N_FRAMES).finish_non_exhaustive()
    }
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    /// Precomputes the Hann window, the sparse mel filterbank and the FFT plan.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        let scratch = fft.make_scratch_vec();
        let spectrum = fft.make_output_vec();
        Self {
            window: hann_window(),
            bands: sparse_bands(&mel_filterbank()),
            fft,
            padded: vec![0.0; WINDOW_SAMPLES + 2 * PAD],
            frame: vec![0.0; N_FFT],
            spectrum,
            scratch,
            power: vec![0.0; N_BINS],
        }
    }

    /// Writes the log-mel spectrogram of `samples` (16 kHz mono, at most [`WINDOW_SAMPLES`]) into
    /// `out`, row-major `[N_MELS, N_FRAMES]`. Non-finite samples are treated as silence.
    ///
    /// Fails with [`Error::InputTooLong`] or [`Error::OutputSize`]; never allocates.
    pub fn compute(&mut self, samples: &[f32], out: &mut [f32]) -> Result<(), Error> {
        if samples.len() > WINDOW_SAMPLES {
            return Err(Error::InputTooLong { got: samples.len(), max: WINDOW_SAMPLES });
        }
        if out.len() != OUTPUT_LEN {
            return Err(Error::OutputSize { got: out.len(), expected: OUTPUT_LEN });
        }
        self.fill_padded(samples);
        for t in 0..N_FRAMES {
            self.power_spectrum(t * HOP_LENGTH);
            for (m, band) in self.bands.iter().enumerate() {
                let power = &self.power[band.first_bin..band.first_bin + band.weights.len()];
                out[m * N_FRAMES + t] = band.weights.iter().zip(power).map(|(w, p)| w * p).sum();
            }
        }
        normalise(out);
        Ok(())
    }

    /// Like [`LogMel::compute`], into a freshly allocated vector of [`OUTPUT_LEN`] values.
    pub fn compute_vec(&mut self, samples: &[f32]) -> Result<Vec<f32>, Error> {
        let mut out = vec![0.0; OUTPUT_LEN];
        self.compute(samples, &mut out)?;
        Ok(out)
    }

    /// Lays out `samples`, zero-padded to 30 s, between reflect pads of [`PAD`] samples.
    fn fill_padded(&mut self, samples: &[f32]) {
        let body = &mut self.padded[PAD..PAD + WINDOW_SAMPLES];
        for (dst, &s) in body.iter_mut().zip(samples) {
            *dst = if s.is_finite() { s } else { 0.0 };
        }
        body[samples.len()..].fill(0.0);
        for i in 1..=PAD {
            self.padded[PAD - i] = self.padded[PAD + i];
            self.padded[PAD + WINDOW_SAMPLES - 1 + i] = self.padded[PAD + WINDOW_SAMPLES - 1 - i];
        }
    }

    /// `|X|²` of the windowed frame starting at `start` in the padded signal, into `self.power`.
    fn power_spectrum(&mut self, start: usize) {
        let src = &self.padded[start..start + N_FFT];
        for ((dst, s), w) in self.frame.iter_mut().zip(src).zip(&self.window) {
            *dst = s * w;
        }
        self.fft
            .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
            .expect("fft buffers are sized by the plan at construction");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
    }
}

/// In place: `log10(max(x, 1e-10))`, clamp to (max − 8), then `(x + 4) / 4`.
fn normalise(out: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    for v in out.iter_mut() {
        *v = v.max(LOG_FLOOR).log10();
        max = max.max(*v);
    }
    let floor = max - DYNAMIC_RANGE;
    for v in out.iter_mut() {
        *v = (v.max(floor) + 4.0) / 4.0;
    }
}

/// Periodic Hann window of length [`N_FFT`] (torch's `hann_window(400)`).
fn hann_window() -> Vec<f32> {
    (0..N_FFT).map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32).collect()
}

/// Slaney mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    if hz >= MIN_LOG_HZ { MIN_LOG_HZ / F_SP + (hz / MIN_LOG_HZ).ln() / log_step() } else { hz / F_SP }
}

/// Inverse of [`hz_to_mel`] (librosa `mel_to_hz(htk=False)`).
fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    if mel >= min_log_mel { MIN_LOG_HZ * (log_step() * (mel - min_log_mel)).exp() } else { F_SP * mel }
}

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// Edge frequencies of the filters: `N_MELS + 2` points evenly spaced on the mel scale, 0..8 kHz.
fn mel_edges_hz() -> Vec<f64> {
    let top = hz_to_mel(f64::from(SAMPLE_RATE) / 2.0);
    (0..N_MELS + 2).map(|i| mel_to_hz(top * i as f64 / (N_MELS + 1) as f64)).collect()
}

/// The dense filterbank, row-major `[N_MELS, N_BINS]`, computed in `f64` like librosa: filter `i`
/// is a triangle over edges `i..i+2` scaled by `2 / (f_hi - f_lo)` (unit area, `norm='slaney'`).
fn mel_filterbank() -> Vec<f64> {
    let edges = mel_edges_hz();
    let mut w = vec![0.0; N_MELS * N_BINS];
    for (i, row) in w.chunks_exact_mut(N_BINS).enumerate() {
        let (lo, mid, hi) = (edges[i], edges[i + 1], edges[i + 2]);
        for (k, v) in row.iter_mut().enumerate() {
            let f = k as f64 * f64::from(SAMPLE_RATE) / N_FFT as f64;
            let rising = (f - lo) / (mid - lo);
            let falling = (hi - f) / (hi - mid);
            *v = rising.min(falling).max(0.0) * 2.0 / (hi - lo);
        }
    }
    w
}

/// Keeps each filter's contiguous non-zero span, as `f32` (the precision of librosa's output).
fn sparse_bands(dense: &[f64]) -> Vec<Band> {
    dense
        .chunks_exact(N_BINS)
        .map(|row| {
            let first = row.iter().position(|&v| v > 0.0).unwrap_or(0);
            let end = row.iter().rposition(|&v| v > 0.0).map_or(first, |last| last + 1);
            Band { first_bin: first, weights: row[first..end].iter().map(|&v| v as f32).collect() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;

    /// Deterministic test signal: a 100 Hz → 7 kHz chirp under a slow envelope, plus white noise.
    fn chirp_noise(len: usize) -> Vec<f32> {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let dur = len as f64 / f64::from(SAMPLE_RATE);
        (0..len)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
                let t = i as f64 / f64::from(SAMPLE_RATE);
                let phase = 2.0 * std::f64::consts::PI * (100.0 * t + (6900.0 / (2.0 * dur)) * t * t);
                let env = 0.5 + 0.45 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
                (env * 0.6 * phase.sin() + 0.02 * noise) as f32
            })
            .collect()
    }

    #[test]
    fn filterbank_matches_librosa_slaney() {
        let w = mel_filterbank();
        let edges = mel_edges_hz();
        // Values printed by librosa 0.11 `filters.mel(sr=16000, n_fft=400, n_mels=80)`.
        assert!((w[1] - 0.024_862_594_902_515_41).abs() < 1e-9);
        assert!((w[26 * N_BINS + 25] - 0.022_114_217_281_341_553).abs() < 1e-8);
        assert!((w[25 * N_BINS + 25] - 0.004_040_425_643_324_852).abs() < 1e-8);
        assert!((w[40 * N_BINS + 43] - 0.014_735_566_5).abs() < 1e-9);
        assert!((edges[1] - 37.239_210_265).abs() < 1e-6 && (edges[79] - 7_408.542_192_632_5).abs() < 1e-6);
        for (i, row) in w.chunks_exact(N_BINS).enumerate() {
            let (lo, mid, hi) = (edges[i], edges[i + 1], edges[i + 2]);
            let peak = 2.0 / (hi - lo);
            for (k, &v) in row.iter().enumerate() {
                let f = k as f64 * 40.0;
                assert!(v >= 0.0 && v <= peak * (1.0 + 1e-12), "filter {i} bin {k}");
                assert_eq!(v > 0.0, f > lo && f < hi, "filter {i} support at bin {k}");
                if (f - mid).abs() < 1e-9 {
                    assert!((v - peak).abs() < 1e-12, "filter {i} peaks at {mid} Hz");
                }
            }
            // Unit area (slaney norm), sampled every 40 Hz.
            let area: f64 = row.iter().sum::<f64>() * 40.0;
            assert!((area - 1.0).abs() < 0.1, "filter {i} area {area}");
        }
        let bands = sparse_bands(&w);
        assert_eq!((bands[0].first_bin, bands[0].weights.len()), (1, 1));
        assert_eq!((bands[40].first_bin, bands[40].weights.len()), (42, 3));
        assert_eq!((bands[79].first_bin, bands[79].weights.len()), (186, 14));
    }

    #[test]
    fn silence_is_constant_at_the_floor() {
        let out = LogMel::new().compute_vec(&[0.0; 1000]).unwrap();
        // log10(1e-10) = -10 everywhere, so the max is -10 and (-10 + 4) / 4 = -1.5.
        assert!((out[0] + 1.5).abs() < 1e-6, "{}", out[0]);
        assert!(out.iter().all(|&v| v == out[0]));
        assert_eq!(LogMel::new().compute_vec(&[]).unwrap(), out);
    }

    #[test]
    fn sine_lands_in_its_mel_bin() {
        // 1 kHz is a whole number of cycles per 16 samples: keep the phase exact.
        let tone: Vec<f32> =
            (0..WINDOW_SAMPLES).map(|i| (std::f64::consts::TAU * (i % 16) as f64 / 16.0).sin() as f32).collect();
        let out = LogMel::new().compute_vec(&tone).unwrap();
        let energy: Vec<f32> = out.chunks_exact(N_FRAMES).map(|row| row.iter().sum()).collect();
        let best = (0..N_MELS).max_by(|&a, &b| energy[a].total_cmp(&energy[b])).unwrap();
        // 1 kHz is 15 Slaney mels; filter centres are 45.245 / 81 ≈ 0.5586 mel apart, so the
        // nearest centre is edge 27 (15.08 mels), the peak of filter 26.
        assert_eq!(best, 26);
        let centre = mel_edges_hz()[best + 1];
        assert!((centre - 1000.0).abs() < 10.0, "{centre}");
        // Far bins sit at the clamp floor: max - 8 in log10 units, i.e. 2 below the peak.
        let peak = out.iter().copied().fold(f32::MIN, f32::max);
        let far = out[70 * N_FRAMES + 1500];
        assert!((far - (peak - 2.0)).abs() < 1e-6, "{far} vs peak {peak}");
    }

    #[test]
    fn log_mel_can_move_to_a_worker_thread() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<LogMel>();
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut mel = LogMel::new();
        assert!(matches!(mel.compute_vec(&vec![0.0; WINDOW_SAMPLES + 1]), Err(Error::InputTooLong { .. })));
        assert!(matches!(mel.compute(&[0.0; 10], &mut [0.0; 10]), Err(Error::OutputSize { .. })));
        let mut noisy = chirp_noise(16_000);
        noisy[100] = f32::NAN;
        noisy[200] = f32::INFINITY;
        assert!(mel.compute_vec(&noisy).unwrap().iter().all(|v| v.is_finite()));
    }

    /// `cargo test --release --lib speech::mel::tests::time_per_window -- --ignored --nocapture`
    /// (numbers are reported, never asserted; `cargo bench --bench mel` for the full picture).
    #[test]
    #[ignore = "timing: run in release"]
    fn time_per_window() {
        let (signal, mut mel, mut out) = (chirp_noise(WINDOW_SAMPLES), LogMel::new(), vec![0.0; OUTPUT_LEN]);
        let mut times: Vec<_> = (0..200)
            .map(|_| {
                let t = std::time::Instant::now();
                mel.compute(&signal, &mut out).unwrap();
                t.elapsed()
            })
            .collect();
        times.sort();
        eprintln!("log-mel per 30 s window: min {:?}, median {:?}", times[0], times[100]);
    }

    /// A Python with numpy: `LECTERN_TEST_PYTHON`, then the models venv, then `python3`.
    fn numpy_python() -> Option<PathBuf> {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache/.venv/bin/python");
        let candidates =
            std::env::var_os("LECTERN_TEST_PYTHON").map(PathBuf::from).into_iter().chain([venv, "python3".into()]);
        let found = candidates
            .into_iter()
            .find(|py| Command::new(py).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()));
        if found.is_none() {
            eprintln!("note: no python with numpy (LECTERN_TEST_PYTHON, models/cache/.venv, python3); skipping");
        }
        found
    }

    /// Runs `tests/speech/mel_ref.py` with `args` (paths inside `dir`) and reads its f64 output.
    fn reference(py: &Path, dir: &Path, args: &[&str]) -> Vec<f64> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/speech/mel_ref.py");
        let out_path = dir.join("ref.f64");
        let out = Command::new(py).arg(script).args(args).arg(&out_path).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "mel_ref.py failed: {}", String::from_utf8_lossy(&out.stderr));
        let bytes = std::fs::read(&out_path).unwrap();
        bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn max_abs_diff(ours: impl IntoIterator<Item = f64>, theirs: &[f64]) -> f64 {
        ours.into_iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn filterbank_matches_numpy_reference() {
        let Some(py) = numpy_python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let theirs = reference(&py, dir.path(), &["filters"]);
        assert_eq!(theirs.len(), N_MELS * N_BINS);
        let diff = max_abs_diff(mel_filterbank(), &theirs);
        eprintln!("filterbank: max abs diff vs numpy {diff:e}");
        assert!(diff < 1e-12);
    }

    #[test]
    fn log_mel_matches_numpy_reference() {
        let Some(py) = numpy_python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let mut long = chirp_noise(WINDOW_SAMPLES);
        long[160_000..240_000].fill(0.0); // digital silence: exercises the (max - 8) clamp
        long[WINDOW_SAMPLES - 300..].iter_mut().for_each(|s| *s *= 3.0); // loud right edge for the reflect pad
        let mut mel = LogMel::new();
        for (name, signal) in [("7.3s", chirp_noise(116_800)), ("30s", long)] {
            let input = dir.path().join("in.f32");
            std::fs::write(&input, signal.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            let theirs = reference(&py, dir.path(), &["logmel", "in.f32"]);
            assert_eq!(theirs.len(), OUTPUT_LEN, "{name}");
            let ours = mel.compute_vec(&signal).unwrap();
            let diff = max_abs_diff(ours.iter().map(|&v| f64::from(v)), &theirs);
            eprintln!("log-mel {name}: max abs diff vs numpy {diff:e}");
            assert!(diff <= 1e-3, "{name}: {diff}");
        }
    }
}
