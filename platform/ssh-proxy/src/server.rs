//! The SSH side: one [`Connection`] per client. A login is a user name naming an instance and
//! a one-time code as its password (keyboard-interactive, so a refusal can say why; plain
//! `password` works too); once in, session channels go to the instance's rep
//! ([`crate::session`]) and `direct-tcpip` channels (`ssh -L`) to the instance's ports.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use diego_bbs_client::BbsClient;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Response, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};

use crate::codes::CodeStore;
use crate::target::{self, Target};

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub bbs: BbsClient,
    /// To the reps, with no overall timeout (it would cut sessions).
    pub rep_http: reqwest::Client,
    /// The cells' SSH secret.
    pub rep_secret: String,
    pub codes: Arc<CodeStore>,
}

/// The prompt of the keyboard-interactive login (it has "assword" in it, which tools that type
/// passwords, such as `sshpass`, look for).
const PROMPT: &str = "Password (a one-time code from `diego ssh-code APP`): ";

/// How long connecting to a forwarded port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One client connection.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// The instance, once logged in.
    target: Option<Arc<Target>>,
    /// Why the login was refused, once it was: said once (keyboard-interactive instructions),
    /// then the connection ends. OpenSSH would otherwise try every method again (an empty
    /// list of methods that can continue means "any" to it), prompting for the code anew.
    refusal: Option<String>,
}

impl Connection {
    pub(crate) fn new(shared: Arc<Shared>, peer: Option<SocketAddr>) -> Self {
        Connection {
            shared,
            peer,
            target: None,
            refusal: None,
        }
    }

    /// Checks `code` for `user` and finds the instance; the error is what the user reads.
    async fn login(&mut self, user: &str, code: &str) -> Result<Auth, String> {
        let login = target::parse_login(user).map_err(|e| e.to_string())?;
        let bbs = &self.shared.bbs;
        let process_guid = target::process_guid_of(bbs, &login)
            .await
            .map_err(|e| e.to_string())?;
        self.shared
            .codes
            .redeem(code, &process_guid)
            .map_err(|e| e.to_string())?;
        let index = match login {
            target::Login::Process { index, .. } | target::Login::App { index, .. } => index,
        };
        let target = target::resolve(bbs, &process_guid, index)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            peer = ?self.peer,
            process_guid = %target.process_guid,
            index,
            instance_guid = %target.instance_guid,
            cell_id = %target.cell_id,
            "SSH login"
        );
        self.target = Some(Arc::new(target));
        Ok(Auth::Accept)
    }

    fn refuse(&mut self, user: &str, why: String) {
        tracing::warn!(peer = ?self.peer, user, reason = %why, "SSH login refused");
        self.refusal = Some(why);
    }
}

/// A keyboard-interactive request that only says `why` (OpenSSH prints a request's
/// instructions); the client answers it with nothing.
fn say(why: &str) -> Auth {
    Auth::Partial {
        name: Cow::Borrowed(""),
        instructions: Cow::Owned(format!("diego: {why}")),
        prompts: Cow::Owned(Vec::new()),
    }
}

/// The methods a login may use.
pub(crate) fn methods() -> MethodSet {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::KeyboardInteractive);
    methods.push(MethodKind::Password);
    methods
}

/// A forward to `host` reaches the instance itself.
fn is_instance(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" | "")
}

fn prohibited(reason: String) -> ChannelOpenFailure {
    ChannelOpenFailure::Other { code: 1, reason }
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.refusal.is_none() {
            match self.login(user, password).await {
                Ok(auth) => return Ok(auth),
                Err(why) => self.refuse(user, why),
            }
        }
        // on to keyboard-interactive, where the refusal can be said
        let mut next = MethodSet::empty();
        next.push(MethodKind::KeyboardInteractive);
        Ok(Auth::Reject {
            proceed_with_methods: Some(next),
            partial_success: false,
        })
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut answers) = response else {
            return Ok(match &self.refusal {
                // refused on the password method: said here
                Some(why) => say(why),
                None => Auth::Partial {
                    name: Cow::Borrowed(""),
                    instructions: Cow::Borrowed(""),
                    prompts: Cow::Owned(vec![(Cow::Borrowed(PROMPT), false)]),
                },
            });
        };
        if self.refusal.is_some() {
            // the refusal was said: the connection ends (the client prints that it closed)
            return Err(russh::Error::Disconnect);
        }
        let code = answers
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(match self.login(user, &code).await {
            Ok(auth) => auth,
            Err(why) => {
                let said = say(&why);
                self.refuse(user, why);
                said
            }
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(target) = self.target.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(crate::session::serve(channel, target, self.shared.clone()));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(target) = self.target.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let refuse = |why: String| {
            tracing::warn!(
                process_guid = %target.process_guid,
                index = target.index,
                host_to_connect,
                port_to_connect,
                reason = %why,
                "SSH forward refused"
            );
            prohibited(format!("diego: {why}"))
        };
        if !is_instance(host_to_connect) {
            let why = format!(
                "only the instance's own ports can be forwarded (asked for {host_to_connect}:{port_to_connect}; use localhost:PORT)"
            );
            reply.reject(refuse(why)).await;
            return Ok(());
        }
        let Some(host_port) = target.host_port(port_to_connect) else {
            let why = format!(
                "instance {} of {} does not expose port {port_to_connect} (it exposes {:?})",
                target.index,
                target.what,
                target.exposed()
            );
            reply.reject(refuse(why)).await;
            return Ok(());
        };
        let addr = format!("{}:{host_port}", target.address);
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await;
        let mut tcp = match connected {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let why = format!("cannot reach port {port_to_connect} of the instance: {e}");
                reply.reject(refuse(why)).await;
                return Ok(());
            }
            Err(_) => {
                let why = format!("port {port_to_connect} of the instance does not answer");
                reply.reject(refuse(why)).await;
                return Ok(());
            }
        };
        reply.accept().await;
        tracing::info!(
            process_guid = %target.process_guid,
            index = target.index,
            port = port_to_connect,
            "SSH forward opened"
        );
        tokio::spawn(async move {
            let mut stream = channel.into_stream();
            if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await {
                tracing::debug!(error = %e, "SSH forward ended");
            }
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // the session's task takes the request from its channel; here only the answer
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}
