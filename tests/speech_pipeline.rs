//! Speech and search through a real `lectern serve` with the real models (`bash models/fetch.sh`;
//! CI fetches them): real human speech uploaded as audio is transcribed, indexed and found by a
//! paraphrase; transcripts in three formats; a restart in the middle of a transcription resumes
//! from the journaled windows and gives the same transcript; a broken model fails the job with a
//! named code while the service keeps serving; a queued reprocess batch does not starve uploads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, fixtures, http, http_json, models_dir, wait_for, wait_job};
use serde_json::Value;

fn upload(addr: &str, file: &Path, title: &str) -> Value {
    let bytes = std::fs::read(file).unwrap();
    let ct = if file.extension().is_some_and(|e| e == "mp3") { "audio/mpeg" } else { "audio/wav" };
    let (status, v) = http_json(addr, "POST", &format!("/v1/media?title={title}"), &[("Content-Type", ct)], &bytes);
    assert_eq!(status, 202, "{v}");
    v
}

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    job["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name}: {job}"))
}

fn librivox() -> PathBuf {
    let dir = models_dir().join("librivox");
    assert!(dir.join("transcripts.tsv").is_file(), "{} is missing: run `bash models/fetch.sh`", dir.display());
    dir
}

/// The five LibriVox clips, each followed by 2 s of silence, joined into `out`; returns each
/// clip's (start second, reference text).
fn joined_clips(out: &Path) -> Vec<(f64, String)> {
    let dir = librivox();
    let tsv = std::fs::read_to_string(dir.join("transcripts.tsv")).unwrap();
    let (mut parts, mut padded, mut at) = (Vec::new(), Vec::new(), 0.0);
    for (i, line) in tsv.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let (file, text) = line.split_once('\t').unwrap();
        let path = dir.join(file);
        let r = hound::WavReader::open(&path).unwrap();
        parts.push((at, text.to_string()));
        at += r.duration() as f64 / f64::from(r.spec().sample_rate) + 2.0;
        let p = out.with_file_name(format!("clip{i}.wav"));
        let ok = Command::new("sox").arg(&path).arg(&p).args(["pad", "0", "2"]).status().expect("sox is required");
        assert!(ok.success(), "sox pad failed");
        padded.push(p);
    }
    assert!(Command::new("sox").args(&padded).arg(out).status().unwrap().success(), "sox concat failed");
    parts
}

