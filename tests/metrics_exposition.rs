//! `GET /metrics` of a real `lectern serve` after real work, checked by Prometheus' own
//! `promtool check metrics` (Debian `prometheus`): the exposition parses and passes its lint, and
//! carries the request, upload, queue and step series.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{ADMIN_KEY, Env, bearer, create_tenant, fixtures, http, upload_as, wait_job_as};

/// `promtool check metrics` on `text`: (success, everything it printed).
fn promtool(text: &[u8]) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required (Debian package `prometheus`; `bash .ci/test` installs it): {e}")
        });
    child.stdin.take().unwrap().write_all(text).unwrap();
    let out = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), printed)
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let matches = series == name || series.starts_with(&format!("{name}{{"));
        (matches && labels.iter().all(|x| series.contains(x))).then(|| value.parse().ok())?
    })
}

#[test]
fn the_exposition_passes_promtool_and_has_the_pipeline_series() {
    let env = Env::new("[models]\nspeech = false\n");
    let (tenant, key, _) = create_tenant(&env, "alpha");
    let mut c = env.command();
    c.env("LECTERN_ADMIN_KEY", ADMIN_KEY);
    let server = env.serve_with(c, "serve.log");
    let addr = server.addr.clone();
    let op = bearer(ADMIN_KEY);
    let file = fixtures().join("speech-22k-mono.mp3");
    let (status, up) = upload_as(&addr, &key, &file, &[]);
    assert_eq!(status, 202, "{up}");
    assert_eq!(wait_job_as(&addr, &key, up["job_id"].as_str().unwrap(), 180)["state"], "succeeded");
    // Something queued: a second upload while the tenant's queue is paused.
    let pause = format!(r#"{{"tenant":"{tenant}"}}"#);
    let json_ct = ("Content-Type", "application/json");
    let (status, _, _) = http(&addr, "POST", "/v1/queues/pause", &[("Authorization", &op), json_ct], pause.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(upload_as(&addr, &key, &file, &[]).0, 202);
    assert_eq!(http(&addr, "GET", "/metrics", &[("Authorization", &bearer(&key))], b"").0, 403, "a tenant key");

    let (status, head, body) = http(&addr, "GET", "/metrics", &[("Authorization", &op)], b"");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let (ok, printed) = promtool(&body);
    assert!(ok && printed.trim().is_empty(), "promtool check metrics:\n{printed}");

    let text = String::from_utf8(body).unwrap();
    let upload_route = [r#"route="/v1/media""#, r#"method="POST""#, r#"status="202""#];
    let requests = sample(&text, "lectern_http_requests_total", &upload_route);
    assert!(requests.is_some_and(|n| n >= 2.0), "{text}");
    let bytes = std::fs::metadata(&file).unwrap().len() as f64;
    let uploaded = sample(&text, "lectern_upload_bytes_total", &[&format!(r#"tenant="{tenant}""#)]);
    assert_eq!(uploaded, Some(2.0 * bytes), "{text}");
    let depth = sample(&text, "lectern_queue_depth_steps", &[&format!(r#"tenant="{tenant}""#)]);
    assert!(depth.is_some_and(|n| n >= 1.0), "the paused upload is queued: {text}");
    let age = sample(&text, "lectern_queue_oldest_age_seconds", &[&format!(r#"tenant="{tenant}""#)]);
    assert!(age.is_some_and(|s| s >= 0.0), "{text}");
    for stage in ["probe", "transcode"] {
        let attempts = sample(&text, "lectern_step_attempts_total", &[&format!(r#"stage="{stage}""#)]);
        assert!(attempts.is_some_and(|n| n >= 1.0), "{stage}: {text}");
    }
    assert!(sample(&text, "lectern_http_request_duration_seconds_count", &[]).is_some(), "{text}");
}
