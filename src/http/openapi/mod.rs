//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` (no key needed).
//!
//! It is generated from the handlers: each route carries a `#[utoipa::path]` annotation, and each
//! route module lists its operations in an `Api` struct next to its `configure`; [`document`] merges
//! them. Bodies are described in [`schemas`]. What utoipa 5 cannot say is added to the generated
//! JSON: the top-level `webhooks` (`webhooks.rs`) and required response headers.

pub mod schemas;
mod webhooks;

use std::sync::OnceLock;

use actix_web::{HttpResponse, get, web};
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, header::Header};
use utoipa::{Modify, OpenApi};

/// The error answers every route shares: `{"error": {"code", "message"}}` with a status.
macro_rules! error_responses {
    ($($name:ident = $description:literal, retry_after: $retry:literal;)*) => {$(
        #[doc = $description]
        pub struct $name;
        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, $retry).into())
            }
        }
    )*};
}

error_responses! {
    BadRequest = "The request is malformed: a parameter, header or body is invalid.", retry_after: false;
    Unauthorized = "No valid `Authorization: Bearer <key>` (the API is closed once a key exists).",
        retry_after: false;
    Forbidden = "The key may not do this (an operator route, or a refused playback URL).", retry_after: false;
    NotFound = "No such resource, or it belongs to another tenant.", retry_after: false;
    Conflict = "The resource is not in a state that allows this.", retry_after: false;
    PreconditionFailed = "The request lacks `Tus-Resumable: 1.0.0`.", retry_after: false;
    PayloadTooLarge = "The upload is larger than `upload.max-bytes`.", retry_after: false;
    UnsupportedMediaType = "The body is not a supported audio file, or has the wrong content type.",
        retry_after: false;
    TooManyRequests = "The tenant is over its request rate or concurrent upload limit; retry after \
        `Retry-After` seconds.", retry_after: true;
    Unavailable = "Overloaded, shutting down, or a dependency (journal, storage, model, index) is not \
        available; retry after `Retry-After` seconds when given.", retry_after: true;
    InsufficientStorage = "The server is low on disk space (`data.min-free-bytes`); retry after \
        `Retry-After` seconds.", retry_after: true;
    RequestTimeout = "The upload body stalled (nothing for `upload.idle-timeout`) or trickled below \
        `upload.min-rate`; the connection is closed. A tus upload keeps what arrived: resume it.",
        retry_after: false;
    ServerError = "The server failed while handling the request (not the request's fault); retry later.",
        retry_after: false;
}

/// What the `Caller` extractor may answer on every route that takes a key: 401 (no or an unknown
/// key), 429 (the tenant's request rate) and 503 (the key lookup could not run).
pub struct CallerErrors;

impl utoipa::IntoResponses for CallerErrors {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        let named = [("401", "Unauthorized"), ("429", "TooManyRequests"), ("503", "Unavailable")];
        named.into_iter().map(|(status, name)| (status.to_string(), Ref::from_response_name(name).into())).collect()
    }
}

fn error_response(description: &str, retry_after: bool) -> Response {
    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    let mut r = ResponseBuilder::new().description(description).content("application/json", body);
    if retry_after {
        let seconds =
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::Integer).minimum(Some(0));
        let mut h = Header::new(seconds);
        h.description = Some("Seconds to wait before trying again.".into());
        r = r.header("Retry-After", h);
    }
    r.build()
}

/// The bearer scheme every `/v1` route needs.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "A tenant's API key (`lectern tenants create`), or the operator's `LECTERN_ADMIN_KEY`. A fresh \
             install with neither key answers every caller as the operator (loopback only)."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lectern",
        description = "Self-hosted audio pipeline: durable jobs, HLS, transcription, semantic search. Every \
            error answers `{\"error\": {\"code\", \"message\"}}` with a fitting status.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(
        // Schemas that only parameters refer to (utoipa collects the bodies' schemas itself).
        schemas(
            schemas::ErrorBody,
            schemas::JobState,
            schemas::PlaybackPolicy,
            schemas::SearchMode,
            schemas::TranscriptFormat,
            schemas::TusVersion
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PreconditionFailed,
            PayloadTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            Unavailable,
            InsufficientStorage,
            RequestTimeout,
            ServerError
        ),
    ),
    security(("bearer" = [])),
    modifiers(&Bearer),
    tags(
        (name = "media", description = "Uploads and media items"),
        (name = "uploads", description = "Resumable uploads (tus 1.0.0: core, creation, termination)"),
        (name = "search", description = "Transcripts and search"),
        (name = "jobs", description = "Pipeline jobs"),
        (name = "hls", description = "HLS playback (no key: public media, or signed URLs)"),
        (name = "webhooks", description = "Webhook endpoints and the events they hear"),
        (name = "admin", description = "Tenants and queues (operator key)"),
        (name = "ops", description = "Health, readiness, metrics, the OpenAPI document"),
    ),
)]
struct Root;

