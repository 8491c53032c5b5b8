//! Loading: versions, worlds, size cap, the precompiled cache.

use diego_host::{Host, LoadError};
use diego_plugin_artifacts as artifacts;

use crate::{host, small, wasm};

#[test]
fn an_unknown_major_is_refused_with_a_clear_message() {
    let (host, _dir) = host();
    let err = host
        .load_policy(&wasm(artifacts::TEST_MAJOR9))
        .expect_err("major 9 is unknown");
    assert!(matches!(err, LoadError::UnknownVersion { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("diego:auction/policy@9.0.0"), "{message}");
    assert!(message.contains("diego:auction/policy@0.2.x"), "{message}");
}

#[test]
fn the_previous_auction_major_is_refused_with_a_rebuild_hint() {
    let (host, _dir) = host();
    let err = host
        .load_policy(&wasm(artifacts::TEST_AUCTION01))
        .expect_err("0.1 is the previous major");
    assert!(matches!(err, LoadError::UnknownVersion { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("diego:auction/policy@0.1.0"), "{message}");
    assert!(message.contains("diego:auction/policy@0.2.x"), "{message}");
    assert!(message.contains("rebuild"), "{message}");
}

#[test]
fn a_component_of_the_other_world_is_refused() {
    let (host, _dir) = host();
    let err = host
        .load_policy(&wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE))
        .expect_err("not a policy");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
    assert!(
        err.to_string().contains("diego:lifecycle/plugin@0.1.0"),
        "{err}"
    );
    let err = host
        .load_lifecycle(&wasm(artifacts::CLASSIC))
        .expect_err("not a lifecycle");
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
}

#[test]
fn garbage_is_refused() {
    let (host, _dir) = host();
    assert!(matches!(
        host.load_policy(b"\0asm nope"),
        Err(LoadError::Compile(_))
    ));
}

#[test]
fn an_oversize_component_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = small(dir.path().join("cache"));
    config.max_component_bytes = 10_000;
    let host = Host::new(config).expect("host");
    let bytes = wasm(artifacts::CLASSIC);
    match host.load_policy(&bytes) {
        Err(LoadError::TooLarge { size, max }) => {
            assert_eq!((size, max), (bytes.len() as u64, 10_000))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        host.load_policy_file(artifacts::CLASSIC),
        Err(LoadError::TooLarge { .. })
    ));
}

#[test]
fn the_second_load_hits_the_precompiled_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let bytes = wasm(artifacts::SPREAD);
    let first = Host::new(small(cache.clone())).expect("host");
    let loaded = first.load_policy(&bytes).expect("loads");
    assert!(!loaded.info().from_cache);
    assert_eq!(loaded.info().sha256.len(), 64);
    let entries: Vec<_> = std::fs::read_dir(&cache).expect("cache dir").collect();
    assert_eq!(entries.len(), 1, "one .cwasm written");
    // The same host, and a new host (a restart) on the same cache dir: no compilation.
    assert!(first.load_policy(&bytes).expect("loads").info().from_cache);
    let restarted = Host::new(small(cache.clone())).expect("host");
    let again = restarted.load_policy(&bytes).expect("loads");
    assert!(again.info().from_cache);
    assert_eq!(again.info().sha256, loaded.info().sha256);
    // A corrupt entry is not trusted blindly: it fails wasmtime's checks and is recompiled.
    for e in std::fs::read_dir(&cache).expect("cache dir") {
        std::fs::write(e.expect("entry").path(), b"not a cwasm").expect("overwrite");
    }
    let recompiled = restarted.load_policy(&bytes).expect("recompiles");
    assert!(!recompiled.info().from_cache);
}

#[cfg(unix)]
#[test]
fn the_cache_dir_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (host, _dir) = host();
    let mode = std::fs::metadata(&host.config().cache_dir)
        .expect("exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}
