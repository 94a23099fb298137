//! Tenants and keys through a real `lectern serve`: every `/v1` route needs a key once one exists,
//! another tenant's ids answer 404 exactly like missing ones, the operator's routes refuse tenant
//! keys, traversal and header-injection attempts get JSON 4xx, signed media play only from their
//! token URL (checked by ffmpeg), and an open API stays on loopback. Rate limits: tests/limits.rs.

mod common;

use std::process::{Command, Stdio};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{
    ADMIN_KEY, Env, bearer, call, create_tenant, fixtures, header_of as header, http, http_get, json_of, post_json,
    serve_closed, upload_as, wait_exit, wait_job_as,
};
use serde_json::{Value, json};

const SPEECH_OFF: &str = "[models]\nspeech = false\n";
const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

/// A 4xx whose body (unless it is a `HEAD`) is a JSON error with a code.
fn assert_json_4xx(what: &str, method: &str, status: u16, head: &str, body: &[u8]) {
    assert!((400..500).contains(&status), "{what}: {status}\n{head}\n{}", String::from_utf8_lossy(body));
    if method != "HEAD" {
        let v = json_of(body);
        assert!(v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: not a JSON error: {head}\n{v}");
    }
}

/// No response header carries text a request tried to inject.
fn assert_not_injected(what: &str, head: &str) {
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("x-injected") && !lower.contains("evil"), "{what}: injected into the response: {head}");
}

