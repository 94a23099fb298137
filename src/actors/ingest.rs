//! The ingest pipeline's step executors: where the pure media code meets blob storage.
//!
//! - `probe`: reads the stored upload's container, codec, duration and tags. An unsupported or
//!   audio-less file fails permanently (`unsupported_audio`, `no_audio`, `limit_exceeded`): the job
//!   goes `dead` with that code at once.
//! - `transcode`: two streaming passes over the upload. Pass 1 decodes, resamples to 48 kHz and
//!   measures loudness (ITU-R BS.1770) — over the whole file, or for sources longer than
//!   `transcode.excerpt-loudness-above` (20 min) over 48 evenly spread 10 s excerpts reached by
//!   seeking, so a 3-hour upload is playable in about a second instead of after a full decode (the
//!   output's loudness is still metered over every sample and recorded). Pass 2 decodes again, applies the gain to −16 LUFS through a
//!   true-peak limiter at −1 dBTP, and feeds every rung of the ladder from the same samples (AAC-LC
//!   in CMAF fMP4, 6 s segments), streaming the waveform JSON to a staging file on the way. Memory
//!   is flat in the duration: loudness gating uses a histogram, bit rates a sliding window, and
//!   the step output keeps per-rendition totals, not per-segment lists. Playlists are `EVENT` while they
//!   grow and the master playlist exists from the first segments on, so listeners can start within
//!   seconds; at the end they become `VOD` and the master's bandwidths are the measured ones.
//!
//! Memoization is per step: a transcode interrupted half-way runs again from the start and
//! rewrites the same keys (`hls/<media>/...`), which is idempotent.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use crate::config::TranscodeOptions;
use crate::engine::{JobKind, Registry, StepContext, StepError, StepOutput};
use crate::media::decode::Decoder;
use crate::media::hls::{Variant, master_playlist};
use crate::media::ladder::{RenditionWriter, SegmentSink, default_ladder};
use crate::media::loudness::{Limiter, LoudnessMeter, gain_to_target};
use crate::media::probe::probe;
use crate::media::resample::Resampler;
use crate::media::waveform::WaveformWriter;
use crate::storage::BlobStore;

/// The loudness every rendition is normalised to (EBU R128 / podcast practice).
pub const TARGET_LUFS: f64 = -16.0;
/// The true-peak ceiling of every rendition.
pub const CEILING_DBTP: f64 = -1.0;
/// The sample rate of every rendition.
pub const OUTPUT_RATE: u32 = 48_000;
/// Most gain applied to a quiet source: beyond this, noise would be amplified as much as speech.
const MAX_GAIN_DB: f64 = 30.0;
/// Look-ahead of the limiter.
const LIMITER_LOOKAHEAD_MS: f64 = 5.0;
/// Predicted limiting beyond this many dB triggers the corrective simulation pass.
const HEAVY_LIMITING_DB: f64 = 1.0;
/// Most loudness made up after the simulation pass.
const MAX_MAKEUP_DB: f64 = 3.0;
/// Waveform resolution.
const WAVEFORM_PIXELS_PER_SECOND: u32 = 10;

/// Registers the `ingest` job kind and its stages.
///
/// With `models.speech` (the default) an upload is also transcribed and indexed: `transcribe`
/// runs beside `transcode` once `probe` is done, and `embed` follows `transcribe`.
pub fn register(
    r: &mut Registry,
    config: &crate::config::Config,
    models: &Arc<super::speech::Models>,
    index: &Arc<crate::index::Index>,
) {
    let mut steps: Vec<(&str, &str, &[&str])> = vec![("probe", "probe", &[]), ("transcode", "transcode", &["probe"])];
    if config.models.speech {
        steps.push(("transcribe", "transcribe", &["probe"]));
        steps.push(("embed", "embed", &["transcribe"]));
    }
    r.add_kind(JobKind::new("ingest", &steps));
    // `lectern reprocess --step S`: S and what depends on it.
    r.add_kind(JobKind::new("reprocess-transcode", &[("transcode", "transcode", &[])]));
    if config.models.speech {
        r.add_kind(JobKind::new(
            "reprocess-transcribe",
            &[("transcribe", "transcribe", &[]), ("embed", "embed", &["transcribe"])],
        ));
        r.add_kind(JobKind::new("reprocess-embed", &[("embed", "embed", &[])]));
    }
    r.add_executor("probe", Arc::new(run_probe));
    let opts = config.transcode.clone();
    r.add_executor("transcode", Arc::new(move |ctx: &StepContext| run_transcode(ctx, &opts)));
    let m = models.clone();
    r.add_executor("transcribe", Arc::new(move |ctx: &StepContext| super::speech::run_transcribe(ctx, &m)));
    let (m, ix) = (models.clone(), index.clone());
    r.add_executor("embed", Arc::new(move |ctx: &StepContext| super::speech::run_embed(ctx, &m, &ix)));
}

