//! The speech models on real data: Whisper tiny.en word error rate on LibriVox clips (fp32 and
//! int8), segment timestamps after VAD windowing, Silero VAD on speech and silence, and errors
//! for corrupt or missing model files.
//!
//! Needs the model cache (`$LECTERN_MODELS_DIR`, default `models/cache`): `bash models/fetch.sh`.
//! Without it every test fails (CI always fetches). Word error rates and real-time factors are
//! printed: `cargo test --test speech_models -- --nocapture`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use lectern::speech::onnx::init_runtime;
use lectern::speech::vad::{FRAME_SAMPLES, Vad};
use lectern::speech::whisper::Whisper;
use lectern::speech::{SegmentParams, segment};

/// Intra-op threads per session, as in production on the 2-core box.
const THREADS: usize = 2;
const SAMPLE_RATE: usize = 16_000;
/// The acceptance bar for tiny.en on these clips (the Python reference gets 2.8–5.6 %).
const MAX_WER: f64 = 0.10;

/// The model cache, with the runtime loaded. Panics (fails the test) when it is missing.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("LECTERN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache"));
    for needed in ["whisper-tiny.en", "silero-vad", "librivox", "onnxruntime"] {
        assert!(
            dir.join(needed).is_dir(),
            "{} not found: run `bash models/fetch.sh` (or set LECTERN_MODELS_DIR) before these tests",
            dir.join(needed).display()
        );
    }
    init_runtime(&dir).unwrap_or_else(|e| panic!("{e} [{}]", e.code()));
    dir
}

/// The model tests take turns: each uses both cores, and the printed real-time factors should not
/// be measured under contention.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.sample_rate, spec.channels, spec.bits_per_sample), (16_000, 1, 16), "{}", path.display());
    reader.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect()
}

/// `(file name, reference text)` of every clip in `transcripts.tsv`.
fn clips(dir: &Path) -> Vec<(String, String)> {
    let tsv = std::fs::read_to_string(dir.join("librivox/transcripts.tsv")).unwrap();
    tsv.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, text) = l.split_once('\t').unwrap();
            (file.to_owned(), text.to_owned())
        })
        .collect()
}

fn clip(dir: &Path, name: &str) -> Vec<f32> {
    read_wav(&dir.join("librivox").join(name))
}

/// Lowercase, apostrophes dropped, other punctuation → space, whitespace collapsed (the
/// normalisation of `benches/asr/reference.py`, so "ill-disposed" = "ill disposed").
fn normalise(text: &str) -> Vec<String> {
    let cleaned: String = text
        .to_lowercase()
        .chars()
        .filter(|c| *c != '\'' && *c != '\u{2019}')
        .map(|c| if c.is_alphanumeric() || c.is_whitespace() { c } else { ' ' })
        .collect();
    cleaned.split_whitespace().map(str::to_owned).collect()
}

/// Word-level Levenshtein distance (substitutions, insertions, deletions).
fn edit_distance(reference: &[String], hypothesis: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut cur = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + usize::from(r != h));
        }
        prev = cur;
    }
    prev[hypothesis.len()]
}

#[test]
fn wer_helpers() {
    assert_eq!(normalise("He was ill-disposed, Mr. O'Brien!"), ["he", "was", "ill", "disposed", "mr", "obrien"]);
    let words = |s: &str| normalise(s);
    assert_eq!(edit_distance(&words("a b c d"), &words("a x c d e")), 2);
    assert_eq!(edit_distance(&words("a b"), &words("")), 2);
    assert_eq!(edit_distance(&words(""), &words("a")), 1);
}

