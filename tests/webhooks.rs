//! Webhooks from a real `lectern serve` to `tests/tools/webhook_receiver.py`, which checks every
//! request with the Standard Webhooks reference library (PyPI `standardwebhooks`, independent of
//! Lectern's signing): retries keep one webhook-id and back off, a dead job is always announced
//! and operator endpoints hear it by error code, a good upload is announced once per event, and
//! private addresses and redirects are refused.

mod common;

use std::io::BufRead;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{
    ADMIN_KEY, Env, Server, bearer, create_tenant, fixtures, http_json, post_json, serve_closed, upload_as, wait_for,
    wait_job_as,
};
use serde_json::{Value, json};

const SPEECH_OFF: &str = "[models]\nspeech = false\n";

/// `webhook_receiver.py` on a loopback port; killed (by its own PID) when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(env: &Env, name: &str, args: &[&str]) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/test-venv/bin/python");
        assert!(
            python.is_file(),
            "{} is missing: `bash .ci/test` creates it from tests/tools/requirements.txt",
            python.display()
        );
        let log = env.path(&format!("{name}.jsonl"));
        let mut child = Command::new(&python)
            .arg(root.join("tests/tools/webhook_receiver.py"))
            .arg("--log")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(env.path(&format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{name}: no port printed ({line:?}): {}", common::read(&env.path(&format!("{name}.err"))))
        });
        Self { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests logged so far (complete lines only).
    fn requests(&self) -> Vec<Value> {
        let text = common::read(&self.log);
        text.split_inclusive('\n').filter(|l| l.ends_with('\n')).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that pipes each connection to a port given later: a URL to register before the
/// receiver behind it can start (the receiver needs the secret that registering answers with).
fn relay() -> (u16, Arc<OnceLock<u16>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = Arc::new(OnceLock::new());
    let to = target.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Some(&port) = to.get() else { continue };
            let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else { continue };
            for (mut from, mut into) in [(conn.try_clone().unwrap(), up.try_clone().unwrap()), (up, conn)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(Shutdown::Write);
                });
            }
        }
    });
    (port, target)
}

fn serve(env: &Env, extra: &[(&str, &str)]) -> Server {
    serve_closed(env, &[&[("LECTERN_WEBHOOK_RETRY_BASE", "200ms")], extra].concat())
}

const ALLOW_LOOPBACK: (&str, &str) = ("LECTERN_WEBHOOK_ALLOW", "127.0.0.1");

fn job_as(addr: &str, key: &str, job: &str) -> Value {
    http_json(addr, "GET", &format!("/v1/jobs/{job}"), &[("Authorization", &bearer(key))], b"").1
}

/// Waits until the job has `n` deliveries and none is pending; returns the job.
fn settled(addr: &str, key: &str, job: &str, n: usize, secs: u64) -> Value {
    let mut last = Value::Null;
    wait_for(secs, &format!("{n} settled deliveries of {job}"), || {
        last = job_as(addr, key, job);
        let hooks = last["webhooks"].as_array().cloned().unwrap_or_default();
        hooks.len() == n && hooks.iter().all(|h| h["state"] != "pending")
    });
    last
}

fn dead_upload(addr: &str, key: &str, callback: &str) -> String {
    let (status, up) = upload_as(addr, key, &fixtures().join("bad/header-only.wav"), &[("callback_url", callback)]);
    assert_eq!(status, 202, "{up}");
    up["job_id"].as_str().unwrap().to_string()
}

