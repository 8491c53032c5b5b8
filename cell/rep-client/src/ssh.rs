//! SSH sessions in an instance, as the ssh proxy opens them on the instance's rep.
//!
//! `POST /v1/lrps/{process_guid}/instances/{instance_guid}/ssh` with
//! `Authorization: Bearer <the cells' SSH secret>`, `Connection: Upgrade`,
//! `Upgrade: diego-ssh` and a [`SessionRequest`] as its JSON body. The rep starts the
//! process in the instance's container (as the instance's user, in its directory, with its
//! environment) and answers `101 Switching Protocols`; a refusal is an ordinary error answer
//! (404 no such instance here, 409 not running, 403 bad secret or SSH not configured, 422 the
//! process could not start). The connection then carries [`Frame`]s both ways: each is a
//! 4-byte big-endian length, then a tag byte and its payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// The `Upgrade` protocol name of a session.
pub const UPGRADE_PROTOCOL: &str = "diego-ssh";

/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// What to run in the instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionRequest {
    /// Run this with the instance's shell's `-c`; none: an interactive shell.
    pub command: Option<String>,
    /// On a terminal of this kind and size; none: on pipes (stdout and stderr apart).
    pub terminal: Option<Terminal>,
    /// `NAME=VALUE`s on top of the instance's environment (the client's `env` requests).
    pub env: Vec<String>,
}

/// A terminal asked for by the client (its `pty-req`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Terminal {
    /// `TERM`, e.g. `xterm-256color`.
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// One message of a session, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Proxy → rep: input for the process.
    Stdin(Bytes),
    /// Proxy → rep: the input ended.
    StdinEof,
    /// Proxy → rep: the client's window changed.
    Resize { cols: u16, rows: u16 },
    /// Proxy → rep: a signal (a Linux signal number) for the process.
    Signal(i32),
    /// Rep → proxy: output.
    Stdout(Bytes),
    /// Rep → proxy: error output.
    Stderr(Bytes),
    /// Rep → proxy: the process exited with this status (`128 + n`: killed by signal `n`);
    /// the last frame.
    Exit(i32),
}

const STDIN: u8 = 0;
const STDIN_EOF: u8 = 1;
const RESIZE: u8 = 2;
const SIGNAL: u8 = 3;
const STDOUT: u8 = 16;
const STDERR: u8 = 17;
const EXIT: u8 = 18;

/// [`Frame`]s on a byte stream (`tokio_util::codec::Framed::new(io, FrameCodec::default())`).
#[derive(Debug)]
pub struct FrameCodec(LengthDelimitedCodec);

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec(
            LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
        )
    }
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let Some(mut frame) = self.0.decode(src)? else {
            return Ok(None);
        };
        if frame.is_empty() {
            return Err(invalid("an empty session frame"));
        }
        let tag = frame.get_u8();
        let int = |frame: &mut BytesMut| {
            (frame.len() == 4)
                .then(|| frame.get_i32())
                .ok_or_else(|| invalid(format!("session frame {tag}: not 4 bytes")))
        };
        Ok(Some(match tag {
            STDIN => Frame::Stdin(frame.freeze()),
            STDIN_EOF => Frame::StdinEof,
            RESIZE => {
                let size = int(&mut frame)?;
                Frame::Resize {
                    cols: (size >> 16) as u16,
                    rows: size as u16,
                }
            }
            SIGNAL => Frame::Signal(int(&mut frame)?),
            STDOUT => Frame::Stdout(frame.freeze()),
            STDERR => Frame::Stderr(frame.freeze()),
            EXIT => Frame::Exit(int(&mut frame)?),
            _ => return Err(invalid(format!("unknown session frame {tag}"))),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        let mut body = BytesMut::new();
        match frame {
            Frame::Stdin(data) => {
                body.put_u8(STDIN);
                body.put(data);
            }
            Frame::StdinEof => body.put_u8(STDIN_EOF),
            Frame::Resize { cols, rows } => {
                body.put_u8(RESIZE);
                body.put_u16(cols);
                body.put_u16(rows);
            }
            Frame::Signal(n) => {
                body.put_u8(SIGNAL);
                body.put_i32(n);
            }
            Frame::Stdout(data) => {
                body.put_u8(STDOUT);
                body.put(data);
            }
            Frame::Stderr(data) => {
                body.put_u8(STDERR);
                body.put(data);
            }
            Frame::Exit(code) => {
                body.put_u8(EXIT);
                body.put_i32(code);
            }
        }
        self.0.encode(body.freeze(), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let frames = [
            Frame::Stdin(Bytes::from_static(b"ls\n")),
            Frame::StdinEof,
            Frame::Resize {
                cols: 120,
                rows: 40,
            },
            Frame::Signal(15),
            Frame::Stdout(Bytes::from_static(b"out")),
            Frame::Stderr(Bytes::new()),
            Frame::Exit(-1),
        ];
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for f in frames.clone() {
            codec.encode(f, &mut buf).unwrap();
        }
        let mut back = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);

        for bad in [&[9u8][..], &[SIGNAL, 0, 1][..], &[][..], &[RESIZE, 1][..]] {
            let mut buf = BytesMut::new();
            LengthDelimitedCodec::new()
                .encode(Bytes::copy_from_slice(bad), &mut buf)
                .unwrap();
            assert!(codec.decode(&mut buf).is_err(), "{bad:?} was accepted");
        }
    }
}
