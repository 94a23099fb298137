use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn defaults_are_valid() {
    let c = Config::load(None, env(&[])).unwrap();
    assert_eq!(c.http.addr, "127.0.0.1:8080");
    assert_eq!(c.data.dir, PathBuf::from("./data"));
    assert_eq!(c.workers_for("transcode"), 1);
    assert_eq!(c.workers_for("probe"), 2);
}

#[test]
fn env_overrides_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lectern.toml");
    std::fs::write(
        &p,
        "[http]\naddr = \"127.0.0.1:9000\"\n[scheduler]\npoll-interval = \"1s\"\n\
         [stages.transcode]\nworkers = 2\n[step-retry.notify]\nmax-attempts = 9\n\
         initial-delay = \"1s\"\nmax-delay = \"1h\"\n",
    )
    .unwrap();
    let c = Config::load(
        Some(&p),
        env(&[
            ("LECTERN_HTTP_ADDR", "127.0.0.1:9100"),
            ("LECTERN_DATA_DIR", "/tmp/x"),
            ("LECTERN_ADMIN_KEY", "1234567890123456"),
            ("LECTERN_WEBHOOK_ALLOW", "10.0.0.0/8, hooks.local"),
            ("LECTERN_SCHEDULER_TENANT_MAX_IN_FLIGHT", "7"),
            ("LECTERN_RETRY_MAX_ATTEMPTS", "3"),
            ("LECTERN_CONFIG", "ignored"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(c.http.addr, "127.0.0.1:9100");
    assert_eq!(c.data.dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.admin.key.as_deref(), Some("1234567890123456"), "a numeric-looking key stays a string");
    assert_eq!(c.webhook.allow, vec!["10.0.0.0/8", "hooks.local"]);
    assert_eq!(c.scheduler.poll_interval, Duration::from_secs(1));
    assert_eq!(c.scheduler.tenant_max_in_flight, 7);
    assert_eq!(c.retry.max_attempts, 3);
    assert_eq!(c.retry_for("notify").max_attempts, 9);
    assert_eq!(c.retry_for("probe").max_attempts, 3);
    assert_eq!(c.workers_for("transcode"), 2);
}

#[test]
fn bad_config_names_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("LECTERN_HTTP_ADDR", "not an address")], "http.addr"),
        (&[("LECTERN_SCHEDULER_POLL_INTERVAL", "soon")], "poll-interval"),
        (&[("LECTERN_SCHEDULER_TENANT_MAX_IN_FLIGHT", "0")], "scheduler.tenant-max-in-flight"),
        (&[("LECTERN_HTTP_PORTT", "1")], "portt"),
        (&[("LECTERN_NOSUCH_THING", "1")], "nosuch.thing"),
        (&[("LECTERN_RETRY_MAX_ATTEMPTS", "0")], "retry"),
        (&[("LECTERN_SCHEDULER_LEASE_TIMEOUT", "1s")], "scheduler.lease-timeout"),
        (&[("LECTERN_ADMIN_KEY", "")], "admin.key"),
        (&[("LECTERN_ADMIN_KEY", "short")], "admin.key"),
        (&[("LECTERN_ADMIN_KEY", "sixteen chars ok")], "admin.key"),
        (&[("LECTERN_UPLOAD_IDLE_TIMEOUT", "0s")], "upload.idle-timeout"),
    ];
    for (vars, needle) in cases {
        let err = Config::load(None, env(vars)).unwrap_err().to_string();
        assert!(err.contains(needle), "{vars:?}: {err:?} should name {needle}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[stages.transcode]\nworkers = 0\n").unwrap();
    let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(err.contains("stages.transcode.workers"), "{err}");
    std::fs::write(&p, "[http]\nadress = \"x\"\n").unwrap();
    let err = Config::load(Some(&p), env(&[])).unwrap_err().to_string();
    assert!(err.contains("adress"), "{err}");
}
