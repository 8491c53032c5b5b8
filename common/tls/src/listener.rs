//! [`Listener`]: what the parts' servers accept connections with, TLS or plain, for
//! `axum::serve` (graceful shutdown and all unchanged).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::Tls;

/// How long a client has to complete its TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; beyond this no connection is accepted until one finishes,
/// so clients that connect and stall cost bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// What a plain HTTP request to a TLS port gets before the connection is closed (as Go's
/// servers answer), so `curl http://…` says what is wrong instead of "connection reset".
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.";

/// A TCP listener that serves TLS (a client certificate signed by the platform's CA required)
/// when made with a [`Tls`], and plain HTTP without. Implements `axum::serve::Listener`.
///
/// TLS handshakes run concurrently, each bounded by [`HANDSHAKE_TIMEOUT`], so a client that
/// connects and says nothing holds up no one. A refused handshake (no certificate, another CA,
/// plain HTTP) is logged with the peer's address and never reaches the service.
pub struct Listener {
    tcp: TcpListener,
    acceptor: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(Stream, SocketAddr)>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.is_tls())
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl Listener {
    /// Serves TLS on `tcp` with `tls`, plain HTTP without.
    pub fn new(tcp: TcpListener, tls: Option<&Tls>) -> Listener {
        Listener {
            tcp,
            acceptor: tls.map(|tls| TlsAcceptor::from(tls.server_config())),
            handshakes: JoinSet::new(),
        }
    }

    /// Binds `addr` and serves as [`Listener::new`] does.
    pub async fn bind(addr: SocketAddr, tls: Option<&Tls>) -> io::Result<Listener> {
        Ok(Self::new(TcpListener::bind(addr).await?, tls))
    }

    pub fn is_tls(&self) -> bool {
        self.acceptor.is_some()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// `https://ADDR` or `http://ADDR`, as clients on this machine reach it.
    pub fn url(&self) -> io::Result<String> {
        let scheme = if self.is_tls() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// The next connection ready to serve: accepted, and with TLS handshaken.
    async fn next(&mut self) -> (Stream, SocketAddr) {
        let Some(acceptor) = self.acceptor.clone() else {
            loop {
                match self.tcp.accept().await {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        return (Stream::Plain(tcp), peer);
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        };
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((tcp, peer)) => {
                            let _ = tcp.set_nodelay(true);
                            self.handshakes.spawn(handshake(acceptor.clone(), tcp, peer));
                        }
                        Err(e) => accept_failed(e).await,
                    }
                }
            }
        }
    }
}

impl From<TcpListener> for Listener {
    /// A plain listener.
    fn from(tcp: TcpListener) -> Listener {
        Listener::new(tcp, None)
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Stream, SocketAddr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Per-connection errors (the peer went away) need nothing; others (out of file descriptors)
/// get a pause so the loop does not spin, as `axum::serve` does.
async fn accept_failed(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(Stream, SocketAddr)> {
    let shake = async {
        let mut first = [0u8; 1];
        // Waits for the client's first byte without consuming it.
        if tcp.peek(&mut first).await? == 0 {
            // a TCP health check or a port probe: nothing to refuse, nothing worth a log line
            return Ok(None);
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            let mut tcp = tcp;
            let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = tcp.shutdown().await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "plain HTTP sent to a TLS port",
            ));
        }
        acceptor.accept(tcp).await.map(Some)
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
        Ok(Ok(Some(tls))) => Some((Stream::Tls(Box::new(tls)), peer)),
        Ok(Ok(None)) => {
            tracing::debug!(%peer, "connection closed before a TLS handshake");
            None
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS connection refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

/// A served connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
