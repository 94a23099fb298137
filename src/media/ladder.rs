//! Streaming HLS writer for one audio rendition, plus the default bit-rate ladder.
//!
//! A [`RenditionWriter`] owns an [`AacEncoder`], a [`Segmenter`] and a [`MediaPlaylist`]
//! and hands every finished file to a [`SegmentSink`] (the caller decides where bytes go,
//! e.g. atomic writes into `<rung>/`). Files emitted, in order:
//!
//! 1. `init.mp4` — when the writer is created;
//! 2. `seg-00000.m4s`, `seg-00001.m4s`, … — each followed by a re-rendered `index.m3u8`
//!    (`EVENT` playlist), so a player can start while the recording is still processed;
//! 3. a final `index.m3u8` (`VOD`, `#EXT-X-ENDLIST`) from [`RenditionWriter::finish`].
//!
//! Durations (`EXTINF`, ffprobe) are the real length rounded up to a whole AAC frame
//! (at most 21.3 ms of trailing silence; 75 s of input reports 75.008 s).
//!
//! Memory is bounded by one segment of frames plus the playlist text (~40 bytes per
//! segment), whatever the input length. The master playlist is left to the caller:
//! build it from [`RenditionStats::variant`] after `finish` (measured bit rates) or from
//! [`RenditionWriter::estimated_variant`] while the renditions are still growing.

use std::io;

use serde::{Deserialize, Serialize};

use super::aac::{AacEncoder, AacFrame, FRAME_SAMPLES};
use super::fmp4::{EsdsBitrate, init_segment_with_priming, media_segment};
use super::hls::{BitrateMeter, CODECS_AAC_LC, MediaPlaylist, Segmenter, Variant};
use super::pkg_error::PackError;

/// Name of the init segment inside a rendition.
pub const INIT_NAME: &str = "init.mp4";
/// Name of the media playlist inside a rendition.
pub const PLAYLIST_NAME: &str = "index.m3u8";
/// Segment target and hard maximum, in seconds.
pub const TARGET_DURATION_S: u32 = 6;

/// Receives the files of a rendition: `name` is a bare file name (`init.mp4`,
/// `seg-00000.m4s`, `index.m3u8`). Implemented for any `FnMut(&str, &[u8]) -> io::Result<()>`.
pub trait SegmentSink {
    /// Stores `bytes` under `name`, replacing any previous file of that name.
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
}

impl<F: FnMut(&str, &[u8]) -> io::Result<()>> SegmentSink for F {
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self(name, bytes)
    }
}

/// One rung of the ladder: AAC-LC at a constant bit rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Directory / identifier, e.g. `a64`.
    pub name: String,
    /// CBR target in bits per second.
    pub bitrate_bps: u32,
    /// Output channels (1 or 2); the source is down- or up-mixed if it differs.
    pub channels: u16,
}

impl Rung {
    /// Shorthand constructor.
    pub fn new(name: &str, bitrate_bps: u32, channels: u16) -> Self {
        Self { name: name.into(), bitrate_bps, channels }
    }
}

/// The default audio ladder (AAC-LC only, never HE-AAC):
///
/// | rung   | stereo source      | mono source      |
/// |--------|--------------------|------------------|
/// | `a64`  | 64 kb/s stereo     | 64 kb/s mono     |
/// | `a128` | 128 kb/s stereo    | 96 kb/s mono     |
///
/// A mono source keeps mono rungs (no fake stereo); 96 kb/s is already transparent for
/// mono AAC-LC, so the top rung keeps its name but drops to 96 kb/s.
pub fn default_ladder(source_channels: u16) -> Vec<Rung> {
    let ch = if source_channels >= 2 { 2 } else { 1 };
    let top = if ch == 2 { 128_000 } else { 96_000 };
    vec![Rung::new("a64", 64_000, ch), Rung::new("a128", top, ch)]
}

