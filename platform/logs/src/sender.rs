//! The producer's side: a non-blocking, batching sender that never stalls its caller.
//!
//! A cell must keep running its containers whether or not the log server is up, so `send`
//! never waits: lines go into a bounded queue that a background task drains in batches. When
//! the queue is full, or a batch cannot be delivered after a few tries, lines are dropped and
//! counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::envelope::{LogEnvelope, trim_line_end, truncate_message};
use crate::server::MAX_BATCH_BYTES;

/// Lines waiting to be sent; more are dropped.
const QUEUE_LINES: usize = 10_000;
/// A batch is sent when it has this many lines...
const BATCH_LINES: usize = 1_000;
/// ...or about this many bytes (half the server's limit, so JSON overhead never tips it)...
const BATCH_BYTES: usize = MAX_BATCH_BYTES / 2;
/// ...or this long after the last send.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Messages are cut to the server's default limit before they are queued.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Tries per batch before it is dropped, and the wait before the first retry (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Per POST, so a server that accepts but never answers cannot hold batches forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Message {
    Line(LogEnvelope),
    Flush(oneshot::Sender<()>),
}

/// Sends log lines to a log server in batches. Cheap to clone; clones share one queue.
#[derive(Debug, Clone)]
pub struct LogSender {
    queue: Option<mpsc::Sender<Message>>,
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    /// Starts the background task that posts batches to `base_url` (e.g. `http://10.0.0.1:8080`).
    /// Outside a tokio runtime there is nowhere to run it, so the sender is disabled (with a
    /// warning) rather than panicking.
    pub fn spawn(base_url: &str) -> LogSender {
        Self::spawn_with_tls(base_url, None)
    }

    /// As [`LogSender::spawn`], presenting `tls`'s identity to a log server serving mutual TLS.
    pub fn spawn_with_tls(base_url: &str, tls: Option<&diego_tls::Tls>) -> LogSender {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!("LogSender::spawn called outside a tokio runtime; logs are discarded");
            return LogSender::disabled();
        };
        let (tx, rx) = mpsc::channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let batcher = Batcher {
            url: format!("{}/v1/logs", base_url.trim_end_matches('/')),
            http: diego_tls::client_builder(tls)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            dropped: Arc::clone(&dropped),
        };
        runtime.spawn(batcher.run(rx));
        LogSender {
            queue: Some(tx),
            dropped,
        }
    }

    /// A sender with no server: every line is discarded (and not counted as dropped).
    pub fn disabled() -> LogSender {
        LogSender {
            queue: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues one line without waiting; when the queue is full the line is dropped and counted.
    pub fn send(&self, mut line: LogEnvelope) {
        let Some(queue) = &self.queue else {
            return;
        };
        trim_line_end(&mut line.message);
        truncate_message(&mut line.message, MAX_MESSAGE_BYTES);
        if queue.try_send(Message::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every line queued before this call has been posted (or dropped). Useful
    /// before exiting, so the last lines of a task are not lost.
    pub async fn flush(&self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Lines dropped so far: the queue was full, or their batch could not be delivered.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The background task: collects lines into batches and posts them.
struct Batcher {
    url: String,
    http: reqwest::Client,
    dropped: Arc<AtomicU64>,
}

impl Batcher {
    async fn run(self, mut queue: mpsc::Receiver<Message>) {
        let mut batch: Vec<LogEnvelope> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = queue.recv() => match message {
                    Some(Message::Line(line)) => {
                        // The JSON of a line is its strings plus ~100 bytes of field names.
                        batch_bytes += line.message.len() + line.log_guid.len()
                            + line.source_type.len() + line.instance.len() + 128;
                        batch.push(line);
                        if batch.len() >= BATCH_LINES || batch_bytes >= BATCH_BYTES {
                            self.post(std::mem::take(&mut batch)).await;
                            batch_bytes = 0;
                        }
                    }
                    Some(Message::Flush(done)) => {
                        self.post(std::mem::take(&mut batch)).await;
                        batch_bytes = 0;
                        let _ = done.send(());
                    }
                    None => {
                        // Every sender is gone: deliver what is left and stop.
                        self.post(std::mem::take(&mut batch)).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.post(std::mem::take(&mut batch)).await;
                    batch_bytes = 0;
                }
            }
        }
    }

    /// Posts one batch, retrying with backoff; drops and counts it if it cannot be delivered.
    async fn post(&self, batch: Vec<LogEnvelope>) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.http.post(&self.url).json(&batch).send().await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) if response.status().is_client_error() => {
                    // The server refused the batch itself; sending it again cannot help.
                    let status = response.status();
                    let message = response.text().await.unwrap_or_default();
                    warn!(%status, %message, lines = batch.len(), "the log server refused a batch; dropping it");
                    break;
                }
                Ok(response) => {
                    debug!(status = %response.status(), attempt, "posting logs failed");
                }
                Err(e) => debug!(error = %e, attempt, "posting logs failed"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            } else {
                warn!(url = %self.url, lines = batch.len(), "the log server is unreachable; dropping a batch");
            }
        }
        self.dropped.fetch_add(
            u64::try_from(batch.len()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}
