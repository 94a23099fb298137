//! Application commands: what the CLI and the HTTP API both do, in one place. Neither face opens
//! the database itself; both call these.

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::actors::Engine;
use crate::actors::speech::Models;
use crate::clock::{Millis, SharedClock, SystemClock};
use crate::config::Config;
use crate::engine::Registry;
use crate::index::Index;
use crate::journal::{
    self, DEFAULT_TENANT, Enqueued, Event, JobFilter, JobRecord, JobState, Journal, NewJob, PauseScope, QueueStat,
    SqliteJournal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("journal unavailable: {0}")]
    Journal(String),
    /// A model or the index is not available (`code` names why, e.g. `model_missing`).
    #[error("{message}")]
    Unavailable { code: String, message: String },
}

impl Error {
    /// The snake_case code of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::Invalid(_) => "invalid_request",
            Error::Conflict(_) => "conflict",
            Error::Journal(_) => "journal_unavailable",
            Error::Unavailable { .. } => "unavailable",
        }
    }
}

impl From<journal::Error> for Error {
    fn from(e: journal::Error) -> Self {
        match e {
            journal::Error::NotFound { what, id } => Error::NotFound { what, id },
            journal::Error::Conflict(m) => Error::Conflict(m),
            journal::Error::Invalid(m) => Error::Invalid(m),
            e => Error::Journal(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a caller asks to enqueue.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    pub kind: String,
    pub tenant: Option<String>,
    pub media_id: Option<String>,
    pub params: Option<serde_json::Value>,
    pub batch: Option<String>,
    pub idempotency_key: Option<String>,
    /// Create this media record in the same transaction as the job.
    pub new_media: Option<journal::NewMedia>,
}

/// Queues and stages, for `queues list`.
#[derive(Debug, Clone, Serialize)]
pub struct QueuesView {
    pub queues: Vec<QueueRow>,
    pub stages: Vec<StageRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRow {
    #[serde(flatten)]
    pub stat: QueueStat,
    pub oldest_age_s: Option<f64>,
    pub paused: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRow {
    pub stage: String,
    pub workers: usize,
    pub ready: u64,
    pub running: u64,
    pub paused: bool,
}

/// The outcome of one item of a bulk action.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<journal::ErrorInfo>,
}

/// A search (`GET /v1/search`, `lectern search`).
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub tenant: Option<String>,
    pub query: String,
    pub k: usize,
    pub mode: crate::index::Mode,
    pub media_id: Option<String>,
}

/// One search result, as the contract shapes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub media_id: String,
    pub title: Option<String>,
    pub start_s: f64,
    pub end_s: f64,
    pub text: String,
    pub score: f64,
    pub play_url: String,
}

#[derive(Clone)]
pub struct App {
    pub journal: Arc<dyn Journal>,
    pub clock: SharedClock,
    pub config: Arc<Config>,
    pub registry: Registry,
    /// Present inside `lectern serve`: told to look for work after each change.
    pub engine: Option<Engine>,
    /// The models of this process (loaded on first use).
    pub models: Arc<Models>,
    /// The search index (`index.sqlite` in the data dir), when opened.
    pub index: Option<Arc<Index>>,
    /// Signs playback tokens of `signed` media (see [`crate::auth`]).
    pub playback_key: Arc<[u8; 32]>,
}

/// A tenant just created: its key and secret are shown this once.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedTenant {
    pub tenant: String,
    pub name: String,
    pub api_key: String,
    pub webhook_secret: String,
}

/// A media's playback policy: `public` HLS URLs, or `signed` ones that expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlaybackPolicy {
    #[default]
    Public,
    Signed,
}

impl PlaybackPolicy {
    pub fn of(meta: &serde_json::Value) -> Self {
        match meta.get("playback_policy").and_then(|p| p.as_str()) {
            Some("signed") => Self::Signed,
            _ => Self::Public,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "public" => Ok(Self::Public),
            "signed" => Ok(Self::Signed),
            other => Err(Error::Invalid(format!("playback_policy must be public or signed, not {other:?}"))),
        }
    }
}

