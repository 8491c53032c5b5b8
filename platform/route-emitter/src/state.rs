//! The emitter's view of the BBS between syncs: desired routes and instances, kept current by
//! the LRP events, each event turned into the change of the routing table it causes.

use std::collections::{BTreeMap, HashMap};

use diego_model::{ActualLrp, DesiredLrpSchedulingInfo, Event, ModificationTag};

use crate::table::{DesiredRoutes, RouteDiff, RoutingTable, process_routes};

/// (process guid, index, presence): one instance record.
type ActualKey = (String, i32, &'static str);

fn actual_key(a: &ActualLrp) -> ActualKey {
    (a.process_guid.clone(), a.index, a.presence.as_str())
}

/// Is `current` strictly newer than `incoming`? Then `incoming` is a stale event (one queued
/// before a re-list that already saw a later version) and is dropped.
fn is_newer(current: &ModificationTag, incoming: &ModificationTag) -> bool {
    !current.epoch.is_empty() && current.epoch == incoming.epoch && current.index > incoming.index
}

#[derive(Debug, Default)]
pub struct EmitterState {
    router_key: String,
    desired: HashMap<String, (DesiredRoutes, ModificationTag)>,
    actual: BTreeMap<ActualKey, ActualLrp>,
    table: RoutingTable,
}

impl EmitterState {
    /// The state of a fresh listing.
    pub fn from_lists(
        desired: Vec<DesiredLrpSchedulingInfo>,
        actual: Vec<ActualLrp>,
        router_key: &str,
    ) -> Self {
        let table = RoutingTable::build(&desired, &actual, router_key);
        Self {
            router_key: router_key.to_string(),
            desired: desired
                .into_iter()
                .map(|d| {
                    let routes = DesiredRoutes::from_scheduling_info(&d, router_key);
                    (d.process_guid, (routes, d.modification_tag))
                })
                .collect(),
            actual: actual.into_iter().map(|a| (actual_key(&a), a)).collect(),
            table,
        }
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Applies one event; returns what the routers must change.
    pub fn apply(&mut self, event: Event) -> RouteDiff {
        let process_guid = match event {
            Event::DesiredLrpCreated { desired_lrp }
            | Event::DesiredLrpChanged {
                after: desired_lrp, ..
            } => {
                let pg = desired_lrp.process_guid.clone();
                if let Some((_, tag)) = self.desired.get(&pg)
                    && is_newer(tag, &desired_lrp.modification_tag)
                {
                    return RouteDiff::default();
                }
                let routes = DesiredRoutes::from_desired(&desired_lrp, &self.router_key);
                self.desired
                    .insert(pg.clone(), (routes, desired_lrp.modification_tag));
                pg
            }
            Event::DesiredLrpRemoved { desired_lrp } => {
                let pg = desired_lrp.process_guid;
                if let Some((_, tag)) = self.desired.get(&pg)
                    && is_newer(tag, &desired_lrp.modification_tag)
                {
                    return RouteDiff::default();
                }
                self.desired.remove(&pg);
                pg
            }
            Event::ActualLrpInstanceCreated { actual_lrp }
            | Event::ActualLrpInstanceChanged {
                after: actual_lrp, ..
            } => {
                let key = actual_key(&actual_lrp);
                if let Some(current) = self.actual.get(&key)
                    && is_newer(&current.modification_tag, &actual_lrp.modification_tag)
                {
                    return RouteDiff::default();
                }
                let pg = actual_lrp.process_guid.clone();
                self.actual.insert(key, actual_lrp);
                pg
            }
            Event::ActualLrpInstanceRemoved { actual_lrp } => {
                let key = actual_key(&actual_lrp);
                if let Some(current) = self.actual.get(&key)
                    && is_newer(&current.modification_tag, &actual_lrp.modification_tag)
                {
                    return RouteDiff::default();
                }
                self.actual.remove(&key);
                actual_lrp.process_guid
            }
            // A crash also comes as the instance's change; tasks and cells route nothing.
            _ => return RouteDiff::default(),
        };
        self.recompute(&process_guid)
    }

    fn recompute(&mut self, process_guid: &str) -> RouteDiff {
        let routes = match self.desired.get(process_guid) {
            Some((desired, _)) => {
                let from = (process_guid.to_string(), i32::MIN, "");
                let actuals = self
                    .actual
                    .range(from..)
                    .take_while(|(k, _)| k.0 == process_guid)
                    .map(|(_, a)| a);
                process_routes(desired, actuals)
            }
            None => Default::default(),
        };
        self.table.replace_process(process_guid, routes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::table::tests::{info, running};
    use diego_model::{ActualLrpState, DesiredLrp};

    #[test]
    fn events_register_and_unregister_at_once() {
        let mut state =
            EmitterState::from_lists(vec![info("a", &["app.local"], 8080)], vec![], "cf-router");
        assert!(state.table().hosts()["app.local"].is_empty());

        let mut r = running("a", 0, 61001);
        r.modification_tag = ModificationTag {
            epoch: "e".into(),
            index: 2,
        };
        let diff = state.apply(Event::ActualLrpInstanceCreated {
            actual_lrp: r.clone(),
        });
        assert_eq!(diff.register.len(), 1);

        // A stale event (an older version of the same record) changes nothing.
        let mut stale = r.clone();
        stale.modification_tag.index = 1;
        stale.state = ActualLrpState::Claimed;
        let diff = state.apply(Event::ActualLrpInstanceChanged {
            before: stale.clone(),
            after: stale,
        });
        assert!(diff.is_empty());

        let mut crashed = r.clone();
        crashed.state = ActualLrpState::Crashed;
        crashed.modification_tag.index = 3;
        let diff = state.apply(Event::ActualLrpInstanceChanged {
            before: r.clone(),
            after: crashed,
        });
        assert_eq!(diff.unregister.len(), 1);
        assert!(diff.register.is_empty());

        let desired = DesiredLrp {
            process_guid: "a".into(),
            ..Default::default()
        };
        let diff = state.apply(Event::DesiredLrpRemoved {
            desired_lrp: desired,
        });
        assert_eq!(
            diff.unregister,
            vec![diego_router::RouteItem::host("app.local")]
        );
        assert!(state.table().hosts().is_empty());
    }
}
