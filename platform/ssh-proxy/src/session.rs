//! A session channel (shell or command), carried to the instance's rep: the client's requests
//! are collected until `shell` or `exec`, the rep opens the session in the instance, then input,
//! window changes and signals go one way and output and the exit status the other.

use std::sync::Arc;

use diego_rep_client::RepClient;
use diego_rep_client::ssh::{Frame, SessionRequest, Terminal};
use futures::{SinkExt, StreamExt};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelWriteHalf, Sig};

use crate::server::Shared;
use crate::target::Target;

/// The exit status a session reports when the instance's side is lost (OpenSSH's for a
/// connection error).
const LOST: u32 = 255;

/// Serves one session channel until the process exits or the client closes it.
pub(crate) async fn serve(channel: Channel<Msg>, target: Arc<Target>, shared: Arc<Shared>) {
    let (mut read, write) = channel.split();
    let mut request = SessionRequest::default();
    loop {
        match read.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                request.terminal = Some(Terminal {
                    term,
                    cols: dimension(col_width),
                    rows: dimension(row_height),
                });
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(t) = request.terminal.as_mut() {
                    t.cols = dimension(col_width);
                    t.rows = dimension(row_height);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => request
                .env
                .push(format!("{variable_name}={variable_value}")),
            Some(ChannelMsg::RequestShell { .. }) => break,
            Some(ChannelMsg::Exec { command, .. }) => {
                request.command = Some(String::from_utf8_lossy(&command).into_owned());
                break;
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                let message = format!(
                    "the {name} subsystem is not offered; run a command instead (e.g. `ssh ... cat FILE`)"
                );
                fail(&write, &message).await;
                return;
            }
            Some(_) => {}
        }
    }

    let rep = RepClient::with_http(shared.rep_http.clone(), &target.rep_url);
    let opened = rep
        .open_ssh_session(
            &target.process_guid,
            &target.instance_guid,
            &shared.rep_secret,
            &request,
        )
        .await;
    let framed = match opened {
        Ok(framed) => framed,
        Err(e) => {
            let why = match &e {
                diego_rep_client::RepClientError::Status { message, .. } => message.clone(),
                e => e.to_string(),
            };
            tracing::warn!(
                process_guid = %target.process_guid,
                index = target.index,
                error = %e,
                "SSH session refused by the cell"
            );
            let message = format!(
                "cannot start a session in instance {} of {}: {why}",
                target.index, target.what
            );
            fail(&write, &message).await;
            return;
        }
    };
    tracing::info!(
        process_guid = %target.process_guid,
        index = target.index,
        instance_guid = %target.instance_guid,
        terminal = request.terminal.is_some(),
        "SSH session opened"
    );
    let (mut to_rep, mut from_rep) = framed.split();
    let upstream = async {
        while let Some(message) = read.wait().await {
            let frame = match message {
                ChannelMsg::Data { data } => Frame::Stdin(data),
                ChannelMsg::Eof => Frame::StdinEof,
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => Frame::Resize {
                    cols: dimension(col_width),
                    rows: dimension(row_height),
                },
                ChannelMsg::Signal { signal } => match signal_number(&signal) {
                    Some(n) => Frame::Signal(n),
                    None => continue,
                },
                ChannelMsg::Close => break,
                _ => continue,
            };
            if to_rep.send(frame).await.is_err() {
                break;
            }
        }
    };
    let downstream = async {
        while let Some(frame) = from_rep.next().await {
            let sent = match frame {
                Ok(Frame::Stdout(data)) => write.data_bytes(data).await,
                Ok(Frame::Stderr(data)) => write.extended_data_bytes(1, data).await,
                Ok(Frame::Exit(code)) => return Some(code),
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "SSH session connection to the cell broke");
                    return None;
                }
            };
            if sent.is_err() {
                return None;
            }
        }
        None
    };
    let exited = tokio::select! {
        code = downstream => Some(code),
        // the client closed the channel: dropping the connection to the rep hangs up
        () = upstream => None,
    };
    let Some(code) = exited else {
        tracing::info!(process_guid = %target.process_guid, index = target.index, "SSH session closed by the client");
        return;
    };
    let status = match code {
        Some(code) => u32::try_from(code).unwrap_or(LOST),
        None => {
            let _ = write
                .extended_data_bytes(
                    1,
                    "diego: the session's connection to the cell was lost\r\n",
                )
                .await;
            LOST
        }
    };
    tracing::info!(process_guid = %target.process_guid, index = target.index, status, "SSH session ended");
    let _ = write.eof().await;
    let _ = write.exit_status(status).await;
    let _ = write.close().await;
}

/// Tells the client why on its stderr, and ends the channel with status 1.
async fn fail(write: &ChannelWriteHalf<Msg>, message: &str) {
    let _ = write
        .extended_data_bytes(1, format!("diego: {message}\r\n"))
        .await;
    let _ = write.eof().await;
    let _ = write.exit_status(1).await;
    let _ = write.close().await;
}

/// A terminal dimension from the client (which may send 0 or nonsense).
fn dimension(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The Linux number of an SSH signal name.
fn signal_number(signal: &Sig) -> Option<i32> {
    Some(match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => 12,
            "CONT" => 18,
            "STOP" => 19,
            "TSTP" => 20,
            "WINCH" => 28,
            _ => return None,
        },
    })
}
