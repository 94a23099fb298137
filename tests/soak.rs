//! A bounded soak against a real `lectern serve` with every stage on (issue 9): for
//! `LECTERN_SOAK_SECS` (60 s by default) a driver mixes uploads of every kind (good files of
//! several formats, a file that dies with a named code, one that is refused), tus uploads that
//! stall, are taken over and resumed, searches, cancels, `kill -9` and SIGTERM restarts. Then it
//! lets the work drain and checks that every accepted upload ended `succeeded`, `dead` with a
//! named code or `cancelled` (by the driver), that nothing is left running, that no orphan file
//! remains, and that RSS stayed under a bound. It prints its figures.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Env, Server, fixtures, header_of, http, http_get, http_json, wait_for};

/// RSS the server may reach with the models loaded, in MiB.
const RSS_BOUND_MIB: f64 = 1536.0;

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[derive(Default, Debug)]
struct Figures {
    accepted: usize,
    refused: usize,
    tus_resumed: usize,
    searches: usize,
    search_hits: usize,
    cancels: usize,
    kills: usize,
    terms: usize,
    max_rss_mib: f64,
}

/// A tus upload that stalls half-way on one connection and is finished from another: the job id.
fn tus_with_takeover(addr: &str, bytes: &[u8]) -> Option<String> {
    let v = ("Tus-Resumable", "1.0.0");
    let len = bytes.len().to_string();
    let (status, head, _) = http(addr, "POST", "/v1/uploads", &[v, ("Upload-Length", &len)], b"");
    if status != 201 {
        return None;
    }
    let url = header_of(&head, "Location")?;
    let mut stalled = TcpStream::connect(addr).ok()?;
    let half = bytes.len() / 2;
    let _ = write!(
        stalled,
        "PATCH {url} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
    );
    let _ = stalled.write_all(&bytes[..half]);
    std::thread::sleep(Duration::from_millis(200));
    let (status, head, _) = http(addr, "HEAD", &url, &[v], b"");
    if status != 200 {
        return None;
    }
    let offset: usize = header_of(&head, "Upload-Offset")?.parse().ok()?;
    let off = offset.to_string();
    let ct = ("Content-Type", "application/offset+octet-stream");
    let (status, head, _) = http(addr, "PATCH", &url, &[v, ct, ("Upload-Offset", &off)], &bytes[offset..]);
    (status == 204).then(|| header_of(&head, "Lectern-Job-Id")).flatten()
}

