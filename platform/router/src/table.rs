//! The routing table: each emitter's routes kept apart, merged per hostname into pools that
//! the proxy picks endpoints from in turn, and the endpoints recently found failing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::routes::{Endpoint, RouteItem};

/// One hostname's endpoints, as the proxy balances across them.
#[derive(Debug)]
pub struct Pool {
    pub endpoints: Vec<Endpoint>,
    /// Where the next round-robin pick starts; carried over when the pool is rebuilt, so
    /// frequent changes do not send every request to the first endpoint.
    next: AtomicUsize,
}

impl Pool {
    /// The next endpoint in turn that is neither in `tried` nor bad; a bad one not yet tried
    /// if every other is bad; `None` once every endpoint was tried.
    pub fn pick(&self, tried: &[usize], is_bad: impl Fn(&Endpoint) -> bool) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let untried = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i));
        let mut fallback = None;
        for i in untried {
            if !is_bad(&self.endpoints[i]) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }
}

type HostRoutes = BTreeMap<String, BTreeSet<Endpoint>>;

#[derive(Debug, Default)]
struct TableState {
    by_emitter: HashMap<String, HostRoutes>,
    merged: HashMap<String, Arc<Pool>>,
}

impl TableState {
    /// Rebuilds the merged pools of `hosts` from every emitter's routes.
    fn remerge(&mut self, hosts: BTreeSet<String>) {
        for host in hosts {
            let mut known = false;
            let mut endpoints = BTreeSet::new();
            for routes in self.by_emitter.values() {
                if let Some(set) = routes.get(&host) {
                    known = true;
                    endpoints.extend(set.iter().cloned());
                }
            }
            if !known {
                self.merged.remove(&host);
                continue;
            }
            let next = self
                .merged
                .get(&host)
                .map(|p| p.next.load(Ordering::Relaxed))
                .unwrap_or(0);
            let pool = Pool {
                endpoints: endpoints.into_iter().collect(),
                next: AtomicUsize::new(next),
            };
            self.merged.insert(host, Arc::new(pool));
        }
    }
}

/// The whole table, shared by the admin API and the proxy.
#[derive(Debug)]
pub struct RouteTable {
    state: RwLock<TableState>,
    bad: Mutex<HashMap<String, Instant>>,
    bad_for: Duration,
}

