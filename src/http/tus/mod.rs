//! Resumable uploads: tus 1.0.0 core + `creation` + `termination` + `expiration` under `/v1/uploads`.
//!
//! An upload's state lives on disk next to its bytes ([`store`]), so it survives restarts and
//! crashes. Each PATCH streams under the body timing rules (a stalled PATCH is cut off, keeps what
//! arrived, and a new PATCH from another connection takes over at once). When the last byte arrives
//! the upload becomes media + an ingest job exactly like `POST /v1/media`, idempotently (the upload
//! id is the idempotency key, so a repeated final PATCH cannot enqueue twice). Unfinished uploads
//! expire after `upload.expiry` (`Upload-Expires`); a tenant may have `upload.open-per-tenant` of
//! them declaring at most `upload.declared-bytes-per-tenant` bytes.

mod body;
mod store;

use std::path::PathBuf;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};

use super::intake::{self, HEAD_BYTES, storage_error};
use super::openapi::schemas as s;
use super::openapi::{
    BadRequest, CallerErrors, Conflict, InsufficientStorage, NotFound, PayloadTooLarge, PreconditionFailed,
    RequestTimeout, ServerError, UnsupportedMediaType,
};
use super::{ApiError, State};
use crate::auth::Caller;
use crate::journal::new_id;
use body::{BodyEnd, append, finish, remove, sniff_upload};
use store::{Info, OpenUploads, UploadLock, files, read_info, save, valid_id};
pub use store::{age_ms, sweep};

const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,termination,expiration";

fn tus_err(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// The directory of tus uploads.
pub fn dir(state: &State) -> PathBuf {
    state.staging_dir().join("tus")
}

fn paths(state: &State, id: &str) -> Result<(PathBuf, PathBuf), ApiError> {
    if !valid_id(id) {
        return Err(tus_err(StatusCode::NOT_FOUND, "not_found", "no such upload"));
    }
    Ok(files(&dir(state), id))
}

/// The caller's upload `id` (another tenant's answers 404 like a missing one; an expired one 410).
fn load(state: &State, caller: &Caller, id: &str) -> Result<(Info, u64, PathBuf, PathBuf), ApiError> {
    let (data, side) = paths(state, id)?;
    let missing = || tus_err(StatusCode::NOT_FOUND, "not_found", "no such upload");
    let info = read_info(&side).ok_or_else(missing)?;
    if !caller.sees(&info.tenant) {
        return Err(missing());
    }
    if !info.finished() && info.expires_at > 0 && info.expires_at <= state.app.clock.now_ms() {
        return Err(tus_err(StatusCode::GONE, "upload_expired", "the upload expired; start a new one"));
    }
    let offset = std::fs::metadata(&data).map_err(|_| missing())?.len();
    Ok((info, offset, data, side))
}

fn io_err(e: std::io::Error) -> ApiError {
    storage_error(&e)
}

/// `Upload-Expires` (an HTTP date) of an unfinished upload.
fn expires_header(info: &Info) -> Option<String> {
    (!info.finished() && info.expires_at > 0).then(|| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.expires_at as u64);
        actix_web::http::header::HttpDate::from(t).to_string()
    })
}

fn with_tus(mut b: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    b.insert_header(("Tus-Resumable", TUS_VERSION))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            "Location, Upload-Offset, Upload-Length, Upload-Expires, Tus-Resumable, Lectern-Media-Id, Lectern-Job-Id",
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

/// `Upload-Metadata: key base64,key2 base64` → decoded map (values must be UTF-8; `title` and
/// `callback_url` are bounded and free of control characters).
pub fn parse_metadata(raw: &str) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    use base64::Engine;
    let bad = |m: &str| tus_err(StatusCode::BAD_REQUEST, "invalid_metadata", m.to_string());
    let mut out = std::collections::BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once(' ').unwrap_or((pair, ""));
        let v = base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map_err(|_| bad("a metadata value is not base64"))?;
        let v = String::from_utf8(v).map_err(|_| bad("a metadata value is not UTF-8"))?;
        if k.is_empty() || k.len() > 64 || v.len() > 2048 || !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("metadata keys are 1-64 visible ASCII bytes, values at most 2 KiB"));
        }
        let v = if matches!(k, "title" | "callback_url" | "filename") { intake::clean_text(k, v)? } else { v };
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

