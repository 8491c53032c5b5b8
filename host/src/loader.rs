//! Component loading: size cap, sha256, precompiled cache, WIT version check.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::engine::{Host, HostInner};
use crate::fault::LoadError;

/// What was loaded: the identity of a plug-in in logs, metrics and the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Hex sha256 of the `.wasm` bytes.
    pub sha256: String,
    pub size: u64,
    /// The versioned interface the component exports, e.g. `diego:auction/policy@0.2.0`.
    pub export: String,
    /// Whether the precompiled form came from the cache (no compilation).
    pub from_cache: bool,
    /// Compile (or cache load) time.
    pub load_time: Duration,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > max {
        return Err(LoadError::TooLarge { size, max });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    // `take` guards against a file that grows between stat and read.
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > max {
        return Err(LoadError::TooLarge {
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// A world's versioned export: `namespace:package/interface` and the versions this host knows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WorldSpec {
    pub world: &'static str,
    /// `diego:auction/policy`
    pub interface: &'static str,
    /// The version this host was built with, e.g. `0.1.0`.
    pub version: &'static str,
}

impl WorldSpec {
    /// semver compatibility as cargo reads it: same major, and for 0.x the same minor.
    fn compatible(&self, found: &str) -> bool {
        let parse = |v: &str| -> Option<(u64, u64)> {
            let mut it = v.split(['.', '-', '+']);
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        };
        match (parse(self.version), parse(found)) {
            (Some((0, a)), Some((0, b))) => a == b,
            (Some((a, _)), Some((b, _))) => a == b && a != 0,
            _ => false,
        }
    }

    fn supported(&self) -> String {
        let mut parts = self.version.split('.');
        let major = parts.next().unwrap_or("0");
        let minor = parts.next().unwrap_or("0");
        if major == "0" {
            format!("{}@0.{minor}.x", self.interface)
        } else {
            format!("{}@{major}.x", self.interface)
        }
    }
}

/// Compiles (or loads from the cache) a component and checks which version of `spec` it
/// exports. The returned component is then type-checked by `instantiate_pre`.
pub(crate) fn load_component(
    host: &Host,
    bytes: &[u8],
    spec: WorldSpec,
) -> Result<(Component, ComponentInfo), LoadError> {
    let inner = &host.inner;
    let size = bytes.len() as u64;
    if size > inner.config.max_component_bytes {
        return Err(LoadError::TooLarge {
            size,
            max: inner.config.max_component_bytes,
        });
    }
    let sha256 = hex(&Sha256::digest(bytes));
    let started = Instant::now();
    let (component, from_cache) = compile_cached(inner, bytes, &sha256)?;
    let export = check_export(inner, &component, spec)?;
    let info = ComponentInfo {
        sha256,
        size,
        export,
        from_cache,
        load_time: started.elapsed(),
    };
    tracing::info!(
        sha256 = %info.sha256,
        export = %info.export,
        from_cache,
        load_ms = info.load_time.as_secs_f64() * 1e3,
        "component loaded"
    );
    Ok((component, info))
}

fn cache_path(inner: &HostInner, sha256: &str) -> PathBuf {
    inner
        .config
        .cache_dir
        .join(format!("{sha256}-{}.cwasm", inner.engine_key))
}

fn compile_cached(
    inner: &HostInner,
    bytes: &[u8],
    sha256: &str,
) -> Result<(Component, bool), LoadError> {
    let path = cache_path(inner, sha256);
    // Read into memory rather than `deserialize_file` (mmap): a cache file truncated under a
    // live mapping would SIGBUS the host; ~50 µs more per load is a fair price.
    if let Some(cached) = inner
        .cache_usable
        .then(|| std::fs::read(&path).ok())
        .flatten()
    {
        // SAFETY: `deserialize` trusts its input as native code. These bytes come from a file
        // that only `store_cached` below writes, by this host, into `cache_dir`, which
        // `Host::new` created (or re-permissioned) owner-only (0700) and refuses to use when
        // others can write it. The file name binds it to the sha256 of the exact `.wasm`
        // bytes being loaded and to this engine's compatibility hash, and wasmtime itself
        // rejects an artefact from another version or configuration. Never point `cache_dir`
        // at operator- or network-supplied `.cwasm` files.
        match unsafe { Component::deserialize(&inner.engine, &cached) } {
            Ok(c) => return Ok((c, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale component cache entry; recompiling");
            }
        }
    }
    let component =
        Component::new(&inner.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    if inner.cache_usable {
        store_cached(&path, &component);
    }
    Ok((component, false))
}

/// Best effort: a cache that cannot be written only costs a recompile next time.
fn store_cached(path: &Path, component: &Component) {
    let result = component
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            // Write then rename: a reader never sees a half-written file.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write component cache entry");
    }
}

fn check_export(
    inner: &HostInner,
    component: &Component,
    spec: WorldSpec,
) -> Result<String, LoadError> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .exports(&inner.engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let prefix = format!("{}@", spec.interface);
    let Some(found) = names.iter().find(|n| n.starts_with(&prefix)) else {
        return Err(LoadError::WrongWorld {
            expected: format!("{}@{}", spec.interface, spec.version),
            world: spec.world,
            exports: if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            },
        });
    };
    let version = &found[prefix.len()..];
    if !spec.compatible(version) {
        return Err(LoadError::UnknownVersion {
            found: found.clone(),
            supported: spec.supported(),
        });
    }
    Ok(found.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_compatibility() {
        let spec = WorldSpec {
            world: "w",
            interface: "a:b/c",
            version: "0.1.0",
        };
        assert!(spec.compatible("0.1.0"));
        assert!(spec.compatible("0.1.7"));
        assert!(!spec.compatible("0.2.0"));
        assert!(!spec.compatible("9.0.0"));
        assert_eq!(spec.supported(), "a:b/c@0.1.x");
        let one = WorldSpec {
            world: "w",
            interface: "a:b/c",
            version: "1.2.0",
        };
        assert!(one.compatible("1.0.0") && one.compatible("1.9.1") && !one.compatible("2.0.0"));
    }
}
