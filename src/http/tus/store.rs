//! A tus upload's state on the node's disk, next to its bytes: the `.part` file's length *is* the
//! offset (fsynced before a PATCH is acknowledged) and a JSON sidecar holds the declared length,
//! metadata, expiry and, once finished, its media and job. Also the per-upload lock (one PATCH at
//! a time, and a new PATCH takes over from a stalled one) and the per-tenant caps.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::super::ApiError;
use crate::clock::Millis;

/// How long a new PATCH waits for a stalled one to let go of the upload.
const TAKEOVER_WAIT: Duration = Duration::from_secs(10);

/// The sidecar of an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub id: String,
    pub tenant: String,
    pub length: u64,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub sniffed: bool,
    /// The head was recognised but could not settle it (index beyond it): validate the whole file.
    #[serde(default)]
    pub validate: bool,
    pub media_id: Option<String>,
    pub job_id: Option<String>,
    /// When the upload expires (epoch ms); 0 in sidecars older than the expiration extension.
    #[serde(default)]
    pub expires_at: Millis,
}

impl Info {
    pub fn finished(&self) -> bool {
        self.media_id.is_some() && self.job_id.is_some()
    }
}

pub fn valid_id(id: &str) -> bool {
    id.len() == 36 && id.starts_with("upl_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `.part` and `.json` files of upload `id` in `dir`.
pub fn files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{id}.part")), dir.join(format!("{id}.json")))
}

pub fn read_info(side: &Path) -> Option<Info> {
    serde_json::from_slice(&std::fs::read(side).ok()?).ok()
}

/// Writes the sidecar atomically and durably.
pub fn save(side: &Path, info: &Info) -> std::io::Result<()> {
    let tmp = side.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(info).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, side)?;
    if let Some(dir) = side.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The upload locks of this process.
#[derive(Default)]
struct LockState {
    /// Set by a PATCH that wants the upload: the holder stops reading and lets go.
    release: AtomicBool,
    wake_holder: Notify,
    released: Notify,
}

static LOCKS: Mutex<Option<HashMap<String, Arc<LockState>>>> = Mutex::new(None);

fn with_locks<R>(f: impl FnOnce(&mut HashMap<String, Arc<LockState>>) -> R) -> R {
    let mut guard = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// The right to write to one upload. Dropping it lets the next PATCH in.
pub struct UploadLock {
    id: String,
    state: Arc<LockState>,
}

impl UploadLock {
    /// Takes the upload's lock. When a PATCH holds it (its client stalled, or went away without
    /// the server noticing), that PATCH is asked to stop and store what it has, and this one waits
    /// for it (at most 10 s, then 409 `upload_busy`).
    pub async fn take(id: &str) -> Result<UploadLock, ApiError> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let held = with_locks(|m| match m.get(id) {
                Some(s) => Err(s.clone()),
                None => {
                    let state = Arc::new(LockState::default());
                    m.insert(id.to_string(), state.clone());
                    Ok(state)
                }
            });
            let holder = match held {
                Ok(state) => return Ok(UploadLock { id: id.to_string(), state }),
                Err(holder) => holder,
            };
            let released = holder.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            holder.release.store(true, Ordering::SeqCst);
            holder.wake_holder.notify_one();
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "upload_busy",
                    "another PATCH of this upload is still storing its bytes; retry shortly",
                ));
            }
        }
    }

    /// Resolves when another PATCH asks for this upload.
    pub async fn wanted(&self) {
        loop {
            let woken = self.state.wake_holder.notified();
            if self.state.release.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    /// Whether an upload is being written right now (the sweeper leaves it alone).
    pub fn is_held(id: &str) -> bool {
        with_locks(|m| m.contains_key(id))
    }
}

impl Drop for UploadLock {
    fn drop(&mut self) {
        with_locks(|m| {
            if m.get(&self.id).is_some_and(|s| Arc::ptr_eq(s, &self.state)) {
                m.remove(&self.id);
            }
        });
        self.state.released.notify_waiters();
    }
}

/// Open uploads (created, not finished, not expired) per tenant, for the caps.
#[derive(Debug, Default)]
pub struct OpenUploads {
    loaded: bool,
    /// id → (tenant, declared length)
    open: HashMap<String, (String, u64)>,
}

/// One index per tus directory (tests run several servers in one process).
static OPEN: Mutex<Option<HashMap<PathBuf, OpenUploads>>> = Mutex::new(None);

impl OpenUploads {
    /// Runs `f` on the index of `dir`, reading its sidecars the first time.
    pub fn with<R>(dir: &Path, now: Millis, f: impl FnOnce(&mut OpenUploads) -> R) -> R {
        let mut all = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let g = all.get_or_insert_with(HashMap::new).entry(dir.to_path_buf()).or_default();
        if !g.loaded {
            g.loaded = true;
            for info in sidecars(dir) {
                if !info.finished() && (info.expires_at == 0 || info.expires_at > now) {
                    g.open.insert(info.id.clone(), (info.tenant.clone(), info.length));
                }
            }
        }
        f(g)
    }

    /// Admits a new upload of `length` for `tenant` under the caps, or says why not (429).
    pub fn admit(
        &mut self,
        id: &str,
        tenant: &str,
        length: u64,
        max_open: usize,
        max_bytes: u64,
    ) -> Result<(), ApiError> {
        let (n, bytes) = self
            .open
            .values()
            .filter(|(t, _)| t == tenant)
            .fold((0usize, 0u64), |(n, b), (_, len)| (n + 1, b.saturating_add(*len)));
        if n >= max_open {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_open_uploads",
                format!("at most {max_open} unfinished resumable uploads per tenant; finish or DELETE one"),
            )
            .retry_after(60));
        }
        if bytes.saturating_add(length) > max_bytes {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_open_bytes",
                format!("the tenant's unfinished uploads may declare at most {max_bytes} bytes in all"),
            )
            .retry_after(60));
        }
        self.open.insert(id.to_string(), (tenant.to_string(), length));
        Ok(())
    }

    /// The upload finished, expired or was removed.
    pub fn close(&mut self, id: &str) {
        self.open.remove(id);
    }
}

