//! The speech step executors: `transcribe` (VAD → ≤ 30 s windows → Whisper) and `embed`
//! (transcript → ~30 s chunks → MiniLM → search index).
//!
//! Models are loaded once per process, on first use or at `serve` start ([`Models::preload`]),
//! and shared by every worker thread. A missing or corrupt model makes the step fail permanently
//! with `model_missing` / `model_invalid` (the job goes `dead`; after `lectern models fetch`,
//! `lectern jobs retry --state dead` picks it up again); the service keeps running.
//!
//! Journaled granularity of `transcribe`: the window plan (VAD result) and every finished window
//! are stored as blobs under `media/<id>/transcript/<model>/`, so a restart redoes only the window
//! that was running. Windows are cut deterministically from the audio, so the resumed transcript is
//! the same as an uninterrupted one. The blobs are removed once `transcript.json` is written.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ingest::{media_err, source};
use crate::config::ModelsOptions;
use crate::embed::{Chunk, ChunkParams, Embedder, Seg, chunk_segments};
use crate::engine::{StepContext, StepError, StepOutput};
use crate::index::{Index, NewChunk};
use crate::media::decode::{Decoder, downmix_to_mono};
use crate::media::resample::Resampler;
use crate::speech::mel::SAMPLE_RATE;
use crate::speech::transcript::{TimedText, Transcript};
use crate::speech::vad::Vad;
use crate::speech::whisper::Whisper;
use crate::speech::{SegmentParams, Window, segment};

/// The models of this process, loaded once.
pub struct Models {
    opts: ModelsOptions,
    speech: Mutex<Option<Arc<SpeechModels>>>,
    embedder: Mutex<Option<Arc<Embedder>>>,
}

/// Whisper and the VAD.
pub struct SpeechModels {
    pub whisper: Whisper,
    pub vad: Vad,
    /// e.g. `whisper-tiny.en-int8`.
    pub name: String,
}

fn model_err(code: &str, message: impl std::fmt::Display) -> StepError {
    StepError::permanent(code, format!("{message} (fetch the models with `lectern models fetch`)"))
}

