//! A real axum server on a TLS [`Listener`] and real clients over loopback: the platform's
//! client gets in; no certificate, another CA's certificate, a client not trusting the CA, and
//! plain HTTP are refused before the service sees a request; a stalled handshake holds up no
//! one; graceful shutdown works as with a plain listener.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diego_tls::certs::{Plan, make};
use diego_tls::{Listener, Tls, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Pki {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    ours: std::path::PathBuf,
    foreign: std::path::PathBuf,
}

fn pki() -> Pki {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    make(&Plan::new(a.path(), hosts.clone())).unwrap();
    make(&Plan::new(b.path(), hosts)).unwrap();
    Pki {
        ours: a.path().to_path_buf(),
        foreign: b.path().to_path_buf(),
        _dirs: (a, b),
    }
}

/// Serves `GET /` (counting calls) on a TLS listener; its URL, call counter and stopper.
async fn serve(
    tls: &Tls,
) -> (
    String,
    Arc<AtomicUsize>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                "hello over mTLS"
            }
        }),
    );
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), Some(tls))
        .await
        .unwrap();
    assert!(listener.is_tls());
    let url = listener.url().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    (url, calls, shutdown, server)
}

/// How the server at `url` treats a client with `config` that completes its side of the
/// handshake and then waits, sending nothing: the error that ends the connection (the
/// server's alert). Sending a request instead would race the alert against a reset.
async fn refusal(url: &str, config: Arc<rustls::ClientConfig>) -> String {
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return e.to_string(),
    };
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(3), tls.read(&mut byte)).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(0)) => "closed without a word".into(),
        Ok(Ok(_)) => panic!("the server sent data unasked"),
        Err(_) => panic!("the server kept the connection open"),
    }
}

fn load(dir: &std::path::Path, name: &str) -> Tls {
    Tls::load(&TlsFiles::in_dir(dir, name)).unwrap()
}

#[tokio::test]
async fn only_clients_with_a_certificate_from_the_ca_get_in() {
    let pki = pki();
    let server_tls = load(&pki.ours, "bbs");
    let (url, calls, shutdown, server) = serve(&server_tls).await;

    // the platform's client
    let client = diego_tls::client_builder(Some(&load(&pki.ours, "client")))
        .build()
        .unwrap();
    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "hello over mTLS");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // trusts the CA (so the refusal is the server's), presents no certificate
    let mut anonymous = rustls::ClientConfig::clone(&server_tls.client_config());
    anonymous.client_auth_cert_resolver = Arc::new(NoCertificate);
    let anonymous = Arc::new(anonymous);
    let why = refusal(&url, anonymous.clone()).await;
    assert!(why.contains("CertificateRequired"), "{why}");
    let over_reqwest = reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&anonymous))
        .build()
        .unwrap();
    assert!(over_reqwest.get(&url).send().await.is_err());

    // trusts the CA, presents a certificate from another CA
    let mut foreign = rustls::ClientConfig::clone(&server_tls.client_config());
    foreign.client_auth_cert_resolver = load(&pki.foreign, "client")
        .client_config()
        .client_auth_cert_resolver
        .clone();
    let foreign = Arc::new(foreign);
    let why = refusal(&url, foreign.clone()).await;
    assert!(why.contains("UnknownCA"), "{why}");
    let over_reqwest = reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&foreign))
        .build()
        .unwrap();
    assert!(over_reqwest.get(&url).send().await.is_err());

    // a client of the other platform does not trust this server either
    let stranger = diego_tls::client_builder(Some(&load(&pki.foreign, "client")))
        .build()
        .unwrap();
    let err = stranger.get(&url).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // plain HTTP gets a clear 400 and nothing else
    let addr = url.trim_start_matches("https://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(
        answer.contains("HTTP request to an HTTPS server"),
        "{answer}"
    );

    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a refused client reached the service"
    );

    // still serving the platform's client, then stops gracefully
    let again = client.get(&url).send().await.unwrap();
    assert!(again.status().is_success());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("graceful shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_stalled_handshake_holds_up_no_one() {
    let pki = pki();
    let (url, _calls, shutdown, server) = serve(&load(&pki.ours, "api")).await;
    let addr = url.trim_start_matches("https://").to_string();
    // connected, says nothing
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let client = diego_tls::client_builder(Some(&load(&pki.ours, "client")))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = client.get(&url).send().await.unwrap();
    assert!(answer.status().is_success());
    shutdown.cancel();
    server.await.unwrap();
}

#[tokio::test]
async fn a_plain_listener_serves_plain_http() {
    let listener = Listener::from(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    assert!(!listener.is_tls());
    let url = listener.url().unwrap();
    assert!(url.starts_with("http://"), "{url}");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "plain" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = diego_tls::client_builder(None)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "plain");
}

#[test]
fn urls_without_a_scheme_follow_tls() {
    let pki = pki();
    let tls = load(&pki.ours, "client");
    assert_eq!(
        diego_tls::with_scheme("127.0.0.1:8889", Some(&tls)),
        "https://127.0.0.1:8889"
    );
    assert_eq!(
        diego_tls::with_scheme("127.0.0.1:8889", None),
        "http://127.0.0.1:8889"
    );
    assert_eq!(
        diego_tls::with_scheme("http://h:1", Some(&tls)),
        "http://h:1"
    );
}

/// Offers no client certificate.
#[derive(Debug)]
struct NoCertificate;

impl rustls::client::ResolvesClientCert for NoCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}
