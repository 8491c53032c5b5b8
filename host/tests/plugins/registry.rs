//! Hot swap, canaries, fallback, circuit breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use diego_auction_scoring::testing::{Shape, random_batch};
use diego_auction_scoring::{Batch, Outcome, place_classic, validate_outcomes};
use diego_host::{
    ActivePolicy, DecidedBy, Fault, InstallError, OnFault, PolicyRegistry, RegistryConfig,
};
use diego_plugin_artifacts as artifacts;

use crate::{host, wasm};

fn real_batch(seed: u64) -> Arc<Batch> {
    Arc::new(random_batch(seed, Shape::uniform(30, 12)))
}

/// A canary batch the misbehaving test guests pass (they misbehave only when there is work).
fn empty_canary() -> Batch {
    Batch {
        works: vec![],
        ..random_batch(1, Shape::uniform(3, 0))
    }
}

#[test]
fn install_swaps_and_a_failed_canary_leaves_the_current_policy() {
    let (host, _dir) = host();
    let registry = PolicyRegistry::new(RegistryConfig::default());
    assert!(matches!(*registry.current(), ActivePolicy::Native));
    let b = real_batch(1);
    assert_eq!(registry.place(&b).decided_by, DecidedBy::Native);

    registry
        .load_and_install(&host, &wasm(artifacts::CLASSIC))
        .expect("classic installs");
    let sha = registry.status().sha256.expect("wasm active");
    let p = registry.place(&b);
    assert_eq!(
        p.decided_by,
        DecidedBy::Wasm {
            sha256: sha.clone()
        }
    );
    assert_eq!(p.outcomes, place_classic(&b));

    // The panicking guest fails its canary (synthetic batch): nothing changes.
    match registry.load_and_install(&host, &wasm(artifacts::TEST_PANICKER)) {
        Err(InstallError::Canary {
            batch: "synthetic",
            fault: Fault::Panic { .. },
        }) => {}
        other => panic!("expected a canary failure, got {other:?}"),
    }
    assert_eq!(registry.status().sha256.as_deref(), Some(sha.as_str()));
    // An unknown major never gets as far as a canary.
    assert!(matches!(
        registry.load_and_install(&host, &wasm(artifacts::TEST_MAJOR9)),
        Err(InstallError::Load(_))
    ));
    assert_eq!(registry.status().sha256.as_deref(), Some(sha.as_str()));
}

#[test]
fn invalid_placements_are_caught_and_the_native_policy_places_the_batch() {
    let (host, _dir) = host();
    let registry = PolicyRegistry::new(RegistryConfig {
        fault_threshold: 100,
        ..RegistryConfig::default()
    });
    let invalid = host
        .load_policy(&wasm(artifacts::TEST_INVALID))
        .expect("loads");
    // With the default canaries it would be refused; install it past them to see the fallback.
    assert!(matches!(
        registry.install(invalid.clone()),
        Err(InstallError::Canary {
            fault: Fault::InvalidOutput(_),
            ..
        })
    ));
    registry
        .install_with_canaries(invalid, &[empty_canary()])
        .expect("installs");
    let b = real_batch(2);
    let p = registry.place(&b);
    match &p.decided_by {
        DecidedBy::Fallback {
            fault: Fault::InvalidOutput(m),
            ..
        } => {
            assert!(m.contains("not in the batch"), "{m}")
        }
        other => panic!("expected a fallback, got {other:?}"),
    }
    assert_eq!(p.outcomes, place_classic(&b));
    assert_eq!(validate_outcomes(&b, &p.outcomes), Ok(()));
}

#[test]
fn the_circuit_breaker_reverts_to_native_and_marks_the_policy_degraded() {
    let (host, _dir) = host();
    let registry = PolicyRegistry::new(RegistryConfig {
        fault_threshold: 3,
        fault_window: Duration::from_secs(60),
        on_fault: OnFault::Fallback,
    });
    let panicker = host
        .load_policy(&wasm(artifacts::TEST_PANICKER))
        .expect("loads");
    let sha = panicker.info().sha256.clone();
    registry
        .install_with_canaries(panicker, &[empty_canary()])
        .expect("installs");
    for i in 0..3 {
        let p = registry.place(&real_batch(i));
        assert!(
            matches!(
                p.decided_by,
                DecidedBy::Fallback {
                    fault: Fault::Panic { .. },
                    ..
                }
            ),
            "{:?}",
            p.decided_by
        );
    }
    let status = registry.status();
    assert_eq!(status.sha256, None, "reverted to native");
    let degraded = status.degraded.expect("marked degraded");
    assert_eq!(degraded.sha256, sha);
    assert!(
        degraded.reason.contains("policy bug"),
        "{}",
        degraded.reason
    );
    assert_eq!(status.total_faults, 3);
    assert_eq!(registry.place(&real_batch(9)).decided_by, DecidedBy::Native);
    // An operator re-enables a policy by installing again.
    registry
        .load_and_install(&host, &wasm(artifacts::CLASSIC))
        .expect("installs");
    assert!(registry.status().degraded.is_none());
}

#[test]
fn fail_batch_mode_fails_the_batch_instead() {
    let (host, _dir) = host();
    let registry = PolicyRegistry::new(RegistryConfig {
        on_fault: OnFault::FailBatch,
        ..RegistryConfig::default()
    });
    let looper = host
        .load_policy(&wasm(artifacts::TEST_LOOPER))
        .expect("loads")
        .with_limits(diego_host::Limits {
            deadline: Duration::from_millis(20),
            ..diego_host::Limits::auction()
        });
    registry
        .install_with_canaries(looper, &[empty_canary()])
        .expect("installs");
    let b = real_batch(3);
    let p = registry.place(&b);
    assert!(matches!(
        p.decided_by,
        DecidedBy::Failed {
            fault: Fault::Deadline(_),
            ..
        }
    ));
    assert_eq!(p.outcomes.len(), b.works.len());
    assert!(p.outcomes.iter().all(|o| matches!(o, Outcome::Failed(_))));
}

#[test]
fn hot_swap_under_concurrent_placement() {
    let (host, _dir) = host();
    let registry = Arc::new(PolicyRegistry::new(RegistryConfig::default()));
    let classic = host.load_policy(&wasm(artifacts::CLASSIC)).expect("loads");
    let binpack = host.load_policy(&wasm(artifacts::BINPACK)).expect("loads");
    let spread = host.load_policy(&wasm(artifacts::SPREAD)).expect("loads");
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let (registry, stop, placed) = (registry.clone(), stop.clone(), placed.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let b = real_batch(t * 1000 + i % 5);
                    let p = registry.place(&b);
                    assert!(
                        matches!(p.decided_by, DecidedBy::Native | DecidedBy::Wasm { .. }),
                        "no faults expected during swaps: {:?}",
                        p.decided_by
                    );
                    assert_eq!(validate_outcomes(&b, &p.outcomes), Ok(()));
                    placed.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    // Swap at least 30 times, and until the workers have placed plenty of batches across the
    // swaps (a loaded CI machine is slow; the deadline only guards against a hang).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut swaps = 0usize;
    while swaps < 30 || placed.load(Ordering::Relaxed) < 60 {
        assert!(std::time::Instant::now() < deadline, "workers stalled");
        match swaps % 4 {
            0 => registry.install(classic.clone()).expect("classic"),
            1 => registry.install(binpack.clone()).expect("binpack"),
            2 => registry.install(spread.clone()).expect("spread"),
            _ => registry.revert_to_native(),
        }
        swaps += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(registry.status().total_faults, 0);
}