#[test]
fn soak_uploads_resumes_searches_cancels_and_kills() {
    let secs: u64 = std::env::var("LECTERN_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let env = Env::new("[upload]\nidle-timeout = \"5s\"\n[retry]\ninitial-delay = \"500ms\"\nmax-delay = \"2s\"\n");
    let serve = || env.serve_with(env.command(), "serve.log");
    let mut server: Server = serve();
    let addr = server.addr.clone();
    let fx = fixtures();
    let good: Vec<(Vec<u8>, &str)> = [
        ("speech-22k-mono.mp3", "audio/mpeg"),
        ("formats/opus.ogg", "audio/ogg"),
        ("formats/aac-moov-at-end.m4a", "audio/mp4"),
        ("speech-44k-mono.flac", "audio/flac"),
        ("speech-8k-mono.wav", "audio/wav"),
        ("formats/webm-opus.webm", "audio/webm"),
    ]
    .into_iter()
    .map(|(f, ct)| (std::fs::read(fx.join(f)).unwrap(), ct))
    .collect();
    let dies = std::fs::read(fx.join("bad/header-only.wav")).unwrap();
    let refused = std::fs::read(fx.join("bad/text-named.mp3")).unwrap();

    let mut f = Figures::default();
    let mut jobs: BTreeMap<String, bool> = BTreeMap::new(); // job → cancelled by the driver
    let started = Instant::now();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick += 1;
        f.max_rss_mib = f.max_rss_mib.max(rss_mib(server.pid()));
        let (body, ct) = &good[tick as usize % good.len()];
        let (status, up) = http_json(&addr, "POST", "/v1/media", &[("Content-Type", ct)], body);
        assert_eq!(status, 202, "an upload of a good file: {up}");
        jobs.insert(up["job_id"].as_str().unwrap().to_string(), false);
        f.accepted += 1;
        match tick % 6 {
            0 => {
                let (status, up) = http_json(&addr, "POST", "/v1/media", &[("Content-Type", "audio/wav")], &dies);
                assert_eq!(status, 202, "{up}");
                jobs.insert(up["job_id"].as_str().unwrap().to_string(), false);
                f.accepted += 1;
            }
            1 => {
                let (status, _, _) = http(&addr, "POST", "/v1/media", &[("Content-Type", "audio/mpeg")], &refused);
                assert_eq!(status, 415);
                f.refused += 1;
            }
            2 => {
                if let Some(job) = tus_with_takeover(&addr, &good[0].0) {
                    jobs.insert(job, false);
                    f.tus_resumed += 1;
                    f.accepted += 1;
                }
            }
            3 => {
                // Cancel the newest job (it may already have finished: then it stays as it is).
                let newest = jobs.keys().next_back().cloned().unwrap();
                let (status, _, _) = http(&addr, "POST", &format!("/v1/jobs/{newest}/cancel"), &[], b"");
                if status == 200 || status == 202 {
                    jobs.insert(newest, true);
                    f.cancels += 1;
                }
            }
            _ => {
                let (status, r) = http_json(&addr, "GET", "/v1/search?q=forgiveness%20and%20debt&k=5", &[], b"");
                assert!(status == 200 || status == 503, "search: {r}");
                f.searches += 1;
                f.search_hits += r["results"].as_array().map_or(0, Vec::len);
            }
        }
        if tick % 15 == 7 {
            server.kill9();
            server = serve();
            f.kills += 1;
        } else if tick % 15 == 14 {
            server.terminate(Duration::from_secs(30));
            server = serve();
            f.terms += 1;
        }
        std::thread::sleep(Duration::from_millis(1500));
    }

    // Drain: every accepted upload ends, with a named code when it died.
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    for (job, cancelled) in &jobs {
        let mut last = serde_json::Value::Null;
        wait_for(600, &format!("job {job} to end"), || {
            f.max_rss_mib = f.max_rss_mib.max(rss_mib(server.pid()));
            last = http_json(&addr, "GET", &format!("/v1/jobs/{job}"), &[], b"").1;
            matches!(last["state"].as_str(), Some("succeeded" | "dead" | "cancelled"))
        });
        let state = last["state"].as_str().unwrap().to_string();
        match state.as_str() {
            "dead" => {
                let codes: Vec<&str> =
                    last["steps"].as_array().unwrap().iter().filter_map(|s| s["error"]["code"].as_str()).collect();
                assert!(!codes.is_empty() && codes.iter().all(|c| !c.is_empty()), "dead without a named code: {last}");
            }
            "cancelled" => assert!(cancelled, "only the driver cancels: {last}"),
            _ => {}
        }
        *ended.entry(state).or_default() += 1;
    }
    let (_, running) = http_json(&addr, "GET", "/v1/jobs?state=running", &[], b"");
    assert_eq!(running["jobs"].as_array().map(Vec::len), Some(0), "nothing is left running: {running}");
    let (_, pipeline) = http_get(&addr, "/debug/pipeline").unwrap();
    let pipeline: serde_json::Value = serde_json::from_str(&pipeline).unwrap();
    assert_eq!(pipeline["scheduler"]["running"].as_array().map(Vec::len), Some(0), "{pipeline}");

    // No orphans: staging holds no upload or step leftovers, every source has its media record.
    let staging = env.path("data/blobs/.staging");
    let leftovers: Vec<String> = std::fs::read_dir(&staging)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leftovers.is_empty(), "staging leftovers: {leftovers:?}");
    let tmp = std::fs::read_dir(staging.join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp, 0, "temp files left behind");
    let (_, media) = http_json(&addr, "GET", "/v1/media?limit=500", &[], b"");
    let known: Vec<&str> = media["media"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    for entry in std::fs::read_dir(env.path("data/blobs/media")).unwrap().filter_map(|e| e.ok()) {
        let id = entry.file_name().to_string_lossy().into_owned();
        assert!(known.contains(&id.as_str()), "a stored media folder without a media record: {id}");
    }
    assert!(f.max_rss_mib < RSS_BOUND_MIB, "RSS reached {:.0} MiB", f.max_rss_mib);
    println!(
        "soak {secs} s: {} uploads accepted ({} over tus with a takeover), {} refused, {} searches ({} hits), \
         {} cancels, {} kill -9, {} SIGTERM; ended {:?}; peak RSS {:.0} MiB",
        f.accepted,
        f.tus_resumed,
        f.refused,
        f.searches,
        f.search_hits,
        f.cancels,
        f.kills,
        f.terms,
        ended,
        f.max_rss_mib
    );
    assert!(ended.get("succeeded").copied().unwrap_or(0) > 0);
}
