//! End-to-end engine benchmark: durable no-op 3-step jobs (`a → b → c`, each step storing a tiny
//! output blob atomically) through the real SQLite journal with `synchronous = FULL`.
//!
//! Two measurements, printed as `key=value` lines:
//! - throughput: `JOBS` jobs enqueued at once, time until every one has succeeded (jobs/s);
//! - latency: jobs enqueued one at a time at `RATE` jobs/s (below saturation), enqueue → first
//!   step start, p50/p99.
//!
//! Knobs (environment): `LECTERN_BENCH_JOBS` (default 2000), `LECTERN_BENCH_RATE` (default 100),
//! `LECTERN_BENCH_LAT_JOBS` (default 500), `LECTERN_BENCH_WORKERS` (default 2),
//! `LECTERN_BENCH_DIR` (where the journal lives; default a temp dir — put it on the disk you mean
//! to measure). Run: `cargo bench --bench pipeline`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern::actors::{Engine, EngineParts};
use lectern::app::{App, EnqueueRequest};
use lectern::clock::{SharedClock, SystemClock};
use lectern::config::{Config, StageOptions};
use lectern::engine::{JobKind, Registry, StepContext, StepError, StepOutput};
use lectern::journal::{JobFilter, JobState, Journal, SqliteJournal};
use lectern::metrics::Metrics;
use lectern::storage::LocalFs;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

type Starts = Arc<Mutex<HashMap<String, Instant>>>;

struct Bench {
    app: App,
    _engine: Engine,
    done: Arc<AtomicUsize>,
    starts: Starts,
    _dir: tempfile::TempDir,
}

fn start(workers: usize) -> Bench {
    let dir = match std::env::var("LECTERN_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let journal: Arc<dyn Journal> = Arc::new(SqliteJournal::open(&dir.path().join("journal.db")).unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let mut config = Config::default();
    config.scheduler.poll_interval = Duration::from_millis(250);
    config.scheduler.tenant_max_in_flight = 64;
    config.stages.insert("noop".into(), StageOptions { workers });
    let done = Arc::new(AtomicUsize::new(0));
    let starts: Starts = Default::default();
    let (d, s) = (done.clone(), starts.clone());
    let registry = Registry::new()
        .kind(JobKind::new("noop3", &[("a", "noop", &[]), ("b", "noop", &["a"]), ("c", "noop", &["b"])]))
        .executor("noop", move |ctx: &StepContext| -> Result<StepOutput, StepError> {
            let a = ctx.attempt();
            if a.step == "a" {
                s.lock().unwrap().insert(a.job_id.clone(), Instant::now());
            }
            let blob = ctx
                .blobs
                .put(&ctx.output_key("out.json"), b"{}")
                .map_err(|e| StepError::transient("storage", e.to_string()))?;
            if a.step == "c" {
                d.fetch_add(1, Ordering::SeqCst);
            }
            Ok(StepOutput { output_ref: Some(blob.key), sha256: Some(blob.sha256), output: None })
        });
    let mut app = App::with(journal.clone(), clock.clone(), config, registry.clone());
    let engine = Engine::start(EngineParts {
        journal,
        clock,
        blobs: Arc::new(LocalFs::new(dir.path().join("blobs"))),
        metrics: Arc::new(Metrics::new()),
        config: app.config.clone(),
        registry,
    })
    .unwrap();
    app.engine = Some(engine.clone());
    Bench { app, _engine: engine, done, starts, _dir: dir }
}

fn req() -> EnqueueRequest {
    EnqueueRequest { kind: "noop3".into(), ..Default::default() }
}

async fn wait_all(b: &Bench, n: usize) {
    while b.done.load(Ordering::SeqCst) < n {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    // The last outcomes are committed right after the executor returns; wait for the journal.
    loop {
        let f = JobFilter { state: Some(JobState::Succeeded), ..Default::default() };
        if b.app.journal.jobs(&f).unwrap().len() >= n {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
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

async fn throughput(jobs: usize, workers: usize) {
    let b = start(workers);
    let app = b.app.clone();
    let t0 = Instant::now();
    let enqueue = actix_web::rt::task::spawn_blocking(move || {
        for _ in 0..jobs {
            app.enqueue(req()).unwrap();
        }
        Instant::now()
    });
    let enqueued_at = enqueue.await.unwrap();
    wait_all(&b, jobs).await;
    let total = t0.elapsed().as_secs_f64();
    let enq = (enqueued_at - t0).as_secs_f64();
    println!("throughput.jobs={jobs}");
    println!("throughput.workers={workers}");
    println!("throughput.enqueue_per_s={:.0}", jobs as f64 / enq);
    println!("throughput.jobs_per_s={:.1}", jobs as f64 / total);
    println!("throughput.steps_per_s={:.1}", 3.0 * jobs as f64 / total);
}

async fn latency(jobs: usize, rate: usize, workers: usize) {
    let b = start(workers);
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let mut enqueued: Vec<(String, Instant)> = Vec::with_capacity(jobs);
    let t0 = Instant::now();
    for i in 0..jobs {
        let due = t0 + gap * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            actix_rt::time::sleep(wait).await;
        }
        let app = b.app.clone();
        let at = Instant::now();
        let id = actix_web::rt::task::spawn_blocking(move || app.enqueue(req()).unwrap().job.id).await.unwrap();
        enqueued.push((id, at));
    }
    wait_all(&b, jobs).await;
    let starts = b.starts.lock().unwrap();
    let mut ms: Vec<f64> =
        enqueued.iter().map(|(id, at)| (starts[id].duration_since(*at)).as_secs_f64() * 1e3).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    println!("latency.jobs={jobs}");
    println!("latency.rate_per_s={rate}");
    println!("latency.enqueue_to_start_ms.p50={:.2}", percentile(&ms, 0.50));
    println!("latency.enqueue_to_start_ms.p99={:.2}", percentile(&ms, 0.99));
    println!("latency.enqueue_to_start_ms.max={:.2}", ms[ms.len() - 1]);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then run a smoke size.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let workers = knob("LECTERN_BENCH_WORKERS", 2);
    let jobs = if smoke { 20 } else { knob("LECTERN_BENCH_JOBS", 2000) };
    let lat_jobs = if smoke { 20 } else { knob("LECTERN_BENCH_LAT_JOBS", 500) };
    let rate = knob("LECTERN_BENCH_RATE", 100);
    actix::System::new().block_on(async move {
        throughput(jobs, workers).await;
        latency(lat_jobs, rate, workers).await;
    });
    println!("peak_rss_kib={}", peak_rss_kib());
}
