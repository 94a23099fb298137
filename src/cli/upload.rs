//! `lectern upload PATH... --server URL [--key KEY]`: a resumable upload client with a local queue.
//!
//! - Files, or folders walked for audio files, are uploaded over tus (`/v1/uploads`) in chunks.
//! - A small local journal (`--state`, JSON, written atomically after every change) remembers each
//!   file by path, size and modification time: its upload URL while in progress, its media and job
//!   ids once done. Running the command again skips finished files and resumes partial ones from
//!   the offset the server reports, so it is safe to re-run after a crash or Ctrl-C.
//! - While the server is unreachable or answers 429/5xx, it waits with exponential backoff and full
//!   jitter (honouring `Retry-After`), up to `--give-up-after`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{CliResult, Failure};

const AUDIO_EXTENSIONS: &[&str] =
    &["mp3", "m4a", "aac", "mp4", "wav", "flac", "ogg", "oga", "opus", "aif", "aiff", "alac"];

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Files or folders (folders are walked for audio files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The Lectern server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    server: String,
    /// API key (sent as a bearer token).
    #[arg(long, env = "LECTERN_API_KEY")]
    key: Option<String>,
    /// The local queue file.
    #[arg(long, default_value = ".lectern-upload-state.json")]
    state: PathBuf,
    /// Bytes per PATCH request.
    #[arg(long, default_value_t = 8 * 1024 * 1024, hide = true)]
    chunk_size: usize,
    /// Stop retrying an unreachable or overloaded server after this long.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    give_up_after: Duration,
    #[arg(long)]
    json: bool,
}

/// One file's entry in the local queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Entry {
    size: u64,
    modified: u64,
    upload_url: Option<String>,
    media_id: Option<String>,
    job_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Queue {
    files: BTreeMap<String, Entry>,
}