#[test]
fn real_speech_is_transcribed_indexed_and_found_by_a_paraphrase() {
    let env = Env::new("");
    let clip = env.path("austen.wav");
    let parts = joined_clips(&clip);
    let server = env.serve("serve.log");
    let addr = server.addr.clone();

    let austen = upload(&addr, &clip, "Sense%20and%20Sensibility");
    let sermon = upload(&addr, &fixtures().join("speech-22k-mono.wav"), "Forgiveness");
    for up in [&austen, &sermon] {
        let job = wait_job(&addr, up["job_id"].as_str().unwrap(), 300);
        assert_eq!(job["state"], "succeeded", "{job}");
        for s in ["probe", "transcode", "transcribe", "embed"] {
            assert_eq!(step(&job, s)["state"], "succeeded", "{job}");
        }
        let kinds: Vec<&str> = job["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
        assert!(kinds.contains(&"media.transcribed") && kinds.contains(&"media.indexed"), "{kinds:?}");
    }
    let media = austen["media_id"].as_str().unwrap();

    // The transcript, in three formats, with timestamps that deep-link (±1.5 s).
    let (status, t) = http_json(&addr, "GET", &format!("/v1/media/{media}/transcript.json"), &[], b"");
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["version"], "1.0.0");
    let segs = t["segments"].as_array().unwrap();
    let text: String = segs.iter().map(|s| s["body"].as_str().unwrap().to_lowercase()).collect::<Vec<_>>().join(" ");
    assert!(text.contains("dashwood") && text.contains("amiable"), "{text}");
    let last = &parts[4];
    let seg = segs
        .iter()
        .find(|s| s["body"].as_str().unwrap().to_lowercase().contains("himself"))
        .unwrap_or_else(|| panic!("no segment with the last clip's words: {t}"));
    let start = seg["startTime"].as_f64().unwrap();
    assert!((start - last.0).abs() <= 1.5, "the last clip starts at {} s, its segment at {start} s", last.0);
    let (status, ct, vtt) = http(&addr, "GET", &format!("/v1/media/{media}/transcript.vtt"), &[], b"");
    let vtt = String::from_utf8(vtt).unwrap();
    assert_eq!(status, 200);
    assert!(ct.contains("text/vtt") || vtt.starts_with("WEBVTT"), "{ct}");
    assert!(vtt.starts_with("WEBVTT\n\n1\n00:00:0") && vtt.contains(" --> "), "{vtt}");
    let (status, _, srt) = http(&addr, "GET", &format!("/v1/media/{media}/transcript.srt"), &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8(srt).unwrap().starts_with("1\n00:00:0"));
    let (status, _) = http_json(&addr, "GET", &format!("/v1/media/{media}/transcript.txt"), &[], b"");
    assert_eq!(status, 404);

    // A paraphrase of what is said finds the right media first, in vector and hybrid modes.
    for mode in ["vector", "hybrid"] {
        let q = "a%20young%20man%20who%20was%20somewhat%20selfish%20and%20cold";
        let (status, r) = http_json(&addr, "GET", &format!("/v1/search?q={q}&k=5&mode={mode}"), &[], b"");
        assert_eq!(status, 200, "{r}");
        let results = r["results"].as_array().unwrap();
        assert_eq!(results[0]["media_id"], media, "{mode}: {r}");
        assert_eq!(results[0]["title"], "Sense and Sensibility");
        let url = results[0]["play_url"].as_str().unwrap();
        assert!(url.starts_with(&format!("/hls/{media}/master.m3u8#t=")), "{url}");
    }
    let (status, r) = http_json(&addr, "GET", "/v1/search?q=x&mode=fuzzy", &[], b"");
    assert_eq!((status, r["error"]["code"].as_str()), (400, Some("invalid_query")));

    // The CLI gives the same first result against the same data dir.
    let out =
        env.command().args(["search", "a young man who was somewhat selfish and cold", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["media_id"], media);
}

#[test]
fn a_restart_during_transcription_resumes_and_gives_the_same_transcript() {
    let env = Env::new("[stages.transcode]\nworkers = 1\n");
    let file = fixtures().join("speech-10min-mono.mp3");
    let mut server = env.serve("serve1.log");
    let first = upload(&server.addr, &file, "first");
    let media = first["media_id"].as_str().unwrap().to_string();
    // Wait until a few windows are journaled, then kill the process.
    let blobs = Path::new(&env.path("data")).join("blobs/media").join(&media).join("transcript");
    wait_for(300, "three transcribed windows", || {
        walk(&blobs).iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("w-"))).count()
            >= 3
    });
    server.kill9();
    let server = env.serve("serve2.log");
    let job = wait_job(&server.addr, first["job_id"].as_str().unwrap(), 600);
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, full) =
        http_json(&server.addr, "GET", &format!("/v1/jobs/{}", first["job_id"].as_str().unwrap()), &[], b"");
    let _ = full;
    let resumed = transcript(&server.addr, &media);

    // The same file, uninterrupted.
    let second = upload(&server.addr, &file, "second");
    let job2 = wait_job(&server.addr, second["job_id"].as_str().unwrap(), 600);
    assert_eq!(job2["state"], "succeeded", "{job2}");
    let straight = transcript(&server.addr, second["media_id"].as_str().unwrap());
    assert!(!straight["segments"].as_array().unwrap().is_empty());
    assert_eq!(resumed["segments"], straight["segments"], "the resumed transcript differs from an uninterrupted one");
    assert!(walk(&blobs).iter().all(|p| !p.to_string_lossy().contains("/w-")), "window blobs were not cleaned up");
}

fn transcript(addr: &str, media: &str) -> Value {
    let (status, t) = http_json(addr, "GET", &format!("/v1/media/{media}/transcript.json"), &[], b"");
    assert_eq!(status, 200, "{t}");
    t
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
        }
    }
    out
}

