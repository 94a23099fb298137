//! The packager's inputs: arbitrary audio (any rate and channel count the decoder allows, any
//! sample values, any chunking) through one rung of the ladder, and arbitrary segment durations
//! through a media playlist. Nothing may panic; the playlist lists exactly the segments written.
#![no_main]

use std::collections::BTreeMap;

use lectern::media::hls::{MediaPlaylist, playlist_progress};
use lectern::media::ladder::{RenditionWriter, Rung};

const RATES: [u32; 8] = [8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [r, c, b, rest @ ..] = data else { return };
    playlist(rest);
    let rate = RATES[usize::from(*r) % RATES.len()];
    let channels = u16::from(*c % 8) + 1;
    let rung = Rung::new("a64", [32_000, 64_000, 96_000, 128_000][usize::from(*b) % 4], 1 + u16::from(*b & 1));
    let mut files = BTreeMap::new();
    let sink = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        files.insert(name.to_string(), bytes.to_vec());
        Ok(())
    };
    let Ok(mut w) = RenditionWriter::new(&rung, rate, channels, sink) else { return };
    // Samples from pairs of bytes (full scale and beyond), in chunks whose sizes come from the data.
    let samples: Vec<f32> =
        rest.chunks_exact(2).map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 8192.0).collect();
    let mut at = 0;
    let mut step = 1 + usize::from(*r) * 7;
    while at < samples.len() {
        let n = step.min(samples.len() - at);
        let planar: Vec<Vec<f32>> = (0..channels).map(|_| samples[at..at + n].to_vec()).collect();
        if w.push(&planar).is_err() {
            return;
        }
        at += n;
        step = (step * 3 + 1) % 4096 + 1;
    }
    let Ok(stats) = w.finish() else { return };
    drop(w);
    let written = files.keys().filter(|k| k.ends_with(".m4s")).count();
    let (listed, ended) = playlist_progress(&String::from_utf8_lossy(&files["index.m3u8"]));
    assert!(ended);
    assert_eq!(listed, written, "the playlist lists every segment written");
    assert_eq!(stats.segments as usize, written);
});

/// A media playlist from arbitrary durations (negative, NaN, huge included).
fn playlist(data: &[u8]) {
    let mut p = MediaPlaylist::new(6);
    let mut n = 0;
    for chunk in data.chunks_exact(8).take(64) {
        let d = f64::from_le_bytes(chunk.try_into().unwrap());
        p.push_segment(format!("seg-{n:05}.m4s"), d);
        n += 1;
    }
    let (listed, ended) = playlist_progress(&p.render(true));
    assert_eq!((listed, ended), (n, true));
}