type Route = (&'static str, String, Vec<(&'static str, &'static str)>, Vec<u8>);

/// Every route that needs a key, with a request that would otherwise be valid.
fn every_keyed_route(m: &str, j: &str, u: &str, w: &str) -> Vec<Route> {
    let ct = |t| vec![("Content-Type", t)];
    let tus_patch = vec![TUS, ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")];
    vec![
        ("GET", "/v1/media".into(), vec![], vec![]),
        ("POST", "/v1/media".into(), ct("audio/wav"), b"RIFF".to_vec()),
        ("GET", format!("/v1/media/{m}"), vec![], vec![]),
        ("GET", format!("/v1/media/{m}/waveform.json"), vec![], vec![]),
        ("GET", format!("/v1/media/{m}/transcript.json"), vec![], vec![]),
        ("GET", format!("/v1/media/{m}/transcript.vtt"), vec![], vec![]),
        ("GET", format!("/v1/media/{m}/transcript.srt"), vec![], vec![]),
        ("GET", "/v1/jobs".into(), vec![], vec![]),
        ("GET", format!("/v1/jobs/{j}"), vec![], vec![]),
        ("POST", format!("/v1/jobs/{j}/retry"), vec![], vec![]),
        ("POST", format!("/v1/jobs/{j}/cancel"), vec![], vec![]),
        ("POST", "/v1/uploads".into(), vec![TUS, ("Upload-Length", "100")], vec![]),
        ("HEAD", format!("/v1/uploads/{u}"), vec![TUS], vec![]),
        ("PATCH", format!("/v1/uploads/{u}"), tus_patch, b"RIFF".to_vec()),
        ("DELETE", format!("/v1/uploads/{u}"), vec![TUS], vec![]),
        ("GET", "/v1/webhooks".into(), vec![], vec![]),
        ("POST", "/v1/webhooks".into(), ct("application/json"), br#"{"url":"http://93.184.216.34/x"}"#.to_vec()),
        ("DELETE", format!("/v1/webhooks/{w}"), vec![], vec![]),
        ("GET", "/v1/search?q=forgiveness&mode=lexical".into(), vec![], vec![]),
        ("GET", "/v1/tenants".into(), vec![], vec![]),
        ("POST", "/v1/tenants".into(), ct("application/json"), br#"{"name":"mallory"}"#.to_vec()),
        ("GET", "/v1/queues".into(), vec![], vec![]),
        ("POST", "/v1/queues/pause".into(), ct("application/json"), br#"{"stage":"probe"}"#.to_vec()),
        ("POST", "/v1/queues/resume".into(), ct("application/json"), br#"{"stage":"probe"}"#.to_vec()),
        ("GET", "/metrics".into(), vec![], vec![]),
        ("GET", "/debug/pipeline".into(), vec![], vec![]),
    ]
}

/// The ids of tenant A's resources: media, finished job, dead job, tus upload, webhook endpoint.
struct Owned {
    media: String,
    job: String,
    dead_job: String,
    upload: String,
    webhook: String,
}

fn create_owned(addr: &str, key: &str) -> Owned {
    let fx = fixtures();
    let auth = bearer(key);
    let auth = auth.as_str();
    let (status, up) = upload_as(addr, key, &fx.join("speech-22k-mono.mp3"), &[("title", "alpha sermon")]);
    assert_eq!(status, 202, "{up}");
    let (status, dead) = upload_as(addr, key, &fx.join("bad/header-only.wav"), &[]);
    assert_eq!(status, 202, "{dead}");
    let (status, head, _) = call(addr, Some(auth), "POST", "/v1/uploads", &[TUS, ("Upload-Length", "1000")], b"");
    assert_eq!(status, 201, "{head}");
    let upload = header(&head, "Location").unwrap().rsplit('/').next().unwrap().to_string();
    // Never fires (no job of A fails with `panic`): the endpoint is only a resource to guard.
    let hook = json!({"url": "http://93.184.216.34/hook", "events": ["job.dead"], "codes": ["panic"]});
    let (status, hook) = post_json(addr, key, "/v1/webhooks", &hook);
    assert_eq!(status, 201, "{hook}");
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    Owned {
        media: s(&up, "media_id"),
        job: s(&up, "job_id"),
        dead_job: s(&dead, "job_id"),
        upload,
        webhook: s(&hook, "id"),
    }
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn tenants_see_only_their_own_and_every_route_needs_a_key() {
    let env = Env::new(""); // speech on: transcripts and search are part of the matrix
    let (a_id, a, _) = create_tenant(&env, "alpha");
    let (_, b, _) = create_tenant(&env, "beta");
    let server = serve_closed(&env, &[]);
    let addr = server.addr.clone();
    let (a_auth, b_auth, op) = (bearer(&a), bearer(&b), bearer(ADMIN_KEY));
    let (a_auth, b_auth, op) = (a_auth.as_str(), b_auth.as_str(), op.as_str());
    let own = create_owned(&addr, &a);
    let (status, b_up) = upload_as(&addr, &b, &fixtures().join("bad/header-only.wav"), &[]);
    assert_eq!(status, 202, "{b_up}");
    let job = wait_job_as(&addr, &a, &own.job, 300);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(wait_job_as(&addr, &a, &own.dead_job, 60)["state"], "dead");
    assert_eq!(wait_job_as(&addr, &b, b_up["job_id"].as_str().unwrap(), 60)["state"], "dead");

    // No key, an unknown key, a key in the wrong scheme: 401 everywhere, and nothing happened.
    let routes = every_keyed_route(&own.media, &own.dead_job, &own.upload, &own.webhook);
    let near_admin = bearer(&ADMIN_KEY[..ADMIN_KEY.len() - 1]);
    let unknown = bearer("lk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let basic = format!("Basic {ADMIN_KEY}");
    for auth in [None, Some(unknown.as_str()), Some(near_admin.as_str()), Some(basic.as_str()), Some("Bearer")] {
        for (method, path, headers, body) in &routes {
            let (status, head, body) = call(&addr, auth, method, path, headers, body);
            let what = format!("{method} {path} with {auth:?}");
            assert_eq!(status, 401, "{what}: {head}");
            assert!(header(&head, "WWW-Authenticate").is_some_and(|h| h.starts_with("Bearer")), "{what}: {head}");
            if *method != "HEAD" {
                assert_eq!(json_of(&body)["error"]["code"], "unauthorized", "{what}");
            }
        }
    }
    let (_, _, tenants) = call(&addr, Some(op), "GET", "/v1/tenants", &[], b"");
    assert!(!String::from_utf8_lossy(&tenants).contains("mallory"), "a refused request created a tenant");
    let listed = json_of(&tenants);
    let stamp = listed["tenants"][0]["created_at"].as_str().unwrap_or_default().to_string();
    assert!(lectern::clock::parse_time(&stamp).is_some(), "created_at is RFC 3339 like the rest: {listed}");

    // A tenant key on the operator's routes: 403.
    for (method, path, headers, body) in routes.iter().filter(|r| {
        r.1.contains("/tenants") || r.1.contains("/queues") || r.1 == "/metrics" || r.1 == "/debug/pipeline"
    }) {
        let (status, head, body) = call(&addr, Some(a_auth), method, path, headers, body);
        let code = json_of(&body)["error"]["code"].clone();
        assert_eq!((status, code), (403, json!("forbidden")), "{method} {path}: {head}");
    }

    // B on A's ids: 404 not_found, exactly as on ids that do not exist; A's things are untouched.
    let missing = Owned {
        media: "med_00000000000000000000000000000000".into(),
        job: String::new(),
        dead_job: "job_00000000000000000000000000000000".into(),
        upload: "upl_00000000000000000000000000000000".into(),
        webhook: "whe_00000000000000000000000000000000".into(),
    };
    let by_id = |o: &Owned| -> Vec<Route> {
        every_keyed_route(&o.media, &o.dead_job, &o.upload, &o.webhook)
            .into_iter()
            .filter(|r| [&o.media, &o.dead_job, &o.upload, &o.webhook].iter().any(|id| r.1.contains(id.as_str())))
            .collect()
    };
    let (theirs, nothing) = (by_id(&own), by_id(&missing));
    assert_eq!(theirs.len(), 12);
    for ((method, path, headers, body), (_, gone, _, _)) in theirs.iter().zip(&nothing) {
        let (status, head, got) = call(&addr, Some(b_auth), method, path, headers, body);
        let (status_missing, _, want) = call(&addr, Some(b_auth), method, gone, headers, body);
        assert_eq!(status, 404, "B {method} {path}: {head}");
        assert_eq!(status_missing, 404, "B {method} {gone}");
        assert_eq!(json_of(&got)["error"]["code"], json_of(&want)["error"]["code"], "B {method} {path}");
    }
    let (_, job_now) =
        common::http_json(&addr, "GET", &format!("/v1/jobs/{}", own.dead_job), &[("Authorization", a_auth)], b"");
    assert_eq!(job_now["state"], "dead", "B's retry must not have touched A's job");

    // B's listings and search hold only B's things, whatever B asks for.
    let get_as = |auth: &str, path: &str| {
        let (status, _, body) = call(&addr, Some(auth), "GET", path, &[], b"");
        assert_eq!(status, 200, "GET {path}");
        json_of(&body)
    };
    assert_eq!(ids(&get_as(b_auth, "/v1/media"), "media"), vec![b_up["media_id"].as_str().unwrap()]);
    for path in ["/v1/jobs".to_string(), format!("/v1/jobs?tenant={a_id}")] {
        assert_eq!(ids(&get_as(b_auth, &path), "jobs"), vec![b_up["job_id"].as_str().unwrap()], "{path}");
    }
    assert_eq!(get_as(b_auth, "/v1/webhooks")["webhooks"], json!([]));
    let q = "/v1/search?q=forgiveness%20debt%20reading&mode=lexical&k=100";
    let hits = get_as(a_auth, q)["results"].as_array().unwrap().clone();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["media_id"] == own.media.as_str()), "A's search: {hits:?}");
    assert_eq!(get_as(b_auth, q)["results"], json!([]), "B's search must not find A's media");
    assert_eq!(get_as(op, "/v1/jobs")["jobs"].as_array().unwrap().len(), 3, "the operator sees every tenant");

    // A on its own ids: 2xx.
    for (method, path, headers, body) in &theirs {
        if path.contains("/retry") || path.contains("/cancel") || *method == "DELETE" {
            continue;
        }
        let (status, head, _) = call(&addr, Some(a_auth), method, path, headers, body);
        assert!((200..300).contains(&status), "A {method} {path}: {head}");
    }
    let (_, _, vtt) = call(&addr, Some(a_auth), "GET", &format!("/v1/media/{}/transcript.vtt", own.media), &[], b"");
    assert!(vtt.starts_with(b"WEBVTT"), "{}", String::from_utf8_lossy(&vtt));
    // Retry, then cancel while the tenant's queue is paused (so the retried job cannot die first).
    let pause = json!({"tenant": a_id}).to_string();
    let ctj = [("Content-Type", "application/json")];
    assert_eq!(call(&addr, Some(op), "POST", "/v1/queues/pause", &ctj, pause.as_bytes()).0, 200);
    for (action, state) in [("retry", "queued"), ("cancel", "cancelled")] {
        let (status, _, body) =
            call(&addr, Some(a_auth), "POST", &format!("/v1/jobs/{}/{action}", own.dead_job), &[], b"");
        assert_eq!((status, json_of(&body)["state"].as_str()), (202, Some(state)), "A {action}");
    }
    assert_eq!(call(&addr, Some(op), "POST", "/v1/queues/resume", &ctj, pause.as_bytes()).0, 200);
    let (status, _, _) = call(&addr, Some(a_auth), "DELETE", &format!("/v1/uploads/{}", own.upload), &[TUS], b"");
    assert_eq!(status, 204);
    let (status, _, _) = call(&addr, Some(a_auth), "DELETE", &format!("/v1/webhooks/{}", own.webhook), &[], b"");
    assert_eq!(status, 204);
    let (status, _, _) = call(&addr, Some(op), "GET", &format!("/v1/media/{}", own.media), &[], b"");
    assert_eq!(status, 200, "the operator sees A's media");
}

/// Path segments, percent-encoded and separated by spaces, that try to leave their directory,
/// smuggle NUL or CRLF, or are not UTF-8 at all.
const BAD_IDS: &str = "..%2f..%2fetc%2fpasswd ..%2F..%2F..%2Fjournal.db %2e%2e %2e%2e%2f%2e%2e%2fdata%2fjournal.db .. \
    %5c..%5c..%5cjournal.db %252e%252e%252f med_00000000000000000000000000000000%2f..%2f.. %00 med_%00 \
    abc%0d%0aX-Injected:%20evil %0aX-Injected:%20evil %E2%80%AEevil %D0%BA%D0%BB%D1%8E%D1%87 %C0%AE%C0%AE%C0%AF %ff%fe";

/// (method, path with `{}` for the id, headers, body).
type Template<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [u8]);
/// (what, method, path, Authorization, extra header, status; 0 = the HTTP parser's own 400).
type Case<'a> = (&'a str, &'a str, &'a str, &'a str, (&'a str, &'a str), u16);

#[test]
fn traversal_and_header_injection_get_json_4xx_and_the_server_keeps_serving() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, _) = create_tenant(&env, "alpha");
    let server = serve_closed(&env, &[]);
    let addr = server.addr.clone();
    let (auth, op) = (bearer(&a), bearer(ADMIN_KEY));
    let (auth, op) = (auth.as_str(), op.as_str());
    let (status, up) = upload_as(&addr, &a, &fixtures().join("bad/header-only.wav"), &[]);
    assert_eq!(status, 202, "{up}");
    let m = up["media_id"].as_str().unwrap().to_string();
    let long = "a".repeat(8000);
    let tus_patch = [TUS, ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")];
    let templates: Vec<Template> = vec![
        ("GET", "/v1/media/{}".into(), &[], b""),
        ("GET", "/v1/media/{}/waveform.json".into(), &[], b""),
        ("GET", "/v1/media/{}/transcript.json".into(), &[], b""),
        ("GET", format!("/v1/media/{m}/transcript.{{}}"), &[], b""),
        ("GET", "/v1/jobs/{}".into(), &[], b""),
        ("POST", "/v1/jobs/{}/retry".into(), &[], b""),
        ("POST", "/v1/jobs/{}/cancel".into(), &[], b""),
        ("HEAD", "/v1/uploads/{}".into(), &[TUS], b""),
        ("PATCH", "/v1/uploads/{}".into(), &tus_patch, b"RIFF"),
        ("DELETE", "/v1/uploads/{}".into(), &[TUS], b""),
        ("DELETE", "/v1/webhooks/{}".into(), &[], b""),
        ("GET", "/hls/{}/master.m3u8".into(), &[], b""),
        ("GET", format!("/hls/{m}/{{}}"), &[], b""),
        ("GET", format!("/hls/{m}/{{}}/index.m3u8"), &[], b""),
        ("GET", format!("/hls/{m}/s-1-{{}}/master.m3u8"), &[], b""),
        // Names: the operator naming a tenant that is not one.
        ("GET", "/v1/jobs?tenant={}".into(), &[], b""),
        ("POST", "/v1/media?tenant={}".into(), &[("Content-Type", "audio/wav")], b"RIFF"),
    ];
    for (method, template, headers, body) in &templates {
        let key = if template.contains("tenant=") { op } else { auth };
        for id in BAD_IDS.split_whitespace().chain([long.as_str()]) {
            let path = template.replace("{}", id);
            let (status, head, got) = call(&addr, Some(key), method, &path, headers, body);
            let what = format!("{method} {}", &path[..path.len().min(120)]);
            assert_json_4xx(&what, method, status, &head, &got);
            assert_not_injected(&what, &head);
        }
    }

    // Names in JSON bodies (decoded this time).
    let ctj: &[(&str, &str)] = &[("Content-Type", "application/json")];
    for name in
        ["../../etc/passwd", "..\\..\\journal.db", "a\u{0}b", "evil\r\nX-Injected: evil", "\u{202e}live", "ключ"]
    {
        for body in [json!({"tenant": name}), json!({"stage": name})] {
            let (status, head, got) =
                call(&addr, Some(op), "POST", "/v1/queues/pause", ctj, body.to_string().as_bytes());
            assert_json_4xx(&format!("pause {body}"), "POST", status, &head, &got);
        }
        let hook = json!({"url": "http://93.184.216.34/x", "tenant": name});
        let (status, head, got) = call(&addr, Some(op), "POST", "/v1/webhooks", ctj, hook.to_string().as_bytes());
        assert_json_4xx(&format!("webhook for tenant {name:?}"), "POST", status, &head, &got);
    }
    for name in ["a\u{0}b", "evil\r\nX-Injected: evil", "tab\there", "", "   ", &"n".repeat(101)] {
        let body = json!({"name": name}).to_string();
        let (status, head, got) = call(&addr, Some(op), "POST", "/v1/tenants", ctj, body.as_bytes());
        assert_json_4xx(&format!("tenant name {name:?}"), "POST", status, &head, &got);
    }

    // Header values: CRLF splits, bare CR, obs-fold, control bytes, non-ASCII, over-long.
    let evil_callback = format!("callback_url {}", STANDARD.encode("http://93.184.216.34/\r\nX-Injected: evil"));
    let long_key = "k".repeat(256);
    let a_then_injected = format!("Bearer {a}\r\nX-Injected: evil");
    let folded = format!("Bearer {a}\r\n X-Injected: evil");
    let unknown_then_a = format!("Bearer nobody\r\nAuthorization: Bearer {a}");
    let long_bearer = format!("Bearer {}", "k".repeat(600));
    let wav = [("Content-Type", "audio/wav")];
    let cases: Vec<Case> = vec![
        ("key split by CRLF", "POST", "/v1/media", auth, ("Idempotency-Key", "k1\r\nX-Injected: evil"), 415),
        ("key with bare CR", "POST", "/v1/media", auth, ("Idempotency-Key", "k2\rX-Injected: evil"), 0),
        ("key with a control byte", "POST", "/v1/media", auth, ("Idempotency-Key", "k\u{1}3"), 0),
        ("key not ASCII", "POST", "/v1/media", auth, ("Idempotency-Key", "ключ"), 400),
        ("key too long", "POST", "/v1/media", auth, ("Idempotency-Key", &long_key), 400),
        (
            "metadata split by CRLF",
            "POST",
            "/v1/uploads",
            auth,
            ("Upload-Metadata", "title dA==\r\nX-Injected: evil"),
            201,
        ),
        ("CRLF inside a callback", "POST", "/v1/uploads", auth, ("Upload-Metadata", &evil_callback), 400),
        ("metadata not ASCII", "POST", "/v1/uploads", auth, ("Upload-Metadata", "title ключ"), 400),
        ("metadata not base64", "POST", "/v1/uploads", auth, ("Upload-Metadata", "title !!!"), 400),
        ("auth split by CRLF", "GET", "/v1/media", &a_then_injected, ("X-Test", "1"), 200),
        ("auth folded", "GET", "/v1/media", &folded, ("X-Test", "1"), 0),
        ("auth with bare CR", "GET", "/v1/media", "Bearer a\rb", ("X-Test", "1"), 0),
        ("auth twice, first unknown", "GET", "/v1/media", &unknown_then_a, ("X-Test", "1"), 401),
        ("auth not ASCII", "GET", "/v1/media", "Bearer ключ", ("X-Test", "1"), 401),
        ("auth too long", "GET", "/v1/media", &long_bearer, ("X-Test", "1"), 401),
    ];
    for (what, method, path, authz, extra, want) in cases {
        let mut headers = vec![extra, ("Authorization", authz)];
        headers.extend(if path == "/v1/uploads" { vec![TUS, ("Upload-Length", "100")] } else { wav.to_vec() });
        let (status, head, got) = http(&addr, method, path, &headers, if method == "POST" { b"RIFF" } else { b"" });
        assert_not_injected(what, &head);
        if want == 0 {
            // Rejected by actix-http's parser before any handler: 400 with an empty body.
            assert_eq!((status, got.len()), (400, 0), "{what}: {head}");
        } else {
            assert_eq!(status, want, "{what}: {head} {}", String::from_utf8_lossy(&got));
            if want >= 400 {
                assert_json_4xx(what, method, status, &head, &got);
            }
        }
    }
    assert_eq!(http_get(&addr, "/healthz").map(|r| r.0), Some(200), "the server stopped serving");
    assert_eq!(call(&addr, Some(auth), "GET", &format!("/v1/media/{m}"), &[], b"").0, 200);
}

fn ffmpeg_plays(url: &str) -> (bool, String) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i", url, "-f", "null", "-"])
        .output()
        .unwrap_or_else(|e| panic!("ffmpeg is required: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn signed_media_play_only_from_their_token_url() {
    let env = Env::new(SPEECH_OFF);
    let (_, a, _) = create_tenant(&env, "alpha");
    let server = serve_closed(&env, &[]);
    let addr = server.addr.clone();
    let file = fixtures().join("speech-22k-mono.mp3");
    let (status, up) = upload_as(&addr, &a, &file, &[("playback_policy", "signed")]);
    assert_eq!(status, 202, "{up}");
    let (status, public) = upload_as(&addr, &a, &file, &[("playback_policy", "public")]);
    assert_eq!(status, 202, "{public}");
    let m = up["media_id"].as_str().unwrap();
    let signed = up["links"]["hls"].as_str().unwrap().to_string();
    let token = signed.split('/').nth(3).unwrap().to_string();
    assert!(signed.starts_with(&format!("/hls/{m}/s-")) && signed.ends_with("/master.m3u8"), "{signed}");
    for job in [&up, &public] {
        let done = wait_job_as(&addr, &a, job["job_id"].as_str().unwrap(), 180);
        assert_eq!(done["state"], "succeeded", "{done}");
    }

    let (ok, err) = ffmpeg_plays(&format!("http://{addr}{signed}"));
    assert!(ok && err.trim().is_empty(), "ffmpeg on the signed URL: {err}");
    let (_, media) = common::http_json(&addr, "GET", &format!("/v1/media/{m}"), &[("Authorization", &bearer(&a))], b"");
    assert_eq!(media["playback_policy"], "signed", "{media}");
    assert!(media["links"]["hls"].as_str().unwrap().contains("/s-"), "{media}");

    // Forged tokens, with the server's own key: expired, and valid for another media.
    let key: [u8; 32] = std::fs::read(env.path("data/secrets/playback.key")).unwrap().try_into().unwrap();
    let other = public["media_id"].as_str().unwrap();
    let far = (std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_secs() + 3600) as i64;
    let expired = lectern::auth::playback_token(&key, m, 1_000_000_000);
    let for_other = lectern::auth::playback_token(&key, other, far);
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let later = token.replacen("s-", "s-9", 1);
    for (path, code) in [
        (format!("/hls/{m}/master.m3u8"), "playback_token_required"),
        (format!("/hls/{m}/a64/index.m3u8"), "playback_token_required"),
        (format!("/hls/{m}/a64/init.mp4"), "playback_token_required"),
        (format!("/hls/{m}/{flipped}/master.m3u8"), "playback_token_invalid"),
        (format!("/hls/{m}/{later}/master.m3u8"), "playback_token_invalid"),
        (format!("/hls/{m}/{for_other}/a64/index.m3u8"), "playback_token_invalid"),
        (format!("/hls/{m}/{expired}/master.m3u8"), "playback_token_expired"),
    ] {
        let (status, head, body) = http(&addr, "GET", &path, &[], b"");
        assert_eq!((status, json_of(&body)["error"]["code"].as_str()), (403, Some(code)), "{path}: {head}");
    }
    let (ok, err) = ffmpeg_plays(&format!("http://{addr}/hls/{m}/{flipped}/master.m3u8"));
    assert!(!ok, "ffmpeg played a tampered URL: {err}");
    // The token opens every rendition and segment; a public media needs none.
    for path in [
        format!("/hls/{m}/{token}/a64/index.m3u8"),
        format!("/hls/{m}/{token}/a128/init.mp4"),
        format!("/hls/{other}/master.m3u8"),
    ] {
        assert_eq!(http(&addr, "GET", &path, &[], b"").0, 200, "{path}");
    }
}

#[test]
fn an_open_api_serves_loopback_only_until_the_first_key() {
    let env = Env::new(SPEECH_OFF);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut public = env.command();
    public
        .env("LECTERN_HTTP_ADDR", format!("0.0.0.0:{port}"))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = public.spawn().unwrap();
    let status = wait_exit(&mut child, 30, "`lectern serve` on 0.0.0.0 without any key");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("LECTERN_ADMIN_KEY"), "the refusal must say how to fix it: {stderr}");

    let server = env.serve("serve.log");
    let addr = server.addr.clone();
    for path in ["/v1/media", "/v1/jobs", "/v1/queues", "/metrics"] {
        assert_eq!(http(&addr, "GET", path, &[], b"").0, 200, "open mode: {path} without a key");
    }
    // The first tenant key closes it (within the open-mode cache time).
    let (_, key, _) = create_tenant(&env, "alpha");
    common::wait_for(5, "the API to close", || http(&addr, "GET", "/v1/media", &[], b"").0 == 401);
    assert_eq!(call(&addr, Some(&bearer(&key)), "GET", "/v1/media", &[], b"").0, 200);
    assert_eq!(call(&addr, Some(&bearer(&key)), "GET", "/metrics", &[], b"").0, 403);
}
