use diego_garden::disk::loops_backed_by;
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

/// A disk-limited container: its writable layer is a file system of its own (an ext4 image on
/// a loop device); metrics report what is used of it; destroy leaves no device and no image.
#[tokio::test]
async fn disk_limit_is_enforced_and_reported() {
    if !root_or_skip("disk limit") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(15).await;
    let mb = 32u64;
    for privileged in [false, true] {
        let h = b
            .create(ContainerSpec {
                limits: Limits {
                    disk_mb: Some(mb),
                    ..Limits::default()
                },
                privileged,
                ..busybox()
            })
            .await
            .unwrap();
        let image = config(15)
            .depot
            .join("containers")
            .join(&h)
            .join("disk.img");
        assert_eq!(loops_backed_by(&image).len(), 1, "one loop device");
        // the image is sparse: only ext4's metadata is allocated
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
        assert!(allocated < 4 << 20, "{allocated} bytes allocated");
        // the root is as without a limit: root's, 0755; the image's lost+found is not seen
        let out = run_sh(&b, &h, "stat -c '%u:%g %a' /; ls -a / | grep -c lost+found").await;
        assert_eq!(out.stdout_str(), "0:0 755\n0\n", "{}", out.stderr_str());

        let empty = b.metrics(&h).await.unwrap();
        assert_eq!(empty.disk_limit_bytes, mb << 20);
        assert!(empty.disk_bytes < 1 << 20, "{empty:?}");
        let out = run_sh(
            &b,
            &h,
            "dd if=/dev/zero of=/f bs=1M count=8 2>&1 && sync && echo ok",
        )
        .await;
        assert!(out.stdout_str().ends_with("ok\n"), "{}", out.stdout_str());
        let used = b.metrics(&h).await.unwrap();
        assert!(
            used.disk_bytes >= 8 << 20 && used.disk_bytes < 10 << 20,
            "{used:?}"
        );
        // nearly the whole limit can be written; past it: ENOSPC
        let out = run_sh(
            &b,
            &h,
            "rm /f; dd if=/dev/zero of=/f bs=1M count=30 2>&1 && echo ok",
        )
        .await;
        assert!(out.stdout_str().ends_with("ok\n"), "{}", out.stdout_str());
        let out = run_sh(
            &b,
            &h,
            "dd if=/dev/zero of=/g bs=1M count=64 2>&1; echo rc=$?",
        )
        .await;
        assert!(
            out.stdout_str().contains("No space left on device")
                && !out.stdout_str().contains("rc=0"),
            "{}",
            out.stdout_str()
        );
        let full = b.metrics(&h).await.unwrap();
        assert!(full.disk_bytes >= mb << 20, "{full:?}");
        // freeing space makes room again
        let out = run_sh(&b, &h, "rm /f /g && echo x > /h && cat /h").await;
        assert_eq!(out.stdout_str(), "x\n", "{}", out.stderr_str());

        b.destroy(&h).await.unwrap();
        assert!(loops_backed_by(&image).is_empty(), "loop device left");
        assert!(b.wait_for_trash(std::time::Duration::from_secs(10)).await);
        assert!(!image.exists());
    }
}
