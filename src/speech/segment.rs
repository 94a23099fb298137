//! Cutting long recordings into Whisper windows (≤ 30 s each) at pauses, from voice-activity
//! probabilities: one probability per VAD frame of [`SegmentParams::frame_samples`] samples
//! (512 at 16 kHz, 32 ms, as Silero VAD produces).
//!
//! The algorithm runs in time linear in the number of frames:
//! 1. **Speech regions** ([`speech_regions`]), with hysteresis as Silero's `get_speech_timestamps`:
//!    speech starts at a frame with probability ≥ `threshold_on`; once in speech, a run of frames
//!    that starts below `threshold_off` and lasts at least `min_silence_ms` ends the region at the
//!    run's first frame (a frame ≥ `threshold_on` cancels the run; frames between the two
//!    thresholds neither start nor cancel it). Regions shorter than `min_speech_ms` are dropped.
//! 2. **Padding**: each region grows by `speech_pad_ms` on both sides, clamped to the recording;
//!    when two regions are closer than twice the pad, they meet in the middle of their pause.
//! 3. **Packing**: a window starts at the first region not yet covered and takes the following
//!    regions greedily while the window stays ≤ `max_window_samples` and the pause before the
//!    next region is ≤ `max_inner_silence_ms` (longer silences are skipped: no window spans them,
//!    and no window is ever made of silence alone). When the next region does not fit, the
//!    window ends after the region followed by the longest pause among those ending in the last
//!    `split_search_ms` of the window (the latest region if none ends there), so it ends in
//!    silence. A single region that does not fit on its own is cut at the lowest-probability
//!    frame in the last `split_search_ms` of the window (the latest such frame on ties), or at
//!    exactly `max_window_samples` when no frame lies there; its remainder starts the next window.
//!
//! Every frame of a detected region lies in exactly one window; windows are in order and never
//! overlap. Probabilities that are NaN count as 0; frames past `total_samples` are ignored.

use serde::{Deserialize, Serialize};

use super::Error;
use super::mel::{SAMPLE_RATE, WINDOW_SAMPLES};

/// Tuning of [`segment`]. The defaults suit Silero VAD at 16 kHz feeding Whisper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SegmentParams {
    /// Samples per probability (VAD frame), at 16 kHz.
    pub frame_samples: usize,
    /// A probability at or above this starts speech.
    pub threshold_on: f32,
    /// A probability below this (while in speech) starts a candidate pause.
    pub threshold_off: f32,
    /// Detected regions shorter than this are dropped, in milliseconds.
    pub min_speech_ms: u32,
    /// A pause must last this long to end a region, in milliseconds.
    pub min_silence_ms: u32,
    /// Context kept around each region on both sides, in milliseconds.
    pub speech_pad_ms: u32,
    /// Longest window, in samples; at most [`WINDOW_SAMPLES`] (30 s).
    pub max_window_samples: usize,
    /// How far back from a window's limit to look for a pause or a low-probability frame to cut
    /// at, in milliseconds.
    pub split_search_ms: u32,
    /// A pause longer than this always ends a window, in milliseconds.
    pub max_inner_silence_ms: u32,
}

impl Default for SegmentParams {
    fn default() -> Self {
        Self {
            frame_samples: 512,
            threshold_on: 0.5,
            threshold_off: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 100,
            speech_pad_ms: 200,
            max_window_samples: WINDOW_SAMPLES,
            split_search_ms: 10_000,
            max_inner_silence_ms: 4_000,
        }
    }
}

impl SegmentParams {
    /// Checks that the fields are in range: thresholds within `0 ≤ off ≤ on ≤ 1`, a non-zero
    /// frame, and `0 < max_window_samples ≤ WINDOW_SAMPLES`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.frame_samples == 0 {
            return Err(Error::InvalidParams("frame-samples must be positive"));
        }
        if !(0.0 <= self.threshold_off && self.threshold_off <= self.threshold_on && self.threshold_on <= 1.0) {
            return Err(Error::InvalidParams("thresholds must satisfy 0 <= threshold-off <= threshold-on <= 1"));
        }
        if self.max_window_samples == 0 || self.max_window_samples > WINDOW_SAMPLES {
            return Err(Error::InvalidParams("max-window-samples must be in 1..=480000"));
        }
        Ok(())
    }
}

/// A stretch of detected speech (unpadded), in samples: `start_sample..end_sample`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeechRegion {
    /// First sample of speech.
    pub start_sample: usize,
    /// One past the last sample of speech.
    pub end_sample: usize,
}

