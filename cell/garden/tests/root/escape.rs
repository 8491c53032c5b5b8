//! The escape suite: a probe inside a container tries what an attacker would (see
//! `escape_probe.c`); every attempt must fail. The probe is compiled from source at test time
//! into a temporary directory and bind mounted read-only into the container.

use std::path::{Path, PathBuf};

use diego_garden::security::IdMap;
use diego_garden::types::{BindMount, Limits};
use diego_garden::{Backend, ContainerSpec, ProcessSpec};

use crate::common::*;

/// Compiles the probe statically (the busybox rootfs has no C library).
fn build_probe(dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/root/escape_probe.c");
    let out = dir.join("escape-probe");
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "gcc -static failed: {other:?} (apt-get install gcc libc6-dev)"
            );
            eprintln!("skipping escape suite: cannot compile the probe ({other:?})");
            None
        }
    }
}

fn probe_spec(dir: &Path, privileged: bool) -> ContainerSpec {
    ContainerSpec {
        bind_mounts: vec![BindMount {
            src_path: dir.to_path_buf(),
            dst_path: "/probe".into(),
            read_write: false,
        }],
        limits: Limits {
            pids: Some(64),
            ..Limits::default()
        },
        privileged,
        ..busybox()
    }
}

/// Runs the probe's attacks; returns its output after logging every line.
async fn attack(b: &dyn Backend, handle: &str, label: &str) -> (i32, String) {
    let host_only = env!("CARGO_MANIFEST_DIR").to_string();
    let out = b
        .run_and_wait(
            handle,
            ProcessSpec {
                argv: vec!["/probe/escape-probe".into(), "all".into(), host_only],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    let stdout = out.stdout_str();
    for line in stdout.lines() {
        eprintln!("[{label}] {line}");
    }
    if !out.stderr_str().is_empty() {
        eprintln!("[{label}] stderr: {}", out.stderr_str());
    }
    (out.exit_status, stdout)
}

#[tokio::test]
async fn escape_attempts_from_an_unprivileged_container_all_fail() {
    if !root_or_skip("escape") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(_) = build_probe(tmp.path()) else {
        return;
    };
    let _host = HOST.read().await;
    let b = backend(13).await;
    let runtime = std::fs::read(env!("CARGO_BIN_EXE_diego-garden-init")).unwrap();
    let h = b.create(probe_spec(tmp.path(), false)).await.unwrap();

    let (code, out) = attack(&b, &h, "unprivileged").await;
    let escaped: Vec<&str> = out.lines().filter(|l| l.starts_with("ESCAPED")).collect();
    assert!(escaped.is_empty(), "escapes: {escaped:#?}");
    assert_eq!(code, 0, "{out}");
    // every attack ran and reported
    for name in [
        "mount-proc",
        "mount-sysfs",
        "mount-tmpfs",
        "mknod-host-disk",
        "init_module",
        "finit_module",
        "kexec_load",
        "reboot",
        "sysrq-trigger",
        "kcore",
        "sys-write",
        "sys-write-thp",
        "timer-list",
        "ptrace-outside",
        "unshare-user",
        "double-chroot",
        "raise-nofile",
        "setuid",
        "inherited-fd",
        "overwrite-runtime",
        "cap-sets",
        "no-new-privs",
        "seccomp-mode",
    ] {
        assert!(
            out.contains(&format!("blocked {name}:")),
            "{name} did not run: {out}"
        );
    }
    // seccomp answers the refused calls with a clear EPERM
    for name in ["init_module", "kexec_load", "bpf", "unshare-user", "reboot"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("blocked {name}:")))
            .unwrap();
        assert!(line.contains("(errno 1)"), "{line}");
    }
    // the runtime binary is untouched
    assert_eq!(
        std::fs::read(env!("CARGO_BIN_EXE_diego-garden-init")).unwrap(),
        runtime
    );

    // the fork bomb stops at the pids limit and the container and host live on
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                argv: vec!["/probe/escape-probe".into(), "forkbomb".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    let forked: usize = out
        .stdout_str()
        .lines()
        .find_map(|l| l.strip_prefix("forked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("fork bomb output: {}", out.stdout_str()));
    eprintln!("[unprivileged] fork bomb: {forked} processes before EAGAIN (pids limit 64)");
    assert!(forked < 64, "{forked}");
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(run_sh(&b, &h, "echo alive").await.stdout_str(), "alive\n");
    b.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn unprivileged_root_is_an_unprivileged_host_id_with_right_owners_inside() {
    if !root_or_skip("userns") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(14).await;
    let h = b.create(busybox()).await.unwrap();
    let map = IdMap::default();
    // inside: root, the image's files owned by root, the user namespace's mapping
    let out = run_sh(
        &b,
        &h,
        "id -u; stat -c %u:%g /bin/busybox /; cat /proc/self/uid_map | tr -s ' '; \
         echo x > /made-inside; stat -c %u /made-inside; chown 1000:1000 /made-inside; echo ok",
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        format!("0\n0:0\n0:0\n 0 {} {}\n0\nok\n", map.host_base, map.size),
        "stderr: {}",
        out.stderr_str()
    );
    // on the host: the process runs as the mapped id and the upper dir holds host ids
    let info = b.info(&h).await.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", info.init_pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains(&map.host_base.to_string()),
        "pid 1: {uid_line}"
    );
    use std::os::unix::fs::MetadataExt;
    let upper = config(14).depot.join("containers").join(&h).join("upper");
    let md = std::fs::metadata(upper.join("made-inside")).unwrap();
    assert_eq!(md.uid(), map.host_base + 1000);

    // stream-in keeps the tar's owners as seen inside; stream-out reports them so
    let mut tb = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(tar::EntryType::Regular);
    hd.set_mode(0o644);
    hd.set_uid(2000);
    hd.set_gid(2000);
    hd.set_size(2);
    tb.append_data(&mut hd, "app/f", &b"hi"[..]).unwrap();
    b.stream_in_bytes(&h, "/home", bytes::Bytes::from(tb.into_inner().unwrap()))
        .await
        .unwrap();
    let out = run_sh(&b, &h, "stat -c %u:%g /home /home/app/f").await;
    assert_eq!(out.stdout_str(), "0:0\n2000:2000\n");
    let tarball = b.stream_out_bytes(&h, "/home/app/f").await.unwrap();
    let mut ar = tar::Archive::new(&tarball[..]);
    let e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.header().uid().unwrap(), 2000);

    // a privileged container keeps host root, still without the dangerous capabilities
    let p = b
        .create(ContainerSpec {
            privileged: true,
            ..busybox()
        })
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    if build_probe(tmp.path()).is_some() {
        let pp = b.create(probe_spec(tmp.path(), true)).await.unwrap();
        let (_, out) = attack(&b, &pp, "privileged").await;
        // host root inside, but none of the kernel-wide powers
        for name in [
            "cap-sets",
            "mount-proc",
            "mount-tmpfs",
            "init_module",
            "kexec_load",
            "reboot",
            "unshare-user",
            "drop-caches",
            "sys-write-thp",
            "overwrite-runtime",
            "setuid",
            "inherited-fd",
            "raise-nofile",
            "double-chroot",
            "mknod-host-disk",
        ] {
            assert!(
                out.contains(&format!("blocked {name}:")),
                "privileged container: {name}: {out}"
            );
        }
        b.destroy(&pp).await.unwrap();
    }
    let out = run_sh(&b, &p, "cat /proc/self/uid_map | tr -s ' '; grep -E 'CapBnd|NoNewPrivs|Seccomp:' /proc/self/status").await;
    let s = out.stdout_str();
    assert!(s.starts_with(" 0 0 4294967295\n"), "{s}");
    assert!(s.contains("CapBnd:\t00000000a80425fb"), "{s}");
    assert!(
        s.contains("NoNewPrivs:\t1") && s.contains("Seccomp:\t2"),
        "{s}"
    );
    b.destroy(&p).await.unwrap();
    b.destroy(&h).await.unwrap();
}

/// Filling the disk: a container with a disk limit cannot write past it (ENOSPC), unprivileged
/// or privileged, and stays usable.
#[tokio::test]
async fn filling_the_disk_past_disk_mb_fails_with_enospc() {
    if !root_or_skip("escape fill-disk") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(_) = build_probe(tmp.path()) else {
        return;
    };
    let _host = HOST.read().await;
    let b = backend(16).await;
    for privileged in [false, true] {
        let mut spec = probe_spec(tmp.path(), privileged);
        spec.limits.disk_mb = Some(16);
        let h = b.create(spec).await.unwrap();
        let out = b
            .run_and_wait(
                &h,
                ProcessSpec {
                    argv: vec![
                        "/probe/escape-probe".into(),
                        "fill-disk".into(),
                        "/fill".into(),
                        "64".into(),
                    ],
                    ..ProcessSpec::default()
                },
            )
            .await
            .unwrap();
        let stdout = out.stdout_str();
        eprintln!("[privileged={privileged}] {}", stdout.trim());
        assert!(
            stdout.starts_with("blocked fill-disk:") && stdout.contains("(errno 28)"),
            "{stdout} {}",
            out.stderr_str()
        );
        assert_eq!(out.exit_status, 0);
        let m = b.metrics(&h).await.unwrap();
        assert!(m.disk_bytes <= m.disk_limit_bytes + (2 << 20), "{m:?}");
        assert_eq!(
            run_sh(&b, &h, "rm /fill; echo alive > /a; cat /a")
                .await
                .stdout_str(),
            "alive\n"
        );
        b.destroy(&h).await.unwrap();
    }
}
