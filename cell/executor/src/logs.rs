//! Log lines: every line a process writes and every progress message, tagged with the source
//! (`APP/PROC/WEB`, `STG`, `CELL`, ...) and instance, fanned out to subscribers.
//!
//! Fan-out is a bounded [`tokio::sync::broadcast`] channel: a slow subscriber never slows the
//! processes down; when it falls more than the buffer behind it gets
//! [`LogEvent::Dropped`] with how many lines it missed, never a silent gap.

use std::time::SystemTime;

use tokio::sync::broadcast;

/// Longest message of one line; longer lines are split (Diego's log streamer does the same).
pub const MAX_LINE_BYTES: usize = 61_440;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output (and progress messages).
    Stdout,
    /// Standard error (and failure messages).
    Stderr,
}

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The log guid of the LRP or Task (where the line is routed).
    pub log_guid: String,
    /// Source tag: the run context's default, or the nearest enclosing action's `log_source`.
    pub source_type: String,
    /// Instance: an LRP's index, or a guid.
    pub instance: String,
    /// stdout or stderr.
    pub stream: LogStream,
    /// When the executor saw the line.
    pub timestamp: SystemTime,
    /// The line, without its newline.
    pub message: String,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// A line.
    Line(LogLine),
    /// This subscriber fell behind and missed this many lines.
    Dropped(u64),
}

/// Fans log lines out to subscribers.
#[derive(Debug, Clone)]
pub struct LogHub {
    tx: broadcast::Sender<LogLine>,
}

impl LogHub {
    /// A hub buffering at most `capacity` lines per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        LogHub { tx }
    }

    /// Subscribes to every line published from now on.
    pub fn subscribe(&self) -> LogSubscription {
        LogSubscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Publishes a line (dropped if nobody listens).
    pub fn publish(&self, line: LogLine) {
        tracing::trace!(source = %line.source_type, message = %line.message, "log line");
        let _ = self.tx.send(line);
    }
}

/// One subscriber's view of a [`LogHub`].
#[derive(Debug)]
pub struct LogSubscription {
    rx: broadcast::Receiver<LogLine>,
}

impl LogSubscription {
    /// The next line, or a notice of how many were dropped; `None` when the hub is gone.
    pub async fn recv(&mut self) -> Option<LogEvent> {
        match self.rx.recv().await {
            Ok(line) => Some(LogEvent::Line(line)),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(LogEvent::Dropped(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<LogEvent> {
        match self.rx.try_recv() {
            Ok(line) => Some(LogEvent::Line(line)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(LogEvent::Dropped(n)),
            Err(_) => None,
        }
    }
}

/// Where a step's lines go, with the tags they carry.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    pub hub: LogHub,
    pub log_guid: String,
    pub source_type: String,
    pub instance: String,
}

impl Emitter {
    pub fn with_source(&self, source: &str) -> Emitter {
        if source.is_empty() {
            return self.clone();
        }
        Emitter {
            source_type: source.to_string(),
            ..self.clone()
        }
    }

    /// Publishes each line of `message` (a trailing newline is not an empty line).
    pub fn emit(&self, stream: LogStream, message: &str) {
        let mut buffer = LineBuffer::default();
        buffer.push(message.as_bytes(), |line| self.emit_line(stream, line));
        buffer.flush(|line| self.emit_line(stream, line));
    }

    fn emit_line(&self, stream: LogStream, line: String) {
        self.hub.publish(LogLine {
            log_guid: self.log_guid.clone(),
            source_type: self.source_type.clone(),
            instance: self.instance.clone(),
            stream,
            timestamp: SystemTime::now(),
            message: line,
        });
    }

    pub fn stdout(&self, message: &str) {
        self.emit(LogStream::Stdout, message);
    }

    pub fn stderr(&self, message: &str) {
        self.emit(LogStream::Stderr, message);
    }

    /// A line buffer feeding this emitter.
    pub fn line_writer(&self, stream: LogStream) -> LineWriter {
        LineWriter {
            emitter: self.clone(),
            stream,
            buffer: LineBuffer::default(),
        }
    }
}

/// Splits a byte stream into lines, keeping a partial last line until more arrives.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    pub fn push(&mut self, mut bytes: &[u8], mut line: impl FnMut(String)) {
        while let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&bytes[..i]);
            bytes = &bytes[i + 1..];
            let whole = std::mem::take(&mut self.partial);
            Self::split_long(&whole, &mut line);
        }
        self.partial.extend_from_slice(bytes);
        while self.partial.len() >= MAX_LINE_BYTES {
            let rest = self.partial.split_off(MAX_LINE_BYTES);
            let head = std::mem::replace(&mut self.partial, rest);
            line(String::from_utf8_lossy(&head).into_owned());
        }
    }

    /// Emits what is left (the last line had no newline).
    pub fn flush(&mut self, mut line: impl FnMut(String)) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            Self::split_long(&whole, &mut line);
        }
    }

    fn split_long(bytes: &[u8], line: &mut impl FnMut(String)) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            line(String::new());
            return;
        }
        for chunk in bytes.chunks(MAX_LINE_BYTES) {
            line(String::from_utf8_lossy(chunk).into_owned());
        }
    }
}

/// A [`LineBuffer`] bound to an emitter and a stream.
#[derive(Debug)]
pub(crate) struct LineWriter {
    emitter: Emitter,
    stream: LogStream,
    buffer: LineBuffer,
}

impl LineWriter {
    pub fn write(&mut self, bytes: &[u8]) {
        let (emitter, stream) = (&self.emitter, self.stream);
        self.buffer
            .push(bytes, |line| emitter.emit_line(stream, line));
    }

    pub fn flush(&mut self) {
        let (emitter, stream) = (&self.emitter, self.stream);
        self.buffer.flush(|line| emitter.emit_line(stream, line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut b = LineBuffer::default();
        for c in chunks {
            b.push(c, |l| out.push(l));
        }
        b.flush(|l| out.push(l));
        out
    }

    #[test]
    fn lines_are_split_on_newlines_and_partials_wait() {
        assert_eq!(
            lines(&[b"a\nb", b"c\n\nd"]),
            vec!["a".to_string(), "bc".into(), "".into(), "d".into()]
        );
        assert_eq!(lines(&[b"x\r\n"]), vec!["x".to_string()]);
        assert!(lines(&[b""]).is_empty());
        let long = vec![b'z'; MAX_LINE_BYTES + 10];
        let got = lines(&[&long]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[1].len(), 10);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_many_lines_it_missed() {
        let hub = LogHub::new(4);
        let mut sub = hub.subscribe();
        let e = Emitter {
            hub: hub.clone(),
            log_guid: "g".into(),
            source_type: "APP".into(),
            instance: "0".into(),
        };
        for i in 0..10 {
            e.stdout(&format!("line {i}\n"));
        }
        assert_eq!(sub.recv().await, Some(LogEvent::Dropped(6)));
        match sub.recv().await {
            Some(LogEvent::Line(l)) => {
                assert_eq!(
                    (l.message.as_str(), l.source_type.as_str()),
                    ("line 6", "APP")
                )
            }
            other => panic!("{other:?}"),
        }
        let s = e.with_source("STG");
        s.stderr("oops");
        let mut last = None;
        while let Some(ev) = sub.try_recv() {
            last = Some(ev);
        }
        match last {
            Some(LogEvent::Line(l)) => {
                assert_eq!(
                    (l.source_type.as_str(), l.stream, l.message.as_str()),
                    ("STG", LogStream::Stderr, "oops")
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