impl Models {
    pub fn new(opts: &ModelsOptions) -> Self {
        crate::speech::onnx::set_intra_op_spinning(opts.intra_op_spinning);
        Self { opts: opts.clone(), speech: Mutex::new(None), embedder: Mutex::new(None) }
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Whisper + VAD, loading them on first use. Failures are not cached: a fetch fixes them.
    pub fn speech(&self) -> Result<Arc<SpeechModels>, StepError> {
        let mut slot = self.speech.lock().map_err(|_| StepError::transient("internal", "model lock poisoned"))?;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let dir = &self.opts.dir;
        crate::speech::onnx::init_runtime(dir).map_err(|e| model_err(e.code(), e))?;
        let int8 = self.opts.asr.ends_with("-int8");
        let model_dir = dir.join(format!("whisper-{}", self.opts.asr.trim_end_matches("-int8")));
        let whisper = Whisper::load(&model_dir, int8, self.opts.asr_threads).map_err(|e| model_err(e.code(), e))?;
        let vad = Vad::load(&dir.join("silero-vad/silero_vad.onnx"), 1).map_err(|e| model_err(e.code(), e))?;
        let m = Arc::new(SpeechModels { whisper, vad, name: format!("whisper-{}", self.opts.asr) });
        *slot = Some(m.clone());
        Ok(m)
    }

    /// The MiniLM embedder, loading it on first use.
    pub fn embedder(&self) -> Result<Arc<Embedder>, StepError> {
        let mut slot = self.embedder.lock().map_err(|_| StepError::transient("internal", "model lock poisoned"))?;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let e = Embedder::load(&self.opts.dir, true, self.opts.embed_threads).map_err(|e| model_err(e.code(), e))?;
        let e = Arc::new(e);
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Whether Whisper, VAD and the embedder are in memory.
    pub fn loaded(&self) -> bool {
        let speech = self.speech.lock().map(|s| s.is_some()).unwrap_or(false);
        let embed = self.embedder.lock().map(|s| s.is_some()).unwrap_or(false);
        speech && embed
    }

    /// Loads every model now (at `serve` start): a missing or corrupt file is reported at once.
    pub fn preload(&self) -> Result<(), StepError> {
        self.speech()?;
        self.embedder()?;
        Ok(())
    }
}

fn internal(e: impl std::fmt::Display) -> StepError {
    StepError::transient("internal", e.to_string())
}

/// Decodes the whole source as 16 kHz mono, handing chunks to `f`; returns the sample count.
fn stream_16k(
    ctx: &StepContext,
    path: &Path,
    mut f: impl FnMut(&[f32]) -> Result<(), StepError>,
) -> Result<usize, StepError> {
    let mut dec = Decoder::open(path).map_err(media_err)?;
    let mut rs = Resampler::new(dec.sample_rate(), SAMPLE_RATE, 1).map_err(media_err)?;
    let mut total = 0;
    while let Some(chunk) = dec.next_chunk().map_err(media_err)? {
        ctx.checkpoint()?;
        let out = rs.process(&[downmix_to_mono(&chunk.samples)]);
        if let Some(s) = out.first().filter(|s| !s.is_empty()) {
            total += s.len();
            f(s)?;
        }
    }
    if let Some(s) = rs.flush().first().filter(|s| !s.is_empty()) {
        total += s.len();
        f(s)?;
    }
    Ok(total)
}

/// The journaled window plan of a media.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    total_samples: usize,
    windows: Vec<Window>,
}

fn get_json<T: for<'de> Deserialize<'de>>(ctx: &StepContext, key: &str) -> Option<T> {
    if !ctx.blobs.exists(key).unwrap_or(false) {
        return None;
    }
    ctx.blobs.get(key).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn put_json<T: Serialize>(ctx: &StepContext, key: &str, v: &T) -> Result<(), StepError> {
    let bytes = serde_json::to_vec(v).map_err(internal)?;
    ctx.blobs.put(key, &bytes).map(|_| ()).map_err(|e| StepError::transient("storage", e.to_string()))
}

/// `transcribe`: see the module docs.
pub fn run_transcribe(ctx: &StepContext, models: &Models) -> Result<StepOutput, StepError> {
    let (media, path) = source(ctx)?;
    let m = models.speech()?;
    let prefix = format!("media/{media}/transcript/{}", m.name);
    let started = Instant::now();

    // 1. Voice activity over the whole file → windows (journaled).
    let plan_key = format!("{prefix}/plan.json");
    let plan = match get_json::<Plan>(ctx, &plan_key) {
        Some(p) => p,
        None => {
            let mut vad = m.vad.stream();
            let mut probs = Vec::new();
            let total = stream_16k(ctx, &path, |s| {
                probs.extend(vad.push(s).map_err(|e| StepError::transient(e.code(), e.to_string()))?);
                Ok(())
            })?;
            let windows = segment(&probs, total, &SegmentParams::default()).map_err(internal)?;
            let plan = Plan { total_samples: total, windows };
            put_json(ctx, &plan_key, &plan)?;
            plan
        }
    };

    // 2. Every window not yet journaled: collect its samples in a second pass and transcribe.
    let window_key = |i: usize| format!("{prefix}/w-{i:05}.json");
    let todo: Vec<bool> = (0..plan.windows.len()).map(|i| !ctx.blobs.exists(&window_key(i)).unwrap_or(false)).collect();
    let resumed = todo.iter().filter(|t| !**t).count();
    let mut pos = 0usize;
    let mut next = todo.iter().position(|t| *t);
    let mut buf: Vec<f32> = Vec::new();
    let run_window = |i: usize, samples: &[f32]| -> Result<(), StepError> {
        let w = plan.windows[i];
        let offset = w.start_sample as f64 / f64::from(SAMPLE_RATE);
        let segs = m.whisper.transcribe(samples).map_err(|e| StepError::transient(e.code(), e.to_string()))?;
        let timed: Vec<TimedText> = segs
            .into_iter()
            .map(|s| TimedText { start_s: offset + s.start_s, end_s: offset + s.end_s, body: s.text })
            .collect();
        put_json(ctx, &window_key(i), &timed)
    };
    if next.is_some() {
        stream_16k(ctx, &path, |s| {
            let mut s = s;
            while let Some(i) = next {
                let w = plan.windows[i];
                let end = pos + s.len();
                if end <= w.start_sample {
                    break;
                }
                let from = w.start_sample.saturating_sub(pos).min(s.len());
                let to = (w.end_sample.saturating_sub(pos)).min(s.len());
                buf.extend_from_slice(&s[from..to]);
                if end < w.end_sample {
                    break;
                }
                run_window(i, &buf)?;
                buf.clear();
                next = todo.iter().skip(i + 1).position(|t| *t).map(|k| k + i + 1);
                // The rest of this chunk may belong to the next window.
                let consumed = to;
                pos += consumed;
                s = &s[consumed..];
            }
            pos += s.len();
            Ok(())
        })?;
        // Audio shorter than planned (never expected): transcribe what there is.
        if let Some(i) = next {
            run_window(i, &buf)?;
        }
    }

    // 3. The transcript.
    let mut segments = Vec::new();
    for i in 0..plan.windows.len() {
        let part: Vec<TimedText> = get_json(ctx, &window_key(i))
            .ok_or_else(|| StepError::transient("storage", format!("window {i} of the transcript is missing")))?;
        segments.extend(part);
    }
    let transcript = Transcript::new(segments);
    let key = format!("media/{media}/transcript.json");
    put_json(ctx, &key, &transcript)?;
    for i in 0..plan.windows.len() {
        let _ = ctx.blobs.delete(&window_key(i));
    }
    let _ = ctx.blobs.delete(&plan_key);
    let audio_s = plan.total_samples as f64 / f64::from(SAMPLE_RATE);
    let speech_s: f64 = plan.windows.iter().map(|w| w.duration_samples() as f64).sum::<f64>() / f64::from(SAMPLE_RATE);
    let wall = started.elapsed().as_secs_f64();
    ctx.emit("media.transcribed", json!({"media_id": media, "segments": transcript.segments.len()}));
    Ok(StepOutput {
        output_ref: Some(key),
        output: Some(json!({
            "model": m.name,
            "windows": plan.windows.len(),
            "windows_resumed": resumed,
            "segments": transcript.segments.len(),
            "words": transcript.text().split_whitespace().count(),
            "audio_s": audio_s,
            "speech_s": speech_s,
            "wall_s": wall,
            "rtf": if audio_s > 0.0 { wall / audio_s } else { 0.0 },
        })),
        ..Default::default()
    })
}

/// `embed`: the media's transcript in ~30 s chunks, embedded and swapped into the index at once.
pub fn run_embed(ctx: &StepContext, models: &Models, index: &Index) -> Result<StepOutput, StepError> {
    let media = ctx.step.media_id.clone().ok_or_else(|| StepError::permanent("invalid_job", "no media id"))?;
    let key = format!("media/{media}/transcript.json");
    let transcript: Transcript = get_json(ctx, &key)
        .ok_or_else(|| StepError::permanent("transcript_missing", format!("{media} has no transcript to embed")))?;
    let embedder = models.embedder()?;
    let segs: Vec<Seg> =
        transcript.segments.iter().map(|s| Seg { start_s: s.start_s, end_s: s.end_s, text: s.body.clone() }).collect();
    let chunks: Vec<Chunk> = chunk_segments(&segs, &ChunkParams::default());
    let mut stored = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(32) {
        ctx.checkpoint()?;
        let texts: Vec<&str> = batch.iter().map(|c| c.text.as_str()).collect();
        let vectors = embedder.embed(&texts).map_err(|e| StepError::transient(e.code(), e.to_string()))?;
        for (c, vector) in batch.iter().zip(vectors) {
            stored.push(NewChunk { start_s: c.start_s, end_s: c.end_s, text: c.text.clone(), vector });
        }
    }
    index
        .replace_media(&ctx.step.tenant, &media, None, embedder.model_name(), &stored)
        .map_err(|e| StepError::transient("index", e.to_string()))?;
    ctx.emit("media.indexed", json!({"media_id": media, "chunks": stored.len()}));
    Ok(StepOutput {
        output: Some(json!({"chunks": stored.len(), "model": embedder.model_name()})),
        ..Default::default()
    })
}
