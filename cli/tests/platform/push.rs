//! `diego push` end to end, as a developer uses it: `diego dev` as a real process (BBS, brain,
//! a cell with real containers, the apps API with its blob store and log server, the router
//! and route emitter), the repo's python buildpack run unchanged by the buildpack lifecycle, a
//! Docker image from a real local registry (Debian's `docker-registry`), and every request
//! through the router by Host header.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::{app_json, fails, repo};
use diego_testkit::{DevConfig, DevPlatform, ImageSpec, Registry, push_test_image};
use serde_json::Value;

/// The python test app copied to a temp dir, with `VERSION` set.
fn python_app(dir: &Path, version: &str) -> PathBuf {
    let app = dir.join(format!("python-web-{version}"));
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(
        repo().join("lifecycles/test-apps/python-web/app.py"),
        app.join("app.py"),
    )
    .unwrap();
    std::fs::write(app.join("VERSION"), version).unwrap();
    app
}

/// busybox httpd serving a page on 8080 (the image's own command), as vcap.
fn docker_app_image() -> ImageSpec {
    ImageSpec {
        env: vec!["GREETING=hi from the image".into()],
        ..ImageSpec::httpd("hello from a docker app\n")
    }
}

fn running_instances(dev: &DevPlatform, name: &str) -> usize {
    app_json(dev, name)["instances"]
        .as_array()
        .map(|i| i.iter().filter(|i| i["state"] == "RUNNING").count())
        .unwrap_or(0)
}