/// A models dir whose Whisper encoder is garbage: every other file links to the real one.
fn broken_models(root: &Path) -> PathBuf {
    let real = models_dir();
    let dir = root.join("broken-models");
    for sub in ["onnxruntime", "silero-vad", "minilm-l6-v2", "whisper-tiny.en"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(real.join(sub)).unwrap().flatten() {
            let name = e.file_name();
            let target = dir.join(sub).join(&name);
            if sub == "whisper-tiny.en" && name.to_string_lossy().starts_with("encoder") {
                std::fs::write(&target, b"this is not an onnx model").unwrap();
            } else {
                std::os::unix::fs::symlink(e.path(), &target).unwrap();
            }
        }
    }
    dir
}

#[test]
fn a_broken_model_fails_the_job_with_a_named_code_and_the_service_keeps_serving() {
    let env = Env::new("");
    let broken = broken_models(Path::new(&env.path("")));

    // At start, `serve` refuses to run and says what is wrong and how to fix it.
    let out = env.command().env("LECTERN_MODELS_DIR", &broken).arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started with a corrupt model");
    assert!(err.contains("encoder") && err.contains("lectern models fetch") && err.contains("model_invalid"), "{err}");
    let missing = env.command().env("LECTERN_MODELS_DIR", env.path("nowhere")).arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("lectern models fetch"), "{err}");

    // Without preloading, the job's transcribe step goes dead with the code; HLS is still made.
    let mut cmd = env.command();
    cmd.env("LECTERN_MODELS_DIR", &broken).env("LECTERN_MODELS_PRELOAD", "false");
    let server = env.serve_with(cmd, "serve.log");
    let up = upload(&server.addr, &fixtures().join("speech-22k-mono.wav"), "x");
    let job = wait_job(&server.addr, up["job_id"].as_str().unwrap(), 120);
    assert_eq!(job["state"], "dead", "{job}");
    assert_eq!(step(&job, "transcribe")["error"]["code"], "model_invalid", "{job}");
    // The transcode that was already running finishes: the media is still playable.
    let path = format!("/v1/jobs/{}", up["job_id"].as_str().unwrap());
    wait_for(120, "the transcode to finish", || {
        let (_, j) = http_json(&server.addr, "GET", &path, &[], b"");
        step(&j, "transcode")["state"] == "succeeded"
    });
    let (status, _) = http_json(&server.addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
}

