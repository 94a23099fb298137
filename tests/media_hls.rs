//! End-to-end check of the audio HLS packager against real clients (ffmpeg/ffprobe).
//!
//! Packages 75 s of a generated test signal (chirp bursts, sweeps and silence) pushed in
//! random-sized chunks through the default two-rung ladder, writes a master playlist and
//! then verifies playlists and bit rates in Rust and decoding with ffmpeg. The ffmpeg
//! checks are skipped, with a note, when ffmpeg is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lectern::media::hls::master_playlist;
use lectern::media::ladder::{RenditionWriter, default_ladder};

const SR: u32 = 48_000;
const SECONDS: f64 = 75.0;
/// Burst onsets in seconds; each burst is a 200 ms chirp.
const BURSTS: [f64; 10] = [1.0, 9.0, 17.0, 25.0, 33.0, 41.0, 49.0, 57.0, 65.0, 73.0];

/// The test signal, a pure function of channel and sample index.
fn sample(ch: usize, i: usize) -> f32 {
    use std::f64::consts::PI;
    let t = i as f64 / f64::from(SR);
    for &b in &BURSTS {
        let u = t - b;
        if (0.0..0.2).contains(&u) {
            let (f0, f1) = if ch == 0 { (400.0, 4000.0) } else { (600.0, 5000.0) };
            let phase = 2.0 * PI * (f0 * u + (f1 - f0) * u * u / (2.0 * 0.2));
            let env = (u / 0.002).min(1.0) * ((0.2 - u) / 0.002).min(1.0);
            return (0.5 * env * phase.sin()) as f32;
        }
    }
    // A quiet log sweep from 3 s to 7 s of every 8 s cycle.
    let u = (t - 1.0).rem_euclid(8.0) - 2.0;
    if (0.0..4.0).contains(&u) {
        let k = (8000.0f64 / 100.0).ln() / 4.0;
        let phase = 2.0 * PI * 100.0 * ((k * u).exp() - 1.0) / k;
        return (0.2 * phase.sin()) as f32;
    }
    0.0
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes a file atomically (temp file + rename), as the main crate does.
fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, dir.join(name))
}

/// Packages the test signal with `channels` source channels into `root`.
fn package(root: &Path, channels: u16) {
    let _ = fs::remove_dir_all(root);
    let ladder = default_ladder(channels);
    let mut writers = Vec::new();
    for rung in &ladder {
        let dir = root.join(&rung.name);
        fs::create_dir_all(&dir).unwrap();
        let sink = move |name: &str, bytes: &[u8]| atomic_write(&dir, name, bytes);
        writers.push(RenditionWriter::new(rung, SR, channels, sink).unwrap());
    }
    let total = (SECONDS * f64::from(SR)) as usize;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut pos = 0;
    while pos < total {
        let n = (1 + rng.next() % 24_000) as usize;
        let n = n.min(total - pos);
        let planar: Vec<Vec<f32>> =
            (0..usize::from(channels)).map(|c| (pos..pos + n).map(|i| sample(c, i)).collect()).collect();
        for w in &mut writers {
            w.push(&planar).unwrap();
        }
        pos += n;
    }
    let variants: Vec<_> = writers
        .iter_mut()
        .zip(&ladder)
        .map(|(w, rung)| w.finish().unwrap().variant(format!("{}/index.m3u8", rung.name)))
        .collect();
    fs::write(root.join("master.m3u8"), master_playlist(&variants)).unwrap();
}

/// `(uri, EXTINF)` pairs and the target duration of a media playlist.
fn parse_media(text: &str) -> (Vec<(String, f64)>, u32) {
    let mut segs = Vec::new();
    let mut target = 0;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d: f64 = v.trim_end_matches(',').parse().unwrap();
            segs.push((lines.next().unwrap().to_string(), d));
        }
    }
    (segs, target)
}

fn attr(line: &str, key: &str) -> u64 {
    let start = line.find(&format!("{key}=")).unwrap() + key.len() + 1;
    line[start..].split(',').next().unwrap().parse().unwrap()
}

/// Checks that need no external tool: playlist shape, durations and declared bit rates.
fn check_playlists(root: &Path) {
    let master = fs::read_to_string(root.join("master.m3u8")).unwrap();
    assert!(master.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n"));
    let mut lines = master.lines();
    let mut seen = 0;
    while let Some(line) = lines.next() {
        let Some(_) = line.strip_prefix("#EXT-X-STREAM-INF:") else {
            continue;
        };
        seen += 1;
        assert!(line.contains("CODECS=\"mp4a.40.2\""), "{line}");
        let uri = lines.next().unwrap();
        let dir = root.join(uri).parent().unwrap().to_path_buf();
        let text = fs::read_to_string(root.join(uri)).unwrap();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n") && text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF"));
        let (segs, target) = parse_media(&text);
        assert_eq!(target, 6);
        assert!(segs.iter().all(|s| s.1 <= 6.0), "EXTINF over 6 s in {uri}");
        let total: f64 = segs.iter().map(|s| s.1).sum();
        assert!((total - SECONDS).abs() < 0.05, "{uri}: {total}");
        // Recompute the rates from the files on disk.
        let sized: Vec<(u64, f64)> = segs.iter().map(|(u, d)| (fs::metadata(dir.join(u)).unwrap().len(), *d)).collect();
        let avg = sized.iter().map(|s| s.0).sum::<u64>() as f64 * 8.0 / total;
        let peak = sized.iter().map(|s| s.0 as f64 * 8.0 / s.1).fold(0.0, f64::max);
        let (bw, abw) = (attr(line, "BANDWIDTH") as f64, attr(line, "AVERAGE-BANDWIDTH") as f64);
        println!("{uri}: BANDWIDTH {bw} (recomputed {peak:.0}), AVERAGE-BANDWIDTH {abw} (recomputed {avg:.0})");
        assert!((bw - peak).abs() / peak < 0.10 && (abw - avg).abs() / avg < 0.10, "{line}");
    }
    assert_eq!(seen, 2);
}

