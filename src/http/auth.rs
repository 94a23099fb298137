//! The `Caller` extractor: every `/v1` handler that takes one requires a valid bearer key (or open
//! mode, see [`crate::auth`]), and is rate limited per tenant.
//!
//! Lookups are cached for a few seconds (a hit costs a hash and a map lookup, not a journal read),
//! so a key created by the CLI works at once and a revoked one stops within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::{ApiError, State};
use crate::auth::{Caller, hash_key};

/// How long a key lookup (found or not) is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// How long "the API is open" is reused (the first key created closes it within this).
const OPEN_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 10_000;

/// Per-process authentication state: caches and the per-tenant token buckets.
#[derive(Debug, Default)]
pub struct AuthState {
    keys: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
    open: Mutex<Option<(bool, Instant)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Playback policy per media (fixed at upload, so cached for good).
    pub playback: Mutex<HashMap<String, crate::app::PlaybackPolicy>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl AuthState {
    /// Takes one token from the tenant's bucket; `Err(seconds)` until one is back.
    pub fn take(&self, tenant: &str, rate: f64, burst: u32) -> Result<(), u32> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > CACHE_MAX {
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket { tokens: f64::from(burst), at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u32)
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The bearer token of a request: `Ok(None)` without an `Authorization` header.
fn bearer(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) else { return Ok(None) };
    let h = h.to_str().map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    let (scheme, token) = h.trim().split_once(' ').ok_or_else(|| unauthorized("use Authorization: Bearer <key>"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 512 {
        return Err(unauthorized("use Authorization: Bearer <key>"));
    }
    Ok(Some(token.to_string()))
}

async fn resolve(req: HttpRequest) -> Result<Caller, ApiError> {
    let state = req.app_data::<web::Data<State>>().cloned().expect("State is registered");
    let caller = match bearer(&req)? {
        None => {
            let cached = *state.auth.open.lock().unwrap_or_else(|p| p.into_inner());
            let open = match cached {
                Some((open, at)) if at.elapsed() < OPEN_TTL => open,
                _ => {
                    let open = super::blocking(&state, |app| app.is_open()).await?;
                    *state.auth.open.lock().unwrap_or_else(|p| p.into_inner()) = Some((open, Instant::now()));
                    open
                }
            };
            if !open {
                return Err(unauthorized("this route needs Authorization: Bearer <key>"));
            }
            Caller::operator(None)
        }
        Some(key) => {
            let hash = hash_key(&key);
            let cached = state.auth.keys.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
            let found = match cached {
                Some((c, at)) if at.elapsed() < CACHE_TTL => c,
                _ => {
                    let found = super::blocking(&state, move |app| app.authenticate(&key, None)).await?;
                    let mut keys = state.auth.keys.lock().unwrap_or_else(|p| p.into_inner());
                    if keys.len() >= CACHE_MAX {
                        keys.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                    }
                    keys.insert(hash, (found.clone(), Instant::now()));
                    found
                }
            };
            found.ok_or_else(|| unauthorized("unknown API key"))?
        }
    };
    let http = &state.app.config.http;
    if !caller.admin
        && let Err(wait) = state.auth.take(&caller.tenant, http.rate_per_tenant, http.burst_per_tenant)
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("tenant {} is over its request rate; retry in {wait} s", caller.tenant),
        )
        .retry_after(wait));
    }
    Ok(caller)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(resolve(req))
    }
}

/// The operator only: 403 for a tenant key.
pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.admin {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this route needs the operator key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let s = AuthState::default();
        for _ in 0..5 {
            assert_eq!(s.take("a", 1.0, 5), Ok(()));
        }
        assert_eq!(s.take("a", 1.0, 5), Err(1));
        assert_eq!(s.take("b", 1.0, 5), Ok(()), "buckets are per tenant");
        assert_eq!(s.take("a", 0.0, 0), Ok(()), "rate 0: no limit");
    }
}