impl Queue {
    fn load(path: &Path) -> Result<Self, Failure> {
        match std::fs::read(path) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|e| format!("state file {} is damaged: {e}", path.display()).into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
        }
    }

    fn save(&self, path: &Path) -> Result<(), Failure> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir)? {
                    let path = e?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path
                        .extension()
                        .and_then(|x| x.to_str())
                        .is_some_and(|x| AUDIO_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
                    {
                        out.push(path);
                    }
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Why a request did not go through, and whether trying again can help.
enum Trouble {
    Retry { after: Option<Duration>, why: String },
    Fatal(String),
}

struct Client {
    http: reqwest::blocking::Client,
    server: String,
    key: Option<String>,
}

impl Client {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let url = if url.starts_with("http") { url.to_string() } else { format!("{}{url}", self.server) };
        let r = self.http.request(method, url).header("Tus-Resumable", "1.0.0");
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    fn send(&self, r: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response, Trouble> {
        let resp = r.send().map_err(|e| Trouble::Retry { after: None, why: format!("server unreachable: {e}") })?;
        let s = resp.status();
        if s.is_success() || s == reqwest::StatusCode::NOT_FOUND || s == reqwest::StatusCode::CONFLICT {
            return Ok(resp);
        }
        let after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().unwrap_or_default();
        if s == reqwest::StatusCode::TOO_MANY_REQUESTS || s.is_server_error() {
            Err(Trouble::Retry { after, why: format!("server answered {s}") })
        } else {
            Err(Trouble::Fatal(format!("server refused the upload ({s}): {body}")))
        }
    }
}

fn header(resp: &reqwest::blocking::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// One attempt at moving the file forward: creates or resumes its upload and sends chunks.
fn attempt(c: &Client, path: &Path, e: &mut Entry, chunk: usize, save: &mut dyn FnMut(&Entry)) -> Result<(), Trouble> {
    use base64::Engine;
    let mut offset = 0u64;
    if let Some(url) = e.upload_url.clone() {
        let resp = c.send(c.request(reqwest::Method::HEAD, &url))?;
        match header(&resp, "Upload-Offset").and_then(|o| o.parse().ok()) {
            Some(o) if resp.status().is_success() => offset = o,
            _ => e.upload_url = None, // expired or unknown: start over
        }
    }
    if e.upload_url.is_none() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("upload");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let meta =
            format!("filename {},title {}", b64(name), b64(name.rsplit_once('.').map(|(t, _)| t).unwrap_or(name)));
        let resp = c.send(
            c.request(reqwest::Method::POST, "/v1/uploads")
                .header("Upload-Length", e.size)
                .header("Upload-Metadata", meta),
        )?;
        let loc = header(&resp, "Location")
            .ok_or_else(|| Trouble::Fatal(format!("server answered {} without Location", resp.status())))?;
        e.upload_url = Some(loc);
        save(e);
    }
    let url = e.upload_url.clone().expect("set above");
    let mut file = std::fs::File::open(path).map_err(|err| Trouble::Fatal(err.to_string()))?;
    loop {
        if offset == e.size {
            let resp = c.send(c.request(reqwest::Method::HEAD, &url))?;
            e.media_id = header(&resp, "Lectern-Media-Id");
            e.job_id = header(&resp, "Lectern-Job-Id");
            save(e);
            return Ok(());
        }
        let mut buf = vec![0u8; chunk.min((e.size - offset) as usize)];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|err| Trouble::Fatal(err.to_string()))?;
        let resp = c.send(
            c.request(reqwest::Method::PATCH, &url)
                .header("Upload-Offset", offset)
                .header("Content-Type", "application/offset+octet-stream")
                .body(buf),
        )?;
        if resp.status() == reqwest::StatusCode::CONFLICT || resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(Trouble::Retry {
                after: Some(Duration::ZERO),
                why: "offset moved; asking the server again".into(),
            });
        }
        offset = header(&resp, "Upload-Offset").and_then(|o| o.parse().ok()).unwrap_or(offset);
    }
}

pub fn run(args: UploadArgs) -> CliResult {
    let files = collect(&args.paths)?;
    let mut queue = Queue::load(&args.state)?;
    let client = Client {
        http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build()?,
        server: args.server.trim_end_matches('/').to_string(),
        key: args.key.clone(),
    };
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut report = Vec::new();
    let mut rng = rand::rng();
    for path in &files {
        let abs = std::fs::canonicalize(path)?;
        let key = abs.to_string_lossy().into_owned();
        let meta = std::fs::metadata(&abs)?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut entry = queue
            .files
            .get(&key)
            .cloned()
            .filter(|e| e.size == meta.len() && e.modified == modified)
            .unwrap_or(Entry { size: meta.len(), modified, ..Default::default() });
        bar.set_message(path.display().to_string());
        if entry.job_id.is_none() {
            let started = Instant::now();
            let mut failures = 0u32;
            loop {
                let state = args.state.clone();
                let mut save = |e: &Entry| {
                    queue.files.insert(key.clone(), e.clone());
                    let _ = queue.save(&state);
                };
                match attempt(&client, &abs, &mut entry, args.chunk_size, &mut save) {
                    Ok(()) => break,
                    Err(Trouble::Fatal(why)) => return Err(format!("{}: {why}", path.display()).into()),
                    Err(Trouble::Retry { after, why }) => {
                        if started.elapsed() > args.give_up_after {
                            return Err(
                                format!("{}: giving up after {:?}: {why}", path.display(), args.give_up_after).into()
                            );
                        }
                        failures += 1;
                        // Full jitter: uniform in [0, min(30 s, 0.5 s * 2^n)], or what the server asked.
                        let cap = Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)))
                            .min(Duration::from_secs(30));
                        let wait = after.unwrap_or_else(|| cap.mul_f64(rng.random::<f64>()));
                        bar.println(format!("{}: {why}; retrying in {:.1}s", path.display(), wait.as_secs_f64()));
                        if bar.is_hidden() {
                            eprintln!("{}: {why}; retrying in {:.1}s", path.display(), wait.as_secs_f64());
                        }
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(wait);
                    }
                }
            }
            queue.files.insert(key.clone(), entry.clone());
            queue.save(&args.state)?;
        }
        bar.inc(1);
        report.push(serde_json::json!({"path": path, "media_id": entry.media_id, "job_id": entry.job_id}));
        if !args.json {
            println!(
                "{}  media {}  job {}",
                path.display(),
                entry.media_id.as_deref().unwrap_or("?"),
                entry.job_id.as_deref().unwrap_or("?")
            );
        }
    }
    bar.finish_and_clear();
    if args.json {
        super::output::print_json(&serde_json::json!({ "uploads": report }));
    }
    Ok(())
}
