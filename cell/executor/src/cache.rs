//! The download cache: artifacts fetched with a `cache_key` are kept on local disk, so the
//! next download with the same key and URL does not touch the network.
//!
//! Layout: `<dir>/<sha256(cache_key)>.data` (the bytes as downloaded) and `.meta` (the URL,
//! size and md5/sha1/sha256 of the bytes, computed while downloading, so a checksum is
//! verified against a cached entry without reading it again). Least recently used entries are
//! evicted beyond `max_bytes`. One download per key at a time (a per-key lock); a second
//! waits and then finds the entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::Digest;

/// Hex digests of a downloaded artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Digests {
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
}

impl Digests {
    /// The digest for a Diego `checksum_algorithm` (md5, sha1, sha256; any case).
    pub fn get(&self, algorithm: &str) -> Option<&str> {
        match algorithm.to_ascii_lowercase().as_str() {
            "md5" => Some(&self.md5),
            "sha1" => Some(&self.sha1),
            "sha256" => Some(&self.sha256),
            _ => None,
        }
    }

    /// Checks a Diego checksum; `None` when it matches (or none is set), else why not.
    pub fn verify(&self, algorithm: &str, expected: &str) -> Option<String> {
        if expected.is_empty() {
            return None;
        }
        match self.get(algorithm) {
            None => Some(format!("unsupported checksum algorithm {algorithm:?}")),
            Some(actual) if actual.eq_ignore_ascii_case(expected.trim()) => None,
            Some(actual) => Some(format!(
                "checksum mismatch: expected {} {expected}, got {actual}",
                algorithm.to_ascii_lowercase()
            )),
        }
    }
}

/// Hashes bytes with all three algorithms at once.
#[derive(Default)]
pub(crate) struct Hasher {
    md5: md5::Md5,
    sha1: sha1::Sha1,
    sha256: sha2::Sha256,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha1.update(bytes);
        self.sha256.update(bytes);
    }

    pub fn finish(self) -> Digests {
        Digests {
            md5: hex(&self.md5.finalize()),
            sha1: hex(&self.sha1.finalize()),
            sha256: hex(&self.sha256.finalize()),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A cached artifact.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub data: PathBuf,
    pub size: u64,
    pub digests: Digests,
}

#[derive(Debug)]
pub(crate) struct DownloadCache {
    dir: PathBuf,
    max_bytes: u64,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DownloadCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> Self {
        DownloadCache {
            dir,
            max_bytes,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock serialising downloads of one key.
    pub fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // forget locks nobody holds, so the map does not grow without bound
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        let name = hex(&sha2::Sha256::digest(key.as_bytes()));
        (
            self.dir.join(format!("{name}.data")),
            self.dir.join(format!("{name}.meta")),
        )
    }

    /// The entry for `key` if it was downloaded from `url`; marks it recently used.
    pub fn get(&self, key: &str, url: &str) -> Option<Entry> {
        let (data, meta) = self.paths(key);
        let text = std::fs::read_to_string(&meta).ok()?;
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k, v);
            }
        }
        if fields.get("url") != Some(&url) {
            return None;
        }
        let size: u64 = fields.get("size")?.parse().ok()?;
        if std::fs::metadata(&data).ok()?.len() != size {
            return None;
        }
        if let Ok(f) = std::fs::File::options().append(true).open(&meta) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(Entry {
            data,
            size,
            digests: Digests {
                md5: fields.get("md5")?.to_string(),
                sha1: fields.get("sha1")?.to_string(),
                sha256: fields.get("sha256")?.to_string(),
            },
        })
    }

    /// Moves a downloaded file into the cache as `key`'s entry, then evicts beyond the budget.
    pub fn insert(
        &self,
        key: &str,
        url: &str,
        file: tempfile::TempPath,
        size: u64,
        digests: &Digests,
    ) -> std::io::Result<Entry> {
        let (data, meta) = self.paths(key);
        let _ = std::fs::remove_file(&meta);
        file.persist(&data).map_err(|e| e.error)?;
        // the URL may not hold a newline (it would forge fields); such URLs are not cached
        let url_line = url.replace(['\n', '\r'], "");
        let text = format!(
            "url={url_line}\nsize={size}\nmd5={}\nsha1={}\nsha256={}\n",
            digests.md5, digests.sha1, digests.sha256
        );
        let tmp = meta.with_extension("meta.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &meta)?;
        self.evict(&data);
        Ok(Entry {
            data,
            size,
            digests: digests.clone(),
        })
    }

    /// Deletes least recently used entries (never `keep`) until the cache fits its budget.
    fn evict(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in dir.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "meta") {
                continue;
            }
            let data = path.with_extension("data");
            let size = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
            let used = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            total += size;
            entries.push((used, path, data, size));
        }
        entries.sort_by_key(|(used, ..)| *used);
        for (_, meta, data, size) in entries {
            if total <= self.max_bytes {
                break;
            }
            if data == keep {
                continue;
            }
            tracing::info!(entry = %data.display(), size, "evicting from the download cache");
            let _ = std::fs::remove_file(meta);
            let _ = std::fs::remove_file(data);
            total -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn download(dir: &Path, bytes: &[u8]) -> (tempfile::TempPath, Digests) {
        let mut f = tempfile::NamedTempFile::new_in(dir).unwrap();
        f.write_all(bytes).unwrap();
        let mut h = Hasher::default();
        h.update(bytes);
        (f.into_temp_path(), h.finish())
    }

    #[test]
    fn entries_are_found_by_key_and_url_and_evicted_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DownloadCache::new(dir.path().to_path_buf(), 10);
        let (f, d) = download(dir.path(), b"abcdef");
        cache.insert("k1", "http://x/1", f, 6, &d).unwrap();
        assert!(cache.get("k1", "http://x/other").is_none());
        let e = cache.get("k1", "http://x/1").unwrap();
        assert_eq!(std::fs::read(&e.data).unwrap(), b"abcdef");
        assert_eq!(
            e.digests.sha256,
            "bef57ec7f53a6d40beb640a780a639c83bc29ac8a9816f1fc6c5c6dcd93c4721"
        );
        assert_eq!(e.digests.md5, "e80b5017098950fc58aad83c8c14978e");
        assert_eq!(
            e.digests.verify("SHA256", &e.digests.sha256.to_uppercase()),
            None
        );
        assert!(
            e.digests
                .verify("sha1", "00")
                .unwrap()
                .contains("checksum mismatch: expected sha1 00, got ")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (f, d) = download(dir.path(), b"123456");
        cache.insert("k2", "http://x/2", f, 6, &d).unwrap();
        // 12 bytes > 10: the older k1 goes, the new k2 stays
        assert!(cache.get("k1", "http://x/1").is_none());
        assert!(cache.get("k2", "http://x/2").is_some());
    }
}
