//! Helpers for tests that need root and real containers: the root check, the cached root
//! filesystems made by `cell/garden/scripts`, and diego-garden's init helper binary.
//!
//! A missing prerequisite skips the test with a message, except under `CI=true`, where it
//! fails: CI must never pass by skipping.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Fails under CI, else prints why `test` is skipped. Returns `false` for "skip".
fn skip(test: &str, why: &str) -> bool {
    assert!(
        !in_ci(),
        "{test}: {why} (CI=true makes a missing prerequisite fatal)"
    );
    eprintln!("skipping {test}: {why}");
    false
}

/// True when the test may run: we are root.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    euid == 0 || skip(test, "these tests need root")
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rootfs_cache() -> PathBuf {
    std::env::var("DIEGO_ROOTFS_CACHE")
        .map_or_else(|_| PathBuf::from("/var/cache/diego/rootfs"), PathBuf::from)
}

/// The busybox rootfs, made once (cached) by `make-busybox-rootfs.sh`.
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let script = workspace_root().join("cell/garden/scripts/make-busybox-rootfs.sh");
            let out = Command::new("bash")
                .arg(&script)
                .output()
                .expect("run make-busybox-rootfs.sh");
            assert!(
                out.status.success(),
                "make-busybox-rootfs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        })
        .clone()
}

/// The stack rootfs (bash, python3, a vcap user) if it is built; `None` skips the test (a
/// failure under CI: `scripts/test.sh` builds it first).
pub fn stack_rootfs(test: &str) -> Option<PathBuf> {
    let dir = rootfs_cache().join("stack-bookworm");
    if dir.join(".diego-rootfs-ok").exists() {
        return Some(dir);
    }
    skip(
        test,
        "the stack rootfs is not built; run cell/garden/scripts/make-stack-rootfs.sh (scripts/test.sh does)",
    );
    None
}

/// diego-garden's `diego-garden-init` helper. A dependency's binaries are not built for a
/// dependent crate's tests, so this builds it (a no-op when fresh) into the calling test's
/// target directory and profile.
pub fn garden_init_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test>-<hash> → target/<profile>/diego-garden-init
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(workspace_root())
            .args([
                "build",
                "-p",
                "diego-garden",
                "--bin",
                "diego-garden-init",
                "--target-dir",
            ])
            .arg(&target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build for diego-garden-init");
        assert!(
            out.status.success(),
            "building diego-garden-init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("diego-garden-init");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}