/// The stored upload of the step's media, as a local file (shared with the speech steps).
pub(super) fn source(ctx: &StepContext) -> Result<(String, PathBuf), StepError> {
    let media =
        ctx.step.media_id.clone().ok_or_else(|| StepError::permanent("invalid_job", "this step needs a media id"))?;
    let key = format!("media/{media}/source");
    let path =
        ctx.blobs.local_path(&key).filter(|p| p.is_file()).ok_or_else(|| {
            StepError::permanent("source_missing", format!("the upload of {media} is not in storage"))
        })?;
    Ok((media, path))
}

pub(super) fn media_err(e: crate::media::Error) -> StepError {
    StepError { transient: e.is_transient(), code: e.code().to_string(), message: e.to_string() }
}

fn run_probe(ctx: &StepContext) -> Result<StepOutput, StepError> {
    let (_, path) = source(ctx)?;
    let info = probe(&path).map_err(media_err)?;
    ctx.checkpoint()?;
    let output = serde_json::to_value(&info).map_err(|e| StepError::permanent("internal", e.to_string()))?;
    Ok(StepOutput { output: Some(output), ..Default::default() })
}

/// Folds any channel layout into mono or stereo: mono stays mono, more channels are averaged
/// into left (even channels) and right (odd channels).
fn fold(planar: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    if planar.len() <= 2 {
        return planar;
    }
    let n = planar[0].len();
    let mut out = vec![vec![0.0f32; n], vec![0.0f32; n]];
    let counts = [planar.len().div_ceil(2) as f32, (planar.len() / 2) as f32];
    for (i, ch) in planar.iter().enumerate() {
        for (o, s) in out[i % 2].iter_mut().zip(ch) {
            *o += s / counts[i % 2];
        }
    }
    out
}

/// Decodes the whole file once, resampled to 48 kHz and folded, handing each chunk to `f`.
fn stream(
    ctx: &StepContext,
    dec: &mut Decoder,
    rs: &mut Resampler,
    mut f: impl FnMut(&[Vec<f32>]) -> Result<(), StepError>,
) -> Result<(), StepError> {
    while let Some(chunk) = dec.next_chunk().map_err(media_err)? {
        ctx.checkpoint()?;
        let out = rs.process(&fold(chunk.samples));
        if !out.is_empty() && !out[0].is_empty() {
            f(&out)?;
        }
    }
    let tail = rs.flush();
    if !tail.is_empty() && !tail[0].is_empty() {
        f(&tail)?;
    }
    Ok(())
}

/// Writes a rendition's files under `hls/<media>/<rung>/`.
///
/// A transcode that runs again (after a crash, a release or a retry) starts from the first
/// segment, while players may be following the playlist the earlier run published. RFC 8216
/// §6.2.1 forbids an `EVENT` playlist to lose segments, so the sink keeps the published playlist
/// until the new run's lists at least as many segments (the segments themselves are rewritten
/// byte-identical, which the store leaves untouched). The final `VOD` playlist is always written.
struct BlobSink {
    blobs: std::sync::Arc<dyn BlobStore>,
    prefix: String,
    segments: usize,
    /// Segments in the playlist players can see now.
    published: usize,
}

impl BlobSink {
    fn new(blobs: std::sync::Arc<dyn BlobStore>, prefix: String) -> Self {
        let published = blobs
            .get(&format!("{prefix}/index.m3u8"))
            .ok()
            .map(|b| crate::media::hls::playlist_progress(&String::from_utf8_lossy(&b)).0)
            .unwrap_or(0);
        Self { blobs, prefix, segments: 0, published }
    }
}

