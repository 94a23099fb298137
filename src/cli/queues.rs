//! `lectern queues list|pause|resume`

use clap::{Args, Subcommand};

use super::output::{print_json, table};
use super::{CliResult, Failure};
use crate::app::App;
use crate::journal::PauseScope;

#[derive(Debug, Subcommand)]
pub enum QueuesCmd {
    /// Queues (per tenant and batch) and stages, with depth, running steps and oldest age.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop dispatching new work of a stage or tenant (running steps finish; queued work waits).
    Pause {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Dispatch a paused stage's or tenant's work again.
    Resume {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A stage name (probe, transcode, ...).
    #[arg(long)]
    stage: Option<String>,
    /// A tenant id or name.
    #[arg(long)]
    tenant: Option<String>,
    /// A batch id (e.g. a `reprocess` run): only its queue.
    #[arg(long)]
    batch: Option<String>,
}

impl Target {
    fn scope(&self) -> Result<PauseScope, Failure> {
        match (&self.stage, &self.tenant, &self.batch) {
            (Some(s), None, None) => Ok(PauseScope::Stage(s.clone())),
            (None, Some(t), None) => Ok(PauseScope::Tenant(t.clone())),
            (None, None, Some(b)) => Ok(PauseScope::Queue(format!("batch:{b}"))),
            _ => Err(Failure { message: "give exactly one of --stage, --tenant or --batch".into(), code: 2 }),
        }
    }
}

pub fn run(app: &App, cmd: QueuesCmd) -> CliResult {
    match cmd {
        QueuesCmd::List { json } => list(app, json),
        QueuesCmd::Pause { target, json } => pause(app, &target, true, json),
        QueuesCmd::Resume { target, json } => pause(app, &target, false, json),
    }
}

fn pause(app: &App, t: &Target, paused: bool, json: bool) -> CliResult {
    let scope = app.set_paused(t.scope()?, paused)?;
    if json {
        print_json(&serde_json::json!({ "paused": paused, "target": scope }));
    } else {
        let (kind, name) = match &scope {
            PauseScope::Stage(n) => ("stage", n),
            PauseScope::Tenant(n) => ("tenant", n),
            PauseScope::Queue(n) => ("queue", n),
        };
        println!("{} {kind} {name}", if paused { "paused" } else { "resumed" });
    }
    Ok(())
}

fn list(app: &App, json: bool) -> CliResult {
    let v = app.queues()?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let stages: Vec<_> = v
        .stages
        .iter()
        .map(|s| {
            let paused = if s.paused { "paused" } else { "" };
            vec![s.stage.clone(), s.workers.to_string(), s.ready.to_string(), s.running.to_string(), paused.into()]
        })
        .collect();
    println!("{}", table(&["STAGE", "WORKERS", "READY", "RUNNING", ""], &stages));
    if v.queues.is_empty() {
        println!("\nno queued or running work");
        return Ok(());
    }
    let queues: Vec<_> = v
        .queues
        .iter()
        .map(|q| {
            let age = q.oldest_age_s.map(|a| super::output::duration((a * 1e3) as i64)).unwrap_or_else(|| "-".into());
            let s = &q.stat;
            vec![
                s.queue.clone(),
                s.stage.clone(),
                s.ready.to_string(),
                s.waiting_retry.to_string(),
                s.running.to_string(),
                age,
                if q.paused { "paused".into() } else { String::new() },
            ]
        })
        .collect();
    println!("\n{}", table(&["QUEUE", "STAGE", "READY", "RETRYING", "RUNNING", "OLDEST", ""], &queues));
    Ok(())
}
