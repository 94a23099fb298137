//! What the API adds to every request (criterion): the metrics middleware's two updates (a
//! counter by route/method/status and a latency histogram), and the bearer-key path of auth
//! (SHA-256 of the key, the cache lookup that path does, and the tenant's token bucket).
//!
//!   cargo bench --bench request_overhead
//!
//! End-to-end latencies over loopback (p50/p99 with and without auth) are measured by
//! `benches/api/load.py` against a release server.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;

use criterion::{Criterion, criterion_group, criterion_main};
use lectern::auth::{Caller, hash_key, new_api_key};
use lectern::http::auth::AuthState;
use lectern::metrics::{HTTP_REQUESTS, HTTP_SECONDS, Metrics};

fn overhead(c: &mut Criterion) {
    let m = Metrics::new();
    // A realistic label set: a dozen routes already recorded.
    for r in 0..12 {
        let route = format!("/v1/route{r}/{{id}}");
        m.inc(HTTP_REQUESTS, &[("route", &route), ("method", "GET"), ("status", "200")]);
    }
    c.bench_function("metrics: request counter + latency histogram", |b| {
        b.iter(|| {
            let labels = [("route", "/v1/jobs/{id}"), ("method", "GET"), ("status", "200")];
            m.inc(HTTP_REQUESTS, black_box(&labels));
            m.observe(HTTP_SECONDS, &[("route", "/v1/jobs/{id}")], black_box(0.000_2));
        })
    });

    let (key, hash) = new_api_key();
    let cache: Mutex<HashMap<String, Caller>> = Mutex::new(HashMap::new());
    cache.lock().unwrap().insert(hash, Caller::tenant("ten_bench"));
    let buckets = AuthState::default();
    c.bench_function("auth: hash key + cache hit + token bucket", |b| {
        b.iter(|| {
            let h = hash_key(black_box(&key));
            let caller = cache.lock().unwrap().get(&h).cloned().expect("cached");
            buckets.take(&caller.tenant, 1e9, u32::MAX).expect("within the rate");
        })
    });
}

criterion_group!(benches, overhead);
criterion_main!(benches);
