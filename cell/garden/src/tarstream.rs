//! Tar streaming into and out of a container's root file system, never outside it.
//!
//! The container root is reached as `/proc/<init pid>/root` (the container's own mount
//! namespace, including its /tmp). Paths resolve as they would inside the container, like
//! Garden's tar run in the container's namespaces: every lookup is `openat2` with
//! `RESOLVE_IN_ROOT` from the root, so an absolute symlink target means the container's path
//! and `..` stops at its root, whoever planted the link (the archive or a process inside);
//! the kernel checks this on every lookup, races included. Magic links (`/proc/PID/root`...)
//! are not followed, and nothing is written under the container's /proc or /sys. Links in an
//! archive are written as they are. An archive is checked completely before anything is
//! written: entry names and hard link targets with `..` or absolute are refused, and so are
//! devices. A final path component that is a symlink is replaced, not written through, as
//! GNU tar does.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
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

/// Lookups as inside the container: `/` is its root, `..` stops there, no magic links.
fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `comps` as a relative path (`.` for none).
fn rel_path(comps: &[OsString]) -> PathBuf {
    if comps.is_empty() {
        return PathBuf::from(".");
    }
    comps.iter().collect()
}

/// Opens the directory `comps` (relative to the container root `root`), symlinks on the way
/// resolved inside the root.
fn open_dir_in_root(root: &OwnedFd, comps: &[OsString]) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(in_root());
    let path = rel_path(comps);
    let mut tries = 0;
    loop {
        match openat2(root, path.as_path(), how) {
            // a rename in the container raced the lookup: the kernel asks us to retry
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

/// [`open_dir_in_root`], making missing directories (owned by root inside) when `create`.
fn dir_in_root(ctx: &Ctx<'_>, root: &OwnedFd, comps: &[OsString], create: bool) -> Result<OwnedFd> {
    let shown = |n: usize| Path::new("/").join(rel_path(&comps[..n]));
    let fail = |n: usize, what: &str, e: Errno| {
        Error::sys(
            format!("{what} {} in container {}", shown(n).display(), ctx.handle),
            e,
        )
    };
    match open_dir_in_root(root, comps) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if create => {}
        Err(e) => return Err(fail(comps.len(), "open", e)),
    }
    // one component at a time, each lookup from the root again
    let mut cur = root.try_clone().map_err(|e| Error::io("dup dir fd", e))?;
    for i in 0..comps.len() {
        let name = comps[i].as_os_str();
        cur = match open_dir_in_root(root, &comps[..=i]) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) => {
                        if ctx.ids.is_some() {
                            let r = ctx.host_id(0);
                            let _ = fchownat(
                                &cur,
                                name,
                                Some(Uid::from_raw(r)),
                                Some(Gid::from_raw(r)),
                                AtFlags::AT_SYMLINK_NOFOLLOW,
                            );
                        }
                    }
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(fail(i + 1, "mkdir", e)),
                }
                open_dir_in_root(root, &comps[..=i]).map_err(|e| fail(i + 1, "open", e))?
            }
            Err(e) => return Err(fail(i + 1, "open", e)),
        };
    }
    Ok(cur)
}

