//! SSH into app instances: the `diego ssh-proxy` role (also inside `diego dev`), and the
//! developer's `diego ssh`, `diego ssh-code`, `diego enable-ssh` and `diego disable-ssh`.
//!
//! `diego ssh` is an SSH client of its own (russh): it asks the apps API for the app's process,
//! the proxy for a one-time code (and the proxy's address and host key fingerprint, which the
//! server must match), logs in as `<process-guid>/<index>`, and then runs a shell on the
//! local terminal (raw mode, window changes sent) or a command, and forwards `-L` ports; it
//! exits with the remote exit status. A plain OpenSSH client works as well:
//! `ssh -p PORT <process-guid>/<index>@HOST` with the code from `diego ssh-code` as password.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use diego_ssh_proxy::{IssuedCodeView, ProxyClient, ProxyConfig, SshProxy};
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::HashAlg;
use russh::{ChannelMsg, Disconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The proxy's HTTP API unless told otherwise (`diego dev`'s).
pub const DEFAULT_PROXY_API: &str = "127.0.0.1:2223";

/// `diego ssh-proxy`.
#[derive(Debug, clap::Args)]
pub struct SshProxyArgs {
    /// Address SSH clients connect to.
    #[arg(long, default_value = "127.0.0.1:2222")]
    pub listen: SocketAddr,
    /// Address of the proxy's HTTP API (one-time codes for `diego ssh-code`). Anyone who
    /// reaches it can have codes: keep it on a network only the platform's users reach.
    #[arg(long, default_value = DEFAULT_PROXY_API)]
    pub admin_listen: SocketAddr,
    /// Where the host key is kept (made on the first start).
    #[arg(
        long,
        env = "DIEGO_SSH_PROXY_DATA_DIR",
        default_value = "/var/lib/diego/ssh-proxy"
    )]
    pub data_dir: PathBuf,
    /// The secret the cells expect (their `--ssh-secret`).
    #[arg(long, env = "DIEGO_SSH_SECRET", hide_env_values = true)]
    pub ssh_secret: String,
    /// The SSH address users are told to connect to (default: --listen).
    #[arg(long)]
    pub public_endpoint: Option<String>,
}

/// Runs `diego ssh-proxy` until SIGTERM or Ctrl-C.
pub async fn proxy(
    bbs_url: &str,
    args: SshProxyArgs,
    tls: Option<diego_tls::Tls>,
) -> anyhow::Result<()> {
    let ssh = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} for SSH", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let shutdown = crate::roles::shutdown_on_signal();
    serve_proxy(ssh, admin, bbs_url, &args, tls, shutdown).await
}

/// Serves the ssh proxy on `ssh` and its HTTP API on `admin` until `shutdown`. With `tls` it
/// presents it to the BBS and the cells.
pub async fn serve_proxy(
    ssh: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    bbs_url: &str,
    args: &SshProxyArgs,
    tls: Option<diego_tls::Tls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bbs = diego_bbs_client::BbsClient::with_tls(bbs_url, tls.as_ref());
    // no overall timeout: it would cut sessions
    let rep_http = diego_tls::client_builder(tls.as_ref())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot make the HTTP client for the cells")?;
    let config = ProxyConfig {
        public_endpoint: args.public_endpoint.clone(),
        ..ProxyConfig::new(&args.data_dir, &args.ssh_secret)
    };
    let proxy = SshProxy::new(config, bbs, rep_http).with_context(|| {
        format!(
            "cannot start the ssh proxy (data dir {})",
            args.data_dir.display()
        )
    })?;
    proxy
        .serve(ssh, admin, shutdown)
        .await
        .context("the ssh proxy stopped")
}

/// A fresh secret shared by `diego dev`'s cells and proxy.
pub fn dev_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Where to ask for codes (`--ssh-proxy`).
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArg {
    /// The ssh proxy's HTTP API (`diego ssh-proxy --admin-listen`, or `diego dev`'s).
    #[arg(long = "ssh-proxy", env = "DIEGO_SSH_PROXY", default_value = DEFAULT_PROXY_API)]
    pub url: String,
}

