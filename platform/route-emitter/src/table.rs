//! The routing table as Diego's route emitter derives it: the `cf-router` routes of every
//! DesiredLRP, each hostname pointing at the RUNNING instances' mapped ports. Pure: built from
//! records, changed one process at a time, each change returned as the difference to send.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use diego_model::desired_lrp::Routes;
use diego_model::{ActualLrp, ActualLrpState, DesiredLrp, DesiredLrpSchedulingInfo};
use diego_router::{Endpoint, RouteItem, normalize_hostname};
use serde::Deserialize;

/// One entry of a DesiredLRP's `cf-router` routes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CfRoute {
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub port: u32,
}

/// What routing needs of a DesiredLRP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRoutes {
    pub process_guid: String,
    pub log_guid: String,
    pub routes: Vec<CfRoute>,
}

impl DesiredRoutes {
    /// The routes under `router_key`; entries that are not `[{hostnames, port}]` are skipped.
    pub fn new(
        process_guid: &str,
        log_guid: &str,
        routes: Option<&Routes>,
        router_key: &str,
    ) -> Self {
        let parsed = routes
            .and_then(|r| r.get(router_key))
            .map(|value| match serde_json::from_value::<Vec<CfRoute>>(value.clone()) {
                Ok(routes) => routes,
                Err(e) => {
                    tracing::warn!(process_guid, error = %e, "unreadable {router_key} routes; ignored");
                    Vec::new()
                }
            })
            .unwrap_or_default();
        Self {
            process_guid: process_guid.to_string(),
            log_guid: log_guid.to_string(),
            routes: parsed,
        }
    }

    pub fn from_scheduling_info(info: &DesiredLrpSchedulingInfo, router_key: &str) -> Self {
        Self::new(
            &info.process_guid,
            &info.log_guid,
            info.routes.as_ref(),
            router_key,
        )
    }

    pub fn from_desired(lrp: &DesiredLrp, router_key: &str) -> Self {
        Self::new(
            &lrp.process_guid,
            &lrp.log_guid,
            lrp.routes.as_ref(),
            router_key,
        )
    }
}

/// One process's routes: hostname → endpoints (a hostname with no endpoint is still known).
pub type ProcessRoutes = BTreeMap<String, BTreeSet<Endpoint>>;

/// The endpoint of `actual` for a route to `container_port`, if the instance is routable.
pub fn endpoint_for(actual: &ActualLrp, container_port: u32, log_guid: &str) -> Option<Endpoint> {
    if actual.state != ActualLrpState::Running || actual.routable == Some(false) {
        return None;
    }
    if actual.address.is_empty() {
        return None;
    }
    let mapping = actual
        .ports
        .iter()
        .find(|m| m.container_port == container_port)?;
    let port = u16::try_from(mapping.host_port).ok().filter(|p| *p != 0)?;
    Some(Endpoint {
        address: actual.address.clone(),
        port,
        process_guid: actual.process_guid.clone(),
        index: actual.index,
        instance_guid: actual.instance_guid.clone(),
        log_guid: log_guid.to_string(),
    })
}

/// The routes of one desired process over its instances (every presence: an evacuating or
/// suspect copy serves until it is removed).
pub fn process_routes<'a>(
    desired: &DesiredRoutes,
    actuals: impl IntoIterator<Item = &'a ActualLrp> + Clone,
) -> ProcessRoutes {
    let mut routes = ProcessRoutes::new();
    for route in &desired.routes {
        for raw in &route.hostnames {
            let Ok(host) = normalize_hostname(raw) else {
                tracing::warn!(process_guid = %desired.process_guid, hostname = %raw, "invalid hostname; ignored");
                continue;
            };
            let set = routes.entry(host).or_default();
            set.extend(
                actuals
                    .clone()
                    .into_iter()
                    .filter(|a| a.process_guid == desired.process_guid)
                    .filter_map(|a| endpoint_for(a, route.port, &desired.log_guid)),
            );
        }
    }
    routes
}

/// What to send a router to go from one table to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    pub register: Vec<RouteItem>,
    pub unregister: Vec<RouteItem>,
}

impl RouteDiff {
    pub fn is_empty(&self) -> bool {
        self.register.is_empty() && self.unregister.is_empty()
    }
}

/// hostname → endpoints, over every process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    processes: HashMap<String, ProcessRoutes>,
    /// hostname → the processes that route it.
    hosts: BTreeMap<String, BTreeSet<String>>,
}

