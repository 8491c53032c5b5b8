//! diego-ssh-proxy: SSH into app instances (Diego's ssh-proxy).
//!
//! A client logs in as `<process-guid>/<index>` (or Cloud Foundry's `cf:<app-guid>/<index>`)
//! with a one-time code as its password, which this proxy issued for that process
//! (`POST /v1/ssh-codes`, what `diego ssh-code` asks; Cloud Foundry asks UAA). The proxy
//! finds the instance in the BBS — its DesiredLRP must carry the `diego-ssh` route (SSH
//! enabled), the instance must be RUNNING — and then:
//! - a session channel (`ssh HOST`, `ssh HOST CMD`, with or without a terminal) goes to the
//!   instance's rep, which runs the shell or command in the instance's container as an
//!   interactive Garden process ([`diego_rep_client::ssh`]); window changes, signals, the
//!   output and the exit status go through;
//! - a `direct-tcpip` channel (`ssh -L`) is connected to the host port the instance maps to
//!   the asked container port; other ports and other hosts are refused.
//!
//! Refusals say why: a wrong, expired or used code, an unknown process, SSH disabled, an
//! instance that is not running — in the login (keyboard-interactive instructions, which
//! OpenSSH prints), or on the channel (stderr and exit status 1, or the open-failure text).
//!
//! Modules: [`codes`] (the code store), [`target`] (user names and instances), `server` (the
//! russh handler), `session` (a session channel bridged to the rep), [`hostkey`], `admin`
//! (the HTTP API). Entry point: [`SshProxy`].

pub mod codes;
pub mod hostkey;
pub mod target;

mod admin;
mod server;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::BbsClient;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::codes::CodeStore;
use crate::server::{Connection, Shared};

/// Why the proxy could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("ssh host key {path}: {message}")]
    HostKey { path: PathBuf, message: String },
    #[error("the ssh proxy's {what} listener: {source}")]
    Listen {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("invalid ssh proxy configuration: {0}")]
    Config(String),
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where the host key is kept.
    pub data_dir: PathBuf,
    /// The secret the cells expect (their `ssh_secret`).
    pub rep_secret: String,
    /// How long a code is good for.
    pub code_ttl: Duration,
    /// The SSH address codes' answers name (default: the SSH listener's).
    pub public_endpoint: Option<String>,
}

impl ProxyConfig {
    pub fn new(data_dir: impl Into<PathBuf>, rep_secret: impl Into<String>) -> Self {
        ProxyConfig {
            data_dir: data_dir.into(),
            rep_secret: rep_secret.into(),
            code_ttl: codes::DEFAULT_TTL,
            public_endpoint: None,
        }
    }
}

/// `POST /v1/ssh-codes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRequest {
    pub process_guid: String,
}

/// A code as `POST /v1/ssh-codes` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCodeView {
    pub code: String,
    pub process_guid: String,
    /// RFC 3339.
    pub expires_at: String,
    /// `HOST:PORT` to connect to.
    pub ssh_endpoint: String,
    /// The host key's fingerprint (`SHA256:...`), to check the server against.
    pub host_key_fingerprint: String,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub ssh_endpoint: String,
    pub host_key_fingerprint: String,
}

/// The ssh proxy, ready to serve.
#[derive(Debug)]
pub struct SshProxy {
    config: ProxyConfig,
    bbs: BbsClient,
    rep_http: reqwest::Client,
    key: russh::keys::PrivateKey,
}

impl SshProxy {
    /// Loads (or makes) the host key. `rep_http` is the client sessions reach reps with (give
    /// it no overall timeout: it would cut sessions).
    pub fn new(
        config: ProxyConfig,
        bbs: BbsClient,
        rep_http: reqwest::Client,
    ) -> Result<SshProxy, ProxyError> {
        if config.rep_secret.is_empty() {
            return Err(ProxyError::Config("the cells' SSH secret is empty".into()));
        }
        let key = hostkey::load_or_create(&config.data_dir)?;
        Ok(SshProxy {
            config,
            bbs,
            rep_http,
            key,
        })
    }

