//! What the fuzz targets (`fuzz/`) found, as byte literals that must now get a clean, typed error
//! (never a panic, never the decoder-panic code that blames the server), plus a replay of the
//! committed fuzz corpus through the same checks on every test run.

use std::io::Cursor;

use lectern::media::Error;
use lectern::media::decode::Decoder;
use lectern::media::probe::{probe_reader, sniff};

/// `sniff`, 2026-12-04: a WAV `fmt ` chunk declaring 65 528 channels of 16-bit PCM. Symphonia
/// computes the block align as `channels × bytes per sample` in `u16`, which overflows; a build
/// with overflow checks panicked inside the decoder (the upload then got a 500 blaming the
/// server). Now Symphonia keeps its release semantics in every profile and the file is refused.
const WAV_CHANNEL_OVERFLOW: &[u8] = &[
    0x52, 0x49, 0x46, 0x46, 0x24, 0x00, 0x00, 0x00, 0x57, 0x41, 0x56, 0x45, 0x66, 0x6d, 0x74, 0x20, 0x10, 0x00, 0x00,
    0x00, 0x01, 0x00, 0xf8, 0xff, 0xbb, 0x53, 0xff, 0xff, 0xef, 0x4e, 0x02, 0x00, 0x04, 0x00, 0x10, 0x00, 0x64, 0x61,
    0x34, 0x61, 0x00, 0x00, 0x00, 0x00,
];

/// `packager`, 2026-12-04: a segment duration of 2.67e246 s (these 8 bytes, little-endian f64) made
/// the playlist's longest-segment counter saturate and `+ 500` overflow when the target duration
/// was declared. Durations are now clamped (the packager only ever passes a few seconds).
const HUGE_SEGMENT_DURATION: [u8; 8] = [21, 52, 23, 52, 23, 116, 24, 115];

/// Every finding, by target.
const FINDINGS: &[(&str, &[u8])] = &[("sniff", WAV_CHANNEL_OVERFLOW)];

/// What the `sniff` and `decode` targets check: any outcome but a decoder panic.
fn check_media(name: &str, data: &[u8]) {
    if let Err(Error::Panic(m)) = sniff(data) {
        panic!("{name}: the sniff panicked: {m}");
    }
    if let Err(Error::Panic(m)) = probe_reader(Cursor::new(data.to_vec()), None) {
        panic!("{name}: the probe panicked: {m}");
    }
    let Ok(mut dec) = Decoder::from_reader(Cursor::new(data.to_vec()), None) else { return };
    for _ in 0..500 {
        match dec.next_chunk() {
            Ok(Some(c)) => assert!(c.samples.iter().flatten().all(|s| s.is_finite())),
            Ok(None) => break,
            Err(Error::Panic(m)) => panic!("{name}: the decoder panicked: {m}"),
            Err(_) => break,
        }
    }
}

#[test]
fn every_finding_gets_a_clean_error() {
    for (target, data) in FINDINGS {
        check_media(target, data);
    }
    let e = sniff(WAV_CHANNEL_OVERFLOW).expect_err("65 528 channels is not a file we take");
    assert!(matches!(e.code(), "unsupported_audio" | "limit_exceeded"), "{e}");
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/sniff-wav-channel-overflow"));
    assert_eq!(committed.unwrap(), WAV_CHANNEL_OVERFLOW, "the literal is the committed artifact");
}

#[test]
fn absurd_segment_durations_cannot_break_a_playlist() {
    use lectern::media::hls::{MediaPlaylist, playlist_progress};
    let mut p = MediaPlaylist::new(6);
    for (i, d) in [f64::from_le_bytes(HUGE_SEGMENT_DURATION), -1.0, f64::NAN, f64::INFINITY, 5.994].iter().enumerate() {
        p.push_segment(format!("seg-{i:05}.m4s"), *d);
    }
    let text = p.render(true);
    assert_eq!(playlist_progress(&text), (5, true));
    assert!(p.declared_target_duration() <= 86_400, "{text}");
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/packager-infinite-duration"));
    assert_eq!(committed.unwrap()[3..11], HUGE_SEGMENT_DURATION, "the literal is the committed artifact's");
}

#[test]
fn the_committed_corpus_replays_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut n = 0;
    for target in ["sniff", "decode"] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            check_media(&path.display().to_string(), &std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    for entry in std::fs::read_dir(root.join("http_inputs")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        let _ = lectern::http::parse_tus_metadata(&text);
        let _ = lectern::http::query_is_utf8(&text);
        n += 1;
    }
    assert!(n > 30, "the corpus is committed: {n} files");
}
