//! Access logs: one line per proxied request in gorouter's format, handed to an [`AccessLog`]
//! sink that sends it to the app's log stream (`[RTR/N]`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One access-log line for an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// The app's log guid (the endpoint's `log_guid`).
    pub log_guid: String,
    /// The router's index: the `N` of `[RTR/N]`.
    pub router_index: u32,
    pub message: String,
    /// When the request arrived, ns since the epoch.
    pub timestamp_ns: i64,
}

/// Where access-log lines go (the log system's sender, or a test's collector).
pub trait AccessLog: Send + Sync + 'static {
    fn record(&self, entry: AccessLogEntry);
}

/// Router lines go to the app's log stream as `RTR` lines of this router's index.
impl AccessLog for diego_logs::LogSender {
    fn record(&self, entry: AccessLogEntry) {
        self.send(diego_logs::LogEnvelope {
            log_guid: entry.log_guid,
            source_type: "RTR".into(),
            instance: entry.router_index.to_string(),
            message: entry.message,
            stream: diego_logs::LogStream::Stdout,
            timestamp: entry.timestamp_ns,
        });
    }
}

/// What one request's line is made of.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub host: String,
    pub started: SystemTime,
    pub method: String,
    pub path_and_query: String,
    pub version: String,
    pub status: u16,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub referer: String,
    pub user_agent: String,
    pub client: String,
    pub endpoint: String,
    pub x_forwarded_for: String,
    pub x_forwarded_proto: String,
    pub vcap_request_id: String,
    pub response_time: Duration,
    pub app_id: String,
    pub app_index: String,
    pub instance_id: String,
}

fn quoted(s: &str) -> String {
    if s.is_empty() {
        "\"-\"".to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\\\""))
    }
}

impl RequestRecord {
    /// The line as gorouter writes it.
    pub fn line(&self) -> String {
        format!(
            "{host} - [{time}] \"{method} {path} {version}\" {status} {received} {sent} {referer} \
             {agent} {client} {endpoint} x_forwarded_for:{xff} x_forwarded_proto:{xfp} \
             vcap_request_id:{rid} response_time:{rt:.6} app_id:{app} app_index:{index} \
             instance_id:{instance}",
            host = self.host,
            time = rfc3339_nanos(self.started),
            method = self.method,
            path = self.path_and_query,
            version = self.version,
            status = self.status,
            received = self.bytes_received,
            sent = self.bytes_sent,
            referer = quoted(&self.referer),
            agent = quoted(&self.user_agent),
            client = quoted(&self.client),
            endpoint = quoted(&self.endpoint),
            xff = quoted(&self.x_forwarded_for),
            xfp = quoted(&self.x_forwarded_proto),
            rid = quoted(&self.vcap_request_id),
            rt = self.response_time.as_secs_f64(),
            app = quoted(&self.app_id),
            index = quoted(&self.app_index),
            instance = quoted(&self.instance_id),
        )
    }
}

/// ns since the epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `2024-05-01T12:00:00.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 5);
        assert_eq!(rfc3339_nanos(t), "2024-05-01T12:00:00.000000005Z");
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339_nanos(leap).starts_with("2000-02-29T"));
    }

    #[test]
    fn lines_look_like_gorouter_s() {
        let record = RequestRecord {
            host: "app.dev.local".into(),
            started: UNIX_EPOCH,
            method: "GET".into(),
            path_and_query: "/x?y=1".into(),
            version: "HTTP/1.1".into(),
            status: 200,
            bytes_received: 0,
            bytes_sent: 12,
            referer: String::new(),
            user_agent: "curl/8".into(),
            client: "127.0.0.1:5000".into(),
            endpoint: "10.0.0.1:61001".into(),
            x_forwarded_for: "127.0.0.1".into(),
            x_forwarded_proto: "http".into(),
            vcap_request_id: "r".into(),
            response_time: Duration::from_millis(3),
            app_id: "p".into(),
            app_index: "2".into(),
            instance_id: "i".into(),
        };
        let line = record.line();
        assert!(
            line.starts_with(
                "app.dev.local - [1970-01-01T00:00:00.000000000Z] \"GET /x?y=1 HTTP/1.1\" 200 0 12 \"-\" \"curl/8\" \"127.0.0.1:5000\" \"10.0.0.1:61001\" x_forwarded_for:\"127.0.0.1\""
            ),
            "{line}"
        );
        assert!(
            line.contains("response_time:0.003000 app_id:\"p\" app_index:\"2\""),
            "{line}"
        );
    }
}
