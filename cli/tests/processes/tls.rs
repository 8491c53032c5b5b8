//! `diego dev --tls`: it makes a CA and the roles' certificates in its data directory, serves
//! every internal port over mutual TLS (the CLI gets in with `DIEGO_TLS_DIR`, and is refused
//! without it), and a restart keeps both the certificates and the data.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `diego dev --tls` without cells on the given ports.
fn start(data: &Path, ports: &[u16; 7], log: &Path) -> Dev {
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_diego"))
        .args([
            "--log",
            "info",
            "dev",
            "--tls",
            "--cells",
            "0",
            "--data-dir",
        ])
        .arg(data)
        .args(["--listen", &addr(ports[0])])
        .args(["--brain-listen", &addr(ports[1])])
        .args(["--api-listen", &addr(ports[2])])
        .args(["--router-listen", &addr(ports[3])])
        .args(["--router-admin-listen", &addr(ports[4])])
        .args(["--ssh-listen", &addr(ports[5])])
        .args(["--ssh-admin-listen", &addr(ports[6])])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn diego dev");
    Dev { child }
}

/// `diego ARGS` against the dev platform, with the TLS flags given.
fn diego(tls: &[&str], bbs: u16, api: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diego"))
        .args(tls)
        .args(["--log", "warn"])
        .args(["--bbs-url", &format!("127.0.0.1:{bbs}")])
        .args(["--api-url", &format!("127.0.0.1:{api}")])
        .args(args)
        .env_remove("DIEGO_TLS_DIR")
        .output()
        .unwrap()
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dev_with_tls_makes_its_certificates_serves_mutual_tls_and_keeps_both_across_a_restart() {
    let work = tempfile::tempdir().unwrap();
    let (data, log) = (work.path().join("data"), work.path().join("dev.log"));
    let ports: [u16; 7] = std::array::from_fn(|_| diego_testkit::free_port());
    let tls_dir = data.join("tls");
    let tls_dir_arg = tls_dir.display().to_string();
    let with_tls = ["--tls-dir", tls_dir_arg.as_str()];
    let (bbs, api) = (ports[0], ports[2]);

    let mut dev = start(&data, &ports, &log);
    wait_until("the brain holding its lock over mutual TLS", &log, || {
        let out = diego(&with_tls, bbs, api, &["locks"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("https://")
    });
    for name in ["ca", "bbs", "brain", "api", "router", "client"] {
        assert!(
            tls_dir.join(format!("{name}.pem")).exists(),
            "no {name}.pem"
        );
    }
    let apps = diego(&with_tls, bbs, api, &["apps"]);
    assert!(apps.status.success(), "{apps:?}");
    // without certificates: the BBS and the API refuse the CLI
    let refused = diego(&[], bbs, api, &["cells"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("HTTPS server"),
        "{refused:?}"
    );
    assert!(!diego(&[], bbs, api, &["apps"]).status.success());

    // something to find after the restart (no cells: it stays unplaced)
    let lrp = work.path().join("lrp.json");
    std::fs::write(
        &lrp,
        serde_json::json!({
            "process_guid": "kept-across-restart",
            "domain": "tests",
            "rootfs": "preloaded:cflinuxfs4",
            "instances": 1,
            "memory_mb": 64,
            "action": {"run": {"path": "/bin/true"}},
        })
        .to_string(),
    )
    .unwrap();
    let desired = diego(&with_tls, bbs, api, &["desire-lrp", lrp.to_str().unwrap()]);
    assert!(desired.status.success(), "{desired:?}");
    let ca = std::fs::read(tls_dir.join("ca.pem")).unwrap();
    let bbs_cert = std::fs::read(tls_dir.join("bbs.pem")).unwrap();

    // SIGTERM, then the same command again
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(dev.child.id() as i32, libc::SIGTERM);
    }
    let _ = dev.child.wait();
    let _dev = start(&data, &ports, &log);
    wait_until("diego dev again", &log, || {
        let out = diego(&with_tls, bbs, api, &["desired-lrps"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kept-across-restart")
    });
    assert_eq!(std::fs::read(tls_dir.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(tls_dir.join("bbs.pem")).unwrap(), bbs_cert);
}
