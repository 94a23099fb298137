//! Hostile-input tests: malformed headers, random bytes, corrupted and truncated files.
//!
//! Every case must come back as a clean, non-transient [`Error`] with the expected code,
//! quickly, and without panicking.

use std::process::Command;
use std::time::Instant;

use super::Error;
use super::decode::Decoder;
use super::probe::{probe, sniff};
use super::reference_tests::{have, run, scratch};

/// A canonical 44-byte PCM WAV header.
fn wav_header(channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels.wrapping_mul(bits / 8);
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data_len.wrapping_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

#[test]
fn hostile_inputs_fail_fast_with_the_right_code() {
    let dir = scratch("hostile");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    let with_data = |mut h: Vec<u8>, n: usize| {
        h.extend(std::iter::repeat_n(0x11u8, n));
        h
    };
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("zero bytes", "empty.mp3", Vec::new(), "unsupported_audio"),
        ("random bytes", "random.mp3", random.clone(), "unsupported_audio"),
        ("random bytes, no ext", "random", random, "unsupported_audio"),
        ("text named .mp3", "notes.mp3", b"just some notes, not audio at all\n".repeat(200), "unsupported_audio"),
        ("wav header only", "header.wav", wav_header(2, 44_100, 16, 0), "no_audio"),
        ("wav claims 4 GB", "huge.wav", with_data(wav_header(2, 44_100, 16, 0xF000_0000), 4096), "limit_exceeded"),
        ("wav 0 channels", "zero_ch.wav", with_data(wav_header(0, 44_100, 16, 4096), 4096), "unsupported_audio"),
        ("wav 1 Hz", "one_hz.wav", with_data(wav_header(1, 1, 16, 4096), 4096), "limit_exceeded"),
        ("wav 4e9 Hz", "fast.wav", with_data(wav_header(1, 4_000_000_000, 16, 4096), 4096), "limit_exceeded"),
        ("wav 200 channels", "many.wav", with_data(wav_header(200, 44_100, 16, 4000), 4000), "unsupported_audio"),
        ("wav 12 channels", "twelve.wav", with_data(wav_header(12, 44_100, 16, 4800), 4800), "limit_exceeded"),
        ("wav 30 h declared", "long.wav", with_data(wav_header(1, 8_000, 8, 864_000_000), 4096), "limit_exceeded"),
    ];
    for (name, file, bytes, code) in cases {
        let path = dir.join(file);
        std::fs::write(&path, &bytes).unwrap();
        let t = Instant::now();
        let res = std::panic::catch_unwind(|| probe(&path)).expect("probe must not panic");
        let e: Error = res.expect_err(name);
        let ms = t.elapsed().as_millis();
        println!("{name:>22}: {:<18} {e}  ({ms} ms)", e.code());
        assert_eq!(e.code(), code, "{name}: {e}");
        assert!(ms < 2000, "{name} took {ms} ms");
        assert!(!e.is_transient());
        let head = &bytes[..bytes.len().min(64 * 1024)];
        if let Ok(s) = sniff(head) {
            assert!(code == "no_audio" || file.starts_with("huge"), "{name}: sniff accepted {s:?}");
        }
        assert!(Decoder::open(&path).is_err() || code == "no_audio");
    }
    let missing = probe(&dir.join("does-not-exist.wav")).unwrap_err();
    assert_eq!((missing.code(), missing.is_transient()), ("io", true));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupted_and_cut_files_never_panic_or_hang() {
    if !have("ffmpeg") || !have("sox") {
        return;
    }
    let dir = scratch("corrupt");
    let src = dir.join("src.wav");
    run(Command::new("sox").args(["-R", "-n", "-r", "44100", "-c", "2"]).arg(&src).args(["synth", "3", "pinknoise"]));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut ok, mut err) = (0, 0);
    for (ext, codec) in
        [("mp3", "libmp3lame"), ("flac", "flac"), ("ogg", "libvorbis"), ("m4a", "aac"), ("wav", "pcm_s16le")]
    {
        let good = dir.join(format!("good.{ext}"));
        run(Command::new("ffmpeg").args(["-y", "-v", "error", "-i"]).arg(&src).args(["-c:a", codec]).arg(&good));
        let bytes = std::fs::read(&good).unwrap();
        for round in 0..40 {
            let mut b = bytes.clone();
            if round % 4 == 3 {
                b.truncate(next(b.len()));
            } else {
                for _ in 0..(1 + round) {
                    let i = next(b.len().min(if round % 2 == 0 { 4096 } else { usize::MAX }));
                    b[i] = next(256) as u8;
                }
            }
            let path = dir.join(format!("bad{round}.{ext}"));
            std::fs::write(&path, &b).unwrap();
            let t = Instant::now();
            match probe(&path) {
                Ok(_) => ok += 1,
                Err(_) => err += 1,
            }
            if let Ok(mut d) = Decoder::open(&path) {
                while let Ok(Some(_)) = d.next_chunk() {}
            }
            let _ = sniff(&b[..b.len().min(8192)]);
            assert!(t.elapsed().as_secs() < 5, "{ext} round {round} too slow");
        }
    }
    println!("corrupted inputs: {ok} probed ok, {err} rejected, no panics");
    let _ = std::fs::remove_dir_all(dir);
}