#[test]
fn deliveries_are_signed_and_retried_with_one_id_until_taken() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, secret) = create_tenant(&env, "alpha");
    let server = serve(&env, &[ALLOW_LOOPBACK]);
    let addr = server.addr.clone();
    let cb = Receiver::start(&env, "callback", &["--secret", &secret, "--fail-first", "3"]);
    // A control: A's own endpoint signs with the endpoint's secret, so A's secret must not verify.
    let wrong = Receiver::start(&env, "wrong-secret", &["--secret", &secret]);
    let (status, ep) = post_json(&addr, &a, "/v1/webhooks", &json!({"url": wrong.url("/ep"), "events": ["job.dead"]}));
    assert_eq!(status, 201, "{ep}");
    assert!(ep["secret"].as_str().is_some_and(|s| s.starts_with("whsec_") && s != secret), "{ep}");

    let job = dead_upload(&addr, &a, &cb.url("/cb"));
    let j = settled(&addr, &a, &job, 2, 60);
    assert_eq!(j["state"], "dead", "{j}");
    let reqs = cb.requests();
    assert_eq!(reqs.len(), 4, "{reqs:?}");
    let statuses: Vec<u64> = reqs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 500, 204]);
    for r in &reqs {
        assert_eq!(
            (r["webhook_id"].clone(), &r["type"], &r["verified"]),
            (reqs[0]["webhook_id"].clone(), &json!("job.dead"), &json!(true)),
            "{r}"
        );
        assert_eq!(
            (r["path"].as_str(), &r["body"]),
            (Some("/cb"), &reqs[0]["body"]),
            "every attempt sends the same body"
        );
    }
    let id = reqs[0]["webhook_id"].as_str().unwrap();
    assert!(id.starts_with("msg_"), "{id}");
    let hook = j["webhooks"].as_array().unwrap().iter().find(|h| h["id"] == id).unwrap_or_else(|| panic!("{j}"));
    assert_eq!(
        (&hook["state"], &hook["attempts"], &hook["last_status"], &hook["last_error"], &hook["event_type"]),
        (&json!("delivered"), &json!(4), &json!(204), &Value::Null, &json!("job.dead")),
        "{hook}"
    );

    // Each attempt is in the timeline, and the waits grow 4× (200 ms base, ±20 % jitter).
    let attempts: Vec<&Value> = j["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "webhook" && e["detail"]["webhook_id"] == id)
        .collect();
    assert_eq!(attempts.len(), 4, "{j}");
    let failed = attempts.iter().filter(|e| e["error"]["code"] == "webhook_failed").count();
    assert_eq!(failed, 3, "{attempts:?}");
    let at: Vec<i64> = attempts.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    for (k, pair) in at.windows(2).enumerate() {
        let least = (0.8 * 200.0 * 4f64.powi(k as i32)) as i64 - 10;
        assert!(
            pair[1] - pair[0] >= least,
            "attempt {} came {} ms after the previous, want ≥ {least}",
            k + 2,
            pair[1] - pair[0]
        );
    }

    let control = wrong.requests();
    assert_eq!(control.len(), 1, "{control:?}");
    assert_eq!((&control[0]["type"], &control[0]["verified"]), (&json!("job.dead"), &json!(false)), "{control:?}");
}