impl App {
    /// Opens the embedded journal under the configured data dir.
    pub fn open(config: Config) -> Result<Self> {
        let journal = SqliteJournal::open(&config.journal_path())?;
        let index = Index::open(&config.index_path()).map_err(|e| Error::Journal(e.to_string()))?;
        let (models, index) = (Arc::new(Models::new(&config.models)), Arc::new(index));
        let registry = Registry::builtin(&config, &models, &index);
        let key = crate::auth::load_playback_key(&config.data.dir)
            .map_err(|e| Error::Journal(format!("cannot read or create the playback key: {e}")))?;
        let mut app = Self::with(Arc::new(journal), Arc::new(SystemClock), config, registry);
        app.models = models;
        app.index = Some(index);
        app.playback_key = Arc::new(key);
        app.ensure_default_secret()?;
        Ok(app)
    }

    pub fn with(journal: Arc<dyn Journal>, clock: SharedClock, config: Config, registry: Registry) -> Self {
        let models = Arc::new(Models::new(&config.models));
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        Self {
            journal,
            clock,
            config: Arc::new(config),
            registry,
            engine: None,
            models,
            index: None,
            playback_key: Arc::new(key),
        }
    }

    /// The `default` tenant signs its webhooks too (made once, on first open of a data dir).
    fn ensure_default_secret(&self) -> Result<()> {
        if self.journal.webhook_secret(DEFAULT_TENANT)?.is_none() {
            self.journal.set_webhook_secret_if_unset(DEFAULT_TENANT, &crate::auth::new_webhook_secret())?;
        }
        Ok(())
    }

    /// Creates a tenant with a fresh API key and webhook secret (returned this once).
    pub fn create_tenant(&self, name: &str) -> Result<CreatedTenant> {
        let (api_key, api_key_hash) = crate::auth::new_api_key();
        let webhook_secret = crate::auth::new_webhook_secret();
        let creds = journal::hooks::TenantCredentials {
            api_key_hash: Some(api_key_hash),
            webhook_secret: Some(webhook_secret.clone()),
        };
        let t = self.journal.create_tenant_with(name, &creds, self.now())?;
        Ok(CreatedTenant { tenant: t.id, name: t.name, api_key, webhook_secret })
    }

    /// Whether the API is open (no operator key, no tenant key): see [`crate::auth`].
    pub fn is_open(&self) -> Result<bool> {
        Ok(self.config.admin.key.is_none() && !self.journal.any_api_key()?)
    }

    /// Who a bearer key belongs to: `Ok(None)` for no such key. The operator names the tenant it
    /// acts for with `acting_for` (id or name).
    pub fn authenticate(&self, key: &str, acting_for: Option<&str>) -> Result<Option<crate::auth::Caller>> {
        if let Some(admin) = &self.config.admin.key
            && crate::auth::constant_time_eq(
                crate::auth::hash_key(admin).as_bytes(),
                crate::auth::hash_key(key).as_bytes(),
            )
        {
            let tenant = acting_for.map(|t| self.tenant_id(Some(t))).transpose()?;
            return Ok(Some(crate::auth::Caller::operator(tenant)));
        }
        Ok(self.journal.tenant_by_key_hash(&crate::auth::hash_key(key))?.map(|t| crate::auth::Caller::tenant(t.id)))
    }

