//! Root file systems: a directory, or the layers of an OCI image layout unpacked once into a
//! shared layer cache. Either way the result is a list of read-only overlayfs lower dirs; each
//! container adds its own upper and work dirs, so many containers share one base.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::types::RootfsSpec;

/// Lower dirs for `spec`, top layer first (overlayfs order).
pub fn lower_dirs(spec: &RootfsSpec, layer_cache: &Path) -> Result<Vec<PathBuf>> {
    match spec {
        RootfsSpec::Dir(dir) => {
            if !dir.is_absolute() || !dir.is_dir() {
                return Err(Error::InvalidRequest(format!(
                    "rootfs {} is not an absolute path to a directory",
                    dir.display()
                )));
            }
            Ok(vec![dir.clone()])
        }
        RootfsSpec::Oci { layout, reference } => {
            oci_layers(layout, reference.as_deref(), layer_cache)
        }
        RootfsSpec::Image(reference) => Err(Error::InvalidRequest(format!(
            "image {reference} must be pulled first (image::Puller)"
        ))),
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Descriptor>,
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let (algo, hex) = digest
        .split_once(':')
        .ok_or_else(|| Error::InvalidRequest(format!("bad digest {digest}")))?;
    if algo != "sha256" || hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::InvalidRequest(format!("bad digest {digest}")));
    }
    Ok(layout.join("blobs").join(algo).join(hex))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let raw = fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&raw).map_err(|e| Error::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn oci_layers(layout: &Path, reference: Option<&str>, cache: &Path) -> Result<Vec<PathBuf>> {
    let index: Index = read_json(&layout.join("index.json"))?;
    let desc = index
        .manifests
        .iter()
        .find(|m| {
            reference.is_none_or(|r| {
                m.annotations
                    .get("org.opencontainers.image.ref.name")
                    .map(String::as_str)
                    == Some(r)
            })
        })
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "no manifest {} in OCI layout {}",
                reference.unwrap_or("(any)"),
                layout.display()
            ))
        })?;
    let manifest: Manifest = read_json(&blob_path(layout, &desc.digest)?)?;
    let mut dirs = Vec::new();
    for layer in &manifest.layers {
        dirs.push(unpack_layer(layout, layer, cache)?);
    }
    dirs.reverse();
    Ok(dirs)
}

/// Unpacks one layer of an OCI layout into `cache/<hex>` (once).
fn unpack_layer(layout: &Path, layer: &Descriptor, cache: &Path) -> Result<PathBuf> {
    let blob = blob_path(layout, &layer.digest)?;
    let hex = layer
        .digest
        .split_once(':')
        .map(|x| x.1)
        .unwrap_or_default();
    unpack_blob(&blob, &layer.media_type, hex, cache)
}

/// Unpacks the layer blob `blob` (tar, gzip or not) into `cache/<hex>` unless it is there;
/// concurrent unpackers race on a rename of their own temp dirs, so the cache is never torn.
/// The caller has checked the blob's digest (or trusts its source).
pub(crate) fn unpack_blob(
    blob: &Path,
    media_type: &str,
    hex: &str,
    cache: &Path,
) -> Result<PathBuf> {
    let dest = cache.join(hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    fs::create_dir_all(cache).map_err(|e| Error::io(format!("create {}", cache.display()), e))?;
    let tmp = cache.join(format!(".tmp-{hex}-{}", uuid::Uuid::new_v4()));
    fs::create_dir_all(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    let file =
        fs::File::open(blob).map_err(|e| Error::io(format!("open {}", blob.display()), e))?;
    let reader: Box<dyn Read> = if media_type.ends_with("gzip") || is_gzip(blob) {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let result = unpack_tar_with_whiteouts(reader, &tmp);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        Err(_) if dest.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => Err(Error::io(
            format!("rename {} to {}", tmp.display(), dest.display()),
            e,
        )),
    }
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map(|()| magic == [0x1f, 0x8b])
        .unwrap_or(false)
}

/// Unpacks a layer tar, turning OCI whiteouts into overlayfs ones: `.wh.NAME` becomes a 0/0
/// character device `NAME`, `.wh..wh..opq` marks its directory opaque.
fn unpack_tar_with_whiteouts(reader: impl Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| Error::io(format!("read layer into {}", dest.display()), e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("read layer entry", e))?;
        let path = entry
            .path()
            .map_err(|e| Error::io("layer entry path", e))?
            .into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(".wh.") {
            inside_without_links(dest, &path)?;
        }
        if name == ".wh..wh..opq" {
            let dir = dest.join(path.parent().unwrap_or(Path::new("")));
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))?;
            set_opaque(&dir)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target = dest.join(path.with_file_name(hidden));
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("mkdir {}", parent.display()), e))?;
            }
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| Error::sys(format!("whiteout {}", target.display()), e))?;
            continue;
        }
        // unpack_in refuses entries that would land outside `dest`
        entry.unpack_in(dest).map_err(|e| {
            Error::io(
                format!("unpack {} into {}", path.display(), dest.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// Refuses `..`, absolute paths and symlinks among the existing parents of `rel` under `dest`,
/// so whiteouts (which we write ourselves, not through `unpack_in`) stay inside the layer.
fn inside_without_links(dest: &Path, rel: &Path) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidRequest(format!(
            "layer entry {} {why}",
            rel.display()
        )))
    };
    let mut cur = dest.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for comp in parents {
        match comp {
            std::path::Component::Normal(n) => cur.push(n),
            std::path::Component::CurDir => continue,
            _ => return bad("leaves the layer"),
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return bad("goes through a symlink"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn set_opaque(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidRequest(format!("bad path {}", dir.display())))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are NUL-terminated and live across the call; the value is 1 byte.
    let rc = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(Error::io(
            format!("mark {} opaque", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