fn app_names(dev: &DevPlatform) -> Vec<String> {
    let out = dev.diego_ok(&["apps", "-o", "json"]).unwrap();
    let apps: Value = serde_json::from_str(&out).unwrap();
    apps.as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

fn veth_count() -> usize {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn push_buildpack_and_docker_apps_through_the_router() {
    let _serial = super::serial();
    if !diego_testkit::root::root_or_skip("push_buildpack_and_docker_apps_through_the_router") {
        return;
    }
    diego_testkit::registry_tools().unwrap();
    let registry = Registry::start().unwrap();
    push_test_image(&registry, "web", "v1", &docker_app_image()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let veths_before = veth_count();

    let mut dev = DevPlatform::start(
        &PathBuf::from(env!("CARGO_BIN_EXE_diego")),
        DevConfig::default(),
    )
    .unwrap();
    let python_bp = repo().join("lifecycles/buildpacks/python");
    dev.diego_ok(&["create-buildpack", "python", python_bp.to_str().unwrap()])
        .unwrap();
    let listed = dev.diego_ok(&["buildpacks"]).unwrap();
    assert!(listed.contains("python"), "{listed}");

    // ---- bad input: a clear message, a non-zero exit, nothing half-created ----
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, err) = fails(&dev, &["push", "empty", "-p", empty.to_str().unwrap()]);
    assert!(err.contains("empty"), "{err}");
    let no_match = repo().join("lifecycles/test-apps/no-match");
    let (_, err) = fails(&dev, &["push", "nomatch", "-p", no_match.to_str().unwrap()]);
    assert!(err.contains("no buildpack detected"), "{err}");
    // the python buildpack refuses requirements it cannot vendor (exit 3 in finalize)
    let failing = python_app(work.path(), "failing");
    std::fs::write(failing.join("requirements.txt"), "flask\n").unwrap();
    let (_, err) = fails(&dev, &["push", "failing", "-p", failing.to_str().unwrap()]);
    assert!(err.contains("cannot vendor requirements"), "{err}");
    let missing_image = format!("{}/nope:v1", registry.host());
    let (_, err) = fails(&dev, &["push", "noimage", "--docker-image", &missing_image]);
    assert!(err.contains("nope"), "{err}");
    let (code, err) = fails(&dev, &["push", "my app", "-p", failing.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("name"), "{err}");
    let (_, err) = fails(
        &dev,
        &[
            "push",
            "unknownbp",
            "-p",
            failing.to_str().unwrap(),
            "-b",
            "cobol",
        ],
    );
    assert!(err.contains("cobol"), "{err}");
    assert!(app_names(&dev).is_empty(), "{:?}", app_names(&dev));

    // ---- a buildpack app, by detection ----
    let v1 = python_app(work.path(), "1");
    let out = dev
        .diego_ok(&["push", "web", "-p", v1.to_str().unwrap(), "-o", "json"])
        .unwrap();
    let pushed: Value = serde_json::from_str(&out).unwrap();
    let url = pushed["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://web.localhost"), "{url}");
    let (status, body) = dev.get("web.localhost", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\": \"1\""), "{body}");

    // ---- a Docker app from the local registry ----
    let image = format!("{}/web:v1", registry.host());
    dev.diego_ok(&["push", "dockerweb", "--docker-image", &image])
        .unwrap();
    let (status, body) = dev.get("dockerweb.localhost", "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello from a docker app"), "{body}");
    let (status, body) = dev.get("nosuchapp.localhost", "/").unwrap();
    assert_eq!(status, 404, "{body}");

    // ---- scale to 3: requests spread over all three ----
    dev.diego_ok(&["scale", "web", "-i", "3"]).unwrap();
    dev.wait_for("3 running instances of web", Duration::from_secs(90), |d| {
        Ok(running_instances(d, "web") == 3)
    })
    .unwrap();
    // each running instance's usage of its limits, from its cell
    let view = app_json(&dev, "web");
    for i in view["instances"].as_array().unwrap() {
        let usage = &i["usage"];
        assert!(usage["memory_bytes"].as_u64() > Some(0), "{i}");
        assert_eq!(usage["memory_limit_bytes"].as_u64(), Some(256 << 20), "{i}");
        assert!(usage["cpu_percent"].as_f64().is_some(), "{i}");
    }
    let text = dev.diego_ok(&["app", "web"]).unwrap();
    assert!(text.contains(" of 256.0M"), "{text}");
    dev.wait_for(
        "requests reaching all 3 instances",
        Duration::from_secs(30),
        |d| {
            let mut seen = BTreeSet::new();
            for _ in 0..30 {
                let (status, body) = d.get("web.localhost", "/")?;
                if status == 200 {
                    let v: Value = serde_json::from_str(&body)?;
                    seen.insert(v["index"].as_str().unwrap_or("?").to_string());
                }
            }
            Ok(seen.len() == 3)
        },
    )
    .unwrap();

    // ---- kill an instance's process: it comes back, the crash is told ----
    let _ = dev.request("POST", "web.localhost", "/exit");
    dev.wait_for("a crash recorded for web", Duration::from_secs(30), |d| {
        let a = app_json(d, "web");
        Ok(a["instances"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["crash_count"].as_u64() >= Some(1))))
    })
    .unwrap();
    dev.wait_for("web back at 3 running", Duration::from_secs(60), |d| {
        Ok(running_instances(d, "web") == 3)
    })
    .unwrap();
    let events = dev.diego_ok(&["events", "web"]).unwrap();
    assert!(events.contains("crash"), "{events}");

    // ---- logs, tagged like Loggregator's ----
    dev.wait_for("tagged log lines", Duration::from_secs(20), |d| {
        let logs = d.diego_ok(&["logs", "web", "--recent"])?;
        Ok(["[STG/0]", "[APP/PROC/WEB/0]", "[RTR/", "[CELL/0]"]
            .iter()
            .all(|tag| logs.contains(tag)))
    })
    .unwrap();

    // ---- a rolling update under load: zero failed requests ----
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let router = dev.router_addr.clone();
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match diego_testkit::dev::http(
                    &format!("http://{router}/"),
                    "GET",
                    Some("web.localhost"),
                    "",
                ) {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{other:?}"));
                    }
                }
            }
            failures
        })
    };
    let v2 = python_app(work.path(), "2");
    let out = dev
        .diego(&["push", "web", "-p", v2.to_str().unwrap()])
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    // the second staging found what the first left in the build cache
    assert!(progress.contains("noted in the build cache"), "{progress}");
    dev.wait_for(
        "every answer from version 2",
        Duration::from_secs(120),
        |d| {
            Ok((0..10).all(|_| {
                d.get("web.localhost", "/")
                    .is_ok_and(|(s, b)| s == 200 && b.contains("\"version\": \"2\""))
            }))
        },
    )
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let failures = load.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) > 20, "too little load generated");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests during the rolling update: {failures:?}"
    );
    assert_eq!(running_instances(&dev, "web"), 3);

    // ---- restart diego dev (Ctrl-C, as at its terminal): the apps answer again ----
    dev.restart().unwrap();
    for host in ["web.localhost", "dockerweb.localhost"] {
        dev.wait_for(
            &format!("{host} after a restart"),
            Duration::from_secs(120),
            |d| Ok(d.get(host, "/")?.0 == 200),
        )
        .unwrap();
    }

    // a stop is no crash: the instances were stopped, not killed under the platform
    dev.wait_for(
        "web at 3 running after the restart",
        Duration::from_secs(60),
        |d| Ok(running_instances(d, "web") == 3),
    )
    .unwrap();
    let view = app_json(&dev, "web");
    for i in view["instances"].as_array().unwrap() {
        assert_eq!(i["crash_count"], 0, "{i}");
    }

    // ---- delete: nothing left behind ----
    dev.diego_ok(&["delete", "web", "-f"]).unwrap();
    dev.diego_ok(&["delete", "dockerweb", "-f"]).unwrap();
    assert!(app_names(&dev).is_empty());
    dev.wait_for(
        "no LRP, instance or route left",
        Duration::from_secs(60),
        |d| {
            let desired = d.diego_ok(&["desired-lrps"])?;
            let actual = d.diego_ok(&["actual-lrps"])?;
            let (_, routes) = diego_testkit::dev::http(
                &format!("{}/v1/routes", d.router_admin_url),
                "GET",
                None,
                "",
            )?;
            Ok(desired.trim().is_empty()
                && actual.trim().is_empty()
                && !routes.contains("localhost"))
        },
    )
    .unwrap();
    let (status, _) = dev.get("web.localhost", "/").unwrap();
    assert_eq!(status, 404);
    for prefix in ["apps/", "droplets/"] {
        let (_, blobs) = diego_testkit::dev::http(
            &format!("{}/v1/blobs?prefix={prefix}", dev.api_url),
            "GET",
            None,
            "",
        )
        .unwrap();
        assert_eq!(blobs.trim(), "[]", "blobs left under {prefix}");
    }
    let containers = dev.data_dir().join("cell-0/garden/containers");
    dev.wait_for("no container left", Duration::from_secs(30), |_| {
        Ok(std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0)
            == 0)
    })
    .unwrap();
    assert_eq!(veth_count(), veths_before, "a veth was left behind");
}

