//! ActualLRP: one instance of a DesiredLRP, its place on a cell and its state machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::modification_tag::ModificationTag;
use crate::validate::Problems;
use crate::{BbsError, Timestamp};

/// The longest crash reason kept on a record, as Diego truncates it.
pub const MAX_CRASH_REASON_BYTES: usize = 1024;

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActualLrpState {
    #[default]
    Unclaimed,
    Claimed,
    Running,
    Crashed,
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    /// The instance as the converger and the auctioneer see it.
    #[default]
    Ordinary,
    /// A copy kept running on an evacuating cell until its replacement runs.
    Evacuating,
    /// Running on a cell that went missing; kept while a replacement is placed.
    Suspect,
}

impl Presence {
    /// The name used in store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Ordinary => "ordinary",
            Presence::Evacuating => "evacuating",
            Presence::Suspect => "suspect",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpKey {
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
}

impl ActualLrpKey {
    pub fn new(process_guid: impl Into<String>, index: i32, domain: impl Into<String>) -> Self {
        Self {
            process_guid: process_guid.into(),
            index,
            domain: domain.into(),
        }
    }

    pub fn validate_into(&self, p: &mut Problems) {
        p.guid("process_guid", &self.process_guid);
        p.check(self.index >= 0, || {
            format!("index must be >= 0, got {}", self.index)
        });
        p.name("domain", &self.domain);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpInstanceKey {
    pub instance_guid: String,
    pub cell_id: String,
}

impl ActualLrpInstanceKey {
    pub fn new(instance_guid: impl Into<String>, cell_id: impl Into<String>) -> Self {
        Self {
            instance_guid: instance_guid.into(),
            cell_id: cell_id.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instance_guid.is_empty() && self.cell_id.is_empty()
    }

    pub fn validate_into(&self, p: &mut Problems) {
        p.name("instance_guid", &self.instance_guid);
        p.name("cell_id", &self.cell_id);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: u32,
    pub container_tls_proxy_port: u32,
    pub host_tls_proxy_port: u32,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreferredAddress {
    #[default]
    Unknown,
    Instance,
    Host,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpNetInfo {
    /// The cell's address, where host ports are reachable.
    pub address: String,
    pub ports: Vec<PortMapping>,
    /// The container's own address.
    pub instance_address: String,
    pub preferred_address: PreferredAddress,
}

impl ActualLrpNetInfo {
    pub fn is_empty(&self) -> bool {
        self.address.is_empty() && self.ports.is_empty() && self.instance_address.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ActualLrpInternalRoute {
    pub hostname: String,
}

/// One instance. Diego's JSON flattens the key, instance key and net info into the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ActualLrp {
    pub process_guid: String,
    pub index: i32,
    pub domain: String,
    pub instance_guid: String,
    pub cell_id: String,
    pub address: String,
    pub ports: Vec<PortMapping>,
    pub instance_address: String,
    pub preferred_address: PreferredAddress,
    pub crash_count: i32,
    pub crash_reason: String,
    pub state: ActualLrpState,
    pub placement_error: String,
    /// When the state last changed, ns since the epoch.
    pub since: Timestamp,
    pub modification_tag: ModificationTag,
    pub presence: Presence,
    pub actual_lrp_internal_routes: Vec<ActualLrpInternalRoute>,
    pub metric_tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable: Option<bool>,
    pub availability_zone: String,
}

impl ActualLrp {
    /// A new UNCLAIMED instance.
    pub fn unclaimed(key: &ActualLrpKey, epoch: impl Into<String>, now: Timestamp) -> Self {
        ActualLrp {
            process_guid: key.process_guid.clone(),
            index: key.index,
            domain: key.domain.clone(),
            state: ActualLrpState::Unclaimed,
            since: now,
            modification_tag: ModificationTag::new(epoch),
            ..ActualLrp::default()
        }
    }

    pub fn key(&self) -> ActualLrpKey {
        ActualLrpKey {
            process_guid: self.process_guid.clone(),
            index: self.index,
            domain: self.domain.clone(),
        }
    }

    pub fn instance_key(&self) -> ActualLrpInstanceKey {
        ActualLrpInstanceKey {
            instance_guid: self.instance_guid.clone(),
            cell_id: self.cell_id.clone(),
        }
    }

    pub fn net_info(&self) -> ActualLrpNetInfo {
        ActualLrpNetInfo {
            address: self.address.clone(),
            ports: self.ports.clone(),
            instance_address: self.instance_address.clone(),
            preferred_address: self.preferred_address,
        }
    }

    pub fn set_instance_key(&mut self, key: &ActualLrpInstanceKey) {
        self.instance_guid = key.instance_guid.clone();
        self.cell_id = key.cell_id.clone();
    }

    pub fn set_net_info(&mut self, net: &ActualLrpNetInfo) {
        self.address = net.address.clone();
        self.ports = net.ports.clone();
        self.instance_address = net.instance_address.clone();
        self.preferred_address = net.preferred_address;
    }

    pub fn clear_placement(&mut self) {
        self.set_instance_key(&ActualLrpInstanceKey::default());
        self.set_net_info(&ActualLrpNetInfo::default());
    }

    fn has_instance_key(&self, key: &ActualLrpInstanceKey) -> bool {
        self.instance_guid == key.instance_guid && self.cell_id == key.cell_id
    }

    /// Diego's `AllowsTransitionTo`: may this record move to `to` for the caller holding
    /// `instance_key`? The LRP key must always match.
    pub fn allows_transition_to(
        &self,
        key: &ActualLrpKey,
        instance_key: &ActualLrpInstanceKey,
        to: ActualLrpState,
    ) -> bool {
        use ActualLrpState::*;
        if self.key() != *key {
            return false;
        }
        let same = self.has_instance_key(instance_key);
        match (self.state, to) {
            (Unclaimed, Unclaimed | Claimed | Running) => true,
            (Unclaimed, Crashed) => false,
            (Claimed | Running | Crashed, Unclaimed) => instance_key.is_empty(),
            (Claimed | Running | Crashed, Claimed) => same,
            (Claimed, Running) => true,
            (Running | Crashed, Running) => same,
            (Claimed | Running, Crashed) => same,
            (Crashed, Crashed) => false,
        }
    }

    /// The invariants of each state (Diego's `ActualLRP.Validate`).
    pub fn validate(&self) -> Result<(), BbsError> {
        let mut p = Problems::new();
        self.key().validate_into(&mut p);
        let instance = self.instance_key();
        let net_empty = self.net_info().is_empty();
        match self.state {
            ActualLrpState::Unclaimed | ActualLrpState::Crashed => {
                p.check(instance.is_empty(), || {
                    format!("{:?} must not have an instance key", self.state)
                });
                p.check(net_empty, || {
                    format!("{:?} must not have net info", self.state)
                });
            }
            ActualLrpState::Claimed => {
                instance.validate_into(&mut p);
                p.check(net_empty, || "CLAIMED must not have net info".into());
                p.check(self.placement_error.is_empty(), || {
                    "CLAIMED must not have a placement error".into()
                });
            }
            ActualLrpState::Running => {
                instance.validate_into(&mut p);
                p.check(!self.address.is_empty(), || {
                    "RUNNING requires net info with an address".into()
                });
            }
        }
        p.into_record_result("actual LRP")
    }
}

/// Truncates a crash reason as Diego stores it.
pub fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_CRASH_REASON_BYTES {
        return reason.to_string();
    }
    let mut end = MAX_CRASH_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActualLrpState::*;

    fn lrp(state: ActualLrpState, instance: &ActualLrpInstanceKey) -> ActualLrp {
        let mut lrp = ActualLrp::unclaimed(&ActualLrpKey::new("pg", 0, "d"), "e", 0);
        lrp.state = state;
        lrp.set_instance_key(instance);
        lrp
    }

    /// Every cell of Diego's transition table, for the caller's key being empty, the same as the
    /// record's, or another one.
    #[test]
    fn transition_table_is_diegos() {
        let mine = ActualLrpInstanceKey::new("i1", "c1");
        let other = ActualLrpInstanceKey::new("i2", "c2");
        let empty = ActualLrpInstanceKey::default();
        let key = ActualLrpKey::new("pg", 0, "d");
        // (from, to, [allowed with empty, with the same key, with another key])
        let table = [
            (Unclaimed, Unclaimed, [true, true, true]),
            (Unclaimed, Claimed, [true, true, true]),
            (Unclaimed, Running, [true, true, true]),
            (Unclaimed, Crashed, [false, false, false]),
            (Claimed, Unclaimed, [true, false, false]),
            (Claimed, Claimed, [false, true, false]),
            (Claimed, Running, [true, true, true]),
            (Claimed, Crashed, [false, true, false]),
            (Running, Unclaimed, [true, false, false]),
            (Running, Claimed, [false, true, false]),
            (Running, Running, [false, true, false]),
            (Running, Crashed, [false, true, false]),
            // A crashed record has no instance key, so "the same key" is the empty one.
            (Crashed, Unclaimed, [true, false, false]),
            (Crashed, Claimed, [true, false, false]),
            (Crashed, Running, [true, false, false]),
            (Crashed, Crashed, [false, false, false]),
        ];
        for (from, to, allowed) in table {
            // Unclaimed and crashed records carry no instance key; claimed and running carry `mine`.
            let record = if matches!(from, Unclaimed | Crashed) {
                lrp(from, &empty)
            } else {
                lrp(from, &mine)
            };
            for (caller, expect) in [&empty, &mine, &other].into_iter().zip(allowed) {
                assert_eq!(
                    record.allows_transition_to(&key, caller, to),
                    expect,
                    "{from:?} -> {to:?} by {caller:?}"
                );
            }
        }
        let wrong_key = ActualLrpKey::new("pg", 1, "d");
        assert!(!lrp(Unclaimed, &empty).allows_transition_to(&wrong_key, &empty, Claimed));
    }

    #[test]
    fn state_invariants_are_checked() {
        let mine = ActualLrpInstanceKey::new("i1", "c1");
        assert!(lrp(Claimed, &mine).validate().is_ok());
        assert!(lrp(Unclaimed, &mine).validate().is_err());
        assert!(
            lrp(Running, &mine).validate().is_err(),
            "running needs net info"
        );
        let mut running = lrp(Running, &mine);
        running.address = "10.0.0.1".into();
        assert!(running.validate().is_ok());
    }

    #[test]
    fn json_is_flat_like_diegos() {
        let mut l = lrp(Claimed, &ActualLrpInstanceKey::new("i1", "c1"));
        l.ports = vec![PortMapping {
            container_port: 8080,
            host_port: 61000,
            ..Default::default()
        }];
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["process_guid"], "pg");
        assert_eq!(v["instance_guid"], "i1");
        assert_eq!(v["state"], "CLAIMED");
        assert_eq!(v["presence"], "ORDINARY");
        assert_eq!(v["ports"][0]["host_port"], 61000);
    }

    #[test]
    fn crash_reasons_are_truncated_on_char_boundaries() {
        let long = "é".repeat(1000);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CRASH_REASON_BYTES);
        assert!(long.starts_with(&cut));
    }
}
