//! Images from OCI registries (the distribution API): resolve `docker://HOST[:PORT]/NAME[:TAG]`
//! (or `docker:///NAME` on the default registry), read the image's config, and pull its layers
//! into the depot's layer cache (`layers/<sha256>/`, the cache [`crate::rootfs`] fills from OCI
//! layouts), so containers from the same image share them.
//!
//! Every blob (manifest by digest, config, layer) is checked against its sha256 digest; a layer
//! is streamed to a temporary file while it is hashed, unpacked only once it verified, into a
//! temporary dir renamed into place. A mismatch leaves nothing in the cache. Pulls of one layer
//! in this process are serialised, so two containers created together download it once; two
//! processes sharing a depot at worst both download it (the rename decides, nothing is torn).
//!
//! Registries on loopback and those listed in [`RegistryConfig::insecure_registries`] are spoken
//! to over plain HTTP, all others over HTTPS (which needs the crate's `tls` feature). Auth is
//! anonymous, or per the distribution spec's `WWW-Authenticate` challenge: Basic with configured
//! credentials, or a Bearer token fetched from the challenge's realm (with the credentials, if
//! any, else anonymously).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::rootfs;

/// Media types of manifests and indexes we ask for, most specific first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest, index or config accepted (they are read into memory).
const DOCUMENT_MAX: u64 = 8 << 20;
/// Docker Hub, the registry of `docker:///name` unless configured otherwise.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// Everything that can go wrong resolving or pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed.
    #[error("bad image reference {reference:?}: {reason}")]
    BadReference {
        /// As given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry has no such repository, tag or blob.
    #[error("image {image} not found: {message}")]
    NotFound {
        /// The image reference.
        image: String,
        /// The registry's words.
        message: String,
    },
    /// The registry refused our credentials (or their absence).
    #[error("registry refused access to {image}: {message}")]
    Unauthorized {
        /// The image reference.
        image: String,
        /// The registry's words.
        message: String,
    },
    /// A blob's content does not match its digest; nothing of it was kept.
    #[error("digest mismatch for {what} of {image}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// `layer sha256:…`, `config`, `manifest`.
        what: String,
        /// The image reference.
        image: String,
        /// The digest the manifest names.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry answered {status} for {url}: {message}")]
    Registry {
        /// The URL requested.
        url: String,
        /// HTTP status.
        status: u16,
        /// The body (truncated).
        message: String,
    },
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach registry for {url}: {message}")]
    Transport {
        /// The URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The image uses something we do not support (schema 1, no linux manifest, zstd layers).
    #[error("image {image} is not supported: {message}")]
    Unsupported {
        /// The image reference.
        image: String,
        /// Why.
        message: String,
    },
    /// A manifest, index or config is malformed.
    #[error("image {image}: bad {what}: {message}")]
    BadDocument {
        /// The image reference.
        image: String,
        /// `manifest`, `index`, `config`.
        what: String,
        /// The parse error.
        message: String,
    },
    /// An HTTPS registry, but this build has no TLS.
    #[error(
        "registry {registry} needs https: build diego-garden with the `tls` feature, or list it in insecure_registries"
    )]
    TlsUnavailable {
        /// The registry host.
        registry: String,
    },
    /// Writing to or unpacking into the layer cache failed.
    #[error("layer {digest} of {image}: {source}")]
    Cache {
        /// The image reference.
        image: String,
        /// The layer digest.
        digest: String,
        /// The underlying error.
        #[source]
        source: Box<crate::Error>,
    },
}

impl From<ImageError> for crate::Error {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::BadReference { .. }
            | ImageError::NotFound { .. }
            | ImageError::Unauthorized { .. }
            | ImageError::Unsupported { .. } => crate::Error::InvalidRequest(e.to_string()),
            other => crate::Error::io("pull image", std::io::Error::other(other)),
        }
    }
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Username and password for a registry (Basic auth, or to obtain a Bearer token).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where images come from and how to talk to their registries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryConfig {
    /// Registry of `docker:///name` (default Docker Hub).
    pub default_registry: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// Credentials per registry (`host[:port]`).
    #[serde(default)]
    pub credentials: BTreeMap<String, Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            default_registry: DOCKER_HUB.into(),
            insecure_registries: Vec::new(),
            credentials: BTreeMap::new(),
        }
    }
}

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

