//! Resumable uploads (tus 1.0.0): the reference client (tus-js-client from npm) uploads part of a
//! file, the server is killed with SIGKILL, restarted, and the client resumes from the durable
//! offset; the file arrives whole and becomes media + job. Protocol edge cases over raw HTTP.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, fixtures, http, http_json, wait_for};

fn tus(args: &[&str]) -> serde_json::Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(dir.join("node_modules/tus-js-client").is_dir(), "run `npm ci` in tests/browser first");
    let out = Command::new("node").current_dir(&dir).arg("tus_upload.mjs").args(args).output().expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tus client failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

const V: (&str, &str) = ("Tus-Resumable", "1.0.0");

#[test]
fn an_interrupted_upload_resumes_after_a_server_crash() {
    let file = fixtures().join("speech-44k-stereo.mp3");
    let bytes = std::fs::read(&file).unwrap();
    let env = Env::new("");
    let mut first = env.serve("serve-1.log");
    let endpoint = format!("http://{}/v1/uploads", first.addr);
    let part = tus(&[file.to_str().unwrap(), &endpoint, "--stop-after", &(bytes.len() / 3).to_string()]);
    let url = part["url"].as_str().expect("an upload URL").to_string();
    let path = url.split_once("/v1/").map(|(_, p)| format!("/v1/{p}")).unwrap();
    let (status, head, _) = http(&first.addr, "HEAD", &path, &[V], b"");
    assert_eq!(status, 200);
    let offset: usize = header(&head, "Upload-Offset").unwrap().parse().unwrap();
    assert!(offset >= bytes.len() / 3 && offset < bytes.len(), "offset {offset} of {}", bytes.len());
    assert_eq!(header(&head, "Upload-Length").unwrap(), bytes.len().to_string());

    first.kill9();
    let second = env.serve("serve-2.log");
    let (_, head, _) = http(&second.addr, "HEAD", &path, &[V], b"");
    assert_eq!(
        header(&head, "Upload-Offset").unwrap(),
        offset.to_string(),
        "the acknowledged bytes survived the crash"
    );
    let done = tus(&[file.to_str().unwrap(), &endpoint, "--resume", &url]);
    assert_eq!(done["done"], true, "{done}");

    let (_, head, _) = http(&second.addr, "HEAD", &path, &[V], b"");
    assert_eq!(header(&head, "Upload-Offset").unwrap(), bytes.len().to_string());
    let media = header(&head, "Lectern-Media-Id").expect("the finished upload names its media");
    let job = header(&head, "Lectern-Job-Id").unwrap();
    let stored = std::fs::read(env.path(&format!("data/blobs/media/{media}/source"))).unwrap();
    assert!(stored == bytes, "the stored file differs from the original");
    wait_for(120, "the job of the tus upload", || {
        http_json(&second.addr, "GET", &format!("/v1/jobs/{job}"), &[], b"").1["state"] == "succeeded"
    });
    let (_, m) = http_json(&second.addr, "GET", &format!("/v1/media/{media}"), &[], b"");
    assert_eq!(m["title"], "tus upload");
}

#[test]
fn the_protocol_rules_are_enforced() {
    let env = Env::new("");
    let mut cmd = env.command();
    cmd.env("LECTERN_UPLOAD_MAX_BYTES", "100000000");
    let server = env.serve_with(cmd, "serve.log");
    let a = server.addr.as_str();

    let (status, head, _) = http(a, "OPTIONS", "/v1/uploads", &[], b"");
    assert_eq!(status, 204);
    assert_eq!(header(&head, "Tus-Version").as_deref(), Some("1.0.0"));
    assert!(header(&head, "Tus-Extension").unwrap().contains("termination"));

    let (status, head, _) = http(a, "POST", "/v1/uploads", &[("Upload-Length", "10")], b"");
    assert_eq!(status, 412, "Tus-Resumable is required");
    assert_eq!(header(&head, "Tus-Version").as_deref(), Some("1.0.0"), "a 412 names the supported versions");
    let (status, v) = http_json(a, "POST", "/v1/uploads", &[V, ("Upload-Length", "200000000")], b"");
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("payload_too_large")));
    let (status, v) = http_json(a, "POST", "/v1/uploads", &[V], b"");
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("upload_length")));

    let text = b"this is plain text and certainly not any kind of audio file".repeat(10);
    let len = text.len().to_string();
    let (status, head, _) = http(a, "POST", "/v1/uploads", &[V, ("Upload-Length", &len)], b"");
    assert_eq!(status, 201);
    let loc = header(&head, "Location").unwrap();
    let patch = |offset: &str, ct: &str, body: &[u8]| {
        http_json(a, "PATCH", &loc, &[V, ("Upload-Offset", offset), ("Content-Type", ct)], body)
    };
    assert_eq!(patch("0", "application/octet-stream", &text).0, 415, "wrong content type");
    assert_eq!(patch("5", "application/offset+octet-stream", &text).0, 409, "wrong offset");
    let (status, v) = patch("0", "application/offset+octet-stream", &text);
    assert_eq!((status, v["error"]["code"].as_str()), (415, Some("unsupported_audio")), "not audio: {v}");
    assert_eq!(http(a, "HEAD", &loc, &[V], b"").0, 404, "a refused upload is gone");

    let (_, head, _) = http(a, "POST", "/v1/uploads", &[V, ("Upload-Length", "1000")], b"");
    let loc = header(&head, "Location").unwrap();
    assert_eq!(http(a, "DELETE", &loc, &[V], b"").0, 204);
    assert_eq!(http(a, "HEAD", &loc, &[V], b"").0, 404);
    assert_eq!(http(a, "HEAD", "/v1/uploads/..%2F..%2Fjournal.db", &[V], b"").0, 404);
}
