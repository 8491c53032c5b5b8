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
    #[error("cannot write the converted archive: {0}")]
    Io(#[from] std::io::Error),
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

/// Lists a zip's files, checking every path.
pub fn zip_contents(path: &Path) -> Result<Contents, ArchiveError> {
    let file = BufReader::new(File::open(path)?);
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
    let mut contents = Contents::default();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        let raw = entry
            .name()
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        let name = clean(&raw)?;
        if !entry.is_dir() && !name.is_empty() {
            contents.files.insert(name);
        }
    }
    Ok(contents)
}

/// Converts a gzipped tar into a zip at `out` (modes and symlinks kept), listing its files.
pub fn tgz_to_zip(src: &Path, out: &Path) -> Result<Contents, ArchiveError> {
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
                std::io::copy(&mut entry, &mut zip).map_err(unreadable)?;
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
        let contents = tgz_to_zip(&src, &out).unwrap();
        assert_eq!(detect(&out).unwrap(), ArchiveKind::Zip);
        assert_eq!(zip_contents(&out).unwrap().files, contents.files);
        assert!(contents.files.contains("bin/detect"));
        assert_eq!(buildpack_missing(&contents), None);
    }

    #[test]
    fn empty_and_unknown_archives() {
        let dir = tempfile::tempdir().unwrap();
        let src = tgz(dir.path(), &[]);
        let contents = tgz_to_zip(&src, &dir.path().join("e.zip")).unwrap();
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
}