#[test]
fn a_dead_job_is_announced_to_its_callback_and_to_endpoints_that_hear_its_code() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, secret) = create_tenant(&env, "alpha");
    let (_, b, _) = create_tenant(&env, "beta");
    let server = serve(&env, &[ALLOW_LOOPBACK]);
    let addr = server.addr.clone();
    let cb = Receiver::start(&env, "callback", &["--secret", &secret]);
    let (port, target) = relay();
    let every_tenant =
        |url: &str, code: &str| json!({"url": url, "tenant": "*", "events": ["job.dead"], "codes": [code]});
    let (status, ep) =
        post_json(&addr, ADMIN_KEY, "/v1/webhooks", &every_tenant(&format!("http://127.0.0.1:{port}/ops"), "no_audio"));
    assert_eq!((status, ep["tenant"].as_str()), (201, Some("*")), "{ep}");
    let ops = Receiver::start(&env, "ops", &["--secret", ep["secret"].as_str().unwrap()]);
    target.set(ops.port).unwrap();
    let other_code = Receiver::start(&env, "other-code", &[]);
    let (status, v) =
        post_json(&addr, ADMIN_KEY, "/v1/webhooks", &every_tenant(&other_code.url("/"), "unsupported_audio"));
    assert_eq!(status, 201, "{v}");
    let b_hears = Receiver::start(&env, "tenant-b", &[]);
    let (status, v) = post_json(&addr, &b, "/v1/webhooks", &json!({"url": b_hears.url("/")}));
    assert_eq!(status, 201, "{v}");

    let job = dead_upload(&addr, &a, &cb.url("/cb"));
    let j = settled(&addr, &a, &job, 2, 60);
    assert_eq!((j["state"].as_str(), j["steps"][0]["error"]["code"].as_str()), (Some("dead"), Some("no_audio")), "{j}");
    assert!(j["webhooks"].as_array().unwrap().iter().all(|h| h["state"] == "delivered"), "{j}");

    let (got, heard) = (cb.requests(), ops.requests());
    assert_eq!((got.len(), heard.len()), (1, 1), "callback {got:?}, operator {heard:?}");
    for r in [&got[0], &heard[0]] {
        assert_eq!(
            (&r["type"], &r["verified"], r["status"].as_u64()),
            (&json!("job.dead"), &json!(true), Some(204)),
            "{r}"
        );
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "job.dead");
        let data = &body["data"];
        assert_eq!((data["id"].as_str(), data["state"].as_str()), (Some(job.as_str()), Some("dead")), "{body}");
        assert_eq!(data["error"]["code"], "no_audio", "the payload names the error: {body}");
    }
    assert_ne!(got[0]["webhook_id"], heard[0]["webhook_id"], "one id per destination");
    assert_eq!(got[0]["body"], heard[0]["body"], "one message, two destinations");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(other_code.requests(), Vec::<Value>::new(), "an endpoint for another code heard it");
    assert_eq!(b_hears.requests(), Vec::<Value>::new(), "tenant B's endpoint heard A's job");
}

