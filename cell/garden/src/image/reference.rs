//! `docker://` image references: `docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]`, or
//! `docker:///NAME` on the default registry (Docker Hub's single-component names get
//! `library/`), and Diego's `#TAG` suffix.

use super::{DOCKER_HUB, ImageError, Result};

/// A parsed `docker://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`.
    pub registry: String,
    /// Repository path (`library/busybox`, `app`).
    pub repository: String,
    /// Tag or `sha256:…` digest.
    pub reference: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "docker://{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

impl ImageRef {
    /// Parses `docker://HOST[:PORT]/NAME[:TAG|@sha256:HEX]` or `docker:///NAME[…]` (on
    /// `default_registry`; Docker Hub's single-component names get `library/`). Diego's
    /// `#TAG` suffix is accepted too.
    pub fn parse(reference: &str, default_registry: &str) -> Result<ImageRef> {
        let bad = |reason: &str| ImageError::BadReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        let rest = reference
            .strip_prefix("docker://")
            .ok_or_else(|| bad("must start with docker://"))?;
        let (registry, path) = match rest.strip_prefix('/') {
            Some(path) => (default_registry.to_string(), path),
            None => {
                let (host, path) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("no repository after the registry"))?;
                (host.to_string(), path)
            }
        };
        if registry.is_empty()
            || !registry
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(bad("bad registry host"));
        }
        let (name, tag) = if let Some((name, digest)) = path.split_once('@') {
            (name, digest.to_string())
        } else if let Some((name, tag)) = path.split_once('#') {
            (name, tag.to_string())
        } else {
            let last = path.rfind('/').map_or(0, |i| i + 1);
            match path[last..].rfind(':') {
                Some(i) => (&path[..last + i], path[last + i + 1..].to_string()),
                None => (path, "latest".to_string()),
            }
        };
        if tag.contains(':') {
            sha256_hex(&tag).map_err(|_| bad("bad digest"))?;
        } else if tag.is_empty()
            || tag.len() > 128
            || tag.starts_with(['.', '-'])
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(bad("bad tag"));
        }
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && c.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if name.is_empty() || !name.split('/').all(valid_component) {
            return Err(bad("bad repository name"));
        }
        let is_hub = matches!(
            registry.as_str(),
            DOCKER_HUB | "docker.io" | "index.docker.io"
        );
        let repository = if is_hub && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        Ok(ImageRef {
            registry: if is_hub { DOCKER_HUB.into() } else { registry },
            repository,
            reference: tag,
        })
    }
}

/// The hex of a `sha256:HEX` digest (64 lower-case hex digits), else `Err`.
pub(super) fn sha256_hex(digest: &str) -> std::result::Result<&str, ()> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(hex)
        }
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("docker://127.0.0.1:5000/app:v1", DOCKER_HUB).unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "app", "v1")
        );
        let r = ImageRef::parse("docker:///busybox", DOCKER_HUB).unwrap();
        assert_eq!(
            r.to_string(),
            "docker://registry-1.docker.io/library/busybox:latest"
        );
        let r =
            ImageRef::parse("docker:///cloudfoundry/diego-docker-app#latest", DOCKER_HUB).unwrap();
        assert_eq!(r.repository, "cloudfoundry/diego-docker-app");
        let r = ImageRef::parse("docker:///a/b", "reg.example:443").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("reg.example:443", "a/b")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("docker://h:1/x/y@{d}"), DOCKER_HUB).unwrap();
        assert_eq!(r.reference, d);
        assert_eq!(r.to_string(), format!("docker://h:1/x/y@{d}"));
        for bad in [
            "busybox",
            "docker://host",
            "docker://h/UPPER",
            "docker://h/x:bad/tag",
            "docker://h/x@sha256:zz",
            "docker://h/x:",
            "docker://h/../x",
        ] {
            assert!(ImageRef::parse(bad, DOCKER_HUB).is_err(), "{bad}");
        }
    }
}
