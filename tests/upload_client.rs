//! `lectern upload`: started while the server is down, it backs off until the server appears,
//! uploads a folder's audio files over tus, and a second run sends nothing again.

mod common;

use std::process::Stdio;

use common::{BIN, Env, fixtures, http_json, wait_for};

#[test]
fn the_client_waits_for_the_server_uploads_a_folder_and_never_resends() {
    let fx = fixtures();
    let env = Env::new("");
    let folder = env.path("to-upload");
    std::fs::create_dir_all(folder.join("nested")).unwrap();
    for (name, to) in
        [("speech-22k-mono.mp3", "a.mp3"), ("tone-48k-stereo.ogg", "nested/b.ogg"), ("speech-8k-mono.wav", "c.WAV")]
    {
        std::fs::copy(fx.join(name), folder.join(to)).unwrap();
    }
    std::fs::write(folder.join("notes.txt"), "not audio; the folder walk skips it").unwrap();
    let state = env.path("queue.json");
    let server_url = format!("http://{}", env.addr);
    let client = |extra: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.args([
            "upload",
            folder.to_str().unwrap(),
            "--server",
            &server_url,
            "--state",
            state.to_str().unwrap(),
            "--json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    };

    // The server is not up yet: the client must keep trying.
    let waiting = client(&["--chunk-size", "65536", "--give-up-after", "60s"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let server = env.serve("serve.log");
    let out = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    assert!(stderr.contains("retrying"), "the client should have backed off while the server was down: {stderr}");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let uploads = first["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 3, "three audio files, the text file skipped: {first}");
    assert!(uploads.iter().all(|u| u["job_id"].as_str().is_some_and(|j| j.starts_with("job_"))), "{first}");

    for u in uploads {
        let job = u["job_id"].as_str().unwrap().to_string();
        wait_for(120, "an uploaded file's job", || {
            http_json(&server.addr, "GET", &format!("/v1/jobs/{job}"), &[], b"").1["state"] == "succeeded"
        });
    }

    // Again: nothing is sent twice.
    let again = client(&[]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(first, second, "a re-run reports the same uploads");
    let (_, media) = http_json(&server.addr, "GET", "/v1/media", &[], b"");
    assert_eq!(media["media"].as_array().unwrap().len(), 3, "no file was uploaded twice");
}
