//! App and buildpack archives: recognise a zip or a gzipped tar, refuse an empty or unsafe
//! one, turn a tgz into a zip (one format in the blob store; the cell's download action
//! extracts both), and check a buildpack's `bin/` scripts.
//!
//! Blocking (file I/O and decompression): call from `spawn_blocking`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Component, Path};

/// What kind of archive a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Zip,
    TarGz,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "the body is neither a zip nor a gzipped tar (Content-Type application/zip or application/gzip)"
    )]
    UnknownFormat,
    #[error("the archive is unreadable: {0}")]
    Unreadable(String),
    #[error("the archive entry {0:?} escapes the app directory")]
    UnsafePath(String),
    /// Over one of [`ArchiveLimits`]: the message names the cap.
    #[error("{0}")]
    TooLarge(String),
    #[error("cannot write the converted archive: {0}")]
    Io(#[from] std::io::Error),
}

/// Bounds on what an archive may unpack to, so a small upload cannot be a bomb for whoever
/// extracts it (this API converting a tgz, a cell extracting a zip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Total uncompressed bytes of every entry.
    pub max_total_bytes: u64,
    pub max_entries: usize,
    /// Longest entry name, in bytes.
    pub max_name_bytes: usize,
}

/// Entries an archive may hold.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest entry name.
pub const MAX_NAME_BYTES: usize = 4096;

impl ArchiveLimits {
    /// The caps for uploads of at most `max_upload_bytes` (also the bound on what they unpack to).
    pub fn for_uploads(max_upload_bytes: u64) -> Self {
        ArchiveLimits {
            max_total_bytes: max_upload_bytes,
            max_entries: MAX_ENTRIES,
            max_name_bytes: MAX_NAME_BYTES,
        }
    }
}

/// Counts entries and uncompressed bytes against the limits as an archive is walked.
struct Budget {
    limits: ArchiveLimits,
    entries: usize,
    bytes: u64,
}

impl Budget {
    fn new(limits: ArchiveLimits) -> Self {
        Budget {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    fn entry(&mut self, raw_name: &str) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooLarge(format!(
                "the archive has more than {} entries",
                self.limits.max_entries
            )));
        }
        if raw_name.len() > self.limits.max_name_bytes {
            return Err(ArchiveError::TooLarge(format!(
                "an entry name is {} bytes, more than the {} allowed",
                raw_name.len(),
                self.limits.max_name_bytes
            )));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<(), ArchiveError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_total_bytes {
            return Err(self.over());
        }
        Ok(())
    }

    fn over(&self) -> ArchiveError {
        ArchiveError::TooLarge(format!(
            "the archive unpacks to more than {} bytes",
            self.limits.max_total_bytes
        ))
    }

    /// Bytes still allowed.
    fn left(&self) -> u64 {
        self.limits.max_total_bytes.saturating_sub(self.bytes)
    }
}

/// What an archive holds: the relative paths of its regular files (and symlinks).
#[derive(Debug, Clone, Default)]
pub struct Contents {
    pub files: BTreeSet<String>,
}

/// Recognises the archive by its first bytes (the Content-Type is only a hint: clients get it
/// wrong more often than the magic numbers lie).
pub fn detect(path: &Path) -> Result<ArchiveKind, ArchiveError> {
    let mut head = [0u8; 4];
    let mut file = File::open(path)?;
    let n = read_up_to(&mut file, &mut head)?;
    match &head[..n] {
        [b'P', b'K', 3, 4] | [b'P', b'K', 5, 6] => Ok(ArchiveKind::Zip),
        [0x1f, 0x8b, ..] => Ok(ArchiveKind::TarGz),
        _ => Err(ArchiveError::UnknownFormat),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A relative, normalised entry path (`./a/b` → `a/b`), or an error if it leaves the root.
fn clean(name: &str) -> Result<String, ArchiveError> {
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::UnsafePath(name.to_owned()));
            }
        }
    }
    Ok(parts.join("/"))
}

/// Lists a zip's files, checking every path and the limits (by the sizes the zip declares:
/// an extractor that trusts them stops there, and one that does not must check anyway).
pub fn zip_contents(path: &Path, limits: ArchiveLimits) -> Result<Contents, ArchiveError> {
    let file = BufReader::new(File::open(path)?);
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
    if archive.len() > limits.max_entries {
        return Err(ArchiveError::TooLarge(format!(
            "the archive has {} entries, more than the {} allowed",
            archive.len(),
            limits.max_entries
        )));
    }
    let mut budget = Budget::new(limits);
    let mut contents = Contents::default();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        let raw = entry
            .name()
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        budget.entry(&raw)?;
        budget.bytes(entry.size())?;
        let name = clean(&raw)?;
        if !entry.is_dir() && !name.is_empty() {
            contents.files.insert(name);
        }
    }
    Ok(contents)
}

/// Converts a gzipped tar into a zip at `out` (modes and symlinks kept), listing its files;
/// the bytes actually unpacked count against the limits, whatever the headers say.
pub fn tgz_to_zip(src: &Path, out: &Path, limits: ArchiveLimits) -> Result<Contents, ArchiveError> {
    let mut budget = Budget::new(limits);
    let unreadable = |e: std::io::Error| ArchiveError::Unreadable(e.to_string());
    let gz = flate2::read::GzDecoder::new(BufReader::new(File::open(src)?));
    let mut tar = tar::Archive::new(gz);
    let mut zip = zip::ZipWriter::new(File::create(out)?);
    let zip_err = |e: zip::result::ZipError| ArchiveError::Io(std::io::Error::other(e));
    let mut contents = Contents::default();
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        budget.entry(&raw)?;
        let name = clean(&raw)?;
        if name.is_empty() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                zip.add_directory(format!("{name}/"), options)
                    .map_err(zip_err)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                zip.start_file(name.clone(), options).map_err(zip_err)?;
                // One byte more than is left tells "over the cap" from "exactly at it".
                let mut capped = (&mut entry).take(budget.left().saturating_add(1));
                let copied = std::io::copy(&mut capped, &mut zip).map_err(unreadable)?;
                budget.bytes(copied)?;
                contents.files.insert(name);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(unreadable)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                zip.add_symlink(name.clone(), target, options)
                    .map_err(zip_err)?;
                contents.files.insert(name);
            }
            // Hard links, devices and fifos have no place in an app directory.
            _ => {}
        }
    }
    let mut file = zip.finish().map_err(zip_err)?;
    file.rewind()?;
    file.sync_all()?;
    Ok(contents)
}