fn have_ffmpeg() -> bool {
    let ok = |tool: &str| Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
    ok("ffmpeg") && ok("ffprobe")
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Best lag (in samples) of channel `ch` of `decoded` against the reference burst
/// starting at `onset`, and the normalized correlation at that lag.
fn burst_lag(decoded: &[f32], channels: usize, ch: usize, onset: usize) -> (i64, f64) {
    let len = (0.2 * f64::from(SR)) as usize;
    let at = |i: usize, lag: i64| {
        let j = (i as i64 + lag) as usize * channels + ch;
        f64::from(decoded.get(j).copied().unwrap_or(0.0))
    };
    let corr =
        |lag: i64, len: usize| -> f64 { (onset..onset + len).map(|i| at(i, lag) * f64::from(sample(ch, i))).sum() };
    // Coarse search over +-50 ms on the first 40 ms of the chirp, then refine.
    let coarse = (-300i64..=300).map(|k| k * 8).max_by(|&a, &b| corr(a, 1920).total_cmp(&corr(b, 1920))).unwrap();
    let lag = (coarse - 8..=coarse + 8).max_by(|&a, &b| corr(a, len).total_cmp(&corr(b, len))).unwrap();
    let best = (corr(lag, len), lag);
    let energy_ref: f64 = (onset..onset + len).map(|i| f64::from(sample(ch, i)).powi(2)).sum();
    let energy_dec: f64 = (onset..onset + len).map(|i| at(i, best.1).powi(2)).sum();
    (best.1, best.0 / (energy_ref * energy_dec).sqrt())
}

/// Checks with real clients: ffmpeg decodes everything cleanly, durations, alignment, codec.
fn check_with_ffmpeg(root: &Path, channels: usize) {
    let master = root.join("master.m3u8");
    let out = run("ffmpeg", &["-v", "error", "-i", master.to_str().unwrap(), "-f", "null", "-"]);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("ffmpeg", &["-v", "error", "-i", master.to_str().unwrap(), "-map", "0:a", "-f", "null", "-"]);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    for rung in ["a64", "a128"] {
        let playlist = root.join(rung).join("index.m3u8");
        let p = playlist.to_str().unwrap();
        let out = run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", p]);
        let duration: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!((duration - SECONDS).abs() <= 0.1, "{rung}: ffprobe duration {duration}");

        let out = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,profile,codec_tag_string,channels,sample_rate",
                "-of",
                "compact",
                p,
            ],
        );
        let streams = String::from_utf8_lossy(&out.stdout).to_string();
        println!("{rung}: {}", streams.trim());
        assert!(streams.contains("codec_name=aac") && streams.contains("profile=LC"), "{streams}");
        assert!(streams.contains("codec_tag_string=mp4a") && streams.contains("sample_rate=48000"), "{streams}");
        assert!(streams.contains(&format!("channels={channels}")), "{streams}");

        let out = run("ffmpeg", &["-v", "error", "-i", p, "-f", "f32le", "-"]);
        let decoded: Vec<f32> = out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let secs = decoded.len() as f64 / channels as f64 / f64::from(SR);
        assert!((secs - SECONDS).abs() < 0.05, "{rung}: decoded {secs} s");
        for &b in &[BURSTS[0], BURSTS[9]] {
            for ch in 0..channels {
                let (lag, corr) = burst_lag(&decoded, channels, ch, (b * f64::from(SR)) as usize);
                let ms = lag as f64 * 1000.0 / f64::from(SR);
                println!(
                    "{rung}: decoded {secs:.4} s, ffprobe {duration:.3} s, burst {b} s ch {ch}: lag {ms:.3} ms, corr {corr:.4}"
                );
                assert!(ms.abs() < 5.0, "{rung}: burst at {b} s shifted by {ms} ms");
                assert!(corr > 0.9, "{rung}: burst at {b} s channel {ch} correlates only {corr}");
            }
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("media-pkg-{name}-{}", std::process::id()))
}

fn end_to_end(channels: u16) {
    let root = scratch(if channels == 2 { "stereo" } else { "mono" });
    package(&root, channels);
    check_playlists(&root);
    if have_ffmpeg() {
        check_with_ffmpeg(&root, usize::from(channels));
    } else {
        println!("note: ffmpeg/ffprobe not found, client checks skipped");
    }
    fs::remove_dir_all(&root).unwrap();
}

#[test]
fn stereo_source_plays_in_ffmpeg() {
    end_to_end(2);
}

#[test]
fn mono_source_plays_in_ffmpeg() {
    end_to_end(1);
}