/// The declared length of a creation request, checked.
fn upload_length(req: &HttpRequest, max: u64) -> Result<u64, ApiError> {
    if req.headers().contains_key("Upload-Defer-Length") {
        return Err(tus_err(
            StatusCode::BAD_REQUEST,
            "upload_length",
            "deferred length (Upload-Defer-Length) is not supported: send Upload-Length",
        ));
    }
    let raw = req.headers().get("Upload-Length").ok_or_else(|| {
        tus_err(StatusCode::BAD_REQUEST, "upload_length", "Upload-Length is required: the file's size in bytes")
    })?;
    let length = raw.to_str().ok().and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
        tus_err(StatusCode::BAD_REQUEST, "upload_length", "Upload-Length must be a whole, non-negative number of bytes")
    })?;
    if length > max {
        return Err(super::upload::too_large(max));
    }
    if length == 0 {
        return Err(tus_err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", "the upload is empty"));
    }
    Ok(length)
}

/// Creates an upload of `Upload-Length` bytes; its URL is in `Location`, its expiry in `Upload-Expires`.
#[utoipa::path(
    post, path = "/v1/uploads", tag = "uploads", operation_id = "tus_create",
    params(s::TusCreateHeaders),
    responses(
        (status = 201, description = "Created", headers(
            ("Location" = String), ("Tus-Resumable" = String),
            ("Upload-Expires" = String, description = "When the unfinished upload expires (HTTP date)"),
        )),
        (status = 400, response = BadRequest),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 507, response = InsufficientStorage),
        CallerErrors,
    ),
)]
async fn create(req: HttpRequest, caller: Caller, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    check_version(&req)?;
    let opts = &state.app.config.upload;
    let length = upload_length(&req, opts.max_bytes)?;
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
    // Room for the whole file now (the PATCHes check again for what is left).
    drop(state.space.admit(length)?);
    let now = state.app.clock.now_ms();
    let info = Info {
        id: new_id("upl"),
        tenant: caller.tenant.clone(),
        length,
        metadata,
        sniffed: false,
        validate: false,
        media_id: None,
        job_id: None,
        expires_at: now + opts.expiry.as_millis() as i64,
    };
    let dir = dir(&state);
    OpenUploads::with(&dir, now, |o| {
        o.admit(&info.id, &info.tenant, length, opts.open_per_tenant, opts.declared_bytes_per_tenant)
    })?;
    let (data, side) = files(&dir, &info.id);
    let saved = info.clone();
    let created = web::block(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::File::create(&data)?.sync_all()?;
        save(&side, &saved)
    })
    .await?;
    if let Err(e) = created {
        OpenUploads::with(&self::dir(&state), now, |o| o.close(&info.id));
        return Err(io_err(e));
    }
    let mut resp = with_tus(HttpResponse::Created());
    resp.insert_header((header::LOCATION, format!("/v1/uploads/{}", info.id)));
    if let Some(exp) = expires_header(&info) {
        resp.insert_header(("Upload-Expires", exp));
    }
    Ok(resp.finish())
}

