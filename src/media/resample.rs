//! Streaming sample-rate conversion on top of rubato's synchronous FFT resampler.
//!
//! [`Resampler`] accepts planar chunks of any length, buffers them up to rubato's fixed input
//! size, and drops rubato's start-up delay so the output is time-aligned with the input (an
//! event at input time `t` appears at output time `t`). [`Resampler::flush`] drains the tail so
//! the total output length is `round(input_len * to_hz / from_hz)` exactly.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler as RubatoResampler};

use super::{Error, MAX_CHANNELS, check_format};

/// Input frames per rubato call: small enough for low latency, large enough for speed.
const CHUNK_FRAMES: usize = 1024;

/// A streaming planar `f32` resampler. Pass-through when both rates are equal.
pub struct Resampler {
    inner: Option<Fft<f32>>,
    from_hz: u32,
    to_hz: u32,
    channels: usize,
    pending: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
    delay_left: usize,
    total_in: u64,
    total_out: u64,
}

impl std::fmt::Debug for Resampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resampler")
            .field("from_hz", &self.from_hz)
            .field("to_hz", &self.to_hz)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl Resampler {
    /// Creates a resampler from `from_hz` to `to_hz` for `channels` planar channels.
    ///
    /// Both rates must lie within the module's sample-rate limits.
    pub fn new(from_hz: u32, to_hz: u32, channels: u16) -> Result<Self, Error> {
        check_format(from_hz, channels)?;
        check_format(to_hz, channels)?;
        let ch = usize::from(channels.min(MAX_CHANNELS));
        let inner = if from_hz == to_hz {
            None
        } else {
            let fft = Fft::<f32>::new(from_hz as usize, to_hz as usize, CHUNK_FRAMES, ch, FixedSync::Input)
                .map_err(|e| Error::Unsupported(format!("cannot build resampler: {e}")))?;
            Some(fft)
        };
        let (delay_left, out_max) = inner.as_ref().map_or((0, 0), |r| (r.output_delay(), r.output_frames_max()));
        Ok(Resampler {
            inner,
            from_hz,
            to_hz,
            channels: ch,
            pending: vec![Vec::with_capacity(CHUNK_FRAMES * 2); ch],
            scratch: vec![vec![0.0; out_max]; ch],
            delay_left,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Input sample rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output sample rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Feeds a planar chunk of any length and returns whatever output is ready.
    ///
    /// Missing channels are treated as silence, extra channels are ignored, and channels are
    /// truncated to the shortest one.
    pub fn process(&mut self, planar: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let frames = planar.iter().take(self.channels).map(Vec::len).min().unwrap_or(0);
        self.total_in += frames as u64;
        if self.inner.is_none() {
            self.total_out += frames as u64;
            return (0..self.channels)
                .map(|c| planar.get(c).map_or(vec![0.0; frames], |p| p[..frames].to_vec()))
                .collect();
        }
        for (c, buf) in self.pending.iter_mut().enumerate() {
            match planar.get(c) {
                Some(p) => buf.extend_from_slice(&p[..frames]),
                None => buf.resize(buf.len() + frames, 0.0),
            }
        }
        let mut out = vec![Vec::new(); self.channels];
        self.run(&mut out, false);
        out
    }

    /// Emits the remaining tail and resets the resampler for a new stream.
    pub fn flush(&mut self) -> Vec<Vec<f32>> {
        let mut out = vec![Vec::new(); self.channels];
        if self.inner.is_some() {
            self.run(&mut out, true);
        }
        self.reset();
        out
    }

    /// Clears all buffered state (the next sample starts a new stream).
    pub fn reset(&mut self) {
        if let Some(r) = self.inner.as_mut() {
            r.reset();
            self.delay_left = r.output_delay();
        }
        self.pending.iter_mut().for_each(Vec::clear);
        self.total_in = 0;
        self.total_out = 0;
    }

    /// Total output length expected for the input seen so far.
    fn expected_out(&self) -> u64 {
        (self.total_in as f64 * f64::from(self.to_hz) / f64::from(self.from_hz)).round() as u64
    }

    /// Runs rubato over the pending input; with `finish`, also drains the delay line.
    fn run(&mut self, out: &mut [Vec<f32>], finish: bool) {
        let expected = self.expected_out();
        let Some(rs) = self.inner.as_mut() else { return };
        let ch = self.channels;
        let available = self.pending[0].len();
        let mut offset = 0;
        loop {
            let need = rs.input_frames_next();
            let left = available - offset;
            let partial = if left >= need {
                None
            } else if finish && (left > 0 || self.total_out < expected) {
                Some(left)
            } else {
                break;
            };
            let input =
                SequentialSliceOfVecs::new(&self.pending[..], ch, available).expect("pending buffers are sized");
            let out_frames = rs.output_frames_next();
            let mut output =
                SequentialSliceOfVecs::new_mut(&mut self.scratch[..], ch, out_frames).expect("scratch is sized");
            let idx = Indexing { input_offset: offset, partial_len: partial, ..Indexing::default() };
            let (_, produced) = rs.process_into_buffer(&input, &mut output, Some(&idx)).expect("rubato buffer sizes");
            offset += partial.unwrap_or(need);
            let skip = self.delay_left.min(produced);
            self.delay_left -= skip;
            let mut keep = produced - skip;
            if finish {
                let room = expected.saturating_sub(self.total_out);
                keep = keep.min(room as usize);
            }
            for (o, s) in out.iter_mut().zip(&self.scratch) {
                o.extend_from_slice(&s[skip..skip + keep]);
            }
            self.total_out += keep as u64;
        }
        self.pending.iter_mut().for_each(|p| {
            p.drain(..offset.min(p.len()));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f64, frames: usize) -> Vec<f32> {
        (0..frames).map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() as f32 * 0.5).collect()
    }

    fn run_chunks(r: &mut Resampler, input: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let sizes = [1usize, 7, 480, 4096, 333, 10_000, 1];
        let n = input[0].len();
        let mut out = vec![Vec::new(); input.len()];
        let (mut pos, mut k) = (0, 0);
        while pos < n {
            let end = (pos + sizes[k % sizes.len()]).min(n);
            let chunk: Vec<Vec<f32>> = input.iter().map(|c| c[pos..end].to_vec()).collect();
            for (o, p) in out.iter_mut().zip(r.process(&chunk)) {
                o.extend(p);
            }
            pos = end;
            k += 1;
        }
        for (o, p) in out.iter_mut().zip(r.flush()) {
            o.extend(p);
        }
        out
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    fn check(from: u32, to: u32) {
        let n = from as usize * 2;
        let input = vec![sine(from, 1000.0, n), sine(from, 440.0, n)];
        let mut r = Resampler::new(from, to, 2).unwrap();
        let out = run_chunks(&mut r, &input);
        let expected = (n as f64 * f64::from(to) / f64::from(from)).round() as usize;
        assert_eq!(out[0].len(), expected, "{from}->{to}");
        assert_eq!(out[1].len(), expected);
        // Frequency preserved: 2 s of 1 kHz has 4000 zero crossings (edges excluded).
        let zc = zero_crossings(&out[0][100..expected - 100]) as f64;
        let want = 2.0 * 1000.0 * (expected - 200) as f64 / f64::from(to);
        assert!((zc - want).abs() <= 2.0, "{from}->{to}: {zc} crossings, want {want}");
        // Time alignment: output matches the ideal sine sampled at the new rate.
        let ideal = sine(to, 1000.0, expected);
        let err = out[0][200..expected - 200].iter().zip(&ideal[200..]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 0.01, "{from}->{to}: misaligned, max err {err}");
    }

    #[test]
    fn resamples_44k1_to_48k() {
        check(44_100, 48_000);
    }

    #[test]
    fn resamples_8k_to_48k() {
        check(8_000, 48_000);
    }

    #[test]
    fn resamples_96k_to_48k() {
        check(96_000, 48_000);
    }

    #[test]
    fn passthrough_and_short_input() {
        let mut r = Resampler::new(48_000, 48_000, 1).unwrap();
        assert_eq!(r.process(&[vec![0.1, 0.2]]), vec![vec![0.1, 0.2]]);
        assert!(r.flush()[0].is_empty());
        let mut r = Resampler::new(44_100, 48_000, 1).unwrap();
        let out = run_chunks(&mut r, &[vec![0.25; 10]]);
        assert_eq!(out[0].len(), 11);
        assert!(Resampler::new(1, 48_000, 1).is_err());
        assert!(Resampler::new(48_000, 48_000, 0).is_err());
    }
}
