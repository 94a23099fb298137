//! The JSON bodies of the API, described for the OpenAPI document (`src/http/openapi`).
//!
//! Handlers build most bodies with `json!`, so these types are descriptions only: nothing
//! constructs them. They name the contract's fields and their types; every object still admits
//! fields it does not list (`additionalProperties` is left open), so adding a field to an answer
//! never breaks a client that validates against the document. Keys the handlers always write are
//! `required`, including those whose value may be `null`.
#![allow(dead_code)]

mod admin;

use utoipa::ToSchema;

// The states and the playback policy are the application's own types (they derive `ToSchema`).
pub use crate::app::PlaybackPolicy;
pub use crate::journal::{JobState, StepState};

pub use admin::*;

/// The body of every error answer (4xx and 5xx).
#[derive(ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "job not found: job_42"}}))]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// A machine-readable code and a human sentence.
#[derive(ToSchema)]
pub struct ErrorInfo {
    /// `snake_case_reason`, stable for programs to match on.
    #[schema(pattern = "^[a-z][a-z0-9_]*$", example = "not_found")]
    pub code: String,
    pub message: String,
}

/// One step of a job (`probe`, `transcode`, `transcribe`, `embed`, ...).
#[derive(ToSchema)]
pub struct Step {
    pub name: String,
    /// The worker pool that runs it.
    pub stage: String,
    pub state: StepState,
    /// Attempts made in total.
    pub attempts: u32,
    /// Steps that must succeed first.
    pub depends_on: Vec<String>,
    #[schema(format = DateTime, required = true)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required = true)]
    pub finished_at: Option<String>,
    /// When a failed step runs again.
    #[schema(format = DateTime, required = true)]
    pub retry_at: Option<String>,
    /// Where the step's output is stored.
    #[schema(required = true)]
    pub output_ref: Option<String>,
    #[schema(required = true)]
    pub error: Option<ErrorInfo>,
}

/// A job: an ingest of an upload, or a reprocess of one step.
#[derive(ToSchema)]
pub struct Job {
    pub id: String,
    pub tenant: String,
    #[schema(required = true)]
    pub media_id: Option<String>,
    /// `ingest` or `reprocess` (other kinds exist in test builds).
    pub kind: String,
    pub state: JobState,
    pub queue: String,
    #[schema(required = true)]
    pub batch: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime, required = true)]
    pub finished_at: Option<String>,
    pub steps: Vec<Step>,
}

/// A job with its timeline and its webhook deliveries.
#[derive(ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub events: Vec<JobEvent>,
    pub webhooks: Vec<Delivery>,
}

/// One entry of a job's append-only timeline.
#[derive(ToSchema)]
pub struct JobEvent {
    pub seq: i64,
    /// Unix time in milliseconds.
    pub at: i64,
    #[schema(required = true)]
    pub step: Option<String>,
    #[schema(required = true)]
    pub attempt: Option<u32>,
    /// `enqueued`, `started`, `succeeded`, `failed`, `retry_scheduled`, `dead`, `cancelled`, ...
    pub kind: String,
    #[schema(required = true)]
    pub error: Option<ErrorInfo>,
    #[schema(value_type = Option<Value>, required = true)]
    pub detail: Option<()>,
}

/// A webhook message to one destination, and how its delivery goes.
#[derive(ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header of every attempt.
    pub id: String,
    pub job_id: String,
    /// `null`: the upload's `callback_url`.
    #[schema(required = true)]
    pub endpoint_id: Option<String>,
    pub url: String,
    pub event_type: String,
    /// `pending`, `delivered`, `exhausted`, ...
    pub state: String,
    pub attempts: u32,
    #[schema(required = true)]
    pub last_status: Option<u16>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Unix time in milliseconds of the next attempt.
    #[schema(required = true)]
    pub next_at: Option<i64>,
}

/// A page of jobs, newest first.
#[derive(ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<i64>,
}

/// Where to fetch what an upload became.
#[derive(ToSchema)]
pub struct AcceptedLinks {
    pub media: String,
    pub job: String,
    /// The HLS master playlist (signed for `signed` media).
    pub hls: String,
    pub waveform: String,
}

/// An accepted upload: on disk durably, its ingest job committed.
#[derive(ToSchema)]
pub struct Accepted {
    pub media_id: String,
    pub job_id: String,
    /// An earlier upload with the same `Idempotency-Key` (this one was not stored again).
    pub existing: bool,
    pub links: AcceptedLinks,
}

#[derive(ToSchema)]
pub struct TranscriptLinks {
    pub json: String,
    pub vtt: String,
    pub srt: String,
}

