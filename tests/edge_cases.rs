//! The smaller defects of issue 9 (item 8), each against a real `lectern serve`: `HEAD` and CORS
//! preflights on every route, titles bounded and free of control characters, invalid UTF-8
//! refused, tus `Upload-Length: -1` explained, `Expect: 100-continue` answered with the refusal
//! instead of `100 Continue`, a dead job's never-run steps shown `skipped`, the `default` tenant's
//! real creation date, and an empty operator key refused at start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Env, fixtures, header_of, http, http_json, multipart, wait_job};

fn serve(env: &Env) -> common::Server {
    let mut c = env.command();
    c.env("LECTERN_MODELS_SPEECH", "false");
    env.serve_with(c, "serve.log")
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default()["error"]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn head_and_preflight_work_on_every_route() {
    let env = Env::new("");
    let server = serve(&env);
    for path in ["/healthz", "/readyz", "/v1/jobs", "/v1/media", "/openapi.json"] {
        let (get_status, get_head, get_body) = http(&server.addr, "GET", path, &[], b"");
        let (status, head, body) = http(&server.addr, "HEAD", path, &[], b"");
        assert_eq!(status, get_status, "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path} has no body");
        assert_eq!(header_of(&head, "Content-Type"), header_of(&get_head, "Content-Type"), "{path}");
        assert!(!get_body.is_empty());
    }
    let origin = ("Origin", "https://church.example");
    let ask = ("Access-Control-Request-Method", "POST");
    let (status, head, _) = http(&server.addr, "OPTIONS", "/v1/media", &[origin, ask], b"");
    assert_eq!(status, 204, "{head}");
    assert_eq!(header_of(&head, "Access-Control-Allow-Origin").as_deref(), Some("*"));
    assert!(header_of(&head, "Access-Control-Allow-Methods").unwrap().contains("POST"), "{head}");
    assert!(header_of(&head, "Access-Control-Allow-Headers").unwrap().contains("Authorization"), "{head}");
    let (_, head, _) = http(&server.addr, "GET", "/v1/jobs", &[origin], b"");
    assert_eq!(header_of(&head, "Access-Control-Allow-Origin").as_deref(), Some("*"), "{head}");
}

#[test]
fn titles_are_bounded_clean_utf8() {
    let env = Env::new("");
    let server = serve(&env);
    let mp3 = std::fs::read(fixtures().join("speech-22k-mono.mp3")).unwrap();
    let audio = [("Content-Type", "audio/mpeg")];
    let post = |query: &str| http(&server.addr, "POST", &format!("/v1/media?{query}"), &audio, &mp3);
    for (query, expected) in [
        ("title=a%00b", "invalid_title"),
        ("title=a%1B%5B31mred", "invalid_title"),
        ("title=line%0D%0AInjected%3A%201", "invalid_title"),
        ("title=%FF%FE", "invalid_query"),
        ("callback_url=http%3A%2F%2Fx%0A", "invalid_callback_url"),
    ] {
        let (status, _, body) = post(query);
        assert_eq!((status, code(&body)), (400, expected.to_string()), "{query}");
    }
    let long = "x".repeat(30_000);
    let (status, _, body) = post(&format!("title={long}"));
    assert_eq!((status, code(&body)), (400, "invalid_title".to_string()), "a 30 000-character title");
    let (ct, form) = multipart("a.mp3", &mp3, &[("title", "two\r\nlines")]);
    let (status, _, body) = http(&server.addr, "POST", "/v1/media", &[("Content-Type", &ct)], &form);
    assert_eq!((status, code(&body)), (400, "invalid_title".to_string()));
    let (status, up) = http_json(&server.addr, "POST", "/v1/media?title=Sunday%20%E2%80%94%20grace", &audio, &mp3);
    assert_eq!(status, 202, "{up}");
    let (_, media) =
        http_json(&server.addr, "GET", &format!("/v1/media/{}", up["media_id"].as_str().unwrap()), &[], b"");
    assert_eq!(media["title"], "Sunday — grace");
}

#[test]
fn tus_and_expect_refuse_before_the_body() {
    let env = Env::new("");
    let server = serve(&env);
    let (status, _, body) =
        http(&server.addr, "POST", "/v1/uploads", &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "-1")], b"");
    let msg = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["message"].to_string();
    assert_eq!(status, 400);
    assert!(msg.contains("non-negative") && !msg.contains("deferred"), "{msg}");

    // 3 GiB announced with Expect: 100-continue: the refusal comes instead of `100 Continue`.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/media HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nContent-Length: 3221225472\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "the first answer must be the 413: {text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("payload_too_large"), "a JSON body: {text}");
    // A body the server would take is invited as usual.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/media HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn a_dead_job_shows_skipped_steps_and_the_default_tenant_has_a_date() {
    let env = Env::new("");
    let server = serve(&env);
    let wav = std::fs::read(fixtures().join("bad/header-only.wav")).unwrap();
    let (status, up) = http_json(&server.addr, "POST", "/v1/media", &[("Content-Type", "audio/wav")], &wav);
    assert_eq!(status, 202, "{up}");
    let job = wait_job(&server.addr, up["job_id"].as_str().unwrap(), 60);
    assert_eq!(job["state"], "dead", "{job}");
    let states: Vec<(&str, &str)> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("probe", "failed"), ("transcode", "skipped")], "{job}");
    let (status, tenants) = http_json(&server.addr, "GET", "/v1/tenants", &[], b"");
    assert_eq!(status, 200);
    let created = tenants["tenants"][0]["created_at"].as_str().unwrap_or("").to_string();
    assert!(created.starts_with("20") && !created.starts_with("1970"), "{tenants}");
}

#[test]
fn an_empty_operator_key_is_refused_at_start() {
    let env = Env::new("");
    for key in ["", "short"] {
        let out = env.command().env("LECTERN_ADMIN_KEY", key).arg("serve").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "serve must refuse LECTERN_ADMIN_KEY={key:?}");
        assert!(stderr.contains("admin.key") && stderr.contains("LECTERN_ADMIN_KEY"), "{stderr}");
    }
}
