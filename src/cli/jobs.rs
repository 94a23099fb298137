//! `lectern jobs list|show|retry|cancel|enqueue`

use clap::Subcommand;
use serde_json::json;

use super::output::{duration, print_json, table, time};
use super::{CliResult, Failure};
use crate::app::{App, EnqueueRequest, ItemResult};
use crate::clock::rfc3339;
use crate::journal::{Event, JobRecord, JobState};

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List jobs, newest first.
    List {
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        /// Tenant id or name.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its step timeline.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Resume jobs from their first step that did not succeed (same job id).
    Retry {
        ids: Vec<String>,
        /// Retry every job in this state (`dead`, `failed` or `cancelled`).
        #[arg(long, value_parser = parse_state, conflicts_with = "ids")]
        state: Option<JobState>,
        /// With --state: only this tenant's jobs.
        #[arg(long, requires = "state")]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs (running steps stop at their next checkpoint).
    Cancel {
        #[arg(required_unless_present = "batch")]
        ids: Vec<String>,
        /// Every unfinished job of this batch (e.g. a `reprocess` run).
        #[arg(long, conflicts_with = "ids")]
        batch: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Enqueue a job of a registered kind (for operators and tests; uploads enqueue ingest jobs).
    #[command(hide = true)]
    Enqueue {
        #[arg(long)]
        kind: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Job parameters as a JSON object.
        #[arg(long)]
        params: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_state(s: &str) -> Result<JobState, String> {
    JobState::parse(s).ok_or_else(|| format!("unknown state {s:?} (queued|running|succeeded|failed|dead|cancelled)"))
}

pub fn run(app: &App, cmd: JobsCmd) -> CliResult {
    match cmd {
        JobsCmd::List { state, tenant, limit, json } => list(app, state, tenant.as_deref(), limit, json),
        JobsCmd::Show { id, json } => show(app, &id, json),
        JobsCmd::Retry { ids, state, tenant, json } => {
            let ids = match state {
                Some(s) => app.ids_in_state(s, tenant.as_deref())?,
                None if ids.is_empty() => {
                    return Err(Failure { message: "give job ids or --state".into(), code: 2 });
                }
                None => ids,
            };
            bulk(app.each(&ids, App::retry), "retried", json)
        }
        JobsCmd::Cancel { ids, batch, json } => match batch {
            Some(b) => {
                let f = crate::journal::JobFilter { batch: Some(b), ..Default::default() };
                let ids: Vec<String> =
                    app.journal.jobs(&f)?.into_iter().filter(|j| !j.state.is_terminal()).map(|j| j.id).collect();
                // A job of a running batch may finish between the listing and its cancel: that is
                // the outcome the operator wanted anyway, not a failure of the bulk action.
                let mut results = app.each(&ids, App::cancel);
                results.retain(|r| r.ok || !ended_meanwhile(app, &r.id));
                bulk(results, "cancelled", json)
            }
            None => bulk(app.each(&ids, App::cancel), "cancelled", json),
        },
        JobsCmd::Enqueue { kind, tenant, params, batch, idempotency_key, json } => {
            let params = params
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| Failure { message: format!("--params is not JSON: {e}"), code: 2 })?;
            let req = EnqueueRequest { kind, tenant, params, batch, idempotency_key, ..Default::default() };
            let e = app.enqueue(req)?;
            if json {
                let mut v = e.job.to_contract_json();
                v["existing"] = json!(e.existing);
                print_json(&v);
            } else {
                println!("{} {}", if e.existing { "existing" } else { "enqueued" }, e.job.id);
            }
            Ok(())
        }
    }
}

fn list(app: &App, state: Option<JobState>, tenant: Option<&str>, limit: usize, json: bool) -> CliResult {
    let jobs = app.jobs(state, tenant, limit, None)?;
    if json {
        let jobs: Vec<_> = jobs.iter().map(JobRecord::to_contract_json).collect();
        print_json(&json!({ "jobs": jobs }));
        return Ok(());
    }
    let rows: Vec<_> = jobs
        .iter()
        .map(|j| {
            let done = j.steps.iter().filter(|s| s.state == crate::journal::StepState::Succeeded).count();
            vec![
                j.id.clone(),
                j.tenant.clone(),
                j.kind.clone(),
                j.state.to_string(),
                format!("{done}/{}", j.steps.len()),
                rfc3339(j.created_at),
            ]
        })
        .collect();
    println!("{}", table(&["ID", "TENANT", "KIND", "STATE", "STEPS", "CREATED"], &rows));
    Ok(())
}

fn show(app: &App, id: &str, json: bool) -> CliResult {
    let (job, events) = app.job(id)?;
    if json {
        let mut v = job.to_contract_json();
        v["events"] = serde_json::to_value(&events)?;
        print_json(&v);
        return Ok(());
    }
    println!("job {}  ({}, tenant {}, queue {})", job.id, job.kind, job.tenant, job.queue);
    println!("state {}  created {}  finished {}", job.state, rfc3339(job.created_at), time(job.finished_at));
    if let Some(m) = &job.media_id {
        println!("media {m}");
    }
    let rows: Vec<_> = job
        .steps
        .iter()
        .map(|s| {
            let took = match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) if b >= a => duration(b - a),
                (Some(a), None) => format!("{} so far", duration(app.clock.now_ms() - a)),
                _ => "-".into(),
            };
            let note = match (&s.error, s.retry_at) {
                (Some(e), Some(t)) => format!("{}: {} (retry at {})", e.code, e.message, rfc3339(t)),
                (Some(e), None) => format!("{}: {}", e.code, e.message),
                _ => String::new(),
            };
            vec![s.name.clone(), s.state.to_string(), s.attempts.to_string(), took, note]
        })
        .collect();
    println!("\n{}", table(&["STEP", "STATE", "ATTEMPTS", "TOOK", "ERROR"], &rows));
    println!("\ntimeline");
    for e in &events {
        println!("  {}", timeline_line(e));
    }
    Ok(())
}

fn timeline_line(e: &Event) -> String {
    let mut s = format!("{}  {:<16}", rfc3339(e.at), e.kind);
    if let Some(step) = &e.step {
        s.push_str(&format!(" {step}"));
    }
    if let Some(a) = e.attempt {
        s.push_str(&format!(" #{a}"));
    }
    if let Some(err) = &e.error {
        s.push_str(&format!("  {}: {}", err.code, err.message));
    }
    if let Some(t) = e.detail.as_ref().and_then(|d| d.get("retry_at")).and_then(|t| t.as_i64()) {
        s.push_str(&format!("  (retry at {})", rfc3339(t)));
    }
    s
}

fn ended_meanwhile(app: &App, id: &str) -> bool {
    matches!(app.journal.job(id), Ok(Some(j)) if j.state.is_terminal())
}

fn bulk(results: Vec<ItemResult>, verb: &str, json: bool) -> CliResult {
    let failed = results.iter().filter(|r| !r.ok).count();
    if json {
        print_json(&json!({ "results": results }));
    } else {
        for r in &results {
            match (&r.state, &r.error) {
                (Some(s), _) => println!("{verb} {} (now {s})", r.id),
                (_, Some(e)) => eprintln!("{}: {}", r.id, e.message),
                _ => {}
            }
        }
        if results.is_empty() {
            println!("no matching jobs");
        }
    }
    if failed > 0 { Err(Failure { message: format!("{failed} of {} failed", results.len()), code: 1 }) } else { Ok(()) }
}
