//! Transcripts (`/v1/media/{id}/transcript.{json,vtt,srt}`) and search (`/v1/search`).

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, get, web};
use serde::Deserialize;
use serde_json::json;

use super::openapi::schemas as s;
use super::openapi::{BadRequest, CallerErrors, NotFound};
use super::{ApiError, State, blocking};
use crate::app::SearchRequest;
use crate::auth::Caller;
use crate::index::Mode;
use crate::speech::transcript::Transcript;

/// The transcript in one of its formats: the stored podcast-namespace JSON, WebVTT or SubRip.
#[utoipa::path(
    tag = "search",
    operation_id = "get_transcript",
    params(
        ("id" = String, Path, description = "Media id"),
        ("format" = s::TranscriptFormat, Path, description = "`json`, `vtt` or `srt`"),
    ),
    responses(
        (status = 200, description = "The transcript", content(
            (s::Transcript = "application/json"),
            (String = "text/vtt; charset=utf-8"),
            (String = "application/x-subrip; charset=utf-8"),
        )),
        (status = 404, response = NotFound),
        CallerErrors,
    ),
)]
#[get("/v1/media/{id}/transcript.{format}")]
async fn transcript(
    state: web::Data<State>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, format) = path.into_inner();
    let content_type = match format.as_str() {
        "json" => "application/json",
        "vtt" => "text/vtt; charset=utf-8",
        "srt" => "application/x-subrip; charset=utf-8",
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "transcripts are .json, .vtt or .srt")),
    };
    super::media::own_media(&state, &caller, &id).await?;
    let blobs = state.blobs.clone();
    let key = format!("media/{id}/transcript.json");
    let bytes = web::block(move || blobs.get(&key))
        .await?
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "this media has no transcript (yet)"))?;
    let body = match format.as_str() {
        "json" => bytes,
        other => {
            let t: Transcript = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
            if other == "vtt" { t.to_vtt() } else { t.to_srt() }.into_bytes()
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    /// What to look for: up to 2000 characters, not all white space.
    #[param(
        min_length = 1,
        max_length = 2000,
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
    )]
    q: String,
    /// How many passages: 1..=100, default 10.
    #[param(minimum = 1, maximum = 100)]
    k: Option<usize>,
    /// `hybrid` (default), `vector` or `lexical`.
    #[param(value_type = Option<s::SearchMode>)]
    mode: Option<String>,
    /// Only passages of this media.
    media_id: Option<String>,
}

/// Searches the caller's transcripts; each hit plays from its passage (`play_url`).
#[utoipa::path(
    tag = "search",
    operation_id = "search",
    params(SearchQuery),
    responses(
        (status = 200, description = "Passages, best first", body = s::SearchResults),
        (status = 400, response = BadRequest),
        CallerErrors,
    ),
)]
#[get("/v1/search")]
async fn search(state: web::Data<State>, caller: Caller, q: web::Query<SearchQuery>) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let mode: Mode = match q.mode.as_deref() {
        None => Mode::Hybrid,
        Some(m) => m.parse().map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e))?,
    };
    let k = q.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "k must be between 1 and 100"));
    }
    let req = SearchRequest { tenant: Some(caller.tenant.clone()), query: q.q, k, mode, media_id: q.media_id };
    let results = blocking(&state, move |app| app.search(&req)).await?;
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

/// The operations `configure` registers, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(transcript, search))]
pub(super) struct Api;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(transcript).service(search);
}
