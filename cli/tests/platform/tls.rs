//! Mutual TLS end to end, as an operator runs it: certificates from `diego certs`, and every
//! role its own process (`diego bbs`, `brain`, `cell`, `api`, `router`) with `--tls-dir`. An
//! LRP desired through the CLI, a Docker app and a buildpack app pushed through the apps API
//! (staging, blob store, logs, callbacks, routes: every internal link over mTLS) run and
//! answer; every
//! internal port refuses a client without a certificate, one whose certificate comes from
//! another CA, and plain HTTP; new certificates from the same CA are taken up by restarting
//! each role, and nothing is lost.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use diego_testkit::platform::tls_refusal;
use diego_testkit::{Platform, Registry, push_test_image};
use serde_json::Value;

/// The internal ports: (role, URL answering GET, or POST for the BBS).
fn internal_ports(p: &Platform, api: &str, admin: &str) -> Vec<(&'static str, String, bool)> {
    vec![
        ("bbs", format!("{}/v1/ping", p.bbs_url()), true),
        ("brain", format!("{}/v1/policy", p.brains[0].url), false),
        ("cell", format!("{}/ping", p.cells[0].url), false),
        ("api", format!("{api}/v1/info"), false),
        ("router admin", format!("{admin}/v1/routes"), false),
    ]
}

fn pem_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The DER of the first certificate in a PEM file.
fn der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(&pem_file(path))
        .unwrap()
        .to_vec()
}

/// A client trusting the CA in `ca` (so a refusal is the server's), presenting the `client`
/// certificate in `identity`, or none.
fn client_config(ca: &Path, identity: Option<&Path>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    Arc::new(match identity {
        None => config.with_no_client_auth(),
        Some(dir) => config
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(dir.join("client.pem"))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(dir.join("client-key.pem")).unwrap(),
            )
            .unwrap(),
    })
}

/// What a request from `client` to `url` ended with: its status, or the error's full text.
async fn outcome(client: &reqwest::Client, url: &str, post: bool) -> Result<u16, String> {
    let request = if post {
        client.post(url).json(&serde_json::json!({}))
    } else {
        client.get(url)
    };
    match request.send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// A plain HTTP request to a TLS port: the answer's text.
async fn plain_http(url: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer)).await;
    answer
}