impl ProxyArg {
    fn client(&self) -> anyhow::Result<ProxyClient> {
        let url = if self.url.contains("://") {
            self.url.clone()
        } else {
            format!("http://{}", self.url)
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot make an HTTP client")?;
        Ok(ProxyClient::new(http, &url))
    }
}

/// `diego ssh-code`.
#[derive(Debug, clap::Args)]
pub struct SshCodeArgs {
    /// The app.
    pub name: String,
    #[command(flatten)]
    pub proxy: ProxyArg,
}

/// `diego ssh`.
#[derive(Debug, clap::Args)]
pub struct SshArgs {
    /// The app.
    pub name: String,
    /// Which instance.
    #[arg(short = 'i', long = "app-instance-index", default_value_t = 0)]
    pub index: u32,
    /// Run this command instead of a shell.
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Forward a local port to the instance: [BIND:]PORT:HOST:PORT (HOST is the instance,
    /// e.g. localhost). Repeatable.
    #[arg(short = 'L', value_name = "[BIND:]PORT:HOST:PORT")]
    pub forwards: Vec<String>,
    /// Run no shell or command (with -L: only forward).
    #[arg(short = 'N')]
    pub no_command: bool,
    /// Always a terminal, even with a command.
    #[arg(short = 't', conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never a terminal.
    #[arg(short = 'T')]
    pub no_tty: bool,
    #[command(flatten)]
    pub proxy: ProxyArg,
}

/// The remote command's exit status, which `diego ssh` exits with.
#[derive(Debug, thiserror::Error)]
#[error("the remote command exited with status {0}")]
pub struct RemoteExit(pub u8);

/// The app's current process guid and a code for it.
async fn code_for(api: &str, name: &str, proxy: &ProxyArg) -> anyhow::Result<IssuedCodeView> {
    let app = crate::apps::client(api)
        .app(name)
        .await
        .with_context(|| format!("cannot get app {name:?}"))?;
    let Some(process_guid) = app.process_guid else {
        bail!("app {name:?} runs no instances (start it first: `diego start {name}`)");
    };
    match proxy.client()?.issue_code(&process_guid).await {
        Ok(code) => Ok(code),
        // refused (exit 4), with the proxy's reason
        Err(diego_ssh_proxy::ClientError::Refused { message, .. }) => Err(crate::apps::Failed(
            format!("cannot get an SSH code for app {name:?}: {message}"),
        )
        .into()),
        Err(e) => Err(e).with_context(|| format!("cannot get an SSH code for app {name:?}")),
    }
}

/// `diego ssh-code APP`: prints a one-time code, and on stderr how to use it.
pub async fn ssh_code(api: &str, args: SshCodeArgs) -> anyhow::Result<()> {
    let code = code_for(api, &args.name, &args.proxy).await?;
    let (host, port) = code
        .ssh_endpoint
        .rsplit_once(':')
        .unwrap_or((code.ssh_endpoint.as_str(), "22"));
    eprintln!(
        "Good once, until {}. Log in with:\n  ssh -p {port} {}/0@{host}\n(host key {})",
        code.expires_at, code.process_guid, code.host_key_fingerprint
    );
    crate::commands::print_line(&code.code)
}

/// `diego enable-ssh` / `diego disable-ssh`.
pub async fn set_ssh(api: &str, name: &str, enabled: bool) -> anyhow::Result<()> {
    let settings = diego_apps_api::model::AppSettings {
        enable_ssh: Some(enabled),
        ..Default::default()
    };
    crate::apps::client(api)
        .put_app(name, &settings)
        .await
        .with_context(|| format!("cannot change app {name:?}"))?;
    eprintln!(
        "SSH {} for app {name}",
        if enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

/// The russh client's side of the connection: the server must be the proxy that issued the
/// code.
struct Client {
    fingerprint: String,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let seen = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        if seen != self.fingerprint {
            tracing::error!(expected = %self.fingerprint, seen = %seen, "the ssh proxy's host key is not the one its API named");
        }
        Ok(seen == self.fingerprint)
    }
}

/// A `-L` forward.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forward {
    bind: String,
    port: u16,
    host: String,
    host_port: u16,
}

fn parse_forward(spec: &str) -> anyhow::Result<Forward> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (bind, rest) = match parts.as_slice() {
        [port, host, host_port] => ("127.0.0.1", [*port, *host, *host_port]),
        [bind, port, host, host_port] => (*bind, [*port, *host, *host_port]),
        _ => bail!("-L {spec}: expected [BIND:]PORT:HOST:PORT"),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("-L {spec}: {p:?} is not a port"))
    };
    Ok(Forward {
        bind: bind.to_string(),
        port: port(rest[0])?,
        host: rest[1].to_string(),
        host_port: port(rest[2])?,
    })
}

/// The local terminal's size (columns, rows), if stdin is one.
fn terminal_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct that lives across the call.
    let r = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then(|| (u32::from(ws.ws_col), u32::from(ws.ws_row)))
}

/// The local terminal in raw mode (keys go to the remote shell as typed) until dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