impl SegmentSink for BlobSink {
    fn write_file(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        if name.ends_with(".m4s") {
            self.segments += 1;
        }
        if name == "index.m3u8" {
            let (listed, ended) = crate::media::hls::playlist_progress(&String::from_utf8_lossy(bytes));
            if listed < self.published && !ended {
                return Ok(()); // never shrink what players follow
            }
            self.published = listed;
        }
        self.blobs.put(&format!("{}/{name}", self.prefix), bytes).map(|_| ()).map_err(std::io::Error::other)
    }
}

/// The waveform JSON, streamed to a staging file next to the store (memory stays flat whatever the
/// duration) and adopted under its key at the end; stores without a local disk get it from memory.
enum WaveformFile {
    Staged(WaveformWriter<std::io::BufWriter<std::fs::File>>, PathBuf, PartFile),
    Memory(WaveformWriter<Vec<u8>>),
}

/// Removes a staging file when the step ends without adopting it (cancelled, failed, panicked).
struct PartFile(PathBuf);

impl Drop for PartFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl WaveformFile {
    fn create(ctx: &StepContext, media: &str) -> Result<Self, StepError> {
        let Some(dir) = ctx.blobs.staging_dir() else {
            return WaveformWriter::new(OUTPUT_RATE, WAVEFORM_PIXELS_PER_SECOND, Vec::new())
                .map(Self::Memory)
                .map_err(pack_err);
        };
        // One name per media: a crashed attempt's leftover is truncated by the next one.
        std::fs::create_dir_all(&dir).map_err(pack_err)?;
        let path = dir.join(format!("waveform-{media}.json.part"));
        let file = std::fs::File::create(&path).map_err(pack_err)?;
        WaveformWriter::new(OUTPUT_RATE, WAVEFORM_PIXELS_PER_SECOND, std::io::BufWriter::new(file))
            .map(|w| Self::Staged(w, path.clone(), PartFile(path)))
            .map_err(pack_err)
    }

    fn push(&mut self, s: &[Vec<f32>]) -> Result<(), StepError> {
        match self {
            Self::Staged(w, ..) => w.push(s),
            Self::Memory(w) => w.push(s),
        }
        .map_err(pack_err)
    }

    fn finish(self, ctx: &StepContext, key: &str) -> Result<(), StepError> {
        match self {
            Self::Staged(w, path, _part) => {
                let file = w.finish().map_err(pack_err)?.into_inner().map_err(|e| pack_err(e.error()))?;
                file.sync_all().map_err(pack_err)?;
                ctx.blobs.adopt_file(key, &path).map_err(pack_err)
            }
            Self::Memory(w) => ctx.blobs.put(key, &w.finish().map_err(pack_err)?).map(|_| ()).map_err(pack_err),
        }
    }
}

fn pack_err(e: impl std::fmt::Display) -> StepError {
    StepError::transient("packaging_failed", e.to_string())
}

/// Which audio the loudness passes look at.
#[derive(Debug, Clone, PartialEq)]
enum Measured {
    /// Every sample.
    Whole,
    /// Excerpts of `len_s` seconds starting at these times.
    Excerpts { starts_s: Vec<f64>, len_s: f64 },
}

impl Measured {
    /// Excerpts for a source of `duration_s` when it is long enough, spread evenly with the first
    /// and last ones clear of the ends (intros and outros are rarely typical).
    fn plan(duration_s: Option<f64>, opts: &TranscodeOptions) -> Self {
        let len_s = opts.loudness_excerpt.as_secs_f64();
        let n = opts.loudness_excerpts.max(1);
        match duration_s {
            Some(d) if d > opts.excerpt_loudness_above.as_secs_f64() && d > 2.0 * f64::from(n) * len_s => {
                let step = d / f64::from(n);
                Self::Excerpts { starts_s: (0..n).map(|i| (f64::from(i) + 0.5) * step - len_s / 2.0).collect(), len_s }
            }
            _ => Self::Whole,
        }
    }
}

