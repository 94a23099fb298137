//! Look-ahead true-peak limiter used after loudness normalisation.
//!
//! The gain needed to keep every inter-sample peak under the ceiling is computed per sample by
//! the true-peak interpolator, held over the look-ahead window (sliding minimum), released
//! exponentially, and finally smoothed by a moving average as long as the look-ahead. The
//! moving average turns each gain drop into a linear ramp that completes exactly when the peak
//! reaches the output, so the attack is click-free and never late.

use std::collections::VecDeque;

use super::loudness::{PeakInterpolator, TP_TAPS, db_to_lin};

/// The limiter aims this far (dB) below the requested ceiling to absorb estimator error.
const LIMITER_MARGIN_DB: f64 = 0.5;
/// Default limiter release time, in milliseconds.
const RELEASE_MS: f64 = 50.0;

/// Look-ahead true-peak limiter with a static make-up/normalisation gain in front.
///
/// The output is delayed internally but [`Limiter::process`] + [`Limiter::flush`] return
/// exactly as many frames as were fed in, time-aligned with the input.
#[derive(Debug, Clone)]
pub struct Limiter {
    /// Construction parameters, used to start afresh after a flush.
    params: (u32, u16, f64, f64, f64),
    release_ms: f64,
    channels: usize,
    gain: f32,
    threshold: f64,
    lookahead: usize,
    release_coef: f64,
    interp: PeakInterpolator,
    /// Per-channel delay line of gained input samples.
    delay: Vec<VecDeque<f32>>,
    prev_req: f64,
    min_window: VecDeque<(u64, f64)>,
    env: f64,
    box_vals: VecDeque<f64>,
    box_sum: f64,
    n_in: u64,
    latency: u64,
    n_out: u64,
}

impl Limiter {
    /// `gain_db` is applied first; the output true peak is held under `ceiling_dbtp` using a
    /// `lookahead_ms` attack ramp and a 50 ms exponential release.
    pub fn new(sample_rate: u32, channels: u16, gain_db: f64, ceiling_dbtp: f64, lookahead_ms: f64) -> Self {
        let ch = usize::from(channels.max(1));
        let fs = f64::from(sample_rate.max(1));
        let lookahead = ((lookahead_ms.max(0.0) * fs / 1000.0).round() as usize).max(1);
        let latency = (TP_TAPS / 2 + lookahead - 1) as u64;
        Limiter {
            params: (sample_rate, channels, gain_db, ceiling_dbtp, lookahead_ms),
            release_ms: RELEASE_MS,
            channels: ch,
            gain: db_to_lin(finite_or_zero(gain_db)) as f32,
            threshold: db_to_lin(finite_or_zero(ceiling_dbtp) - LIMITER_MARGIN_DB),
            lookahead,
            release_coef: (-1.0 / (RELEASE_MS / 1000.0 * fs)).exp(),
            interp: PeakInterpolator::new(sample_rate, ch),
            delay: vec![VecDeque::with_capacity(latency as usize + 2); ch],
            prev_req: 1.0,
            min_window: VecDeque::new(),
            env: 1.0,
            box_vals: VecDeque::from(vec![1.0; lookahead]),
            box_sum: lookahead as f64,
            n_in: 0,
            latency,
            n_out: 0,
        }
    }

    /// Sets the release time constant (default 50 ms). Shorter keeps more loudness on
    /// transient-heavy material (speech) at the cost of more audible pumping.
    #[must_use]
    pub fn with_release_ms(mut self, release_ms: f64) -> Self {
        let fs = f64::from(self.params.0.max(1));
        self.release_coef = (-1.0 / (release_ms.max(0.1) / 1000.0 * fs)).exp();
        self.release_ms = release_ms;
        self
    }

    /// Processing latency in frames (compensated internally).
    pub fn latency_frames(&self) -> u64 {
        self.latency
    }

    /// Processes planar audio; returns the frames that are ready (the first call returns
    /// fewer frames than it was given; [`Limiter::flush`] returns the rest).
    pub fn process(&mut self, planar: &[Vec<f32>]) -> Vec<Vec<f32>> {
        let frames = planar.iter().take(self.channels).map(Vec::len).min().unwrap_or(0);
        let mut out = vec![Vec::with_capacity(frames); self.channels];
        for i in 0..frames {
            self.step(|c| planar.get(c).map_or(0.0, |p| p[i]), &mut out);
        }
        out
    }

