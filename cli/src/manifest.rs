//! `manifest.yml` in Cloud Foundry's format, for the fields most apps use, and the sizes cf
//! accepts (`256M`, `1G`, `512MB`).
//!
//! Unknown fields are ignored, as cf ignores what it does not know; a field we know with a
//! bad value is an error naming the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// One application of a manifest, as written (sizes still strings).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ManifestApp {
    pub name: Option<String>,
    pub path: Option<PathBuf>,
    pub instances: Option<u32>,
    pub memory: Option<Size>,
    /// cf writes `disk_quota` (and accepts `disk-quota`).
    #[serde(alias = "disk_quota")]
    pub disk_quota: Option<Size>,
    /// cf's legacy single buildpack.
    pub buildpack: Option<String>,
    pub buildpacks: Option<Vec<String>>,
    pub command: Option<String>,
    pub env: Option<BTreeMap<String, EnvValue>>,
    pub routes: Option<Vec<Route>>,
    pub health_check_type: Option<String>,
    pub health_check_http_endpoint: Option<String>,
    pub docker: Option<Docker>,
    pub stack: Option<String>,
    /// buildpack, docker, or a lifecycle added with `diego lifecycles add` (cf's manifest
    /// says `lifecycle: buildpack|docker|cnb`; the names here are the platform's).
    pub lifecycle: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub route: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Docker {
    pub image: String,
}

/// cf accepts numbers and booleans as env values and passes them on as strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EnvValue {
    String(String),
    Number(serde_yaml_ng::Number),
    Bool(bool),
}

impl std::fmt::Display for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvValue::String(s) => f.write_str(s),
            EnvValue::Number(n) => write!(f, "{n}"),
            EnvValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A size as cf writes it: a number with a unit (`M`, `MB`, `G`, `GB`), in megabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => parse_size_mb(&s)
                .map(Size)
                .map_err(serde::de::Error::custom),
            Raw::Number(n) => Ok(Size(n)),
        }
    }
}

/// `256M`, `256MB`, `1G`, `1GB`, `512` (megabytes) → megabytes. Case-insensitive.
pub fn parse_size_mb(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_uppercase();
    let (digits, factor) = if let Some(d) = t.strip_suffix("GB").or_else(|| t.strip_suffix('G')) {
        (d, 1024)
    } else if let Some(d) = t.strip_suffix("MB").or_else(|| t.strip_suffix('M')) {
        (d, 1)
    } else {
        (t.as_str(), 1)
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (write e.g. 256M or 1G)"))?;
    if n == 0 {
        return Err(format!("{text:?}: a size must be above zero"));
    }
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    applications: Vec<ManifestApp>,
}

/// Reads `path` and picks the application named `name`, or the only one.
pub fn load(path: &Path, name: Option<&str>) -> anyhow::Result<ManifestApp> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not a valid manifest", path.display()))?;
    let mut app = match (name, manifest.applications.len()) {
        (_, 0) => bail!("{} names no applications", path.display()),
        (None, 1) => manifest.applications.into_iter().next().unwrap_or_default(),
        (None, n) => bail!(
            "{} describes {n} applications: name the one to push",
            path.display()
        ),
        (Some(name), _) => manifest
            .applications
            .into_iter()
            .find(|a| a.name.as_deref() == Some(name))
            .with_context(|| format!("{} has no application named {name}", path.display()))?,
    };
    // A relative `path:` is relative to the manifest, as in cf.
    if let Some(p) = &app.path
        && p.is_relative()
    {
        let base = path.parent().unwrap_or(Path::new("."));
        app.path = Some(base.join(p));
    }
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_cf_writes_them() {
        assert_eq!(parse_size_mb("256M"), Ok(256));
        assert_eq!(parse_size_mb("256mb"), Ok(256));
        assert_eq!(parse_size_mb("1G"), Ok(1024));
        assert_eq!(parse_size_mb("2GB"), Ok(2048));
        assert_eq!(parse_size_mb("512"), Ok(512));
        assert!(parse_size_mb("lots").is_err());
        assert!(parse_size_mb("0M").is_err());
    }

    #[test]
    fn a_manifest_with_the_usual_fields() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("manifest.yml");
        std::fs::write(
            &path,
            "---\napplications:\n- name: web\n  path: app\n  instances: 2\n  memory: 128M\n  disk_quota: 1G\n  buildpacks: [python]\n  command: python3 app.py\n  env:\n    GREETING: hi\n    WORKERS: 4\n    DEBUG: true\n  routes:\n  - route: web.localhost\n  health-check-type: http\n  health-check-http-endpoint: /health\n  random-route: true\n- name: worker\n  docker:\n    image: 127.0.0.1:5000/worker:1\n",
        )?;
        let web = load(&path, Some("web"))?;
        assert_eq!(web.instances, Some(2));
        assert_eq!(web.memory, Some(Size(128)));
        assert_eq!(web.disk_quota, Some(Size(1024)));
        assert_eq!(web.buildpacks, Some(vec!["python".to_string()]));
        assert_eq!(web.path, Some(dir.path().join("app")));
        let env = web.env.unwrap_or_default();
        assert_eq!(env["WORKERS"].to_string(), "4");
        assert_eq!(env["DEBUG"].to_string(), "true");
        assert_eq!(
            web.routes.map(|r| r[0].route.clone()),
            Some("web.localhost".into())
        );
        assert_eq!(web.health_check_type.as_deref(), Some("http"));
        let worker = load(&path, Some("worker"))?;
        assert_eq!(
            worker.docker.map(|d| d.image),
            Some("127.0.0.1:5000/worker:1".into())
        );
        let err = load(&path, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("2 applications"), "{err}");
        Ok(())
    }

    #[test]
    fn a_bad_size_names_itself() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("manifest.yml");
        std::fs::write(&path, "applications:\n- name: a\n  memory: lots\n")?;
        let err = format!("{:#}", load(&path, None).err().context("must fail")?);
        assert!(err.contains("lots"), "{err}");
        Ok(())
    }
}
