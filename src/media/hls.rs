//! HLS playlist writing (RFC 8216, version 7) and segment cutting for fMP4 audio.
//!
//! * [`MediaPlaylist`] grows one segment at a time and renders as `EVENT` while the
//!   recording is processed and as `VOD` + `#EXT-X-ENDLIST` once it is complete.
//! * [`master_playlist`] lists the renditions with measured bit rates (see [`Variant`]).
//! * [`Segmenter`] groups AAC frames into segments no longer than the target duration.
//! * [`peak_segment_bitrate`] / [`average_segment_bitrate`] implement the RFC 8216 /
//!   Apple HLS Authoring Spec definitions: a segment's bit rate is its size divided by its
//!   `EXTINF`; the peak is the largest bit rate of any contiguous run of segments lasting
//!   between 0.5 and 1.5 target durations; the average is all media-segment bits divided
//!   by the playlist duration. Only media segments count: the init segment (the
//!   "Media Initialization Section", fetched once) is excluded, as the spec prescribes.

use serde::{Deserialize, Serialize};

use super::aac::AacFrame;

/// Codec string for AAC-LC (`mp4a`, object type 0x40, audio object type 2).
pub const CODECS_AAC_LC: &str = "mp4a.40.2";

/// The longest segment a playlist accepts, in seconds (longer ones are clamped).
const MAX_SEGMENT_S: f64 = 86_400.0;

/// A growing HLS media playlist for one rendition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaPlaylist {
    target_duration_s: u32,
    map_uri: String,
    /// Exact running total of pushed durations, in seconds.
    total_s: f64,
    /// The `EXTINF` + URI lines of every segment, already rendered (about 30 bytes each).
    body: String,
    segments: usize,
    longest_ms: u64,
}

impl MediaPlaylist {
    /// Creates an empty playlist whose init segment is `init.mp4`.
    pub fn new(target_duration_s: u32) -> Self {
        Self {
            target_duration_s,
            map_uri: "init.mp4".into(),
            total_s: 0.0,
            body: String::new(),
            segments: 0,
            longest_ms: 0,
        }
    }

    /// Appends a segment. `EXTINF` values are printed with 3 decimals and rounded so
    /// that their running sum tracks the exact running time (error-diffused rounding):
    /// 1000 segments of 5.994667 s add up to 5994.667 s, not 5995.000 s.
    pub fn push_segment(&mut self, uri: impl Into<String>, duration_s: f64) {
        // The packager only ever passes a few seconds; anything else (negative, NaN, infinite, a
        // day or more) is clamped rather than allowed to poison the running total (fuzzing found
        // an infinite one overflowing the target duration).
        let duration_s = if duration_s.is_finite() { duration_s.clamp(0.0, MAX_SEGMENT_S) } else { 0.0 };
        let start_ms = (self.total_s * 1000.0).round() as u64;
        self.total_s += duration_s;
        let end_ms = (self.total_s * 1000.0).round() as u64;
        let ms = end_ms - start_ms;
        self.body.push_str(&format!("#EXTINF:{}.{:03},\n{}\n", ms / 1000, ms % 1000, uri.into()));
        self.segments += 1;
        self.longest_ms = self.longest_ms.max(ms);
    }

    /// Number of segments pushed.
    pub fn len(&self) -> usize {
        self.segments
    }

    /// True before the first segment.
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Exact total duration of the pushed segments, in seconds.
    pub fn duration_s(&self) -> f64 {
        self.total_s
    }

    /// The target duration actually declared: the configured one, raised if a segment
    /// rounds to more (RFC 8216 §4.3.3.1).
    pub fn declared_target_duration(&self) -> u32 {
        self.target_duration_s.max((self.longest_ms.saturating_add(500) / 1000) as u32)
    }