#[derive(OpenApi)]
#[openapi(paths(openapi_json))]
pub(super) struct Api;

/// The whole document, as served.
pub fn document() -> Value {
    let mut doc = Root::openapi();
    for part in [
        super::media::Api::openapi(),
        super::upload::Api::openapi(),
        super::tus::Api::openapi(),
        super::speech::Api::openapi(),
        super::jobs::Api::openapi(),
        super::hls::Api::openapi(),
        super::admin::Api::openapi(),
        super::ops::Api::openapi(),
        Api::openapi(),
    ] {
        doc.merge(part);
    }
    let mut doc = serde_json::to_value(&doc).expect("the document serializes");
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for (method, op) in item.as_object_mut().expect("path item") {
            // `security(())` renders as `[{}]` (an empty requirement); say "no key" the plain way.
            if op["security"] == serde_json::json!([{}]) {
                op["security"] = serde_json::json!([]);
            }
            // `method(get, head)` gives both operations one id; ids must be unique.
            if method == "head"
                && let Some(id) = op["operationId"].as_str().filter(|id| !id.starts_with("tus_"))
            {
                op["operationId"] = format!("{id}_head").into();
            }
        }
    }
    // utoipa 5 has no `required` for response headers: a 429 always says when to come back.
    doc["components"]["responses"]["TooManyRequests"]["headers"]["Retry-After"]["required"] = true.into();
    webhooks::add(&mut doc);
    doc
}

/// The methods the document lists for a request path, as an `Allow` value (`GET, HEAD`); `None`
/// when no documented path matches.
pub fn allowed_methods(path: &str) -> Option<String> {
    static TABLE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
        paths
            .iter()
            .map(|(template, item)| {
                let methods: Vec<_> = item.as_object().expect("path item").keys().map(|m| m.to_uppercase()).collect();
                let allow: Vec<_> = order.iter().filter(|m| methods.iter().any(|x| x == *m)).copied().collect();
                (template.clone(), allow.join(", "))
            })
            .collect()
    });
    table.iter().find(|(template, _)| path_matches(template, path)).map(|(_, allow)| allow.clone())
}

