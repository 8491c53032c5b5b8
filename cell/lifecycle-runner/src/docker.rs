//! The cell's side of the Docker lifecycle (`lifecycles/docker`): image work done natively.
//!
//! - [`stage_docker`]: no staging container. The image named by the request is resolved with
//!   [`diego_garden::image::Puller::inspect`] (manifest and config only, no layer; the
//!   request's registry credentials used for the image's registry), its [`ImageConfig`] is
//!   handed to the guest as JSON in the staging option [`IMAGE_CONFIG_OPTION`], and the guest
//!   answers `done` with the staging result in the same call. A missing or unreachable image
//!   fails here ([`RunnerError::Image`]), before the guest is called.
//! - [`launch_docker`]: calls the launcher, creates the app container with rootfs
//!   `docker://…` (the image's layers, pulled natively by the backend's puller: digests
//!   verified, layers cached by digest and shared between containers) and a host port mapped
//!   to each port of the launch plan, then starts the plan's main process as [`crate::launch`]
//!   does. Pull credentials are the backend's ([`diego_garden::native::Config::registry`]):
//!   Garden has no per-container credentials.

use diego_garden::image::{ImageConfig, ImageRef, Puller, RegistryConfig};
use diego_garden::{ContainerSpec, NetIn, NetworkSpec, RootfsSpec};
use diego_host::capabilities::ContainerRef;
use diego_host::lifecycle::types::{LaunchRequest, StagingRequest};
use diego_host::lifecycle::{LifecyclePlugin, StagingStep};

use crate::{GardenCaps, Instance, Launched, RunnerError, Staged, start_plan};

/// The staging option that carries the resolved image config (JSON of [`ImageConfig`]).
pub const IMAGE_CONFIG_OPTION: &str = "docker-image-config";
/// The healthcheck option that may carry the staged execution metadata (for its ports).
pub const EXECUTION_METADATA_OPTION: &str = "execution-metadata";

/// A CF `docker_image` (`[REGISTRY/]NAME[:TAG]`, or already `docker://…`) as a Garden rootfs
/// reference: `docker://REGISTRY/NAME[:TAG]`, or `docker:///NAME[:TAG]` on the default
/// registry when the first component is not a host (no `.` or `:`, not `localhost`).
pub fn docker_rootfs(image: &str) -> String {
    if image.starts_with("docker://") {
        return image.to_owned();
    }
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            format!("docker://{image}")
        }
        _ => format!("docker:///{image}"),
    }
}

/// Stages a Docker app: resolves the image natively and lets the guest turn its config into
/// the staging result (one guest call, no plan, no container).
pub async fn stage_docker(
    plugin: &LifecyclePlugin,
    registry: &RegistryConfig,
    request: &StagingRequest,
) -> Result<Staged, RunnerError> {
    let image = request
        .docker_image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            RunnerError::Request("a docker staging request needs docker_image".into())
        })?;
    let reference = docker_rootfs(image.trim());
    let mut cfg = registry.clone();
    if let Some(creds) = &request.docker_credentials {
        let host = ImageRef::parse(&reference, &cfg.default_registry)?.registry;
        cfg.credentials.insert(
            host,
            diego_garden::image::Credentials {
                username: creds.user.clone(),
                password: creds.password.clone(),
            },
        );
    }
    let config: ImageConfig = Puller::new(cfg).inspect(&reference).await?;
    tracing::info!(image = %config.reference, digest = %config.manifest_digest, "docker image resolved");
    let mut request = request.clone();
    request.options.retain(|(k, _)| k != IMAGE_CONFIG_OPTION);
    request.options.push((
        IMAGE_CONFIG_OPTION.to_owned(),
        serde_json::to_string(&config).map_err(|e| RunnerError::Setup(e.to_string()))?,
    ));
    let called = plugin.stage(&request)?;
    match called.value {
        StagingStep::Done(result) => Ok(Staged {
            result,
            guest_logs: called.logs,
            plans: 0,
        }),
        StagingStep::Continue(_) => Err(RunnerError::Setup(
            "the docker lifecycle returned a staging plan; docker staging runs none".into(),
        )),
    }
}

/// The app container of a Docker app: rootfs `docker://…` (the image's layers), a host port
/// mapped to each of `ports`, loopback and default limits otherwise.
pub fn docker_container_spec(image: &str, ports: &[u16]) -> ContainerSpec {
    ContainerSpec {
        handle: None,
        rootfs: RootfsSpec::Image(docker_rootfs(image.trim())),
        env: Vec::new(),
        limits: Default::default(),
        bind_mounts: Vec::new(),
        properties: Default::default(),
        network: Some(NetworkSpec {
            net_in: ports
                .iter()
                .map(|&p| NetIn {
                    host_port: 0,
                    container_port: p,
                })
                .collect(),
        }),
        // Docker apps run unprivileged, as on Diego.
        privileged: false,
    }
}

/// Calls the launcher, creates the app container ([`docker_container_spec`] with the plan's
/// ports) and starts the main process. The caller destroys the container; on an error after
/// it was created, it is destroyed here.
pub async fn launch_docker(
    plugin: &LifecyclePlugin,
    caps: &GardenCaps,
    request: &LaunchRequest,
    instance: &Instance,
) -> Result<(ContainerRef, Launched), RunnerError> {
    let image = request
        .docker_image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| RunnerError::Request("a docker launch request needs docker_image".into()))?;
    let plan = plugin.launch(request)?.value;
    let handle = caps
        .backend()
        .create(docker_container_spec(image, &plan.ports))
        .await
        .map_err(|e| RunnerError::Setup(format!("creating the container: {e}")))?;
    let container = ContainerRef(handle);
    match start_plan(caps, &container, plan, instance).await {
        Ok(launched) => Ok((container, launched)),
        Err(e) => {
            if let Err(d) = caps.backend().destroy(&container.0).await {
                tracing::warn!(container = %container.0, error = %d, "destroy after a failed launch");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::docker_rootfs;

    #[test]
    fn cf_docker_images_become_rootfs_references() {
        assert_eq!(
            docker_rootfs("127.0.0.1:5000/app:v1"),
            "docker://127.0.0.1:5000/app:v1"
        );
        assert_eq!(
            docker_rootfs("registry.example.com/team/app"),
            "docker://registry.example.com/team/app"
        );
        assert_eq!(
            docker_rootfs("localhost/app:v1"),
            "docker://localhost/app:v1"
        );
        assert_eq!(
            docker_rootfs("cloudfoundry/app"),
            "docker:///cloudfoundry/app"
        );
        assert_eq!(docker_rootfs("busybox:1"), "docker:///busybox:1");
        assert_eq!(docker_rootfs("docker://h:1/a"), "docker://h:1/a");
    }
}
