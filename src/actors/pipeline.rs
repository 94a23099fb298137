//! Starts the engine: one `SyncArbiter` pool per stage (CPU-bound work off the async runtime) and
//! the scheduler on an arbiter (thread) of its own, so journal writes never stall HTTP handlers.
//!
//! Supervision: stage workers catch panics and are rebuilt by their arbiter (see [`super::stage`]);
//! the scheduler guards its handlers and rebuilds its view from the journal on every tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::{Actor, Addr, Arbiter, SyncArbiter};

use super::scheduler::{Observe, Scheduler, SchedulerDeps, Shutdown, Snapshot, Wake};
use super::stage::StageWorker;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::engine::Registry;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::storage::BlobStore;

/// What the engine is built from.
pub struct EngineParts {
    pub journal: Arc<dyn Journal>,
    pub clock: SharedClock,
    pub blobs: Arc<dyn BlobStore>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub registry: Registry,
}

/// A running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    scheduler: Addr<Scheduler>,
    owner: String,
    // Keeps the scheduler's thread alive for as long as the engine lives.
    _arbiter: Arc<ArbiterGuard>,
}

struct ArbiterGuard(Arbiter);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// How long a snapshot request waits for the scheduler.
const OBSERVE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Engine {
    /// Starts the worker pools and the scheduler. Must be called inside a running actix `System`.
    pub fn start(parts: EngineParts) -> Result<Self, String> {
        parts.registry.validate()?;
        let owner = format!("node-{}-{}", std::process::id(), &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let mut stages = BTreeMap::new();
        for (name, executor) in parts.registry.stages() {
            let workers = parts.config.workers_for(name);
            let (stage, exec, metrics) = (name.clone(), executor.clone(), parts.metrics.clone());
            let addr = SyncArbiter::start(workers, move || StageWorker::new(&stage, exec.clone(), metrics.clone()));
            stages.insert(name.clone(), (addr, workers));
        }
        let deps = SchedulerDeps {
            journal: parts.journal,
            clock: parts.clock,
            blobs: parts.blobs,
            metrics: parts.metrics,
            config: parts.config,
            owner: owner.clone(),
            stages,
        };
        let arbiter = Arbiter::new();
        let scheduler = Scheduler::start_in_arbiter(&arbiter.handle(), move |_| Scheduler::new(deps));
        Ok(Self { scheduler, owner, _arbiter: Arc::new(ArbiterGuard(arbiter)) })
    }

    /// Asks the scheduler to look for work now. Never blocks; a full mailbox means a wake-up is
    /// already pending, so dropping this one loses nothing.
    pub fn wake(&self) {
        let _ = self.scheduler.try_send(Wake);
    }

    /// The scheduler's snapshot, or `None` when it does not answer within a second (it is gone, or
    /// stuck waiting for the journal's lock: either way not ready).
    pub async fn observe(&self) -> Option<Snapshot> {
        self.scheduler.send(Observe).timeout(OBSERVE_WAIT).await.ok()
    }

    /// Drains the engine: dispatches nothing new, asks running steps to stop, waits up to `grace`,
    /// commits what finished and hands the rest back to the queue without charging a retry.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        if let Err(e) = self.scheduler.send(Shutdown { grace }).await {
            tracing::error!(error = %e, "the scheduler did not answer the shutdown request");
        }
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}
