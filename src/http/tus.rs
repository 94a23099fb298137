//! Resumable uploads: tus 1.0.0 core + `creation` + `termination` under `/v1/uploads`.
//!
//! An upload's state lives on disk next to its bytes, so it survives restarts and crashes: the
//! staging file's length *is* the offset (each PATCH is fsynced before it is acknowledged), and a
//! JSON sidecar holds the declared length and metadata. When the last byte arrives the upload
//! becomes media + an ingest job exactly like `POST /v1/media`, idempotently (the upload id is the
//! idempotency key, so a repeated final PATCH cannot enqueue twice).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::openapi::schemas as s;
use super::openapi::{
    BadRequest, CallerErrors, Conflict, NotFound, PayloadTooLarge, PreconditionFailed, UnsupportedMediaType,
};
use super::{ApiError, State, Upload, accept_upload};
use crate::auth::Caller;
use crate::journal::new_id;
use crate::media::probe::{SNIFF_MAX_BYTES, sniff};

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,termination";

/// Uploads with a PATCH in progress: a second concurrent PATCH gets 409 instead of interleaving.
static BUSY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

struct Busy(String);

impl Busy {
    fn take(id: &str) -> Option<Busy> {
        let mut set = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        set.get_or_insert_with(HashSet::new).insert(id.to_string()).then(|| Busy(id.to_string()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(set) = BUSY.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            set.remove(&self.0);
        }
    }
}

/// The sidecar of an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Info {
    id: String,
    tenant: String,
    length: u64,
    metadata: std::collections::BTreeMap<String, String>,
    sniffed: bool,
    media_id: Option<String>,
    job_id: Option<String>,
}

fn tus_err(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn dir(state: &State) -> PathBuf {
    state.blobs.staging_dir().unwrap_or_else(|| state.app.data_dir().join("staging")).join("tus")
}

fn valid_id(id: &str) -> bool {
    id.len() == 36 && id.starts_with("upl_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn paths(state: &State, id: &str) -> Result<(PathBuf, PathBuf), ApiError> {
    if !valid_id(id) {
        return Err(tus_err(StatusCode::NOT_FOUND, "not_found", "no such upload"));
    }
    let d = dir(state);
    Ok((d.join(format!("{id}.part")), d.join(format!("{id}.json"))))
}

/// The caller's upload `id` (another tenant's answers 404 like a missing one).
fn load(state: &State, caller: &Caller, id: &str) -> Result<(Info, u64, PathBuf, PathBuf), ApiError> {
    let (data, side) = paths(state, id)?;
    let missing = || tus_err(StatusCode::NOT_FOUND, "not_found", "no such upload");
    let info: Info = serde_json::from_slice(&std::fs::read(&side).map_err(|_| missing())?).map_err(|_| missing())?;
    if !caller.sees(&info.tenant) {
        return Err(missing());
    }
    let offset = std::fs::metadata(&data).map_err(|_| missing())?.len();
    Ok((info, offset, data, side))
}

fn save(side: &PathBuf, info: &Info) -> std::io::Result<()> {
    let tmp = side.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(info).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, side)
}

fn io_err(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "tus storage failed");
    tus_err(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the upload could not be stored").retry_after(30)
}

fn with_tus(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header(("Tus-Resumable", TUS_VERSION))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Location, Upload-Offset, Upload-Length, Tus-Resumable, Lectern-Media-Id, Lectern-Job-Id",
        ));
    b
}

fn check_version(req: &HttpRequest) -> Result<(), ApiError> {
    match req.headers().get("Tus-Resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        // tus 1.0.0: a 412 names the versions the server supports.
        _ => Err(tus_err(StatusCode::PRECONDITION_FAILED, "tus_version", "send Tus-Resumable: 1.0.0")
            .header("Tus-Version", TUS_VERSION)),
    }
}

