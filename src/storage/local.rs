//! Local-filesystem blob store: temp file in the target directory, fsync, rename, fsync directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BlobRef, BlobStore, Error, Result, check_key, sha256_hex};

#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file behind a key (for serving with sendfile and the like).
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io(key: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { key: key.to_string(), source }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl BlobStore for LocalFs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<BlobRef> {
        let path = self.path(key)?;
        let dir = path.parent().expect("a checked key has a parent under the root");
        fs::create_dir_all(dir).map_err(io(key))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("blob"),
            uuid::Uuid::now_v7().simple()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(dir)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(key)(e));
        }
        Ok(BlobRef { key: key.to_string(), sha256: sha256_hex(bytes), size: bytes.len() as u64 })
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(key.to_string()),
            _ => io(key)(e),
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key)?.is_file())
    }

    fn adopt_file(&self, key: &str, src: &Path) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().expect("a checked key has a parent under the root");
        fs::create_dir_all(dir).map_err(io(key))?;
        fs::rename(src, &path).map_err(io(key))?;
        sync_dir(dir).map_err(io(key))
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(self.root.join(".staging"))
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.path(key).ok()
    }

    fn delete(&self, key: &str) -> Result<()> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(key)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_atomic_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalFs::new(dir.path());
        let r = s.put("jobs/j1/probe/out.json", b"{\"a\":1}").unwrap();
        assert_eq!(r.size, 7);
        assert_eq!(r.sha256, sha256_hex(b"{\"a\":1}"));
        s.put("jobs/j1/probe/out.json", b"second").unwrap();
        assert_eq!(s.get("jobs/j1/probe/out.json").unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("jobs/j1/probe")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
        assert!(matches!(s.get("jobs/none"), Err(Error::NotFound(_))));
        assert!(matches!(s.put("../x", b""), Err(Error::InvalidKey(_))));
        s.delete("jobs/j1/probe/out.json").unwrap();
        assert!(!s.exists("jobs/j1/probe/out.json").unwrap());
        let staged = s.staging_dir().unwrap().join("up.part");
        fs::create_dir_all(staged.parent().unwrap()).unwrap();
        fs::write(&staged, b"audio").unwrap();
        s.adopt_file("media/m1/source", &staged).unwrap();
        assert_eq!(s.get("media/m1/source").unwrap(), b"audio");
        assert!(!staged.exists());
        s.delete("jobs/j1/probe/out.json").unwrap();
    }
}
