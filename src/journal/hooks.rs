//! Records of API keys, webhook endpoints and webhook deliveries (the outbox).
//!
//! The journal turns timeline events into deliveries inside the transaction that records the
//! event ([`EVENT_TYPES`]), so an event that happened is never announced zero times. The notifier
//! (`crate::webhooks`) delivers them, at least once, with a stable `webhook-id`.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Every webhook event type, in the order the API lists them.
pub const EVENT_TYPES: &[&str] =
    &["media.ready", "media.transcribed", "media.indexed", "job.succeeded", "job.failed", "job.dead"];

/// What a new tenant is created with: the SHA-256 (hex) of its API key and its signing secret.
#[derive(Debug, Clone, Default)]
pub struct TenantCredentials {
    pub api_key_hash: Option<String>,
    pub webhook_secret: Option<String>,
}

/// A tenant's (or, with `tenant: None`, the operator's) webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub tenant: Option<String>,
    pub url: String,
    /// Event types it hears; empty: all.
    pub events: Vec<String>,
    /// Error codes it hears; empty: any. When set, only events that carry one of these codes
    /// (`job.failed`, `job.dead`) are delivered.
    pub codes: Vec<String>,
    #[serde(skip_serializing)]
    pub secret: String,
    pub created_at: Millis,
}

impl Endpoint {
    /// Whether an event of `event_type` carrying `code` goes to this endpoint.
    pub fn hears(&self, event_type: &str, code: Option<&str>) -> bool {
        let type_ok = self.events.is_empty() || self.events.iter().any(|e| e == event_type);
        let code_ok = self.codes.is_empty() || code.is_some_and(|c| self.codes.iter().any(|x| x == c));
        type_ok && code_ok
    }
}

/// One message to one destination, as the notifier claims it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    pub tenant: String,
    pub job_id: String,
    pub endpoint_id: Option<String>,
    pub url: String,
    #[serde(skip_serializing)]
    pub secret: String,
    pub event_type: String,
    /// The exact body (the signature covers these bytes).
    pub payload: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub created_at: Millis,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why it failed (`None` on a 2xx).
    pub error: Option<String>,
    /// When to try again; `None` with an error: give up (`exhausted`).
    pub retry_at: Option<Millis>,
}

/// A delivery's state, for the API and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub job_id: String,
    pub endpoint_id: Option<String>,
    pub url: String,
    pub event_type: String,
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_at: Option<Millis>,
}