/// `diego ssh APP`.
pub async fn ssh(api: &str, args: SshArgs) -> anyhow::Result<()> {
    let forwards = args
        .forwards
        .iter()
        .map(|f| parse_forward(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let code = code_for(api, &args.name, &args.proxy).await?;
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        ..Default::default()
    });
    let handler = Client {
        fingerprint: code.host_key_fingerprint.clone(),
    };
    let mut session = client::connect(config, code.ssh_endpoint.as_str(), handler)
        .await
        .with_context(|| format!("cannot connect to the ssh proxy at {}", code.ssh_endpoint))?;
    let user = format!("{}/{}", code.process_guid, args.index);
    let mut answer = session
        .authenticate_keyboard_interactive_start(user.as_str(), None::<String>)
        .await
        .context("the SSH login failed")?;
    loop {
        match answer {
            KeyboardInteractiveAuthResponse::Success => break,
            KeyboardInteractiveAuthResponse::Failure { .. } => {
                return Err(crate::apps::Failed("the ssh proxy refused the login".into()).into());
            }
            // a request that asks nothing is the proxy saying why it refuses
            KeyboardInteractiveAuthResponse::InfoRequest {
                instructions,
                prompts,
                ..
            } if prompts.is_empty() => {
                let why = instructions.trim_start_matches("diego: ").to_string();
                return Err(crate::apps::Failed(why).into());
            }
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts.iter().map(|_| code.code.clone()).collect();
                answer = session
                    .authenticate_keyboard_interactive_respond(answers)
                    .await
                    .context("the SSH login failed")?;
            }
        }
    }
    let session = Arc::new(session);
    for forward in forwards {
        let listener = tokio::net::TcpListener::bind((forward.bind.as_str(), forward.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", forward.bind, forward.port))?;
        tokio::spawn(serve_forward(session.clone(), listener, forward));
    }
    if args.no_command {
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        let _ = session.disconnect(Disconnect::ByApplication, "", "").await;
        return Ok(());
    }
    let status = run_session(&session, &args).await?;
    let _ = session.disconnect(Disconnect::ByApplication, "", "").await;
    match u8::try_from(status) {
        Ok(0) => Ok(()),
        Ok(code) => Err(RemoteExit(code).into()),
        Err(_) => Err(RemoteExit(255).into()),
    }
}

/// Accepts local connections and carries each through the proxy to the instance's port.
async fn serve_forward(
    session: Arc<client::Handle<Client>>,
    listener: tokio::net::TcpListener,
    forward: Forward,
) {
    loop {
        let Ok((mut local, peer)) = listener.accept().await else {
            return;
        };
        let session = session.clone();
        let forward = forward.clone();
        tokio::spawn(async move {
            let channel = session
                .channel_open_direct_tcpip(
                    forward.host.as_str(),
                    u32::from(forward.host_port),
                    peer.ip().to_string(),
                    u32::from(peer.port()),
                )
                .await;
            match channel {
                Ok(channel) => {
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut stream).await;
                }
                Err(e) => eprintln!(
                    "diego ssh: cannot forward to {}:{}: {e}",
                    forward.host, forward.host_port
                ),
            }
        });
    }
}

/// A shell or the command, on a terminal when there should be one; its exit status.
async fn run_session(session: &client::Handle<Client>, args: &SshArgs) -> anyhow::Result<u32> {
    let mut channel = session
        .channel_open_session()
        .await
        .context("cannot open an SSH session")?;
    let interactive = std::io::stdin().is_terminal();
    let tty = !args.no_tty && (args.tty || (args.command.is_none() && interactive));
    let _raw = if tty {
        let (cols, rows) = terminal_size().unwrap_or((80, 24));
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        channel
            .request_pty(false, &term, cols, rows, 0, 0, &[])
            .await
            .context("cannot ask for a terminal")?;
        if interactive {
            Some(RawMode::enter()?)
        } else {
            None
        }
    } else {
        None
    };
    match &args.command {
        Some(command) => channel.exec(true, command.as_str()).await,
        None => channel.request_shell(true).await,
    }
    .context("cannot start the remote shell or command")?;

    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot watch the terminal's size")?;
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut buf = vec![0u8; 16 * 1024];
    let mut stdin_open = true;
    let mut status = None;
    loop {
        tokio::select! {
            read = stdin.read(&mut buf), if stdin_open => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    let _ = channel.eof().await;
                }
                Ok(n) => {
                    if channel.data_bytes(bytes::Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        stdin_open = false;
                    }
                }
            },
            _ = winch.recv(), if tty => {
                if let Some((cols, rows)) = terminal_size() {
                    let _ = channel.window_change(cols, rows, 0, 0).await;
                }
            }
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    stdout.write_all(&data).await?;
                    stdout.flush().await?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    stderr.write_all(&data).await?;
                    stderr.flush().await?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
        }
    }
    status.context("the session ended without an exit status (the connection was lost)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_as_openssh_writes_them() {
        assert_eq!(
            parse_forward("9000:localhost:8080").unwrap(),
            Forward {
                bind: "127.0.0.1".into(),
                port: 9000,
                host: "localhost".into(),
                host_port: 8080
            }
        );
        assert_eq!(parse_forward("0.0.0.0:1:h:2").unwrap().bind, "0.0.0.0");
        for bad in ["9000", "9000:localhost", "x:localhost:8080", "1:h:99999"] {
            assert!(parse_forward(bad).is_err(), "{bad} accepted");
        }
    }
}
