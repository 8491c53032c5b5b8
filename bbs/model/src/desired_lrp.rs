//! DesiredLRP: what an app asks for — N instances of a process, with its rootfs, actions, checks,
//! limits, ports and routes — and the update and scheduling views of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::actions::Action;
use crate::check::CheckDefinition;
use crate::modification_tag::ModificationTag;
use crate::validate::Problems;

/// The largest annotation Diego accepts.
pub const MAX_ANNOTATION_BYTES: usize = 10 * 1024;
/// The largest serialized `routes` Diego accepts.
pub const MAX_ROUTES_BYTES: usize = 128 * 1024;

/// `routes`: router name (e.g. `cf-router`) to that router's JSON.
pub type Routes = BTreeMap<String, serde_json::Value>;

/// The `routes` key whose presence lets users SSH into the LRP's instances (Diego's
/// `diego-ssh`, which the CC-bridge sets when the app has SSH enabled).
pub const SSH_ROUTES_KEY: &str = "diego-ssh";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EnvironmentVariable {
    pub name: String,
    pub value: String,
}

impl EnvironmentVariable {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CachedDependency {
    pub name: String,
    pub from: String,
    pub to: String,
    pub cache_key: String,
    pub log_source: String,
    pub checksum_algorithm: String,
    pub checksum_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLayer {
    pub name: String,
    pub url: String,
    pub destination_path: String,
    /// `SHARED` or `EXCLUSIVE`.
    pub layer_type: String,
    /// `TGZ`, `TAR` or `ZIP`.
    pub media_type: String,
    pub digest_algorithm: String,
    pub digest_value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PortRange {
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IcmpInfo {
    #[serde(rename = "type")]
    pub icmp_type: i32,
    pub code: i32,
}

/// An egress rule (Diego's `SecurityGroupRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityGroupRule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    pub destinations: Vec<String>,
    pub ports: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_info: Option<IcmpInfo>,
    pub log: bool,
    pub annotations: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SharedDevice {
    pub volume_id: String,
    pub mount_config: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeMount {
    pub driver: String,
    pub container_dir: String,
    /// `r` or `rw`.
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedDevice>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateProperties {
    pub organizational_unit: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricTagValue {
    #[serde(rename = "static")]
    pub static_value: String,
    /// `INDEX` or `INSTANCE_GUID`.
    pub dynamic: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogRateLimit {
    pub bytes_per_second: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Sidecar {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub disk_mb: i32,
    pub memory_mb: i32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpdateStrategy {
    #[default]
    Rolling,
    Recreate,
}

/// A long-running process the platform keeps `instances` copies of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesiredLrp {
    pub process_guid: String,
    pub domain: String,
    /// `preloaded:STACK`, `docker:///image` or a scheme a cell provides.
    pub rootfs: String,
    pub instances: i32,
    pub env: Vec<EnvironmentVariable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    pub start_timeout_ms: i64,
    /// Deprecated second form of the start timeout (`deprecated_timeout_ns` in Diego's JSON).
    #[serde(rename = "deprecated_timeout_ns", skip_serializing_if = "is_zero_u32")]
    pub deprecated_start_timeout_s: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Action>,
    pub disk_mb: i32,
    pub memory_mb: i32,
    pub cpu_weight: u32,
    pub privileged: bool,
    pub ports: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub routes: Option<Routes>,
    pub log_source: String,
    pub log_guid: String,
    pub metrics_guid: String,
    pub annotation: String,
    pub egress_rules: Vec<SecurityGroupRule>,
    pub modification_tag: ModificationTag,
    pub cached_dependencies: Vec<CachedDependency>,
    pub legacy_download_user: String,
    pub trusted_system_certificates_path: String,
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    pub placement_tags: Vec<String>,
    pub max_pids: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_properties: Option<CertificateProperties>,
    pub image_username: String,
    pub image_password: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_definition: Option<CheckDefinition>,
    pub image_layers: Vec<ImageLayer>,
    pub metric_tags: BTreeMap<String, MetricTagValue>,
    pub sidecars: Vec<Sidecar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_rate_limit: Option<LogRateLimit>,
    pub volume_mounted_files: Vec<crate::actions::File>,
    pub update_strategy: UpdateStrategy,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl DesiredLrp {
    /// Diego's `DesiredLRP.Validate`, with every problem named.
    pub fn validate(&self) -> Result<(), crate::BbsError> {
        let mut p = Problems::new();
        p.guid("process_guid", &self.process_guid);
        p.name("domain", &self.domain);
        p.rootfs(&self.rootfs);
        p.check(self.instances >= 0, || {
            format!("instances must be >= 0, got {}", self.instances)
        });
        match &self.action {
            Some(action) => action.validate_into("action", &mut p),
            None => p.add("action is required"),
        }
        if let Some(setup) = &self.setup {
            setup.validate_into("setup", &mut p);
        }
        if let Some(monitor) = &self.monitor {
            monitor.validate_into("monitor", &mut p);
        }
        for (i, sidecar) in self.sidecars.iter().enumerate() {
            match &sidecar.action {
                Some(action) => action.validate_into(&format!("sidecars[{i}].action"), &mut p),
                None => p.add(format!("sidecars[{i}].action is required")),
            }
            p.check(sidecar.memory_mb >= 0 && sidecar.disk_mb >= 0, || {
                format!("sidecars[{i}] limits must be >= 0")
            });
        }
        if let Some(checks) = &self.check_definition {
            checks.validate_into(&mut p);
        }
        p.check(self.start_timeout_ms >= 0, || {
            "start_timeout_ms must be >= 0".into()
        });
        p.resources(self.memory_mb, self.disk_mb, self.max_pids, self.cpu_weight);
        for port in &self.ports {
            p.check((1..=65535).contains(port), || {
                format!("ports: {port} is not 1 to 65535")
            });
        }
        p.annotation(&self.annotation);
        if let Some(routes) = &self.routes {
            validate_routes(&mut p, routes);
        }
        p.image_credentials(&self.image_username, &self.image_password);
        for (i, env) in self.env.iter().enumerate() {
            p.check(!env.name.is_empty(), || {
                format!("env[{i}].name is required")
            });
        }
        for (i, rule) in self.egress_rules.iter().enumerate() {
            p.check(
                matches!(rule.protocol.as_str(), "tcp" | "udp" | "icmp" | "all"),
                || format!("egress_rules[{i}].protocol must be tcp, udp, icmp or all"),
            );
            p.check(!rule.destinations.is_empty(), || {
                format!("egress_rules[{i}].destinations is required")
            });
        }
        if let Some(limit) = &self.log_rate_limit {
            p.check(limit.bytes_per_second >= -1, || {
                "log_rate_limit.bytes_per_second must be >= -1".into()
            });
        }
        p.into_record_result("desired LRP")
    }

    /// The part of a DesiredLRP the auctioneer and the converger schedule with.
    pub fn scheduling_info(&self) -> DesiredLrpSchedulingInfo {
        DesiredLrpSchedulingInfo {
            process_guid: self.process_guid.clone(),
            domain: self.domain.clone(),
            log_guid: self.log_guid.clone(),
            annotation: self.annotation.clone(),
            instances: self.instances,
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            rootfs: self.rootfs.clone(),
            max_pids: self.max_pids,
            routes: self.routes.clone(),
            modification_tag: self.modification_tag.clone(),
            placement_tags: self.placement_tags.clone(),
            volume_placement: VolumePlacement {
                driver_names: self
                    .volume_mounts
                    .iter()
                    .map(|m| m.driver.clone())
                    .collect(),
            },
        }
    }

    /// The routing view (Diego's `desired_lrp_routing_infos`): key, instances, routes, tags.
    pub fn routing_info(&self) -> DesiredLrp {
        DesiredLrp {
            process_guid: self.process_guid.clone(),
            domain: self.domain.clone(),
            log_guid: self.log_guid.clone(),
            instances: self.instances,
            routes: self.routes.clone(),
            modification_tag: self.modification_tag.clone(),
            metric_tags: self.metric_tags.clone(),
            ..DesiredLrp::default()
        }
    }

    /// Applies an update in place; returns whether anything changed.
    pub fn apply(&mut self, update: &DesiredLrpUpdate) -> bool {
        let before = self.clone();
        if let Some(instances) = update.instances {
            self.instances = instances;
        }
        if let Some(routes) = &update.routes {
            self.routes = Some(routes.clone());
        }
        if let Some(annotation) = &update.annotation {
            self.annotation = annotation.clone();
        }
        if let Some(tags) = &update.metric_tags {
            self.metric_tags = tags.clone();
        }
        if let Some(user) = &update.image_username {
            self.image_username = user.clone();
        }
        if let Some(password) = &update.image_password {
            self.image_password = password.clone();
        }
        *self != before
    }
}

fn validate_routes(p: &mut Problems, routes: &Routes) {
    let size = serde_json::to_vec(routes)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    p.check(size <= MAX_ROUTES_BYTES, || {
        format!("routes are {size} bytes, more than {MAX_ROUTES_BYTES}")
    });
}

/// `volume_placement`: the volume drivers a cell must have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct VolumePlacement {
    pub driver_names: Vec<String>,
}

/// The scheduling view of a DesiredLRP, flattened as Diego's JSON flattens it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct DesiredLrpSchedulingInfo {
    pub process_guid: String,
    pub domain: String,
    pub log_guid: String,
    pub annotation: String,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub rootfs: String,
    pub max_pids: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub routes: Option<Routes>,
    pub modification_tag: ModificationTag,
    pub placement_tags: Vec<String>,
    pub volume_placement: VolumePlacement,
}

/// The mutable part of a DesiredLRP: what `desired_lrp/update` may change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DesiredLrpUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub routes: Option<Routes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric_tags: Option<BTreeMap<String, MetricTagValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_password: Option<String>,
}

impl DesiredLrpUpdate {
    pub fn validate(&self) -> Result<(), crate::BbsError> {
        let mut p = Problems::new();
        if let Some(instances) = self.instances {
            p.check(instances >= 0, || {
                format!("instances must be >= 0, got {instances}")
            });
        }
        if let Some(annotation) = &self.annotation {
            p.annotation(annotation);
        }
        if let Some(routes) = &self.routes {
            validate_routes(&mut p, routes);
        }
        p.into_request_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> DesiredLrp {
        DesiredLrp {
            process_guid: "web-1".into(),
            domain: "cf-apps".into(),
            rootfs: "preloaded:cflinuxfs4".into(),
            instances: 2,
            action: Some(Action::run("/bin/sleep", &["100"])),
            memory_mb: 128,
            disk_mb: 256,
            ports: vec![8080],
            ..DesiredLrp::default()
        }
    }

    #[test]
    fn a_sample_is_valid_and_round_trips() {
        let lrp = sample();
        lrp.validate().unwrap();
        let json = serde_json::to_string(&lrp).unwrap();
        assert!(
            json.contains(r#""rootfs":"preloaded:cflinuxfs4""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<DesiredLrp>(&json).unwrap(), lrp);
    }

    #[test]
    fn validation_names_every_problem() {
        let lrp = DesiredLrp {
            process_guid: "a/b".into(),
            instances: -1,
            rootfs: "nope".into(),
            action: None,
            ..sample()
        };
        let message = lrp.validate().unwrap_err().message;
        for part in [
            "process_guid",
            "instances must be >= 0",
            "rootfs",
            "action is required",
        ] {
            assert!(message.contains(part), "{part} missing from {message}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<DesiredLrp>(r#"{"process_guid":"x","instnaces":3}"#)
            .unwrap_err();
        assert!(err.to_string().contains("instnaces"), "{err}");
    }

    #[test]
    fn updates_apply_only_what_they_name() {
        let mut lrp = sample();
        assert!(!lrp.apply(&DesiredLrpUpdate::default()));
        assert!(lrp.apply(&DesiredLrpUpdate {
            instances: Some(5),
            ..Default::default()
        }));
        assert_eq!((lrp.instances, lrp.memory_mb), (5, 128));
        assert!(
            DesiredLrpUpdate {
                instances: Some(-1),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
