//! A guest that loops, bombs memory or panics is cut off and reported; the host goes on.

use std::time::{Duration, Instant};

use diego_auction_scoring::place_classic;
use diego_auction_scoring::testing::{Shape, random_batch};
use diego_host::{Fault, Limits};
use diego_plugin_artifacts as artifacts;

use crate::{host, wasm};

fn batch() -> diego_auction_scoring::Batch {
    random_batch(7, Shape::uniform(20, 5))
}

/// After any fault the host still loads and runs a good policy.
fn host_is_alive(host: &diego_host::Host) {
    let classic = host
        .load_policy(&wasm(artifacts::CLASSIC))
        .expect("host still loads");
    let b = batch();
    assert_eq!(
        classic.place(&b).expect("host still places"),
        place_classic(&b)
    );
}

#[test]
fn a_looping_guest_is_cut_off_by_its_deadline() {
    let (host, _dir) = host();
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::auction()
    };
    let looper = host
        .load_policy(&wasm(artifacts::TEST_LOOPER))
        .expect("loads")
        .with_limits(limits);
    let started = Instant::now();
    let fault = looper.place(&batch()).expect_err("must not return");
    let took = started.elapsed();
    assert_eq!(fault, Fault::Deadline(Duration::from_millis(50)));
    assert!(took < Duration::from_secs(2), "cut off after {took:?}");
    // Each call gets a fresh instance: the loop is cut again, not left poisoned.
    assert!(matches!(looper.place(&batch()), Err(Fault::Deadline(_))));
    host_is_alive(&host);
}

#[test]
fn a_memory_bomb_is_stopped_by_its_cap() {
    let (host, _dir) = host();
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::auction()
    };
    let bomb = host
        .load_policy(&wasm(artifacts::TEST_MEMBOMB))
        .expect("loads")
        .with_limits(limits);
    match bomb.place(&batch()) {
        Err(Fault::Memory { limit, requested }) => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit, "requested {requested}");
        }
        other => panic!("expected a memory fault, got {other:?}"),
    }
    host_is_alive(&host);
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let (host, _dir) = host();
    let panicker = host
        .load_policy(&wasm(artifacts::TEST_PANICKER))
        .expect("loads");
    match panicker.place(&batch()) {
        Err(Fault::Panic { message }) => assert_eq!(message, "policy bug: no score for 20 cells"),
        other => panic!("expected a panic fault, got {other:?}"),
    }
    host_is_alive(&host);
}

#[test]
fn unbounded_recursion_is_a_stack_overflow() {
    let (host, _dir) = host();
    let recurser = host
        .load_policy(&wasm(artifacts::TEST_RECURSER))
        .expect("loads");
    assert_eq!(recurser.place(&batch()), Err(Fault::StackOverflow));
    host_is_alive(&host);
}

#[test]
fn input_over_the_cap_is_refused_before_the_call() {
    let (host, _dir) = host();
    let limits = Limits {
        max_cells: 10,
        ..Limits::auction()
    };
    let classic = host
        .load_policy(&wasm(artifacts::CLASSIC))
        .expect("loads")
        .with_limits(limits);
    assert!(
        matches!(classic.place(&batch()), Err(Fault::InputTooLarge(m)) if m.contains("20 cells"))
    );
}
