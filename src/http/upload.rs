//! `POST /v1/media`: an upload in one request.
//!
//! The body streams to a staging file on the blob store's disk (never whole in memory), hashed on
//! the way, under the body timing rules of [`super::intake`]; its first MiB is sniffed before the
//! rest is accepted (not audio → 415). A file whose head could not tell (an M4A with its `moov`
//! at the end) is validated once stored. Then the file is fsynced and moved under
//! `media/<id>/source`, and the media record and its ingest job commit in one transaction; only
//! then does the client get `202`. An accepted upload is therefore never lost, even to `kill -9`
//! right after the answer; a refused one leaves nothing behind.

use std::io::Write;
use std::path::PathBuf;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, post, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::intake::{self, BodyLimits, HEAD_BYTES, TimedBody, clean_text, storage_error};
use super::openapi::schemas as s;
use super::openapi::{
    BadRequest, CallerErrors, InsufficientStorage, NotFound, PayloadTooLarge, RequestTimeout, ServerError,
    UnsupportedMediaType,
};
use super::{ApiError, State, Upload, accept_upload, blocking};
use crate::app::PlaybackPolicy;
use crate::auth::Caller;
use crate::journal::{JobRecord, new_id};

/// Buffered bytes written to the staging file at a time.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// A body of unknown length re-checks free disk every this many bytes.
const SPACE_CHECK_EVERY: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The media's title (a form field of the same name wins); at most 2 KiB, no control characters.
    title: Option<String>,
    /// A URL that hears this upload's webhook events.
    callback_url: Option<String>,
    /// `public` (default) or `signed`.
    #[param(value_type = Option<s::PlaybackPolicy>)]
    playback_policy: Option<String>,
    /// The operator uploads for this tenant (id or name); tenants always upload for themselves.
    tenant: Option<String>,
}

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

pub(super) fn too_large(max: u64) -> ApiError {
    err(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("uploads are limited to {max} bytes")).close()
}

/// A file being received: staged on the store's disk, hashed, counted, sniffed once. Removed when
/// dropped unless the store adopted it.
struct Staging {
    path: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
    max: u64,
    buf: Vec<u8>,
    head: Vec<u8>,
    /// `Some(complete)` once sniffed.
    sniffed: Option<bool>,
    _held: intake::Held,
}

impl Staging {
    fn new(state: &State, max: u64) -> Result<Self, ApiError> {
        let dir = state.staging_dir();
        std::fs::create_dir_all(&dir).map_err(|e| storage_error(&e))?;
        let path = dir.join(format!("{}.part", new_id("upl")));
        let held = state.in_flight.hold(&path);
        let file = std::fs::File::create(&path).map_err(|e| storage_error(&e))?;
        Ok(Self {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            bytes: 0,
            max,
            buf: Vec::new(),
            head: Vec::new(),
            sniffed: None,
            _held: held,
        })
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.max {
            return Err(too_large(self.max));
        }
        self.hasher.update(chunk);
        if self.sniffed.is_none() {
            let room = HEAD_BYTES - self.head.len();
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if self.head.len() >= HEAD_BYTES {
                self.sniff().await?;
            }
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush(false).await?;
        }
        Ok(())
    }

    async fn sniff(&mut self) -> Result<(), ApiError> {
        let complete = intake::sniff_head(std::mem::take(&mut self.head)).await?;
        self.sniffed = Some(complete);
        Ok(())
    }

    /// Writes the buffer out; with `sync`, also fsyncs the file.
    async fn flush(&mut self, sync: bool) -> Result<(), ApiError> {
        let mut file = self.file.take().ok_or_else(|| storage_error(&std::io::Error::other("staging file gone")))?;
        let buf = std::mem::take(&mut self.buf);
        let (file, result) = web::block(move || {
            let r = file.write_all(&buf).and_then(|_| if sync { file.sync_all() } else { Ok(()) });
            (file, r)
        })
        .await?;
        self.file = Some(file);
        result.map_err(|e| storage_error(&e))
    }

