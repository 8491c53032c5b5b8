//! Tar streaming into and out of a container's root file system, refusing escapes.
//!
//! The container root is reached as `/proc/<init pid>/root` (the container's own mount
//! namespace, including its /tmp), and every path is walked one component at a time with
//! `openat(O_NOFOLLOW)`: a symlink anywhere on the way is refused, so nothing can be written
//! or read outside the root even if a process in the container planted links. An archive is
//! checked completely before anything is written: `..` components, absolute paths, absolute
//! symlink targets, symlinks or hard links that point above the root, devices, and entries that
//! would be written through a symlink from the same archive are all refused.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fchmod, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::error::{Error, Result};
use crate::security::IdMap;

struct Ctx<'a> {
    handle: &'a str,
    /// The container's id mapping: what is written is owned by the mapped host ids, what is
    /// read is reported with the ids inside.
    ids: Option<IdMap>,
}

impl Ctx<'_> {
    /// Host id of `inside` (root inside for an id the mapping lacks).
    fn host_id(&self, inside: u32) -> u32 {
        match self.ids {
            Some(m) => m.to_host(inside).unwrap_or(m.host_base),
            None => inside,
        }
    }

    /// Id inside of a host id (`nobody`, 65534, for one outside the mapping).
    fn inside_id(&self, host: u32) -> u32 {
        match self.ids {
            Some(m) if host >= m.host_base && host - m.host_base < m.size => host - m.host_base,
            Some(_) => 65_534,
            None => host,
        }
    }
}

impl Ctx<'_> {
    fn escape(&self, path: impl AsRef<Path>, reason: impl Into<String>) -> Error {
        Error::PathEscape {
            handle: self.handle.to_string(),
            path: path.as_ref().display().to_string(),
            reason: reason.into(),
        }
    }
}

/// Splits a relative path into normal components; `..`, absolute paths and prefixes are refused.
fn normal_components(ctx: &Ctx<'_>, path: &Path) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err(ctx.escape(path, "contains a `..` component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ctx.escape(path, "is an absolute path"));
            }
        }
    }
    Ok(out)
}

/// Lexically resolves `target` relative to the directory `base` (both relative to the root);
/// refuses anything that climbs above the root.
fn resolve_link(
    ctx: &Ctx<'_>,
    entry: &Path,
    base: &[OsString],
    target: &Path,
) -> Result<Vec<OsString>> {
    if target.is_absolute() {
        return Err(ctx.escape(
            entry,
            format!("link target {} is absolute", target.display()),
        ));
    }
    let mut stack: Vec<OsString> = base.to_vec();
    for c in target.components() {
        match c {
            Component::Normal(n) => stack.push(n.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                if stack.pop().is_none() {
                    return Err(ctx.escape(
                        entry,
                        format!(
                            "link target {} points outside the container",
                            target.display()
                        ),
                    ));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ctx.escape(entry, "link target is absolute"));
            }
        }
    }
    Ok(stack)
}

fn open_root(ctx: &Ctx<'_>, root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open root of container {}", ctx.handle), e))
}

fn is_symlink_at(dir: &OwnedFd, name: &OsStr) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .unwrap_or(false)
}

/// Walks `comps` from `base`, refusing symlinks; creates missing directories when `create`.
fn walk_dirs(ctx: &Ctx<'_>, base: &OwnedFd, comps: &[OsString], create: bool) -> Result<OwnedFd> {
    let mut cur = base.try_clone().map_err(|e| Error::io("dup dir fd", e))?;
    let mut so_far = PathBuf::from("/");
    for c in comps {
        so_far.push(c);
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let next = match openat(&cur, c.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&cur, c.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        if ctx.ids.is_some() {
                            let root = ctx.host_id(0);
                            let _ = fchownat(
                                &cur,
                                c.as_os_str(),
                                Some(Uid::from_raw(root)),
                                Some(Gid::from_raw(root)),
                                AtFlags::AT_SYMLINK_NOFOLLOW,
                            );
                        }
                    }
                    Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(Error::sys(
                            format!("mkdir {} in container {}", so_far.display(), ctx.handle),
                            e,
                        ));
                    }
                }
                openat(&cur, c.as_os_str(), flags, Mode::empty()).map_err(|e| {
                    Error::sys(
                        format!("open {} in container {}", so_far.display(), ctx.handle),
                        e,
                    )
                })?
            }
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) if is_symlink_at(&cur, c) => {
                return Err(ctx.escape(&so_far, "is a symlink; refusing to follow it"));
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("open {} in container {}", so_far.display(), ctx.handle),
                    e,
                ));
            }
        };
        cur = next;
    }
    Ok(cur)
}

