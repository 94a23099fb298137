//! Speech front end (criterion): Whisper's log-mel spectrogram of one 30 s window, and cutting
//! three hours of VAD probabilities into windows.
//!
//! `cargo bench --bench mel`. Single-threaded; the mel runs once per window next to the model.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lectern::speech::mel::{LogMel, OUTPUT_LEN, WINDOW_SAMPLES};
use lectern::speech::{SegmentParams, segment};

/// A deterministic speech-like test signal: a sweeping tone under noise.
fn signal(len: usize) -> Vec<f32> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let t = i as f64 / 16_000.0;
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
            ((std::f64::consts::TAU * (200.0 * t + 50.0 * t * t)).sin() * 0.5 + 0.05 * noise) as f32
        })
        .collect()
}

fn log_mel(c: &mut Criterion) {
    let samples = signal(WINDOW_SAMPLES);
    let mut mel = LogMel::new();
    let mut out = vec![0.0; OUTPUT_LEN];
    let mut g = c.benchmark_group("speech::mel");
    g.throughput(Throughput::Bytes((WINDOW_SAMPLES * size_of::<f32>()) as u64));
    g.bench_function("log_mel_30s_window", |b| b.iter(|| mel.compute(black_box(&samples), &mut out).unwrap()));
    g.finish();
}

fn segment_3h(c: &mut Criterion) {
    let frames = 3 * 3600 * 16_000 / 512;
    // 6 s of speech, 1.5 s of pause, repeated.
    let probs: Vec<f32> = (0..frames).map(|i| if i % 234 < 187 { 0.9 } else { 0.05 }).collect();
    let params = SegmentParams::default();
    let mut g = c.benchmark_group("speech::segment");
    g.throughput(Throughput::Bytes((frames * size_of::<f32>()) as u64));
    g.bench_function("segment_3h", |b| b.iter(|| segment(black_box(&probs), frames * 512, &params).unwrap()));
    g.finish();
}

criterion_group!(benches, log_mel, segment_3h);
criterion_main!(benches);
