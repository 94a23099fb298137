//! `lectern reprocess --step transcode|transcribe|embed ...`: re-runs one stage (and what depends
//! on it) for many media, as one batch with its own queue.
//!
//! - Fair: the batch is its own queue, served round-robin with live uploads, so a 1 000-item batch
//!   never holds a fresh upload back by more than about one step.
//! - Resumable: each media's job carries the idempotency key `<batch>:<media>`, and a run finds the
//!   unfinished batch of the same step and tenant and continues it. Running it again after an
//!   interruption enqueues only what is missing and then follows the same batch.
//! - Controllable as a whole: `lectern queues pause|resume --batch B`, `lectern jobs cancel --batch B`;
//!   `--detach` returns at once.
//! - Re-embedding swaps a media's chunks in one transaction: search never sees half of a media.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::output::print_json;
use super::{CliResult, Failure};
use crate::app::{App, EnqueueRequest};
use crate::journal::{JobFilter, JobState, Media};
use crate::storage::{BlobStore, LocalFs};

#[derive(Debug, Args)]
pub struct ReprocessArgs {
    /// The stage to run again: transcode, transcribe (then embed) or embed.
    #[arg(long, value_parser = ["transcode", "transcribe", "embed"])]
    pub step: String,
    /// Tenant (default: the default tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only these media (repeatable).
    #[arg(long = "media", value_name = "ID")]
    pub media: Vec<String>,
    /// Only media uploaded on or after this date (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// List what would be reprocessed and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Enqueue and return without following progress.
    #[arg(long)]
    pub detach: bool,
    #[arg(long)]
    pub json: bool,
}

/// The job kind that re-runs `step`.
pub fn kind_of(step: &str) -> String {
    format!("reprocess-{step}")
}

/// Media eligible for `step`: its source (transcode, transcribe) or transcript (embed) is stored.
fn eligible(app: &App, a: &ReprocessArgs, tenant: &str) -> Result<Vec<Media>, Failure> {
    let blobs = LocalFs::new(app.config.blob_dir());
    let since = match a.since.as_deref() {
        Some(s) => {
            Some(crate::clock::parse_time(s).ok_or_else(|| format!("--since {s:?}: use YYYY-MM-DD or RFC 3339"))?)
        }
        None => None,
    };
    let wanted: HashSet<&str> = a.media.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    for m in app.journal.media_list(tenant, usize::MAX >> 1)? {
        if (!wanted.is_empty() && !wanted.contains(m.id.as_str())) || since.is_some_and(|s| m.created_at < s) {
            continue;
        }
        let key = if a.step == "embed" { "transcript.json" } else { "source" };
        if blobs.exists(&format!("media/{}/{key}", m.id)).unwrap_or(false) {
            out.push(m);
        }
    }
    let found: HashSet<&str> = out.iter().map(|m| m.id.as_str()).collect();
    if let Some(missing) = a.media.iter().find(|id| !found.contains(id.as_str())) {
        return Err(format!("media {missing} is not in tenant {tenant} or has nothing to {} yet", a.step).into());
    }
    out.reverse(); // oldest first
    Ok(out)
}

/// The unfinished batch of this step and tenant, if any.
fn open_batch(app: &App, kind: &str, tenant: &str) -> Result<Option<String>, Failure> {
    for state in [JobState::Queued, JobState::Running, JobState::Failed] {
        let f = JobFilter { state: Some(state), tenant: Some(tenant.to_string()), ..Default::default() };
        if let Some(b) = app.journal.jobs(&f)?.into_iter().find(|j| j.kind == kind).and_then(|j| j.batch) {
            return Ok(Some(b));
        }
    }
    Ok(None)
}

fn counts(app: &App, batch: &str) -> Result<(usize, usize, usize), Failure> {
    let jobs = app.journal.jobs(&JobFilter { batch: Some(batch.to_string()), ..Default::default() })?;
    let done = jobs.iter().filter(|j| j.state == JobState::Succeeded).count();
    let bad = jobs.iter().filter(|j| matches!(j.state, JobState::Dead | JobState::Cancelled)).count();
    Ok((jobs.len(), done, bad))
}

pub fn run(app: &App, a: ReprocessArgs) -> CliResult {
    let kind = kind_of(&a.step);
    if app.registry.job_kind(&kind).is_none() {
        return Err(
            format!("step {} cannot be reprocessed in this configuration (models.speech = false?)", a.step).into()
        );
    }
    let tenant = app.tenant_id(a.tenant.as_deref())?;
    let media = eligible(app, &a, &tenant)?;
    if a.dry_run {
        if a.json {
            let ids: Vec<_> = media.iter().map(|m| &m.id).collect();
            print_json(&serde_json::json!({"step": a.step, "tenant": tenant, "media": ids}));
        } else {
            for m in &media {
                println!("{}  {}", m.id, m.title.as_deref().unwrap_or(""));
            }
            println!("{} media would get `{}` again (dry run: nothing enqueued)", media.len(), a.step);
        }
        return Ok(());
    }
    let (batch, resumed) = match open_batch(app, &kind, &tenant)? {
        Some(b) => (b, true),
        None => (crate::journal::new_id(&format!("rp-{}", a.step)), false),
    };
    let mut created = 0;
    for m in &media {
        let req = EnqueueRequest {
            kind: kind.clone(),
            tenant: Some(tenant.clone()),
            media_id: Some(m.id.clone()),
            batch: Some(batch.clone()),
            idempotency_key: Some(format!("{batch}:{}", m.id)),
            ..Default::default()
        };
        if !app.enqueue(req)?.existing {
            created += 1;
        }
    }
    let summary = serde_json::json!({"batch": batch, "step": a.step, "media": media.len(), "enqueued": created,
        "resumed": resumed});
    if a.detach || media.is_empty() {
        if a.json {
            print_json(&summary);
        } else {
            println!(
                "batch {batch}: {created} jobs enqueued ({} media{})",
                media.len(),
                if resumed { ", resumed" } else { "" }
            );
        }
        return Ok(());
    }
    if !a.json {
        eprintln!(
            "batch {batch}: {created} new jobs, {} media{}",
            media.len(),
            if resumed { " (continuing)" } else { "" }
        );
    }
    // Follow the batch until every job is finished.
    let (total, _, _) = counts(app, &batch)?;
    let bar = if a.json { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let (total, done, bad) = counts(app, &batch)?;
        bar.set_length(total as u64);
        bar.set_position((done + bad) as u64);
        bar.set_message(if bad > 0 { format!("({bad} dead or cancelled)") } else { String::new() });
        if done + bad >= total {
            bar.finish();
            if a.json {
                print_json(&serde_json::json!({"batch": batch, "succeeded": done, "failed": bad, "total": total}));
            } else {
                println!("batch {batch}: {done} succeeded, {bad} dead or cancelled");
            }
            return if bad > 0 {
                Err(Failure { message: format!("{bad} jobs of batch {batch} did not succeed"), code: 2 })
            } else {
                Ok(())
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
