//! `GET /v1/media`, `GET /v1/media/{id}`, the waveform. (Uploads: `upload.rs` and `tus.rs`.)

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, get, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::openapi::schemas as s;
use super::openapi::{BadRequest, CallerErrors, NotFound};
use super::{ApiError, State, blocking};
use crate::app::PlaybackPolicy;
use crate::auth::Caller;
use crate::journal::JobRecord;

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
    let missing = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no waveform for this media (yet)");
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
#[openapi(paths(list, show, waveform))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(waveform).service(show).service(list);
}
