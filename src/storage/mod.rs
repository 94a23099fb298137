//! Blob storage for step outputs and media, behind [`BlobStore`]. Writes are atomic: a reader sees
//! either the old blob or the whole new one, never a torn file, and a write that returned survives
//! a crash. Keys are relative, `/`-separated, and may not escape the store.

mod local;

pub use local::LocalFs;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid blob key {0:?}")]
    InvalidKey(String),
    #[error("blob not found: {0}")]
    NotFound(String),
    #[error("storage i/o error on {key}: {source}")]
    Io { key: String, source: std::io::Error },
}

impl Error {
    /// I/O errors may pass (a full disk gets cleaned, a mount comes back); a bad key will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Io { .. })
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

/// A stored blob, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub size: u64,
    /// Last modification, epoch milliseconds.
    pub modified_ms: i64,
}

pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` at `key` atomically and durably.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<BlobRef>;
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    fn exists(&self, key: &str) -> Result<bool>;
    fn delete(&self, key: &str) -> Result<()>;
    /// Moves a finished, fsynced local file into the store under `key`, atomically; the file is
    /// gone from `src` afterwards. The default copies through memory; stores on the same disk rename.
    fn adopt_file(&self, key: &str, src: &std::path::Path) -> Result<()> {
        let bytes = std::fs::read(src).map_err(|source| Error::Io { key: key.to_string(), source })?;
        self.put(key, &bytes)?;
        std::fs::remove_file(src).map_err(|source| Error::Io { key: key.to_string(), source })
    }
    /// Every blob whose key starts with `prefix` (e.g. `"media/"`), in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>>;
    /// A directory on the same filesystem as the store, for files being received.
    fn staging_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The local file behind a key, for stores that have one (served with sendfile, ranges, ETags).
    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        let _ = key;
        None
    }
}

/// Rejects absolute keys, empty segments, `.`/`..`, backslashes and control characters.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.len() > 1024
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(|c| c.is_control())
        || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad { Err(Error::InvalidKey(key.to_string())) } else { Ok(()) }
}

/// Free bytes (for an unprivileged writer) on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape() {
        for bad in ["", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "a/\0", "..", "a/."] {
            assert!(check_key(bad).is_err(), "{bad:?} must be rejected");
        }
        for good in ["a", "jobs/job_1/probe/out.json", "hls/med_1/seg-00001.m4s", "a..b"] {
            assert!(check_key(good).is_ok(), "{good:?} must be accepted");
        }
    }
}
