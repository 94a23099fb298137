//! Text a client controls: tus `Upload-Metadata`, query strings, HLS paths, blob keys, titles.
//! Nothing may panic, and what is accepted must hold its promises (an accepted title has no
//! control characters; an accepted HLS path has no `..`; an accepted key stays inside the store).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(meta) = lectern::http::parse_tus_metadata(text) {
        for (k, v) in &meta {
            assert!(!k.is_empty() && k.len() <= 64 && v.len() <= 2048);
            if k == "title" || k == "callback_url" {
                assert!(!v.chars().any(char::is_control), "{k}={v:?}");
            }
        }
    }
    let _ = lectern::http::query_is_utf8(text);
    if lectern::http::hls::classify(text).is_some() {
        assert!(!text.contains("..") && !text.contains('\\') && !text.starts_with('/'), "{text:?}");
    }
    if lectern::storage::check_key(text).is_ok() {
        assert!(!text.split('/').any(|s| s == ".." || s.is_empty()) && !text.starts_with('/'), "{text:?}");
    }
    if let Ok(t) = lectern::http::intake::clean_text("title", text.to_string()) {
        assert!(t.len() <= 2048 && !t.chars().any(char::is_control));
    }
});