impl RouteTable {
    /// A table whose endpoints stay marked bad for `bad_for` after a failure.
    pub fn new(bad_for: Duration) -> Self {
        Self {
            state: RwLock::new(TableState::default()),
            bad: Mutex::new(HashMap::new()),
            bad_for,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TableState> {
        // A poisoned lock means a panic mid-update elsewhere; the maps are still whole (every
        // update is a plain insert or remove), so keep serving them.
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TableState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every route of `emitter` with `items`.
    pub fn replace(&self, emitter: &str, items: Vec<RouteItem>) {
        let mut fresh = HostRoutes::new();
        for item in items {
            let set = fresh.entry(item.hostname).or_default();
            set.extend(item.endpoint);
        }
        let mut state = self.write();
        let old = state.by_emitter.remove(emitter).unwrap_or_default();
        let hosts: BTreeSet<String> = old.keys().chain(fresh.keys()).cloned().collect();
        if !fresh.is_empty() {
            state.by_emitter.insert(emitter.to_string(), fresh);
        }
        state.remerge(hosts);
    }

    /// Adds `items` to `emitter`'s routes.
    pub fn register(&self, emitter: &str, items: Vec<RouteItem>) {
        let mut state = self.write();
        let routes = state.by_emitter.entry(emitter.to_string()).or_default();
        let mut hosts = BTreeSet::new();
        for item in items {
            let set = routes.entry(item.hostname.clone()).or_default();
            set.extend(item.endpoint);
            hosts.insert(item.hostname);
        }
        state.remerge(hosts);
    }

    /// Removes `items` from `emitter`'s routes: an endpoint item removes that endpoint, a bare
    /// hostname item removes the hostname with all its endpoints.
    pub fn unregister(&self, emitter: &str, items: Vec<RouteItem>) {
        let mut state = self.write();
        let Some(routes) = state.by_emitter.get_mut(emitter) else {
            return;
        };
        let mut hosts = BTreeSet::new();
        for item in items {
            match &item.endpoint {
                Some(endpoint) => {
                    if let Some(set) = routes.get_mut(&item.hostname) {
                        set.remove(endpoint);
                    }
                }
                None => {
                    routes.remove(&item.hostname);
                }
            }
            hosts.insert(item.hostname);
        }
        if routes.is_empty() {
            state.by_emitter.remove(emitter);
        }
        state.remerge(hosts);
    }

    /// The pool for a request's host: the exact hostname, else a `*.` wildcard one level up.
    pub fn lookup(&self, host: &str) -> Option<Arc<Pool>> {
        let state = self.read();
        if let Some(pool) = state.merged.get(host) {
            return Some(pool.clone());
        }
        let (_, parent) = host.split_once('.')?;
        state.merged.get(&format!("*.{parent}")).cloned()
    }

    /// Every hostname with its endpoints.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<Endpoint>> {
        self.read()
            .merged
            .iter()
            .map(|(host, pool)| (host.clone(), pool.endpoints.clone()))
            .collect()
    }

    /// Marks an endpoint bad for a while: picks skip it while others exist.
    pub fn mark_bad(&self, endpoint: &Endpoint) {
        let until = Instant::now() + self.bad_for;
        let mut bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        bad.retain(|_, t| *t > Instant::now());
        bad.insert(endpoint.authority(), until);
    }

    pub fn is_bad(&self, endpoint: &Endpoint) -> bool {
        let bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
        bad.get(&endpoint.authority())
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint {
            address: "10.0.0.1".into(),
            port,
            process_guid: "p".into(),
            index: 0,
            instance_guid: format!("i{port}"),
            log_guid: "l".into(),
        }
    }

    #[test]
    fn emitters_replace_only_their_own_routes() {
        let table = RouteTable::new(Duration::from_secs(5));
        table.replace("a", vec![RouteItem::endpoint("h", ep(1))]);
        table.replace("b", vec![RouteItem::endpoint("h", ep(2))]);
        assert_eq!(table.snapshot()["h"].len(), 2);
        table.replace("a", vec![RouteItem::host("other")]);
        assert_eq!(table.snapshot()["h"], vec![ep(2)]);
        assert!(table.snapshot()["other"].is_empty());
        table.unregister("b", vec![RouteItem::endpoint("h", ep(2))]);
        assert!(table.snapshot()["h"].is_empty(), "the hostname stays known");
        table.unregister("b", vec![RouteItem::host("h")]);
        assert!(!table.snapshot().contains_key("h"));
    }

    #[test]
    fn picks_go_round_and_skip_bad_and_tried() {
        let table = RouteTable::new(Duration::from_secs(5));
        table.register(
            "a",
            (1..=3).map(|p| RouteItem::endpoint("h", ep(p))).collect(),
        );
        let pool = table.lookup("h").unwrap();
        let picks: Vec<_> = (0..3).map(|_| pool.pick(&[], |_| false).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        table.mark_bad(&ep(2));
        for _ in 0..4 {
            assert_ne!(pool.pick(&[], |e| table.is_bad(e)), Some(1));
        }
        assert_eq!(
            pool.pick(&[0, 2], |e| table.is_bad(e)),
            Some(1),
            "bad, but the last"
        );
        assert_eq!(pool.pick(&[0, 1, 2], |_| false), None);
    }

    #[test]
    fn wildcards_match_one_level() {
        let table = RouteTable::new(Duration::from_secs(5));
        table.register("a", vec![RouteItem::endpoint("*.apps.local", ep(1))]);
        assert!(table.lookup("x.apps.local").is_some());
        assert!(table.lookup("apps.local").is_none());
    }
}
