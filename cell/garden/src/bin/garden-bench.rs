//! garden-bench: create + run `true` + destroy, N times (default 100), for diego-garden,
//! runc, crun (Debian packages, same busybox bundle) and the namespace floor (`unshare` of
//! the same namespaces + chroot), interleaved round by round. Prints medians and ratios.
//!
//! Run as root: `cargo run --release -p diego-garden --bin garden-bench -- [N]`.
//! crun 1.8 refuses a hybrid cgroup layout whose cgroup2 mount has a controller enabled, so
//! the whole bench (all four contenders) runs in a private mount namespace without
//! `/sys/fs/cgroup/unified`; the host's mount table is untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diego_garden::native::{Config, NativeBackend};
use diego_garden::{Backend, ContainerSpec, ProcessSpec};

fn fail(msg: String) -> ! {
    eprintln!("garden-bench: {msg}");
    #[allow(clippy::exit)] // a bench that cannot run exits non-zero
    std::process::exit(1)
}

fn private_mount_ns() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        fail(format!("unshare mount namespace: {e}"));
    }
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        fail(format!("make / private: {e}"));
    }
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
        && let Err(e) = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH)
    {
        fail(format!("umount /sys/fs/cgroup/unified: {e}"));
    }
}

fn busybox_rootfs() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-busybox-rootfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| fail(format!("run {}: {e}", script.display())));
    if !out.status.success() {
        fail(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    )
}

/// An OCI bundle whose config comes from `runc spec`, running `true` in the busybox rootfs.
fn make_bundle(dir: &Path, rootfs: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(format!("mkdir {}: {e}", dir.display())));
    let st = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        fail("`runc spec` failed (apt-get install runc crun)".into());
    }
    let path = dir.join("config.json");
    let raw =
        std::fs::read(&path).unwrap_or_else(|e| fail(format!("read {}: {e}", path.display())));
    let mut spec: serde_json::Value =
        serde_json::from_slice(&raw).unwrap_or_else(|e| fail(format!("parse runc spec: {e}")));
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["true"]);
    spec["root"]["path"] = rootfs.display().to_string().into();
    spec["root"]["readonly"] = true.into();
    let out = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    std::fs::write(&path, out).unwrap_or_else(|e| fail(format!("write {}: {e}", path.display())));
}