/// A port the image exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExposedPort {
    /// Port number.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
}

/// Transport protocol of an exposed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default when the image names none).
    Tcp,
    /// UDP.
    Udp,
}

/// What the builder records of an image: its process defaults and where it was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// The reference as normalised (`docker://host/repo:tag`).
    pub reference: String,
    /// The digest of the (platform) manifest; pulling `…@digest` gets exactly this image.
    pub manifest_digest: String,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `User` (name, uid or uid:gid), if set.
    pub user: Option<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `ExposedPorts`, sorted.
    pub exposed_ports: Vec<ExposedPort>,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

impl ImageConfig {
    /// The argv to run, Docker's way: an `entrypoint` override replaces the image's entrypoint
    /// and drops its cmd; a `cmd` override replaces the cmd. Empty when the image names nothing.
    pub fn argv(&self, entrypoint: Option<&[String]>, cmd: Option<&[String]>) -> Vec<String> {
        let (ep, default_cmd): (&[String], &[String]) = match entrypoint {
            Some(ep) => (ep, &[]),
            None => (&self.entrypoint, &self.cmd),
        };
        let mut argv = ep.to_vec();
        argv.extend_from_slice(cmd.unwrap_or(default_cmd));
        argv
    }
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Layers downloaded by this pull.
    pub downloaded: Vec<String>,
    /// Layers found in the cache.
    pub cached: Vec<String>,
}

/// A pulled image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Its config.
    pub config: ImageConfig,
    /// Overlayfs lower dirs, top layer first.
    pub lower_dirs: Vec<PathBuf>,
    /// What was downloaded.
    pub stats: PullStats,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<ProcessConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// The hex of a `sha256:HEX` digest (64 lower-case hex digits), else `Err`.
fn sha256_hex(digest: &str) -> std::result::Result<&str, ()> {
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

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The OCI architecture name of this host.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(h, p)| !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

/// Key-value pairs of a `WWW-Authenticate` challenge (`Bearer realm="…",service="…"`).
fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_ascii_lowercase(), params)
}