/// What a buildpack lacks, if anything: it needs `bin/detect`, and `bin/compile` or
/// `bin/supply` / `bin/finalize`.
pub fn buildpack_missing(contents: &Contents) -> Option<String> {
    let has = |f: &str| contents.files.contains(f);
    let mut missing = Vec::new();
    if !has("bin/detect") {
        missing.push("bin/detect");
    }
    if !has("bin/compile") && !has("bin/supply") && !has("bin/finalize") {
        missing.push("bin/compile (or bin/supply and bin/finalize)");
    }
    (!missing.is_empty()).then(|| format!("the buildpack has no {}", missing.join(" and no ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: ArchiveLimits = ArchiveLimits {
        max_total_bytes: 1 << 20,
        max_entries: MAX_ENTRIES,
        max_name_bytes: MAX_NAME_BYTES,
    };

    fn tgz(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
        let path = dir.join("a.tgz");
        let gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn a_tgz_becomes_a_zip_with_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let src = tgz(
            dir.path(),
            &[("./bin/detect", "#!/bin/sh"), ("bin/compile", "x")],
        );
        assert_eq!(detect(&src).unwrap(), ArchiveKind::TarGz);
        let out = dir.path().join("a.zip");
        let contents = tgz_to_zip(&src, &out, LIMITS).unwrap();
        assert_eq!(detect(&out).unwrap(), ArchiveKind::Zip);
        assert_eq!(zip_contents(&out, LIMITS).unwrap().files, contents.files);
        assert!(contents.files.contains("bin/detect"));
        assert_eq!(buildpack_missing(&contents), None);
    }

    #[test]
    fn empty_and_unknown_archives() {
        let dir = tempfile::tempdir().unwrap();
        let src = tgz(dir.path(), &[]);
        let contents = tgz_to_zip(&src, &dir.path().join("e.zip"), LIMITS).unwrap();
        assert!(contents.files.is_empty());
        let junk = dir.path().join("junk");
        File::create(&junk).unwrap().write_all(b"hello").unwrap();
        assert!(matches!(detect(&junk), Err(ArchiveError::UnknownFormat)));
    }

    #[test]
    fn traversal_is_refused_and_missing_scripts_named() {
        assert!(clean("../x").is_err());
        assert!(clean("/etc/passwd").is_err());
        assert_eq!(clean("./a/./b").unwrap(), "a/b");
        let mut c = Contents::default();
        c.files.insert("bin/compile".into());
        let m = buildpack_missing(&c).unwrap();
        assert!(m.contains("bin/detect") && !m.contains("compile"), "{m}");
        c.files.insert("bin/detect".into());
        c.files.remove("bin/compile");
        c.files.insert("bin/supply".into());
        assert_eq!(buildpack_missing(&c), None);
    }

    fn zip_file(dir: &Path, files: &[(String, Vec<u8>)]) -> std::path::PathBuf {
        let path = dir.join("a.zip");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in files {
            zip.start_file(name.as_str(), options).unwrap();
            zip.write_all(body).unwrap();
        }
        zip.finish().unwrap();
        path
    }

    fn too_large(r: Result<Contents, ArchiveError>) -> String {
        match r {
            Err(ArchiveError::TooLarge(m)) => m,
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn bombs_are_refused_naming_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        // 2 MiB of zeros compresses to a few KiB: over a 1 MiB cap by its declared size.
        let zip = zip_file(dir.path(), &[("zeros".into(), vec![0; 2 << 20])]);
        assert!(std::fs::metadata(&zip).unwrap().len() < 64 * 1024);
        let m = too_large(zip_contents(&zip, LIMITS));
        assert!(m.contains(&(1u64 << 20).to_string()), "{m}");
        // The same in a tgz, counted as it is unpacked.
        let zeros = "\0".repeat(2 << 20);
        let tgz = tgz(dir.path(), &[("zeros", zeros.as_str())]);
        let m = too_large(tgz_to_zip(&tgz, &dir.path().join("o.zip"), LIMITS));
        assert!(m.contains("bytes"), "{m}");
        // Too many entries, too long a name.
        let few = ArchiveLimits {
            max_entries: 3,
            ..LIMITS
        };
        let many: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("f{i}"), vec![1])).collect();
        let m = too_large(zip_contents(&zip_file(dir.path(), &many), few));
        assert!(m.contains("more than the 3"), "{m}");
        let long = vec![("a".repeat(MAX_NAME_BYTES + 1), vec![1])];
        let m = too_large(zip_contents(&zip_file(dir.path(), &long), LIMITS));
        assert!(m.contains(&MAX_NAME_BYTES.to_string()), "{m}");
        // At the caps is fine.
        let exact = vec![("x".into(), vec![7; 1 << 20])];
        assert!(zip_contents(&zip_file(dir.path(), &exact), LIMITS).is_ok());
    }
}