/// `Upload-Metadata: key base64,key2 base64` → decoded map (values must be UTF-8).
fn parse_metadata(raw: &str) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    use base64::Engine;
    let bad = |m: &str| tus_err(StatusCode::BAD_REQUEST, "invalid_metadata", m.to_string());
    let mut out = std::collections::BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once(' ').unwrap_or((pair, ""));
        let v = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| bad("a metadata value is not base64"))?;
        let v = String::from_utf8(v).map_err(|_| bad("a metadata value is not UTF-8"))?;
        if k.is_empty() || k.len() > 64 || v.len() > 2048 {
            return Err(bad("metadata keys are 1-64 bytes, values at most 2 KiB"));
        }
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// tus discovery: version and extensions (and CORS preflight).
#[utoipa::path(
    options, path = "/v1/uploads", tag = "uploads", operation_id = "tus_options",
    security(()),
    responses((status = 204, description = "What the server supports", headers(
        ("Tus-Resumable" = String), ("Tus-Version" = String), ("Tus-Extension" = String),
    ))),
)]
async fn options() -> HttpResponse {
    with_tus(HttpResponse::NoContent())
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, HEAD, PATCH, DELETE, OPTIONS"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, Content-Type, Authorization",
        ))
        .finish()
}

/// tus discovery for one upload (and CORS preflight).
#[utoipa::path(
    options, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_upload_options",
    security(()),
    params(("id" = String, Path, description = "Upload id")),
    responses((status = 204, description = "What the server supports", headers(
        ("Tus-Resumable" = String), ("Tus-Version" = String), ("Tus-Extension" = String),
    ))),
)]
async fn options_upload() -> HttpResponse {
    options().await
}

