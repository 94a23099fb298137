//! Every format users upload (`fixtures/generated/formats/`, 30 s of the same speech each): MP3,
//! M4A/AAC with the `moov` atom first and last, WAV/BWF, FLAC, Ogg Vorbis, Ogg Opus, WebM and
//! Matroska (Opus, Vorbis, AAC), MP4/MOV/MKV/WebM sermon videos (the audio track is taken, the
//! picture ignored), AIFF.
//!
//! - The library: each probes to the duration ffprobe reports (within 0.1 s), and its first MiB
//!   passes the upload sniff (a `moov` at the end is recognised, to be validated once stored).
//! - End to end against a real `lectern serve`: each is uploaded (raw body; the M4A with its moov at
//!   the end also over tus), becomes an HLS ladder that ffmpeg decodes without a single error
//!   message, to within 0.1 s of the source's duration, and hls.js in Chromium plays it to the end.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, fixtures, http, http_json, wait_job};

/// The format matrix, with the Content-Type a client would send.
fn matrix() -> Vec<(PathBuf, &'static str)> {
    let dir = fixtures().join("formats");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    assert!(files.len() >= 16, "the format matrix is incomplete: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let ct = match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
                "mp3" => "audio/mpeg",
                "m4a" => "audio/mp4",
                "wav" => "audio/wav",
                "flac" => "audio/flac",
                "ogg" | "opus" => "audio/ogg",
                "webm" => "audio/webm",
                "mkv" => "application/octet-stream",
                "aiff" => "audio/aiff",
                _ => "application/octet-stream", // videos: clients send what they have
            };
            (p, ct)
        })
        .collect()
}

/// The duration of a file's first audio stream, as ffmpeg decodes it (container durations differ:
/// Matroska has none per stream, a video's can be the picture's).
fn source_duration(path: &Path) -> f64 {
    let (secs, said) = ffmpeg_decode(path.to_str().unwrap());
    assert!(said.trim().is_empty(), "{}: ffmpeg: {said}", path.display());
    secs
}