/// Running statistics of a rendition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RenditionStats {
    /// Rung name.
    pub name: String,
    /// Configured CBR target in bits per second.
    pub bitrate_bps: u32,
    /// Output channels.
    pub channels: u16,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Size of `init.mp4`.
    pub init_bytes: u64,
    /// Media segments written so far.
    pub segments: u64,
    /// Sum of media segment sizes.
    pub media_bytes: u64,
    /// Sum of segment durations in seconds (real audio rounded up to whole AAC frames).
    pub duration_s: f64,
    /// Peak segment bit rate (HLS `BANDWIDTH`).
    pub peak_bps: u64,
    /// Average segment bit rate (HLS `AVERAGE-BANDWIDTH`).
    pub average_bps: u64,
}

impl RenditionStats {
    /// Master-playlist entry with the measured bit rates.
    pub fn variant(&self, uri: impl Into<String>) -> Variant {
        Variant {
            uri: uri.into(),
            bandwidth: self.peak_bps,
            average_bandwidth: self.average_bps,
            codecs: CODECS_AAC_LC.into(),
        }
    }
}

/// Streams planar audio into one HLS rendition (see the module docs for the file flow).
pub struct RenditionWriter<S: SegmentSink> {
    source_channels: usize,
    encoder: AacEncoder,
    segmenter: Segmenter,
    playlist: MediaPlaylist,
    sink: S,
    next_sequence: u32,
    stats: RenditionStats,
    rates: BitrateMeter,
    finished: bool,
}

impl<S: SegmentSink> RenditionWriter<S> {
    /// Creates the encoder for `rung` and immediately writes `init.mp4` to `sink`.
    ///
    /// `source_channels` is the channel count of the planar chunks that will be pushed.
    pub fn new(rung: &Rung, sample_rate: u32, source_channels: u16, mut sink: S) -> Result<Self, PackError> {
        if !(1..=2).contains(&source_channels) {
            return Err(PackError::Config(format!("unsupported source channel count {source_channels}")));
        }
        let encoder = AacEncoder::new(sample_rate, rung.channels, rung.bitrate_bps)?;
        let init = init_segment_with_priming(
            sample_rate,
            rung.channels,
            sample_rate,
            &encoder.audio_specific_config(),
            EsdsBitrate::cbr(rung.bitrate_bps),
            encoder.residual_priming(),
        );
        write(&mut sink, INIT_NAME, &init)?;
        let stats = RenditionStats {
            name: rung.name.clone(),
            bitrate_bps: rung.bitrate_bps,
            channels: rung.channels,
            sample_rate,
            init_bytes: init.len() as u64,
            ..Default::default()
        };
        Ok(Self {
            source_channels: usize::from(source_channels),
            encoder,
            segmenter: Segmenter::new(sample_rate, f64::from(TARGET_DURATION_S)),
            playlist: MediaPlaylist::new(TARGET_DURATION_S),
            sink,
            next_sequence: 0,
            stats,
            rates: BitrateMeter::new(f64::from(TARGET_DURATION_S)),
            finished: false,
        })
    }

    /// Encodes a planar chunk (any length, `source_channels` buffers) and writes every
    /// segment it completes.
    pub fn push(&mut self, planar: &[Vec<f32>]) -> Result<(), PackError> {
        if self.finished {
            return Err(PackError::Finished);
        }
        if planar.len() != self.source_channels {
            return Err(PackError::ChannelMismatch { expected: self.source_channels, got: planar.len() });
        }
        let out_channels = usize::from(self.encoder.channels());
        let frames = if out_channels == self.source_channels {
            self.encoder.push(planar)?
        } else {
            self.encoder.push(&remix(planar, out_channels)?)?
        };
        self.emit(frames)
    }

    /// Flushes the encoder, writes the last segment and the final `VOD` playlist, and
    /// returns the statistics. The writer cannot be used afterwards.
    pub fn finish(&mut self) -> Result<RenditionStats, PackError> {
        if self.finished {
            return Err(PackError::Finished);
        }
        self.finished = true;
        let frames = self.encoder.finish()?;
        self.emit(frames)?;
        if let Some((frames, duration)) = self.segmenter.finish() {
            self.write_segment(&frames, duration)?;
        }
        write(&mut self.sink, PLAYLIST_NAME, self.playlist.render(true).as_bytes())?;
        Ok(self.stats.clone())
    }