/// How much of an upload the server has (`Upload-Offset`); once complete, its media and job ids.
#[utoipa::path(
    head, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_head",
    params(("id" = String, Path, description = "Upload id"), s::TusHeaders),
    responses(
        (status = 200, description = "The upload's state", headers(
            ("Upload-Offset" = u64), ("Upload-Length" = u64), ("Tus-Resumable" = String),
            ("Upload-Expires" = String, description = "While unfinished"),
            ("Lectern-Media-Id" = String, description = "Once complete"),
            ("Lectern-Job-Id" = String, description = "Once complete"),
        )),
        (status = 404, response = NotFound),
        (status = 410, description = "The upload expired", body = s::ErrorBody),
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
    load(&state, &caller, &id)?; // 404 before touching another PATCH
    // As tusd does: a client asking where to resume takes the upload over, so a PATCH that stalled
    // (its connection dead but not yet noticed) stores what it has and the offset is exact.
    let _lock = UploadLock::take(&id).await?;
    let (info, offset, _, _) = load(&state, &caller, &id)?;
    let mut resp = with_tus(HttpResponse::Ok());
    resp.insert_header(("Upload-Offset", offset.to_string()))
        .insert_header(("Upload-Length", info.length.to_string()))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(exp) = expires_header(&info) {
        resp.insert_header(("Upload-Expires", exp));
    }
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
            ("Upload-Expires" = String, description = "While unfinished"),
            ("Lectern-Media-Id" = String, description = "When this PATCH completed the upload"),
            ("Lectern-Job-Id" = String, description = "When this PATCH completed the upload"),
        )),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 410, description = "The upload expired", body = s::ErrorBody),
        (status = 412, response = PreconditionFailed),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = ServerError),
        (status = 507, response = InsufficientStorage),
        CallerErrors,
    ),
)]
async fn patch(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
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
        )
        .close());
    }
    load(&state, &caller, &id)?; // 404 before waiting for another PATCH's lock
    let lock = UploadLock::take(&id).await?;
    let (mut info, offset, data, side) = load(&state, &caller, &id)?;
    let _slot = state.upload_slot(&info.tenant)?;
    let claimed = req.headers().get("Upload-Offset").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if claimed != Some(offset) {
        return Err(
            tus_err(StatusCode::CONFLICT, "offset_mismatch", format!("the upload is at offset {offset}")).close()
        );
    }
    let _room = state.space.admit(info.length - offset).map_err(ApiError::close)?;
    let (written, end) = append(&state, &lock, payload, &data, offset, info.length).await?;
    if let BodyEnd::Stopped(e) = end {
        tracing::info!(upload.id = %info.id, offset = written, code = %e.code, "tus PATCH stopped early");
        return Err(e);
    }
    // Refuse non-audio as soon as enough has arrived to tell.
    if !info.sniffed && (written >= HEAD_BYTES as u64 || written == info.length) {
        sniff_upload(&state, &mut info, &data, &side).await?;
    }
    let mut resp = with_tus(HttpResponse::NoContent());
    resp.insert_header(("Upload-Offset", written.to_string()));
    if written == info.length {
        if info.validate
            && let Err(e) = intake::validate_stored(data.clone()).await
        {
            if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                remove(&state, &info, &data, &side);
            }
            return Err(e);
        }
        let (media, job) = finish(&state, &mut info, &data).await?;
        let (s, i) = (side.clone(), info.clone());
        web::block(move || save(&s, &i)).await?.map_err(io_err)?;
        OpenUploads::with(&dir(&state), state.app.clock.now_ms(), |o| o.close(&info.id));
        resp.insert_header(("Lectern-Media-Id", media)).insert_header(("Lectern-Job-Id", job));
    } else if let Some(exp) = expires_header(&info) {
        resp.insert_header(("Upload-Expires", exp));
    }
    Ok(resp.finish())
}

/// Abandons an upload and frees its space (tus termination).
#[utoipa::path(
    delete, path = "/v1/uploads/{id}", tag = "uploads", operation_id = "tus_terminate",
    params(("id" = String, Path, description = "Upload id"), s::TusHeaders),
    responses(
        (status = 204, description = "Removed", headers(("Tus-Resumable" = String))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 410, description = "The upload expired", body = s::ErrorBody),
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
    load(&state, &caller, &id)?;
    let _lock = UploadLock::take(&id).await?;
    let (info, _, data, side) = load(&state, &caller, &id)?;
    let st = state.clone();
    web::block(move || remove(&st, &info, &data, &side)).await?;
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
        // A title with a line break (base64 of "a\r\nb") is refused, not stored.
        assert_eq!(parse_metadata("title YQ0KYg==").unwrap_err().code, "invalid_title");
    }
}