fn run_oci(runtime: &str, bundle: &Path, id: &str) -> Duration {
    let t = Instant::now();
    let st = Command::new(runtime)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let elapsed = t.elapsed();
    match st {
        Ok(o) if o.status.success() => elapsed,
        Ok(o) => fail(format!(
            "{runtime} run {id}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(format!("{runtime}: {e}")),
    }
}

fn run_floor(rootfs: &Path) -> Duration {
    let t = Instant::now();
    let st = Command::new("unshare")
        .args([
            "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "chroot",
        ])
        .arg(rootfs)
        .arg("true")
        .status();
    let elapsed = t.elapsed();
    if !matches!(st, Ok(s) if s.success()) {
        fail(format!("unshare floor failed: {st:?}"));
    }
    elapsed
}

async fn run_garden(
    b: &NativeBackend,
    rootfs: &Path,
    phases: &mut [Vec<Duration>; 3],
    privileged: bool,
) -> Duration {
    let t = Instant::now();
    let h = b
        .create(ContainerSpec {
            privileged,
            ..ContainerSpec::from_dir(rootfs)
        })
        .await
        .unwrap_or_else(|e| fail(format!("garden create: {e}")));
    let t_created = t.elapsed();
    let out = b
        .run_and_wait(
            &h,
            ProcessSpec {
                argv: vec!["true".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap_or_else(|e| fail(format!("garden run: {e}")));
    if out.exit_status != 0 {
        fail(format!("garden: true exited {}", out.exit_status));
    }
    let t_ran = t.elapsed();
    b.destroy(&h)
        .await
        .unwrap_or_else(|e| fail(format!("garden destroy: {e}")));
    let total = t.elapsed();
    phases[0].push(t_created);
    phases[1].push(t_ran - t_created);
    phases[2].push(total - t_ran);
    total
}

fn median_ms(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p90 = v.len().saturating_mul(9) / 10;
    (ms(v[v.len() / 2]), ms(v[p90.min(v.len() - 1)]))
}

const USAGE: &str = "usage: garden-bench [N]

Creates a container, runs `true` in it and destroys it, N times (default 100), for
diego-garden, runc, crun and the namespace floor, interleaved; prints medians and ratios.
Run as root.";

fn main() {
    let arg = std::env::args().nth(1);
    // `--help` must never start the benchmark (it mounts, unshares and creates cgroups).
    if arg.as_deref().is_some_and(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let n: usize = match arg {
        None => 100,
        Some(a) => a
            .parse()
            .unwrap_or_else(|_| fail(format!("{a:?} is not a number of rounds\n{USAGE}"))),
    };
    // before any thread exists: unshare(CLONE_NEWNS) needs a single-threaded process
    private_mount_ns();
    let rootfs = busybox_rootfs();
    let work = PathBuf::from("/tmp/diego-garden-bench");
    let bundle = work.join("bundle");
    make_bundle(&bundle, &rootfs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("tokio runtime: {e}")));
    rt.block_on(async move {
        let cfg = Config {
            depot: work.join("depot"),
            cgroup_parent: "garden-bench".into(),
            ..Config::default()
        };
        if !cfg.init_bin.exists() {
            fail(format!("{} not found; build all bins of diego-garden first", cfg.init_bin.display()));
        }
        let backend = NativeBackend::new(cfg).await.unwrap_or_else(|e| fail(format!("open backend: {e}")));
        let (mut garden, mut runc, mut crun, mut floor) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut garden_priv = Vec::new();
        let mut phases_priv: [Vec<Duration>; 3] = Default::default();
        let warmup = 5;
        let mut phases: [Vec<Duration>; 3] = Default::default();
        for i in 0..n + warmup {
            // unprivileged (user namespace, the default) and privileged (host root); both
            // with the capability cut, no_new_privs, seccomp and masked paths
            let g = run_garden(&backend, &rootfs, &mut phases, false).await;
            let gp = run_garden(&backend, &rootfs, &mut phases_priv, true).await;
            let r = run_oci("runc", &bundle, &format!("bench-runc-{i}"));
            let c = run_oci("crun", &bundle, &format!("bench-crun-{i}"));
            let f = run_floor(&rootfs);
            if i >= warmup {
                garden.push(g);
                garden_priv.push(gp);
                runc.push(r);
                crun.push(c);
                floor.push(f);
            }
        }
        let (g, gp) = median_ms(&mut garden);
        println!("create + run `true` + destroy, {n} rounds (cgroup {}), busybox rootfs", backend.cgroup_version());
        println!("{:<16} {:>10} {:>10} {:>14}", "runtime", "median ms", "p90 ms", "vs diego-garden");
        for (name, v) in [("diego-garden", &mut garden), ("diego-garden priv", &mut garden_priv), ("runc", &mut runc), ("crun", &mut crun), ("unshare+chroot", &mut floor)] {
            let (m, p) = if name == "diego-garden" { (g, gp) } else { median_ms(v) };
            println!("{name:<16} {m:>10.2} {p:>10.2} {:>13.2}x", m / g);
        }
        for (name, phases) in [("diego-garden", phases), ("diego-garden priv", phases_priv)] {
            let [mut c, mut r, mut d] = phases;
            let (c, r, d) = (median_ms(&mut c).0, median_ms(&mut r).0, median_ms(&mut d).0);
            println!("{name} phases (median ms, all rounds incl. warm-up): create {c:.2}, run {r:.2}, destroy {d:.2}");
        }
        // the machine may be shared: say how busy it was
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    });
}
