//! `POST /v1/media` (upload), `GET /v1/media`, `GET /v1/media/{id}`.
//!
//! An upload streams to a staging file on the blob store's disk (never whole in memory), hashing
//! on the way. Its first MiB is sniffed before the rest is accepted (not audio → 415). When the
//! body is complete the file is fsynced and moved under `media/<id>/source`, then the media record
//! and its ingest job commit in one transaction; only then does the client get `202`. An accepted
//! upload is therefore never lost, even to `kill -9` right after the answer.

use std::io::Write;
use std::path::PathBuf;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::openapi::schemas as s;
use super::openapi::{BadRequest, CallerErrors, InsufficientStorage, NotFound, PayloadTooLarge, UnsupportedMediaType};
use super::{ApiError, State, Upload, accept_upload, blocking};
use crate::app::PlaybackPolicy;
use crate::auth::Caller;
use crate::journal::{JobRecord, new_id};
use crate::media::probe::{SNIFF_MAX_BYTES, sniff};

/// Buffered bytes written to the staging file at a time.
const WRITE_CHUNK: usize = 1024 * 1024;
/// Longest accepted text field (title, callback URL), in bytes.
const MAX_TEXT_FIELD: usize = 2048;
/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The media's title (a form field of the same name wins).
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

fn too_large(max: u64) -> ApiError {
    err(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("uploads are limited to {max} bytes"))
}

/// A file being received: staged on the store's disk, hashed, counted, sniffed once.
struct Staging {
    path: PathBuf,
    file: Option<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
    max: u64,
    buf: Vec<u8>,
    head: Vec<u8>,
    sniffed: bool,
}

impl Staging {
    fn new(dir: PathBuf, max: u64) -> Result<Self, ApiError> {
        std::fs::create_dir_all(&dir).map_err(|e| storage_error(&e))?;
        let path = dir.join(format!("{}.part", new_id("upl")));
        let file = std::fs::File::create(&path).map_err(|e| storage_error(&e))?;
        Ok(Self {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            bytes: 0,
            max,
            buf: Vec::new(),
            head: Vec::new(),
            sniffed: false,
        })
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        self.bytes += chunk.len() as u64;
        if self.bytes > self.max {
            return Err(too_large(self.max));
        }
        self.hasher.update(chunk);
        if !self.sniffed {
            let room = SNIFF_MAX_BYTES - self.head.len();
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if self.head.len() >= SNIFF_MAX_BYTES {
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
        self.sniffed = true;
        let head = std::mem::take(&mut self.head);
        match web::block(move || sniff(&head)).await? {
            Ok(_) => Ok(()),
            Err(e) => {
                Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.code(), format!("not a supported audio file: {e}")))
            }
        }
    }

    /// Writes the buffer out; with `sync`, also fsyncs the file.
    async fn flush(&mut self, sync: bool) -> Result<(), ApiError> {
        let mut file = self.file.take().expect("staging file present");
        let buf = std::mem::take(&mut self.buf);
        let (file, result) = web::block(move || {
            let r = file.write_all(&buf).and_then(|_| if sync { file.sync_all() } else { Ok(()) });
            (file, r)
        })
        .await?;
        self.file = Some(file);
        result.map_err(|e| storage_error(&e))
    }

    /// Finishes the body: sniffs a short file, flushes and fsyncs. Returns (bytes, sha256).
    async fn finish(&mut self) -> Result<(u64, String), ApiError> {
        if self.bytes == 0 {
            return Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_audio", "the upload is empty"));
        }
        if !self.sniffed {
            self.sniff().await?;
        }
        self.flush(true).await?;
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

fn storage_error(e: &std::io::Error) -> ApiError {
    let status =
        if e.raw_os_error() == Some(28) { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::SERVICE_UNAVAILABLE };
    tracing::error!(error = %e, "upload storage failed");
    err(status, "storage_unavailable", "the upload could not be stored; try again later").retry_after(30)
}

/// Reads a small text field of a multipart form.
async fn text_field(field: &mut actix_multipart::Field) -> Result<String, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.next().await {
        let chunk = chunk.map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_multipart", e.to_string()))?;
        if out.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(err(StatusCode::BAD_REQUEST, "invalid_multipart", "a text field is longer than 2 KiB"));
        }
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).map_err(|_| err(StatusCode::BAD_REQUEST, "invalid_multipart", "a text field is not UTF-8"))
}

