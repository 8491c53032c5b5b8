//! The reader's side: recent lines and live streams of one app.

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use reqwest::Url;

use crate::envelope::LogEnvelope;

/// What went wrong reading logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log server URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot reach the log server at {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the log server answered {status} for {url}: {message}")]
    Server {
        url: String,
        status: u16,
        message: String,
    },
    #[error("the log server sent an unreadable envelope from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads logs from a log server.
#[derive(Debug, Clone)]
pub struct LogClient {
    base_url: String,
    http: reqwest::Client,
}

/// A stream line longer than this is not a line the server would send; the stream is ended.
const MAX_LINE_BYTES: usize = 1024 * 1024;

impl LogClient {
    pub fn new(base_url: &str) -> LogClient {
        Self::with_http(base_url, reqwest::Client::new())
    }

    /// A client presenting `tls`'s identity to a log server serving mutual TLS.
    pub fn with_tls(base_url: &str, tls: Option<&diego_tls::Tls>) -> LogClient {
        let http = diego_tls::client_builder(tls).build().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure the log client; using a default one");
            reqwest::Client::new()
        });
        Self::with_http(base_url, http)
    }

    /// A client sharing `http`'s connection pool (and its TLS identity).
    pub fn with_http(base_url: &str, http: reqwest::Client) -> LogClient {
        LogClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// `{base}/v1/logs/{guid}/{what}`, the guid percent-encoded as one path segment.
    fn url(&self, guid: &str, what: &str) -> Result<Url, LogError> {
        let invalid = |reason: String| LogError::InvalidUrl {
            url: self.base_url.clone(),
            reason,
        };
        let mut url = Url::parse(&self.base_url).map_err(|e| invalid(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| invalid("it cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend(["v1", "logs", guid, what]);
        Ok(url)
    }

    async fn get(&self, url: Url) -> Result<reqwest::Response, LogError> {
        let response =
            self.http
                .get(url.clone())
                .send()
                .await
                .map_err(|source| LogError::Request {
                    url: url.to_string(),
                    source,
                })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response.text().await.unwrap_or_default();
        Err(LogError::Server {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        })
    }

    /// The recent lines of `guid`, oldest first.
    pub async fn recent(&self, guid: &str) -> Result<Vec<LogEnvelope>, LogError> {
        let url = self.url(guid, "recent")?;
        let response = self.get(url.clone()).await?;
        let body = response.bytes().await.map_err(|source| LogError::Request {
            url: url.to_string(),
            source,
        })?;
        serde_json::from_slice(&body).map_err(|source| LogError::Decode {
            url: url.to_string(),
            source,
        })
    }

    /// Follows `guid`'s lines as they arrive (after its recent ones with `with_recent`). The
    /// stream ends when the server ends it (for instance, because this reader fell behind).
    pub async fn stream(
        &self,
        guid: &str,
        with_recent: bool,
    ) -> Result<impl Stream<Item = Result<LogEnvelope, LogError>> + use<>, LogError> {
        let mut url = self.url(guid, "stream")?;
        if with_recent {
            url.query_pairs_mut().append_pair("recent", "true");
        }
        let response = self.get(url.clone()).await?;
        let url = url.to_string();
        let state = LineReader {
            body: Box::pin(response.bytes_stream()),
            buffer: BytesMut::new(),
            url,
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut reader| async move {
            let item = reader.next_envelope().await?;
            Some((item, reader))
        }))
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>>;

/// Splits an ndjson body into envelopes.
struct LineReader {
    body: ByteStream,
    buffer: BytesMut,
    url: String,
    done: bool,
}

impl LineReader {
    async fn next_envelope(&mut self) -> Option<Result<LogEnvelope, LogError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(newline) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(newline);
                self.buffer.advance(1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(
                    serde_json::from_slice(&line).map_err(|source| LogError::Decode {
                        url: self.url.clone(),
                        source,
                    }),
                );
            }
            if self.buffer.len() > MAX_LINE_BYTES {
                self.done = true;
                return Some(Err(LogError::Server {
                    url: self.url.clone(),
                    status: 200,
                    message: format!("a stream line is longer than {MAX_LINE_BYTES} bytes"),
                }));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(source)) => {
                    self.done = true;
                    return Some(Err(LogError::Request {
                        url: self.url.clone(),
                        source,
                    }));
                }
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}