/// Every readable sidecar in `dir`.
pub fn sidecars(dir: &Path) -> Vec<Info> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read_info(&e.path()))
        .collect()
}

/// What the sweeper did in the tus directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

/// Removes expired uploads (finished ones too: their staging link is only for `HEAD`), and files
/// whose sidecar is gone (a crash in create or terminate) once `grace` old; leaves uploads being
/// written alone. An upload's files are judged together, by its sidecar. Returns what it removed.
pub fn sweep(dir: &Path, now: Millis, expiry: Duration, grace: Duration) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return swept };
    let mut by_id: HashMap<String, Vec<std::fs::DirEntry>> = HashMap::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.split('.').next().unwrap_or_default().to_string();
        by_id.entry(id).or_default().push(entry);
    }
    for (id, files) in by_id {
        if UploadLock::is_held(&id) {
            continue;
        }
        let expired = match read_info(&dir.join(format!("{id}.json"))) {
            Some(i) => {
                let youngest = files.iter().map(|e| age_ms(e, now)).min().unwrap_or(0);
                let at = if i.expires_at > 0 { i.expires_at } else { now - youngest + expiry.as_millis() as Millis };
                at <= now
            }
            None => files.iter().all(|e| age_ms(e, now) >= grace.as_millis() as Millis),
        };
        if !expired {
            continue;
        }
        for entry in files {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(entry.path()).is_ok() {
                swept.files += 1;
                swept.bytes += size;
            }
        }
        OpenUploads::with(dir, now, |o| o.close(&id));
    }
    swept
}

/// Milliseconds since the entry was last modified.
pub fn age_ms(entry: &std::fs::DirEntry, now: Millis) -> Millis {
    let modified = entry.metadata().and_then(|m| m.modified()).ok();
    let ms = modified
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(now);
    (now - ms).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        assert!(valid_id("upl_0192f0a1b2c3d4e5f60718293a4b5c6d"));
        assert!(!valid_id("upl_../../../../../../../etc/passwd00"));
    }

    #[test]
    fn caps_count_a_tenant_s_open_uploads() {
        let mut o = OpenUploads::default();
        o.admit("u1", "a", 10, 2, 25).unwrap();
        o.admit("u2", "a", 10, 2, 25).unwrap();
        assert_eq!(o.admit("u3", "a", 1, 2, 25).unwrap_err().code, "too_many_open_uploads");
        o.admit("u4", "b", 25, 2, 25).unwrap();
        assert_eq!(o.admit("u5", "b", 1, 2, 25).unwrap_err().code, "too_many_open_bytes");
        o.close("u1");
        o.admit("u6", "a", 10, 2, 25).unwrap();
    }

    #[tokio::test]
    async fn a_new_patch_takes_over_from_a_stalled_one() {
        let first = UploadLock::take("upl_x").await.unwrap();
        let holder = tokio::spawn(async move {
            first.wanted().await;
            drop(first);
            "released"
        });
        let second = UploadLock::take("upl_x").await.expect("the stalled holder lets go");
        assert_eq!(holder.await.unwrap(), "released");
        assert!(UploadLock::is_held("upl_x"));
        drop(second);
        assert!(!UploadLock::is_held("upl_x"));
    }
}
