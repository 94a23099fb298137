//! HLS serving under `/hls/{media_id}/`: the master playlist, and per rendition its media playlist,
//! init segment and media segments, straight from blob storage.
//!
//! - MIME types per the HLS spec and CMAF: playlists `application/vnd.apple.mpegurl`, init and media
//!   segments `audio/mp4`.
//! - `Range`, `If-Modified-Since` (304), `HEAD`: served by actix-files from the file. The strong
//!   `ETag` is derived from the content (a hash, computed once per file version), so a file a
//!   re-run rewrote byte-identical keeps its tag, and `If-None-Match` is answered from it.
//! - Caching: segments never change once written (`immutable`, a year); a playlist still growing
//!   (no `#EXT-X-ENDLIST`) must be re-read by players (`max-age=1`), a finished one for 5 minutes.
//! - Playlists are gzipped when asked (`Accept-Encoding`); segments never (already compressed, and
//!   compressing would break byte ranges).
//! - A `Range` that is not a `bytes=` range is ignored (RFC 9110 §14.2: unknown units must be);
//!   an unsatisfiable byte range answers a JSON 416 with `Content-Range: bytes */<length>`.
//! - CORS for web players, with a preflight answer that allows `Range`.
//! - Only names the packager writes are served: anything else, in any spelling, is a JSON 404.
//! - Media with the `signed` playback policy play only under `/hls/{id}/s-<expiry>-<mac>/...` (see
//!   [`crate::auth`]); the playlists' relative URIs keep the token for every rendition and segment.

use actix_files::NamedFile;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheControl, CacheDirective, ContentEncoding, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

use super::openapi::schemas as s;
use super::openapi::{Forbidden, NotFound, Unavailable};
use super::{ApiError, State};
use crate::app::PlaybackPolicy;
use crate::auth::{TokenError, verify_playback_token};

/// What a path under `/hls/{media_id}/` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsFile {
    Master,
    MediaPlaylist,
    Init,
    Segment,
}

fn is_media_id(id: &str) -> bool {
    id.len() == 36
        && id.starts_with("med_")
        && id[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Accepts exactly `master.m3u8` and `<rung>/{index.m3u8, init.mp4, seg-NNNNN.m4s}` with a rung name
/// of 1–16 lowercase letters and digits. Everything else (dots, slashes, escapes, other names) is no.
pub fn classify(tail: &str) -> Option<HlsFile> {
    if tail == "master.m3u8" {
        return Some(HlsFile::Master);
    }
    let (rung, file) = tail.split_once('/')?;
    let rung_ok = (1..=16).contains(&rung.len()) && rung.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !rung_ok {
        return None;
    }
    match file {
        "index.m3u8" => Some(HlsFile::MediaPlaylist),
        "init.mp4" => Some(HlsFile::Init),
        f => {
            let n = f.strip_prefix("seg-")?.strip_suffix(".m4s")?;
            (n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit())).then_some(HlsFile::Segment)
        }
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such HLS resource")
}

fn cors(resp: &mut HttpResponse) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges, ETag"),
    );
}