    /// The host key's fingerprint (`SHA256:...`).
    pub fn host_key_fingerprint(&self) -> String {
        hostkey::fingerprint(&self.key)
    }

    /// Serves SSH on `ssh` and the HTTP API on `admin` until `shutdown`; open connections are
    /// dropped then.
    pub async fn serve(
        self,
        ssh: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ProxyError> {
        let ssh_addr = ssh.local_addr().map_err(|source| ProxyError::Listen {
            what: "SSH",
            source,
        })?;
        let info = Info {
            ssh_endpoint: self
                .config
                .public_endpoint
                .clone()
                .unwrap_or_else(|| ssh_addr.to_string()),
            host_key_fingerprint: self.host_key_fingerprint(),
        };
        let shared = Arc::new(Shared {
            bbs: self.bbs,
            rep_http: self.rep_http,
            rep_secret: self.config.rep_secret.clone(),
            codes: Arc::new(CodeStore::new(self.config.code_ttl, codes::MAX_OUTSTANDING)),
        });
        let config = Arc::new(russh::server::Config {
            methods: server::methods(),
            keys: vec![self.key],
            // OpenSSH probes with `none` first: no need to make it wait
            auth_rejection_time_initial: Some(Duration::ZERO),
            // sessions may idle (a shell left open); dead clients are found by keepalives
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        });
        let admin_app = admin::router(Arc::new(admin::AdminState {
            shared: shared.clone(),
            info: info.clone(),
        }));
        let admin_task = {
            let token = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(admin, admin_app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
            })
        };
        tracing::info!(
            ssh = %ssh_addr,
            endpoint = %info.ssh_endpoint,
            fingerprint = %info.host_key_fingerprint,
            "ssh proxy listening"
        );
        let connections = tokio_util::task::TaskTracker::new();
        let stopping = CancellationToken::new();
        loop {
            let (socket, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = ssh.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // out of descriptors and the like: wait, do not spin
                        tracing::warn!(error = %e, "ssh proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let handler = Connection::new(shared.clone(), Some(peer));
            let (config, stop) = (config.clone(), stopping.clone());
            connections.spawn(async move {
                let session = match russh::server::run_stream(config, socket, handler).await {
                    Ok(session) => session,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "SSH connection set-up failed");
                        return;
                    }
                };
                tokio::select! {
                    result = session => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "SSH connection ended");
                        }
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
        stopping.cancel();
        connections.close();
        connections.wait().await;
        match admin_task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ProxyError::Listen {
                what: "HTTP",
                source,
            }),
            Err(e) => Err(ProxyError::Listen {
                what: "HTTP",
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// Why a code could not be had from the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the ssh proxy at {url}: {message}")]
    Transport { url: String, message: String },
    /// The proxy refused; `message` says why.
    #[error("{message}")]
    Refused { status: u16, message: String },
}

/// The proxy's HTTP API, as `diego ssh-code` and `diego ssh` use it.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    http: reqwest::Client,
    base: String,
}

impl ProxyClient {
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        ProxyClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    /// A one-time code for `process_guid`.
    pub async fn issue_code(&self, process_guid: &str) -> Result<IssuedCodeView, ClientError> {
        let url = format!("{}/v1/ssh-codes", self.base);
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: url.clone(),
            message: e.to_string(),
        };
        let response = self
            .http
            .post(&url)
            .json(&CodeRequest {
                process_guid: process_guid.to_string(),
            })
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let message =
                match serde_json::from_slice::<diego_model::requests::ErrorResponse>(&body) {
                    Ok(e) => e.error.message,
                    Err(_) => String::from_utf8_lossy(&body).chars().take(512).collect(),
                };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Transport {
            url: url.clone(),
            message: format!("unexpected answer: {e}"),
        })
    }
}