    /// Renders the playlist; `ended = false` gives an `EVENT` playlist, `true` a `VOD`
    /// playlist terminated by `#EXT-X-ENDLIST`.
    pub fn render(&self, ended: bool) -> String {
        let mut s = String::with_capacity(200 + self.body.len());
        s.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
        s.push_str(&format!("#EXT-X-TARGETDURATION:{}\n", self.declared_target_duration()));
        s.push_str("#EXT-X-MEDIA-SEQUENCE:0\n");
        s.push_str(if ended { "#EXT-X-PLAYLIST-TYPE:VOD\n" } else { "#EXT-X-PLAYLIST-TYPE:EVENT\n" });
        s.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        s.push_str(&format!("#EXT-X-MAP:URI=\"{}\"\n", self.map_uri));
        s.push_str(&self.body);
        if ended {
            s.push_str("#EXT-X-ENDLIST\n");
        }
        s
    }
}

/// One entry of a master playlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// URI of the media playlist, relative to the master playlist.
    pub uri: String,
    /// `BANDWIDTH`: peak segment bit rate in bits per second.
    pub bandwidth: u64,
    /// `AVERAGE-BANDWIDTH`: average segment bit rate in bits per second.
    pub average_bandwidth: u64,
    /// `CODECS`, e.g. [`CODECS_AAC_LC`].
    pub codecs: String,
}

/// What a media playlist already lists: (segments, ended with `#EXT-X-ENDLIST`).
pub fn playlist_progress(text: &str) -> (usize, bool) {
    let segments = text.lines().filter(|l| l.starts_with("#EXTINF:")).count();
    (segments, text.lines().any(|l| l.trim() == "#EXT-X-ENDLIST"))
}

/// Renders a master playlist listing `variants` in the given order (clients start with
/// the first one).
pub fn master_playlist(variants: &[Variant]) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        s.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{}\n",
            v.bandwidth, v.average_bandwidth, v.codecs, v.uri
        ));
    }
    s
}

/// Peak segment bit rate (bits/s, rounded up) of segments given as `(bytes, seconds)`:
/// the largest bit rate of any contiguous run lasting between 0.5 and 1.5 × `target_s`.
/// Falls back to the overall average when no run qualifies (very short content).
pub fn peak_segment_bitrate(segments: &[(u64, f64)], target_s: f64) -> u64 {
    let (lo, hi) = (0.5 * target_s - 1e-9, 1.5 * target_s + 1e-9);
    let mut peak: Option<f64> = None;
    for start in 0..segments.len() {
        let (mut bytes, mut secs) = (0u64, 0.0f64);
        for &(b, d) in &segments[start..] {
            bytes += b;
            secs += d;
            if secs > hi {
                break;
            }
            if secs >= lo && secs > 0.0 {
                let rate = bytes as f64 * 8.0 / secs;
                peak = Some(peak.map_or(rate, |p: f64| p.max(rate)));
            }
        }
    }
    match peak {
        Some(p) => p.ceil() as u64,
        None => average_segment_bitrate(segments),
    }
}

/// Average segment bit rate (bits/s, rounded up): total media-segment bits divided by
/// total duration; 0 for no content.
pub fn average_segment_bitrate(segments: &[(u64, f64)]) -> u64 {
    let bytes: u64 = segments.iter().map(|s| s.0).sum();
    let secs: f64 = segments.iter().map(|s| s.1).sum();
    if secs > 0.0 { (bytes as f64 * 8.0 / secs).ceil() as u64 } else { 0 }
}

/// Streaming [`peak_segment_bitrate`] and [`average_segment_bitrate`]: the same figures,
/// computed segment by segment from a window of the last 1.5 × target seconds, so memory does
/// not grow with the number of segments.
#[derive(Debug, Clone, Default)]
pub struct BitrateMeter {
    target_s: f64,
    recent: std::collections::VecDeque<(u64, f64)>,
    peak: Option<f64>,
    bytes: u64,
    secs: f64,
    count: u64,
}

impl BitrateMeter {
    /// A meter for segments of `target_s` seconds.
    pub fn new(target_s: f64) -> Self {
        Self { target_s, ..Default::default() }
    }