/// Pulls images; one per backend, so concurrent pulls of a layer are serialised.
#[derive(Debug)]
pub struct Puller {
    cfg: RegistryConfig,
    http: reqwest::Client,
    /// `Authorization` values per `registry/repository`.
    auth: Mutex<HashMap<String, String>>,
    /// One lock per layer digest being pulled.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: AtomicU64,
    cache_hits: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Puller {
    fn default() -> Self {
        Puller::new(RegistryConfig::default())
    }
}

/// Reads an image's config (for the builder), with the default [`RegistryConfig`].
pub async fn inspect(reference: &str) -> Result<ImageConfig> {
    Puller::default().inspect(reference).await
}

impl Puller {
    /// A puller for `cfg`.
    pub fn new(cfg: RegistryConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "registry client with default settings");
                reqwest::Client::new()
            });
        Puller {
            cfg,
            http,
            auth: Mutex::new(HashMap::new()),
            layer_locks: Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
        }
    }

    /// The registry settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Layers downloaded and layers found cached, since this puller was made.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.downloads.load(Ordering::Relaxed),
            self.cache_hits.load(Ordering::Relaxed),
        )
    }

    /// Parses `reference` with this puller's default registry.
    pub fn parse(&self, reference: &str) -> Result<ImageRef> {
        ImageRef::parse(reference, &self.cfg.default_registry)
    }

    /// Resolves `reference` and reads its config; downloads no layer.
    pub async fn inspect(&self, reference: &str) -> Result<ImageConfig> {
        let image = self.parse(reference)?;
        Ok(self.resolve(&image).await?.0)
    }

    /// Resolves `reference` and makes sure every layer is in `cache` (`layers/<sha256>/`).
    pub async fn pull(&self, reference: &str, cache: &Path) -> Result<PulledImage> {
        let image = self.parse(reference)?;
        let (config, layers) = self.resolve(&image).await?;
        let mut stats = PullStats::default();
        let mut lower_dirs = Vec::with_capacity(layers.len());
        for layer in &layers {
            let (dir, downloaded) = self.layer(&image, layer, cache).await?;
            if downloaded {
                stats.downloaded.push(layer.digest.clone());
            } else {
                stats.cached.push(layer.digest.clone());
            }
            lower_dirs.push(dir);
        }
        lower_dirs.reverse();
        tracing::info!(image = %image, downloaded = stats.downloaded.len(), cached = stats.cached.len(), "pulled image");
        Ok(PulledImage {
            config,
            lower_dirs,
            stats,
        })
    }

    fn base_url(&self, image: &ImageRef) -> Result<String> {
        let plain =
            is_loopback(&image.registry) || self.cfg.insecure_registries.contains(&image.registry);
        if !plain && !cfg!(feature = "tls") {
            return Err(ImageError::TlsUnavailable {
                registry: image.registry.clone(),
            });
        }
        let scheme = if plain { "http" } else { "https" };
        Ok(format!(
            "{scheme}://{}/v2/{}",
            image.registry, image.repository
        ))
    }

    /// GET `url` with the cached authorization; on 401 answers the challenge once and retries.
    async fn get(&self, image: &ImageRef, url: &str, accept: &str) -> Result<reqwest::Response> {
        let key = format!("{}/{}", image.registry, image.repository);
        let send = |auth: Option<String>| {
            let mut req = self.http.get(url).header(reqwest::header::ACCEPT, accept);
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            req.send()
        };
        let transport = |e: reqwest::Error| ImageError::Transport {
            url: url.to_string(),
            message: error_chain(&e),
        };
        let cached = lock(&self.auth).get(&key).cloned();
        let had_auth = cached.is_some();
        let resp = send(cached).await.map_err(transport)?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(challenge) = challenge else {
            return Err(self.status_error(image, url, resp).await);
        };
        let authorization = self.authorize(image, &challenge).await?;
        tracing::debug!(registry = %image.registry, had_auth, "answered registry auth challenge");
        lock(&self.auth).insert(key, authorization.clone());
        let resp = send(Some(authorization)).await.map_err(transport)?;
        Ok(resp)
    }

    /// An `Authorization` value answering `challenge`.
    async fn authorize(&self, image: &ImageRef, challenge: &str) -> Result<String> {
        let creds = self.cfg.credentials.get(&image.registry);
        let basic = |c: &Credentials| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => creds.map(basic).ok_or_else(|| ImageError::Unauthorized {
                image: image.to_string(),
                message: format!("registry {} wants credentials", image.registry),
            }),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| ImageError::Unauthorized {
                        image: image.to_string(),
                        message: "bearer challenge without realm".into(),
                    })?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", image.repository));
                let mut query = vec![("scope", scope)];
                if let Some(service) = params.get("service") {
                    query.push(("service", service.clone()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = creds {
                    req = req.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|e| ImageError::Transport {
                    url: realm.clone(),
                    message: error_chain(&e),
                })?;
                if !resp.status().is_success() {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(ImageError::Unauthorized {
                        image: image.to_string(),
                        message: format!(
                            "token service {realm} answered {status}: {}",
                            truncate(&body)
                        ),
                    });
                }
                #[derive(Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: Option<String>,
                    #[serde(default)]
                    access_token: Option<String>,
                }
                let body = read_limited(resp, realm, DOCUMENT_MAX).await?;
                let token: Token =
                    serde_json::from_slice(&body).map_err(|e| ImageError::Unauthorized {
                        image: image.to_string(),
                        message: format!("bad token from {realm}: {e}"),
                    })?;
                let token =
                    token
                        .token
                        .or(token.access_token)
                        .ok_or_else(|| ImageError::Unauthorized {
                            image: image.to_string(),
                            message: format!("no token from {realm}"),
                        })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(ImageError::Unauthorized {
                image: image.to_string(),
                message: format!("unsupported auth scheme {other}"),
            }),
        }
    }

    async fn status_error(
        &self,
        image: &ImageRef,
        url: &str,
        resp: reqwest::Response,
    ) -> ImageError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        match status {
            reqwest::StatusCode::NOT_FOUND => ImageError::NotFound {
                image: image.to_string(),
                message: truncate(&body),
            },
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                ImageError::Unauthorized {
                    image: image.to_string(),
                    message: truncate(&body),
                }
            }
            _ => ImageError::Registry {
                url: url.to_string(),
                status: status.as_u16(),
                message: truncate(&body),
            },
        }
    }

    /// A manifest or index by tag or digest: (body, its digest, content type).
    async fn document(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String)> {
        let url = format!("{}/manifests/{reference}", self.base_url(image)?);
        let resp = self.get(image, &url, MANIFEST_ACCEPT).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = read_limited(resp, &url, DOCUMENT_MAX).await?;
        let digest = digest_of(&body);
        if reference.contains(':') && digest != reference {
            return Err(ImageError::DigestMismatch {
                what: "manifest".into(),
                image: image.to_string(),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        Ok((body, digest, content_type))
    }

    /// The config and the layers of `image` (for this host's platform).
    async fn resolve(&self, image: &ImageRef) -> Result<(ImageConfig, Vec<Descriptor>)> {
        let bad = |what: &str, message: String| ImageError::BadDocument {
            image: image.to_string(),
            what: what.into(),
            message,
        };
        let (mut body, mut digest, _) = self.document(image, &image.reference).await?;
        let mut doc: Document =
            serde_json::from_slice(&body).map_err(|e| bad("manifest", e.to_string()))?;
        if doc.schema_version != 2 {
            return Err(ImageError::Unsupported {
                image: image.to_string(),
                message: format!("manifest schema version {}", doc.schema_version),
            });
        }
        if let Some(manifests) = doc.manifests.take() {
            let arch = host_arch();
            let pick = manifests
                .iter()
                .filter(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                })
                .min_by_key(|m| {
                    // arm64 images may say v8; prefer no variant or the first one
                    m.platform.as_ref().and_then(|p| p.variant.clone())
                })
                .ok_or_else(|| ImageError::Unsupported {
                    image: image.to_string(),
                    message: format!("no linux/{arch} manifest in its index"),
                })?;
            sha256_hex(&pick.digest)
                .map_err(|()| bad("index", format!("bad digest {}", pick.digest)))?;
            tracing::debug!(image = %image, manifest = %pick.digest, media_type = %pick.media_type, "picked platform manifest");
            (body, digest, _) = self.document(image, &pick.digest).await?;
            doc = serde_json::from_slice(&body).map_err(|e| bad("manifest", e.to_string()))?;
            if doc.manifests.is_some() {
                return Err(bad("index", "an index inside an index".into()));
            }
        }
        let config_desc = doc
            .config
            .ok_or_else(|| bad("manifest", "no config".into()))?;
        let layers = doc.layers.unwrap_or_default();
        for layer in &layers {
            sha256_hex(&layer.digest)
                .map_err(|()| bad("manifest", format!("bad layer digest {}", layer.digest)))?;
            if layer.media_type.contains("zstd") {
                return Err(ImageError::Unsupported {
                    image: image.to_string(),
                    message: format!("layer media type {}", layer.media_type),
                });
            }
        }
        if let Some(mt) = &doc.media_type {
            tracing::debug!(image = %image, media_type = %mt, "manifest");
        }
        sha256_hex(&config_desc.digest).map_err(|()| {
            bad(
                "manifest",
                format!("bad config digest {}", config_desc.digest),
            )
        })?;
        let url = format!("{}/blobs/{}", self.base_url(image)?, config_desc.digest);
        let resp = self.get(image, &url, "*/*").await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let raw = read_limited(resp, &url, DOCUMENT_MAX).await?;
        let actual = digest_of(&raw);
        if actual != config_desc.digest {
            return Err(ImageError::DigestMismatch {
                what: "config".into(),
                image: image.to_string(),
                expected: config_desc.digest,
                actual,
            });
        }
        let blob: ConfigBlob =
            serde_json::from_slice(&raw).map_err(|e| bad("config", e.to_string()))?;
        let c = blob.config.unwrap_or_default();
        let mut exposed_ports = Vec::new();
        for key in c.exposed_ports.unwrap_or_default().keys() {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            let port: u16 = port
                .parse()
                .map_err(|_| bad("config", format!("bad exposed port {key}")))?;
            let protocol = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(bad("config", format!("bad exposed port protocol {other}"))),
            };
            exposed_ports.push(ExposedPort { port, protocol });
        }
        exposed_ports.sort();
        let config = ImageConfig {
            reference: image.to_string(),
            manifest_digest: digest,
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            user: c.user.filter(|u| !u.is_empty()),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            exposed_ports,
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
        };
        Ok((config, layers))
    }

    fn layer_lock(&self, hex: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.layer_locks)
            .entry(hex.to_string())
            .or_default()
            .clone()
    }

    /// `cache/<hex>`, downloading and unpacking the layer unless it is there; true if downloaded.
    async fn layer(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        cache: &Path,
    ) -> Result<(PathBuf, bool)> {
        let hex = sha256_hex(&desc.digest)
            .map_err(|()| ImageError::BadDocument {
                image: image.to_string(),
                what: "manifest".into(),
                message: format!("bad layer digest {}", desc.digest),
            })?
            .to_string();
        let dest = cache.join(&hex);
        if dest.is_dir() {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((dest, false));
        }
        let layer_lock = self.layer_lock(&hex);
        let result = {
            let _guard = layer_lock.lock().await;
            if dest.is_dir() {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                Ok((dest, false))
            } else {
                self.download_layer(image, desc, &hex, cache)
                    .await
                    .map(|d| {
                        self.downloads.fetch_add(1, Ordering::Relaxed);
                        (d, true)
                    })
            }
        };
        {
            let mut locks = lock(&self.layer_locks);
            // the map's reference and ours: nobody else waits on it
            if Arc::strong_count(&layer_lock) == 2 {
                locks.remove(&hex);
            }
        }
        result
    }

    async fn download_layer(
        &self,
        image: &ImageRef,
        desc: &Descriptor,
        hex: &str,
        cache: &Path,
    ) -> Result<PathBuf> {
        let cache_err = |source: crate::Error| ImageError::Cache {
            image: image.to_string(),
            digest: desc.digest.clone(),
            source: Box::new(source),
        };
        tokio::fs::create_dir_all(cache)
            .await
            .map_err(|e| cache_err(crate::Error::io(format!("create {}", cache.display()), e)))?;
        let blob = cache.join(format!(".tmp-blob-{hex}-{}", uuid::Uuid::new_v4().simple()));
        let result = self.download_blob(image, desc, &blob).await;
        let result = match result {
            Ok(()) => {
                let (blob2, media_type, hex, cache) = (
                    blob.clone(),
                    desc.media_type.clone(),
                    hex.to_string(),
                    cache.to_path_buf(),
                );
                tokio::task::spawn_blocking(move || {
                    rootfs::unpack_blob(&blob2, &media_type, &hex, &cache)
                })
                .await
                .map_err(|e| crate::Error::Transport(format!("unpack task: {e}")))
                .and_then(|r| r)
                .map_err(cache_err)
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&blob).await;
        result
    }

    /// Streams a blob into `path`, hashing it; `Err` (and `path` removed by the caller) when
    /// its size or digest is not the descriptor's.
    async fn download_blob(&self, image: &ImageRef, desc: &Descriptor, path: &Path) -> Result<()> {
        let url = format!("{}/blobs/{}", self.base_url(image)?, desc.digest);
        let mut resp = self.get(image, &url, "*/*").await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let io_err = |e: std::io::Error| ImageError::Cache {
            image: image.to_string(),
            digest: desc.digest.clone(),
            source: Box::new(crate::Error::io(format!("write {}", path.display()), e)),
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Transport {
            url: url.clone(),
            message: error_chain(&e),
        })? {
            size += chunk.len() as u64;
            if desc.size.is_some_and(|max| size > max) {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {}", desc.digest),
                    image: image.to_string(),
                    expected: desc.digest.clone(),
                    actual: format!(
                        "(more than the {} bytes the manifest names)",
                        desc.size.unwrap_or_default()
                    ),
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        let actual = format!("sha256:{:x}", hasher.finalize());
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch {
                what: format!("layer {}", desc.digest),
                image: image.to_string(),
                expected: desc.digest.clone(),
                actual,
            });
        }
        tracing::debug!(image = %image, layer = %desc.digest, size, "downloaded layer");
        Ok(())
    }
}

