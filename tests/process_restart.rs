//! A real `lectern serve` process killed with SIGKILL in the middle of steps, then started again:
//! every job completes, no succeeded step runs again, and recovery starts at once.

mod common;

use std::collections::HashMap;

use common::{Env, read, wait_for};
use lectern::clock::{Clock, SystemClock};

/// One line of the side-effect log the `test` job kind writes.
#[derive(Debug)]
struct Effect {
    what: String,
    job: String,
    step: String,
    attempt: u32,
    pid: u32,
    at: i64,
}

fn effects(path: &std::path::Path) -> Vec<Effect> {
    read(path)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Effect {
                what: f[0].into(),
                job: f[1].into(),
                step: f[2].into(),
                attempt: f[3].parse().unwrap(),
                pid: f[4].parse().unwrap(),
                at: f[5].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn kill_9_mid_step_then_restart_completes_every_job_once() {
    let env = Env::new(
        // Speech off: no models to load, so the 2 s recovery bound below measures recovery only.
        "[models]\nspeech = false\n[stages.test]\nworkers = 2\n[retry]\nmax-attempts = 3\ninitial-delay = \"100ms\"\nmax-delay = \"1s\"\n",
    );
    let fx = env.path("effects.log");
    let mut first = env.serve("serve-1.log");
    let pid1 = first.pid();
    let params = serde_json::json!({"sleep_ms": 800, "log": fx}).to_string();
    let jobs: Vec<String> = (0..6)
        .map(|_| {
            let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--params", &params, "--json"]);
            v["id"].as_str().unwrap().to_string()
        })
        .collect();

    // Let some steps finish, then kill while others are mid-step: at a moment when at least one
    // step runs, none is near its end, and no step ended in the last 150 ms (so no outcome is
    // between its side effect and its journal commit, where a re-run would be legitimate).
    wait_for(60, "four steps to finish", || effects(&fx).iter().filter(|e| e.what == "END").count() >= 4);
    wait_for(30, "a clean moment to kill", || {
        let fx = effects(&fx);
        let now = SystemClock.now_ms();
        let running: Vec<&Effect> = fx
            .iter()
            .filter(|s| s.what == "START" && !fx.iter().any(|e| e.what == "END" && e.job == s.job && e.step == s.step))
            .collect();
        let last_end = fx.iter().filter(|e| e.what == "END").map(|e| e.at).max().unwrap_or(0);
        !running.is_empty() && running.iter().all(|s| now - s.at < 550) && now - last_end > 150
    });
    first.kill9();
    let in_flight: Vec<(String, String)> = {
        let fx = effects(&fx);
        fx.iter()
            .filter(|s| s.what == "START" && !fx.iter().any(|e| e.what == "END" && e.job == s.job && e.step == s.step))
            .map(|s| (s.job.clone(), s.step.clone()))
            .collect()
    };
    assert!(!in_flight.is_empty(), "the kill landed between steps; the test needs it mid-step");

    let restarted_at = SystemClock.now_ms();
    let second = env.serve("serve-2.log");
    let pid2 = second.pid();
    wait_for(90, "every job to succeed after the restart", || {
        let v = env.cli_json(&["jobs", "list", "--json"]);
        v["jobs"].as_array().unwrap().iter().all(|j| j["state"] == "succeeded")
    });

    let fx = effects(&fx);
    assert!(fx.iter().any(|e| e.pid == pid2), "the new process ran steps");
    let mut rerun = Vec::new();
    for id in &jobs {
        let job = env.cli_json(&["jobs", "show", id, "--json"]);
        assert_eq!(job["state"], "succeeded");
        let events = job["events"].as_array().unwrap();
        for step in job["steps"].as_array().unwrap() {
            let name = step["name"].as_str().unwrap();
            let attempts = step["attempts"].as_u64().unwrap() as usize;
            let starts: Vec<&Effect> =
                fx.iter().filter(|e| e.what == "START" && e.job == *id && e.step == name).collect();
            assert_eq!(starts.len(), attempts, "{id}/{name}: the log and the journal disagree on attempts");
            let ends: Vec<&Effect> = fx.iter().filter(|e| e.what == "END" && e.job == *id && e.step == name).collect();
            assert_eq!(ends.len(), 1, "{id}/{name} completed its side effect {} times", ends.len());
            // The journal never started a step again after it had succeeded.
            let succeeded = events.iter().position(|e| e["kind"] == "succeeded" && e["step"] == name).unwrap();
            assert!(
                !events[succeeded..].iter().any(|e| e["kind"] == "started" && e["step"] == name),
                "{id}/{name} was started again after it succeeded"
            );
            if attempts > 1 {
                assert_eq!(starts[0].pid, pid1, "{id}/{name}: a re-run must be of the killed process's attempt");
                assert!(
                    events.iter().any(|e| e["kind"] == "interrupted" && e["step"] == name),
                    "{id}/{name} re-ran without an interrupted attempt"
                );
                assert_eq!(starts.iter().map(|s| s.attempt).max(), Some(attempts as u32));
                // Recovery: the interrupted attempt was taken back, and re-run, within 2 s of the restart.
                let taken_back = events
                    .iter()
                    .find(|e| e["kind"] == "interrupted" && e["step"] == name)
                    .and_then(|e| e["at"].as_i64())
                    .unwrap();
                assert!(
                    taken_back - restarted_at < 2_000,
                    "{id}/{name} was taken back {} ms after the restart",
                    taken_back - restarted_at
                );
                let rerun_at = starts.iter().find(|s| s.pid == pid2).unwrap().at;
                assert!(
                    rerun_at - restarted_at < 2_000,
                    "{id}/{name} re-ran {} ms after the restart",
                    rerun_at - restarted_at
                );
                rerun.push((id.clone(), name.to_string()));
            }
        }
    }
    rerun.sort();
    let mut expected = in_flight.clone();
    expected.sort();
    assert_eq!(rerun, expected, "exactly the steps in flight at the kill ran again");
    drop(second);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let env = Env::new("");
    let _first = env.serve("serve-1.log");
    let out = env.command().arg("serve").env("LECTERN_HTTP_ADDR", "127.0.0.1:0").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another `lectern serve` is running"), "{err}");
}

#[test]
fn an_upload_free_job_enqueued_by_the_cli_while_serving_runs_and_is_visible_over_http() {
    let env = Env::new("[stages.test]\nworkers = 2\n");
    let server = env.serve("serve.log");
    let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--params", "{\"sleep_ms\": 10}", "--json"]);
    let id = v["id"].as_str().unwrap().to_string();
    wait_for(20, "the job to succeed", || {
        let (status, body) = common::http_get(&server.addr, &format!("/v1/jobs/{id}")).unwrap();
        status == 200 && body.contains("\"state\":\"succeeded\"")
    });
    let (status, body) = common::http_get(&server.addr, "/v1/jobs/job_missing").unwrap();
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let (status, body) = common::http_get(&server.addr, "/v1/jobs?state=bogus").unwrap();
    assert_eq!(status, 400, "{body}");
    let counts: HashMap<&str, u16> = ["/healthz", "/readyz", "/metrics"]
        .into_iter()
        .map(|p| (p, common::http_get(&server.addr, p).unwrap().0))
        .collect();
    assert!(counts.values().all(|s| *s == 200), "{counts:?}");
}

#[test]
fn sigterm_hands_running_steps_back_without_spending_a_retry() {
    // Text before the first header lands in the [scheduler] table Env::new starts with.
    let env = Env::new("shutdown-grace = \"5s\"\n[stages.test]\nworkers = 2\n[retry]\nmax-attempts = 1\n");
    let fx = env.path("effects.log");
    let mut server = env.serve("serve-1.log");
    // A long step; with max-attempts = 1, a charged interruption would make the job dead.
    let params = serde_json::json!({"sleep_ms": 30_000, "log": fx}).to_string();
    let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--params", &params, "--json"]);
    let id = v["id"].as_str().unwrap().to_string();
    wait_for(20, "the first step to start", || effects(&fx).iter().any(|e| e.what == "START"));
    let (status, took) = server.terminate(std::time::Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}: {}", read(&server.log));
    assert!(
        took < std::time::Duration::from_secs(5),
        "shutdown took {took:?}: the step did not stop at its checkpoint"
    );

    let job = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(job["state"], "queued", "{job}");
    assert_eq!(job["steps"][0]["state"], "queued");
    let events = job["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == "released"), "{job}");
    assert!(!events.iter().any(|e| e["kind"] == "interrupted"), "a graceful stop is not a crash");

    // The next start runs it again; the released attempt did not use up the only attempt allowed.
    let _second = env.serve("serve-2.log");
    wait_for(20, "the step to start again", || effects(&fx).iter().filter(|e| e.what == "START").count() >= 2);
    let job = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(job["steps"][0]["state"], "running");
    assert_eq!(job["steps"][0]["attempts"], 2);
    assert_ne!(job["state"], "dead");
}
