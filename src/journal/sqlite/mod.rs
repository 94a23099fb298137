//! The embedded journal: one SQLite database in WAL mode.
//!
//! Durability: `synchronous = FULL` in WAL mode, so a transaction that returned has been fsynced to
//! the WAL and survives `kill -9` and power loss as SQLite defines them. Every write is a
//! `BEGIN IMMEDIATE` transaction, so several processes (the server and the CLI) can share the file:
//! writers queue on SQLite's lock (`busy_timeout`) instead of failing on an upgrade deadlock.
//!
//! Reads never wait behind a writer: they run on read-only connections of their own (a small
//! pool), each a WAL snapshot, while the one write connection may be waiting for another
//! process's lock.

mod hooks;
mod read;
mod write;

pub use hooks::DELIVERY_LEASE_MS;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Error, Media, Result, Tenant, schema};
use crate::clock::Millis;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Storage(format!("bad json in journal: {e}"))
    }
}

/// How long a writer waits for another process's transaction before giving up with a busy error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle read connections kept open (more are opened when readers overlap, and closed after).
const IDLE_READERS: usize = 4;
/// How long the readiness check waits for the write lock.
const READY_WAIT: Duration = Duration::from_secs(1);

/// The SQLite journal. Cheap to share behind an `Arc`; writes are serialised on one connection,
/// reads run on their own connections.
pub struct SqliteJournal {
    conn: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal").field("path", &self.path).finish()
    }
}