/// Transcribes every clip with `transcribe`, prints hypotheses, returns `(WER, RTF)`.
fn evaluate(dir: &Path, label: &str, mut transcribe: impl FnMut(&[f32]) -> String) -> (f64, f64) {
    let (mut errors, mut words, mut audio_s, mut proc_s) = (0, 0, 0.0, 0.0);
    for (name, reference) in clips(dir) {
        let samples = clip(dir, &name);
        let started = Instant::now();
        let hypothesis = transcribe(&samples);
        let elapsed = started.elapsed().as_secs_f64();
        let (r, h) = (normalise(&reference), normalise(&hypothesis));
        let e = edit_distance(&r, &h);
        println!(
            "[{label}] {name} ({:.2} s audio, {elapsed:.2} s): {e}/{} errors",
            samples.len() as f64 / 16e3,
            r.len()
        );
        println!("    ref: {reference}\n    hyp: {hypothesis}");
        (errors, words) = (errors + e, words + r.len());
        (audio_s, proc_s) = (audio_s + samples.len() as f64 / SAMPLE_RATE as f64, proc_s + elapsed);
    }
    let (wer, rtf) = (errors as f64 / words as f64, proc_s / audio_s);
    println!(
        "[{label}] WER {:.2}% ({errors}/{words}), RTF {rtf:.3} over {audio_s:.1} s on {THREADS} threads",
        wer * 100.0
    );
    (wer, rtf)
}

#[test]
fn whisper_wer_on_librivox_fp32_and_int8() {
    let dir = models_dir();
    let _turn = exclusive();
    for int8 in [false, true] {
        let label = if int8 { "int8" } else { "fp32" };
        let started = Instant::now();
        let whisper = Whisper::load(&dir.join("whisper-tiny.en"), int8, THREADS).unwrap();
        println!("[{label}] load {:.2} s", started.elapsed().as_secs_f64());
        whisper.transcribe_text(&clip(&dir, &clips(&dir)[0].0)[..SAMPLE_RATE]).unwrap(); // warm-up
        let (wer, _) = evaluate(&dir, label, |s| whisper.transcribe_text(s).unwrap());
        assert!(wer < MAX_WER, "{label}: WER {wer:.3} ≥ {MAX_WER}");
        let (wer_ts, _) = evaluate(&dir, &format!("{label}+timestamps"), |s| {
            let segments = whisper.transcribe(s).unwrap();
            segments.iter().map(|seg| seg.text.as_str()).collect::<Vec<_>>().join(" ")
        });
        assert!(wer_ts < MAX_WER + 0.05, "{label} with timestamps: WER {wer_ts:.3}");
    }
}