/// A window to transcribe: the samples `start_sample..end_sample`, at most 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First sample of the window.
    pub start_sample: usize,
    /// One past the last sample of the window.
    pub end_sample: usize,
}

impl Window {
    /// Number of samples in the window.
    pub fn duration_samples(&self) -> usize {
        self.end_sample - self.start_sample
    }
}

/// A padded region: padded bounds, plus the raw pause that follows it (`usize::MAX` for the last).
struct Span {
    start: usize,
    end: usize,
    pause_after: usize,
}

fn ms_to_samples(ms: u32) -> usize {
    ms as usize * SAMPLE_RATE as usize / 1000
}

/// NaN counts as silence.
fn prob(p: f32) -> f32 {
    if p.is_nan() { 0.0 } else { p }
}

/// Step 1 of the module's algorithm: speech regions, unpadded, in samples, in order.
pub fn speech_regions(probs: &[f32], total_samples: usize, params: &SegmentParams) -> Vec<SpeechRegion> {
    let frame = params.frame_samples.max(1);
    let frames = probs.len().min(total_samples.div_ceil(frame));
    let min_silence = ms_to_samples(params.min_silence_ms);
    let mut regions = Vec::new();
    let mut push = |from: usize, to: usize| {
        let region = SpeechRegion { start_sample: from * frame, end_sample: (to * frame).min(total_samples) };
        if region.end_sample - region.start_sample >= ms_to_samples(params.min_speech_ms) {
            regions.push(region);
        }
    };
    let (mut start, mut pause) = (None, None);
    for (i, &p) in probs[..frames].iter().enumerate() {
        let p = prob(p);
        let Some(from) = start else {
            start = (p >= params.threshold_on).then_some(i);
            continue;
        };
        if p >= params.threshold_on {
            pause = None;
        } else if p < params.threshold_off {
            let quiet_from = *pause.get_or_insert(i);
            if (i + 1 - quiet_from) * frame >= min_silence {
                push(from, quiet_from);
                (start, pause) = (None, None);
            }
        }
    }
    if let Some(from) = start {
        push(from, pause.unwrap_or(frames));
    }
    regions
}

/// Step 2: pads regions by `pad` samples, meeting in the middle of pauses shorter than `2 * pad`.
fn pad_regions(regions: &[SpeechRegion], total_samples: usize, pad: usize) -> Vec<Span> {
    let pause = |k: usize| regions.get(k + 1).map_or(usize::MAX, |n| n.start_sample - regions[k].end_sample);
    (0..regions.len())
        .map(|k| {
            let r = regions[k];
            let start = match k.checked_sub(1) {
                Some(prev) if pause(prev) < 2 * pad => regions[prev].end_sample + pause(prev) / 2,
                _ => r.start_sample.saturating_sub(pad),
            };
            let end =
                if pause(k) < 2 * pad { r.end_sample + pause(k) / 2 } else { (r.end_sample + pad).min(total_samples) };
            Span { start, end, pause_after: pause(k) }
        })
        .collect()
}

/// Cuts `probs` into Whisper windows covering all detected speech (see the module docs).
///
/// `total_samples` is the recording's length at 16 kHz. Fails only on invalid `params`.
pub fn segment(probs: &[f32], total_samples: usize, params: &SegmentParams) -> Result<Vec<Window>, Error> {
    params.validate()?;
    let regions = speech_regions(probs, total_samples, params);
    let spans = pad_regions(&regions, total_samples, ms_to_samples(params.speech_pad_ms));
    let max_pause = ms_to_samples(params.max_inner_silence_ms);
    let search = ms_to_samples(params.split_search_ms);
    let mut windows = Vec::new();
    let (mut i, mut start) = (0, spans.first().map_or(0, |s| s.start));
    while i < spans.len() {
        let limit = start + params.max_window_samples;
        if spans[i].end > limit {
            let cut = split_point(probs, start, limit, search, params.frame_samples);
            windows.push(Window { start_sample: start, end_sample: cut });
            start = cut;
            continue;
        }
        let mut j = i;
        while j + 1 < spans.len() && spans[j].pause_after <= max_pause && spans[j + 1].end <= limit {
            j += 1;
        }
        let last = if j + 1 == spans.len() || spans[j].pause_after > max_pause {
            j
        } else {
            i + longest_late_pause(&spans[i..=j], limit.saturating_sub(search))
        };
        windows.push(Window { start_sample: start, end_sample: spans[last].end });
        i = last + 1;
        start = spans.get(i).map_or(start, |s| s.start);
    }
    Ok(windows)
}