    /// Statistics so far.
    pub fn stats(&self) -> &RenditionStats {
        &self.stats
    }

    /// Master-playlist entry before any measurement, for a master written while the
    /// rendition grows: the CBR rate plus the fMP4 overhead (8 `trun` bytes per frame and
    /// ~200 bytes of `styp`/`moof`/`mdat` headers per segment).
    pub fn estimated_variant(&self, uri: impl Into<String>) -> Variant {
        let sr = u64::from(self.stats.sample_rate);
        let overhead = 64 * sr / FRAME_SAMPLES as u64 + 200 * 8 / u64::from(TARGET_DURATION_S);
        let avg = u64::from(self.stats.bitrate_bps) + overhead;
        Variant { uri: uri.into(), bandwidth: avg * 105 / 100, average_bandwidth: avg, codecs: CODECS_AAC_LC.into() }
    }

    /// Consumes the writer and returns the sink.
    pub fn into_sink(self) -> S {
        self.sink
    }

    fn emit(&mut self, frames: Vec<AacFrame>) -> Result<(), PackError> {
        for (frames, duration) in self.segmenter.push(frames) {
            self.write_segment(&frames, duration)?;
            write(&mut self.sink, PLAYLIST_NAME, self.playlist.render(false).as_bytes())?;
        }
        Ok(())
    }

    fn write_segment(&mut self, frames: &[AacFrame], duration_s: f64) -> Result<(), PackError> {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        // mfhd sequence numbers start at 1; file names and EXT-X-MEDIA-SEQUENCE at 0.
        let bytes = media_segment(seq + 1, frames[0].pts, frames);
        let uri = format!("seg-{seq:05}.m4s");
        write(&mut self.sink, &uri, &bytes)?;
        self.playlist.push_segment(uri, duration_s);
        self.stats.media_bytes += bytes.len() as u64;
        self.stats.duration_s += duration_s;
        self.stats.segments += 1;
        self.rates.push(bytes.len() as u64, duration_s);
        self.stats.peak_bps = self.rates.peak_bps();
        self.stats.average_bps = self.rates.average_bps();
        Ok(())
    }
}

fn write<S: SegmentSink>(sink: &mut S, name: &str, bytes: &[u8]) -> Result<(), PackError> {
    sink.write_file(name, bytes).map_err(|source| PackError::Sink { name: name.into(), source })
}

