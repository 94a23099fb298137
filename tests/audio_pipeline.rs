//! Audio in, HLS out, through a real `lectern serve`: uploads over HTTP, the ingest job, and the
//! result checked by real clients (ffmpeg and ffprobe reading the HLS over HTTP) against Apple's
//! authoring rules and EBU R128 loudness. Needs ffmpeg, sox and espeak-ng (`bash .ci/test` installs
//! them).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Env, fixtures, http, http_json, multipart, wait_job};
use serde_json::Value;

fn upload_raw(addr: &str, file: &Path, content_type: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let bytes = std::fs::read(file).unwrap();
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    http_json(addr, "POST", "/v1/media", &headers, &bytes)
}

/// Runs ffmpeg/ffprobe; returns (success, stdout, stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd} is required: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn duration(url: &str) -> f64 {
    let (ok, out, err) = run("ffprobe", &["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url]);
    assert!(ok, "ffprobe {url}: {err}");
    out.trim().parse().unwrap_or_else(|_| panic!("ffprobe gave no duration for {url}: {out}"))
}

/// EBU R128 integrated loudness and true peak as ffmpeg's ebur128 filter measures them.
fn loudness(url: &str) -> (f64, f64) {
    let (ok, _, err) =
        run("ffmpeg", &["-nostats", "-hide_banner", "-i", url, "-af", "ebur128=peak=true", "-f", "null", "-"]);
    assert!(ok, "ffmpeg ebur128 {url}: {err}");
    let summary = &err[err.rfind("Summary:").expect("ebur128 summary")..];
    let value = |label: &str| -> f64 {
        let line = summary.lines().find(|l| l.trim_start().starts_with(label)).expect(label);
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (value("I:"), value("Peak:"))
}

fn attr(line: &str, name: &str) -> Option<String> {
    let i = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[i..];
    Some(if let Some(q) = rest.strip_prefix('"') {
        q[..q.find('"')?].to_string()
    } else {
        rest.split(',').next()?.to_string()
    })
}

/// Apple's HLS authoring rules on a finished stream, with bit rates recomputed from the segments.
fn check_apple_rules(env: &Env, addr: &str, media: &str) {
    let (status, _, master) = http(addr, "GET", &format!("/hls/{media}/master.m3u8"), &[], b"");
    assert_eq!(status, 200);
    let master = String::from_utf8(master).unwrap();
    let variants: Vec<&str> = master.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert_eq!(variants.len(), 2, "a two-rung ladder:\n{master}");
    let uris: Vec<&str> = master.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    for (inf, uri) in variants.iter().zip(&uris) {
        assert_eq!(attr(inf, "CODECS").as_deref(), Some("mp4a.40.2"), "{inf}");
        let declared_peak: f64 = attr(inf, "BANDWIDTH").unwrap().parse().unwrap();
        let declared_avg: f64 = attr(inf, "AVERAGE-BANDWIDTH").expect("AVERAGE-BANDWIDTH").parse().unwrap();
        let (status, _, playlist) = http(addr, "GET", &format!("/hls/{media}/{uri}"), &[], b"");
        assert_eq!(status, 200);
        let playlist = String::from_utf8(playlist).unwrap();
        let version: u32 = playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-VERSION:")).unwrap().parse().unwrap();
        assert!(version >= 7, "EXT-X-MAP needs version 7+");
        assert!(playlist.contains("#EXT-X-MAP:URI="), "{playlist}");
        assert!(playlist.contains("#EXT-X-TARGETDURATION:6\n"), "{playlist}");
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD") && playlist.contains("#EXT-X-ENDLIST"));
        let durations: Vec<f64> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        assert!(!durations.is_empty());
        assert!(durations.iter().all(|d| *d <= 6.5), "a segment longer than 6.5 s: {durations:?}");
        let rung = uri.split('/').next().unwrap();
        let dir = env.path(&format!("data/blobs/hls/{media}/{rung}"));
        let sizes: Vec<f64> = (0..durations.len())
            .map(|i| std::fs::metadata(dir.join(format!("seg-{i:05}.m4s"))).unwrap().len() as f64 * 8.0)
            .collect();
        let avg = sizes.iter().sum::<f64>() / durations.iter().sum::<f64>();
        let peak = sizes.iter().zip(&durations).map(|(b, d)| b / d).fold(0.0, f64::max);
        assert!((avg / declared_avg - 1.0).abs() < 0.10, "{rung}: measured average {avg} vs declared {declared_avg}");
        assert!((peak / declared_peak - 1.0).abs() < 0.10, "{rung}: measured peak {peak} vs declared {declared_peak}");
    }
}

#[test]
fn uploads_become_hls_that_ffmpeg_plays_at_the_right_loudness() {
    let fx = fixtures();
    let env = Env::new("[stages.transcode]\nworkers = 2\n");
    let server = env.serve("serve.log");
    let addr = server.addr.clone();

    // A raw MP3 body, and two WAVs as multipart forms with a title.
    let (status, mp3) = upload_raw(&addr, &fx.join("speech-44k-stereo.mp3"), "audio/mpeg", &[]);
    assert_eq!(status, 202, "{mp3}");
    let mut uploads = vec![("speech-44k-stereo.mp3", mp3)];
    for name in ["speech-quiet.wav", "speech-loud.wav"] {
        let (ct, body) = multipart(name, &std::fs::read(fx.join(name)).unwrap(), &[("title", name)]);
        let (status, v) = http_json(&addr, "POST", "/v1/media", &[("Content-Type", &ct)], &body);
        assert_eq!(status, 202, "{v}");
        uploads.push((name, v));
    }

    for (name, up) in &uploads {
        let media = up["media_id"].as_str().unwrap();
        let job = wait_job(&addr, up["job_id"].as_str().unwrap(), 180);
        assert_eq!(job["state"], "succeeded", "{name}: {job}");
        // media.ready is recorded when the stream first becomes playable, before the transcode ends.
        let events = job["events"].as_array().unwrap();
        let at = |kind: &str, step: &str| {
            events.iter().find(|e| e["kind"] == kind && e["step"] == step).and_then(|e| e["at"].as_i64())
        };
        let ready = at("media.ready", "transcode").unwrap_or_else(|| panic!("{name}: no media.ready event: {job}"));
        let done = at("succeeded", "transcode").unwrap();
        assert!(ready < done, "{name}: media.ready at {ready} is not before the transcode ended at {done}");
        check_apple_rules(&env, &addr, media);

        let master = format!("http://{addr}/hls/{media}/master.m3u8");
        let (ok, _, err) = run("ffmpeg", &["-v", "error", "-i", &master, "-map", "0:a", "-f", "null", "-"]);
        assert!(ok && err.trim().is_empty(), "{name}: ffmpeg reported: {err}");
        let source = duration(fx.join(name).to_str().unwrap());
        for rung in ["a64", "a128"] {
            let d = duration(&format!("http://{addr}/hls/{media}/{rung}/index.m3u8"));
            assert!((d - source).abs() <= 0.1, "{name}/{rung}: {d} s vs source {source} s");
        }
        let (i, tp) = loudness(&format!("http://{addr}/hls/{media}/a128/index.m3u8"));
        assert!((i + 16.0).abs() <= 1.0, "{name}: integrated {i} LUFS, want -16 ± 1");
        assert!(tp <= -1.0, "{name}: true peak {tp} dBTP above -1");

        let (status, m) = http_json(&addr, "GET", &format!("/v1/media/{media}"), &[], b"");
        assert_eq!(status, 200);
        assert!((m["duration_s"].as_f64().unwrap() - source).abs() < 0.1, "{m}");
        assert!(m["loudness"]["output_lufs"].as_f64().is_some(), "{m}");
        let (status, wf) = http_json(&addr, "GET", &format!("/v1/media/{media}/waveform.json"), &[], b"");
        assert_eq!(status, 200);
        assert_eq!((wf["version"].as_u64(), wf["bits"].as_u64()), (Some(2), Some(8)));
        let expected_px = (source * 10.0).ceil() as i64;
        assert!((wf["length"].as_i64().unwrap() - expected_px).abs() <= 2, "{} pixels for {source} s", wf["length"]);
    }
    let (_, m) =
        http_json(&addr, "GET", &format!("/v1/media/{}", uploads[1].1["media_id"].as_str().unwrap()), &[], b"");
    assert_eq!(m["title"], "speech-quiet.wav");
    let (_, mp3) =
        http_json(&addr, "GET", &format!("/v1/media/{}", uploads[0].1["media_id"].as_str().unwrap()), &[], b"");
    assert_eq!((mp3["codec"].as_str(), mp3["tags"]["title"].as_str()), (Some("mp3"), Some("Forgiveness and debt")));
    let (_, list) = http_json(&addr, "GET", "/v1/media", &[], b"");
    assert_eq!(list["media"].as_array().unwrap().len(), 3);
}

#[test]
fn every_bad_input_gets_a_clear_error_and_the_service_keeps_serving() {
    let fx = fixtures();
    let env = Env::new("");
    let server = env.serve("serve.log");
    let addr = server.addr.clone();
    let mut jobs = Vec::new();
    for entry in std::fs::read_dir(fx.join("bad")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (status, v) = upload_raw(&addr, &path, "application/octet-stream", &[]);
        match status {
            415 | 413 => {
                let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
                assert!(
                    ["unsupported_audio", "no_audio", "limit_exceeded", "payload_too_large"].contains(&code.as_str()),
                    "{name}: {v}"
                );
            }
            202 => jobs.push((name, v["job_id"].as_str().unwrap().to_string())),
            other => panic!("{name}: unexpected {other} {v}"),
        }
    }
    for (name, job) in jobs {
        let j = wait_job(&addr, &job, 60);
        assert_eq!(j["state"], "dead", "{name} was accepted, so its job must end dead: {j}");
        let probe = &j["steps"][0];
        let code = probe["error"]["code"].as_str().unwrap_or_default();
        assert!(["unsupported_audio", "no_audio", "limit_exceeded"].contains(&code), "{name}: {j}");
        assert_eq!(probe["attempts"], 1, "{name}: a permanent error is not retried");
    }
    // Not audio at all, by content type.
    let (status, v) = http_json(&addr, "POST", "/v1/media", &[("Content-Type", "text/plain")], b"hello");
    assert_eq!((status, v["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
    // Still serving: a good file goes through.
    let (status, v) = upload_raw(&addr, &fx.join("speech-16k-mono.ogg"), "audio/ogg", &[]);
    assert_eq!(status, 202, "{v}");
    assert_eq!(wait_job(&addr, v["job_id"].as_str().unwrap(), 120)["state"], "succeeded");
    assert_eq!(common::http_get(&addr, "/healthz").unwrap().0, 200);
}

#[test]
fn limits_overload_and_idempotency() {
    let fx = fixtures();
    let env = Env::new("");
    let file = fx.join("speech-22k-mono.wav");
    let size = std::fs::metadata(&file).unwrap().len();
    let mut small = env.command();
    small.env("LECTERN_UPLOAD_MAX_BYTES", (size / 2).to_string()).env("LECTERN_UPLOAD_MAX_IN_FLIGHT", "1");
    let server = env.serve_with(small, "serve.log");
    let addr = server.addr.clone();

    let (status, v) = upload_raw(&addr, &file, "audio/wav", &[]);
    assert_eq!((status, v["error"]["code"].as_str()), (413, Some("payload_too_large")), "{v}");

    // One slow upload holds the only slot: the next is refused with 503 and Retry-After.
    use std::io::Write;
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    write!(slow, "POST /v1/media HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    slow.write_all(&std::fs::read(&file).unwrap()[..100]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (status, head, _) = http(&addr, "POST", "/v1/media", &[("Content-Type", "audio/wav")], b"RIFF");
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 5"), "{head}");
    drop(slow);

    let small_file = fx.join("bad/header-only.wav");
    let key = [("Idempotency-Key", "upload-42")];
    let (s1, a) = upload_raw(&addr, &small_file, "audio/wav", &key);
    let (s2, b) = upload_raw(&addr, &small_file, "audio/wav", &key);
    assert_eq!((s1, s2), (202, 202), "{a} {b}");
    assert_eq!(a["job_id"], b["job_id"], "same key, same job");
    assert_eq!(a["media_id"], b["media_id"]);
    assert_eq!(b["existing"], true);
}

#[test]
fn an_accepted_upload_survives_kill_9_right_after_the_answer() {
    let fx = fixtures();
    let env = Env::new("");
    let mut server = env.serve("serve-1.log");
    let (status, v) = upload_raw(&server.addr, &fx.join("speech-22k-mono.mp3"), "audio/mpeg", &[]);
    assert_eq!(status, 202, "{v}");
    server.kill9();
    let server = env.serve("serve-2.log");
    let job = wait_job(&server.addr, v["job_id"].as_str().unwrap(), 120);
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, _, _) =
        http(&server.addr, "GET", &format!("/hls/{}/master.m3u8", v["media_id"].as_str().unwrap()), &[], b"");
    assert_eq!(status, 200);
}

/// A long source measures its loudness on excerpts (seeking through an MP3 here), which makes the
/// first segment playable sooner; the output must still land on −16 LUFS by ffmpeg's meter.
#[test]
fn long_sources_are_measured_on_excerpts_and_still_hit_the_target() {
    let fx = fixtures();
    let env =
        Env::new("[transcode]\nexcerpt-loudness-above = \"2m\"\nloudness-excerpts = 12\nloudness-excerpt = \"5s\"\n");
    let server = env.serve("serve.log");
    let addr = server.addr.clone();
    let name = "speech-10min-mono.mp3";
    let (status, up) = upload_raw(&addr, &fx.join(name), "audio/mpeg", &[]);
    assert_eq!(status, 202, "{up}");
    let job = wait_job(&addr, up["job_id"].as_str().unwrap(), 300);
    assert_eq!(job["state"], "succeeded", "{job}");
    let media = up["media_id"].as_str().unwrap();
    let (_, m) = http_json(&addr, "GET", &format!("/v1/media/{media}"), &[], b"");
    let l = &m["loudness"];
    assert_eq!(l["measured_on"]["excerpts"], 12, "{m}");
    assert!(l["gain_db"].as_f64().unwrap() > 3.0, "the source is quiet, so the gain must be large: {l}");
    let (i, tp) = loudness(&format!("http://{addr}/hls/{media}/a128/index.m3u8"));
    assert!((i + 16.0).abs() <= 1.0, "integrated {i} LUFS, want -16 ± 1 ({l})");
    assert!(tp <= -1.0, "true peak {tp} dBTP above -1");
    let recorded = l["output_lufs"].as_f64().unwrap();
    assert!((recorded - i).abs() <= 0.5, "recorded output {recorded} LUFS vs ffmpeg {i}");
}
