//! The HTTP server's edge: the listener, and what happens to every request before and after its
//! route handler.
//!
//! - `Expect: 100-continue` is answered only for a body the server would take: a declared length
//!   over `upload.max-bytes` gets a JSON 413 and one that would leave less than
//!   `data.min-free-bytes` a JSON 507 *instead of* `100 Continue`, so the client never sends it.
//! - `HEAD` is served by the `GET` route (headers, no body) wherever only `GET` is routed.
//! - `OPTIONS` (CORS preflight) is answered for every route that does not answer it itself, and
//!   every `/v1` answer allows any origin (the API authenticates with a bearer header, never a
//!   cookie, so a wildcard origin exposes nothing).
//! - A query string that percent-decodes to invalid UTF-8 is a JSON 400 (the query extractor
//!   would otherwise replace the bad bytes silently).
//! - An error answer without a body (from the framework inside the app) gets the JSON error body.
//! - Requests are counted and timed by route pattern.
//!
//! What the framework answers before any of this runs keeps an empty body: a request line or
//! header it cannot parse (400), headers that do not arrive within 5 s (408), headers over its
//! size limit (431). Those are actix-http's own answers, written before a request exists.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpMessage as _, HttpResponse, ResponseError, web};

use super::{ApiError, State, configure, openapi};
use crate::metrics::Metrics;

/// How long the framework waits for a request's headers (408 beyond).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the server. It runs when awaited and stops through its handle; it does not listen for
/// signals itself (actix-server would stop the whole actix System after a signal, taking the
/// engine's arbiters down before they could drain), `lectern serve` does.
pub fn server(state: State, addr: &str) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    Ok(actix_server::Server::build()
        .workers(2)
        .shutdown_timeout(10)
        .disable_signals()
        .bind("lectern-http", addr, move || {
            let data = data.clone();
            let app = app(data.clone());
            let factory = actix_service::IntoServiceFactory::into_factory(app)
                .map_err(|err: actix_web::Error| err.error_response());
            actix_http::HttpService::build()
                .client_request_timeout(HEADER_TIMEOUT)
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .expect(actix_service::fn_service(move |req: actix_http::Request| {
                    let data = data.clone();
                    async move { expect_continue(&data, req) }
                }))
                .h1(actix_service::map_config(factory, |_| actix_web::dev::AppConfig::default()))
                .tcp()
        })?
        .run())
}

use actix_service::ServiceFactoryExt as _;

/// The application: state, middleware, routes.
fn app(
    data: web::Data<State>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = data.metrics.clone();
    actix_web::App::new()
        .app_data(data)
        .wrap_fn(|req, srv| {
            let fut = edge_in(req).map(|req| srv.call(req));
            async move {
                match fut {
                    Ok(fut) => fut.await.map(edge_out),
                    Err(resp) => Ok((*resp).map_into_right_body()),
                }
            }
        })
        .wrap(actix_web::middleware::Compress::default())
        .wrap_fn(move |req, srv| {
            let (started, metrics, method) = (std::time::Instant::now(), metrics.clone(), req.method().to_string());
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                record(&metrics, &res, &method, started);
                Ok(res)
            }
        })
        .configure(configure)
}

/// Requests by route pattern (not raw path: ids would explode the label set).
fn record<B>(metrics: &Arc<Metrics>, res: &ServiceResponse<B>, method: &str, started: std::time::Instant) {
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16().to_string();
    let labels = [("route", route.as_str()), ("method", method), ("status", status.as_str())];
    metrics.inc(crate::metrics::HTTP_REQUESTS, &labels);
    metrics.observe(crate::metrics::HTTP_SECONDS, &[("route", route.as_str())], started.elapsed().as_secs_f64());
}

/// The request side: answers preflights and bad queries itself, turns `HEAD` into `GET` where only
/// `GET` is routed (actix-http still sends no body: it decided that from the request line).
fn edge_in(mut req: ServiceRequest) -> Result<ServiceRequest, Box<ServiceResponse<BoxBody>>> {
    if !query_is_utf8(req.query_string()) {
        let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query string is not valid UTF-8");
        return Err(Box::new(req.into_response(e.error_response())));
    }
    let method = req.method().clone();
    if method != Method::HEAD && method != Method::OPTIONS {
        return Ok(req);
    }
    let Some(allowed) = openapi::allowed_methods(req.path()) else { return Ok(req) };
    let routed = |m: &str| allowed.split(", ").any(|a| a == m);
    if method == Method::HEAD && routed("GET") && !routed("HEAD") {
        req.head_mut().method = Method::GET;
    } else if method == Method::OPTIONS && !routed("OPTIONS") {
        let resp = preflight(&allowed);
        return Err(Box::new(req.into_response(resp)));
    }
    Ok(req)
}

/// A CORS preflight answer for a route that has no handler of its own for it.
fn preflight(allowed: &str) -> HttpResponse {
    let methods = format!("{allowed}, OPTIONS");
    HttpResponse::NoContent()
        .insert_header((header::ALLOW, methods.clone()))
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, methods))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Authorization, Content-Type, Idempotency-Key, Range, If-None-Match",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

/// The answer side: CORS on `/v1`, and a JSON body for an error answer that has none.
fn edge_out<B: MessageBody + 'static>(mut res: ServiceResponse<B>) -> ServiceResponse<actix_web::body::EitherBody<B>> {
    if res.request().path().starts_with("/v1/") {
        let h = res.headers_mut();
        if !h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, header::HeaderValue::from_static("*"));
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                header::HeaderValue::from_static("Retry-After, Location, Content-Range, ETag"),
            );
        }
    }
    let status = res.status();
    let bodiless = matches!(res.response().body().size(), actix_web::body::BodySize::Sized(0));
    if (status.is_client_error() || status.is_server_error()) && bodiless {
        let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace(' ', "_");
        let e =
            ApiError::new(status, &reason, format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")));
        let (req, old) = res.into_parts();
        let mut fresh = e.error_response();
        for (name, value) in old.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return ServiceResponse::new(req, fresh).map_into_right_body();
    }
    res.map_into_left_body()
}

/// Whether every `%XX` sequence of `query` decodes to UTF-8 (with `+` and plain bytes as they are).
pub fn query_is_utf8(query: &str) -> bool {
    if !query.contains('%') {
        return true;
    }
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out.split(|&b| b == b'&').all(|pair| std::str::from_utf8(pair).is_ok())
}

/// `Expect: 100-continue`: refuse, before the body is sent, what would be refused after it.
fn expect_continue(
    state: &web::Data<State>,
    req: actix_http::Request,
) -> Result<actix_http::Request, actix_http::Response<BoxBody>> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let Some(len) = declared else { return Ok(req) };
    // Over the upload limit is too large anywhere; the disk floor concerns uploads only.
    let upload = req.path() == "/v1/media" || req.path().starts_with("/v1/uploads/");
    let max = state.app.config.upload.max_bytes;
    let refusal = if len > max {
        Some(super::upload::too_large(max))
    } else if upload {
        state.space.admit(len).err()
    } else {
        None
    };
    match refusal {
        None => Ok(req),
        Some(e) => {
            let resp: actix_http::Response<BoxBody> = e.close().error_response().into();
            Err(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_must_decode_to_utf8() {
        assert!(query_is_utf8(""));
        assert!(query_is_utf8("title=Sunday%20%E2%80%94%20grace&k=10"));
        assert!(query_is_utf8("q=100%25"));
        assert!(query_is_utf8("q=%zz"), "a stray percent sign stays a character");
        assert!(!query_is_utf8("title=%FF%FE"));
        assert!(!query_is_utf8("title=%C3"));
    }
}