fn accepted(job: &JobRecord, existing: bool, hls: String) -> HttpResponse {
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

/// Uploads an audio file; answers once it is stored durably and its ingest job is committed.
///
/// Either a `multipart/form-data` form with a `file` field, or the raw file as the body. The first
/// MiB is sniffed before the rest is accepted: anything but a supported audio file is refused (415).
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
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 507, response = InsufficientStorage),
        CallerErrors,
    ),
)]
#[post("/v1/media")]
async fn upload(
    req: HttpRequest,
    caller: Caller,
    mut payload: web::Payload,
    state: web::Data<State>,
    query: web::Query<UploadQuery>,
) -> Result<HttpResponse, ApiError> {
    let tenant = upload_tenant(&state, &caller, query.tenant.clone()).await?;
    let _slot = state.upload_slot(&tenant)?;
    let max = state.app.config.upload.max_bytes;
    let key = match req.headers().get("Idempotency-Key") {
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()));
            Some(
                k.ok_or_else(|| {
                    err(StatusCode::BAD_REQUEST, "invalid_idempotency_key", "1 to 255 visible ASCII characters")
                })?
                .to_string(),
            )
        }
        None => None,
    };
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
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let staging_dir = state.blobs.staging_dir().unwrap_or_else(|| state.app.data_dir().join("staging"));
    let mut staged = Staging::new(staging_dir, max)?;
    let (mut title, mut callback_url, mut filename) = (query.title.clone(), query.callback_url.clone(), None);
    let mut policy = query.playback_policy.clone();

    if mime == "multipart/form-data" {
        let mut form = actix_multipart::Multipart::new(req.headers(), payload);
        let mut got_file = false;
        while let Some(field) = form.next().await {
            let mut field = field.map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_multipart", e.to_string()))?;
            match field.name().unwrap_or_default() {
                "file" if !got_file => {
                    got_file = true;
                    filename = field.content_disposition().and_then(|d| d.get_filename()).map(str::to_string);
                    while let Some(chunk) = field.next().await {
                        let chunk =
                            chunk.map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_multipart", e.to_string()))?;
                        staged.push(&chunk).await?;
                    }
                }
                "title" => title = Some(text_field(&mut field).await?),
                "callback_url" => callback_url = Some(text_field(&mut field).await?),
                "playback_policy" => policy = Some(text_field(&mut field).await?),
                other => {
                    let other = other.to_string();
                    return Err(err(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        format!("unexpected form field {other:?}"),
                    ));
                }
            }
        }
        if !got_file {
            return Err(err(StatusCode::BAD_REQUEST, "missing_file", "the form has no `file` field"));
        }
    } else if mime.starts_with("audio/") || mime == "application/octet-stream" {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?;
            staged.push(&chunk).await?;
        }
    } else {
        return Err(err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with a `file` field, or a raw audio/* or application/octet-stream body",
        ));
    }
    let policy = match policy.as_deref() {
        None | Some("") => PlaybackPolicy::Public,
        Some(p) => PlaybackPolicy::parse(p).map_err(ApiError::from)?,
    };
    let callback_url = callback_url.filter(|u| !u.is_empty());
    if let Some(url) = callback_url.clone() {
        let guard = state.guard.clone();
        web::block(move || guard.admit(&url))
            .await?
            .map_err(|e| err(StatusCode::BAD_REQUEST, "invalid_callback_url", e.to_string()))?;
    }
    let (bytes, sha256) = staged.finish().await?;

    let meta = json!({
        "upload": {"bytes": bytes, "sha256": sha256, "content_type": mime, "filename": filename},
        "callback_url": callback_url,
        "playback_policy": policy,
    });
    let metric_tenant = tenant.clone();
    let up = Upload { tenant, idempotency_key: key, staged: staged.path.clone(), keep_staged: false, title, meta };
    let enqueued = accept_upload(&state, up).await?;
    state.metrics.add(crate::metrics::UPLOAD_BYTES, &[("tenant", &metric_tenant)], bytes as f64);
    tracing::info!(media.id = ?enqueued.job.media_id, job.id = %enqueued.job.id, bytes, "upload accepted");
    let hls = hls_link(&state, &enqueued.job).await?;
    Ok(accepted(&enqueued.job, enqueued.existing, hls))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// How many, newest first: clamped to 1..=500; default 50.
    #[param(maximum = 18446744073709551615_u64)]
    limit: Option<usize>,
}

/// The media JSON: the record, what its ingest job found out, and where to get things.
fn media_json(app: &crate::app::App, m: &crate::journal::Media, job: Option<&JobRecord>) -> Value {
    let probe = job.and_then(|j| j.step("probe")).and_then(|s| s.output.clone()).unwrap_or(Value::Null);
    let transcode = job.and_then(|j| j.step("transcode")).and_then(|s| s.output.clone()).unwrap_or(Value::Null);
    let get = |k: &str| probe.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": m.id, "tenant": m.tenant, "title": m.title, "created_at": crate::clock::rfc3339(m.created_at),
        "state": job.map(|j| j.state.as_str()).unwrap_or("queued"),
        "job_id": job.map(|j| j.id.clone()),
        "duration_s": get("duration_s"), "codec": get("codec"), "container": get("container"),
        "sample_rate": get("sample_rate"), "channels": get("channels"), "bits_per_sample": get("bits_per_sample"),
        "tags": get("tags"), "has_cover_art": get("has_cover_art"),
        "loudness": transcode.get("loudness").cloned().unwrap_or(Value::Null),
        "upload": m.meta.get("upload").cloned().unwrap_or(Value::Null),
        "playback_policy": PlaybackPolicy::of(&m.meta),
        "links": {
            "hls": app.hls_url(&m.id, &m.meta),
            "waveform": format!("/v1/media/{}/waveform.json", m.id),
            "transcripts": {
                "json": format!("/v1/media/{}/transcript.json", m.id),
                "vtt": format!("/v1/media/{}/transcript.vtt", m.id),
                "srt": format!("/v1/media/{}/transcript.srt", m.id),
            },
            "job": job.map(|j| format!("/v1/jobs/{}", j.id)),
        },
    })
}

/// The caller's media `id`: another tenant's answers 404 like a missing one.
pub(super) async fn own_media(
    state: &web::Data<State>,
    caller: &Caller,
    id: &str,
) -> Result<crate::journal::Media, ApiError> {
    let lookup = id.to_string();
    match blocking(state, move |app| Ok(app.journal.media(&lookup)?)).await? {
        Some(m) if caller.sees(&m.tenant) => Ok(m),
        _ => Err(super::not_found("media", id)),
    }
}

/// A media item: metadata, state and links.
#[utoipa::path(
    tag = "media",
    operation_id = "get_media",
    params(("id" = String, Path, description = "Media id")),
    responses(
        (status = 200, description = "The media item", body = s::Media),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[get("/v1/media/{id}")]
async fn show(state: web::Data<State>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let m = own_media(&state, &caller, &id).await?;
    let (body, _) = blocking(&state, move |app| {
        let job = app.latest_job_of_media(&m.id)?;
        Ok((media_json(app, &m, job.as_ref()), ()))
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// The caller's media, newest first.
#[utoipa::path(
    tag = "media",
    operation_id = "list_media",
    params(ListQuery),
    responses(
        (status = 200, description = "Media items", body = s::MediaList),
        (status = 400, response = BadRequest),
        CallerErrors,
    ),
)]
#[get("/v1/media")]
async fn list(state: web::Data<State>, caller: Caller, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let tenant = caller.tenant.clone();
    let items = blocking(&state, move |app| {
        let media = app.journal.media_list(&tenant, limit)?;
        media
            .into_iter()
            .map(|m| {
                let job = app.latest_job_of_media(&m.id)?;
                Ok(media_json(app, &m, job.as_ref()))
            })
            .collect::<crate::app::Result<Vec<_>>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "media": items })))
}

/// The waveform peaks (BBC audiowaveform JSON, version 2), written by the transcode step.
#[utoipa::path(
    tag = "media",
    operation_id = "get_waveform",
    params(("id" = String, Path, description = "Media id")),
    responses(
        (status = 200, description = "Peaks", body = s::Waveform),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[get("/v1/media/{id}/waveform.json")]
async fn waveform(state: web::Data<State>, caller: Caller, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let missing = || err(StatusCode::NOT_FOUND, "not_found", "no waveform for this media (yet)");
    own_media(&state, &caller, &id).await?;
    let blobs = state.blobs.clone();
    let bytes = web::block(move || blobs.get(&format!("media/{id}/waveform.json"))).await?.map_err(|_| missing())?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .body(bytes))
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, list, show, waveform))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(upload).service(waveform).service(show).service(list);
}
