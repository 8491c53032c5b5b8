//! A platform team's plug-ins end to end, following `docs/plugins.md` as a newcomer would:
//! a new crate with the static-site example as its source, built for `wasm32-wasip2`, added
//! to a running `diego dev` with `diego lifecycles add`, an app pushed with it and reached
//! through the router; a new crate with the example policy, activated with `diego policy
//! set`; the lifecycle upgraded while the app answers; and every faulty guest refused at
//! `add` or contained in the staging it breaks, with its reason in the app's staging log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{app_json, fails, repo};
use diego_plugin_artifacts as artifacts;
use diego_testkit::{DevConfig, DevPlatform};
use serde_json::Value;

/// `cargo new --lib NAME` with the Cargo.toml docs/plugins.md gives, `src/lib.rs` from
/// `source`; the guests' Cargo.lock pins the versions diego is tested with.
fn new_crate(dir: &Path, name: &str, version: &str, feature: &str, source: &Path) -> PathBuf {
    let krate = dir.join(name);
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let sdk = repo().join("plugin-sdk");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "{version}"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
diego-plugin-sdk = {{ path = "{}", default-features = false, features = ["{feature}"] }}

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
            sdk.display()
        ),
    )
    .unwrap();
    std::fs::copy(source, krate.join("src/lib.rs")).unwrap();
    std::fs::copy(repo().join("policies/Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    krate
}

/// `cargo build --release --target wasm32-wasip2` in `krate`; answers the component's path.
/// The target dir is kept under the repo's `target/` so that later runs only relink.
fn build_component(krate: &Path) -> PathBuf {
    let target = repo().join("target/newcomer-guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build of {} failed:\n{}",
        krate.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stem = krate
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('-', "_");
    target.join(format!("wasm32-wasip2/release/{stem}.wasm"))
}

/// `host`'s page through the router is a 200 containing `text`.
fn serves(dev: &DevPlatform, host: &str, text: &str) {
    let (status, body) = dev.get(host, "/").unwrap();
    assert_eq!(status, 200, "{host}: {body}");
    assert!(body.contains(text), "{host} serves {text:?}: {body}");
}

/// GETs `host` in a loop until stopped; counts requests and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(dev: &DevPlatform, host: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = format!("http://{}/", dev.router_addr);
        let host = host.to_owned();
        let thread = std::thread::spawn({
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match diego_testkit::dev::http(&url, "GET", Some(&host), "") {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failed.lock().unwrap().push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

#[test]
fn a_newcomers_lifecycle_and_policy_on_a_running_platform() {
    let _serial = super::serial();
    if !diego_testkit::root::root_or_skip("a_newcomers_lifecycle_and_policy_on_a_running_platform")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let examples = repo().join("plugin-sdk/examples");

    // ---- docs/plugins.md §2: a lifecycle crate from the static-site example ----
    let t = Instant::now();
    let site_crate = new_crate(
        work.path(),
        "acme-site",
        "0.1.0",
        "lifecycle",
        &examples.join("custom-lifecycle/src/lib.rs"),
    );
    let site_v1 = build_component(&site_crate);
    let site_v1_copy = work.path().join("acme_site-0.1.0.wasm");
    std::fs::copy(&site_v1, &site_v1_copy).unwrap();
    eprintln!("lifecycle built in {:.1} s", t.elapsed().as_secs_f64());
    // ---- §1: a policy crate from the example policy ----
    let t = Instant::now();
    let policy_crate = new_crate(
        work.path(),
        "acme-policy",
        "0.1.0",
        "policy",
        &examples.join("custom-policy/src/lib.rs"),
    );
    let policy = build_component(&policy_crate);
    eprintln!("policy built in {:.1} s", t.elapsed().as_secs_f64());

    let mut dev = DevPlatform::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_diego")),
        DevConfig::default(),
    )
    .unwrap();

    // ---- add the lifecycle; the built-ins are listed beside it ----
    let listed = dev.diego_ok(&["lifecycles", "list"]).unwrap();
    assert!(
        listed.contains("buildpack") && listed.contains("docker"),
        "{listed}"
    );
    let t = Instant::now();
    let added = dev
        .diego_ok(&[
            "lifecycles",
            "add",
            "static-site",
            site_v1_copy.to_str().unwrap(),
        ])
        .unwrap();
    assert!(added.contains("static-site is now 0.1.0"), "{added}");
    eprintln!("lifecycle added in {:.1} s", t.elapsed().as_secs_f64());

    // ---- push a directory with an index.html with it, through the router ----
    let site = work.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("index.html"),
        "<h1>hello from a static site</h1>\n",
    )
    .unwrap();
    let t = Instant::now();
    dev.diego_ok(&[
        "push",
        "mysite",
        "-p",
        site.to_str().unwrap(),
        "--lifecycle",
        "static-site",
    ])
    .unwrap();
    eprintln!("static site pushed in {:.1} s", t.elapsed().as_secs_f64());
    serves(&dev, "mysite.localhost", "hello from a static site");
    let shown = dev.diego_ok(&["app", "mysite"]).unwrap();
    assert!(shown.contains("static-site 0.1.0"), "{shown}");
    // a directory with no index.html: the lifecycle's own reason, nothing left behind
    let empty_site = work.path().join("no-index");
    std::fs::create_dir_all(&empty_site).unwrap();
    std::fs::write(empty_site.join("README"), "no page here\n").unwrap();
    let (code, err) = fails(
        &dev,
        &[
            "push",
            "noindex",
            "-p",
            empty_site.to_str().unwrap(),
            "--lifecycle",
            "static-site",
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no index.html"), "{err}");
    // `lifecycle:` in a manifest does the same as the flag
    let docs = work.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("index.html"), "<h1>the docs</h1>\n").unwrap();
    std::fs::write(
        docs.join("manifest.yml"),
        "applications:\n- name: docs\n  lifecycle: static-site\n  memory: 64M\n",
    )
    .unwrap();
    dev.diego_ok(&["push", "-p", docs.to_str().unwrap()])
        .unwrap();
    serves(&dev, "docs.localhost", "the docs");
    assert_eq!(app_json(&dev, "docs")["lifecycle"]["type"], "static-site");

    // ---- the example policy, with `diego policy set FILE.wasm` ----
    let set = dev
        .diego_ok(&["policy", "set", policy.to_str().unwrap()])
        .unwrap();
    assert!(set.contains("strict-anti-affinity"), "{set}");
    let got = dev.diego_ok(&["policy", "get"]).unwrap();
    assert!(got.contains("strict-anti-affinity"), "{got}");

    // ---- upgrade while the app answers: running apps keep their droplets ----
    let load = Load::start(&dev, "mysite.localhost");
    let cargo_toml = site_crate.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&cargo_toml).unwrap();
    std::fs::write(
        &cargo_toml,
        manifest.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .unwrap();
    let site_v2 = build_component(&site_crate);
    let upgraded = dev
        .diego_ok(&[
            "lifecycles",
            "add",
            "static-site",
            site_v2.to_str().unwrap(),
        ])
        .unwrap();
    assert!(upgraded.contains("static-site is now 0.2.0"), "{upgraded}");
    let listed = dev.diego_ok(&["lifecycles", "list"]).unwrap();
    assert!(listed.contains("0.2.0 (also 0.1.0)"), "{listed}");
    assert_eq!(app_json(&dev, "mysite")["lifecycle"]["version"], "0.1.0");
    // a new app stages with 0.2.0 while mysite runs its 0.1.0 droplet: both versions serve
    std::fs::write(site.join("index.html"), "<h1>a second site</h1>\n").unwrap();
    dev.diego_ok(&[
        "push",
        "second",
        "-p",
        site.to_str().unwrap(),
        "--lifecycle",
        "static-site",
    ])
    .unwrap();
    assert_eq!(app_json(&dev, "second")["lifecycle"]["version"], "0.2.0");
    serves(&dev, "second.localhost", "a second site");
    serves(&dev, "mysite.localhost", "hello from a static site");
    // a restart launches the droplet with the version it was staged with
    dev.diego_ok(&["restart", "mysite"]).unwrap();
    dev.wait_for("mysite running again", Duration::from_secs(60), |d| {
        Ok(d.get("mysite.localhost", "/")?.0 == 200
            && app_json(d, "mysite")["instances"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["state"] == "RUNNING")))
    })
    .unwrap();
    assert_eq!(app_json(&dev, "mysite")["lifecycle"]["version"], "0.1.0");
    // restaging picks the new version
    let restaged = dev.diego_ok(&["restage", "mysite"]).unwrap();
    assert!(restaged.contains("static-site 0.2.0"), "{restaged}");
    let (ok, failed) = load.finish();
    assert!(ok > 0, "the load reached the app");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        ok + failed.len()
    );

    // ---- an unknown WIT major, a policy, a looping guest: refused, saying why ----
    for (name, wasm, says) in [
        (
            "future",
            artifacts::TEST_LIFECYCLE_MAJOR9,
            "supports diego:lifecycle/plugin@0.1.x",
        ),
        ("faulty", artifacts::TEST_LIFECYCLE_FAULTY, "deadline"),
        (
            "a-policy",
            artifacts::CLASSIC,
            "does not export diego:lifecycle/plugin",
        ),
    ] {
        let (code, err) = fails(&dev, &["lifecycles", "add", name, wasm]);
        assert_eq!(code, 4, "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
    }
    let listed = dev.diego_ok(&["lifecycles", "list", "-o", "json"]).unwrap();
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&listed)
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["buildpack", "docker", "static-site"]);

    // ---- a guest that passes its trial and misbehaves in real stagings: contained ----
    dev.diego_ok(&[
        "lifecycles",
        "add",
        "misbehaving",
        artifacts::TEST_LIFECYCLE_MISBEHAVING,
    ])
    .unwrap();
    std::fs::write(site.join("index.html"), "<h1>fickle</h1>\n").unwrap();
    dev.diego_ok(&[
        "push",
        "fickle",
        "-p",
        site.to_str().unwrap(),
        "--lifecycle",
        "misbehaving",
    ])
    .unwrap();
    for (mode, says) in [
        ("trap", "trapped"),
        ("loop", "deadline"),
        ("memory", "memory cap"),
        ("invalid-plan", "plan rejected"),
    ] {
        dev.diego_ok(&["set-env", "fickle", "MISBEHAVE", mode])
            .unwrap();
        let (code, err) = fails(&dev, &["restage", "fickle", "--timeout", "2m"]);
        assert_eq!(code, 4, "{mode}: {err}");
        assert!(err.contains(says), "{mode}: {err}");
        let logs = dev.diego_ok(&["logs", "fickle", "--recent"]).unwrap();
        assert!(
            logs.lines()
                .any(|l| l.contains("[STG/0]") && l.contains("Staging failed") && l.contains(says)),
            "{mode}: the reason is in the staging log:\n{logs}"
        );
        // the app keeps its droplet; the cell and the other apps are untouched
        serves(&dev, "fickle.localhost", "fickle");
        serves(&dev, "mysite.localhost", "hello from a static site");
    }

    // ---- a restarted platform still has every lifecycle and uses them ----
    dev.restart().unwrap();
    let listed = dev.diego_ok(&["lifecycles", "list"]).unwrap();
    assert!(
        listed.contains("static-site") && listed.contains("0.2.0 (also 0.1.0)"),
        "{listed}"
    );
    dev.wait_for("mysite after the restart", Duration::from_secs(120), |d| {
        Ok(d.get("mysite.localhost", "/")?.0 == 200)
    })
    .unwrap();
    std::fs::write(site.join("index.html"), "<h1>after a restart</h1>\n").unwrap();
    dev.diego_ok(&[
        "push",
        "third",
        "-p",
        site.to_str().unwrap(),
        "--lifecycle",
        "static-site",
    ])
    .unwrap();
    serves(&dev, "third.localhost", "after a restart");
    let (code, err) = fails(&dev, &["lifecycles", "remove", "static-site"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("mysite"), "still used: {err}");
    dev.stop().unwrap();
}