    /// Drains the internal delay; afterwards the limiter is reset for a new stream.
    pub fn flush(&mut self) -> Vec<Vec<f32>> {
        let target = self.n_in;
        let mut out = vec![Vec::with_capacity((target - self.n_out) as usize); self.channels];
        while self.n_out < target {
            self.step(|_| 0.0, &mut out);
        }
        let (rate, ch, gain, ceiling, lookahead) = self.params;
        *self = Limiter::new(rate, ch, gain, ceiling, lookahead).with_release_ms(self.release_ms);
        out
    }

    fn step(&mut self, input: impl Fn(usize) -> f32, out: &mut [Vec<f32>]) {
        let thr = self.threshold as f32;
        let mut peak = 0f32;
        for c in 0..self.channels {
            let x = input(c) * self.gain;
            self.delay[c].push_back(x);
            peak = peak.max(self.interp.push(c, x, thr));
        }
        // Gain needed for the interval that just left the detector, applied to both its ends.
        let req = if f64::from(peak) > self.threshold { self.threshold / f64::from(peak) } else { 1.0 };
        let q = req.min(self.prev_req);
        self.prev_req = req;
        let idx = self.n_in;
        self.n_in += 1;
        while self.min_window.back().is_some_and(|&(_, v)| v >= q) {
            self.min_window.pop_back();
        }
        self.min_window.push_back((idx, q));
        while self.min_window.front().is_some_and(|&(i, _)| i + (self.lookahead as u64) <= idx) {
            self.min_window.pop_front();
        }
        let hold = self.min_window.front().map_or(1.0, |&(_, v)| v);
        self.env = if hold < self.env { hold } else { hold + (self.env - hold) * self.release_coef };
        self.box_sum += self.env - self.box_vals.pop_front().unwrap_or(1.0);
        self.box_vals.push_back(self.env);
        if idx >= self.latency {
            let g = (self.box_sum / self.lookahead as f64).min(1.0) as f32;
            for (o, d) in out.iter_mut().zip(self.delay.iter_mut()) {
                o.push(d.pop_front().unwrap_or(0.0) * g);
            }
            self.n_out += 1;
        }
    }
}

/// Non-finite parameters (NaN/inf from a failed measurement) fall back to 0 dB.
fn finite_or_zero(db: f64) -> f64 {
    if db.is_finite() { db } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::loudness::LoudnessMeter;

    fn sine(rate: u32, hz: f64, amp: f64, secs: f64) -> Vec<f32> {
        let n = (f64::from(rate) * secs) as usize;
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as f32).collect()
    }

    #[test]
    fn limiter_keeps_length_alignment_and_ceiling() {
        let rate = 48_000;
        let mut s = sine(rate, 997.0, 0.05, 3.0);
        for (i, v) in s.iter_mut().enumerate().skip(60_000).take(2_000) {
            *v = 0.9 * (i as f32 * 0.37).sin();
        }
        let mut lim = Limiter::new(rate, 1, 6.0, -1.0, 5.0);
        let mut out = Vec::new();
        for chunk in s.chunks(1000) {
            out.extend(lim.process(&[chunk.to_vec()]).remove(0));
        }
        out.extend(lim.flush().remove(0));
        assert_eq!(out.len(), s.len());
        // Quiet parts are untouched apart from the static +6 dB gain (time aligned).
        let g = db_to_lin(6.0) as f32;
        assert!(out[..50_000].iter().zip(&s).all(|(o, i)| (o - i * g).abs() < 1e-5));
        assert!(out[100_000..].iter().zip(&s[100_000..]).all(|(o, i)| (o - i * g).abs() < 1e-4));
        let mut m = LoudnessMeter::new(rate, 1);
        m.push(&[out]);
        assert!(m.true_peak_dbtp() <= -1.0, "tp {}", m.true_peak_dbtp());
        // A NaN gain (e.g. from a silent file's loudness) must not poison the output.
        let mut lim = Limiter::new(rate, 1, f64::NAN, f64::NAN, 5.0);
        let mut y = lim.process(&[vec![0.5; 1000]]).remove(0);
        y.extend(lim.flush().remove(0));
        assert!(y.len() == 1000 && y.iter().all(|v| v.is_finite() && v.abs() <= 0.5));
    }
}