impl RoutingTable {
    /// The whole table from the desired processes and the instances.
    pub fn build(
        desired: &[DesiredLrpSchedulingInfo],
        actual: &[ActualLrp],
        router_key: &str,
    ) -> RoutingTable {
        let mut by_process: HashMap<&str, Vec<&ActualLrp>> = HashMap::new();
        for a in actual {
            by_process.entry(&a.process_guid).or_default().push(a);
        }
        let mut table = RoutingTable::default();
        for info in desired {
            let routes = DesiredRoutes::from_scheduling_info(info, router_key);
            let actuals = by_process
                .get(info.process_guid.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            table.replace_process(
                &info.process_guid,
                process_routes(&routes, actuals.iter().copied()),
            );
        }
        table
    }

    /// The merged view: hostname → endpoints.
    pub fn hosts(&self) -> BTreeMap<String, BTreeSet<Endpoint>> {
        self.hosts
            .keys()
            .filter_map(|h| self.merged(h).map(|set| (h.clone(), set)))
            .collect()
    }

    /// The table as route items, for a full `PUT`: every hostname, then its endpoints.
    pub fn items(&self) -> Vec<RouteItem> {
        let mut items = Vec::new();
        for (host, endpoints) in self.hosts() {
            items.push(RouteItem::host(host.clone()));
            items.extend(
                endpoints
                    .into_iter()
                    .map(|e| RouteItem::endpoint(host.clone(), e)),
            );
        }
        items
    }

    fn merged(&self, host: &str) -> Option<BTreeSet<Endpoint>> {
        let processes = self.hosts.get(host)?;
        let mut set = BTreeSet::new();
        for pg in processes {
            if let Some(endpoints) = self.processes.get(pg).and_then(|r| r.get(host)) {
                set.extend(endpoints.iter().cloned());
            }
        }
        Some(set)
    }

    /// Sets one process's routes (empty: the process routes nothing) and returns the change
    /// to the merged table.
    pub fn replace_process(&mut self, process_guid: &str, routes: ProcessRoutes) -> RouteDiff {
        let old = self.processes.get(process_guid);
        let affected: BTreeSet<String> = old
            .into_iter()
            .flat_map(|r| r.keys())
            .chain(routes.keys())
            .cloned()
            .collect();
        let before: BTreeMap<String, Option<BTreeSet<Endpoint>>> = affected
            .iter()
            .map(|h| (h.clone(), self.merged(h)))
            .collect();

        if let Some(old) = self.processes.remove(process_guid) {
            for host in old.keys() {
                if let Some(set) = self.hosts.get_mut(host) {
                    set.remove(process_guid);
                    if set.is_empty() {
                        self.hosts.remove(host);
                    }
                }
            }
        }
        if !routes.is_empty() {
            for host in routes.keys() {
                self.hosts
                    .entry(host.clone())
                    .or_default()
                    .insert(process_guid.to_string());
            }
            self.processes.insert(process_guid.to_string(), routes);
        }

        let mut diff = RouteDiff::default();
        for (host, before) in before {
            let after = self.merged(&host);
            match (before, after) {
                (None, None) => {}
                (None, Some(after)) => {
                    diff.register.push(RouteItem::host(host.clone()));
                    diff.register.extend(
                        after
                            .into_iter()
                            .map(|e| RouteItem::endpoint(host.clone(), e)),
                    );
                }
                (Some(_), None) => diff.unregister.push(RouteItem::host(host)),
                (Some(before), Some(after)) => {
                    diff.unregister.extend(
                        before
                            .difference(&after)
                            .map(|e| RouteItem::endpoint(host.clone(), e.clone())),
                    );
                    diff.register.extend(
                        after
                            .difference(&before)
                            .map(|e| RouteItem::endpoint(host.clone(), e.clone())),
                    );
                }
            }
        }
        diff
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use diego_model::{PortMapping, Presence};

    pub(crate) fn info(pg: &str, hosts: &[&str], port: u32) -> DesiredLrpSchedulingInfo {
        let mut routes = Routes::new();
        routes.insert(
            "cf-router".into(),
            serde_json::json!([{ "hostnames": hosts, "port": port }]),
        );
        DesiredLrpSchedulingInfo {
            process_guid: pg.into(),
            log_guid: format!("{pg}-log"),
            routes: Some(routes),
            ..Default::default()
        }
    }

    pub(crate) fn running(pg: &str, index: i32, host_port: u32) -> ActualLrp {
        ActualLrp {
            process_guid: pg.into(),
            index,
            instance_guid: format!("{pg}-{index}"),
            address: "10.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port,
                ..Default::default()
            }],
            state: ActualLrpState::Running,
            ..Default::default()
        }
    }

