//! Bodies of the operator routes (tenants, queues), webhook endpoints and health.

use utoipa::ToSchema;

use super::ErrorInfo;

/// Unicode white space, as `char::is_whitespace` (a regular expression class body).
macro_rules! ws {
    () => {
        r"\t\n\x0b\x0c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// Control characters: C0, DEL, C1 (a regular expression class body).
macro_rules! ctl {
    () => {
        r"\x00-\x1f\x7f-\x9f"
    };
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    #[schema(schema_with = tenant_name)]
    pub name: String,
}

fn tenant_name() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("1 to 100 characters once surrounding white space is trimmed, none a control character."))
        .pattern(Some(TENANT_NAME))
        .build()
}

/// What the journal accepts as a tenant name: Unicode white space (what `str::trim` removes) around
/// 1 to 100 characters that start and end with neither white space nor a control character.
const TENANT_NAME: &str =
    concat!("^[", ws!(), "]*[^", ws!(), ctl!(), "](?:[^", ctl!(), "]{0,98}[^", ws!(), ctl!(), "])?[", ws!(), "]*$");

/// A tenant just created: its API key and webhook secret are shown this once.
#[derive(ToSchema)]
pub struct CreatedTenant {
    pub tenant: String,
    pub name: String,
    pub api_key: String,
    #[schema(pattern = "^whsec_")]
    pub webhook_secret: String,
}

#[derive(ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// Queue depth of one queue (a tenant's, or a batch's) at one stage.
#[derive(ToSchema)]
pub struct QueueRow {
    pub queue: String,
    pub tenant: String,
    pub stage: String,
    pub ready: u64,
    pub waiting_retry: u64,
    pub running: u64,
    /// Unix time in milliseconds.
    #[schema(required = true)]
    pub oldest_ready_at: Option<i64>,
    #[schema(required = true)]
    pub oldest_age_s: Option<f64>,
    pub paused: bool,
}

#[derive(ToSchema)]
pub struct StageRow {
    pub stage: String,
    pub workers: u32,
    pub ready: u64,
    pub running: u64,
    pub paused: bool,
}

#[derive(ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueRow>,
    pub stages: Vec<StageRow>,
}

/// One stage, one tenant or one batch: exactly one of the three.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum PauseRequest {
    Stage(PauseStage),
    Tenant(PauseTenant),
    Batch(PauseBatch),
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseStage {
    /// A stage the server runs (`probe`, `transcode`, `transcribe`, `embed`, `notify`, ...).
    pub stage: String,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseTenant {
    /// A tenant id or name.
    pub tenant: String,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseBatch {
    /// A batch id (a reprocess run).
    pub batch: String,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseKind {
    Stage,
    Tenant,
    Queue,
}

#[derive(ToSchema)]
pub struct PauseScope {
    pub scope: PauseKind,
    pub name: String,
}

#[derive(ToSchema)]
pub struct Paused {
    pub paused: bool,
    pub scope: PauseScope,
}

#[derive(ToSchema)]
#[serde(rename = "webhook_event_type")]
pub enum EventType {
    #[serde(rename = "media.ready")]
    MediaReady,
    #[serde(rename = "media.transcribed")]
    MediaTranscribed,
    #[serde(rename = "media.indexed")]
    MediaIndexed,
    #[serde(rename = "job.succeeded")]
    JobSucceeded,
    #[serde(rename = "job.failed")]
    JobFailed,
    #[serde(rename = "job.dead")]
    JobDead,
}

/// A webhook endpoint to register.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// A public `http(s)` URL (private addresses only when `LECTERN_WEBHOOK_ALLOW` lists them).
    pub url: String,
    /// Event types it hears; empty or absent: all.
    #[schema(max_items = 32)]
    pub events: Option<Vec<EventType>>,
    /// Error codes it hears (`job.failed`, `job.dead` carrying one of them); empty: any.
    #[schema(max_items = 32)]
    pub codes: Option<Vec<String>>,
    /// The operator only: a tenant id or name, or `*` for every tenant.
    pub tenant: Option<String>,
}

/// A registered webhook endpoint.
#[derive(ToSchema)]
pub struct Endpoint {
    pub id: String,
    /// The tenant it hears, or `*`.
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub codes: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A new endpoint with its signing secret, shown this once.
#[derive(ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    #[schema(pattern = "^whsec_")]
    pub secret: String,
}

#[derive(ToSchema)]
pub struct EndpointList {
    pub webhooks: Vec<Endpoint>,
}

#[derive(ToSchema)]
pub struct Health {
    pub status: String,
}

/// Each check of readiness, by name.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// `ok`, or `failed: <why>`.
    pub journal: String,
    /// `ok` or `not running`.
    pub engine: String,
    /// `ok`, `off` or `not loaded`.
    pub models: String,
    /// `ok`, `low` or `unknown`.
    pub disk: String,
    #[schema(required = true)]
    pub disk_free_bytes: Option<u64>,
    pub disk_floor_bytes: u64,
}

/// Not ready: the error body, with every check.
#[derive(ToSchema)]
pub struct NotReady {
    pub error: ErrorInfo,
    pub checks: Readiness,
}

/// The scheduler's snapshot: stages, running steps, commits in flight.
#[derive(ToSchema)]
pub struct PipelineSnapshot {
    /// `null` when the engine does not answer.
    #[schema(value_type = Option<Object>, required = true)]
    pub scheduler: Option<()>,
}
