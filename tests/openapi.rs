//! The API answers as its OpenAPI document says: schemathesis (pinned in
//! tests/tools/requirements.txt, installed by `.ci/test`) reads `GET /openapi.json` from a real
//! `lectern serve` and sends every operation schema-valid and schema-invalid requests, checking
//! each answer: no 5xx, a documented status, content type, headers and body schema, invalid input
//! refused, auth not ignored, 405 for undocumented methods. tests/tools/schemathesis.toml holds the
//! few exceptions, each with its reason.
//!
//! The server gets one real upload first, so the media, job, waveform and HLS reads check real
//! objects against their schemas instead of 404s. Two runs: as a tenant (every operation), then as
//! the operator (operator routes, which a tenant only sees as 403). Each is bounded by a number of
//! examples per operation and a time budget; a failure prints schemathesis's report with the
//! requests that reproduce it. `OPENAPI_FUZZ_SEED` replays another seed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, http, http_get, http_json, multipart, wait_for};

const ADMIN_KEY: &str = "lectern-openapi-test-operator-key-42";
/// Generated cases per operation in each round (fuzzing repeats rounds until `--max-time`).
const MAX_EXAMPLES: &str = "25";

fn schemathesis() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/schemathesis");
    assert!(
        bin.is_file(),
        "{} is missing: `bash .ci/test` creates it from tests/tools/requirements.txt",
        bin.display()
    );
    bin
}

/// Two seconds of a 440 Hz tone, 48 kHz mono WAV.
fn tone(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..96_000 {
        let s = (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 8_000.0;
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// Uploads the tone as `key` and waits for its ingest: (media id, job id).
fn seed_media(env: &Env, addr: &str, key: &str) -> (String, String) {
    let wav = env.path("tone.wav");
    tone(&wav);
    let (ct, body) = multipart("tone.wav", &std::fs::read(&wav).unwrap(), &[("title", "Tone")]);
    let auth = format!("Bearer {key}");
    let (status, v) =
        http_json(addr, "POST", "/v1/media", &[("Content-Type", ct.as_str()), ("Authorization", auth.as_str())], &body);
    assert_eq!(status, 202, "{v}");
    let (media, job) = (v["media_id"].as_str().unwrap().to_string(), v["job_id"].as_str().unwrap().to_string());
    wait_for(60, "the seed upload's ingest", || {
        let (_, j) = http_json(addr, "GET", &format!("/v1/jobs/{job}"), &[("Authorization", auth.as_str())], b"");
        j["state"] == "succeeded"
    });
    (media, job)
}

/// Runs schemathesis against the server as `key`; panics with its report unless it passes.
fn fuzz(env: &Env, addr: &str, key: &str, ids: (&str, &str), name: &str, extra: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fuzz_seed = std::env::var("OPENAPI_FUZZ_SEED").unwrap_or_else(|_| "20".into());
    let report = env.path(&format!("schemathesis-{name}.txt"));
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(root)
        .args(["--no-color", "--config-file", "tests/tools/schemathesis.toml", "run"])
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", MAX_EXAMPLES, "--seed", &fuzz_seed])
        .args(["--request-timeout", "20", "--generation-database", "none"])
        .args(extra)
        .env("FUZZ_MEDIA_ID", ids.0)
        .env("FUZZ_JOB_ID", ids.1)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&report).unwrap())
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&report).unwrap()));
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    // Its own --max-time bounds the run; this only guards against a hang.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ({name}) hung:\n{}", std::fs::read_to_string(&report).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&report).unwrap_or_default();
    assert!(status.success(), "schemathesis ({name}, seed {fuzz_seed}) failed:\n{out}");
    let summary = out.split_once("SUMMARY").map_or(out.as_str(), |(_, s)| s);
    eprintln!("schemathesis ({name}, seed {fuzz_seed}) passed in {:.0?}:{summary}", started.elapsed());
}

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    schemathesis();
    let env = Env::new(
        "[models]\nspeech = false\n[http]\n# Fuzzing is fast; 429s would only hide answers.\nrate-per-tenant = 0\n",
    );
    let tenant = env.cli_json(&["tenants", "create", "fuzz", "--json"]);
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let mut cmd = env.command();
    cmd.env("LECTERN_ADMIN_KEY", ADMIN_KEY);
    let server = env.serve_with(cmd, "server.log");

    let (status, body) = http_get(&server.addr, "/openapi.json").unwrap();
    assert_eq!(status, 200, "the document needs no key: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    let (status, head, _) = http(&server.addr, "PUT", "/v1/jobs", &[], b"");
    assert!(status == 405 && head.to_ascii_lowercase().contains("allow: get"), "{head}");

    let (media, job) = seed_media(&env, &server.addr, &key);
    let ids = (media.as_str(), job.as_str());
    fuzz(&env, &server.addr, &key, ids, "tenant", &["--max-time", "50"]);
    let operator_routes = ["--include-tag", "admin", "--include-tag", "ops", "--max-time", "20"];
    fuzz(&env, &server.addr, ADMIN_KEY, ids, "operator", &operator_routes);
}
