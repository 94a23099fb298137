//! A real web player: hls.js in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from npm) plays Lectern's HLS output to the end, at 4x, with no error events. (Above 4x Chromium
//! renders audio differently and hls.js's stall watchdog fires at the start even with the whole
//! stream buffered — a player quirk, seen with a full buffer at t = 0.15 s, not a stream fault.)
//! `bash .ci/test` installs chromium and runs `npm ci` in tests/browser.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, fixtures, http_json, wait_for};

#[test]
fn hls_js_in_chromium_plays_an_upload_to_the_end() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/hls.js").is_dir() && browser_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser first (bash .ci/test does)"
    );
    let fx = fixtures();
    let env = Env::new("");
    let server = env.serve("serve.log");
    let body = std::fs::read(fx.join("speech-44k-stereo.mp3")).unwrap();
    let (status, up) = http_json(&server.addr, "POST", "/v1/media", &[("Content-Type", "audio/mpeg")], &body);
    assert_eq!(status, 202, "{up}");
    let job = up["job_id"].as_str().unwrap().to_string();
    wait_for(120, "the upload to be transcoded", || {
        http_json(&server.addr, "GET", &format!("/v1/jobs/{job}"), &[], b"").1["state"] == "succeeded"
    });

    let master = format!("http://{}/hls/{}/master.m3u8", server.addr, up["media_id"].as_str().unwrap());
    let out = Command::new("node")
        .current_dir(&browser_dir)
        .args(["play.mjs", &master, "4", "60000"])
        .output()
        .expect("node is required");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "player failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap();
    assert_eq!(r["mseAac"], true, "this Chromium cannot play AAC in MSE: {r}");
    assert_eq!(r["levels"].as_array().map(Vec::len), Some(2), "both rungs announced: {r}");
    assert_eq!(r["errors"], serde_json::json!([]), "hls.js reported errors: {r}");
    assert_eq!(r["pageErrors"], serde_json::json!([]), "{r}");
    assert_eq!(r["ended"], true, "playback did not reach the end: {r}");
    let (t, d) = (r["currentTime"].as_f64().unwrap(), r["duration"].as_f64().unwrap());
    assert!((t - d).abs() < 0.5 && (d - 58.3).abs() < 0.5, "played {t} of {d} s: {r}");
}
