//! Guests answer exactly as the native build of the same scoring code.

use diego_auction_scoring::testing::{Shape, random_batch};
use diego_auction_scoring::{Strategy, place, validate_outcomes};
use diego_plugin_artifacts as artifacts;

use crate::{host, wasm};

fn shapes() -> Vec<Shape> {
    vec![
        Shape {
            cells: 40,
            works: 80,
            zones: 3,
            processes: 10,
            task_percent: 25,
            constraints: true,
            used_percent: 60,
        },
        Shape {
            cells: 7,
            works: 30,
            zones: 2,
            processes: 3,
            task_percent: 10,
            constraints: true,
            used_percent: 90,
        },
        Shape::uniform(200, 50),
        Shape {
            cells: 0,
            works: 5,
            zones: 1,
            processes: 2,
            task_percent: 50,
            constraints: false,
            used_percent: 0,
        },
    ]
}

#[test]
fn classic_guest_equals_native_classic_on_random_batches() {
    let (host, _dir) = host();
    let policy = host
        .load_policy(&wasm(artifacts::CLASSIC))
        .expect("classic loads");
    assert_eq!(policy.name(), "classic");
    let mut placed = 0;
    for seed in 0..25u64 {
        for shape in shapes() {
            let batch = random_batch(seed, shape);
            let native = place(&batch, Strategy::Classic);
            let guest = policy.place(&batch).expect("classic guest places");
            assert_eq!(guest, native, "seed {seed}, shape {shape:?}");
            assert_eq!(validate_outcomes(&batch, &guest), Ok(()));
            placed += guest
                .iter()
                .filter(|o| matches!(o, diego_auction_scoring::Outcome::Placed(_)))
                .count();
        }
    }
    assert!(
        placed > 1000,
        "the random batches should mostly place ({placed})"
    );
}

#[test]
fn binpack_and_spread_guests_equal_their_native_builds() {
    let (host, _dir) = host();
    for (path, strategy, name) in [
        (artifacts::BINPACK, Strategy::Binpack, "binpack"),
        (artifacts::SPREAD, Strategy::Spread, "spread"),
    ] {
        let policy = host.load_policy(&wasm(path)).expect("policy loads");
        assert_eq!(policy.name(), name);
        for seed in 0..8u64 {
            for shape in shapes() {
                let batch = random_batch(seed, shape);
                assert_eq!(
                    policy.place(&batch).expect("places"),
                    place(&batch, strategy),
                    "{name} seed {seed}"
                );
            }
        }
    }
}

#[test]
fn the_sdk_example_policy_gives_valid_placements() {
    let (host, _dir) = host();
    let policy = host
        .load_policy(&wasm(artifacts::EXAMPLE_CUSTOM_POLICY))
        .expect("example loads");
    assert_eq!(policy.name(), "strict-anti-affinity");
    for seed in 0..10u64 {
        let batch = random_batch(seed, shapes()[0]);
        let out = policy.place(&batch).expect("places");
        assert_eq!(validate_outcomes(&batch, &out), Ok(()), "seed {seed}");
    }
}
