//! Cutting a transcript into overlapping chunks of about [`ChunkParams::window_s`] (30 s) for
//! embedding, always at segment boundaries.
//!
//! Segments whose text is empty or whitespace are skipped. The rest are taken in input order
//! (transcription produces them in time order):
//! 1. A chunk starts at a segment and takes the following segments while the chunk still ends
//!    within `window_s` of its start. It always takes at least its first segment, so a segment
//!    longer than the window forms a chunk of its own.
//! 2. The next chunk starts at one of the current chunk's later segments, the one whose start is
//!    closest to `stride_s` (24 s) after the current chunk's start (the later one on ties), so
//!    consecutive chunks overlap by about `window_s − stride_s` (6 s). Only segments from which the
//!    next chunk can reach past the current one (take at least one new segment) qualify; when none
//!    does, the next chunk starts right after the current one, without overlap.
//! 3. The last chunk is the one that takes the last segment.
//!
//! Every non-empty segment lies in at least one chunk, chunks are in order (each starts at a later
//! segment and ends at a later segment than the one before), and a chunk never cuts a segment.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::Error;

/// One transcript segment, as transcription produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seg {
    /// Start time, in seconds from the start of the recording.
    pub start_s: f64,
    /// End time, in seconds from the start of the recording.
    pub end_s: f64,
    /// The recognised text.
    pub text: String,
}

/// A run of consecutive segments, the unit that is embedded and searched.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Start of the chunk's first segment (the earliest start among its segments), in seconds.
    pub start_s: f64,
    /// End of the chunk's last segment (the latest end among its segments), in seconds.
    pub end_s: f64,
    /// The segments' trimmed texts joined by single spaces.
    pub text: String,
    /// Indices into the input slice of the first and one past the last segment taken (skipped
    /// empty segments inside the range are not part of `text`).
    pub segments: Range<usize>,
}

/// Tuning of [`chunk_segments`]. The defaults give ~30 s chunks overlapping by ~6 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ChunkParams {
    /// Longest chunk, in seconds from its first segment's start to its last segment's end (a
    /// single longer segment still forms a chunk).
    pub window_s: f64,
    /// Preferred distance between the starts of consecutive chunks, in seconds; at most
    /// `window_s`. The overlap is about `window_s - stride_s`.
    pub stride_s: f64,
}

impl Default for ChunkParams {
    fn default() -> Self {
        Self { window_s: 30.0, stride_s: 24.0 }
    }
}

impl ChunkParams {
    /// Checks that `0 < stride_s <= window_s` and both are finite.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.window_s.is_finite() && self.window_s > 0.0) {
            return Err(Error::InvalidParams("window-s must be a positive number of seconds"));
        }
        if !(self.stride_s.is_finite() && self.stride_s > 0.0 && self.stride_s <= self.window_s) {
            return Err(Error::InvalidParams("stride-s must satisfy 0 < stride-s <= window-s"));
        }
        Ok(())
    }
}

/// Cuts `segments` into overlapping chunks (see the module docs). Never panics: invalid
/// parameters or out-of-order times give odd chunks, not errors (check [`ChunkParams::validate`]
/// at configuration time).
pub fn chunk_segments(segments: &[Seg], params: &ChunkParams) -> Vec<Chunk> {
    let kept: Vec<usize> = (0..segments.len()).filter(|&i| !segments[i].text.trim().is_empty()).collect();
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < kept.len() {
        let last = chunk_end(segments, &kept, first, params.window_s);
        chunks.push(make_chunk(segments, &kept[first..=last]));
        if last + 1 == kept.len() {
            break;
        }
        first = next_start(segments, &kept, first, last, params);
    }
    chunks
}

/// Index in `kept` of the last segment of the chunk starting at `kept[first]`.
fn chunk_end(segments: &[Seg], kept: &[usize], first: usize, window_s: f64) -> usize {
    let start = segments[kept[first]].start_s;
    let mut last = first;
    while last + 1 < kept.len() && segments[kept[last + 1]].end_s - start <= window_s {
        last += 1;
    }
    last
}