#[test]
fn a_good_upload_announces_media_ready_and_job_succeeded_once_each() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, secret) = create_tenant(&env, "alpha");
    let server = serve(&env, &[ALLOW_LOOPBACK]);
    let addr = server.addr.clone();
    let cb = Receiver::start(&env, "callback", &["--secret", &secret]);
    let file = fixtures().join("speech-22k-mono.mp3");
    let (status, up) = upload_as(&addr, &a, &file, &[("callback_url", &cb.url("/cb"))]);
    assert_eq!(status, 202, "{up}");
    let (media, job) = (up["media_id"].as_str().unwrap(), up["job_id"].as_str().unwrap());
    assert_eq!(wait_job_as(&addr, &a, job, 180)["state"], "succeeded");
    let j = settled(&addr, &a, job, 2, 30);
    std::thread::sleep(Duration::from_millis(500));

    let reqs = cb.requests();
    let mut types: Vec<&str> = reqs.iter().map(|r| r["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["job.succeeded", "media.ready"], "{reqs:?} {j}");
    assert_ne!(reqs[0]["webhook_id"], reqs[1]["webhook_id"]);
    for r in &reqs {
        assert_eq!((&r["verified"], r["status"].as_u64()), (&json!(true), Some(204)), "{r}");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let data = &body["data"];
        match body["type"].as_str().unwrap() {
            "media.ready" => {
                assert_eq!((data["media_id"].as_str(), data["job_id"].as_str()), (Some(media), Some(job)), "{body}")
            }
            _ => assert_eq!((data["id"].as_str(), data["state"].as_str()), (Some(job), Some("succeeded")), "{body}"),
        }
    }
}

/// `s` with everything but ASCII letters and digits percent-encoded (for a query string).
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[test]
fn private_addresses_are_refused_when_a_url_is_registered() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, _) = create_tenant(&env, "alpha");
    let server = serve(&env, &[]);
    let addr = server.addr.clone();
    let auth = bearer(&a);
    let listening = Receiver::start(&env, "loopback", &[]);
    let p = listening.port;
    let urls = [
        format!("http://127.0.0.1:{p}/"),
        format!("http://[::1]:{p}/"),
        "http://10.0.0.1/".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://localhost:{p}/"),
    ];
    let wav = std::fs::read(fixtures().join("bad/header-only.wav")).unwrap();
    for url in &urls {
        let (status, v) = upload_as(&addr, &a, &fixtures().join("bad/header-only.wav"), &[("callback_url", url)]);
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_callback_url")), "form {url}: {v}");
        let raw = format!("/v1/media?callback_url={}", encode(url));
        let (status, v) =
            http_json(&addr, "POST", &raw, &[("Authorization", &auth), ("Content-Type", "audio/wav")], &wav);
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_callback_url")), "query {url}: {v}");
        use base64::Engine;
        let meta = format!("callback_url {}", base64::engine::general_purpose::STANDARD.encode(url));
        let tus = [
            ("Authorization", auth.as_str()),
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Length", "44"),
            ("Upload-Metadata", &meta),
        ];
        let (status, v) = http_json(&addr, "POST", "/v1/uploads", &tus, b"");
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_callback_url")), "tus {url}: {v}");
        for (key, body) in [(a.as_str(), json!({"url": url})), (ADMIN_KEY, json!({"url": url, "tenant": "*"}))] {
            let (status, v) = post_json(&addr, key, "/v1/webhooks", &body);
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (400, Some("invalid_webhook_url")),
                "endpoint {body}: {v}"
            );
        }
    }
    let list = |path: &str| http_json(&addr, "GET", path, &[("Authorization", &auth)], b"").1;
    assert_eq!((list("/v1/media")["media"].clone(), list("/v1/webhooks")["webhooks"].clone()), (json!([]), json!([])));
    // A public address is accepted (the refusals above are the guard's, not a broken route).
    let (status, v) = post_json(&addr, &a, "/v1/webhooks", &json!({"url": "http://93.184.216.34/hook"}));
    assert_eq!(status, 201, "{v}");
    let path = format!("/v1/webhooks/{}", v["id"].as_str().unwrap());
    assert_eq!(common::http(&addr, "DELETE", &path, &[("Authorization", &auth)], b"").0, 204);
    assert!(listening.requests().is_empty());
}

#[test]
fn redirects_are_not_followed() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, _) = create_tenant(&env, "alpha");
    let server = serve(&env, &[ALLOW_LOOPBACK, ("LECTERN_WEBHOOK_MAX_ATTEMPTS", "2")]);
    let addr = server.addr.clone();
    let target = Receiver::start(&env, "target", &[]);
    let redirect = Receiver::start(&env, "redirect", &["--redirect-to", &target.url("/stolen")]);
    let metadata = Receiver::start(&env, "metadata", &["--redirect-to", "http://169.254.169.254/latest/meta-data/"]);
    let (status, v) =
        post_json(&addr, &a, "/v1/webhooks", &json!({"url": metadata.url("/ep"), "events": ["job.dead"]}));
    assert_eq!(status, 201, "{v}");

    let job = dead_upload(&addr, &a, &redirect.url("/cb"));
    let j = settled(&addr, &a, &job, 2, 30);
    for hook in j["webhooks"].as_array().unwrap() {
        assert_eq!((&hook["state"], &hook["attempts"]), (&json!("exhausted"), &json!(2)), "{hook}");
        let err = hook["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("redirect (307) not followed"), "{hook}");
    }
    for r in [&redirect, &metadata] {
        let statuses: Vec<u64> = r.requests().iter().map(|x| x["status"].as_u64().unwrap()).collect();
        assert_eq!(statuses, [307, 307]);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(target.requests().is_empty(), "the redirect was followed: {:?}", target.requests());
}
