//! The wire type of one log line and the helpers every producer shares.

use serde::{Deserialize, Serialize};

/// Which of a process's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One log line of one app (or task), as it travels between producers, the server and readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEnvelope {
    /// The app's (the LRP's or task's) `log_guid`.
    pub log_guid: String,
    /// `APP/PROC/WEB`, `STG`, `RTR`, `CELL`, `API`, `HEALTH`, ...
    pub source_type: String,
    /// The instance index (`"0"`, `"2"`) or a guid.
    pub instance: String,
    /// One line, without its trailing newline.
    pub message: String,
    pub stream: LogStream,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

impl LogEnvelope {
    /// An envelope stamped with the current time; a trailing newline of `message` is removed.
    pub fn new(
        log_guid: impl Into<String>,
        source_type: impl Into<String>,
        instance: impl Into<String>,
        stream: LogStream,
        message: impl Into<String>,
    ) -> Self {
        let mut message = message.into();
        trim_line_end(&mut message);
        LogEnvelope {
            log_guid: log_guid.into(),
            source_type: source_type.into(),
            instance: instance.into(),
            message,
            stream,
            timestamp: now_ns(),
        }
    }

    /// Loggregator's tag for the line's origin: `[APP/PROC/WEB/2]`, `[STG/0]`, `[RTR/1]`.
    pub fn tag(&self) -> String {
        format!("[{}/{}]", self.source_type, self.instance)
    }
}

/// Nanoseconds since the Unix epoch, saturating (a clock before 1970 gives 0).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Removes trailing `\n` / `\r\n` so a message is one line as the wire type promises.
pub(crate) fn trim_line_end(message: &mut String) {
    while message.ends_with('\n') || message.ends_with('\r') {
        message.pop();
    }
}

/// Cuts `message` to at most `max_bytes` (on a character boundary) and appends a marker saying
/// how much was cut, so a reader knows the line is incomplete. Returns whether it cut.
pub fn truncate_message(message: &mut String, max_bytes: usize) -> bool {
    if message.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!(" [truncated {cut} bytes]"));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_source_and_instance() {
        let e = LogEnvelope::new("g", "APP/PROC/WEB", "2", LogStream::Stdout, "hi\n");
        assert_eq!(e.tag(), "[APP/PROC/WEB/2]");
        assert_eq!(e.message, "hi");
    }

    #[test]
    fn stream_is_lowercase_on_the_wire() {
        let e = LogEnvelope::new("g", "STG", "0", LogStream::Stderr, "x");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["stream"], "stderr");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut m = "é".repeat(10); // 20 bytes
        assert!(truncate_message(&mut m, 5));
        assert!(m.starts_with("éé [truncated 16 bytes]"));
        let mut short = "abc".to_string();
        assert!(!truncate_message(&mut short, 5));
    }
}
