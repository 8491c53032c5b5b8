use std::collections::BTreeSet;
use std::path::Path;

use diego_garden::{Backend, ContainerSpec, Limits, NetIn, NetworkSpec};

use crate::common::*;

fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or("").to_string())
        .collect()
}

fn cgroup_dirs() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((p, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.insert(e.path().display().to_string());
                if depth < 3 {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out
}

fn links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn iptables_rules() -> BTreeSet<String> {
    let out = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                l.split(' ').take(2).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// Attached loop devices and their backing files (disk-limited containers have one each).
fn loop_devices() -> BTreeSet<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            Some(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                backing.trim()
            ))
        })
        .collect()
}

/// Processes that could be ours: in another pid namespace than the test, running the init
/// binary, or zombies whose parent is the test process.
fn container_processes() -> BTreeSet<String> {
    let me = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let my_pid = std::process::id().to_string();
    let init = std::fs::canonicalize(env!("CARGO_BIN_EXE_diego-garden-init")).unwrap();
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = e.path();
        let other_ns = std::fs::read_link(p.join("ns/pid"))
            .map(|ns| ns != me)
            .unwrap_or(false);
        let is_init = std::fs::read_link(p.join("exe"))
            .map(|x| x == init)
            .unwrap_or(false);
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let after = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>();
        let zombie_child = after.first() == Some(&"Z") && after.get(1) == Some(&my_pid.as_str());
        if other_ns || is_init || zombie_child {
            out.insert(format!("{name} {}", stat.trim()));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    mounts: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    links: BTreeSet<String>,
    rules: BTreeSet<String>,
    processes: BTreeSet<String>,
    loops: BTreeSet<String>,
}

fn snapshot() -> Snapshot {
    Snapshot {
        mounts: mounts(),
        cgroups: cgroup_dirs(),
        links: links(),
        rules: iptables_rules(),
        processes: container_processes(),
        loops: loop_devices(),
    }
}

/// What exists after the cycles and did not before. (Things that vanished are not leaks: the
/// host's own services come and go — e.g. a supervisor's per-process cgroups — while this runs.)
fn diff(what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    b.difference(a)
        .map(|x| format!("{what} leaked: {x}"))
        .collect()
}

#[tokio::test]
async fn no_leaks_after_100_create_destroy_cycles() {
    if !root_or_skip("leaks") {
        return;
    }
    let _host = HOST.write().await;
    let b = backend(7).await;
    // first container sets up the bridge and chains, which stay for the backend's lifetime
    let spec = || ContainerSpec {
        network: Some(NetworkSpec {
            net_in: vec![NetIn {
                host_port: 0,
                container_port: 8080,
            }],
        }),
        limits: Limits {
            memory_bytes: Some(64 << 20),
            cpu_shares: Some(256),
            pids: Some(100),
            disk_mb: Some(64),
            ..Limits::default()
        },
        ..busybox()
    };
    let h = b.create(spec()).await.unwrap();
    b.destroy(&h).await.unwrap();
    let before = snapshot();
    let t = std::time::Instant::now();
    for i in 0..100 {
        let h = b.create(spec()).await.unwrap();
        if i % 10 == 0 {
            // some cycles also leave a background process running at destroy time, with a
            // file open on the container's disk
            b.run(&h, sh("sleep 1000 > /held & echo x > /tmp/x"))
                .await
                .unwrap();
            let out = run_sh(&b, &h, "echo cycle").await;
            assert_eq!(out.stdout_str(), "cycle\n");
        }
        b.destroy(&h).await.unwrap();
    }
    eprintln!("100 networked create/destroy cycles took {:?}", t.elapsed());
    // helper processes are reaped asynchronously by tokio, writable layers deleted in the
    // background
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        b.wait_for_trash(std::time::Duration::from_secs(30)).await,
        "trash not emptied"
    );
    let after = snapshot();
    let mut problems = diff("mount", &before.mounts, &after.mounts);
    problems.extend(diff("cgroup", &before.cgroups, &after.cgroups));
    problems.extend(diff("link", &before.links, &after.links));
    problems.extend(diff("iptables rule", &before.rules, &after.rules));
    problems.extend(diff("process", &before.processes, &after.processes));
    problems.extend(diff("loop device", &before.loops, &after.loops));
    assert!(problems.is_empty(), "{problems:#?}");
    let depot = config(7).depot.join("containers");
    assert_eq!(std::fs::read_dir(&depot).unwrap().count(), 0);
    assert!(b.list(&Default::default()).await.unwrap().is_empty());

    b.teardown_host_network().await.unwrap();
    assert!(!Path::new("/sys/class/net/gt7-br").exists());
    let rules = iptables_rules();
    assert!(!rules.iter().any(|r| r.contains("GT7-")), "{rules:?}");
}
