//! The store conformance suite against one real etcd member shared by every case.

// Helpers of integration tests are test code too (clippy.toml only exempts `#[test]` fns).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use diego_store::conformance::Harness;
use diego_store_etcd::{EtcdOptions, EtcdStore};
use diego_testkit::EtcdServer;

/// One etcd for the whole test binary, started by the first case that needs it. It is never
/// dropped: the testkit's watchdog kills it when the test process exits.
fn etcd() -> &'static EtcdServer {
    static ETCD: OnceLock<EtcdServer> = OnceLock::new();
    ETCD.get_or_init(|| EtcdServer::start().expect("starting etcd"))
}

/// A connection per case (each `#[tokio::test]` has its own runtime) and a prefix of its own.
async fn harness() -> Harness {
    let endpoints = tokio::task::spawn_blocking(|| etcd().endpoints())
        .await
        .unwrap();
    let store = EtcdStore::connect(&endpoints, EtcdOptions::default())
        .await
        .expect("connecting to etcd");
    Harness {
        store: Arc::new(store),
        prefix: format!("/t/{}/", uuid::Uuid::new_v4()),
    }
}

diego_store::conformance_tests!(harness());
