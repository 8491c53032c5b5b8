//! Log lines leave the cell: every line the executor tags (apps' and tasks' output, progress
//! messages), staging's `STG` lines and Diego's `CELL` lines go to the log server as
//! [`LogEnvelope`]s through one batching [`LogSender`] (which never blocks a caller; without a
//! `logs_url` lines are only traced).

use std::time::UNIX_EPOCH;

use diego_executor::{LogEvent, LogLine, LogSubscription};
use diego_logs::{LogEnvelope, LogSender, LogStream};
use tokio_util::sync::CancellationToken;

/// The source of Diego's own lines about an instance's container.
pub(crate) const CELL_LOG_SOURCE: &str = "CELL";

/// The cell's way out for log lines.
#[derive(Debug)]
pub(crate) struct CellLogs {
    sender: LogSender,
}

impl CellLogs {
    /// Ships to the log server at `url` (presenting `tls`'s identity), or nowhere.
    pub fn new(url: Option<&str>, tls: Option<&diego_tls::Tls>) -> CellLogs {
        let sender = match url {
            Some(url) if !url.trim().is_empty() => LogSender::spawn_with_tls(url, tls),
            _ => LogSender::disabled(),
        };
        CellLogs { sender }
    }

    /// Ships one line; a line without a log guid has nowhere to go and is dropped.
    pub fn emit(
        &self,
        log_guid: &str,
        source_type: &str,
        instance: &str,
        stream: LogStream,
        message: &str,
    ) {
        if log_guid.is_empty() {
            return;
        }
        tracing::debug!(log_guid, source_type, instance, message, "log line");
        self.sender.send(LogEnvelope::new(
            log_guid,
            source_type,
            instance,
            stream,
            message,
        ));
    }

    /// A `[CELL/<instance>]` line.
    pub fn cell(&self, log_guid: &str, instance: &str, message: &str) {
        self.emit(
            log_guid,
            CELL_LOG_SOURCE,
            instance,
            LogStream::Stdout,
            message,
        );
    }

    fn emit_executor_line(&self, line: LogLine) {
        if line.log_guid.is_empty() {
            return;
        }
        let stream = match line.stream {
            diego_executor::LogStream::Stdout => LogStream::Stdout,
            diego_executor::LogStream::Stderr => LogStream::Stderr,
        };
        let timestamp = line
            .timestamp
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.sender.send(LogEnvelope {
            log_guid: line.log_guid,
            source_type: line.source_type,
            instance: line.instance,
            message: line.message,
            stream,
            timestamp,
        });
    }

    /// Waits until every line shipped so far has been posted (or dropped).
    pub async fn flush(&self) {
        self.sender.flush().await;
    }
}

/// Ships every executor line until `done`, then what is already buffered, then flushes.
pub(crate) async fn forward_executor_lines(
    logs: std::sync::Arc<CellLogs>,
    mut lines: LogSubscription,
    done: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            event = lines.recv() => event,
            () = done.cancelled() => break,
        };
        match event {
            Some(LogEvent::Line(line)) => logs.emit_executor_line(line),
            Some(LogEvent::Dropped(n)) => {
                tracing::warn!(missed = n, "log forwarding fell behind the executor");
            }
            None => break,
        }
    }
    while let Some(event) = lines.try_recv() {
        if let LogEvent::Line(line) = event {
            logs.emit_executor_line(line);
        }
    }
    logs.flush().await;
}