/// Runs `f` over the measured audio (48 kHz, folded): `f(None)` before each excerpt (and once
/// before the whole file), then `f(Some(samples))`. A failed seek is reported as `Ok(false)`, and the caller
/// falls back to the whole file.
fn measure(
    ctx: &StepContext,
    dec: &mut Decoder,
    rs: &mut Resampler,
    what: &Measured,
    mut f: impl FnMut(Option<&[Vec<f32>]>),
) -> Result<bool, StepError> {
    dec.rewind().map_err(media_err)?;
    rs.reset();
    let Measured::Excerpts { starts_s, len_s } = what else {
        f(None);
        stream(ctx, dec, rs, |s| {
            f(Some(s));
            Ok(())
        })?;
        return Ok(true);
    };
    let want = (len_s * f64::from(OUTPUT_RATE)) as usize;
    for &start in starts_s {
        if dec.seek_coarse(start).is_err() {
            return Ok(false);
        }
        rs.reset();
        f(None);
        let mut got = 0;
        while got < want {
            ctx.checkpoint()?;
            let Some(chunk) = dec.next_chunk().map_err(media_err)? else { break };
            let out = rs.process(&fold(chunk.samples));
            if let Some(n) = out.first().map(Vec::len).filter(|&n| n > 0) {
                let take = n.min(want - got);
                f(Some(&out.iter().map(|c| c[..take].to_vec()).collect::<Vec<_>>()));
                got += take;
            }
        }
    }
    Ok(true)
}