/// A playlist, init segment or media segment of a media's HLS renditions.
///
/// `tail` is `master.m3u8` or `<rendition>/{index.m3u8, init.mp4, seg-NNNNN.m4s}`, behind
/// `s-<expiry>-<mac>/` for `signed` media (the URL in the media's `links.hls`). Byte ranges,
/// `ETag` and `Last-Modified` revalidation are supported.
#[utoipa::path(
    method(get, head),
    path = "/hls/{media_id}/{tail}",
    tag = "hls",
    operation_id = "get_hls_file",
    security(()),
    params(
        ("media_id" = String, Path, pattern = "^med_[0-9a-f]{32}$", description = "Media id"),
        ("tail" = String, Path, example = "master.m3u8",
            description = "The file under the media's HLS directory (may contain `/`)"),
        s::RangeHeader,
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "application/vnd.apple.mpegurl"),
            (s::Binary = "audio/mp4"),
        )),
        (status = 206, description = "The requested range", content((s::Binary = "audio/mp4"))),
        (status = 304, description = "Not modified since the validator sent"),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 416, description = "The byte range is malformed or outside the file", body = s::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */<length>`"))),
        (status = 503, response = Unavailable),
    ),
)]
async fn get(
    req: HttpRequest,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (media_id, tail) = path.into_inner();
    if !is_media_id(&media_id) {
        return Err(not_found());
    }
    // `s-<expiry>-<mac>/` in front of the file name: a signed playback URL.
    let (token, tail) = match tail.split_once('/') {
        Some((t, rest)) if t.starts_with("s-") => (Some(t.to_string()), rest.to_string()),
        _ => (None, tail),
    };
    let kind = classify(&tail).ok_or_else(not_found)?;
    check_playback(&state, &media_id, token.as_deref()).await?;
    let key = format!("hls/{media_id}/{tail}");
    let file = state.blobs.local_path(&key).ok_or_else(not_found)?;
    let (mime, cache): (&str, CacheControl) = match kind {
        HlsFile::Init | HlsFile::Segment => (
            "audio/mp4",
            CacheControl(vec![
                CacheDirective::Public,
                CacheDirective::MaxAge(31_536_000),
                CacheDirective::Extension("immutable".into(), None),
            ]),
        ),
        HlsFile::Master | HlsFile::MediaPlaylist => {
            let text = web::block({
                let file = file.clone();
                move || std::fs::read_to_string(file)
            })
            .await?
            .map_err(|_| not_found())?;
            let age = if kind == HlsFile::Master || text.contains("#EXT-X-ENDLIST") { 300 } else { 1 };
            ("application/vnd.apple.mpegurl", CacheControl(vec![CacheDirective::Public, CacheDirective::MaxAge(age)]))
        }
    };
    let named = NamedFile::open_async(&file).await.map_err(|_| not_found())?;
    let etag = state.etags.tag(&file, named.metadata()).await.map_err(|_| not_found())?;
    if none_match(&req, &etag) {
        let mut resp = HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache.to_string()).expect("ascii"));
        cors(&mut resp);
        return Ok(resp);
    }
    let named = named
        .set_content_type(mime.parse().expect("static mime"))
        .use_etag(false)
        .use_last_modified(true)
        .disable_content_disposition();
    let named = if matches!(kind, HlsFile::Init | HlsFile::Segment) {
        named.set_content_encoding(ContentEncoding::Identity)
    } else {
        named
    };
    let mut resp = named.into_response(&req);
    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        let range = resp.headers().get(header::CONTENT_RANGE).cloned();
        let e = ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            "the byte range is malformed or outside the file",
        );
        resp = actix_web::ResponseError::error_response(&e);
        if let Some(range) = range {
            resp.headers_mut().insert(header::CONTENT_RANGE, range);
        }
    }
    if resp.status().is_success() {
        resp.headers_mut().insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    }
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        // Not on a 416: a cache must not keep an error for a year.
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_str(&cache.to_string()).expect("ascii"));
    }
    cors(&mut resp);
    Ok(resp)
}

/// Whether `If-None-Match` lists `etag` (or `*`): weak comparison, as RFC 9110 §13.1.2 wants.
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim() == "*" || opaque(t) == opaque(etag)))
}

/// Content-derived ETags of the files served, computed once per file version: keyed by device,
/// inode, length and modification time, so a replaced file is hashed again and an untouched one
/// never.
#[derive(Default)]
pub struct ContentTags(std::sync::Mutex<std::collections::HashMap<FileVersion, String>>);

/// (device, inode, length, mtime seconds, mtime nanoseconds) of a file.
type FileVersion = (u64, u64, u64, i64, i64);

/// Files whose tags are remembered; beyond this the memory is dropped and refilled on demand.
const MAX_TAGS: usize = 100_000;

impl ContentTags {
    /// The strong ETag (`"<first 128 bits of sha256>"`) of the file at `path` with metadata `md`.
    pub async fn tag(&self, path: &std::path::Path, md: &std::fs::Metadata) -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let key = (md.dev(), md.ino(), md.len(), md.mtime(), md.mtime_nsec());
        if let Some(t) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(t.clone());
        }
        let path = path.to_path_buf();
        let tag = web::block(move || -> std::io::Result<String> {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
            Ok(format!("\"{}\"", hex::encode(&h.finalize()[..16])))
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TAGS {
            map.clear();
        }
        map.insert(key, tag.clone());
        Ok(tag)
    }
}

/// Public media play from any URL; `signed` media only from a valid, unexpired token URL.
async fn check_playback(state: &web::Data<State>, media_id: &str, token: Option<&str>) -> Result<(), ApiError> {
    let cached = state.auth.playback.lock().unwrap_or_else(|p| p.into_inner()).get(media_id).copied();
    let policy = match cached {
        Some(p) => p,
        None => {
            let id = media_id.to_string();
            let media = super::blocking(state, move |app| Ok(app.journal.media(&id)?)).await?.ok_or_else(not_found)?;
            let p = PlaybackPolicy::of(&media.meta);
            let mut cache = state.auth.playback.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(media_id.to_string(), p);
            p
        }
    };
    let Some(token) = token else {
        return match policy {
            PlaybackPolicy::Public => Ok(()),
            PlaybackPolicy::Signed => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "playback_token_required",
                "this media plays only from its signed URL (links.hls of the media JSON)",
            )),
        };
    };
    match verify_playback_token(&state.app.playback_key, media_id, token, state.app.clock.now_ms()) {
        Ok(()) => Ok(()),
        Err(TokenError::Expired) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "playback_token_expired",
            "the playback URL expired; fetch the media JSON for a fresh one",
        )),
        Err(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "playback_token_invalid", "the playback URL is not valid")),
    }
}

/// CORS preflight for web players.
#[utoipa::path(
    options,
    path = "/hls/{media_id}/{tail}",
    tag = "hls",
    operation_id = "hls_preflight",
    security(()),
    params(("media_id" = String, Path), ("tail" = String, Path)),
    responses((status = 204, description = "Allowed methods and headers")),
)]
async fn preflight() -> HttpResponse {
    let mut resp = HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, "Range, If-None-Match, If-Modified-Since"))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish();
    cors(&mut resp);
    resp
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get, preflight))]
pub(super) struct Api;

/// Drops a `Range` header of another unit than `bytes` (or not ASCII): it is ignored, not refused.
fn drop_foreign_range(req: &mut actix_web::dev::ServiceRequest) {
    let ours = req.headers().get(header::RANGE).is_none_or(|v| v.to_str().is_ok_and(|r| r.starts_with("bytes=")));
    if !ours {
        req.headers_mut().remove(header::RANGE);
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/hls/{media_id}/{tail:.*}")
            .wrap_fn(|mut req, srv| {
                drop_foreign_range(&mut req);
                actix_web::dev::Service::call(srv, req)
            })
            .route(web::get().to(get))
            .route(web::head().to(get))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(super::fallback)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_packager_names_are_served() {
        assert_eq!(classify("master.m3u8"), Some(HlsFile::Master));
        assert_eq!(classify("a64/index.m3u8"), Some(HlsFile::MediaPlaylist));
        assert_eq!(classify("a128/init.mp4"), Some(HlsFile::Init));
        assert_eq!(classify("a128/seg-00042.m4s"), Some(HlsFile::Segment));
        for bad in [
            "",
            "/master.m3u8",
            "../master.m3u8",
            "a64/../../journal.db",
            "a64/seg-1.m4s",
            "a64/seg-000001.m4s",
            "A64/index.m3u8",
            "a64/index.m3u8/x",
            "a64//index.m3u8",
            "a64/seg-0000a.m4s",
            "a.b/init.mp4",
            "a64\\init.mp4",
            "%2e%2e/init.mp4",
            "a64/init.mp4\0",
            "abcdefghijklmnopq/init.mp4",
        ] {
            assert_eq!(classify(bad), None, "{bad:?} must not be served");
        }
        assert!(is_media_id("med_0192f0a1b2c3d4e5f60718293a4b5c6d"));
        assert!(!is_media_id("med_0192F0A1B2C3D4E5F60718293A4B5C6D"));
        assert!(!is_media_id("med_../../../../../../../../etc/pa"));
    }
}
