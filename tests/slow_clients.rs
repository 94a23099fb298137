//! Slow and stalled clients against a real `lectern serve` (issue 9, defect 1): a body that stops,
//! a body that trickles, a peer that goes away, a tus PATCH that stalls while its client resumes
//! from a new connection. None may keep an upload slot, and a tus upload keeps what arrived.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Env, Server, fixtures, header_of, http, http_json, wait_job};

/// A request whose body the test sends by hand.
struct Raw {
    s: TcpStream,
}

impl Raw {
    /// Sends the head of a request that announces `len` body bytes.
    fn start(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], len: usize) -> Raw {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {len}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        Raw { s }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok() && self.s.flush().is_ok()
    }

    /// Reads the answer: (status, JSON body); the server closes the connection after it.
    fn answer(&mut self) -> (u16, serde_json::Value) {
        let mut buf = Vec::new();
        let _ = self.s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }
}

const AUDIO: (&str, &str) = ("Content-Type", "audio/mpeg");

fn serve(env: &Env) -> Server {
    let mut c = env.command();
    c.env("LECTERN_MODELS_SPEECH", "false");
    env.serve_with(c, "serve.log")
}

#[test]
fn stalled_and_trickling_bodies_lose_their_upload_slot() {
    let env = Env::new("[upload]\nidle-timeout = \"2s\"\nmin-rate = 1024\n[http]\nuploads-per-tenant = 4\n");
    let server = serve(&env);
    let addr = server.addr.clone();
    let mp3 = std::fs::read(fixtures().join("speech-44k-stereo.mp3")).unwrap();

    // Four uploads announce a megabyte, send ten bytes and go quiet: the tenant is at its cap.
    let started = Instant::now();
    let mut stalled: Vec<Raw> = (0..4)
        .map(|_| {
            let mut r = Raw::start(&addr, "POST", "/v1/media", &[AUDIO], 1 << 20);
            assert!(r.send(&mp3[..10]));
            r
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http_json(&addr, "POST", "/v1/media", &[AUDIO], &mp3);
    assert_eq!(status, 429, "the stalled uploads hold the tenant's slots: {body}");
    // Each is cut off after the idle timeout, with a JSON 408, and its slot is freed.
    for r in &mut stalled {
        let (status, body) = r.answer();
        assert_eq!((status, body["error"]["code"].as_str()), (408, Some("upload_timeout")), "{body}");
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(6), "the idle timeout is 2 s, the cut took {waited:?}");
    let (status, body) = http_json(&addr, "POST", "/v1/media", &[AUDIO], &mp3);
    assert_eq!(status, 202, "the slots are free again: {body}");

    // One byte every 100 ms is alive but far below 1 KiB/s: cut off too.
    let mut trickle = Raw::start(&addr, "POST", "/v1/media", &[AUDIO], 1 << 20);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(10) && trickle.send(&mp3[sent..sent + 1]) {
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = trickle.answer();
    assert_eq!((status, body["error"]["code"].as_str()), (408, Some("upload_too_slow")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(6), "cut after one 2 s window, took {:?}", started.elapsed());

    // A peer that goes away frees its slot at once, not after a timeout.
    let gone: Vec<Raw> = (0..4)
        .map(|_| {
            let mut r = Raw::start(&addr, "POST", "/v1/media", &[AUDIO], 1 << 20);
            assert!(r.send(&mp3[..1000]));
            r
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = http_json(&addr, "POST", "/v1/media", &[AUDIO], &mp3);
    assert_eq!(status, 202, "closed connections must not hold slots: {body}");
    let staging = env.path("data/blobs/.staging");
    let leftovers: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("upl_"))
        .collect();
    assert!(leftovers.is_empty(), "cut-off uploads leave no staging files: {leftovers:?}");
}

#[test]
fn a_new_connection_takes_over_a_stalled_tus_patch() {
    // A long idle timeout: the takeover, not the timeout, must free the upload.
    let env = Env::new("[upload]\nidle-timeout = \"60s\"\n");
    let server = serve(&env);
    let addr = server.addr.clone();
    let mp3 = std::fs::read(fixtures().join("speech-44k-stereo.mp3")).unwrap();
    let v = ("Tus-Resumable", "1.0.0");
    let len = mp3.len().to_string();
    let (status, head, _) = http(&addr, "POST", "/v1/uploads", &[v, ("Upload-Length", &len)], b"");
    assert_eq!(status, 201, "{head}");
    let url = header_of(&head, "Location").unwrap();
    assert!(header_of(&head, "Upload-Expires").is_some(), "tus expiration: {head}");

    // The first PATCH sends 200 000 bytes of the whole file and stalls (a phone that lost signal).
    let ct = ("Content-Type", "application/offset+octet-stream");
    let mut first = Raw::start(&addr, "PATCH", &url, &[v, ct, ("Upload-Offset", "0")], mp3.len());
    assert!(first.send(&mp3[..200_000]));
    std::thread::sleep(Duration::from_millis(500));

    // The client reconnects: HEAD takes the upload over, the stalled PATCH stores what arrived.
    let started = Instant::now();
    let (status, head, _) = http(&addr, "HEAD", &url, &[v], b"");
    assert_eq!(status, 200, "{head}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let offset: usize = header_of(&head, "Upload-Offset").unwrap().parse().unwrap();
    assert_eq!(offset, 200_000, "every byte that arrived is kept (fsynced) and counted");
    let (status, body) = first.answer();
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("upload_taken_over")), "{body}");

    let off = offset.to_string();
    let (status, head, body) = http(&addr, "PATCH", &url, &[v, ct, ("Upload-Offset", &off)], &mp3[offset..]);
    assert_eq!(status, 204, "{head} {}", String::from_utf8_lossy(&body));
    let job = header_of(&head, "Lectern-Job-Id").expect("the last PATCH names the job");
    assert_eq!(wait_job(&addr, &job, 120)["state"], "succeeded");
}