    /// The HLS master playlist URL of a media (path only), signed when its policy says so.
    pub fn hls_url(&self, media_id: &str, meta: &serde_json::Value) -> String {
        match PlaybackPolicy::of(meta) {
            PlaybackPolicy::Public => format!("/hls/{media_id}/master.m3u8"),
            PlaybackPolicy::Signed => {
                let ttl = self.config.http.playback_token_ttl.as_secs() as i64;
                let exp = self.now() / 1000 + ttl;
                let token = crate::auth::playback_token(&self.playback_key, media_id, exp);
                format!("/hls/{media_id}/{token}/master.m3u8")
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data.dir
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn wake(&self) {
        if let Some(e) = &self.engine {
            e.wake();
        }
    }

    /// Resolves a tenant given by id or name (`None`: the default tenant).
    /// Searches the tenant's transcripts; results carry the media title and a `play_url` that
    /// starts playback at the passage (`#t=<start_s>`, a W3C media fragment).
    pub fn search(&self, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let index = self.index.as_ref().ok_or_else(|| Error::Unavailable {
            code: "index_unavailable".into(),
            message: "the search index is not open in this process".into(),
        })?;
        let tenant = self.tenant_id(req.tenant.as_deref())?;
        if req.query.trim().is_empty() {
            return Err(Error::Invalid("the query is empty".into()));
        }
        if req.query.chars().count() > 2000 {
            return Err(Error::Invalid("the query is longer than 2000 characters".into()));
        }
        let vector = match req.mode {
            crate::index::Mode::Lexical => None,
            _ => {
                let e = self
                    .models
                    .embedder()
                    .map_err(|e| Error::Unavailable { code: e.code.clone(), message: e.message.clone() })?;
                let mut v = e
                    .embed(&[req.query.as_str()])
                    .map_err(|e| Error::Unavailable { code: e.code().into(), message: e.to_string() })?;
                v.pop()
            }
        };
        let q = crate::index::Query {
            tenant: &tenant,
            text: &req.query,
            vector: vector.as_deref(),
            k: req.k,
            mode: req.mode,
            media_id: req.media_id.as_deref(),
        };
        let hits = index.search(&q).map_err(|e| Error::Journal(e.to_string()))?;
        // Per media: its title and HLS URL (signed when its playback policy says so).
        let mut media: std::collections::HashMap<String, (Option<String>, String)> = Default::default();
        let mut out = Vec::with_capacity(hits.len());
        for h in hits {
            if !media.contains_key(&h.media_id) {
                let m = self.journal.media(&h.media_id)?;
                let url = self.hls_url(&h.media_id, m.as_ref().map(|m| &m.meta).unwrap_or(&serde_json::Value::Null));
                media.insert(h.media_id.clone(), (m.and_then(|m| m.title), url));
            }
            let start = (h.start_s * 10.0).floor() / 10.0;
            let (title, url) = media[&h.media_id].clone();
            out.push(SearchHit {
                play_url: format!("{url}#t={start}"),
                title,
                media_id: h.media_id,
                start_s: h.start_s,
                end_s: h.end_s,
                text: h.text,
                score: h.score,
            });
        }
        Ok(out)
    }

    pub fn tenant_id(&self, tenant: Option<&str>) -> Result<String> {
        let t = tenant.unwrap_or(DEFAULT_TENANT);
        self.journal.tenant(t)?.map(|t| t.id).ok_or_else(|| Error::NotFound { what: "tenant", id: t.to_string() })
    }

    pub fn enqueue(&self, req: EnqueueRequest) -> Result<Enqueued> {
        let kind = self.registry.job_kind(&req.kind).ok_or_else(|| {
            let known: Vec<_> = self.registry.kinds().map(|k| k.name.as_str()).collect();
            Error::Invalid(format!("unknown job kind {:?} (known: {})", req.kind, known.join(", ")))
        })?;
        let job = NewJob {
            tenant: self.tenant_id(req.tenant.as_deref())?,
            media_id: req.media_id,
            kind: kind.name.clone(),
            params: req.params.unwrap_or_else(|| serde_json::json!({})),
            batch: req.batch,
            idempotency_key: req.idempotency_key,
            steps: kind.steps.clone(),
            new_media: req.new_media,
        };
        let e = self.journal.enqueue(job, self.now())?;
        self.wake();
        Ok(e)
    }

    pub fn jobs(
        &self,
        state: Option<JobState>,
        tenant: Option<&str>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<JobRecord>> {
        let tenant = tenant.map(|t| self.tenant_id(Some(t))).transpose()?;
        let filter = JobFilter { state, tenant, before_seq: before, limit: Some(limit), ..Default::default() };
        Ok(self.journal.jobs(&filter)?)
    }

    pub fn job(&self, id: &str) -> Result<(JobRecord, Vec<Event>)> {
        let job = self.journal.job(id)?.ok_or_else(|| Error::NotFound { what: "job", id: id.to_string() })?;
        let events = self.journal.events(id)?;
        Ok((job, events))
    }

    /// The newest job of a media item.
    pub fn latest_job_of_media(&self, media_id: &str) -> Result<Option<JobRecord>> {
        let filter = JobFilter { media_id: Some(media_id.to_string()), limit: Some(1), ..Default::default() };
        Ok(self.journal.jobs(&filter)?.into_iter().next())
    }

    pub fn retry(&self, id: &str) -> Result<JobRecord> {
        let j = self.journal.retry_job(id, self.now())?;
        self.wake();
        Ok(j)
    }

    pub fn cancel(&self, id: &str) -> Result<JobRecord> {
        let j = self.journal.cancel_job(id, self.now())?;
        self.wake();
        Ok(j)
    }

    /// Applies `f` to each id, collecting per-item results (a bulk action never stops half-way).
    pub fn each(&self, ids: &[String], f: impl Fn(&Self, &str) -> Result<JobRecord>) -> Vec<ItemResult> {
        ids.iter()
            .map(|id| match f(self, id) {
                Ok(j) => ItemResult { id: id.clone(), ok: true, state: Some(j.state), error: None },
                Err(e) => ItemResult {
                    id: id.clone(),
                    ok: false,
                    state: None,
                    error: Some(journal::ErrorInfo::new(e.code(), e.to_string())),
                },
            })
            .collect()
    }

    /// Every job in `state` (of one tenant, if given), oldest first.
    pub fn ids_in_state(&self, state: JobState, tenant: Option<&str>) -> Result<Vec<String>> {
        let tenant = tenant.map(|t| self.tenant_id(Some(t))).transpose()?;
        let filter = JobFilter { state: Some(state), tenant, ..Default::default() };
        Ok(self.journal.jobs(&filter)?.into_iter().rev().map(|j| j.id).collect())
    }

    pub fn set_paused(&self, scope: PauseScope, paused: bool) -> Result<PauseScope> {
        let scope = match scope {
            PauseScope::Tenant(t) => PauseScope::Tenant(self.tenant_id(Some(&t))?),
            PauseScope::Stage(s) => {
                if !self.registry.stages().any(|(n, _)| *n == s) && !self.config.stages.contains_key(&s) {
                    let known: Vec<_> = self.registry.stages().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::Invalid(format!("unknown stage {s:?} (known: {})", known.join(", "))));
                }
                PauseScope::Stage(s)
            }
            PauseScope::Queue(q) => {
                if !q.starts_with("batch:") && !q.starts_with("tenant:") {
                    return Err(Error::Invalid(format!("unknown queue {q:?} (batch:<id> or tenant:<id>)")));
                }
                PauseScope::Queue(q)
            }
        };
        self.journal.set_paused(&scope, paused, self.now())?;
        self.wake();
        Ok(scope)
    }

    pub fn queues(&self) -> Result<QueuesView> {
        let now = self.now();
        let pauses = self.journal.pauses()?;
        let stats = self.journal.queue_stats(now)?;
        let stage_paused = |s: &str| pauses.contains(&PauseScope::Stage(s.to_string()));
        let tenant_paused = |t: &str| pauses.contains(&PauseScope::Tenant(t.to_string()));
        let queue_paused = |q: &str| pauses.contains(&PauseScope::Queue(q.to_string()));
        let queues = stats
            .iter()
            .map(|s| QueueRow {
                stat: s.clone(),
                oldest_age_s: s.oldest_ready_at.map(|t| (now - t).max(0) as f64 / 1e3),
                paused: tenant_paused(&s.tenant) || stage_paused(&s.stage) || queue_paused(&s.queue),
            })
            .collect();
        let mut names: Vec<String> = self.registry.stages().map(|(n, _)| n.clone()).collect();
        names.extend(stats.iter().map(|s| s.stage.clone()));
        names.sort();
        names.dedup();
        let stages = names
            .into_iter()
            .map(|n| StageRow {
                workers: self.config.workers_for(&n),
                ready: stats.iter().filter(|s| s.stage == n).map(|s| s.ready).sum(),
                running: stats.iter().filter(|s| s.stage == n).map(|s| s.running).sum(),
                paused: stage_paused(&n),
                stage: n,
            })
            .collect();
        Ok(QueuesView { queues, stages })
    }
}