/// The same parts as separate processes, as an operator runs them on several machines:
/// `diego bbs`, `diego brain`, `diego cell`, `diego api` and `diego router`, each its own
/// process, talking HTTP; a Docker app pushed through them answers through the router, and
/// its logs carry the cell's and the router's lines.
#[test]
fn push_through_separate_roles() {
    let _serial = super::serial();
    if !diego_testkit::root::root_or_skip("push_through_separate_roles") {
        return;
    }
    diego_testkit::registry_tools().unwrap();
    let registry = Registry::start().unwrap();
    push_test_image(&registry, "web", "v1", &docker_app_image()).unwrap();
    let api_port = diego_testkit::free_port();
    let router_port = diego_testkit::free_port();
    let api_url = format!("http://127.0.0.1:{api_port}");
    // Staging tasks run on the stack, as Diego's do, Docker ones included.
    let Some(stack) = diego_testkit::root::stack_rootfs("push_through_separate_roles") else {
        return;
    };
    let mut p = super::platform("push_through_separate_roles", 1, |c| {
        c.rootfs.push(("cflinuxfs4".into(), stack));
        c.cell_args = vec!["--logs-url".into(), api_url.clone()];
    })
    .unwrap();
    assert_eq!(p.start_api(api_port, router_port).unwrap(), api_url);
    let admin = p.start_router(router_port, &api_url).unwrap();

    let diego = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_diego"))
            .args([
                "--log",
                "warn",
                "--bbs-url",
                p.bbs_url(),
                "--api-url",
                &api_url,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "diego {} failed: {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            p.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let image = format!("{}/web:v1", registry.host());
    let pushed: Value = serde_json::from_str(&diego(&[
        "push",
        "apart",
        "--docker-image",
        &image,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        pushed["url"].as_str(),
        Some(format!("http://apart.localhost:{router_port}").as_str())
    );
    let router = format!("http://127.0.0.1:{router_port}/");
    p.wait_for(
        "the app through the router",
        Duration::from_secs(30),
        |_| {
            let (status, body) =
                diego_testkit::dev::http(&router, "GET", Some("apart.localhost"), "")?;
            Ok(status == 200 && body.contains("hello from a docker app"))
        },
    )
    .unwrap();
    p.wait_for(
        "cell and router lines in the app's logs",
        Duration::from_secs(20),
        |_| {
            let logs = diego(&["logs", "apart", "--recent"]);
            Ok(logs.contains("[CELL/0]") && logs.contains("[RTR/0]"))
        },
    )
    .unwrap();
    diego(&["delete", "apart", "-f"]);
    p.wait_for("the route gone", Duration::from_secs(30), |_| {
        let (_, routes) = diego_testkit::dev::http(&format!("{admin}/v1/routes"), "GET", None, "")?;
        Ok(!routes.contains("apart.localhost"))
    })
    .unwrap();
}