/// Checks a whole archive; returns nothing but fails on the first refused entry.
fn validate(ctx: &Ctx<'_>, data: impl Read) -> Result<()> {
    let mut archive = tar::Archive::new(data);
    let mut symlinks: HashSet<Vec<OsString>> = HashSet::new();
    for entry in archive
        .entries()
        .map_err(|e| Error::io("read tar stream", e))?
    {
        let entry = entry.map_err(|e| Error::io("read tar entry", e))?;
        let path = entry
            .path()
            .map_err(|e| Error::io("tar entry path", e))?
            .into_owned();
        let comps = normal_components(ctx, &path)?;
        for i in 1..comps.len() {
            if symlinks.contains(&comps[..i]) {
                return Err(ctx.escape(&path, "would be written through a symlink in the archive"));
            }
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("tar link name", e))?
                    .ok_or_else(|| ctx.escape(&path, "link without a target"))?
                    .into_owned();
                if kind == tar::EntryType::Symlink {
                    let parent = &comps[..comps.len().saturating_sub(1)];
                    resolve_link(ctx, &path, parent, &target)?;
                    symlinks.insert(comps.clone());
                } else {
                    normal_components(ctx, &target)?;
                }
            }
            tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
            | tar::EntryType::XHeader
            | tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(Error::InvalidRequest(format!(
                    "tar entry {} has unsupported type {other:?}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Extracts a tar archive under `dest` (a path inside the container) of the container whose
/// root is `root` (normally `/proc/<pid>/root`).
pub fn stream_in<R: Read + Seek>(root: &Path, handle: &str, dest: &str, data: R) -> Result<()> {
    stream_in_mapped(root, handle, dest, data, None)
}

/// [`stream_in`] into a container with its own user namespace: entries' owners (and the
/// directories made on the way, owned by root inside) are written as the mapped host ids.
pub fn stream_in_mapped<R: Read + Seek>(
    root: &Path,
    handle: &str,
    dest: &str,
    mut data: R,
    ids: Option<IdMap>,
) -> Result<()> {
    let ctx = Ctx { handle, ids };
    // both passes read the archive from its start, wherever the reader was left
    data.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("rewind tar stream", e))?;
    validate(&ctx, &mut data)?;
    data.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("rewind tar stream", e))?;
    let dest_comps = normal_components(&ctx, Path::new(dest.trim_start_matches('/')))?;
    let root_fd = open_root(&ctx, root)?;
    let dest_fd = walk_dirs(&ctx, &root_fd, &dest_comps, true)?;
    let mut archive = tar::Archive::new(data);
    for entry in archive
        .entries()
        .map_err(|e| Error::io("read tar stream", e))?
    {
        let mut entry = entry.map_err(|e| Error::io("read tar entry", e))?;
        let path = entry
            .path()
            .map_err(|e| Error::io("tar entry path", e))?
            .into_owned();
        let comps = normal_components(&ctx, &path)?;
        let Some((name, parents)) = comps.split_last() else {
            continue; // "./" itself
        };
        let parent = walk_dirs(&ctx, &dest_fd, parents, true)?;
        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
        let uid = header.uid().ok().and_then(|u| u32::try_from(u).ok());
        let gid = header.gid().ok().and_then(|g| u32::try_from(g).ok());
        let shown = Path::new(dest).join(&path);
        match header.entry_type() {
            tar::EntryType::Directory => {
                match mkdirat(&parent, name.as_os_str(), mode) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(Error::sys(
                            format!("mkdir {} in container {handle}", shown.display()),
                            e,
                        ));
                    }
                }
                let dir = walk_dirs(&ctx, &parent, std::slice::from_ref(name), false)?;
                let _ = fchmod(&dir, mode);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = openat(
                    &parent,
                    name.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_TRUNC
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    mode,
                )
                .map_err(|e| match e {
                    Errno::ELOOP => {
                        ctx.escape(&shown, "is a symlink; refusing to write through it")
                    }
                    e => Error::sys(
                        format!("create {} in container {handle}", shown.display()),
                        e,
                    ),
                })?;
                let mut file = File::from(fd);
                std::io::copy(&mut entry, &mut file).map_err(|e| {
                    Error::io(
                        format!("write {} in container {handle}", shown.display()),
                        e,
                    )
                })?;
                let _ = fchmod(&file, mode);
                file.flush().map_err(|e| Error::io("flush", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("tar link name", e))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                // checked in the first pass already; checked again where it is written
                resolve_link(&ctx, &path, parents, &target)?;
                let _ = unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                symlinkat(target.as_os_str(), &parent, name.as_os_str()).map_err(|e| {
                    Error::sys(
                        format!("symlink {} in container {handle}", shown.display()),
                        e,
                    )
                })?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("tar link name", e))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let tcomps = normal_components(&ctx, &target)?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(ctx.escape(&path, "hard link to the destination itself"));
                };
                let tparent = walk_dirs(&ctx, &dest_fd, tparents, false)?;
                let _ = unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                linkat(
                    &tparent,
                    tname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| {
                    Error::sys(format!("link {} in container {handle}", shown.display()), e)
                })?;
            }
            _ => continue,
        }
        if ctx.ids.is_some() {
            let _ = fchownat(
                &parent,
                name.as_os_str(),
                Some(Uid::from_raw(ctx.host_id(uid.unwrap_or(0)))),
                Some(Gid::from_raw(ctx.host_id(gid.unwrap_or(0)))),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        } else if uid.is_some() || gid.is_some() {
            let _ = fchownat(
                &parent,
                name.as_os_str(),
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
        }
    }
    Ok(())
}

fn header_for(ctx: &Ctx<'_>, st: &FileStat, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(ctx.inside_id(st.st_uid)));
    h.set_gid(u64::from(ctx.inside_id(st.st_gid)));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_size(size);
    h
}

/// A resolved source for [`stream_out`]: resolving first lets a caller report a bad path
/// before it starts streaming.
#[derive(Debug)]
pub struct OutSource {
    handle: String,
    ids: Option<IdMap>,
    dir: OwnedFd,
    name: Option<OsString>,
}

/// Resolves `src` (a file or directory inside the container) without following symlinks.
pub fn resolve_out(root: &Path, handle: &str, src: &str) -> Result<OutSource> {
    resolve_out_mapped(root, handle, src, None)
}

/// [`resolve_out`] for a container with its own user namespace: owners are reported as the
/// ids inside.
pub fn resolve_out_mapped(
    root: &Path,
    handle: &str,
    src: &str,
    ids: Option<IdMap>,
) -> Result<OutSource> {
    let ctx = Ctx { handle, ids };
    let comps = normal_components(&ctx, Path::new(src.trim_start_matches('/')))?;
    let root_fd = open_root(&ctx, root)?;
    match comps.split_last() {
        None => Ok(OutSource {
            handle: handle.to_string(),
            ids,
            dir: root_fd,
            name: None,
        }),
        Some((name, parents)) => {
            let parent = walk_dirs(&ctx, &root_fd, parents, false)?;
            fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| Error::sys(format!("stat {src} in container {handle}"), e))?;
            Ok(OutSource {
                handle: handle.to_string(),
                ids,
                dir: parent,
                name: Some(name.clone()),
            })
        }
    }
}