#[test]
fn every_upload_format_probes_and_sniffs() {
    let mut failures = Vec::new();
    for (path, _) in matrix() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = source_duration(&path);
        let info = match lectern::media::probe::probe(&path) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{name}: probe: {e}"));
                continue;
            }
        };
        if (info.duration_s - expected).abs() >= 0.1 {
            failures.push(format!("{name}: probe {} s, ffmpeg decodes {expected} s", info.duration_s));
        }
        let bytes = std::fs::read(&path).unwrap();
        let head = &bytes[..bytes.len().min(lectern::media::probe::SNIFF_MAX_BYTES)];
        match lectern::media::probe::sniff(head) {
            Ok(s) if !s.complete => {
                if let Err(e) = lectern::media::probe::validate(&path) {
                    failures.push(format!("{name}: validate: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: sniff: {e}")),
        }
        let (ours, theirs) = (decoded_rms_db(&path), ffmpeg_rms_db(&path));
        if (ours - theirs).abs() > 0.5 {
            failures.push(format!("{name}: decoded level {ours:.2} dB, ffmpeg's {theirs:.2} dB"));
        }
        println!(
            "{name:>24}: {:>8} {:>7} {:.3} s (ffmpeg {expected:.3}), level {ours:.2} dB (ffmpeg {theirs:.2})",
            info.container, info.codec, info.duration_s
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let m4a = fixtures().join("formats/aac-moov-at-end.m4a");
    let bytes = std::fs::read(&m4a).unwrap();
    assert!(bytes.len() > lectern::media::probe::SNIFF_MAX_BYTES, "the moov must lie beyond the sniffed head");
    let s = lectern::media::probe::sniff(&bytes[..lectern::media::probe::SNIFF_MAX_BYTES]).unwrap();
    assert!(!s.complete, "a moov beyond the head cannot be parsed from it");
}

/// The RMS level of a file's audio (all channels), decoded by Lectern, in dBFS.
fn decoded_rms_db(path: &Path) -> f64 {
    let mut dec = lectern::media::decode::Decoder::open(path).unwrap();
    let (mut sum, mut n) = (0.0f64, 0u64);
    while let Some(c) = dec.next_chunk().unwrap() {
        for s in c.samples.iter().flatten() {
            sum += f64::from(*s) * f64::from(*s);
            n += 1;
        }
    }
    10.0 * (sum / n.max(1) as f64).log10()
}

/// The same level as ffmpeg decodes it (float samples, all channels).
fn ffmpeg_rms_db(path: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-f", "f32le", "-"])
        .output()
        .expect("ffmpeg");
    let samples = out.stdout.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    let (sum, n) = samples.fold((0.0, 0u64), |(s, n), x| (s + x * x, n + 1));
    10.0 * (sum / n.max(1) as f64).log10()
}

/// Decodes `url` with ffmpeg: (seconds of audio, everything ffmpeg said at level `error`).
fn ffmpeg_decode(url: &str) -> (f64, String) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i", url, "-f", "s16le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg");
    (out.stdout.len() as f64 / 2.0 / 48_000.0, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A tus upload of `bytes` in two PATCHes: the media id.
fn tus_upload(addr: &str, bytes: &[u8]) -> String {
    let v = ("Tus-Resumable", "1.0.0");
    let len = bytes.len().to_string();
    let (status, head, _) = http(addr, "POST", "/v1/uploads", &[v, ("Upload-Length", &len)], b"");
    assert_eq!(status, 201, "{head}");
    let loc = common::header_of(&head, "Location").unwrap();
    let half = bytes.len() / 2;
    for (offset, part) in [(0, &bytes[..half]), (half, &bytes[half..])] {
        let off = offset.to_string();
        let h = [v, ("Upload-Offset", off.as_str()), ("Content-Type", "application/offset+octet-stream")];
        let (status, head, body) = http(addr, "PATCH", &loc, &h, part);
        assert_eq!(status, 204, "{head} {}", String::from_utf8_lossy(&body));
    }
    let (_, head, _) = http(addr, "HEAD", &loc, &[v], b"");
    common::header_of(&head, "Lectern-Media-Id").expect("the finished upload names its media")
}

#[test]
fn every_upload_format_becomes_hls_that_plays() {
    let env = Env::new("[stages.transcode]\nworkers = 2\n");
    let mut c = env.command();
    c.env("LECTERN_MODELS_SPEECH", "false");
    let server = env.serve_with(c, "serve.log");
    let mut uploads = Vec::new();
    for (path, ct) in matrix() {
        let bytes = std::fs::read(&path).unwrap();
        let (status, up) = http_json(&server.addr, "POST", "/v1/media", &[("Content-Type", ct)], &bytes);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(status, 202, "{name}: {up}");
        uploads.push((
            name,
            path,
            up["media_id"].as_str().unwrap().to_string(),
            up["job_id"].as_str().unwrap().to_string(),
        ));
    }
    let m4a = fixtures().join("formats/aac-moov-at-end.m4a");
    let tus_media = tus_upload(&server.addr, &std::fs::read(&m4a).unwrap());
    let (_, media) = http_json(&server.addr, "GET", &format!("/v1/media/{tus_media}"), &[], b"");
    let tus_job = media["job_id"].as_str().unwrap().to_string();
    uploads.push(("aac-moov-at-end.m4a (tus)".into(), m4a, tus_media, tus_job));

    let mut urls = Vec::new();
    for (name, path, media, job) in &uploads {
        let done = wait_job(&server.addr, job, 180);
        assert_eq!(done["state"], "succeeded", "{name}: {done}");
        let url = format!("http://{}/hls/{media}/master.m3u8", server.addr);
        let (decoded, said) = ffmpeg_decode(&url);
        let expected = source_duration(path);
        assert!(said.trim().is_empty(), "{name}: ffmpeg reported errors decoding the HLS: {said}");
        assert!((decoded - expected).abs() < 0.1, "{name}: HLS holds {decoded:.3} s, the source {expected:.3} s");
        println!("{name:>28}: HLS {decoded:.3} s, source {expected:.3} s");
        urls.push((name.clone(), url));
    }
    play_in_chromium(&urls);
}

/// hls.js in headless Chromium plays every URL to the end without an error event.
fn play_in_chromium(urls: &[(String, String)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(dir.join("node_modules/hls.js").is_dir(), "run `npm ci` in tests/browser first (bash .ci/test does)");
    let list: Vec<&str> = urls.iter().map(|(_, u)| u.as_str()).collect();
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["play.mjs", &list.join(","), "4", "60000"])
        .output()
        .expect("node is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "player failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(results.len(), urls.len(), "one result per stream: {stdout}");
    for ((name, _), r) in urls.iter().zip(&results) {
        assert_eq!(r["errors"], serde_json::json!([]), "{name}: hls.js reported errors: {r}");
        assert_eq!(r["pageErrors"], serde_json::json!([]), "{name}: {r}");
        assert_eq!(r["ended"], true, "{name}: playback did not reach the end: {r}");
        let (t, d) = (r["currentTime"].as_f64().unwrap(), r["duration"].as_f64().unwrap());
        assert!((t - d).abs() < 0.5 && (d - 30.0).abs() < 0.5, "{name}: played {t} of {d} s: {r}");
    }
}