fn run_transcode(ctx: &StepContext, opts: &TranscodeOptions) -> Result<StepOutput, StepError> {
    let (media, path) = source(ctx)?;
    let mut dec = Decoder::open(&path).map_err(media_err)?;
    let channels = dec.channels().min(2);
    let mut rs = Resampler::new(dec.sample_rate(), OUTPUT_RATE, channels).map_err(media_err)?;
    let duration_s = dec.declared_frames().map(|f| f as f64 / f64::from(dec.sample_rate().max(1)));

    // Pass 1: measure, on excerpts of a long source (falling back to every sample when the
    // container cannot seek).
    let mut what = Measured::plan(duration_s, opts);
    let mut input = LoudnessMeter::new(OUTPUT_RATE, channels);
    if !measure(ctx, &mut dec, &mut rs, &what, |s| s.into_iter().for_each(|s| input.push(s)))? {
        what = Measured::Whole;
        input = LoudnessMeter::new(OUTPUT_RATE, channels);
        measure(ctx, &mut dec, &mut rs, &what, |s| s.into_iter().for_each(|s| input.push(s)))?;
    }
    let input_lufs = input.integrated_lufs();
    let mut gain_db = input_lufs.map(|l| gain_to_target(l, TARGET_LUFS).min(MAX_GAIN_DB)).unwrap_or(0.0);
    let mut passes = 2;
    // Heavy limiting (peaks far above the ceiling after the gain) costs loudness: squeezing 18 dB
    // of crest into 15 dB loses about 1 LU. Simulate the limiter once (on the same audio) and make
    // up the shortfall.
    if input_lufs.is_some() && input.true_peak_dbtp() + gain_db > CEILING_DBTP + HEAVY_LIMITING_DB {
        let new_limiter = || Limiter::new(OUTPUT_RATE, channels, gain_db, CEILING_DBTP, LIMITER_LOOKAHEAD_MS);
        let mut sim = new_limiter();
        let mut measured = LoudnessMeter::new(OUTPUT_RATE, channels);
        measure(ctx, &mut dec, &mut rs, &what, |s| match s {
            Some(s) => measured.push(&sim.process(s)),
            // Each excerpt gets a fresh limiter; the previous one's delayed tail is measured.
            None => measured.push(&std::mem::replace(&mut sim, new_limiter()).flush()),
        })?;
        measured.push(&sim.flush());
        if let Some(out) = measured.integrated_lufs() {
            gain_db += (TARGET_LUFS - out).clamp(0.0, MAX_MAKEUP_DB);
        }
        passes += 1;
    }

    // Pass 2: normalise, limit, encode every rung from the same samples.
    dec.rewind().map_err(media_err)?;
    rs.reset();
    let mut limiter = Limiter::new(OUTPUT_RATE, channels, gain_db, CEILING_DBTP, LIMITER_LOOKAHEAD_MS);
    let mut output = LoudnessMeter::new(OUTPUT_RATE, channels);
    let mut waveform = WaveformFile::create(ctx, &media)?;
    let ladder = default_ladder(channels);
    let mut writers = ladder
        .iter()
        .map(|rung| {
            let sink = BlobSink::new(ctx.blobs.clone(), format!("hls/{media}/{}", rung.name));
            RenditionWriter::new(rung, OUTPUT_RATE, channels, sink).map_err(pack_err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let master_key = format!("hls/{media}/master.m3u8");
    let mut master_written = false;
    let mut feed = |s: &[Vec<f32>], writers: &mut Vec<RenditionWriter<BlobSink>>| -> Result<(), StepError> {
        output.push(s);
        waveform.push(s)?;
        for w in writers.iter_mut() {
            w.push(s).map_err(pack_err)?;
        }
        // Playable while transcoding: a master playlist as soon as every rung has a segment.
        if !master_written && writers.iter().all(|w| w.stats().segments > 0) {
            let variants: Vec<Variant> = ladder
                .iter()
                .zip(writers.iter())
                .map(|(r, w)| w.estimated_variant(format!("{}/index.m3u8", r.name)))
                .collect();
            ctx.blobs.put(&master_key, master_playlist(&variants).as_bytes()).map_err(pack_err)?;
            master_written = true;
            ctx.emit("media.ready", json!({"media_id": media, "hls": format!("/hls/{media}/master.m3u8")}));
        }
        Ok(())
    };
    stream(ctx, &mut dec, &mut rs, |s| feed(&limiter.process(s), &mut writers))?;
    let tail = limiter.flush();
    if !tail.is_empty() && !tail[0].is_empty() {
        feed(&tail, &mut writers)?;
    }
    let mut renditions = Vec::new();
    let mut variants = Vec::new();
    for (rung, w) in ladder.iter().zip(writers.iter_mut()) {
        let stats = w.finish().map_err(pack_err)?;
        variants.push(stats.variant(format!("{}/index.m3u8", rung.name)));
        renditions.push(serde_json::to_value(&stats).map_err(pack_err)?);
    }
    ctx.blobs.put(&master_key, master_playlist(&variants).as_bytes()).map_err(pack_err)?;
    waveform.finish(ctx, &format!("media/{media}/waveform.json"))?;

    let out = json!({
        "loudness": {
            "input_lufs": input_lufs,
            "input_true_peak_dbtp": input.true_peak_dbtp(),
            "gain_db": gain_db,
            "output_lufs": output.integrated_lufs(),
            "output_true_peak_dbtp": output.true_peak_dbtp(),
            "target_lufs": TARGET_LUFS,
            "ceiling_dbtp": CEILING_DBTP,
            "passes": passes,
            "measured_on": match &what {
                Measured::Whole => json!("whole"),
                Measured::Excerpts { starts_s, len_s } => json!({"excerpts": starts_s.len(), "seconds_each": len_s}),
            },
        },
        "duration_s": output.frames() as f64 / OUTPUT_RATE as f64,
        "decode_errors": dec.decode_errors(),
        "renditions": renditions,
        "master": master_key,
    });
    Ok(StepOutput { output_ref: Some(master_key), output: Some(out), ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surround_folds_to_stereo_and_keeps_level() {
        let six: Vec<Vec<f32>> = (0..6).map(|c| vec![if c % 2 == 0 { 0.3 } else { -0.3 }; 4]).collect();
        let st = fold(six);
        assert_eq!(st.len(), 2);
        assert!((st[0][0] - 0.3).abs() < 1e-6 && (st[1][0] + 0.3).abs() < 1e-6);
        let mono = fold(vec![vec![0.5; 3]]);
        assert_eq!(mono, vec![vec![0.5; 3]]);
    }

    #[test]
    fn long_sources_are_measured_on_evenly_spread_excerpts() {
        let opts = TranscodeOptions::default(); // above 20 min: 48 × 10 s
        assert_eq!(Measured::plan(None, &opts), Measured::Whole);
        assert_eq!(Measured::plan(Some(19.0 * 60.0), &opts), Measured::Whole);
        let Measured::Excerpts { starts_s, len_s } = Measured::plan(Some(3.0 * 3600.0), &opts) else {
            panic!("a 3-hour source should be measured on excerpts")
        };
        assert_eq!((starts_s.len(), len_s), (48, 10.0));
        assert!(starts_s[0] > 60.0 && starts_s[47] + len_s < 3.0 * 3600.0 - 60.0, "{starts_s:?}");
        let gaps: Vec<f64> = starts_s.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (g - 225.0).abs() < 1e-9), "{gaps:?}");
    }
}
