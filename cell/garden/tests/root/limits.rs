use diego_garden::{Backend, ContainerSpec, Limits};

use crate::common::*;

#[tokio::test]
async fn memory_hog_is_oom_killed_at_its_limit() {
    if !root_or_skip("memory limit") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(2).await;
    let spec = ContainerSpec {
        limits: Limits {
            memory_bytes: Some(64 << 20),
            cpu_shares: Some(512),
            pids: None,
            ..Limits::default()
        },
        ..busybox()
    };
    let h = b.create(spec).await.unwrap();
    let m = b.metrics(&h).await.unwrap();
    assert_eq!(m.memory_limit_bytes, 64 << 20);
    if b.cgroup_version() == "v1" {
        let shares =
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/garden-test-2/{h}/cpu.shares"))
                .unwrap();
        assert_eq!(shares.trim(), "512");
    }

    // below the limit works
    let out = run_sh(
        &b,
        &h,
        "dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null; echo ok",
    )
    .await;
    assert_eq!(out.stdout_str(), "ok\n");
    assert!(!b.info(&h).await.unwrap().oom_killed);

    // a 256 MiB buffer is touched page by page by dd: killed by the OOM killer (SIGKILL)
    let out = b
        .run_and_wait(
            &h,
            diego_garden::ProcessSpec {
                argv: vec![
                    "dd".into(),
                    "if=/dev/zero".into(),
                    "of=/dev/null".into(),
                    "bs=256M".into(),
                    "count=1".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        out.exit_status,
        128 + libc::SIGKILL,
        "stderr: {}",
        out.stderr_str()
    );
    let info = b.info(&h).await.unwrap();
    assert!(info.oom_killed, "{info:?}");
    assert_eq!(info.state, "active", "the container itself survives");

    // metrics: cpu time used, disk grows with the writable layer
    let before = b.metrics(&h).await.unwrap();
    run_sh(&b, &h, "dd if=/dev/zero of=/big bs=1M count=4 2>/dev/null").await;
    let after = b.metrics(&h).await.unwrap();
    assert!(after.cpu_usage_ns > 0);
    assert!(
        after.disk_bytes >= before.disk_bytes + (4 << 20),
        "{before:?} {after:?}"
    );
    b.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn fork_bomb_is_stopped_at_the_pids_limit() {
    if !root_or_skip("pids limit") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(12).await;
    let spec = ContainerSpec {
        limits: Limits {
            pids: Some(32),
            ..Limits::default()
        },
        ..busybox()
    };
    let h = b.create(spec).await.unwrap();
    // every copy keeps forking copies of itself until the container is destroyed
    let id = b
        .run(
            &h,
            sh("bomb() { while :; do bomb & sleep 0.1; done; }; bomb 2>/dev/null"),
        )
        .await
        .unwrap();
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let m = b.metrics(&h).await.unwrap();
        peak = peak.max(m.pids);
        assert!(m.pids <= 32, "pids {} above the limit", m.pids);
    }
    assert!(peak >= 30, "the bomb should reach the limit (peak {peak})");
    let cg = format!("/sys/fs/cgroup/pids/garden-test-12/{h}/pids.events");
    if b.cgroup_version() == "v1" {
        let events = std::fs::read_to_string(&cg).unwrap();
        assert!(!events.contains("max 0"), "{events}");
    }
    let _ = id;
    // the host is fine and destroy stops every process of the bomb
    let t = std::time::Instant::now();
    b.destroy(&h).await.unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    assert!(!std::path::Path::new(&cg).exists());
}

/// The cgroup v2 code path on this host's cgroup2 mount. On a hybrid host that mount has no
/// memory/cpu/pids controllers, so this checks the layout (join, list, remove) without limits;
/// on a plain v2 host every other test runs on v2 anyway.
#[tokio::test]
async fn cgroup_v2_layout_on_the_unified_mount() {
    if !root_or_skip("cgroup v2") {
        return;
    }
    let _host = HOST.read().await;
    let mut cfg = config(10);
    cfg.cgroup_mode = diego_garden::cgroups::CgroupMode::V2;
    let b = diego_garden::native::NativeBackend::new(cfg).await.unwrap();
    assert_eq!(b.cgroup_version(), "v2");
    let h = b.create(busybox()).await.unwrap();
    let out = run_sh(&b, &h, "grep '^0::' /proc/self/cgroup").await;
    assert!(
        out.stdout_str()
            .trim()
            .ends_with(&format!("/garden-test-10/{h}")),
        "{}",
        out.stdout_str()
    );
    b.metrics(&h).await.unwrap();
    b.destroy(&h).await.unwrap();
    let v2_root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
        .unwrap();
    assert!(
        !std::path::Path::new(&v2_root)
            .join("garden-test-10")
            .join(&h)
            .exists()
    );
}
