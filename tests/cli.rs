//! The `lectern` CLI against a real data dir, with and without a server running.

mod common;

use common::{Env, wait_for};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let env = Env::new("");
    for (var, value, key) in [
        ("LECTERN_HTTP_ADDR", "not-an-address", "http.addr"),
        ("LECTERN_SCHEDULER_POLL_INTERVAL", "soonish", "from LECTERN_SCHEDULER_POLL_INTERVAL"),
        ("LECTERN_SCHEDULER_TYPO", "1", "from LECTERN_SCHEDULER_TYPO"),
        ("LECTERN_NOPE_X", "1", "nope.x"),
    ] {
        let out = env.command().env(var, value).args(["jobs", "list"]).output().unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(stderr(&out).contains(key), "{var}: {}", stderr(&out));
    }
    std::fs::write(env.path("lectern.toml"), "[stages.probe]\nworkers = 0\n").unwrap();
    let out = env.cli(&["jobs", "list"]);
    assert!(stderr(&out).contains("stages.probe.workers"), "{}", stderr(&out));
}

#[test]
fn listing_an_empty_journal_gives_empty_json() {
    let env = Env::new("");
    assert_eq!(env.cli_json(&["jobs", "list", "--json"]), serde_json::json!({"jobs": []}));
    let q = env.cli_json(&["queues", "list", "--json"]);
    assert_eq!(q["queues"], serde_json::json!([]));
    let out = env.cli(&["jobs", "show", "job_nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("job not found: job_nope"), "{}", stderr(&out));
}

#[test]
fn dead_jobs_are_shown_with_their_timeline_and_retried_from_the_failed_step() {
    let env = Env::new(
        "[stages.test]\nworkers = 2\n[retry]\nmax-attempts = 2\ninitial-delay = \"10ms\"\nmax-delay = \"20ms\"\n",
    );
    let _server = env.serve("serve.log");
    let params = r#"{"sleep_ms": 0, "fail": {"c": 2}}"#;
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--params", params, "--json"]);
            v["id"].as_str().unwrap().into()
        })
        .collect();
    wait_for(20, "both jobs to go dead", || {
        env.cli_json(&["jobs", "list", "--state", "dead", "--json"])["jobs"].as_array().unwrap().len() == 2
    });

    let text = env.cli(&["jobs", "show", &ids[0]]);
    let text = String::from_utf8_lossy(&text.stdout);
    for needle in ["STEP", "ATTEMPTS", "timeline", "test_transient", "dead", "retry at"] {
        assert!(text.contains(needle), "`jobs show` lacks {needle:?}:\n{text}");
    }

    let out = env.cli_json(&["jobs", "retry", "--state", "dead", "--json"]);
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["ok"] == true), "{out}");
    wait_for(20, "both retried jobs to succeed", || {
        env.cli_json(&["jobs", "list", "--state", "succeeded", "--json"])["jobs"].as_array().unwrap().len() == 2
    });
    for id in &ids {
        let job = env.cli_json(&["jobs", "show", id, "--json"]);
        let attempts: Vec<(String, u64)> = job["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["attempts"].as_u64().unwrap()))
            .collect();
        let expect = [("a", 1), ("b", 1), ("c", 3), ("d", 1)].map(|(n, a)| (n.to_string(), a));
        assert_eq!(attempts, expect, "only the failed tail ran again");
        assert_eq!(job["id"], id.as_str(), "same job id");
    }
    let again = env.cli(&["jobs", "retry", &ids[0]]);
    assert!(!again.status.success(), "a succeeded job is not retried");
}

#[test]
fn queues_pause_and_resume_by_stage_and_tenant() {
    let env = Env::new("[stages.test]\nworkers = 1\n");
    let server = env.serve("serve.log");
    let paused = env.cli_json(&["queues", "pause", "--stage", "test", "--json"]);
    assert_eq!(paused["paused"], true);
    let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--json"]);
    let id = v["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let job = env.cli_json(&["jobs", "show", &id, "--json"]);
    assert_eq!(job["state"], "queued", "a paused stage dispatched work");
    let q = env.cli_json(&["queues", "list", "--json"]);
    let stage = q["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "test").unwrap().clone();
    assert_eq!((stage["paused"].clone(), stage["ready"].clone()), (true.into(), 1.into()));
    let list = String::from_utf8_lossy(&env.cli(&["queues", "list"]).stdout).into_owned();
    assert!(list.contains("paused") && list.contains("tenant:default"), "{list}");

    env.cli_json(&["queues", "pause", "--tenant", "default", "--json"]);
    env.cli_json(&["queues", "resume", "--stage", "test", "--json"]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(env.cli_json(&["jobs", "show", &id, "--json"])["state"], "queued", "a paused tenant ran");
    env.cli_json(&["queues", "resume", "--tenant", "default", "--json"]);
    wait_for(20, "the job to run once resumed", || {
        env.cli_json(&["jobs", "show", &id, "--json"])["state"] == "succeeded"
    });

    let bad = env.cli(&["queues", "pause", "--stage", "nosuch"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown stage"), "{}", stderr(&bad));
    let both = env.cli(&["queues", "pause", "--stage", "test", "--tenant", "default"]);
    assert!(!both.status.success());
    drop(server);
}

#[test]
fn cancel_reports_each_job() {
    let env = Env::new("");
    let v = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--json"]);
    let id = v["id"].as_str().unwrap();
    let out = env.command().args(["jobs", "cancel", id, "job_missing", "--json"]).output().unwrap();
    assert!(!out.status.success(), "one of two failed: the exit code says so");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["state"], "cancelled");
    assert_eq!(v["results"][1]["error"]["code"], "not_found");
    let idem = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--idempotency-key", "k", "--json"]);
    let again = env.cli_json(&["jobs", "enqueue", "--kind", "test", "--idempotency-key", "k", "--json"]);
    assert_eq!(idem["id"], again["id"]);
    assert_eq!(again["existing"], true);
    let unknown = env.cli(&["jobs", "enqueue", "--kind", "nope"]);
    assert!(stderr(&unknown).contains("unknown job kind"), "{}", stderr(&unknown));
}