/// Creates an upload of `Upload-Length` bytes; its URL is in `Location`.
#[utoipa::path(
    post, path = "/v1/uploads", tag = "uploads", operation_id = "tus_create",
    params(s::TusCreateHeaders),
    responses(
        (status = 201, description = "Created", headers(("Location" = String), ("Tus-Resumable" = String))),
        (status = 400, response = BadRequest),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        CallerErrors,
    ),
)]
async fn create(req: HttpRequest, caller: Caller, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let max = state.app.config.upload.max_bytes;
    let length =
        req.headers().get("Upload-Length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).ok_or_else(|| {
            tus_err(
                StatusCode::BAD_REQUEST,
                "upload_length",
                "Upload-Length is required (deferred length is not supported)",
            )
        })?;
    if length > max {
        return Err(tus_err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("uploads are limited to {max} bytes"),
        ));
    }
    if length == 0 {
        return Err(tus_err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", "the upload is empty"));
    }
    // A value that is not ASCII is refused, not ignored (the title or callback would vanish).
    let metadata = match req.headers().get("Upload-Metadata").map(|v| v.to_str()) {
        Some(Ok(raw)) => parse_metadata(raw)?,
        Some(Err(_)) => {
            return Err(tus_err(StatusCode::BAD_REQUEST, "invalid_metadata", "Upload-Metadata must be ASCII"));
        }
        None => Default::default(),
    };
    if let Some(p) = metadata.get("playback_policy") {
        crate::app::PlaybackPolicy::parse(p).map_err(ApiError::from)?;
    }
    if let Some(url) = metadata.get("callback_url").filter(|u| !u.is_empty()).cloned() {
        let guard = state.guard.clone();
        web::block(move || guard.admit(&url))
            .await?
            .map_err(|e| tus_err(StatusCode::BAD_REQUEST, "invalid_callback_url", e.to_string()))?;
    }
    let info = Info {
        id: new_id("upl"),
        tenant: caller.tenant.clone(),
        length,
        metadata,
        sniffed: false,
        media_id: None,
        job_id: None,
    };
    let (data, side) = paths(&state, &info.id)?;
    let dir = dir(&state);
    let saved = info.clone();
    web::block(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::File::create(&data)?.sync_all()?;
        save(&side, &saved)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await?
    .map_err(io_err)?;
    Ok(with_tus(HttpResponse::Created()).insert_header((header::LOCATION, format!("/v1/uploads/{}", info.id))).finish())
}

/// How much of an upload the server has (`Upload-Offset`); once complete, its media and job ids.
#[utoipa::path(
    head, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_head",
    params(("id" = String, Path, description = "Upload id"), s::TusHeaders),
    responses(
        (status = 200, description = "The upload's state", headers(
            ("Upload-Offset" = u64), ("Upload-Length" = u64), ("Tus-Resumable" = String),
            ("Lectern-Media-Id" = String, description = "Once complete"),
            ("Lectern-Job-Id" = String, description = "Once complete"),
        )),
        (status = 404, response = NotFound),
        (status = 412, response = PreconditionFailed),
        CallerErrors,
    ),
)]
async fn head(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let (info, offset, _, _) = load(&state, &caller, &id)?;
    let mut resp = with_tus(HttpResponse::Ok());
    resp.insert_header(("Upload-Offset", offset.to_string()))
        .insert_header(("Upload-Length", info.length.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let (Some(m), Some(j)) = (&info.media_id, &info.job_id) {
        resp.insert_header(("Lectern-Media-Id", m.as_str())).insert_header(("Lectern-Job-Id", j.as_str()));
    }
    Ok(resp.finish())
}

/// Appends bytes at `Upload-Offset`; the last byte turns the upload into media and an ingest job.
#[utoipa::path(
    patch, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_patch",
    params(("id" = String, Path, description = "Upload id"), s::TusPatchHeaders),
    request_body(content = s::Binary, content_type = "application/offset+octet-stream"),
    responses(
        (status = 204, description = "Stored (fsynced)", headers(
            ("Upload-Offset" = u64), ("Tus-Resumable" = String),
            ("Lectern-Media-Id" = String, description = "When this PATCH completed the upload"),
            ("Lectern-Job-Id" = String, description = "When this PATCH completed the upload"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 415, response = UnsupportedMediaType),
        CallerErrors,
    ),
)]
async fn patch(
    req: HttpRequest,
    caller: Caller,
    mut payload: web::Payload,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != "application/offset+octet-stream" {
        return Err(tus_err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "PATCH needs application/offset+octet-stream",
        ));
    }
    let _busy = Busy::take(&id)
        .ok_or_else(|| tus_err(StatusCode::CONFLICT, "upload_busy", "another PATCH of this upload is in progress"))?;
    let (mut info, offset, data, side) = load(&state, &caller, &id)?;
    let _slot = state.upload_slot(&info.tenant)?;
    let claimed = req.headers().get("Upload-Offset").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if claimed != Some(offset) {
        return Err(tus_err(StatusCode::CONFLICT, "offset_mismatch", format!("the upload is at offset {offset}")));
    }
    let mut file = std::fs::OpenOptions::new().append(true).open(&data).map_err(io_err)?;
    let mut written = offset;
    let mut buf = Vec::new();
    let mut failure = None;
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { break }; // a broken connection: keep what arrived
        if written + buf.len() as u64 + chunk.len() as u64 > info.length {
            failure = Some(tus_err(StatusCode::BAD_REQUEST, "beyond_length", "more bytes than Upload-Length"));
            break;
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= 1 << 20 {
            let out = std::mem::take(&mut buf);
            let (f, r) = web::block(move || {
                let r = file.write_all(&out).map(|_| out.len());
                (file, r)
            })
            .await?;
            file = f;
            written += r.map_err(io_err)? as u64;
        }
    }
    let (file, r) = web::block(move || {
        let r = file.write_all(&buf).and_then(|_| file.sync_all()).map(|_| buf.len());
        (file, r)
    })
    .await?;
    drop(file);
    written += r.map_err(io_err)? as u64;
    if let Some(e) = failure {
        return Err(e);
    }
    // Refuse non-audio as soon as enough has arrived to tell.
    if !info.sniffed && (written >= SNIFF_MAX_BYTES as u64 || written == info.length) {
        let path = data.clone();
        let head = web::block(move || -> std::io::Result<Vec<u8>> {
            let mut h = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(std::fs::File::open(path)?, SNIFF_MAX_BYTES as u64),
                &mut h,
            )?;
            Ok(h)
        })
        .await?
        .map_err(io_err)?;
        if let Err(e) = web::block(move || sniff(&head)).await? {
            let _ = std::fs::remove_file(&data);
            let _ = std::fs::remove_file(&side);
            return Err(tus_err(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                e.code(),
                format!("not a supported audio file: {e}"),
            ));
        }
        info.sniffed = true;
        let (s, i) = (side.clone(), info.clone());
        web::block(move || save(&s, &i)).await?.map_err(io_err)?;
    }
    let mut resp = with_tus(HttpResponse::NoContent());
    resp.insert_header(("Upload-Offset", written.to_string()));
    if written == info.length {
        let (media, job) = finish(&state, &mut info, &data).await?;
        let (s, i) = (side.clone(), info.clone());
        web::block(move || save(&s, &i)).await?.map_err(io_err)?;
        resp.insert_header(("Lectern-Media-Id", media)).insert_header(("Lectern-Job-Id", job));
    }
    Ok(resp.finish())
}

