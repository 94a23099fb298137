//! `lectern serve`: the HTTP API and every worker in one process.

use std::fs::File;
use std::sync::Arc;

use super::{CliResult, Failure};
use crate::actors::{Engine, EngineParts};
use crate::app::App;
use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::storage::LocalFs;

/// The lock file that makes one `serve` the only owner of a data dir. Holding it is what lets a
/// restarted server take back every step left running at once (nobody else can be running them).
const LOCK_FILE: &str = "lectern.lock";

/// Resolves on SIGINT or SIGTERM, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// Whether a listen address is loopback only (`127.0.0.0/8`, `::1`, `localhost`).
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_matches(|c| c == '[' || c == ']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub fn run(config: Config) -> CliResult {
    crate::telemetry::init(&config.log);
    let dir = config.data.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    let lock = File::create(dir.join(LOCK_FILE)).map_err(|e| format!("cannot create lock file: {e}"))?;
    if lock.try_lock().is_err() {
        return Err(Failure {
            message: format!("another `lectern serve` is running on data dir {}", dir.display()),
            code: 1,
        });
    }
    let addr = config.http.addr.clone();
    let blobs: Arc<dyn crate::storage::BlobStore> = Arc::new(LocalFs::new(config.blob_dir()));
    let mut app = App::open(config)?;
    if app.config.models.speech && app.config.models.preload {
        // Fail fast: a missing or corrupt model is named now, not at the first upload.
        app.models.preload().map_err(|e| format!("{} ({})", e.message, e.code))?;
        tracing::info!(dir = %app.models.dir().display(), asr = %app.config.models.asr, "models loaded");
    }
    let open = app.is_open()?;
    if open && !is_loopback(&addr) {
        return Err(Failure {
            message: format!(
                "refusing to serve an open API on {addr}: set LECTERN_ADMIN_KEY (and create tenants with \
                 `lectern tenants create NAME`), or listen on a loopback address"
            ),
            code: 2,
        });
    }
    if open {
        tracing::warn!(%addr, "no API keys yet: the API is open on loopback (set LECTERN_ADMIN_KEY to close it)");
    }
    let system = actix::System::new();
    let result: Result<(), Failure> = system.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        // Before the engine starts, nothing runs: every staging leftover of an earlier process is
        // an orphan.
        let swept = {
            let s = http::State::new(app.clone(), metrics.clone(), blobs.clone());
            actix_web::web::block(move || http::sweeper::sweep(&s, true)).await.map_err(|e| e.to_string())?
        };
        tracing::info!(files = swept.files(), bytes = swept.bytes(), "start-up sweep done");
        let engine = Engine::start(EngineParts {
            journal: app.journal.clone(),
            clock: app.clock.clone(),
            blobs: blobs.clone(),
            metrics: metrics.clone(),
            config: app.config.clone(),
            registry: app.registry.clone(),
        })?;
        tracing::info!(%addr, data_dir = %app.data_dir().display(), owner = engine.owner(), "lectern serving");
        app.engine = Some(engine.clone());
        let grace = app.config.scheduler.shutdown_grace;
        let (stop_notifier, stopped) = tokio::sync::watch::channel(false);
        let notifier = crate::webhooks::Notifier {
            journal: app.journal.clone(),
            opts: app.config.webhook.clone(),
            metrics: metrics.clone(),
            clock: app.clock.clone(),
        };
        let notifier = actix_rt::spawn(notifier.run(stopped.clone()));
        let state = http::State::new(app, metrics, blobs);
        let sweeper = actix_rt::spawn(http::sweeper::run(state.clone(), stopped));
        let server = http::server(state, &addr).map_err(|e| format!("http server on {addr}: {e}"))?;
        let handle = server.handle();
        let mut running = actix_rt::spawn(server);
        let served = tokio::select! {
            signal = shutdown_signal() => {
                tracing::info!(signal, "stopping: finishing in-flight requests");
                handle.stop(true).await;
                running.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))
            }
            r = &mut running => r.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
        };
        tracing::info!(grace_s = grace.as_secs_f64(), "stopping: asking running steps to stop");
        engine.shutdown(grace).await;
        let _ = stop_notifier.send(true);
        let _ = notifier.await;
        let _ = sweeper.await;
        served.map_err(|e| format!("http server on {addr}: {e}"))?;
        tracing::info!("lectern stopped");
        Ok(())
    });
    drop(lock);
    result
}
