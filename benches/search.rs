//! Search latency and recall of the embedded index at 100 k and 1 M chunks.
//!
//!   cargo bench --bench search                        # 100 000 chunks
//!   LECTERN_BENCH_CHUNKS=1000000 cargo bench --bench search
//!
//! Vectors: 384-d unit vectors around 2 000 topic centroids (cosine to their centroid ≈ 0.6, like
//! chunks of the same subject), each chunk with 12 words drawn from a 20 000-word vocabulary (Zipf
//! -like) for the lexical side. Queries are fresh vectors near random centroids, so their exact
//! neighbours are dense and the int8 scan must rank near-ties right. recall@10 compares with an
//! exact f32 brute force over the same vectors. Without `--bench` (as `cargo test --benches` runs
//! it) a 2 000-chunk smoke size runs.

use std::time::Instant;

use lectern::index::{DIM, Index, Mode, NewChunk, Query};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.into_iter().map(|x| x / n).collect()
}

fn gauss(rng: &mut StdRng) -> f32 {
    // Box–Muller.
    let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}

fn near(rng: &mut StdRng, c: &[f32], noise: f32) -> Vec<f32> {
    unit(c.iter().map(|x| x + noise * gauss(rng) / (DIM as f32).sqrt()).collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke { 2_000 } else { knob("LECTERN_BENCH_CHUNKS", 100_000) };
    let queries = if smoke { 20 } else { knob("LECTERN_BENCH_QUERIES", 300) };
    let per_media = 500;
    let mut rng = StdRng::seed_from_u64(42);
    let centroids: Vec<Vec<f32>> = (0..2000).map(|_| unit((0..DIM).map(|_| gauss(&mut rng)).collect())).collect();
    let vocab: Vec<String> = (0..20_000).map(|i| format!("w{i:x}")).collect();
    let word = |rng: &mut StdRng| {
        // Zipf-like: small indices much more often.
        let r: f64 = rng.random_range(0.0..1.0);
        &vocab[((20_000f64).powf(r) as usize).saturating_sub(1).min(19_999)]
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let ix = Index::open(&dir.path().join("index.sqlite")).expect("index");
    let mut all: Vec<Vec<f32>> = Vec::with_capacity(n);
    let t0 = Instant::now();
    let mut m = 0;
    while all.len() < n {
        let take = per_media.min(n - all.len());
        let chunks: Vec<NewChunk> = (0..take)
            .map(|i| {
                let c = &centroids[rng.random_range(0..centroids.len())];
                let v = near(&mut rng, c, 1.3);
                let text = (0..12).map(|_| word(&mut rng).as_str()).collect::<Vec<_>>().join(" ");
                NewChunk { start_s: i as f64 * 25.0, end_s: i as f64 * 25.0 + 30.0, text, vector: v }
            })
            .collect();
        all.extend(chunks.iter().map(|c| c.vector.clone()));
        ix.replace_media("bench", &format!("m{m:06}"), None, "bench", &chunks).expect("insert");
        m += 1;
    }
    let build_s = t0.elapsed().as_secs_f64();
    drop(ix);
    let t1 = Instant::now();
    let ix = Index::open(&dir.path().join("index.sqlite")).expect("reopen");
    let _ = ix.len(); // vectors load on first use: count that load here
    let load_s = t1.elapsed().as_secs_f64();
    let rss_index = peak_rss_kib();

    let mut lat = Vec::with_capacity(queries);
    let mut lex = Vec::with_capacity(queries);
    let mut hyb = Vec::with_capacity(queries);
    let mut found = 0usize;
    for _ in 0..queries {
        let c = &centroids[rng.random_range(0..centroids.len())];
        let qv = near(&mut rng, c, 1.3);
        let text = (0..3).map(|_| word(&mut rng).as_str()).collect::<Vec<_>>().join(" ");
        let q = |mode| Query { tenant: "bench", text: &text, vector: Some(&qv), k: 10, mode, media_id: None };
        let t = Instant::now();
        let hits = ix.search(&q(Mode::Vector)).expect("search");
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        ix.search(&q(Mode::Lexical)).expect("lexical");
        lex.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        ix.search(&q(Mode::Hybrid)).expect("hybrid");
        hyb.push(t.elapsed().as_secs_f64() * 1e3);
        // Exact top 10 by f32 brute force.
        let mut exact: Vec<(usize, f32)> =
            all.iter().enumerate().map(|(i, v)| (i, v.iter().zip(&qv).map(|(a, b)| a * b).sum())).collect();
        exact.select_nth_unstable_by(10, |a, b| b.1.total_cmp(&a.1));
        let want: Vec<(String, f64)> = exact[..10]
            .iter()
            .map(|&(i, _)| (format!("m{:06}", i / per_media), (i % per_media) as f64 * 25.0))
            .collect();
        found += hits.iter().filter(|h| want.contains(&(h.media_id.clone(), h.start_s))).count();
    }
    for v in [&mut lat, &mut lex, &mut hyb] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    println!("search.chunks={n}");
    println!("search.build_s={build_s:.1}");
    println!("search.load_s={load_s:.2}");
    println!("search.vector_ms.p50={:.2}", percentile(&lat, 0.5));
    println!("search.vector_ms.p99={:.2}", percentile(&lat, 0.99));
    println!("search.lexical_ms.p50={:.2}", percentile(&lex, 0.5));
    println!("search.lexical_ms.p99={:.2}", percentile(&lex, 0.99));
    println!("search.hybrid_ms.p50={:.2}", percentile(&hyb, 0.5));
    println!("search.hybrid_ms.p99={:.2}", percentile(&hyb, 0.99));
    println!("search.recall_at_10={:.4}", found as f64 / (10 * queries) as f64);
    println!("search.index_vectors_mib={:.1}", (n * (DIM + 4 + 8)) as f64 / 1048576.0);
    println!("search.peak_rss_kib={rss_index} (includes the bench's own f32 copy of every vector)");
}