#[test]
fn whisper_shared_by_two_workers_gives_the_same_text() {
    let dir = models_dir();
    let _turn = exclusive();
    let whisper = Arc::new(Whisper::load(&dir.join("whisper-tiny.en"), true, 1).unwrap());
    let names: Vec<String> = clips(&dir).into_iter().take(2).map(|(name, _)| name).collect();
    let audio: Vec<Vec<f32>> = names.iter().map(|n| clip(&dir, n)).collect();
    let alone: Vec<String> = audio.iter().map(|a| whisper.transcribe_text(a).unwrap()).collect();
    let together: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = audio
            .iter()
            .map(|a| {
                let whisper = Arc::clone(&whisper);
                scope.spawn(move || whisper.transcribe_text(a).unwrap())
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    // More than one window is an input error, not a panic.
    let err = whisper.transcribe(&vec![0.0; 30 * SAMPLE_RATE + 1]).unwrap_err();
    assert_eq!(err.code(), "speech_input");
    assert!(whisper.transcribe(&[]).unwrap().is_empty());
}

#[test]
fn segment_timestamps_follow_the_audio_after_vad_windowing() {
    let dir = models_dir();
    let _turn = exclusive();
    // 1 s silence | 0880 "he was not an ill disposed young man" | 3 s silence | 0890 "unless …" | 1 s
    let (first, second) = (
        clip(&dir, "sense_and_sensibility_01_austen_64kb-0880.wav"),
        clip(&dir, "sense_and_sensibility_01_austen_64kb-0890.wav"),
    );
    let mut audio = vec![0.0; SAMPLE_RATE];
    audio.extend_from_slice(&first);
    audio.extend(std::iter::repeat_n(0.0, 3 * SAMPLE_RATE));
    let second_at = audio.len() as f64 / SAMPLE_RATE as f64;
    audio.extend_from_slice(&second);
    audio.extend(std::iter::repeat_n(0.0, SAMPLE_RATE));

    let vad = Vad::load(&dir.join("silero-vad/silero_vad.onnx"), 1).unwrap();
    let probabilities = vad.stream().push(&audio).unwrap();
    let windows = segment(&probabilities, audio.len(), &SegmentParams::default()).unwrap();
    assert_eq!(windows.len(), 1, "a 3 s pause stays inside one window: {windows:?}");
    let window = &windows[0];
    let offset = window.start_sample as f64 / SAMPLE_RATE as f64;
    // The clip's own leading pause plus the 1 s of silence, less the 200 ms VAD padding.
    assert!(offset > 0.5 && offset < 1.5, "the window starts near the first words: {offset}");

    let whisper = Whisper::load(&dir.join("whisper-tiny.en"), false, THREADS).unwrap();
    let segments = whisper.transcribe(&audio[window.start_sample..window.end_sample]).unwrap();
    for s in &segments {
        println!("[{:6.2} → {:6.2}] {}", offset + s.start_s, offset + s.end_s, s.text);
    }
    assert!(segments.windows(2).all(|w| w[0].end_s <= w[1].start_s + 1e-9), "segments are in order");
    assert!(segments.iter().all(|s| s.start_s <= s.end_s && !s.text.is_empty()));
    let unless = segments.iter().find(|s| normalise(&s.text).first().is_some_and(|w| w == "unless"));
    let unless = unless.unwrap_or_else(|| panic!("no segment starts with \"unless\": {segments:?}"));
    let start = offset + unless.start_s;
    println!("second clip placed at {second_at:.2} s, its segment starts at {start:.2} s");
    assert!((start - second_at).abs() <= 1.0, "second clip at {second_at:.2} s, segment at {start:.2} s");
    assert!(offset + segments[0].start_s < second_at - 2.0, "the first clip has its own segment");
}

#[test]
fn a_window_cut_mid_speech_is_transcribed_to_its_end() {
    let dir = models_dir();
    let _turn = exclusive();
    // Two clips three times over (39 s), cut at 30 s in the middle of the third "And Mr. John
    // Dashwood …": Whisper first stops at 26.6 s, and the rest is decoded in a second pass.
    let mut audio = Vec::new();
    for _ in 0..3 {
        audio.extend(clip(&dir, "sense_and_sensibility_01_austen_64kb-0870.wav"));
        audio.extend(clip(&dir, "sense_and_sensibility_01_austen_64kb-0920.wav"));
    }
    audio.truncate(30 * SAMPLE_RATE);
    let whisper = Whisper::load(&dir.join("whisper-tiny.en"), false, THREADS).unwrap();
    let segments = whisper.transcribe(&audio).unwrap();
    for s in &segments {
        println!("[{:6.2} → {:6.2}] {}", s.start_s, s.end_s, s.text);
    }
    assert!(segments.windows(2).all(|w| w[0].end_s <= w[1].start_s + 1e-9), "segments are in order");
    let last = segments.last().expect("segments");
    assert!(last.end_s > 28.0 && last.end_s <= 30.0, "{last:?}");
    assert!(normalise(&last.text).contains(&"dashwood".to_owned()), "{last:?}");
    let words: usize = segments.iter().map(|s| normalise(&s.text).len()).sum();
    assert!(words >= 80, "{words} words");
}

#[test]
fn vad_speech_is_high_and_silence_is_low() {
    let dir = models_dir();
    let _turn = exclusive();
    let vad = Vad::load(&dir.join("silero-vad/silero_vad.onnx"), 1).unwrap();
    let speech = clip(&dir, "sense_and_sensibility_01_austen_64kb-0870.wav");

    // Odd chunk sizes exercise the partial-frame buffer; the result equals one big push.
    let mut stream = vad.stream();
    let mut chunked = Vec::new();
    let started = Instant::now();
    for chunk in speech.chunks(1000) {
        chunked.extend(stream.push(chunk).unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "vad: {} frames in {:.1} ms (RTF {:.4})",
        chunked.len(),
        elapsed * 1e3,
        elapsed * 16e3 / speech.len() as f64
    );
    assert_eq!(chunked.len(), speech.len() / FRAME_SAMPLES);
    assert_eq!(stream.pending(), speech.len() % FRAME_SAMPLES);
    let whole = vad.stream().push(&speech).unwrap();
    assert!(chunked.iter().zip(&whole).all(|(a, b)| (a - b).abs() < 1e-5));

    let speechy = chunked.iter().filter(|&&p| p > 0.5).count() as f64 / chunked.len() as f64;
    println!("speech clip: {:.0}% of {} frames above 0.5", speechy * 100.0, chunked.len());
    assert!(speechy > 0.7, "{speechy}: {chunked:?}");

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let hiss: Vec<f32> = (0..2 * SAMPLE_RATE)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2e-3
        })
        .collect();
    for (name, silence) in [("zeros", vec![0.0; 2 * SAMPLE_RATE]), ("hiss", hiss)] {
        let probabilities = vad.stream().push(&silence).unwrap();
        let max = probabilities.iter().copied().fold(0.0, f32::max);
        println!("{name}: max probability {max:.3}");
        assert!(probabilities.iter().all(|&p| p < 0.2), "{name}: {probabilities:?}");
    }
}

/// A copy of the tiny.en directory whose `encoder.onnx` is `encoder` (the rest linked).
fn whisper_dir_with_encoder(dir: &Path, encoder: &[u8]) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let source = dir.join("whisper-tiny.en");
    for file in ["decoder.onnx", "tokenizer.json", "config.json"] {
        std::os::unix::fs::symlink(source.join(file), copy.path().join(file)).unwrap();
    }
    std::fs::write(copy.path().join("encoder.onnx"), encoder).unwrap();
    copy
}