/// Index in `kept` where the chunk after `kept[first..=last]` starts: always in `first + 1..=last + 1`.
fn next_start(segments: &[Seg], kept: &[usize], first: usize, last: usize, params: &ChunkParams) -> usize {
    let target = segments[kept[first]].start_s + params.stride_s;
    let reach = segments[kept[last + 1]].end_s;
    (first + 1..=last)
        .filter(|&k| reach - segments[kept[k]].start_s <= params.window_s)
        .min_by(|&a, &b| {
            let (da, db) = ((segments[kept[a]].start_s - target).abs(), (segments[kept[b]].start_s - target).abs());
            da.total_cmp(&db).then(b.cmp(&a))
        })
        .unwrap_or(last + 1)
}

fn make_chunk(segments: &[Seg], idx: &[usize]) -> Chunk {
    let segs = idx.iter().map(|&i| &segments[i]);
    let text = segs.clone().map(|s| s.text.trim()).collect::<Vec<_>>().join(" ");
    Chunk {
        start_s: segs.clone().map(|s| s.start_s).fold(f64::INFINITY, f64::min),
        end_s: segs.map(|s| s.end_s).fold(f64::NEG_INFINITY, f64::max),
        text,
        segments: idx[0]..idx[idx.len() - 1] + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_s: f64, end_s: f64, text: &str) -> Seg {
        Seg { start_s, end_s, text: text.to_string() }
    }

    /// Back-to-back segments of `len_s` seconds, texts "s0", "s1", …
    fn regular(n: usize, len_s: f64) -> Vec<Seg> {
        (0..n).map(|i| seg(i as f64 * len_s, (i + 1) as f64 * len_s, &format!("s{i}"))).collect()
    }

    /// Irregular but deterministic segment lengths between 1.5 and 11 s, with small gaps.
    fn irregular(n: usize) -> Vec<Seg> {
        let mut t = 0.0;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let len = 1.5 + (x >> 33) as f64 / (1u64 << 31) as f64 * 9.5;
                let gap = (x & 0xff) as f64 / 255.0;
                let s = seg(t, t + len, &format!("s{i}"));
                t += len + gap;
                s
            })
            .collect()
    }

    fn check_invariants(segs: &[Seg], chunks: &[Chunk], params: &ChunkParams) {
        for i in (0..segs.len()).filter(|&i| !segs[i].text.trim().is_empty()) {
            assert!(chunks.iter().any(|c| c.segments.contains(&i)), "segment {i} in no chunk");
        }
        for w in chunks.windows(2) {
            assert!(w[1].segments.start > w[0].segments.start, "chunk starts not increasing");
            assert!(w[1].segments.end > w[0].segments.end, "chunk ends not increasing");
            assert!(w[1].segments.start <= w[0].segments.end, "gap between chunks");
        }
        for c in chunks {
            let multi = c.segments.len() > 1;
            assert!(!multi || c.end_s - c.start_s <= params.window_s + 1e-9, "chunk too long: {c:?}");
            // Snapping: the chunk's bounds are exactly its first/last segment's bounds.
            assert_eq!(c.start_s, segs[c.segments.start].start_s);
            assert_eq!(c.end_s, segs[c.segments.end - 1].end_s);
        }
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        assert!(chunk_segments(&[], &ChunkParams::default()).is_empty());
        assert!(chunk_segments(&[seg(0.0, 1.0, "  "), seg(1.0, 2.0, "")], &ChunkParams::default()).is_empty());
    }

    #[test]
    fn short_transcript_is_one_chunk() {
        let segs = vec![seg(0.0, 4.0, " hello "), seg(4.0, 9.0, "world")];
        let chunks = chunk_segments(&segs, &ChunkParams::default());
        assert_eq!(chunks, vec![Chunk { start_s: 0.0, end_s: 9.0, text: "hello world".into(), segments: 0..2 }]);
    }

    #[test]
    fn regular_segments_overlap_by_about_six_seconds() {
        let params = ChunkParams::default();
        let segs = regular(60, 3.0); // 180 s
        let chunks = chunk_segments(&segs, &params);
        check_invariants(&segs, &chunks, &params);
        assert_eq!(chunks[0].segments, 0..10);
        assert_eq!(chunks[0].text, "s0 s1 s2 s3 s4 s5 s6 s7 s8 s9");
        for w in chunks.windows(2) {
            assert_eq!(w[1].start_s - w[0].start_s, 24.0);
            assert_eq!(w[0].end_s - w[1].start_s, 6.0);
        }
        assert_eq!(chunks.last().map(|c| c.end_s), Some(180.0));
    }

    #[test]
    fn irregular_segments_keep_invariants_and_overlap() {
        let params = ChunkParams::default();
        let segs = irregular(400);
        let chunks = chunk_segments(&segs, &params);
        check_invariants(&segs, &chunks, &params);
        let overlaps: Vec<f64> = chunks.windows(2).map(|w| w[0].end_s - w[1].start_s).collect();
        assert!(overlaps.iter().all(|&o| o > 0.0), "every pair overlaps with these lengths");
        let mean = overlaps.iter().sum::<f64>() / overlaps.len() as f64;
        assert!((3.0..=12.0).contains(&mean), "mean overlap {mean}");
        let strides: Vec<f64> = chunks.windows(2).map(|w| w[1].start_s - w[0].start_s).collect();
        let mean_stride = strides.iter().sum::<f64>() / strides.len() as f64;
        assert!((18.0..=27.0).contains(&mean_stride), "mean stride {mean_stride}");
    }

    #[test]
    fn long_segment_forms_its_own_chunk() {
        let params = ChunkParams::default();
        let segs = vec![
            seg(0.0, 10.0, "a"),
            seg(10.0, 20.0, "b"),
            seg(20.0, 65.0, "long"),
            seg(65.0, 70.0, "c"),
            seg(70.0, 72.0, "d"),
        ];
        let chunks = chunk_segments(&segs, &params);
        check_invariants(&segs, &chunks, &params);
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["a b", "long", "c d"]);
        assert_eq!((chunks[1].start_s, chunks[1].end_s), (20.0, 65.0));
    }

    #[test]
    fn next_chunk_must_reach_past_the_current_one() {
        // From "b" (start 5) the 28 s segment would not fit, so the next chunk starts at it: no
        // chunk is a subset of the one before.
        let segs = vec![seg(0.0, 5.0, "a"), seg(5.0, 12.0, "b"), seg(12.0, 40.0, "c"), seg(40.0, 41.0, "d")];
        let chunks = chunk_segments(&segs, &ChunkParams::default());
        check_invariants(&segs, &chunks, &ChunkParams::default());
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["a b", "c d"]);
    }

    #[test]
    fn whitespace_segments_are_skipped_but_spanned() {
        let segs = vec![seg(0.0, 5.0, "a"), seg(5.0, 6.0, " \n"), seg(6.0, 10.0, "b")];
        let chunks = chunk_segments(&segs, &ChunkParams::default());
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "a b");
        assert_eq!(chunks[0].segments, 0..3);
    }

    #[test]
    fn long_silence_splits_without_overlap() {
        let segs = vec![seg(0.0, 5.0, "a"), seg(5.0, 10.0, "b"), seg(300.0, 305.0, "c")];
        let chunks = chunk_segments(&segs, &ChunkParams::default());
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["a b", "c"]);
    }

    #[test]
    fn hostile_params_and_times_terminate() {
        let segs = irregular(50);
        for (window_s, stride_s) in [(0.0, 0.0), (-1.0, 5.0), (f64::NAN, f64::NAN), (30.0, 100.0), (f64::INFINITY, 1.0)]
        {
            let params = ChunkParams { window_s, stride_s };
            assert!(params.validate().is_err());
            let chunks = chunk_segments(&segs, &params);
            assert!(!chunks.is_empty() && chunks.len() <= segs.len());
        }
        let mut shuffled = segs.clone();
        shuffled.reverse();
        assert!(!chunk_segments(&shuffled, &ChunkParams::default()).is_empty());
        ChunkParams::default().validate().unwrap();
    }
}
