//! The app bits `diego push` uploads: the app directory as a zip, as cf makes it — without
//! version-control directories and what `.cfignore` names, with files' modes kept (a start
//! script stays executable).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What cf never uploads.
const ALWAYS_IGNORED: &[&str] = &[".git", ".hg", ".svn", "_darcs", ".DS_Store", ".cfignore"];

/// The most bytes of app bits `diego push` sends (the API's own cap is the final word).
pub const MAX_BITS_BYTES: u64 = 1 << 30;

/// Zips `dir`. Fails, saying so, when it is not a directory or holds no file to upload.
pub fn zip_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the app directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory (-p names the app's directory)",
            dir.display()
        );
    }
    let ignores = read_cfignore(dir)?;
    let mut files = Vec::new();
    collect(dir, Path::new(""), &ignores, &mut files)?;
    if files.is_empty() {
        bail!(
            "the app directory {} is empty: there is nothing to push",
            dir.display()
        );
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut total = 0u64;
    for (relative, mode) in files {
        let path = dir.join(&relative);
        let name = relative.to_string_lossy().replace('\\', "/");
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode & 0o777);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        total += bytes.len() as u64;
        if total > MAX_BITS_BYTES {
            bail!(
                "the app directory {} holds over {} MiB: too large to push",
                dir.display(),
                MAX_BITS_BYTES >> 20
            );
        }
        zip.start_file(name, options)
            .context("cannot add a file to the app's zip")?;
        zip.write_all(&bytes)
            .context("cannot add a file to the app's zip")?;
    }
    let cursor = zip.finish().context("cannot finish the app's zip")?;
    Ok(cursor.into_inner())
}

/// `.cfignore`'s patterns: one per line, `#` comments; a pattern names a file or directory
/// (by its path from the app root or by its name anywhere), `*` matching within a name.
fn read_cfignore(dir: &Path) -> anyhow::Result<Vec<String>> {
    let path = dir.join(".cfignore");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/'))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn ignored(relative: &Path, name: &str, ignores: &[String]) -> bool {
    if ALWAYS_IGNORED.contains(&name) {
        return true;
    }
    let rel = relative.to_string_lossy();
    ignores
        .iter()
        .any(|p| glob_match(p, &rel) || (!p.contains('/') && glob_match(p, name)))
}

/// `*` matches any run of characters but `/`; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(rest) = text.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .take_while(|&i| !rest[..i].contains('/'))
                .any(|i| glob_match(tail, &rest[i..]))
        }
    }
}

fn collect(
    root: &Path,
    relative: &Path,
    ignores: &[String],
    out: &mut Vec<(PathBuf, u32)>,
) -> anyhow::Result<()> {
    let dir = root.join(relative);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = relative.join(&name);
        if ignored(&rel, &name, ignores) {
            continue;
        }
        // Follow symlinks as cf does: the target's contents are uploaded.
        let meta = std::fs::metadata(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        if meta.is_dir() {
            collect(root, &rel, ignores, out)?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt as _;
            out.push((rel, meta.permissions().mode()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zips_the_app_without_what_cf_ignores() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join(".git"))?;
        std::fs::write(dir.path().join(".git/HEAD"), "ref")?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        std::fs::write(dir.path().join("logs/a.log"), "x")?;
        std::fs::write(dir.path().join("app.py"), "print(1)")?;
        std::fs::write(dir.path().join("secret.pem"), "k")?;
        std::fs::write(dir.path().join(".cfignore"), "# comment\nlogs/\n*.pem\n")?;
        std::fs::write(dir.path().join("start.sh"), "#!/bin/sh\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            dir.path().join("start.sh"),
            std::fs::Permissions::from_mode(0o755),
        )?;
        let bytes = zip_dir(dir.path())?;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
        let mut names = Vec::new();
        for i in 0..archive.len() {
            names.push(archive.by_index(i)?.name()?.into_owned());
        }
        names.sort();
        assert_eq!(names, ["app.py", "start.sh"]);
        let mode = archive.by_name("start.sh")?.unix_mode().unwrap_or(0);
        assert_eq!(mode & 0o777, 0o755);
        Ok(())
    }

    #[test]
    fn an_empty_directory_is_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join(".git"))?;
        std::fs::write(dir.path().join(".git/HEAD"), "ref")?;
        let err = zip_dir(dir.path()).err().context("must fail")?.to_string();
        assert!(err.contains("is empty"), "{err}");
        let err = zip_dir(&dir.path().join("nope"))
            .err()
            .context("must fail")?;
        assert!(format!("{err:#}").contains("cannot read the app directory"));
        Ok(())
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.pem", "a.pem"));
        assert!(!glob_match("*.pem", "dir/a.pem"));
        assert!(glob_match("logs", "logs"));
        assert!(glob_match("a*c", "abbc"));
        assert!(!glob_match("a*c", "abd"));
    }
}