/// Turns a complete upload into media + ingest job (idempotent on the upload id).
async fn finish(
    state: &web::Data<State>,
    info: &mut Info,
    data: &std::path::Path,
) -> Result<(String, String), ApiError> {
    if let (Some(m), Some(j)) = (&info.media_id, &info.job_id) {
        return Ok((m.clone(), j.clone()));
    }
    let meta = serde_json::json!({
        "upload": {"bytes": info.length, "via": "tus", "upload_id": info.id,
                   "filename": info.metadata.get("filename"), "content_type": info.metadata.get("filetype")},
        "callback_url": info.metadata.get("callback_url").filter(|u| !u.is_empty()),
        "playback_policy": info.metadata.get("playback_policy").map(String::as_str).unwrap_or("public"),
    });
    let up = Upload {
        tenant: info.tenant.clone(),
        idempotency_key: Some(format!("tus:{}", info.id)),
        staged: data.to_path_buf(),
        keep_staged: true,
        title: info.metadata.get("title").cloned(),
        meta,
    };
    let e = accept_upload(state, up).await?;
    let media = e.job.media_id.clone().unwrap_or_default();
    info.media_id = Some(media.clone());
    info.job_id = Some(e.job.id.clone());
    tracing::info!(upload.id = %info.id, media.id = %media, job.id = %e.job.id, "tus upload complete");
    Ok((media, e.job.id))
}

/// Abandons an upload and frees its space (tus termination).
#[utoipa::path(
    delete, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_terminate",
    params(("id" = String, Path, description = "Upload id"), s::TusHeaders),
    responses(
        (status = 204, description = "Removed", headers(("Tus-Resumable" = String))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        CallerErrors,
    ),
)]
async fn terminate(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let (_, _, data, side) = load(&state, &caller, &id)?;
    let _busy = Busy::take(&id)
        .ok_or_else(|| tus_err(StatusCode::CONFLICT, "upload_busy", "a PATCH of this upload is in progress"))?;
    web::block(move || {
        let _ = std::fs::remove_file(data);
        let _ = std::fs::remove_file(side);
    })
    .await?;
    Ok(with_tus(HttpResponse::NoContent()).finish())
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(options, create, options_upload, head, patch, terminate))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/uploads")
            .route(web::post().to(create))
            .route(web::method(actix_web::http::Method::OPTIONS).to(options))
            .default_service(web::to(super::fallback)),
    )
    .service(
        web::resource("/v1/uploads/{id}")
            .route(web::head().to(head))
            .route(web::patch().to(patch))
            .route(web::delete().to(terminate))
            .route(web::method(actix_web::http::Method::OPTIONS).to(options_upload))
            .default_service(web::to(super::fallback)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_decoded_and_checked() {
        let m = parse_metadata("filename c2VybW9uLm1wMw==,title U3VuZGF5,empty").unwrap();
        assert_eq!(m.get("filename").map(String::as_str), Some("sermon.mp3"));
        assert_eq!(m.get("title").map(String::as_str), Some("Sunday"));
        assert_eq!(m.get("empty").map(String::as_str), Some(""));
        assert!(parse_metadata("filename !!!").is_err());
        assert!(valid_id("upl_0192f0a1b2c3d4e5f60718293a4b5c6d"));
        assert!(!valid_id("upl_../../../../../../../etc/passwd00"));
    }
}
