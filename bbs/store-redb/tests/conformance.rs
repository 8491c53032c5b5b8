//! The diego-store conformance suite, each case on a fresh store in its own temporary directory.

use std::sync::Arc;

use diego_store::conformance::Harness;
use diego_store_redb::EmbeddedStore;

async fn harness() -> Harness {
    // Leaked so the directory outlives the store (a case does not return it to be dropped).
    let dir = Box::leak(Box::new(tempfile::tempdir().expect("temp dir")));
    let store: Arc<EmbeddedStore> = EmbeddedStore::open(dir.path().join("store.redb"))
        .await
        .expect("open store");
    Harness {
        store,
        prefix: "/conformance/".into(),
    }
}

diego_store::conformance_tests!(harness());