#[derive(ToSchema)]
pub struct MediaLinks {
    pub hls: String,
    pub waveform: String,
    pub transcripts: TranscriptLinks,
    #[schema(required = true)]
    pub job: Option<String>,
}

/// Title/artist/album/date tags found in the file.
#[derive(ToSchema)]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
    pub date: Option<String>,
}

/// A media item: what its upload was, what the pipeline found out, where to get things. The
/// probe's fields are `null` until its ingest job has probed the file.
#[derive(ToSchema)]
pub struct Media {
    pub id: String,
    pub tenant: String,
    #[schema(required = true)]
    pub title: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The state of its newest job.
    pub state: JobState,
    #[schema(required = true)]
    pub job_id: Option<String>,
    #[schema(required = true)]
    pub duration_s: Option<f64>,
    #[schema(required = true)]
    pub codec: Option<String>,
    #[schema(required = true)]
    pub container: Option<String>,
    #[schema(required = true)]
    pub sample_rate: Option<u32>,
    #[schema(required = true)]
    pub channels: Option<u32>,
    #[schema(required = true)]
    pub bits_per_sample: Option<u32>,
    #[schema(required = true)]
    pub tags: Option<Tags>,
    #[schema(required = true)]
    pub has_cover_art: Option<bool>,
    /// Loudness measured and applied by the transcode step (EBU R128).
    #[schema(value_type = Option<Object>, required = true)]
    pub loudness: Option<()>,
    /// Size, hash, content type and file name of the upload.
    #[schema(value_type = Option<Object>, required = true)]
    pub upload: Option<()>,
    pub playback_policy: PlaybackPolicy,
    pub links: MediaLinks,
}

#[derive(ToSchema)]
pub struct MediaList {
    pub media: Vec<Media>,
}

/// `POST /v1/media` as a form: the file and optional text fields.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The audio file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub title: Option<String>,
    /// A URL that hears this upload's webhook events.
    pub callback_url: Option<String>,
    pub playback_policy: Option<PlaybackPolicy>,
}

/// One passage found by a search.
#[derive(ToSchema)]
pub struct SearchHit {
    pub media_id: String,
    #[schema(required = true)]
    pub title: Option<String>,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    pub score: f64,
    /// The HLS URL with `#t=<start_s>`.
    pub play_url: String,
}

#[derive(ToSchema)]
pub struct SearchResults {
    pub results: Vec<SearchHit>,
}

/// Raw bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(Vec<u8>);

/// Waveform peaks in the BBC audiowaveform JSON format (version 2, one channel, 8-bit).
#[derive(ToSchema)]
pub struct Waveform {
    pub version: u32,
    pub channels: u32,
    pub sample_rate: u32,
    pub samples_per_pixel: u32,
    pub bits: u32,
    /// Min/max pairs.
    pub length: u64,
    /// `length` × (min, max), each in -128..=127.
    pub data: Vec<i32>,
}

/// A transcript in the podcast namespace's JSON format.
#[derive(ToSchema)]
pub struct Transcript {
    pub version: String,
    #[schema(value_type = Vec<Object>)]
    pub segments: Vec<()>,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptFormat {
    Json,
    Vtt,
    Srt,
}

#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Hybrid,
    Vector,
    Lexical,
}

/// The tus protocol version.
#[derive(ToSchema)]
pub enum TusVersion {
    #[serde(rename = "1.0.0")]
    V1,
}

/// Headers of tus requests about an existing upload.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusHeaders {
    #[param(rename = "Tus-Resumable", value_type = TusVersion)]
    pub tus_resumable: (),
}

/// Headers of a tus creation request.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusCreateHeaders {
    #[param(rename = "Tus-Resumable", value_type = TusVersion)]
    pub tus_resumable: (),
    /// The file's size in bytes (deferred length is not supported).
    #[param(rename = "Upload-Length")]
    pub upload_length: u64,
    /// `key base64value` pairs, comma separated: `filename`, `filetype`, `title`, `callback_url`,
    /// `playback_policy`.
    #[param(rename = "Upload-Metadata")]
    pub upload_metadata: Option<String>,
}

/// Headers of a tus PATCH.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TusPatchHeaders {
    #[param(rename = "Tus-Resumable", value_type = TusVersion)]
    pub tus_resumable: (),
    /// Where these bytes go: the server's current offset.
    #[param(rename = "Upload-Offset")]
    pub upload_offset: u64,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct UploadHeaders {
    /// Repeating an upload with the same key within 24 h answers the first one's ids (visible
    /// ASCII, at most 255 characters).
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    pub idempotency_key: Option<String>,
}

#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct RangeHeader {
    /// A byte range (`bytes=0-1023`); other units are ignored.
    #[param(rename = "Range")]
    pub range: Option<String>,
}