/// Whether `path` fits `template`: `{name}` stands for one non-empty segment (or its middle, as in
/// `transcript.{format}`), a final `{tail}` for the rest of the path.
fn path_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some("{tail}"), Some(_)) if t.clone().next().is_none() => return true,
            (Some(ts), Some(ps)) => {
                let fits = match ts.split_once('{') {
                    None => ts == ps,
                    Some((pre, rest)) => {
                        let post = rest.split_once('}').map_or("", |(_, post)| post);
                        ps.len() > pre.len() + post.len() && ps.starts_with(pre) && ps.ends_with(post)
                    }
                };
                if !fits {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    tag = "ops",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json",
        body = Object)),
)]
#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| document().to_string());
    HttpResponse::Ok().content_type("application/json").body(body.as_str())
}

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(openapi_json);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use actix_web::App as WebApp;
    use actix_web::test as web_test;

    use super::*;

    /// The route modules' sources: what `configure` registers is read from them.
    const SOURCES: &[&str] = &[
        include_str!("../admin.rs"),
        include_str!("../hls.rs"),
        include_str!("../jobs.rs"),
        include_str!("../media.rs"),
        include_str!("../ops.rs"),
        include_str!("../speech.rs"),
        include_str!("../tus/mod.rs"),
        include_str!("../upload.rs"),
        include_str!("mod.rs"),
    ];
    const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

    /// (METHOD, path) of every route the sources register: `#[get("/p")]`-style handlers, and
    /// `web::resource("/p")` with the `.route(web::get()...)` lines that follow it.
    fn registered() -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for src in SOURCES {
            let mut resource: Option<String> = None;
            for raw in src.lines() {
                let line = raw.trim();
                for m in METHODS {
                    if let Some(rest) = line.strip_prefix(&format!("#[{m}(\"")) {
                        out.insert((m.to_uppercase(), rest.split('"').next().unwrap().to_string()));
                    }
                }
                if let Some((_, rest)) = line.split_once("web::resource(\"") {
                    resource = Some(rest.split('"').next().unwrap().to_string());
                } else if let (Some(path), Some(route)) = (&resource, line.strip_prefix(".route(web::")) {
                    let method = METHODS.iter().find(|m| route.starts_with(&format!("{m}()")));
                    let method = match method {
                        Some(m) => m.to_uppercase(),
                        None if route.starts_with("method(actix_web::http::Method::OPTIONS)") => "OPTIONS".into(),
                        None => panic!("unknown route line: {line}"),
                    };
                    out.insert((method, path.replace("{tail:.*}", "{tail}")));
                } else if raw.starts_with('}') {
                    resource = None; // the end of `configure`
                }
            }
        }
        out
    }

    fn documented(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("path item").keys().filter(|m| METHODS.contains(&m.as_str()));
                methods.map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect()
    }

    #[test]
    fn the_document_is_openapi_3_1_with_unique_operation_ids() {
        let doc = document();
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
        let mut ids = BTreeSet::new();
        for (_, item) in doc["paths"].as_object().unwrap().iter().chain(doc["webhooks"].as_object().unwrap()) {
            for (_, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().expect("every operation has an id");
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
        // Every reference points at a component that exists.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let pointer = r.strip_prefix('#').expect("local reference");
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        }
        assert_eq!(doc["webhooks"].as_object().unwrap().len(), crate::journal::hooks::EVENT_TYPES.len());
    }

    #[test]
    fn every_registered_route_is_documented_and_nothing_else() {
        let routes = registered();
        assert!(routes.len() > 30, "the route scan found too little: {routes:?}");
        assert_eq!(routes, documented(&document()));
    }

    #[test]
    fn request_paths_find_their_methods() {
        assert_eq!(allowed_methods("/v1/media").as_deref(), Some("GET, POST"));
        assert_eq!(allowed_methods("/v1/media/med_1/transcript.vtt").as_deref(), Some("GET"));
        assert_eq!(allowed_methods("/v1/uploads/upl_1").as_deref(), Some("HEAD, PATCH, DELETE, OPTIONS"));
        assert_eq!(allowed_methods("/hls/med_1/a64/seg-00001.m4s").as_deref(), Some("GET, HEAD, OPTIONS"));
        assert_eq!(allowed_methods("/v1/jobs/job_1/retry").as_deref(), Some("POST"));
        for none in ["/", "/v1", "/v1/media/", "/v1/jobs/a/b", "/v1/media/m/transcript.", "/nope"] {
            assert_eq!(allowed_methods(none), None, "{none}");
        }
    }

    #[test]
    fn public_routes_need_no_key() {
        let doc = document();
        assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
        for (method, path) in documented(&doc) {
            let op = &doc["paths"][&path][method.to_lowercase()];
            let public = path.starts_with("/hls/")
                || method == "OPTIONS"
                || path == "/healthz"
                || path == "/readyz"
                || path == "/openapi.json";
            assert_eq!(op["security"] == serde_json::json!([]), public, "{method} {path}: {}", op["security"]);
        }
    }

    /// Each documented operation reaches a handler (not the "no such route" fallback).
    #[actix_web::test]
    async fn every_documented_route_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(crate::journal::SqliteJournal::open(&dir.path().join("journal.db")).unwrap());
        let mut config = crate::config::Config::default();
        config.data.dir = dir.path().to_path_buf();
        let app =
            crate::app::App::with(journal, Arc::new(crate::clock::SystemClock), config, crate::engine::Registry::new());
        let blobs = Arc::new(crate::storage::LocalFs::new(dir.path().join("blobs")));
        let state = super::super::State::new(app, Arc::new(crate::metrics::Metrics::new()), blobs);
        let svc =
            web_test::init_service(WebApp::new().app_data(web::Data::new(state)).configure(super::super::configure))
                .await;
        for (method, path) in documented(&document()) {
            let uri =
                path.replace("{tail}", "master.m3u8").replace("{format}", "json").replace('{', "x").replace('}', "");
            let req = web_test::TestRequest::default()
                .method(method.parse().unwrap())
                .uri(&uri)
                .insert_header(("Tus-Resumable", "1.0.0"))
                .to_request();
            let resp = web_test::call_service(&svc, req).await;
            let status = resp.status();
            let body = web_test::read_body(resp).await;
            let body = String::from_utf8_lossy(&body);
            assert!(!body.contains("no such route") && status != 405, "{method} {uri}: {status} {body}");
        }
    }
}