#[test]
fn mutual_tls_end_to_end_refuses_strangers_and_rotates_by_restart() {
    let _serial = super::serial();
    let test = "mutual_tls_end_to_end_refuses_strangers_and_rotates_by_restart";
    if !diego_testkit::root::root_or_skip(test) {
        return;
    }
    diego_testkit::registry_tools().unwrap();
    let registry = Registry::start().unwrap();
    push_test_image(
        &registry,
        "web",
        "v1",
        &diego_testkit::ImageSpec::httpd("hello over mutual TLS\n"),
    )
    .unwrap();
    let Some(stack) = diego_testkit::root::stack_rootfs(test) else {
        return;
    };
    let api_port = diego_testkit::free_port();
    let router_port = diego_testkit::free_port();
    let api_url = format!("https://127.0.0.1:{api_port}");
    let mut p = super::platform(test, 1, |c| {
        c.tls = true;
        c.rootfs.push(("cflinuxfs4".into(), stack));
        c.cell_args = vec!["--logs-url".into(), api_url.clone()];
    })
    .unwrap();
    let tls_dir = p.tls_dir().unwrap();
    assert!(p.bbs_url().starts_with("https://"), "{}", p.bbs_url());
    assert_eq!(p.start_api(api_port, router_port).unwrap(), api_url);
    let admin = p.start_router(router_port, &api_url).unwrap();
    assert!(admin.starts_with("https://"), "{admin}");

    let diego = |p: &Platform, args: &[&str]| {
        let mut full = vec!["--api-url", api_url.as_str()];
        full.extend_from_slice(args);
        diego_testkit::platform::succeeded(&full, p.diego(&full).unwrap())
            .unwrap_or_else(|e| panic!("{e:#}\n{}", p.logs()))
    };

    // ---- the platform works over mutual TLS: an LRP through the CLI ... ----
    let cells = p.records(&["cells"]).unwrap();
    assert!(
        cells[0]["rep_url"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{cells:?}"
    );
    super::desire(&p, &super::web_lrp("tls-web", 1, 64));
    super::wait_running_and_answering(&p, "tls-web", 1, Duration::from_secs(60));

    // ... and a pushed app: staging on the cell (the lifecycle from the blob store, the
    // completion callback to the API), logs from the cell and the router, routes to the router
    let image = format!("{}/web:v1", registry.host());
    let pushed: Value = serde_json::from_str(&diego(
        &p,
        &["push", "tlsapp", "--docker-image", &image, "-o", "json"],
    ))
    .unwrap();
    assert_eq!(pushed["name"], "tlsapp", "{pushed}");
    let through_router = |p: &Platform, host: &str, expect: &str| {
        p.wait_for(
            &format!("{host} through the router"),
            Duration::from_secs(60),
            |_| {
                let (status, body) = diego_testkit::dev::http(
                    &format!("http://127.0.0.1:{router_port}/"),
                    "GET",
                    Some(host),
                    "",
                )?;
                anyhow::ensure!(
                    status == 200 && body.contains(expect),
                    "the router answered {status}: {body}"
                );
                Ok(true)
            },
        )
        .unwrap();
    };
    through_router(&p, "tlsapp.localhost", "hello over mutual TLS");
    // a buildpack app: the cell downloads its bits and the buildpack from the blob store and
    // uploads the droplet there, then downloads the droplet to run it, all over mTLS
    let repo = diego_testkit::root::workspace_root();
    let python = repo.join("lifecycles/buildpacks/python");
    diego(
        &p,
        &["create-buildpack", "python", python.to_str().unwrap()],
    );
    let app = repo.join("lifecycles/test-apps/python-web");
    diego(&p, &["push", "pyapp", "-p", app.to_str().unwrap()]);
    through_router(&p, "pyapp.localhost", "\"version\": \"1\"");
    p.wait_for(
        "cell and router lines in the app's logs",
        Duration::from_secs(30),
        |p| {
            let logs = diego(p, &["logs", "tlsapp", "--recent"]);
            Ok(logs.contains("[CELL/0]") && logs.contains("[RTR/0]"))
        },
    )
    .unwrap();

    // ---- every internal port refuses strangers ----
    let foreign_dir = p.dir().join("foreign");
    diego_testkit::platform::make_certs(&p.diego, &foreign_dir, &[]).unwrap();
    let ca = tls_dir.join("ca.pem");
    let client = diego_tls::client_builder(p.tls()).build().unwrap();
    // these trust the platform's CA, so it is the server that refuses them
    let anonymous = client_config(&ca, None);
    let foreign = client_config(&ca, Some(&foreign_dir));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (role, url, post) in internal_ports(&p, &api_url, &admin) {
        let refused = tls_refusal(&url, anonymous.clone())
            .unwrap_or_else(|e| panic!("{role} let a client without a certificate in: {e:#}"));
        assert!(refused.contains("CertificateRequired"), "{role}: {refused}");
        let refused = tls_refusal(&url, foreign.clone())
            .unwrap_or_else(|e| panic!("{role} let a client of another CA in: {e:#}"));
        assert!(refused.contains("UnknownCA"), "{role}: {refused}");
        runtime.block_on(async {
            let ok = outcome(&client, &url, post).await;
            assert!(matches!(ok, Ok(s) if s < 500), "{role}: {ok:?}");
            let answer = plain_http(&url).await;
            assert!(
                answer.starts_with("HTTP/1.0 400") && answer.contains("HTTPS server"),
                "{role} answered plain HTTP: {answer}"
            );
        });
    }
    // the CLI without certificates cannot talk to the BBS
    let out = std::process::Command::new(&p.diego)
        .args(["--bbs-url", p.bbs_url(), "cells"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a CLI without certificates got in");

    // ---- rotation: new certificates from the same CA, taken up by restarting each role ----
    let ca_before = pem_file(&tls_dir.join("ca.pem"));
    let bbs_before = der(&tls_dir.join("bbs.pem"));
    diego_testkit::platform::make_certs(&p.diego, &tls_dir, &[]).unwrap();
    assert_eq!(
        pem_file(&tls_dir.join("ca.pem")),
        ca_before,
        "the CA was kept"
    );
    let bbs_after = der(&tls_dir.join("bbs.pem"));
    assert_ne!(bbs_after, bbs_before, "the BBS got a new certificate");
    p.restart_bbs().unwrap();
    p.restart_service("api", &format!("{api_url}/v1/info"))
        .unwrap();
    p.restart_service("router", &format!("{admin}/v1/routes"))
        .unwrap();
    p.start_brain(0).unwrap();
    p.cells[0].kill9();
    p.start_cell(0).unwrap();
    // the restarted BBS presents its new certificate
    let served = runtime.block_on(async {
        let client = diego_tls::client_builder(p.tls())
            .tls_info(true)
            .build()
            .unwrap();
        let r = client
            .post(format!("{}/v1/ping", p.bbs_url()))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
            .unwrap()
    });
    assert_eq!(served, bbs_after, "the BBS serves its new certificate");
    // nothing lost: the LRP and the app are still there and answer
    super::wait_running_and_answering(&p, "tls-web", 1, Duration::from_secs(90));
    let apps = diego(&p, &["apps", "-o", "json"]);
    assert!(apps.contains("tlsapp") && apps.contains("pyapp"), "{apps}");
    through_router(&p, "tlsapp.localhost", "hello over mutual TLS");
    through_router(&p, "pyapp.localhost", "\"version\": \"1\"");
    diego(&p, &["delete", "tlsapp", "-f"]);
    diego(&p, &["delete", "pyapp", "-f"]);
}
