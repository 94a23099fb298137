//! End-to-end checks against reference tools (ffmpeg's `ebur128` filter, sox, espeak-ng).
//!
//! Each test skips with a printed note when a tool is missing from `PATH`. Run with
//! `--nocapture` to see the measured numbers.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::decode::Decoder;
use super::loudness::{Limiter, LoudnessMeter, gain_to_target};
use super::probe::{probe, sniff};

pub(super) fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--help").output().is_ok();
    if !ok {
        println!("note: `{tool}` not on PATH, skipping");
    }
    ok
}

pub(super) fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn tool");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh per-test scratch directory.
pub(super) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lectern-media-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Integrated loudness and true peak from `ffmpeg -af ebur128=peak=true`'s summary.
fn ffmpeg_ebur128(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-nostats", "-hide_banner", "-i"])
        .arg(path)
        .args(["-af", "ebur128=peak=true", "-f", "null", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    let summary = text.rsplit("Summary:").next().unwrap();
    let field = |key: &str| -> f64 {
        let line = summary.lines().map(str::trim).find(|l| l.starts_with(key)).unwrap();
        line[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("I:"), field("Peak:"))
}

fn decode_all(path: &Path) -> (u32, Vec<Vec<f32>>) {
    let mut d = Decoder::open(path).unwrap();
    let mut all = vec![Vec::new(); usize::from(d.channels())];
    while let Some(c) = d.next_chunk().unwrap() {
        all.iter_mut().zip(c.samples).for_each(|(a, s)| a.extend(s));
    }
    (d.sample_rate(), all)
}

fn measure(path: &Path) -> (f64, f64) {
    let mut d = Decoder::open(path).unwrap();
    let mut m = LoudnessMeter::new(d.sample_rate(), d.channels());
    while let Some(c) = d.next_chunk().unwrap() {
        m.push(&c.samples);
    }
    (m.integrated_lufs().unwrap(), m.true_peak_dbtp())
}

fn write_f32_wav(path: &Path, rate: u32, planar: &[Vec<f32>]) {
    let spec = hound::WavSpec {
        channels: planar.len() as u16,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..planar[0].len() {
        for ch in planar {
            w.write_sample(ch[i]).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// Generates the reference signals; returns (name, path).
fn make_signals(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    let sine = dir.join("sine_1k_-20dbfs.wav");
    let s: Vec<f32> = (0..48_000 * 10)
        .map(|i| 0.1 * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(i) / 48_000.0).sin() as f32)
        .collect();
    write_f32_wav(&sine, 48_000, &[s.clone(), s]);
    v.push(("sine 1k -20 dBFS 48k st", sine));
    let sox = |name: &'static str, file: &str, fmt: &[&str], effects: &[&str]| {
        let p = dir.join(file);
        run(Command::new("sox").args(["-R", "-n"]).args(fmt).arg(&p).args(effects));
        (name, p)
    };
    v.push(sox(
        "pink noise 48k st",
        "pink.wav",
        &["-r", "48000", "-c", "2"],
        &["synth", "10", "pinknoise", "vol", "0.3"],
    ));
    v.push(sox(
        "stereo 44.1k sine+pink",
        "st44.wav",
        &["-r", "44100", "-c", "2"],
        &["synth", "10", "sine", "440", "pinknoise", "vol", "0.5"],
    ));
    v.push(sox(
        "sweep 8k mono",
        "sweep8k.wav",
        &["-r", "8000", "-c", "1"],
        &["synth", "10", "sine", "200-3500", "vol", "0.5", "fade", "0", "10", "0.05"],
    ));
    v.push(sox(
        "96k st 24-bit",
        "hi96k.wav",
        &["-r", "96000", "-c", "2", "-b", "24"],
        &["synth", "10", "sine", "1000", "pinknoise", "vol", "0.4"],
    ));
    if have("espeak-ng") {
        let p = dir.join("speech.wav");
        let text = "Lectern turns long recordings into clean, even audio. The quick brown fox jumps over the \
                    lazy dog, while the meter listens carefully to every syllable and pause.";
        run(Command::new("espeak-ng").arg("-w").arg(&p).arg(text));
        v.push(("espeak-ng speech 22.05k", p));
    }
    v
}

#[test]
fn loudness_and_true_peak_match_ffmpeg() {
    if !have("ffmpeg") || !have("sox") {
        return;
    }
    let dir = scratch("lufs");
    println!("| signal | ours I | ffmpeg I | ours TP | ffmpeg TP |");
    for (name, path) in make_signals(&dir) {
        let (i, tp) = measure(&path);
        let (fi, ftp) = ffmpeg_ebur128(&path);
        println!("| {name} | {i:.2} | {fi:.1} | {tp:.2} | {ftp:.1} |");
        assert!((i - fi).abs() <= 0.2, "{name}: I {i:.2} vs ffmpeg {fi}");
        assert!((tp - ftp).abs() <= 0.3, "{name}: TP {tp:.2} vs ffmpeg {ftp}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn limiter_normalises_loud_speech_under_ceiling() {
    if !have("ffmpeg") || !have("espeak-ng") {
        return;
    }
    let dir = scratch("limiter");
    let src = dir.join("speech.wav");
    run(Command::new("espeak-ng").arg("-w").arg(&src).arg(
        "Normalisation must never clip. This sentence is made twenty decibels louder on purpose, \
         then brought back down to minus sixteen LUFS with a true peak ceiling of minus one.",
    ));
    let (rate, mut audio) = decode_all(&src);
    let boost = 10f32.powf(20.0 / 20.0);
    audio.iter_mut().flatten().for_each(|s| *s *= boost);
    let mut meter = LoudnessMeter::new(rate, audio.len() as u16);
    meter.push(&audio);
    let loud = meter.integrated_lufs().unwrap();
    let limit = |gain: f64| {
        let mut lim = Limiter::new(rate, audio.len() as u16, gain, -1.0, 5.0);
        let mut out = vec![Vec::new(); audio.len()];
        for start in (0..audio[0].len()).step_by(4096) {
            let end = (start + 4096).min(audio[0].len());
            let chunk: Vec<Vec<f32>> = audio.iter().map(|c| c[start..end].to_vec()).collect();
            out.iter_mut().zip(lim.process(&chunk)).for_each(|(o, p)| o.extend(p));
        }
        out.iter_mut().zip(lim.flush()).for_each(|(o, p)| o.extend(p));
        assert_eq!(out[0].len(), audio[0].len());
        let mut m = LoudnessMeter::new(rate, audio.len() as u16);
        m.push(&out);
        (out, m.integrated_lufs().unwrap())
    };
    // Pass 1: static gain from the measurement. Heavy limiting (18 dB PLR squeezed into 15)
    // costs about 1 LU, so a second pass re-applies the gain corrected by the shortfall.
    let gain = gain_to_target(loud, -16.0);
    let (mut out, first) = limit(gain);
    let mut final_gain = gain;
    if (first - -16.0).abs() > 0.5 {
        final_gain = gain + gain_to_target(first, -16.0);
        out = limit(final_gain).0;
    }
    println!("limiter pass 1: gain {gain:.2} dB -> {first:.2} LUFS; corrected gain {final_gain:.2} dB");
    let dst = dir.join("normalised.wav");
    write_f32_wav(&dst, rate, &out);
    let (i, tp) = measure(&dst);
    let (fi, ftp) = ffmpeg_ebur128(&dst);
    println!(
        "limiter: source {loud:.2} LUFS (sample peak {:.2} dBFS) -> ours I {i:.2} TP {tp:.2}; ffmpeg I {fi} TP {ftp}",
        meter.sample_peak_dbfs()
    );
    assert!((first - -16.0).abs() <= 1.2, "single pass {first}");
    assert!((fi - -16.0).abs() <= 1.0, "ffmpeg I {fi}");
    assert!((i - -16.0).abs() <= 0.5, "our I {i}");
    assert!(ftp <= -1.0, "ffmpeg TP {ftp}");
    assert!(tp <= -1.0, "our TP {tp}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decodes_ffmpeg_encodings_with_correct_duration() {
    if !have("ffmpeg") || !have("sox") {
        return;
    }
    let dir = scratch("codecs");
    let src = dir.join("src.wav");
    run(Command::new("sox").args(["-R", "-n", "-r", "44100", "-c", "2"]).arg(&src).args([
        "synth",
        "10",
        "sine",
        "440",
        "pinknoise",
        "vol",
        "0.5",
    ]));
    let encodings: [(&str, &[&str]); 5] = [
        ("mp3", &["-c:a", "libmp3lame", "-b:a", "128k"]),
        ("flac", &["-c:a", "flac"]),
        ("ogg", &["-c:a", "libvorbis", "-q:a", "4"]),
        ("m4a", &["-c:a", "aac", "-b:a", "128k"]),
        ("wav", &["-c:a", "pcm_s16le"]),
    ];
    for (ext, args) in encodings {
        let dst = dir.join(format!("enc.{ext}"));
        run(Command::new("ffmpeg").args(["-y", "-v", "error", "-i"]).arg(&src).args(args).arg(&dst));
        let info = probe(&dst).unwrap();
        let (rate, audio) = decode_all(&dst);
        let decoded_s = audio[0].len() as f64 / f64::from(rate);
        println!("{ext}: probe {info:?}\n  decoded {decoded_s:.4} s");
        assert_eq!((info.sample_rate, info.channels, rate, audio.len()), (44_100, 2, 44_100, 2), "{ext}");
        assert!((info.duration_s - 10.0).abs() <= 0.05, "{ext}: probe duration {}", info.duration_s);
        assert!((decoded_s - 10.0).abs() <= 0.05, "{ext}: decoded duration {decoded_s}");
        if ext == "mp3" {
            // Truncated upload: the first kilobyte only.
            let head = std::fs::read(&dst).unwrap();
            let cut = dir.join("truncated.mp3");
            std::fs::write(&cut, &head[..1024]).unwrap();
            let e = probe(&cut).unwrap_err();
            println!("truncated mp3 -> {} ({e})", e.code());
            assert_eq!(e.code(), "unsupported_audio");
            assert!(sniff(&head[..1024]).is_ok(), "the head of a good mp3 sniffs fine");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reads_tags_and_cover_art() {
    if !have("ffmpeg") {
        return;
    }
    let dir = scratch("tags");
    let cover = dir.join("cover.png");
    run(Command::new("ffmpeg")
        .args(["-y", "-v", "error", "-f", "lavfi", "-i", "color=c=red:s=32x32"])
        .args(["-frames:v", "1"])
        .arg(&cover));
    for (ext, codec) in [("mp3", "libmp3lame"), ("flac", "flac"), ("m4a", "aac")] {
        let dst = dir.join(format!("tagged.{ext}"));
        run(Command::new("ffmpeg")
            .args(["-y", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=2", "-i"])
            .arg(&cover)
            .args(["-map", "0", "-map", "1", "-c:a", codec, "-c:v", "png", "-disposition:v", "attached_pic"])
            .args(["-metadata", "title=Tïtle", "-metadata", "artist=Art", "-metadata", "album=Alb"])
            .args(["-metadata", "date=2024"])
            .arg(&dst));
        let info = probe(&dst).unwrap();
        let t = &info.tags;
        let got = (t.title.as_deref(), t.artist.as_deref(), t.album.as_deref(), t.date.as_deref());
        assert_eq!(got, (Some("Tïtle"), Some("Art"), Some("Alb"), Some("2024")), "{ext}");
        assert!(info.has_cover_art, "{ext}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
