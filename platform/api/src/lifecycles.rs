//! The built-in lifecycle components (buildpack, docker), embedded in the binary: published to
//! the blob store as `lifecycles/<sha256>.wasm` (cells download them for staging) and loaded
//! with `diego_host` here (the launcher and healthcheck run in the API, as the CC-bridge runs
//! Diego's recipe builders).

use std::path::PathBuf;
use std::sync::Arc;

use diego_host::lifecycle::types as t;
use diego_host::lifecycle::{LifecyclePlugin, PlanCaps};
use diego_host::{Host, HostConfig};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::blobs::Blobs;
use crate::error::{ApiError, ApiResult};
use crate::model::LifecycleKind;

static BUILDPACK_WASM: &[u8] = include_bytes!(env!("DIEGO_LIFECYCLE_BUILDPACK_WASM"));
static DOCKER_WASM: &[u8] = include_bytes!(env!("DIEGO_LIFECYCLE_DOCKER_WASM"));

/// One embedded component: its bytes, digest, and the plug-in once loaded.
#[derive(Debug)]
struct Component {
    bytes: &'static [u8],
    sha256: String,
    plugin: OnceCell<LifecyclePlugin>,
    published: OnceCell<()>,
}

impl Component {
    fn new(bytes: &'static [u8]) -> Self {
        let sha256 = format!("{:x}", Sha256::digest(bytes));
        Component {
            bytes,
            sha256,
            plugin: OnceCell::new(),
            published: OnceCell::new(),
        }
    }
}

/// The lifecycles this API stages and launches with.
#[derive(Debug, Clone)]
pub struct Lifecycles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache_dir: PathBuf,
    host: OnceCell<Host>,
    buildpack: Component,
    docker: Component,
}

impl Lifecycles {
    /// `cache_dir` keeps the precompiled components (owned by this process).
    pub fn new(cache_dir: PathBuf) -> Self {
        Lifecycles {
            inner: Arc::new(Inner {
                cache_dir,
                host: OnceCell::new(),
                buildpack: Component::new(BUILDPACK_WASM),
                docker: Component::new(DOCKER_WASM),
            }),
        }
    }

    fn component(&self, kind: LifecycleKind) -> &Component {
        match kind {
            LifecycleKind::Buildpack => &self.inner.buildpack,
            LifecycleKind::Docker => &self.inner.docker,
        }
    }

    pub fn sha256(&self, kind: LifecycleKind) -> &str {
        &self.component(kind).sha256
    }

    /// The blob-store key of the component.
    pub fn key(&self, kind: LifecycleKind) -> String {
        format!("lifecycles/{}.wasm", self.sha256(kind))
    }

    /// Uploads the component to the blob store once (again after a failure).
    pub async fn publish(&self, kind: LifecycleKind, blobs: &Blobs) -> ApiResult<()> {
        let component = self.component(kind);
        let key = self.key(kind);
        component
            .published
            .get_or_try_init(|| async {
                if blobs.sha256(&key).await? != Some(component.sha256.clone()) {
                    blobs.put_bytes(&key, component.bytes.to_vec()).await?;
                }
                tracing::info!(lifecycle = kind.as_str(), %key, "lifecycle published");
                Ok::<(), ApiError>(())
            })
            .await?;
        Ok(())
    }

    /// The loaded plug-in (compiled on first use, on a blocking thread).
    pub async fn plugin(&self, kind: LifecycleKind) -> ApiResult<LifecyclePlugin> {
        let inner = self.inner.clone();
        let host = inner
            .host
            .get_or_try_init(|| async {
                let mut config = HostConfig::new(inner.cache_dir.clone());
                // Only launch and healthcheck calls run here, a few at a time.
                config.max_instances = 8;
                tokio::task::spawn_blocking(move || Host::new(config))
                    .await
                    .map_err(|e| ApiError::internal(format!("wasm host start failed: {e}")))?
                    .map_err(|e| ApiError::internal(format!("wasm host: {e}")))
            })
            .await?
            .clone();
        let component = self.component(kind);
        let plugin = component
            .plugin
            .get_or_try_init(|| async {
                let bytes = component.bytes;
                tokio::task::spawn_blocking(move || {
                    host.load_lifecycle(bytes).map(|plugin| match kind {
                        // Docker images run as their configured user, root by default (as in
                        // Diego); an unprivileged container maps it to an unprivileged host id.
                        LifecycleKind::Docker => plugin.with_plan_caps(PlanCaps {
                            forbidden_users: Vec::new(),
                            ..PlanCaps::default()
                        }),
                        LifecycleKind::Buildpack => plugin,
                    })
                })
                .await
                .map_err(|e| ApiError::internal(format!("lifecycle load failed: {e}")))?
                .map_err(|e| {
                    ApiError::internal(format!("cannot load the {} lifecycle: {e}", kind.as_str()))
                })
            })
            .await?;
        Ok(plugin.clone())
    }

    /// The component's name and version, if it is loaded (see [`Lifecycles::plugin`]).
    pub fn described(&self, kind: LifecycleKind) -> Option<t::PluginInfo> {
        self.component(kind)
            .plugin
            .get()
            .map(|p| p.describe().clone())
    }
}

/// Calls the launcher and the healthcheck on a blocking thread (each call is capped at ~1 s).
pub async fn launch_and_check(
    plugin: LifecyclePlugin,
    launch: t::LaunchRequest,
    check: t::CheckRequest,
) -> ApiResult<(t::LaunchPlan, t::CheckPlan)> {
    tokio::task::spawn_blocking(move || {
        let plan = plugin
            .launch(&launch)
            .map_err(|e| ApiError::unprocessable("launch_failed", e.to_string()))?
            .value;
        let checks = plugin
            .healthcheck(&check)
            .map_err(|e| ApiError::unprocessable("healthcheck_failed", e.to_string()))?
            .value;
        Ok((plan, checks))
    })
    .await
    .map_err(|e| ApiError::internal(format!("lifecycle call failed: {e}")))?
}