    /// Adds the next segment: `bytes` long, lasting `secs`.
    pub fn push(&mut self, bytes: u64, secs: f64) {
        let (lo, hi) = (0.5 * self.target_s - 1e-9, 1.5 * self.target_s + 1e-9);
        self.bytes += bytes;
        self.secs += secs;
        self.count += 1;
        self.recent.push_back((bytes, secs));
        // Every run that ends with this segment and lasts at most `hi` (the runs the batch
        // function visits), newest first.
        let (mut b, mut d) = (0u64, 0.0f64);
        let mut keep = 0;
        for &(sb, sd) in self.recent.iter().rev() {
            b += sb;
            d += sd;
            if d > hi {
                break;
            }
            keep += 1;
            if d >= lo && d > 0.0 {
                let rate = b as f64 * 8.0 / d;
                self.peak = Some(self.peak.map_or(rate, |p| p.max(rate)));
            }
        }
        while self.recent.len() > keep.max(1) {
            self.recent.pop_front();
        }
    }

    /// Segments pushed.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Peak bit rate, as [`peak_segment_bitrate`] over every segment pushed.
    pub fn peak_bps(&self) -> u64 {
        match self.peak {
            Some(p) => p.ceil() as u64,
            None => self.average_bps(),
        }
    }

    /// Average bit rate, as [`average_segment_bitrate`] over every segment pushed.
    pub fn average_bps(&self) -> u64 {
        if self.secs > 0.0 { (self.bytes as f64 * 8.0 / self.secs).ceil() as u64 } else { 0 }
    }
}

/// Cuts a stream of [`AacFrame`]s into segments of at most `max_duration_s`.
///
/// Segments are cut at the frame boundary nearest the target that does not exceed it:
/// with 1024-sample frames at 48 kHz and a 6 s target that is 281 frames (5.995 s).
#[derive(Debug)]
pub struct Segmenter {
    sample_rate: u32,
    frames_per_segment: usize,
    pending: Vec<AacFrame>,
}

impl Segmenter {
    /// Creates a segmenter for `sample_rate` Hz and a maximum segment duration.
    pub fn new(sample_rate: u32, max_duration_s: f64) -> Self {
        let frame_s = super::aac::FRAME_SAMPLES as f64 / f64::from(sample_rate);
        let frames_per_segment = ((max_duration_s / frame_s) + 1e-9).floor().max(1.0) as usize;
        Self { sample_rate, frames_per_segment, pending: Vec::with_capacity(frames_per_segment) }
    }

    /// Frames in a full segment.
    pub fn frames_per_segment(&self) -> usize {
        self.frames_per_segment
    }

    /// Adds frames; returns every segment completed, as `(frames, duration in seconds)`.
    pub fn push(&mut self, frames: Vec<AacFrame>) -> Vec<(Vec<AacFrame>, f64)> {
        let mut done = Vec::new();
        for f in frames {
            self.pending.push(f);
            if self.pending.len() == self.frames_per_segment {
                done.push(self.take());
            }
        }
        done
    }

