//! `/hls/{media_id}/...` in-process: MIME types, ranges, ETags, caching, gzip, CORS, and that no
//! spelling of a path escapes the media's folder.

use std::sync::Arc;

use actix_web::http::{StatusCode, header};
use actix_web::{App as WebApp, middleware::Compress, test, web};
use lectern::app::App;
use lectern::clock::SystemClock;
use lectern::config::Config;
use lectern::engine::Registry;
use lectern::http::{State, configure};
use lectern::journal::{DEFAULT_TENANT, Journal, NewJob, NewMedia, SqliteJournal, StepSpec};
use lectern::metrics::Metrics;
use lectern::storage::{BlobStore, LocalFs};

const MEDIA: &str = "med_0192f0a1b2c3d4e5f60718293a4b5c6d";

fn fixture(dir: &std::path::Path) -> (App, Arc<LocalFs>, Vec<u8>) {
    let blobs = Arc::new(LocalFs::new(dir.join("blobs")));
    let seg: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    blobs.put(&format!("hls/{MEDIA}/master.m3u8"), b"#EXTM3U\n#EXT-X-VERSION:7\n").unwrap();
    let growing = "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n".repeat(40);
    blobs.put(&format!("hls/{MEDIA}/a64/index.m3u8"), growing.as_bytes()).unwrap();
    blobs.put(&format!("hls/{MEDIA}/a128/index.m3u8"), b"#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-ENDLIST\n").unwrap();
    blobs.put(&format!("hls/{MEDIA}/a64/init.mp4"), b"ftyp....moov....").unwrap();
    blobs.put(&format!("hls/{MEDIA}/a64/seg-00000.m4s"), &seg).unwrap();
    blobs.put("journal.db", b"secret").unwrap();
    let journal = Arc::new(SqliteJournal::open(&dir.join("journal.db")).unwrap());
    // A public media record: HLS is served only for media the journal knows (and its policy).
    let job = NewJob {
        tenant: DEFAULT_TENANT.into(),
        media_id: None,
        kind: "ingest".into(),
        params: serde_json::json!({}),
        batch: None,
        idempotency_key: None,
        steps: vec![StepSpec { name: "probe".into(), stage: "probe".into(), deps: vec![] }],
        new_media: Some(NewMedia { id: MEDIA.into(), title: None, meta: serde_json::json!({}) }),
    };
    journal.enqueue(job, 0).unwrap();
    let app = App::with(journal, Arc::new(SystemClock), Config::default(), Registry::new());
    (app, blobs, seg)
}

macro_rules! service {
    ($app:expr, $blobs:expr) => {
        test::init_service(
            WebApp::new()
                .app_data(web::Data::new(State::new($app.clone(), Arc::new(Metrics::new()), $blobs.clone())))
                .wrap(Compress::default())
                .configure(configure),
        )
        .await
    };
}