#[test]
fn a_queued_reprocess_batch_does_not_starve_a_fresh_upload() {
    let env = Env::new("");
    let server = env.serve("serve.log");
    let addr = server.addr.clone();
    let short = fixtures().join("speech-22k-mono.mp3");
    let base = upload(&addr, &short, "base");
    assert_eq!(wait_job(&addr, base["job_id"].as_str().unwrap(), 300)["state"], "succeeded");

    // 1 000 reprocess jobs of the same media in one batch, enqueued through the data dir (as the
    // CLI does while the server runs).
    let config = lectern::config::Config::load(
        Some(Path::new(&env.path("lectern.toml"))),
        [
            ("LECTERN_DATA_DIR".to_string(), env.path("data").to_string_lossy().into_owned()),
            ("LECTERN_MODELS_DIR".to_string(), models_dir().to_string_lossy().into_owned()),
        ],
    )
    .unwrap();
    let app = lectern::app::App::open(config).unwrap();
    for i in 0..1000 {
        let req = lectern::app::EnqueueRequest {
            kind: "reprocess-transcode".into(),
            media_id: base["media_id"].as_str().map(String::from),
            batch: Some("big-batch".into()),
            idempotency_key: Some(format!("big-batch:{i}")),
            ..Default::default()
        };
        app.enqueue(req).unwrap();
    }
    wait_for(60, "the batch to start", || {
        let f = lectern::journal::JobFilter {
            batch: Some("big-batch".into()),
            state: Some(lectern::journal::JobState::Succeeded),
            limit: Some(3),
            ..Default::default()
        };
        app.journal.jobs(&f).unwrap().len() >= 3
    });

    let fresh = upload(&addr, &short, "fresh");
    let job = wait_job(&addr, fresh["job_id"].as_str().unwrap(), 300);
    assert_eq!(job["state"], "succeeded", "{job}");
    let t = |s: &Value, k: &str| lectern::clock::parse_time(s[k].as_str().unwrap()).unwrap();
    let probe_done = t(step(&job, "probe"), "finished_at");
    let started = t(step(&job, "transcode"), "started_at");
    // Within one step-time: no batch transcode started between the moment the upload's transcode
    // became ready and the moment it started (at most the one already running finished first).
    let batch = app
        .journal
        .jobs(&lectern::journal::JobFilter { batch: Some("big-batch".into()), ..Default::default() })
        .unwrap();
    let overtook: Vec<i64> = batch
        .iter()
        .filter_map(|j| j.step("transcode").and_then(|s| s.started_at))
        .filter(|&at| at > probe_done && at < started)
        .collect();
    assert!(
        overtook.is_empty(),
        "{} batch steps started while the upload's transcode was ready (it waited {} ms)",
        overtook.len(),
        started - probe_done
    );
    let pending = batch.iter().filter(|j| !j.state.is_terminal()).count();
    assert!(pending > 500, "the batch was nearly done ({pending} left): the test proves nothing");
    // Cancel the rest of the batch as a whole.
    let out = env.command().args(["jobs", "cancel", "--batch", "big-batch", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn cli(env: &Env, args: &[&str]) -> Value {
    let out = env.command().args(args).output().unwrap();
    assert!(out.status.success(), "lectern {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("lectern {args:?}: {e}: {:?}", out.stdout))
}

#[test]
fn reprocess_is_a_resumable_batch_that_replaces_the_index_entries() {
    let env = Env::new("");
    let server = env.serve("serve.log");
    let addr = server.addr.clone();
    let up = upload(&addr, &fixtures().join("speech-22k-mono.wav"), "sermon");
    assert_eq!(wait_job(&addr, up["job_id"].as_str().unwrap(), 300)["state"], "succeeded");
    let media = up["media_id"].as_str().unwrap();
    let count = || {
        let (_, r) = http_json(&addr, "GET", "/v1/search?q=forgiveness%20debt%20reading&mode=lexical&k=100", &[], b"");
        r["results"].as_array().unwrap().len()
    };
    let before = count();
    assert!(before > 0);

    let dry = cli(&env, &["reprocess", "--step", "embed", "--dry-run", "--json"]);
    assert_eq!(dry["media"], serde_json::json!([media]));

    // Interrupted: enqueued while the stage is paused, then run again — same batch, nothing new.
    cli(&env, &["queues", "pause", "--stage", "embed", "--json"]);
    let first = cli(&env, &["reprocess", "--step", "embed", "--detach", "--json"]);
    assert_eq!((first["enqueued"].as_u64(), first["resumed"].as_bool()), (Some(1), Some(false)), "{first}");
    let again = cli(&env, &["reprocess", "--step", "embed", "--detach", "--json"]);
    assert_eq!((again["enqueued"].as_u64(), again["resumed"].as_bool()), (Some(0), Some(true)), "{again}");
    assert_eq!(again["batch"], first["batch"]);
    // The batch pauses as a whole while the stage runs for everyone else.
    let batch = first["batch"].as_str().unwrap();
    cli(&env, &["queues", "pause", "--batch", batch, "--json"]);
    cli(&env, &["queues", "resume", "--stage", "embed", "--json"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let queued = cli(&env, &["jobs", "list", "--state", "queued", "--json"]);
    let waiting = queued["jobs"].as_array().unwrap().iter().filter(|j| j["batch"] == batch).count();
    assert_eq!(waiting, 1, "a paused batch's job ran: {queued}");
    cli(&env, &["queues", "resume", "--batch", batch, "--json"]);
    let done = cli(&env, &["reprocess", "--step", "embed", "--json"]);
    assert_eq!((done["succeeded"].as_u64(), done["total"].as_u64()), (Some(1), Some(1)), "{done}");
    assert_eq!(done["batch"], first["batch"]);
    assert_eq!(count(), before, "re-embedding must replace the media's chunks, not add to them");
    let jobs = cli(&env, &["jobs", "list", "--json"]);
    let kinds: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().filter_map(|j| j["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "reprocess-embed").count(), 1, "{kinds:?}");
}