#[test]
fn corrupt_or_missing_models_are_errors_not_panics() {
    let dir = models_dir();
    let real = std::fs::read(dir.join("whisper-tiny.en/encoder.onnx")).unwrap();
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (name, bytes) in [("garbage", &garbage[..]), ("truncated", &real[..real.len() / 3]), ("empty", &[][..])] {
        let copy = whisper_dir_with_encoder(&dir, bytes);
        let err = Whisper::load(copy.path(), false, 1).expect_err(name);
        println!("{name}: {err}");
        assert_eq!(err.code(), "model_invalid", "{name}: {err}");
        assert!(err.to_string().contains("encoder.onnx"), "{err}");
    }

    let vad_copy = tempfile::tempdir().unwrap();
    std::fs::write(vad_copy.path().join("silero_vad.onnx"), &garbage[..4096]).unwrap();
    assert_eq!(Vad::load(&vad_copy.path().join("silero_vad.onnx"), 1).unwrap_err().code(), "model_invalid");

    // A valid ONNX file of another model: loads, but is not a Whisper encoder.
    let wrong = std::fs::read(dir.join("silero-vad/silero_vad.onnx")).unwrap();
    let copy = whisper_dir_with_encoder(&dir, &wrong);
    assert_eq!(Whisper::load(copy.path(), false, 1).unwrap_err().code(), "model_invalid");

    let missing = dir.join("no-such-model");
    let err = Whisper::load(&missing, false, 1).unwrap_err();
    assert_eq!(err.code(), "model_missing");
    assert!(err.to_string().contains("lectern models fetch"), "{err}");
    assert_eq!(Vad::load(&missing.join("silero_vad.onnx"), 1).unwrap_err().code(), "model_missing");
    let no_int8 = whisper_dir_with_encoder(&dir, &real[..16]);
    assert_eq!(Whisper::load(no_int8.path(), true, 1).unwrap_err().code(), "model_missing");
}
