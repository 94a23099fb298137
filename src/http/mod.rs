//! The HTTP API: a thin face over [`crate::app`]. Every error answers
//! `{"error": {"code", "message"}}` with a fitting status, extractor errors included.

mod hls;
mod jobs;
mod media;
mod ops;
mod speech;
mod tus;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde_json::json;

use crate::app::{self, App};
use crate::metrics::Metrics;

/// Shared state of every handler.
#[derive(Clone)]
pub struct State {
    pub app: App,
    pub metrics: Arc<Metrics>,
    pub blobs: Arc<dyn crate::storage::BlobStore>,
    /// One permit per upload streaming now (`upload.max-in-flight`).
    pub uploads: Arc<tokio::sync::Semaphore>,
}

impl State {
    pub fn new(app: App, metrics: Arc<Metrics>, blobs: Arc<dyn crate::storage::BlobStore>) -> Self {
        let uploads = Arc::new(tokio::sync::Semaphore::new(app.config.upload.max_in_flight));
        Self { app, metrics, blobs, uploads }
    }
}

/// An API error: a status, a snake_case code, a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds a client should wait before trying again (`Retry-After`), for 429/503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after {
            resp.insert_header((actix_web::http::header::RETRY_AFTER, s.to_string()));
        }
        resp.json(json!({"error": {"code": self.code, "message": self.message}}))
    }
}

impl From<app::Error> for ApiError {
    fn from(e: app::Error) -> Self {
        let status = match &e {
            app::Error::NotFound { .. } => StatusCode::NOT_FOUND,
            app::Error::Invalid(_) => StatusCode::BAD_REQUEST,
            app::Error::Conflict(_) => StatusCode::CONFLICT,
            app::Error::Journal(_) | app::Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = match &e {
            app::Error::Unavailable { code, .. } => code.clone(),
            _ => e.code().to_string(),
        };
        Self::new(status, &code, e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is shutting down or overloaded")
            .retry_after(5)
    }
}

/// Runs a blocking application command off the async workers.
pub async fn blocking<T: Send + 'static>(
    state: &web::Data<State>,
    f: impl FnOnce(&App) -> app::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let app = state.app.clone();
    Ok(web::block(move || f(&app)).await??)
}

/// A received, fsynced upload on the store's disk, to become media + its ingest job.
pub(crate) struct Upload {
    pub tenant: String,
    pub idempotency_key: Option<String>,
    /// The staged file (inside the store's staging dir).
    pub staged: std::path::PathBuf,
    /// Leave `staged` in place (tus keeps answering `HEAD`): the store adopts a hard link instead.
    pub keep_staged: bool,
    pub title: Option<String>,
    /// Recorded as the media's `meta`.
    pub meta: serde_json::Value,
}

/// The one way an upload is accepted, for `POST /v1/media` and tus alike: the file goes into the
/// store under `media/<id>/source` (atomic), then media + job commit in one transaction. A lost race
/// on the idempotency key keeps the first upload only. Only after this returns may the client hear
/// 2xx: an accepted upload is never lost.
pub(crate) async fn accept_upload(state: &web::Data<State>, up: Upload) -> Result<crate::journal::Enqueued, ApiError> {
    let media_id = crate::journal::new_id("med");
    let key = format!("media/{media_id}/source");
    let (blobs, staged, keep) = (state.blobs.clone(), up.staged, up.keep_staged);
    let store_key = key.clone();
    web::block(move || -> crate::storage::Result<()> {
        let src = if keep {
            let link = staged.with_extension("adopt");
            std::fs::hard_link(&staged, &link)
                .map_err(|source| crate::storage::Error::Io { key: store_key.clone(), source })?;
            link
        } else {
            staged
        };
        blobs.adopt_file(&store_key, &src)
    })
    .await?
    .map_err(|e| {
        tracing::error!(error = %e, "could not store upload");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the upload could not be stored")
            .retry_after(30)
    })?;
    let title = up.title.filter(|t| !t.trim().is_empty());
    let req = app::EnqueueRequest {
        kind: "ingest".into(),
        tenant: Some(up.tenant),
        idempotency_key: up.idempotency_key,
        new_media: Some(crate::journal::NewMedia { id: media_id, title, meta: up.meta }),
        ..Default::default()
    };
    let blobs = state.blobs.clone();
    blocking(state, move |app| {
        let e = app.enqueue(req)?;
        if e.existing {
            // Lost a race with the same idempotency key: keep the first upload only.
            let _ = blobs.delete(&key);
        }
        Ok(e)
    })
    .await
}

fn json_error(status: StatusCode, code: &str, e: impl std::fmt::Display) -> actix_web::Error {
    ApiError::new(status, code, e.to_string()).into()
}

/// Routes and uniform error handling, for `App::configure`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_json", e)),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_query", e)))
    .app_data(web::PathConfig::default().error_handler(|e, _| json_error(StatusCode::BAD_REQUEST, "invalid_path", e)))
    .configure(ops::configure)
    .configure(jobs::configure)
    .configure(hls::configure)
    .configure(media::configure)
    .configure(speech::configure)
    .configure(tus::configure)
    .default_service(web::to(|| async {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").error_response()
    }));
}

/// Binds the server. It runs when awaited and stops through its handle; it does not listen for
/// signals itself (actix-server would stop the whole actix System after a signal, taking the
/// engine's arbiters down before they could drain), `lectern serve` does.
pub fn server(state: State, addr: &str) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::Compress::default())
            .configure(configure)
    })
    .workers(2)
    .shutdown_timeout(10)
    .disable_signals()
    .bind(addr)?
    .run())
}