/// Converts between mono and stereo: stereo → mono averages, mono → stereo duplicates.
fn remix(planar: &[Vec<f32>], out_channels: usize) -> Result<Vec<Vec<f32>>, PackError> {
    match (planar, out_channels) {
        ([l, r], 1) => {
            if l.len() != r.len() {
                return Err(PackError::RaggedChannels);
            }
            Ok(vec![l.iter().zip(r).map(|(a, b)| 0.5 * (a + b)).collect()])
        }
        ([m], 2) => Ok(vec![m.clone(), m.clone()]),
        _ => Err(PackError::Config(format!("cannot remix {} to {out_channels} channels", planar.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Files = BTreeMap<String, Vec<u8>>;

    fn run(rung: &Rung, source_channels: u16, seconds: f64) -> (Files, Vec<String>, RenditionStats) {
        let mut files = Files::new();
        let mut order = Vec::new();
        let stats = {
            let sink = |name: &str, bytes: &[u8]| {
                order.push(name.to_string());
                files.insert(name.to_string(), bytes.to_vec());
                Ok(())
            };
            let mut w = RenditionWriter::new(rung, 48_000, source_channels, sink).unwrap();
            let total = (seconds * 48_000.0) as usize;
            let mut pos = 0;
            while pos < total {
                let n = (7919 + pos % 3000).min(total - pos);
                let ch: Vec<f32> = (pos..pos + n).map(|i| (i as f32 * 0.03).sin() * 0.3).collect();
                w.push(&vec![ch; usize::from(source_channels)]).unwrap();
                pos += n;
            }
            w.finish().unwrap()
        };
        (files, order, stats)
    }

    #[test]
    fn default_ladder_shapes() {
        let stereo = default_ladder(2);
        assert_eq!((stereo[0].bitrate_bps, stereo[0].channels), (64_000, 2));
        assert_eq!((stereo[1].bitrate_bps, stereo[1].channels), (128_000, 2));
        let mono = default_ladder(1);
        assert_eq!((mono[0].bitrate_bps, mono[0].channels), (64_000, 1));
        assert_eq!((mono[1].name.as_str(), mono[1].bitrate_bps, mono[1].channels), ("a128", 96_000, 1));
    }

    #[test]
    fn writes_init_segments_and_playlists_in_order() {
        let rung = Rung::new("a64", 64_000, 2);
        let (files, order, stats) = run(&rung, 2, 13.0);
        // 13 s = 610 frames (609.375 rounded up) = 281 + 281 + 48.
        let expected = "init.mp4 seg-00000.m4s index.m3u8 seg-00001.m4s index.m3u8 seg-00002.m4s index.m3u8";
        assert_eq!(order.join(" "), expected);
        let playlist = String::from_utf8(files["index.m3u8"].clone()).unwrap();
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.ends_with("#EXT-X-ENDLIST\n"));
        assert!(playlist.contains("#EXTINF:1.024,\nseg-00002.m4s"));
        assert_eq!(stats.segments, 3);
        assert!((stats.duration_s - 610.0 * 1024.0 / 48_000.0).abs() < 1e-9);
        let seg_bytes = |i: u32| files[&format!("seg-{i:05}.m4s")].len() as u64;
        assert_eq!(stats.media_bytes, (0..3).map(seg_bytes).sum::<u64>());
        assert_eq!(stats.init_bytes, files["init.mp4"].len() as u64);
        // CBR 64 kb/s plus a few percent of fMP4 overhead.
        assert!((64_000..72_000).contains(&stats.average_bps), "{}", stats.average_bps);
        assert!(stats.peak_bps >= stats.average_bps);
        let json = serde_json::to_string(&stats).unwrap();
        assert_eq!(serde_json::from_str::<RenditionStats>(&json).unwrap(), stats);
    }

    #[test]
    fn remixes_and_rejects_misuse() {
        let rung = Rung::new("m", 64_000, 1);
        let (_, _, stats) = run(&rung, 2, 1.0);
        assert_eq!(stats.channels, 1);
        let up = remix(&[vec![0.5, -0.5]], 2).unwrap();
        assert_eq!(up, vec![vec![0.5, -0.5], vec![0.5, -0.5]]);
        assert_eq!(remix(&[vec![1.0], vec![0.0]], 1).unwrap(), vec![vec![0.5]]);

        let mut w = RenditionWriter::new(&rung, 48_000, 1, |_: &str, _: &[u8]| Ok(())).unwrap();
        assert!(matches!(w.push(&[vec![0.0], vec![0.0]]), Err(PackError::ChannelMismatch { .. })));
        w.finish().unwrap();
        assert!(matches!(w.finish(), Err(PackError::Finished)));
        let failing = |_: &str, _: &[u8]| Err(io::Error::other("disk full"));
        let err = RenditionWriter::new(&rung, 48_000, 1, failing).err().unwrap();
        assert_eq!(err.to_string(), "failed to write init.mp4: disk full");
    }

    #[test]
    fn estimated_variant_is_close_to_measured() {
        let rung = Rung::new("a128", 128_000, 2);
        let w = RenditionWriter::new(&rung, 48_000, 2, |_: &str, _: &[u8]| Ok(())).unwrap();
        let v = w.estimated_variant("a128/index.m3u8");
        assert_eq!(v.average_bandwidth, 128_000 + 3000 + 266);
        assert!(v.bandwidth > v.average_bandwidth);
    }
}