/// Refuses to write into the container's /proc or /sys (kernel interfaces, not files: the
/// server writes as host root).
fn refuse_kernel_fs(ctx: &Ctx<'_>, dir: &OwnedFd, shown: &Path) -> Result<()> {
    let st = nix::sys::statfs::fstatfs(dir)
        .map_err(|e| Error::sys(format!("statfs {}", shown.display()), e))?;
    let t = st.filesystem_type();
    if t == nix::sys::statfs::PROC_SUPER_MAGIC || t == nix::sys::statfs::SYSFS_MAGIC {
        return Err(ctx.escape(shown, "is in the container's /proc or /sys"));
    }
    Ok(())
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
    for entry in archive
        .entries()
        .map_err(|e| Error::io("read tar stream", e))?
    {
        let entry = entry.map_err(|e| Error::io("read tar entry", e))?;
        let path = entry
            .path()
            .map_err(|e| Error::io("tar entry path", e))?
            .into_owned();
        normal_components(ctx, &path)?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            // a symlink's target is only text here: it is resolved inside the container
            tar::EntryType::Symlink => {}
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::io("tar link name", e))?
                    .ok_or_else(|| ctx.escape(&path, "link without a target"))?
                    .into_owned();
                normal_components(ctx, &target)?;
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
    dir_in_root(&ctx, &root_fd, &dest_comps, true)?;
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
        let mut comps = dest_comps.clone();
        comps.extend(normal_components(&ctx, &path)?);
        let Some((name, parents)) = comps.split_last() else {
            continue; // "./" into the root itself
        };
        if comps.len() == dest_comps.len() {
            continue; // "./": the destination itself
        }
        // from the root each time: a link of this archive or of the container on the way
        // resolves inside the container
        let parent = dir_in_root(&ctx, &root_fd, parents, true)?;
        let shown = Path::new(dest).join(&path);
        refuse_kernel_fs(&ctx, &parent, &shown)?;
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
                // an existing link to a directory is kept and followed (inside the root)
                let dir = dir_in_root(&ctx, &root_fd, &comps, false)?;
                refuse_kernel_fs(&ctx, &dir, &shown)?;
                let _ = fchmod(&dir, mode);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let create = || {
                    openat(
                        &parent,
                        name.as_os_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_TRUNC
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        mode,
                    )
                };
                let fd = match create() {
                    // a symlink is replaced, never written through (GNU tar does the same)
                    Err(Errno::ELOOP) => {
                        let _ = unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir);
                        create()
                    }
                    r => r,
                }
                .map_err(|e| {
                    Error::sys(
                        format!("create {} in container {handle}", shown.display()),
                        e,
                    )
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
                let mut tcomps = dest_comps.clone();
                tcomps.extend(normal_components(&ctx, &target)?);
                let Some((tname, tparents)) = tcomps
                    .split_last()
                    .filter(|_| tcomps.len() > dest_comps.len())
                else {
                    return Err(ctx.escape(&path, "hard link to the destination itself"));
                };
                let tparent = dir_in_root(&ctx, &root_fd, tparents, false)?;
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
            // as inside the container: links on the way resolve in its root; the last
            // component is archived as it is (a link stays a link)
            let parent = dir_in_root(&ctx, &root_fd, parents, false)?;
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

/// Re-packs a zip archive as tar: directories, regular files (with their unix mode, if the
/// zip has one) and symlinks. Entries with absolute or `..` paths are refused, and so is an
/// archive whose files declare more than `max_bytes` in all (a zip bomb stops before it is
/// inflated).
pub fn zip_to_tar(
    reader: impl Read + Seek,
    out: impl Write,
    max_bytes: u64,
) -> std::io::Result<()> {
    let bad = |e: zip::result::ZipError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut archive = zip::ZipArchive::new(reader).map_err(bad)?;
    let mut tar = tar::Builder::new(out);
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(bad)?;
        let name = entry.enclosed_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("zip entry {:?} escapes the destination", entry.name()),
            )
        })?;
        let mode = entry.unix_mode().map(|m| m & 0o7777);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        if entry.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(mode.unwrap_or(0o755));
            header.set_size(0);
            tar.append_data(&mut header, &name, std::io::empty())?;
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry.read_to_string(&mut target)?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &name, target)?;
        } else {
            total = total.saturating_add(entry.size());
            if total > max_bytes {
                return Err(std::io::Error::other("archive too large once decompressed"));
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode.unwrap_or(0o644));
            header.set_size(entry.size());
            tar.append_data(&mut header, &name, &mut entry)?;
        }
    }
    tar.into_inner()?.flush()
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
            raw_tar_with_path("/abs"),
            tar_of(&[
                ("ok", tar::EntryType::Regular, "1"),
                ("h", tar::EntryType::Link, "../outside"),
            ]),
            tar_of(&[("h", tar::EntryType::Link, "/etc/passwd")]),
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
        let t = raw_tar_with_path("../evil");
        let mut cursor = std::io::Cursor::new(t);
        cursor.seek(SeekFrom::End(0)).unwrap();
        let err = stream_in(dir.path(), "h1", "/", cursor).unwrap_err();
        assert!(matches!(err, Error::PathEscape { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// Links resolve inside the root as they would in the container: an absolute target is
    /// the container's path, `..` stops at its root.
    #[test]
    fn links_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // the host's `outside` does not exist inside: a link to it is a dangling link
        let t = tar_of(&[
            ("host", tar::EntryType::Symlink, outside.to_str().unwrap()),
            ("host/f", tar::EntryType::Regular, "x"),
        ]);
        assert!(stream_in(&root, "h1", "/", std::io::Cursor::new(&t)).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        let t = tar_of(&[
            ("abs", tar::EntryType::Symlink, "/etc"),
            ("up", tar::EntryType::Symlink, "../../../.."),
            ("host", tar::EntryType::Symlink, outside.to_str().unwrap()),
            ("abs/through-abs", tar::EntryType::Regular, "1"),
            ("up/through-up", tar::EntryType::Regular, "2"),
            ("host/through-host", tar::EntryType::Regular, "3"),
            ("d/deeper/f", tar::EntryType::Regular, "4"),
        ]);
        stream_in(&root, "h1", "/", std::io::Cursor::new(&t)).unwrap();
        // links are written as they are
        assert_eq!(
            std::fs::read_link(root.join("abs")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/through-abs")).unwrap(),
            "1"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("through-up")).unwrap(),
            "2"
        );
        // the host path of `outside`, inside the root
        assert_eq!(
            std::fs::read_to_string(inside.join("through-host")).unwrap(),
            "3"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // a destination through a link
        let t = tar_of(&[("f", tar::EntryType::Regular, "5")]);
        stream_in(&root, "h1", "/abs/sub", std::io::Cursor::new(&t)).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/sub/f")).unwrap(),
            "5"
        );
        // and out again through it
        let out = stream_out(&root, "h1", "/abs/sub/f").unwrap();
        let mut a = tar::Archive::new(out.as_slice());
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut body = String::new();
        e.read_to_string(&mut body).unwrap();
        assert_eq!(body, "5");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_planted_symlink_is_replaced_or_resolved_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let t = tar_of(&[("f", tar::EntryType::Regular, "x")]);
        // dangling inside the root
        assert!(stream_in(&root, "h1", "/link", std::io::Cursor::new(&t)).is_err());
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        stream_in(&root, "h1", "/link", std::io::Cursor::new(&t)).unwrap();
        assert!(inside.join("f").exists());
        // a link at the name itself is replaced by the file
        std::os::unix::fs::symlink(outside.join("f2"), root.join("f2")).unwrap();
        let t = tar_of(&[("f2", tar::EntryType::Regular, "x")]);
        stream_in(&root, "h1", "/", std::io::Cursor::new(&t)).unwrap();
        assert!(root.join("f2").symlink_metadata().unwrap().is_file());
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
