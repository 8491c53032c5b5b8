use std::collections::BTreeMap;
use std::path::Path;

use diego_garden::client::Client;
use diego_garden::disk::loops_backed_by;
use diego_garden::{Backend, ContainerSpec, Limits};

use crate::common::*;

fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A server killed with SIGKILL restarts, adopts the containers whose init lives and cleans
/// up those whose init died meanwhile.
#[tokio::test]
async fn restarted_server_adopts_live_and_cleans_dead_containers() {
    if !root_or_skip("adopt") {
        return;
    }
    let _host = HOST.read().await;
    // orphaned shims of the killed server become our children, so we can reap them
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut server = Server::start(6);
    let c = Client::new(server.url.clone());
    for old in c.list(&BTreeMap::new()).await.unwrap() {
        c.destroy(&old).await.unwrap();
    }
    let live = c
        .create(ContainerSpec {
            handle: Some("adopt-live".into()),
            network: Some(Default::default()),
            limits: Limits {
                disk_mb: Some(32),
                ..Limits::default()
            },
            ..busybox()
        })
        .await
        .unwrap();
    let dead = c
        .create(ContainerSpec {
            handle: Some("adopt-dead".into()),
            network: Some(Default::default()),
            limits: Limits {
                disk_mb: Some(32),
                ..Limits::default()
            },
            ..busybox()
        })
        .await
        .unwrap();
    c.run(
        &live,
        sh("echo state > /tmp/kept; dd if=/dev/zero of=/on-disk bs=1M count=4; sleep 1000"),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let live_pid = c.info(&live).await.unwrap().init_pid;
    let dead_pid = c.info(&dead).await.unwrap().init_pid;
    let live_ip = c.info(&live).await.unwrap().container_ip.unwrap();

    server.kill();
    // Read the shim's pid before its child dies: the shim reaps it at once, and /proc/<pid>
    // is gone by the time we would look.
    let dead_shim = ppid(dead_pid);
    // while the server is down, one container's init dies
    // SAFETY: kill with a pid we read from the server and a valid signal.
    unsafe { libc::kill(dead_pid, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(dead_shim), None);
    assert!(Path::new(&format!("/proc/{live_pid}")).exists());

    let server = Server::start(6);
    let c = Client::new(server.url.clone());
    assert_eq!(c.list(&BTreeMap::new()).await.unwrap(), vec![live.clone()]);
    let info = c.info(&live).await.unwrap();
    assert_eq!(info.init_pid, live_pid);
    assert_eq!(info.container_ip.as_deref(), Some(live_ip.as_str()));
    let out = c
        .run_and_wait(&live, sh("cat /tmp/kept; pidof sleep | wc -w"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "state\n1\n", "{}", out.stderr_str());
    // the disk limit and its usage survive the restart
    let m = c.metrics(&live).await.unwrap();
    assert_eq!(m.disk_limit_bytes, 32 << 20);
    assert!(m.disk_bytes >= 4 << 20, "{m:?}");
    // the dead one left nothing
    let depot = config(6).depot;
    assert!(!depot.join("containers").join(&dead).exists());
    let image = |h: &str| depot.join("containers").join(h).join("disk.img");
    assert!(loops_backed_by(&image(&dead)).is_empty());
    assert_eq!(loops_backed_by(&image(&live)).len(), 1);
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory/garden-test-6/{dead}")).exists());
    let veth = config(6).network.host_veth(&dead);
    assert!(!Path::new("/sys/class/net").join(veth).exists());

    let live_shim = ppid(live_pid);
    c.destroy(&live).await.unwrap();
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(live_shim), None);
    assert!(!Path::new(&format!("/proc/{live_pid}")).exists());
    assert!(!depot.join("containers").join(&live).exists());
    assert!(loops_backed_by(&image(&live)).is_empty());
    drop(server);
    diego_garden::net::teardown_host(&config(6).network)
        .await
        .unwrap();
}
