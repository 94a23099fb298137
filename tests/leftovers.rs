//! What uploads and steps leave behind (issue 9, defect 7): a `kill -9` during a `POST /v1/media`
//! body, a cancelled transcode, resumable uploads nobody finishes, and tenants opening uploads
//! without end. The sweeper removes the leftovers (at start and periodically, counted in
//! `lectern_sweeper_reclaimed_bytes_total`); tus uploads expire (`Upload-Expires`) and a tenant's
//! open uploads are capped in number and in declared bytes.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Env, fixtures, header_of, http, http_get, http_json, wait_for};

fn staging_files(env: &Env, suffix: &str) -> Vec<String> {
    let dir = env.path("data/blobs/.staging");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

fn metric(addr: &str, prefix: &str) -> f64 {
    let (_, text) = http_get(addr, "/metrics").unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn serve(env: &Env) -> common::Server {
    let mut c = env.command();
    c.env("LECTERN_MODELS_SPEECH", "false");
    env.serve_with(c, "serve.log")
}

#[test]
fn a_killed_upload_and_a_cancelled_transcode_leave_nothing_behind() {
    let env = Env::new("");
    let mut server = serve(&env);
    let wav = std::fs::read(fixtures().join("formats/bwf.wav")).unwrap();
    // A body half sent when the server is killed.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(s, "POST /v1/media HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\n\r\n", wav.len())
        .unwrap();
    s.write_all(&wav[..4 << 20]).unwrap();
    let staged_bytes = || {
        staging_files(&env, ".part")
            .iter()
            .map(|n| std::fs::metadata(env.path("data/blobs/.staging").join(n)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
    };
    wait_for(10, "the staging file to hold what arrived", || staged_bytes() >= 2 << 20);
    server.kill9();
    drop(s);
    assert_eq!(staging_files(&env, ".part").len(), 1, "the killed upload's file is still there");

    server = serve(&env);
    assert!(staging_files(&env, ".part").is_empty(), "the start-up sweep removed it");
    let reclaimed = metric(&server.addr, "lectern_sweeper_reclaimed_bytes_total{kind=\"staging\"}");
    assert!(reclaimed >= (2 << 20) as f64, "reclaimed bytes are counted: {reclaimed}");

    // A transcode cancelled half-way removes its staged waveform.
    let mp3 = std::fs::read(fixtures().join("speech-3min-mono.mp3")).unwrap();
    let (status, up) = http_json(&server.addr, "POST", "/v1/media", &[("Content-Type", "audio/mpeg")], &mp3);
    assert_eq!(status, 202, "{up}");
    let job = up["job_id"].as_str().unwrap().to_string();
    wait_for(60, "the transcode to stage its waveform", || !staging_files(&env, ".json.part").is_empty());
    let (status, _, _) = http(&server.addr, "POST", &format!("/v1/jobs/{job}/cancel"), &[], b"");
    assert!(status == 200 || status == 202, "cancel: {status}");
    let done = common::wait_job(&server.addr, &job, 60);
    assert_eq!(done["state"], "cancelled", "{done}");
    wait_for(10, "the cancelled step to clean up", || staging_files(&env, ".json.part").is_empty());
}

#[test]
fn resumable_uploads_expire_and_are_capped_per_tenant() {
    let env = Env::new(
        "[upload]\nexpiry = \"3s\"\nsweep-interval = \"1s\"\nopen-per-tenant = 3\ndeclared-bytes-per-tenant = 10000000\n",
    );
    let server = serve(&env);
    let addr = server.addr.clone();
    let v = ("Tus-Resumable", "1.0.0");
    let (status, head, _) = http(&addr, "OPTIONS", "/v1/uploads", &[], b"");
    assert_eq!(status, 204);
    assert!(header_of(&head, "Tus-Extension").unwrap().contains("expiration"), "{head}");
    let create = |len: &str| http(&addr, "POST", "/v1/uploads", &[v, ("Upload-Length", len)], b"");

    let (status, _, body) = create("10000001");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_open_bytes")), "{body}");
    let mut urls = Vec::new();
    for _ in 0..3 {
        let (status, head, _) = create("1000000");
        assert_eq!(status, 201, "{head}");
        let expires = header_of(&head, "Upload-Expires").expect("Upload-Expires on creation");
        assert!(expires.ends_with("GMT"), "an HTTP date: {expires}");
        urls.push(header_of(&head, "Location").unwrap());
    }
    let (status, head, body) = create("1000");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_open_uploads")), "{body}");
    assert!(header_of(&head, "Retry-After").is_some());
    // Some bytes into one of them, then nobody comes back.
    let ct = ("Content-Type", "application/offset+octet-stream");
    let mp3 = std::fs::read(fixtures().join("speech-44k-stereo.mp3")).unwrap();
    let (status, _, _) = http(&addr, "PATCH", &urls[0], &[v, ct, ("Upload-Offset", "0")], &mp3[..5000]);
    assert_eq!(status, 204);

    let tus_dir = env.path("data/blobs/.staging/tus");
    wait_for(15, "the sweeper to remove the expired uploads", || {
        std::fs::read_dir(&tus_dir).map(|d| d.count()).unwrap_or(0) == 0
    });
    let (status, _, _) = http(&addr, "HEAD", &urls[0], &[v], b"");
    assert!(status == 404 || status == 410, "an expired upload is gone: {status}");
    assert!(metric(&addr, "lectern_sweeper_reclaimed_bytes_total{kind=\"tus_expired\"}") >= 5000.0);
    let (status, head, _) = create("1000000");
    assert_eq!(status, 201, "expired uploads no longer count against the cap: {head}");
    assert!(Path::new(&tus_dir).is_dir());
    std::thread::sleep(Duration::from_millis(10));
}