    #[test]
    fn running_instances_with_the_route_port_are_endpoints() {
        let mut claimed = running("a", 2, 61003);
        claimed.state = ActualLrpState::Claimed;
        let mut evacuating = running("a", 1, 61004);
        evacuating.presence = Presence::Evacuating;
        let mut unroutable = running("a", 3, 61005);
        unroutable.routable = Some(false);
        let actual = vec![
            running("a", 0, 61001),
            running("a", 1, 61002),
            evacuating,
            claimed,
            unroutable,
            running("b", 0, 61009),
        ];
        let table = RoutingTable::build(
            &[
                info("a", &["App.Local", "www.local"], 8080),
                info("c", &["c.local"], 8080),
            ],
            &actual,
            "cf-router",
        );
        let hosts = table.hosts();
        let ports: Vec<u16> = hosts["app.local"].iter().map(|e| e.port).collect();
        assert_eq!(ports, vec![61001, 61002, 61004]);
        assert_eq!(hosts["app.local"], hosts["www.local"]);
        let first = hosts["app.local"].first().unwrap();
        assert_eq!(
            (
                first.log_guid.as_str(),
                first.instance_guid.as_str(),
                first.index
            ),
            ("a-log", "a-0", 0)
        );
        assert!(hosts["c.local"].is_empty(), "known, no instance");
        assert!(!hosts.keys().any(|h| h.contains('b')));

        // A route to a port the instances do not map gives no endpoint.
        let other = RoutingTable::build(&[info("a", &["app.local"], 9090)], &actual, "cf-router");
        assert!(other.hosts()["app.local"].is_empty());
        // Another router key sees nothing.
        assert!(
            RoutingTable::build(&[info("a", &["x"], 8080)], &actual, "tcp-router")
                .hosts()
                .is_empty()
        );
    }

    #[test]
    fn replacing_a_process_returns_the_difference() {
        let d = DesiredRoutes::from_scheduling_info(&info("a", &["app.local"], 8080), "cf-router");
        let mut table = RoutingTable::default();
        let diff = table.replace_process("a", process_routes(&d, &[running("a", 0, 1)]));
        assert_eq!(diff.register.len(), 2, "{diff:?}");
        assert_eq!(diff.register[0], RouteItem::host("app.local"));

        let both = [running("a", 0, 1), running("a", 1, 2)];
        let diff = table.replace_process("a", process_routes(&d, &both));
        assert!(diff.unregister.is_empty());
        assert_eq!(diff.register.len(), 1);
        assert_eq!(diff.register[0].endpoint.as_ref().unwrap().port, 2);

        let diff = table.replace_process("a", process_routes(&d, &[running("a", 1, 2)]));
        assert_eq!(diff.unregister.len(), 1);
        assert_eq!(diff.unregister[0].endpoint.as_ref().unwrap().port, 1);

        // A second process on the same hostname keeps it known when the first goes.
        let e = DesiredRoutes::from_scheduling_info(&info("b", &["app.local"], 8080), "cf-router");
        table.replace_process("b", process_routes(&e, &[running("b", 0, 3)]));
        let diff = table.replace_process("a", ProcessRoutes::new());
        assert_eq!(diff.unregister.len(), 1);
        assert!(diff.unregister[0].endpoint.is_some());
        let diff = table.replace_process("b", ProcessRoutes::new());
        assert_eq!(diff.unregister, vec![RouteItem::host("app.local")]);
        assert!(table.hosts().is_empty() && table.items().is_empty());
    }

    #[test]
    fn malformed_routes_are_ignored() {
        let mut routes = Routes::new();
        routes.insert("cf-router".into(), serde_json::json!({"not": "a list"}));
        let d = DesiredRoutes::new("a", "l", Some(&routes), "cf-router");
        assert!(d.routes.is_empty());
        let d = DesiredRoutes::new("a", "l", None, "cf-router");
        assert!(d.routes.is_empty());
    }
}
