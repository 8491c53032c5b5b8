//! Mutual TLS between the platform's parts, as Diego requires in production: every internal
//! server (BBS, brain, rep, apps API, router admin) asks each client for a certificate signed by
//! the platform's CA and refuses a client without one; every client trusts that CA only and
//! presents its own certificate. Without TLS configured everything stays plain HTTP.
//!
//! - [`Tls`]: one part's identity — the CA it trusts, its certificate and key — loaded from PEM
//!   files ([`TlsFiles`], the layout [`certs`] writes). It gives the rustls server and client
//!   configurations (aws-lc-rs, the provider reqwest's rustls already brings: one crypto stack).
//! - [`Listener`]: a TCP listener for `axum::serve` that completes TLS handshakes concurrently
//!   and under a deadline when given a [`Tls`], and accepts plain connections without one.
//! - [`client_builder`]: a `reqwest::ClientBuilder` for calls between the parts (the CA is the
//!   only root); [`download_client_builder`] for downloads that may also go to public hosts.
//! - [`certs`]: the CA and the per-part certificates `diego certs` and `diego dev --tls` make.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = diego_tls::Tls::load(&diego_tls::TlsFiles::in_dir("/etc/diego/tls".as_ref(), "bbs"))?;
//! let listener = diego_tls::Listener::bind("127.0.0.1:8889".parse()?, Some(&tls)).await?;
//! axum::serve(listener, axum::Router::new()).await?;
//! let client = diego_tls::client_builder(Some(&tls)).build()?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub mod certs;
mod listener;

pub use listener::{HANDSHAKE_TIMEOUT, Listener, Stream};

/// What went wrong loading an identity or making certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key, or they do not fit together.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("cannot make the certificate {name}: {message}")]
    Generate { name: String, message: String },
}

/// Where one part's identity lives: the CA certificate(s) it trusts, its certificate (chain)
/// and its private key, all PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/NAME.pem` and `DIR/NAME-key.pem`: the layout [`certs::make`] writes.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join(certs::CA_CERT),
            cert: dir.join(certs::cert_file(name)),
            key: dir.join(certs::key_file(name)),
        }
    }
}

/// One part's TLS identity, ready to serve and to call. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where it came from, for logs and errors.
    origin: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    ca: Vec<reqwest::Certificate>,
    identity: reqwest::Identity,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(what: impl Into<String>, message: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        what: what.into(),
        message: message.to_string(),
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(what, "holds no certificate"));
    }
    Ok(certs)
}

/// The one crypto provider every configuration uses (explicit, so no process default is
/// needed and no second provider can be picked by accident).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    /// Loads the identity in `files`. The certificate must be signed by (one of) the CA
    /// certificate(s) and valid now, so a mismatched or expired file is refused at start-up
    /// rather than at the first handshake.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let origin = files.cert.display().to_string();
        Self::build(
            &read(&files.ca)?,
            &read(&files.cert)?,
            &read(&files.key)?,
            &files.ca.display().to_string(),
            &origin,
            &files.key.display().to_string(),
        )
    }

    /// As [`Tls::load`], from PEM in memory.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Tls, TlsError> {
        Self::build(ca, cert, key, "the CA", "the certificate", "the key")
    }

    fn build(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_what: &str,
        cert_what: &str,
        key_what: &str,
    ) -> Result<Tls, TlsError> {
        let cas = certificates(ca_pem, ca_what)?;
        let chain = certificates(cert_pem, cert_what)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(key_what, format!("holds no usable private key ({e})")))?;
        let mut roots = RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.clone())
                .map_err(|e| invalid(ca_what, format!("not a usable CA certificate ({e})")))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| invalid(ca_what, e))?;
        // Every part is also a client (all of them call the BBS), so its certificate must
        // pass the check its peers make of it.
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| {
                invalid(
                    cert_what,
                    format!(
                        "not a valid client certificate under {ca_what} ({e}); make it again \
                         with `diego certs` from the same CA"
                    ),
                )
            })?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(cert_what, e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid(key_what, format!("does not fit {cert_what} ({e})")))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(cert_what, e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid(key_what, format!("does not fit {cert_what} ({e})")))?;
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let ca = cas
            .iter()
            .map(|c| reqwest::Certificate::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(ca_what, e))?;
        let mut identity_pem = cert_pem.to_vec();
        identity_pem.push(b'\n');
        identity_pem.extend_from_slice(key_pem);
        let identity =
            reqwest::Identity::from_pem(&identity_pem).map_err(|e| invalid(key_what, e))?;
        Ok(Tls {
            inner: Arc::new(Inner {
                origin: cert_what.to_string(),
                server: Arc::new(server),
                client: Arc::new(client),
                ca,
                identity,
            }),
        })
    }

    /// The server side: TLS 1.2+, a client certificate signed by the CA required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.server.clone()
    }

    /// The client side: the CA is the only root; this identity is presented.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.inner.client.clone()
    }

    /// Where the certificate came from (its file), for messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }
}

/// `https` with TLS, `http` without.
pub fn scheme(tls: Option<&Tls>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// `reqwest::Client::builder()` for calls between the parts: with `tls`, the platform's CA is
/// the only root trusted and the identity is presented; without, a plain builder.
pub fn client_builder(tls: Option<&Tls>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls {
        Some(tls) => builder.tls_backend_preconfigured(ClientConfig::clone(&tls.inner.client)),
        None => builder,
    }
}

/// `reqwest::Client::builder()` for downloads and uploads whose URLs may name the platform's
/// blob store or a public host (a cell's Download actions, lifecycle components): with `tls`,
/// the platform's CA is trusted besides the system's roots and the identity is presented to a
/// server that asks for it.
pub fn download_client_builder(tls: Option<&Tls>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match tls {
        Some(tls) => builder
            .tls_certs_merge(tls.inner.ca.iter().cloned())
            .identity(tls.inner.identity.clone()),
        None => builder,
    }
}

/// `url` as given if it names a scheme; else `scheme://url` for this identity (so defaults
/// such as `127.0.0.1:8889` follow whether TLS is on).
pub fn with_scheme(url: &str, tls: Option<&Tls>) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("{}://{url}", scheme(tls))
    }
}

/// An error with its sources, `a: b: c`: a refused handshake says why ("invalid peer
/// certificate: UnknownIssuer", "received fatal alert: CertificateRequired") only in the
/// sources of reqwest's "error sending request".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