/// Index of the span followed by the longest pause among those ending at or after `late` (the
/// latest on ties), or of the last span when none ends that late.
fn longest_late_pause(spans: &[Span], late: usize) -> usize {
    let mut best = spans.len() - 1;
    for (k, span) in spans.iter().enumerate().rev().take_while(|(_, s)| s.end >= late) {
        if span.pause_after > spans[best].pause_after {
            best = k;
        }
    }
    best
}

/// Where to cut speech that overruns a window `start..limit`: the middle of the lowest-probability
/// frame whose middle lies in `(max(start, limit - search), limit]` (the latest on ties), else `limit`.
fn split_point(probs: &[f32], start: usize, limit: usize, search: usize, frame: usize) -> usize {
    let half = frame / 2;
    let lo = limit.saturating_sub(search).max(start);
    let first = (lo + 1).saturating_sub(half).div_ceil(frame);
    let Some(last) = limit.checked_sub(half).map(|x| (x / frame).min(probs.len().saturating_sub(1))) else {
        return limit;
    };
    let candidates = probs.get(first..=last).unwrap_or_default();
    let best =
        candidates.iter().enumerate().min_by(|(a, pa), (b, pb)| prob(**pa).total_cmp(&prob(**pb)).then(b.cmp(a)));
    best.map_or(limit, |(k, _)| (first + k) * frame + half)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 512;

    /// Samples of `frames` VAD frames.
    fn s(frames: usize) -> usize {
        frames * FRAME
    }

    /// Frames in `secs` seconds (rounded down).
    fn f(secs: f64) -> usize {
        (secs * 16_000.0 / FRAME as f64) as usize
    }

    fn run(probs: &[f32]) -> Vec<Window> {
        segment(probs, s(probs.len()), &SegmentParams::default()).unwrap()
    }

    /// Windows are in order, non-overlapping, ≤ 30 s, non-empty, inside the recording, and cover
    /// every frame at or above the on-threshold (test signals have no sub-250 ms bursts).
    fn check(probs: &[f32], windows: &[Window]) {
        for w in windows {
            assert!(w.start_sample < w.end_sample && w.end_sample <= s(probs.len()), "{w:?}");
            assert!(w.duration_samples() <= WINDOW_SAMPLES, "{w:?}");
        }
        for pair in windows.windows(2) {
            assert!(pair[0].end_sample <= pair[1].start_sample, "{pair:?}");
        }
        // Touching windows (a region cut mid-frame) cover a frame together.
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for w in windows {
            match covered.last_mut() {
                Some(last) if last.1 == w.start_sample => last.1 = w.end_sample,
                _ => covered.push((w.start_sample, w.end_sample)),
            }
        }
        let mut k = 0;
        for (i, _) in probs.iter().enumerate().filter(|(_, p)| **p >= 0.5) {
            while k < covered.len() && covered[k].1 < s(i + 1) {
                k += 1;
            }
            let c = covered.get(k).unwrap_or_else(|| panic!("frame {i} after the last window"));
            assert!(c.0 <= s(i), "frame {i} not covered (next windows {c:?})");
        }
    }

    /// Pseudo-random speech/pause alternation: bursts of 0.3–12 s, pauses of 0.05–6 s, with
    /// wobbling probabilities (some in the hysteresis band).
    fn synthetic(frames: usize, mut seed: u64) -> Vec<f32> {
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut probs = Vec::with_capacity(frames);
        while probs.len() < frames {
            let speech = 16 + next(360) as usize;
            probs.extend((0..speech).map(|_| if next(10) == 0 { 0.45 } else { 0.6 + next(40) as f32 / 100.0 }));
            let pause = 2 + next(186) as usize;
            probs.extend((0..pause).map(|_| next(30) as f32 / 100.0));
        }
        probs.truncate(frames);
        probs
    }

    #[test]
    fn random_conversations_hold_the_invariants() {
        for seed in 1..40 {
            let probs = synthetic(f(600.0), seed);
            check(&probs, &run(&probs));
        }
    }

    #[test]
    fn three_hours_run_quickly() {
        let probs = synthetic(f(3.0 * 3600.0), 7);
        let windows = run(&probs);
        check(&probs, &windows);
        assert!(windows.len() > 100, "{}", windows.len());
    }

    #[test]
    fn monologue_without_pauses_is_split_at_its_dips() {
        let mut probs = vec![0.9; f(100.0)];
        probs[f(25.0)] = 0.4; // a dip inside the hysteresis band: still one speech region
        let windows = run(&probs);
        check(&probs, &windows);
        assert_eq!(speech_regions(&probs, s(probs.len()), &SegmentParams::default()).len(), 1);
        assert_eq!(windows[0], Window { start_sample: 0, end_sample: s(f(25.0)) + FRAME / 2 });
        assert!(windows.len() == 4, "{windows:?}");
        // No dips after the first: hard cuts at the latest tied frame, i.e. just under 30 s.
        assert!(windows[1].duration_samples() > WINDOW_SAMPLES - FRAME);
    }

    #[test]
    fn window_ends_at_the_longest_late_pause() {
        // Speech 0–10 s, pause 1 s, 11–22 s, pause 2 s, 24–27 s, pause 0.5 s, 27.5–33 s.
        let mut probs = vec![0.1; f(40.0)];
        for (a, b) in [(0.0, 10.0), (11.0, 22.0), (24.0, 27.0), (27.5, 33.0)] {
            probs[f(a)..f(b)].fill(0.9);
        }
        let windows = run(&probs);
        check(&probs, &windows);
        assert_eq!(windows.len(), 2);
        // Cut in the 2 s pause after 22 s (pad 200 ms), not the later 0.5 s one.
        assert_eq!(windows[0].end_sample, s(f(22.0)) + 3200);
        assert_eq!(windows[1].start_sample, s(f(24.0)) - 3200);
    }

    #[test]
    fn long_silences_are_skipped() {
        let mut probs = vec![0.0; f(60.0)];
        probs[f(1.0)..f(3.0)].fill(0.9);
        probs[f(20.0)..f(22.0)].fill(0.9);
        let windows = run(&probs);
        check(&probs, &windows);
        assert_eq!(
            windows,
            [
                Window { start_sample: s(f(1.0)) - 3200, end_sample: s(f(3.0)) + 3200 },
                Window { start_sample: s(f(20.0)) - 3200, end_sample: s(f(22.0)) + 3200 },
            ]
        );
    }

    #[test]
    fn short_pauses_and_blips_follow_the_thresholds() {
        let p = SegmentParams::default();
        // Two 1 s bursts 64 ms apart (< 100 ms): one region. 1 s apart: two.
        let mut probs = vec![0.0; 200];
        probs[10..41].fill(0.9);
        probs[43..74].fill(0.9);
        probs[105..136].fill(0.9);
        probs[150..153].fill(0.9); // 96 ms blip: dropped
        let regions = speech_regions(&probs, s(200), &p);
        assert_eq!(
            regions,
            [
                SpeechRegion { start_sample: s(10), end_sample: s(74) },
                SpeechRegion { start_sample: s(105), end_sample: s(136) },
            ]
        );
        // The pause between them (31 frames ≈ 1 s) is above 400 ms, so padding does not touch.
        let spans = pad_regions(&regions, s(200), 3200);
        assert_eq!((spans[0].end, spans[1].start), (s(74) + 3200, s(105) - 3200));
    }

    #[test]
    fn silence_and_edge_cases_give_no_or_one_window() {
        assert!(run(&[]).is_empty());
        assert!(run(&vec![0.0; f(3600.0)]).is_empty());
        assert!(run(&[0.9]).is_empty(), "one 32 ms frame is below min speech");
        let one = SegmentParams { min_speech_ms: 0, ..SegmentParams::default() };
        assert_eq!(segment(&[0.9], 512, &one).unwrap(), [Window { start_sample: 0, end_sample: 512 }]);
        // Probabilities beyond the recording are ignored; NaN is silence.
        assert_eq!(segment(&[f32::NAN; 100], s(100), &one).unwrap(), []);
        assert!(segment(&[0.9; 100], 0, &one).unwrap().is_empty());
        let bad = SegmentParams { threshold_off: 0.6, ..SegmentParams::default() };
        assert!(matches!(segment(&[], 0, &bad), Err(Error::InvalidParams(_))));
    }

    #[test]
    fn split_without_frames_in_range_is_a_hard_cut() {
        // Probabilities end at 10 s; a window from 40 s has no frame to split at.
        let probs = vec![0.9; f(10.0)];
        assert_eq!(
            split_point(&probs, s(f(40.0)), s(f(40.0)) + WINDOW_SAMPLES, 160_000, FRAME),
            s(f(40.0)) + WINDOW_SAMPLES
        );
    }
}