/// Writes `source` as a tar stream to `out`; entries are named after the last component of
/// the path (`.` for the root).
pub fn write_out(source: &OutSource, out: impl Write) -> Result<()> {
    let ctx = Ctx {
        handle: &source.handle,
        ids: source.ids,
    };
    let mut builder = tar::Builder::new(out);
    match &source.name {
        None => add_dir(&ctx, &mut builder, &source.dir, Path::new("."))?,
        Some(name) => add_entry(&ctx, &mut builder, &source.dir, name, Path::new(name))?,
    }
    builder
        .finish()
        .map_err(|e| Error::io("finish tar stream", e))
}

/// [`resolve_out`] and [`write_out`] into memory.
pub fn stream_out(root: &Path, handle: &str, src: &str) -> Result<Vec<u8>> {
    let source = resolve_out(root, handle, src)?;
    let mut out = Vec::new();
    write_out(&source, &mut out)?;
    Ok(out)
}

fn add_entry<W: Write>(
    ctx: &Ctx<'_>,
    b: &mut tar::Builder<W>,
    parent: &OwnedFd,
    name: &OsStr,
    arc: &Path,
) -> Result<()> {
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
        Error::sys(
            format!("stat {} in container {}", arc.display(), ctx.handle),
            e,
        )
    })?;
    let io = |e: std::io::Error| Error::io(format!("archive {}", arc.display()), e);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            let dir = walk_dirs(ctx, parent, &[name.to_os_string()], false)?;
            add_dir(ctx, b, &dir, arc)
        }
        libc::S_IFREG => {
            let fd = openat(
                parent,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                Error::sys(
                    format!("open {} in container {}", arc.display(), ctx.handle),
                    e,
                )
            })?;
            let file = File::from(fd);
            let size = u64::try_from(st.st_size).unwrap_or(0);
            let mut h = header_for(ctx, &st, tar::EntryType::Regular, size);
            // exactly `size` bytes even if the file changes meanwhile
            let reader = file.take(size).chain(std::io::repeat(0)).take(size);
            b.append_data(&mut h, arc, reader).map_err(io)
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(parent, name).map_err(|e| {
                Error::sys(
                    format!("readlink {} in container {}", arc.display(), ctx.handle),
                    e,
                )
            })?;
            let mut h = header_for(ctx, &st, tar::EntryType::Symlink, 0);
            b.append_link(&mut h, arc, Path::new(&target)).map_err(io)
        }
        _ => Ok(()), // devices, fifos, sockets are not archived
    }
}

