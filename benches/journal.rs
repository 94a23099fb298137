//! Journal operations on the SQLite backend (criterion): the per-job write path and the
//! scheduler's read path with a deep backlog.
//!
//! `cargo bench --bench journal`. Writes are fsynced (`synchronous = FULL`), so they measure the
//! disk as much as the code; `LECTERN_BENCH_DIR` chooses where the database lives.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lectern::journal::conformance_tests::new_job;
use lectern::journal::{DEFAULT_TENANT, Journal, Outcome, SqliteJournal};

fn dir() -> tempfile::TempDir {
    match std::env::var("LECTERN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    }
}

const STAGES: &[&str] = &["probe", "transcode", "transcribe", "embed", "notify"];

fn write_path(c: &mut Criterion) {
    let d = dir();
    let j = SqliteJournal::open(&d.path().join("j.db")).unwrap();
    let mut g = c.benchmark_group("journal::sqlite");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("enqueue_5_step_job", |b| b.iter(|| j.enqueue(new_job(DEFAULT_TENANT), 1).unwrap()));
    g.bench_function("claim_and_finish_one_step", |b| {
        b.iter(|| {
            let id = j.enqueue(new_job(DEFAULT_TENANT), 1).unwrap().job.id;
            let r = j.ready_steps("tenant:default", &["probe"], 1, 1).unwrap();
            let c = j.claim(&r, "bench", 2).unwrap().pop().unwrap().unwrap();
            let done = Outcome::Succeeded { output_ref: None, sha256: None, output: None };
            j.finish(&[(c.attempt, done)], 3).unwrap();
            id
        })
    });
    g.finish();
}

fn read_path_with_backlog(c: &mut Criterion) {
    let d = dir();
    let j = SqliteJournal::open(&d.path().join("j.db")).unwrap();
    let big = j.create_tenant("big", 0).unwrap();
    for i in 0..10_000 {
        j.enqueue(new_job(if i % 1000 == 0 { DEFAULT_TENANT } else { &big.id }), 1).unwrap();
    }
    let mut g = c.benchmark_group("journal::sqlite::backlog_10k");
    g.bench_function("active_queues", |b| b.iter(|| j.active_queues(10).unwrap()));
    let q = format!("tenant:{}", big.id);
    g.bench_function("ready_steps_limit_8", |b| b.iter(|| j.ready_steps(&q, STAGES, 10, 8).unwrap()));
    g.bench_function("has_ready", |b| b.iter(|| j.has_ready("probe", 10).unwrap()));
    g.bench_function("queue_stats", |b| b.iter(|| j.queue_stats(10).unwrap()));
    g.finish();
}

criterion_group!(benches, write_path, read_path_with_backlog);
criterion_main!(benches);
