//! Local-filesystem blob store: temp file in the staging directory (same filesystem), fsync,
//! rename into place, fsync the directory. Temp files live only under `.staging/tmp/`, so a crash
//! mid-write leaves its leftover where the sweeper looks, never beside the blobs. A `put` of bytes
//! equal to the stored blob leaves the file untouched, so a re-run that rewrites the same output
//! (a resumed transcode) keeps its files, their mtimes and whatever was derived from them.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BlobMeta, BlobRef, BlobStore, Error, Result, check_key, sha256_hex};

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

/// Where `put` writes before renaming (under the root, so on the same filesystem).
pub const TMP_DIR: &str = ".staging/tmp";

/// Whether the file at `path` holds exactly `bytes` (read only when the sizes agree).
fn same_content(path: &Path, bytes: &[u8]) -> bool {
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == bytes.len() as u64 => fs::read(path).is_ok_and(|old| old == bytes),
        _ => false,
    }
}

impl BlobStore for LocalFs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<BlobRef> {
        let path = self.path(key)?;
        let blob = BlobRef { key: key.to_string(), sha256: sha256_hex(bytes), size: bytes.len() as u64 };
        if same_content(&path, bytes) {
            return Ok(blob);
        }
        let dir = path.parent().expect("a checked key has a parent under the root");
        fs::create_dir_all(dir).map_err(io(key))?;
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(io(key))?;
        let tmp = tmp_dir.join(uuid::Uuid::now_v7().simple().to_string());
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            if let Err(e) = fs::rename(&tmp, &path) {
                // A delete of the folder's last blob may have removed the folder just now.
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e);
                }
                fs::create_dir_all(dir)?;
                fs::rename(&tmp, &path)?;
            }
            sync_dir(dir)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io(key)(e));
        }
        Ok(blob)
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

    fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>> {
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = if dir_part.is_empty() { self.root.clone() } else { self.path(dir_part)? };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(prefix)(e)),
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name();
                // Dot entries are the store's own (staging, temp files), never blobs.
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let path = entry.path();
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else { continue };
                let key = rel.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/");
                if key.starts_with(prefix) {
                    let modified_ms = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_millis() as i64);
                    out.push(BlobMeta { key, size: meta.len(), modified_ms });
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(key)(e)),
        }
        // Folders the blob leaves empty go too (a refused upload leaves no `media/<id>/`).
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identical_put_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalFs::new(dir.path());
        s.put("hls/m/a64/seg-00001.m4s", b"segment").unwrap();
        let path = s.path("hls/m/a64/seg-00001.m4s").unwrap();
        let before = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        let r = s.put("hls/m/a64/seg-00001.m4s", b"segment").unwrap();
        assert_eq!(r.sha256, sha256_hex(b"segment"));
        let after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(before, after, "the same bytes must not replace the file");
        s.put("hls/m/a64/seg-00001.m4s", b"segmenT").unwrap();
        assert_eq!(s.get("hls/m/a64/seg-00001.m4s").unwrap(), b"segmenT");
    }

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
        assert_eq!(leftovers.len(), 1, "no temp files beside the blob");
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0, "no temp files left behind");
        assert!(matches!(s.get("jobs/none"), Err(Error::NotFound(_))));
        assert!(matches!(s.put("../x", b""), Err(Error::InvalidKey(_))));
        let listed = s.list("jobs/").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("jobs/j1/probe/out.json", 6));
        assert!(s.list("jobs/j1/probe/out.jsonx").unwrap().is_empty());
        assert!(s.list("nothing/").unwrap().is_empty());
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
