//! A player follows a live (EVENT) playlist while the transcode behind it is interrupted — by
//! `kill -9`, then by a graceful SIGTERM — and re-run (issue 9, defect 5). RFC 8216 §6.2.1: an
//! EVENT playlist may only grow. Every poll must list at least as many segments as the one before,
//! and a segment's ETag must not change when the re-run rewrites it byte-identical.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, fixtures, header_of, http, http_get, http_json, wait_for, wait_job};

/// What the poller saw: the largest segment count so far, and every time a poll showed fewer.
#[derive(Default)]
struct Seen {
    max: usize,
    shrank: Vec<(usize, usize)>,
    polls: usize,
}

fn segments(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("#EXTINF:")).count()
}

#[test]
fn a_rerun_transcode_never_shrinks_the_playlist_players_follow() {
    let env = Env::new("");
    let serve = || {
        let mut c = env.command();
        c.env("LECTERN_MODELS_SPEECH", "false").env("LECTERN_SCHEDULER_SHUTDOWN_GRACE", "1s");
        env.serve_with(c, "serve.log")
    };
    let mut server = serve();
    let addr = server.addr.clone();
    let mp3 = std::fs::read(fixtures().join("speech-3min-mono.mp3")).unwrap();
    let (status, up) = http_json(&addr, "POST", "/v1/media", &[("Content-Type", "audio/mpeg")], &mp3);
    assert_eq!(status, 202, "{up}");
    let (media, job) = (up["media_id"].as_str().unwrap().to_string(), up["job_id"].as_str().unwrap().to_string());
    let playlist = format!("/hls/{media}/a64/index.m3u8");

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, addr, playlist) = (seen.clone(), stop.clone(), addr.clone(), playlist.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // The server is down between a kill and its restart: no answer then, which is fine.
                if let Some((200, body)) = http_get(&addr, &playlist) {
                    let n = segments(&body);
                    let mut s = seen.lock().unwrap();
                    if n < s.max {
                        let max = s.max;
                        s.shrank.push((max, n));
                    }
                    s.max = s.max.max(n);
                    s.polls += 1;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let max = || seen.lock().unwrap().max;

    wait_for(120, "the live playlist to list 4 segments", || max() >= 4);
    let seg = format!("/hls/{media}/a64/seg-00002.m4s");
    let tag_before = header_of(&http(&addr, "GET", &seg, &[], b"").1, "ETag").unwrap();
    server.kill9();
    let before_kill = max();
    server = serve();
    wait_for(120, "the re-run to pass what the killed run published", || max() >= before_kill + 3);

    let before_term = max();
    server.terminate(Duration::from_secs(20));
    server = serve();
    wait_for(120, "the second re-run to pass what was published", || max() >= before_term + 3);
    let done = wait_job(&addr, &job, 300);
    assert_eq!(done["state"], "succeeded", "{done}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();

    let seen = seen.lock().unwrap();
    assert!(seen.polls > 20, "the poller saw too little: {} polls", seen.polls);
    assert!(seen.shrank.is_empty(), "the playlist shrank (from, to): {:?}", seen.shrank);
    let (_, _, body) = http(&addr, "GET", &playlist, &[], b"");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("#EXT-X-ENDLIST"), "the finished playlist is VOD: {text}");
    assert_eq!(segments(&text), seen.max, "the final playlist lists every segment");
    let tag_after = header_of(&http(&addr, "GET", &seg, &[], b"").1, "ETag").unwrap();
    assert_eq!(tag_before, tag_after, "a segment rewritten byte-identical keeps its ETag");
    let kinds: Vec<String> =
        done["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str().map(String::from)).collect();
    assert!(kinds.iter().any(|k| k == "interrupted") && kinds.iter().any(|k| k == "released"), "{kinds:?}");
    drop(server);
}