    /// Finishes the body: sniffs a short file, flushes and fsyncs, validates a file whose head
    /// could not tell. Returns (bytes, sha256).
    async fn finish(&mut self) -> Result<(u64, String), ApiError> {
        if self.bytes == 0 {
            return Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", "the upload is empty"));
        }
        if self.sniffed.is_none() {
            self.sniff().await?;
        }
        self.flush(true).await?;
        if self.sniffed == Some(false) {
            intake::validate_stored(self.path.clone()).await?;
        }
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        Ok((self.bytes, sha))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Whatever did not end up adopted by the store is removed; a rename already moved it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a small text field of a multipart form.
async fn text_field(field: &mut actix_multipart::Field, name: &str) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_multipart", e.to_string()))?;
        if out.len() + chunk.len() > intake::MAX_TEXT_FIELD {
            return Err(err(
                StatusCode::BAD_REQUEST,
                &format!("invalid_{name}"),
                format!("{name} is longer than 2 KiB"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(out)
        .map_err(|_| err(StatusCode::BAD_REQUEST, &format!("invalid_{name}"), format!("{name} is not UTF-8")))?;
    clean_text(name, text)
}

pub(super) fn accepted(job: &JobRecord, existing: bool, hls: String) -> HttpResponse {
    let media = job.media_id.clone().unwrap_or_default();
    HttpResponse::Accepted().json(json!({
        "media_id": media,
        "job_id": job.id,
        "existing": existing,
        "links": {
            "media": format!("/v1/media/{media}"),
            "job": format!("/v1/jobs/{}", job.id),
            "hls": hls,
            "waveform": format!("/v1/media/{media}/waveform.json"),
        },
    }))
}

/// The tenant an upload is for: the caller's own, or the one the operator names.
async fn upload_tenant(state: &web::Data<State>, caller: &Caller, asked: Option<String>) -> Result<String, ApiError> {
    match asked {
        Some(t) if caller.admin => Ok(blocking(state, move |app| app.tenant_id(Some(&t))).await?),
        _ => Ok(caller.tenant.clone()),
    }
}

/// The HLS link of a media just accepted (signed when its policy says so).
async fn hls_link(state: &web::Data<State>, job: &JobRecord) -> Result<String, ApiError> {
    let id = job.media_id.clone().unwrap_or_default();
    blocking(state, move |app| {
        let meta = app.journal.media(&id)?.map(|m| m.meta).unwrap_or_default();
        Ok(app.hls_url(&id, &meta))
    })
    .await
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("Idempotency-Key") else { return Ok(None) };
    let k = v
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
    k.map(|k| Some(k.to_string()))
        .ok_or_else(|| err(StatusCode::BAD_REQUEST, "invalid_idempotency_key", "1 to 255 visible ASCII characters"))
}

/// The text fields of an upload, from the query string, overridden by form fields.
#[derive(Default)]
struct Fields {
    title: Option<String>,
    callback_url: Option<String>,
    policy: Option<String>,
    filename: Option<String>,
}

impl Fields {
    fn from_query(q: &UploadQuery) -> Result<Self, ApiError> {
        let clean = |name: &str, v: &Option<String>| v.clone().map(|v| clean_text(name, v)).transpose();
        Ok(Self {
            title: clean("title", &q.title)?,
            callback_url: clean("callback_url", &q.callback_url)?,
            policy: q.playback_policy.clone(),
            filename: None,
        })
    }
}

/// Streams the body (raw or the form's `file` field) into `staged`, reading the form's text fields.
async fn receive(
    req: &HttpRequest,
    state: &State,
    payload: web::Payload,
    staged: &mut Staging,
    fields: &mut Fields,
    declared: Option<u64>,
) -> Result<(), ApiError> {
    let limits = BodyLimits::from_config(&state.app.config.upload);
    let body = TimedBody::new(payload, limits);
    let stalled = body.stalled();
    let broke = |e: &dyn std::fmt::Display| intake::body_error(stalled.get(), &limits, e);
    let mut next_check = SPACE_CHECK_EVERY;
    let mut check_space = |bytes: u64| -> Result<(), ApiError> {
        if declared.is_none() && bytes >= next_check {
            next_check += SPACE_CHECK_EVERY;
            state.space.still_room()?;
        }
        Ok(())
    };
    let mime = mime_of(req);
    if mime == "multipart/form-data" {
        let mut form = actix_multipart::Multipart::new(req.headers(), body);
        let mut got_file = false;
        while let Some(field) = form.next().await {
            let mut field = field.map_err(|e| form_error(broke(&e), &e))?;
            match field.name().unwrap_or_default() {
                "file" if !got_file => {
                    got_file = true;
                    fields.filename = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_string);
                    while let Some(chunk) = field.next().await {
                        let chunk = chunk.map_err(|e| form_error(broke(&e), &e))?;
                        staged.push(&chunk).await?;
                        check_space(staged.bytes)?;
                    }
                }
                "title" => fields.title = Some(text_field(&mut field, "title").await?),
                "callback_url" => fields.callback_url = Some(text_field(&mut field, "callback_url").await?),
                "playback_policy" => fields.policy = Some(text_field(&mut field, "playback_policy").await?),
                other => {
                    let other = other.to_string();
                    let why = format!("unexpected form field {other:?}");
                    return Err(err(StatusCode::BAD_REQUEST, "invalid_multipart", why));
                }
            }
        }
        if !got_file {
            return Err(err(StatusCode::BAD_REQUEST, "missing_file", "the form has no `file` field"));
        }
        return Ok(());
    }
    let mut body = body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| broke(&e))?;
        staged.push(&chunk).await?;
        check_space(staged.bytes)?;
    }
    Ok(())
}

/// A multipart error caused by the body's timing keeps its 408; a malformed form is a 400.
fn form_error(from_body: ApiError, e: &actix_multipart::MultipartError) -> ApiError {
    if from_body.status == StatusCode::REQUEST_TIMEOUT {
        return from_body;
    }
    err(StatusCode::BAD_REQUEST, "invalid_multipart", e.to_string()).close()
}

fn mime_of(req: &HttpRequest) -> String {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Uploads an audio file; answers once it is stored durably and its ingest job is committed.
///
/// Either a `multipart/form-data` form with a `file` field, or the raw file as the body. The first
/// MiB is sniffed before the rest is accepted: anything but a supported audio file is refused (415).
/// A body that stalls or trickles is cut off (408); a server low on disk refuses it (507).
#[utoipa::path(
    tag = "media",
    operation_id = "upload_media",
    params(UploadQuery, s::UploadHeaders),
    request_body(
        description = "The audio file",
        content(
            (s::UploadForm = "multipart/form-data"),
            (s::Binary = "audio/*"),
            (s::Binary = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 202, description = "Accepted: stored, and its ingest job committed", body = s::Accepted),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = ServerError),
        (status = 507, response = InsufficientStorage),
        CallerErrors,
    ),
)]
#[post("/v1/media")]
async fn upload(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<State>,
    query: web::Query<UploadQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = upload_tenant(&state, &caller, query.tenant.clone()).await?;
    let mut fields = Fields::from_query(&query)?;
    let _slot = state.upload_slot(&tenant)?;
    let max = state.app.config.upload.max_bytes;
    let key = idempotency_key(&req)?;
    if let Some(k) = key.clone() {
        let (t, now) = (tenant.clone(), state.app.clock.now_ms());
        if let Some(job) = blocking(&state, move |app| Ok(app.journal.idempotent_job(&t, &k, now)?)).await? {
            let hls = hls_link(&state, &job).await?;
            return Ok(accepted(&job, true, hls));
        }
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let mime = mime_of(&req);
    if mime != "multipart/form-data" && !mime.starts_with("audio/") && mime != "application/octet-stream" {
        return Err(err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with a `file` field, or a raw audio/* or application/octet-stream body",
        )
        .close());
    }
    let _room = state.space.admit(declared.unwrap_or(0)).map_err(ApiError::close)?;
    let mut staged = Staging::new(&state, max)?;
    receive(&req, &state, payload, &mut staged, &mut fields, declared).await?;
    let policy = match fields.policy.as_deref() {
        None | Some("") => PlaybackPolicy::Public,
        Some(p) => PlaybackPolicy::parse(p).map_err(ApiError::from)?,
    };
    let callback_url = fields.callback_url.filter(|u| !u.is_empty());
    if let Some(url) = callback_url.clone() {
        let guard = state.guard.clone();
        web::block(move || guard.admit(&url))
            .await?
            .map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_callback_url", e.to_string()))?;
    }
    let (bytes, sha256) = staged.finish().await?;
    let meta = json!({
        "upload": {"bytes": bytes, "sha256": sha256, "content_type": mime, "filename": fields.filename},
        "callback_url": callback_url,
        "playback_policy": policy,
    });
    let metric_tenant = tenant.clone();
    let up = Upload {
        tenant,
        idempotency_key: key,
        staged: staged.path.clone(),
        keep_staged: false,
        title: fields.title,
        meta,
    };
    let enqueued = accept_upload(&state, up).await?;
    state.metrics.add(crate::metrics::UPLOAD_BYTES, &[("tenant", &metric_tenant)], bytes as f64);
    tracing::info!(media.id = ?enqueued.job.media_id, job.id = %enqueued.job.id, bytes, "upload accepted");
    let hls = hls_link(&state, &enqueued.job).await?;
    Ok(accepted(&enqueued.job, enqueued.existing, hls))
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(upload);
}