impl SqliteJournal {
    /// Opens (creating and migrating if needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Storage(format!("could not switch {} to WAL (got {mode})", path.display())));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        migrate(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn), readers: Mutex::new(Vec::new()), path: path.to_path_buf() })
    }

    fn open_reader(&self) -> Result<Connection> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA foreign_keys = ON;")?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current schema version.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.lock().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-written transaction (SQLite rolls it
        // back when the transaction object drops), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the write connection, waiting at most until `deadline` (a write of this process may
    /// itself be waiting for another process's lock); then sets SQLite's busy timeout to what is
    /// left, so the whole wait of a write is bounded by one deadline.
    fn lock_until(&self, deadline: std::time::Instant) -> Result<std::sync::MutexGuard<'_, Connection>> {
        let conn = loop {
            match self.conn.try_lock() {
                Ok(c) => break c,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::Storage("busy: the journal's writer is waiting for its lock".into()));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
        conn.busy_timeout(left)?;
        Ok(conn)
    }

    /// Runs `f` in one immediate (write) transaction and commits it; the whole wait for the lock
    /// (this process's other writes included) is bounded by [`BUSY_TIMEOUT`].
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock_until(std::time::Instant::now() + BUSY_TIMEOUT)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction (a consistent snapshot) on a read connection, so it never
    /// waits for the write lock.
    fn read<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&tx)
        };
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Whether a write could start now: takes the write lock for at most [`READY_WAIT`] (also
    /// when this process's writer is busy, or another process holds SQLite's lock).
    fn try_writable(&self) -> Result<()> {
        let conn = self.lock_until(std::time::Instant::now() + READY_WAIT)?;
        let result = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
        result.map_err(|e| Error::Storage(format!("busy: the write lock is held elsewhere ({e})")))
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > schema::latest() {
        return Err(Error::SchemaTooNew { found: version, known: schema::latest() });
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

// ---- tenants and media (small enough to live here) ----

fn tenant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant { id: r.get(0)?, name: r.get(1)?, created_at: r.get(2)? })
}

impl SqliteJournal {
    pub(crate) fn create_tenant_impl(
        &self,
        name: &str,
        creds: &super::hooks::TenantCredentials,
        now: Millis,
    ) -> Result<Tenant> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::Invalid("a tenant name must be 1 to 100 characters, none a control character".into()));
        }
        self.write(|tx| {
            let exists: Option<String> =
                tx.query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            if exists.is_some() {
                return Err(Error::Conflict(format!("tenant {name} already exists")));
            }
            let t = Tenant { id: super::new_id("ten"), name: name.to_string(), created_at: now };
            tx.execute(
                "INSERT INTO tenants (id, name, created_at, api_key_hash, webhook_secret) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.name, now, creds.api_key_hash, creds.webhook_secret],
            )?;
            Ok(t)
        })
    }

    pub(crate) fn tenant_impl(&self, id_or_name: &str) -> Result<Option<Tenant>> {
        self.read(|tx| {
            Ok(tx
                .query_row(
                    "SELECT id, name, created_at FROM tenants WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC",
                    [id_or_name],
                    tenant_row,
                )
                .optional()?)
        })
    }

    pub(crate) fn tenants_impl(&self) -> Result<Vec<Tenant>> {
        self.read(|tx| {
            let mut st = tx.prepare("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")?;
            let rows = st.query_map([], tenant_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub(crate) fn create_media_impl(&self, tenant: &str, title: Option<&str>, now: Millis) -> Result<Media> {
        self.write(|tx| {
            let m = Media {
                id: super::new_id("med"),
                tenant: tenant.to_string(),
                title: title.map(str::to_string),
                created_at: now,
                meta: serde_json::json!({}),
            };
            tx.execute(
                "INSERT INTO media (id, tenant, title, created_at, meta) VALUES (?1, ?2, ?3, ?4, '{}')",
                params![m.id, m.tenant, m.title, now],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Error::NotFound { what: "tenant", id: tenant.to_string() }
                }
                e => e.into(),
            })?;
            Ok(m)
        })
    }

    pub(crate) fn media_impl(&self, id: &str) -> Result<Option<Media>> {
        self.read(|tx| {
            let row = tx
                .query_row("SELECT id, tenant, title, created_at, meta FROM media WHERE id = ?1", [id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
                })
                .optional()?;
            row.map(|(id, tenant, title, created_at, meta)| {
                Ok(Media { id, tenant, title, created_at, meta: serde_json::from_str(&meta)? })
            })
            .transpose()
        })
    }

    pub(crate) fn update_media_meta_impl(&self, id: &str, patch: &serde_json::Value) -> Result<()> {
        self.write(|tx| {
            let meta: Option<String> =
                tx.query_row("SELECT meta FROM media WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            let meta = meta.ok_or_else(|| Error::NotFound { what: "media", id: id.to_string() })?;
            let mut meta: serde_json::Value = serde_json::from_str(&meta)?;
            if let (Some(m), Some(p)) = (meta.as_object_mut(), patch.as_object()) {
                for (k, v) in p {
                    m.insert(k.clone(), v.clone());
                }
            }
            tx.execute("UPDATE media SET meta = ?2 WHERE id = ?1", params![id, meta.to_string()])?;
            Ok(())
        })
    }
}

impl super::Journal for SqliteJournal {
    fn create_tenant_with(&self, name: &str, creds: &super::hooks::TenantCredentials, now: Millis) -> Result<Tenant> {
        self.create_tenant_impl(name, creds, now)
    }
    fn tenant_by_key_hash(&self, hash: &str) -> Result<Option<Tenant>> {
        self.tenant_by_key_hash_impl(hash)
    }
    fn any_api_key(&self) -> Result<bool> {
        self.any_api_key_impl()
    }
    fn webhook_secret(&self, tenant: &str) -> Result<Option<String>> {
        self.webhook_secret_impl(tenant)
    }
    fn set_webhook_secret_if_unset(&self, tenant: &str, secret: &str) -> Result<()> {
        self.set_webhook_secret_if_unset_impl(tenant, secret)
    }
    fn create_endpoint(&self, ep: &super::hooks::Endpoint) -> Result<()> {
        self.create_endpoint_impl(ep)
    }
    fn endpoints(&self, tenant: Option<&str>) -> Result<Vec<super::hooks::Endpoint>> {
        self.endpoints_impl(tenant)
    }
    fn delete_endpoint(&self, id: &str, tenant: Option<&str>) -> Result<()> {
        self.delete_endpoint_impl(id, tenant)
    }
    fn claim_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<super::hooks::Delivery>> {
        self.claim_deliveries_impl(now, limit)
    }
    fn record_delivery(&self, d: &super::hooks::Delivery, r: &super::hooks::AttemptResult, now: Millis) -> Result<()> {
        self.record_delivery_impl(d, r, now)
    }
    fn deliveries(&self, job_id: &str) -> Result<Vec<super::hooks::DeliveryRecord>> {
        self.deliveries_impl(job_id)
    }
    fn next_delivery_at(&self) -> Result<Option<Millis>> {
        self.next_delivery_at_impl()
    }
    fn tenant(&self, id_or_name: &str) -> Result<Option<Tenant>> {
        self.tenant_impl(id_or_name)
    }
    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.tenants_impl()
    }
    fn create_media(&self, tenant: &str, title: Option<&str>, now: Millis) -> Result<Media> {
        self.create_media_impl(tenant, title, now)
    }
    fn media(&self, id: &str) -> Result<Option<Media>> {
        self.media_impl(id)
    }
    fn update_media_meta(&self, id: &str, patch: &serde_json::Value) -> Result<()> {
        self.update_media_meta_impl(id, patch)
    }
    fn enqueue(&self, job: super::NewJob, now: Millis) -> Result<super::Enqueued> {
        self.enqueue_impl(job, now)
    }
    fn job(&self, id: &str) -> Result<Option<super::JobRecord>> {
        self.read(|tx| read::job_by_id(tx, id))
    }
    fn idempotent_job(&self, tenant: &str, key: &str, now: Millis) -> Result<Option<super::JobRecord>> {
        self.read(|tx| write::idempotent_job(tx, tenant, key, now))
    }
    fn media_list(&self, tenant: &str, limit: usize) -> Result<Vec<Media>> {
        self.read(|tx| {
            let mut st = tx.prepare_cached(
                "SELECT id, tenant, title, created_at, meta FROM media WHERE tenant = ?1 \
                 ORDER BY created_at DESC, id DESC LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![tenant, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, String>(4)?))
                })?
                .collect::<rusqlite::Result<Vec<(String, String, Option<String>, Millis, String)>>>()?;
            rows.into_iter()
                .map(|(id, tenant, title, created_at, meta)| {
                    Ok(Media { id, tenant, title, created_at, meta: serde_json::from_str(&meta)? })
                })
                .collect()
        })
    }
    fn jobs(&self, filter: &super::JobFilter) -> Result<Vec<super::JobRecord>> {
        self.read(|tx| read::jobs(tx, filter))
    }
    fn events(&self, job_id: &str) -> Result<Vec<super::Event>> {
        self.read(|tx| read::events(tx, job_id))
    }
    fn record_event(
        &self,
        attempt: &super::AttemptRef,
        kind: &str,
        detail: Option<serde_json::Value>,
        now: Millis,
    ) -> Result<()> {
        self.write(|tx| write::record_event(tx, attempt, kind, detail, now))
    }
    fn active_queues(&self, now: Millis) -> Result<Vec<String>> {
        self.read(|tx| read::active_queues(tx, now))
    }
    fn ready_steps(&self, queue: &str, stages: &[&str], now: Millis, limit: usize) -> Result<Vec<super::ReadyStep>> {
        self.read(|tx| read::ready_steps(tx, queue, stages, now, limit))
    }
    fn has_ready(&self, stage: &str, now: Millis) -> Result<bool> {
        self.read(|tx| read::has_ready(tx, stage, now))
    }
    fn claim(&self, steps: &[super::ReadyStep], owner: &str, now: Millis) -> Result<Vec<Option<super::ClaimedStep>>> {
        self.write(|tx| write::claim(tx, steps, owner, now))
    }
    fn heartbeat(&self, attempts: &[super::AttemptRef], owner: &str, now: Millis) -> Result<()> {
        self.write(|tx| write::heartbeat(tx, attempts, owner, now))
    }
    fn finish(&self, outcomes: &[(super::AttemptRef, super::Outcome)], now: Millis) -> Result<Vec<super::Finished>> {
        self.write(|tx| write::finish(tx, outcomes, now))
    }
    fn reclaim(
        &self,
        scope: &super::ReclaimScope,
        now: Millis,
        decide: &dyn Fn(&str, u32) -> Option<Millis>,
    ) -> Result<Vec<super::Reclaimed>> {
        self.write(|tx| write::reclaim(tx, scope, now, decide))
    }
    fn release(&self, attempts: &[super::AttemptRef], now: Millis) -> Result<Vec<super::Finished>> {
        self.write(|tx| write::release(tx, attempts, now))
    }
    fn cancelled_jobs(&self, job_ids: &[&str]) -> Result<Vec<String>> {
        self.read(|tx| read::cancelled_jobs(tx, job_ids))
    }
    fn next_retry_at(&self) -> Result<Option<Millis>> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT MIN(ready_at) FROM steps WHERE state = 'failed' AND ready_at IS NOT NULL",
                [],
                |r| r.get(0),
            )?)
        })
    }
    fn cancel_job(&self, id: &str, now: Millis) -> Result<super::JobRecord> {
        self.write(|tx| write::cancel_job(tx, id, now))
    }
    fn retry_job(&self, id: &str, now: Millis) -> Result<super::JobRecord> {
        self.write(|tx| write::retry_job(tx, id, now))
    }
    fn set_paused(&self, scope: &super::PauseScope, paused: bool, now: Millis) -> Result<()> {
        self.write(|tx| write::set_paused(tx, scope, paused, now))
    }
    fn pauses(&self) -> Result<Vec<super::PauseScope>> {
        self.read(read::pauses)
    }
    fn queue_stats(&self, now: Millis) -> Result<Vec<super::QueueStat>> {
        self.read(|tx| read::queue_stats(tx, now))
    }
    fn check_writable(&self) -> Result<()> {
        self.try_writable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::journal_conformance_tests!(|dir: &std::path::Path| SqliteJournal::open(&dir.join("journal.db")).unwrap());

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        drop(SqliteJournal::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = SqliteJournal::open(&path).unwrap_err();
        assert!(matches!(err, Error::SchemaTooNew { found: 99, .. }), "{err}");
    }

    #[test]
    fn uses_wal_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let j = SqliteJournal::open(&dir.path().join("j.db")).unwrap();
        let conn = j.lock();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous must be FULL");
        drop(conn);
        assert_eq!(j.schema_version().unwrap(), schema::latest());
    }
}