    /// Returns the final, possibly shorter, segment if any frames are left.
    pub fn finish(&mut self) -> Option<(Vec<AacFrame>, f64)> {
        (!self.pending.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> (Vec<AacFrame>, f64) {
        let frames = std::mem::replace(&mut self.pending, Vec::with_capacity(self.frames_per_segment));
        let samples: u64 = frames.iter().map(|f| u64::from(f.duration)).sum();
        (frames, samples as f64 / f64::from(self.sample_rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u64) -> AacFrame {
        AacFrame { data: vec![0; 10], pts: i * 1024, duration: 1024 }
    }

    #[test]
    fn renders_event_then_vod() {
        let mut p = MediaPlaylist::new(6);
        p.push_segment("seg-00000.m4s", 5.994_666_666);
        let event = p.render(false);
        assert_eq!(
            event,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:5.995,\nseg-00000.m4s\n"
        );
        p.push_segment("seg-00001.m4s", 1.5);
        let vod = p.render(true);
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(vod.ends_with("#EXTINF:1.500,\nseg-00001.m4s\n#EXT-X-ENDLIST\n"));
        assert!(!vod.contains("EVENT"));
    }

    #[test]
    fn extinf_rounding_does_not_drift() {
        let mut p = MediaPlaylist::new(6);
        let d = 281.0 * 1024.0 / 48_000.0;
        for i in 0..1000 {
            p.push_segment(format!("s{i}"), d);
        }
        let extinf_ms: Vec<u64> = p
            .render(true)
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|v| v.trim_end_matches(',').replace('.', "").parse().unwrap())
            .collect();
        assert_eq!(extinf_ms.len(), 1000);
        assert_eq!(extinf_ms.iter().sum::<u64>(), (d * 1000.0 * 1000.0).round() as u64);
        assert!(extinf_ms.iter().all(|&ms| ms == 5994 || ms == 5995));
        assert_eq!(p.declared_target_duration(), 6);
    }

    #[test]
    fn target_duration_grows_for_long_segments() {
        let mut p = MediaPlaylist::new(6);
        p.push_segment("a", 7.6);
        assert_eq!(p.declared_target_duration(), 8);
        let mut q = MediaPlaylist::new(6);
        q.push_segment("a", 6.4);
        assert_eq!(q.declared_target_duration(), 6);
    }

    #[test]
    fn master_lists_variants() {
        let m = master_playlist(&[Variant {
            uri: "a64/index.m3u8".into(),
            bandwidth: 70_000,
            average_bandwidth: 67_000,
            codecs: CODECS_AAC_LC.into(),
        }]);
        assert_eq!(
            m,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=70000,AVERAGE-BANDWIDTH=67000,CODECS=\"mp4a.40.2\"\na64/index.m3u8\n"
        );
    }

    #[test]
    fn bitrates_follow_the_spec() {
        // 6 s segments: each one alone is a qualifying run; pairs (12 s) are too long.
        let segs = [(48_000, 6.0), (60_000, 6.0), (45_000, 6.0)];
        assert_eq!(peak_segment_bitrate(&segs, 6.0), 80_000);
        assert_eq!(average_segment_bitrate(&segs), 68_000);
        // A 1 s tail only counts together with its predecessor (7 s <= 9 s).
        let tail = [(48_000, 6.0), (30_000, 1.0)];
        assert_eq!(peak_segment_bitrate(&tail, 6.0), 89_143);
        // Nothing qualifies: fall back to the average.
        assert_eq!(peak_segment_bitrate(&[(1000, 1.0)], 6.0), 8000);
        assert_eq!(average_segment_bitrate(&[]), 0);
    }

    #[test]
    fn segmenter_never_exceeds_target() {
        let mut s = Segmenter::new(48_000, 6.0);
        assert_eq!(s.frames_per_segment(), 281);
        let out = s.push((0..600).map(frame).collect());
        assert_eq!(out.len(), 2);
        for (frames, d) in &out {
            assert_eq!(frames.len(), 281);
            assert!(*d <= 6.0 && (*d - 5.994_666).abs() < 1e-3);
        }
        assert_eq!(out[1].0[0].pts, 281 * 1024);
        let (last, d) = s.finish().unwrap();
        assert_eq!(last.len(), 38);
        assert!((d - 38.0 * 1024.0 / 48_000.0).abs() < 1e-12);
        assert!(s.finish().is_none());
        // Exactly representable targets are reached, not undershot.
        assert_eq!(Segmenter::new(48_000, 1024.0 * 3.0 / 48_000.0).frames_per_segment(), 3);
    }

    #[test]
    fn bitrate_meter_matches_the_batch_functions() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let n = rng.random_range(1..40);
            let segs: Vec<(u64, f64)> =
                (0..n).map(|_| (rng.random_range(1_000..200_000), rng.random_range(0.2..6.0))).collect();
            let mut m = BitrateMeter::new(6.0);
            segs.iter().for_each(|&(b, d)| m.push(b, d));
            let (peak, avg) = (peak_segment_bitrate(&segs, 6.0), average_segment_bitrate(&segs));
            assert!(m.peak_bps().abs_diff(peak) <= 1, "{segs:?}: {} vs {peak}", m.peak_bps());
            assert_eq!(m.average_bps(), avg);
            assert_eq!(m.count(), n as u64);
            assert!(m.recent.len() <= 20, "window grew to {}", m.recent.len());
        }
    }
}