fn add_dir<W: Write>(
    ctx: &Ctx<'_>,
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    arc: &Path,
) -> Result<()> {
    let st =
        nix::sys::stat::fstat(dir).map_err(|e| Error::sys(format!("stat {}", arc.display()), e))?;
    let mut h = header_for(ctx, &st, tar::EntryType::Directory, 0);
    b.append_data(&mut h, arc, std::io::empty())
        .map_err(|e| Error::io(format!("archive {}", arc.display()), e))?;
    let dup = dir.try_clone().map_err(|e| Error::io("dup dir fd", e))?;
    let mut d = nix::dir::Dir::from_fd(dup)
        .map_err(|e| Error::sys(format!("list {}", arc.display()), e))?;
    let mut names: Vec<OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    for n in names {
        add_entry(ctx, b, dir, &n, &arc.join(&n))?;
    }
    let _ = dir.as_fd().as_raw_fd();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn raw_tar_with_path(path: &str) -> Vec<u8> {
        // tar::Builder refuses `..`, so write the header name by hand
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(&[b'x'; 512]);
        out.extend_from_slice(&[0; 1024]);
        out
    }

    #[test]
    fn refuses_escapes_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let cases = [
            raw_tar_with_path("../evil"),
            raw_tar_with_path("a/../../evil"),
            tar_of(&[
                ("ok", tar::EntryType::Regular, "1"),
                ("l", tar::EntryType::Symlink, "/etc"),
            ]),
            tar_of(&[("l", tar::EntryType::Symlink, "../..")]),
            tar_of(&[("d/l", tar::EntryType::Symlink, "../../x")]),
            tar_of(&[
                ("l", tar::EntryType::Symlink, "d"),
                ("l/f", tar::EntryType::Regular, "x"),
            ]),
            tar_of(&[("h", tar::EntryType::Link, "../outside")]),
        ];
        for (i, t) in cases.iter().enumerate() {
            let err = stream_in(&root, "h1", "/", std::io::Cursor::new(t)).unwrap_err();
            assert!(matches!(err, Error::PathEscape { .. }), "case {i}: {err}");
        }
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn validates_from_the_start_whatever_the_reader_position() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().unwrap();
        let t = tar_of(&[("l", tar::EntryType::Symlink, "/etc")]);
        let mut cursor = std::io::Cursor::new(t);
        cursor.seek(SeekFrom::End(0)).unwrap();
        let err = stream_in(dir.path(), "h1", "/", cursor).unwrap_err();
        assert!(matches!(err, Error::PathEscape { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn refuses_writing_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let t = tar_of(&[("f", tar::EntryType::Regular, "x")]);
        let err = stream_in(&root, "h1", "/link", std::io::Cursor::new(&t)).unwrap_err();
        assert!(matches!(err, Error::PathEscape { .. }), "{err}");
        std::os::unix::fs::symlink(outside.join("f2"), root.join("f2")).unwrap();
        let t = tar_of(&[("f2", tar::EntryType::Regular, "x")]);
        let err = stream_in(&root, "h1", "/", std::io::Cursor::new(&t)).unwrap_err();
        assert!(matches!(err, Error::PathEscape { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn round_trips_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_of(&[
            ("app", tar::EntryType::Directory, ""),
            ("app/run.sh", tar::EntryType::Regular, "echo hi"),
            ("app/link", tar::EntryType::Symlink, "run.sh"),
            ("app/hard", tar::EntryType::Link, "app/run.sh"),
        ]);
        stream_in(dir.path(), "h1", "/home/vcap", std::io::Cursor::new(&t)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("home/vcap/app/hard")).unwrap(),
            "echo hi"
        );
        let out = stream_out(dir.path(), "h1", "/home/vcap/app").unwrap();
        let mut names: Vec<String> = tar::Archive::new(out.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec!["app", "app/hard", "app/link", "app/run.sh"]);
    }
}