fn h<B>(resp: &actix_web::dev::ServiceResponse<B>, name: header::HeaderName) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[actix_web::test]
async fn playlists_and_segments_have_the_right_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (app, blobs, seg) = fixture(dir.path());
    let svc = service!(app, blobs);

    let resp =
        test::call_service(&svc, test::TestRequest::get().uri(&format!("/hls/{MEDIA}/master.m3u8")).to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h(&resp, header::CONTENT_TYPE), "application/vnd.apple.mpegurl");
    assert_eq!(h(&resp, header::ACCESS_CONTROL_ALLOW_ORIGIN), "*");

    let growing =
        test::call_service(&svc, test::TestRequest::get().uri(&format!("/hls/{MEDIA}/a64/index.m3u8")).to_request())
            .await;
    assert_eq!(h(&growing, header::CACHE_CONTROL), "public, max-age=1", "a growing playlist must be re-read");
    let done =
        test::call_service(&svc, test::TestRequest::get().uri(&format!("/hls/{MEDIA}/a128/index.m3u8")).to_request())
            .await;
    assert_eq!(h(&done, header::CACHE_CONTROL), "public, max-age=300");

    let gz = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/hls/{MEDIA}/a64/index.m3u8"))
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request(),
    )
    .await;
    assert_eq!(h(&gz, header::CONTENT_ENCODING), "gzip", "playlists are gzipped on request");

    let resp = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s"))
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h(&resp, header::CONTENT_TYPE), "audio/mp4");
    assert_eq!(h(&resp, header::CACHE_CONTROL), "public, max-age=31536000, immutable");
    assert_ne!(h(&resp, header::CONTENT_ENCODING), "gzip", "segments are never compressed");
    let etag = h(&resp, header::ETAG);
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "a strong ETag: {etag}");
    assert_eq!(test::read_body(resp).await.as_ref(), seg.as_slice());

    let part = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s"))
            .insert_header((header::RANGE, "bytes=100-1099"))
            .to_request(),
    )
    .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(h(&part, header::CONTENT_RANGE), "bytes 100-1099/10000");
    assert_eq!(test::read_body(part).await.as_ref(), &seg[100..1100]);

    // Another unit is ignored (RFC 9110 §14.2); a byte range past the end is a JSON 416.
    let range = |r: &'static str| {
        test::TestRequest::get().uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s")).insert_header((header::RANGE, r))
    };
    let whole = test::call_service(&svc, range("items=0-5").to_request()).await;
    assert_eq!(whole.status(), StatusCode::OK);
    let past = test::call_service(&svc, range("bytes=20000-").to_request()).await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&past, header::CONTENT_RANGE), "bytes */10000");
    assert_eq!(h(&past, header::CACHE_CONTROL), "", "an error is not cached");
    let body: serde_json::Value = serde_json::from_slice(&test::read_body(past).await).unwrap();
    assert_eq!(body["error"]["code"], "range_not_satisfiable", "{body}");

    let again = test::call_service(
        &svc,
        test::TestRequest::get()
            .uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s"))
            .insert_header((header::IF_NONE_MATCH, etag.as_str()))
            .to_request(),
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // The tag comes from the content: the same bytes written again (a re-run transcode) keep it,
    // other bytes change it.
    let seg_path = dir.path().join(format!("blobs/hls/{MEDIA}/a64/seg-00000.m4s"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&seg_path, &seg).unwrap();
    let get = || test::TestRequest::get().uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s")).to_request();
    let rewritten = test::call_service(&svc, get()).await;
    assert_eq!(h(&rewritten, header::ETAG), etag, "the same content keeps its ETag whatever the file's mtime");
    std::fs::write(&seg_path, b"other bytes").unwrap();
    let changed = test::call_service(&svc, get()).await;
    assert_ne!(h(&changed, header::ETAG), etag);
    std::fs::write(&seg_path, &seg).unwrap();

    let init =
        test::call_service(&svc, test::TestRequest::get().uri(&format!("/hls/{MEDIA}/a64/init.mp4")).to_request())
            .await;
    assert_eq!((init.status(), h(&init, header::CONTENT_TYPE)), (StatusCode::OK, "audio/mp4".into()));

    let pre = test::call_service(
        &svc,
        test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri(&format!("/hls/{MEDIA}/a64/seg-00000.m4s"))
            .to_request(),
    )
    .await;
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert!(h(&pre, header::ACCESS_CONTROL_ALLOW_HEADERS).contains("Range"));
}

#[actix_web::test]
async fn nothing_outside_the_media_folder_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let (app, blobs, _) = fixture(dir.path());
    let svc = service!(app, blobs);
    for path in [
        format!("/hls/{MEDIA}/../../journal.db"),
        format!("/hls/{MEDIA}/%2e%2e/%2e%2e/journal.db"),
        format!("/hls/{MEDIA}/..%2F..%2Fjournal.db"),
        format!("/hls/{MEDIA}/a64/..%2f..%2f..%2fjournal.db"),
        format!("/hls/{MEDIA}/a64%5c..%5c..%5cjournal.db"),
        format!("/hls/{MEDIA}/a64/seg-00000.m4s%00.txt"),
        format!("/hls/{MEDIA}//etc/passwd"),
        format!("/hls/{MEDIA}/a64/seg-00001.m4s"),
        format!("/hls/{MEDIA}/a64/"),
        "/hls/..%2F..%2F/master.m3u8".to_string(),
        "/hls/med_00000000000000000000000000000000/master.m3u8".to_string(),
        "/hls/journal.db/master.m3u8".to_string(),
    ] {
        let resp = test::call_service(&svc, test::TestRequest::get().uri(&path).to_request()).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&test::read_body(resp).await).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}
