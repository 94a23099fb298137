//! Helpers for tests that run the real `lectern` binary: a server on a loopback port over a temp
//! data dir, and CLI calls against the same data dir.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lectern");

/// A data dir and config file shared by a server and CLI calls.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Env {
    /// `config` is TOML appended to a fast-polling default.
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let toml = format!("[scheduler]\npoll-interval = \"50ms\"\nheartbeat-interval = \"200ms\"\n{config}");
        std::fs::write(dir.path().join("lectern.toml"), toml).unwrap();
        Self { dir, addr: format!("127.0.0.1:{port}") }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("LECTERN_CONFIG", self.path("lectern.toml"))
            .env("LECTERN_DATA_DIR", self.path("data"))
            .env("LECTERN_HTTP_ADDR", &self.addr)
            .env("LECTERN_MODELS_DIR", models_dir())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        c
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs a CLI command that must succeed and print one JSON document.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.cli(args);
        assert!(out.status.success(), "lectern {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("lectern {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Starts `lectern serve` and waits until it answers `/healthz`.
    pub fn serve(&self, log_name: &str) -> Server {
        self.serve_with(self.command(), log_name)
    }

    /// Starts `lectern serve` from a prepared command (extra environment, say).
    pub fn serve_with(&self, mut command: Command, log_name: &str) -> Server {
        let log = std::fs::File::create(self.path(log_name)).unwrap();
        let child = command.arg("serve").stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let server = Server { child: Some(child), addr: self.addr.clone(), log: self.path(log_name) };
        server.wait_healthy(Duration::from_secs(20));
        server
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn wait_healthy(&self, within: Duration) {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some((200, _)) = http_get(&self.addr, "/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("server did not become healthy: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// SIGTERM, then waits (up to `within`) for the process to exit; returns its status and how
    /// long it took.
    pub fn terminate(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let mut c = self.child.take().expect("server running");
        let start = Instant::now();
        let ok = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -TERM failed");
        while start.elapsed() < within {
            if let Some(status) = c.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill().unwrap();
        c.wait().unwrap();
        panic!("server did not exit within {within:?} of SIGTERM");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A minimal HTTP/1.0 GET over loopback: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// An HTTP/1.1 request over loopback with `Connection: close`: (status, headers, body).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413, 415) before reading the whole body; a reset then is expected.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// `http` with a JSON answer.
pub fn http_json(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (status, _, body) = http(addr, method, path, headers, body);
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// A `multipart/form-data` body with one file field and text fields: (content type, body).
pub fn multipart(file_name: &str, file: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "lectern-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The generated media corpus (runs `fixtures/generate.sh` once; it keeps what exists).
pub fn fixtures() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let out = Command::new("bash").arg(root.join("generate.sh")).output().expect("bash");
        assert!(out.status.success(), "fixtures/generate.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        root.join("generated")
    })
    .clone()
}

/// Polls `cond` every 50 ms until it holds or `secs` pass.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The fetched models (`bash models/fetch.sh`; CI always fetches them): `LECTERN_MODELS_DIR` or the
/// repository's `models/cache`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("LECTERN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache"))
}

/// Polls `GET /v1/jobs/{job}` until the job ends (succeeded, dead or cancelled); returns its JSON.
pub fn wait_job(addr: &str, job: &str, secs: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(secs, &format!("job {job} to end"), || {
        let (_, v) = http_json(addr, "GET", &format!("/v1/jobs/{job}"), &[], b"");
        last = v;
        matches!(last["state"].as_str(), Some("succeeded" | "dead" | "cancelled"))
    });
    last
}

/// The operator key the tenancy, webhook and metrics tests run their servers with.
pub const ADMIN_KEY: &str = "lectern-test-operator-key-0123456789";

/// An `Authorization` header value for `key`.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// `lectern tenants create NAME --json` on the env's data dir: (tenant id, API key, webhook secret).
pub fn create_tenant(env: &Env, name: &str) -> (String, String, String) {
    let t = env.cli_json(&["tenants", "create", name, "--json"]);
    let s = |k: &str| t[k].as_str().unwrap_or_else(|| panic!("tenants create printed no {k}: {t}")).to_string();
    (s("tenant"), s("api_key"), s("webhook_secret"))
}

/// `wait_job` for a closed API: polls with `Authorization: Bearer key`.
pub fn wait_job_as(addr: &str, key: &str, job: &str, secs: u64) -> serde_json::Value {
    let auth = bearer(key);
    let mut last = serde_json::Value::Null;
    wait_for(secs, &format!("job {job} to end"), || {
        let (_, v) = http_json(addr, "GET", &format!("/v1/jobs/{job}"), &[("Authorization", &auth)], b"");
        last = v;
        matches!(last["state"].as_str(), Some("succeeded" | "dead" | "cancelled"))
    });
    last
}

/// `POST /v1/media` of a fixture as a multipart form with extra text fields, as `key`.
pub fn upload_as(addr: &str, key: &str, file: &Path, fields: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let (ct, body) = multipart(&name, &std::fs::read(file).unwrap(), fields);
    http_json(addr, "POST", "/v1/media", &[("Content-Type", &ct), ("Authorization", &bearer(key))], &body)
}

/// `lectern serve` with the operator key [`ADMIN_KEY`] and extra environment.
pub fn serve_closed(env: &Env, extra: &[(&str, &str)]) -> Server {
    let mut c = env.command();
    c.env("LECTERN_ADMIN_KEY", ADMIN_KEY);
    for (k, v) in extra {
        c.env(k, v);
    }
    env.serve_with(c, "serve.log")
}

/// `http` with `Authorization: <auth>` added (none for `None`).
pub fn call(
    addr: &str,
    auth: Option<&str>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut h = headers.to_vec();
    if let Some(a) = auth {
        h.push(("Authorization", a));
    }
    http(addr, method, path, &h, body)
}

/// A JSON POST as `key`: (status, answer).
pub fn post_json(addr: &str, key: &str, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let auth = bearer(key);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    http_json(addr, "POST", path, &headers, body.to_string().as_bytes())
}

/// A body as JSON (`Null` when it is not).
pub fn json_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null)
}

/// A response header's value, from the head `http` returns.
pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Waits up to `secs` for a child to exit; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} still running after {secs} s");
}