async fn read_limited(mut resp: reqwest::Response, url: &str, max: u64) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Transport {
        url: url.to_string(),
        message: error_chain(&e),
    })? {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(ImageError::Registry {
                url: url.to_string(),
                status: 200,
                message: format!("document larger than {max} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
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

    #[test]
    fn loopback_and_challenges() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry-1.docker.io"));
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(
            (scheme.as_str(), p["realm"].as_str()),
            ("basic", "basic-realm")
        );
    }

    #[test]
    fn argv_follows_docker() {
        let c = ImageConfig {
            reference: String::new(),
            manifest_digest: String::new(),
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--serve".into()],
            env: vec![],
            user: None,
            working_dir: None,
            exposed_ports: vec![],
            layers: vec![],
        };
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(c.argv(None, None), s(&["/bin/app", "--serve"]));
        assert_eq!(c.argv(None, Some(&s(&["x"]))), s(&["/bin/app", "x"]));
        assert_eq!(c.argv(Some(&s(&["sh"])), None), s(&["sh"]));
        assert_eq!(
            c.argv(Some(&s(&["sh"])), Some(&s(&["-c", "x"]))),
            s(&["sh", "-c", "x"])
        );
    }

    /// A registry that wants a Bearer token from its token service (which wants Basic
    /// credentials), or Basic auth itself, serving one image's manifest and config.
    async fn auth_registry(bearer: bool) -> String {
        use axum::extract::Query;
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        use axum::routing::get;

        let config = br#"{"config":{"Cmd":["/bin/app"],"ExposedPorts":{"53/udp":{}}}}"#;
        let config_digest = digest_of(config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": []
        })
        .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:pw")
        );
        let wanted = if bearer {
            "Bearer tok".to_string()
        } else {
            basic.clone()
        };
        let challenge = if bearer {
            format!(
                r#"Bearer realm="http://{addr}/token",service="reg",scope="repository:team/app:pull""#
            )
        } else {
            r#"Basic realm="reg""#.to_string()
        };
        let guard = move |h: &HeaderMap| {
            h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(wanted.as_str())
        };
        let (g1, g2, c1) = (guard.clone(), guard, challenge.clone());
        let app = axum::Router::new()
            .route(
                "/token",
                get(
                    move |h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                        let ok = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
                            == Some(basic.as_str())
                            && q.get("service").map(String::as_str) == Some("reg")
                            && q.get("scope").map(String::as_str)
                                == Some("repository:team/app:pull");
                        if ok {
                            (StatusCode::OK, r#"{"token":"tok"}"#).into_response()
                        } else {
                            StatusCode::UNAUTHORIZED.into_response()
                        }
                    },
                ),
            )
            .route(
                "/v2/team/app/manifests/v1",
                get(move |h: HeaderMap| async move {
                    if g1(&h) {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/vnd.oci.image.manifest.v1+json",
                            )],
                            manifest,
                        )
                            .into_response()
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, c1)],
                            "",
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                &format!("/v2/team/app/blobs/{config_digest}"),
                get(move |h: HeaderMap| async move {
                    if g2(&h) {
                        config.to_vec().into_response()
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, challenge)],
                            "",
                        )
                            .into_response()
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr.to_string()
    }

    #[tokio::test]
    async fn bearer_and_basic_auth() {
        for bearer in [true, false] {
            let host = auth_registry(bearer).await;
            let reference = format!("docker://{host}/team/app:v1");
            let err = Puller::default().inspect(&reference).await.unwrap_err();
            assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
            let mut cfg = RegistryConfig::default();
            cfg.credentials.insert(
                host.clone(),
                Credentials {
                    username: "user".into(),
                    password: "pw".into(),
                },
            );
            let c = Puller::new(cfg).inspect(&reference).await.unwrap();
            assert_eq!(c.cmd, ["/bin/app"]);
            assert_eq!(
                c.exposed_ports,
                [ExposedPort {
                    port: 53,
                    protocol: Protocol::Udp
                }]
            );
        }
    }

    #[tokio::test]
    async fn https_needs_tls() {
        if cfg!(feature = "tls") {
            return;
        }
        let err = inspect("docker://registry.example/app:v1")
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::TlsUnavailable { .. }), "{err}");
    }

    #[test]
    fn credentials_are_not_printed() {
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
