//! Lectern: a self-hosted audio pipeline built on a durable job engine.
//!
//! Module map (data flows top to bottom):
//! - [`cli`] and [`http`]: thin faces over [`app`], the application commands.
//! - [`journal`]: the source of truth (tenants, media, jobs, steps, timeline, pauses).
//! - [`engine`]: job kinds (step DAGs), retry policy, the step executor interface.
//! - [`actors`]: the scheduler, the supervised stage worker pools, the engine that owns them.
//! - [`media`]: pure audio code: probe, decode, resample, loudness, limiter (no actors, no journal).
//! - [`storage`]: blob storage with atomic writes.
//! - [`webhooks`]: signed delivery of the journal's webhook outbox, behind the private-address guard.
//! - [`auth`]: API keys, the caller's tenant scope, playback tokens.
//! - [`config`], [`clock`], [`metrics`], [`telemetry`]: plumbing.

pub mod actors;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod embed;
pub mod engine;
pub mod http;
pub mod index;
pub mod journal;
pub mod media;
pub mod metrics;
pub mod speech;
pub mod storage;
pub mod telemetry;
pub mod webhooks;
