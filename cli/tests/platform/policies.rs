//! Operators swap the auction policy at run time.

use std::time::Duration;

use super::*;

#[test]
fn binpack_then_spread_change_where_new_instances_go() {
    let _serial = serial();
    let Some(p) = platform("policy_swap", 3, |_| {}) else {
        return;
    };
    let out = p.diego_ok(&["policy", "list"]).unwrap();
    for name in ["classic", "binpack", "spread"] {
        assert!(out.contains(name), "policy list: {out}");
    }
    p.diego_ok(&["policy", "set", "binpack"]).unwrap();
    assert!(p.diego_ok(&["policy", "get"]).unwrap().contains("binpack"));
    // One at a time: each is placed on a cell whose earlier instances already run.
    for k in 0..3 {
        desire(&p, &web_lrp(&format!("packed-{k}"), 1, 64));
        wait_running_and_answering(&p, &format!("packed-{k}"), 1, Duration::from_secs(60));
    }
    let packed: std::collections::HashSet<String> = (0..3)
        .flat_map(|k| cells_of(&p, &format!("packed-{k}")))
        .collect();
    assert_eq!(
        packed.len(),
        1,
        "binpack puts single instances on one cell: {packed:?}"
    );

    p.diego_ok(&["policy", "set", "spread"]).unwrap();
    for k in 0..2 {
        desire(&p, &web_lrp(&format!("spread-{k}"), 1, 64));
        wait_running_and_answering(&p, &format!("spread-{k}"), 1, Duration::from_secs(60));
    }
    let spread: std::collections::HashSet<String> = (0..2)
        .flat_map(|k| cells_of(&p, &format!("spread-{k}")))
        .collect();
    assert!(
        spread.is_disjoint(&packed),
        "spread places new instances on the emptier cells: packed {packed:?}, spread {spread:?}"
    );
}

#[test]
fn a_trapping_policy_falls_back_and_try_changes_nothing() {
    let _serial = serial();
    let Some(p) = platform("policy_fallback", 2, |_| {}) else {
        return;
    };
    // An unknown built-in and a file that is not a component are refused; nothing changes.
    let out = p.diego(&["policy", "set", "no-such-policy"]).unwrap();
    assert!(!out.status.success());
    let garbage = p.dir().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let out = p
        .diego(&["policy", "set", garbage.to_str().unwrap()])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).is_empty(),
        "a refused policy says why"
    );
    assert!(p.diego_ok(&["policy", "get"]).unwrap().contains("classic"));

    // `try` prints where pending work would go under each policy and changes nothing.
    let mut big = web_lrp("pending", 2, 64);
    big["rootfs"] = serde_json::json!("preloaded:nosuchstack");
    desire(&p, &big);
    let tried = p.diego_ok(&["policy", "try", "binpack"]).unwrap();
    assert!(tried.contains("pending"), "policy try output: {tried}");
    assert!(p.diego_ok(&["policy", "get"]).unwrap().contains("classic"));

    // A policy that panics on every batch is refused at its canary, with its reason.
    let out = p
        .diego(&["policy", "set", diego_plugin_artifacts::TEST_PANICKER])
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "a panicking policy is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy bug"));
    assert!(p.diego_ok(&["policy", "get"]).unwrap().contains("classic"));

    // One that passes its canaries but traps in production: the batch falls back to the
    // native classic policy, the work is placed anyway, and `policy get` says so.
    p.diego_ok(&["policy", "set", diego_plugin_artifacts::TEST_TRAPPER])
        .unwrap();
    desire(&p, &web_lrp("trap-app", 1, 64));
    wait_running_and_answering(&p, "trap-app", 1, Duration::from_secs(60));
    let status = p.diego_ok(&["policy", "get"]).unwrap();
    assert!(status.contains("trapper"), "policy get: {status}");
    assert!(
        !status.contains("fallbacks:    0"),
        "the fallback is counted: {status}"
    );
    assert!(
        status.contains("refusing a trap- app"),
        "the fault's reason is shown: {status}"
    );
}
