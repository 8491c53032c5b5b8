//! An instance's health checks: the DesiredLRP's `check_definition` (TCP and HTTP probes made
//! from the host to the container's address), else its `monitor` action, else none. Failure
//! messages are Diego's healthcheck's.
//!
//! (`diego_lifecycle_runner` has similar probes, but behind `diego_host`'s capability traits,
//! which would pull the Wasm host into the cell's rep; these are a dozen lines each.)

use std::time::Duration;

use diego_executor::error::go_duration;
use diego_executor::{Executor, RunContext};
use diego_model::desired_lrp::EnvironmentVariable;
use diego_model::{Action, Check, DesiredLrp};
use tokio_util::sync::CancellationToken;

/// Diego's default TCP connect and HTTP request timeouts.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) enum Checker {
    None,
    Checks(Vec<Check>),
    Monitor(Action),
}

/// What a check needs to reach the instance.
pub(crate) struct Target<'a> {
    pub executor: &'a Executor,
    pub handle: &'a str,
    /// The container's address; `None` when the backend gives containers no network.
    pub ip: Option<String>,
    pub env: &'a [EnvironmentVariable],
    pub http: &'a reqwest::Client,
    pub cancel: &'a CancellationToken,
}

impl Checker {
    pub fn of(desired: &DesiredLrp) -> Checker {
        match &desired.check_definition {
            Some(def) if !def.checks.is_empty() => Checker::Checks(def.checks.clone()),
            _ => match &desired.monitor {
                Some(action) => Checker::Monitor(action.clone()),
                None => Checker::None,
            },
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Checker::None)
    }

    /// The checks' own interval (the smallest `interval_ms` set), else `default`.
    pub fn interval(&self, default: Duration) -> Duration {
        let Checker::Checks(checks) = self else {
            return default;
        };
        checks
            .iter()
            .filter_map(|c| {
                let ms = c
                    .tcp_check
                    .as_ref()
                    .map(|t| t.interval_ms)
                    .or_else(|| c.http_check.as_ref().map(|h| h.interval_ms))?;
                (ms > 0).then(|| Duration::from_millis(ms))
            })
            .min()
            .unwrap_or(default)
    }

    /// Every check once: `Err` carries the first failure, worded as Diego's healthcheck.
    pub async fn check_once(&self, target: &Target<'_>) -> Result<(), String> {
        match self {
            Checker::None => Ok(()),
            Checker::Checks(checks) => {
                for check in checks {
                    if let Some(tcp) = &check.tcp_check {
                        let timeout = millis_or_default(tcp.connect_timeout_ms);
                        probe_tcp(target.ip.as_deref(), tcp.port, timeout).await?;
                    } else if let Some(http) = &check.http_check {
                        let timeout = millis_or_default(http.request_timeout_ms);
                        probe_http(target, http.port, &http.path, timeout).await?;
                    }
                }
                Ok(())
            }
            Checker::Monitor(action) => {
                let ctx = RunContext {
                    env: target.env.to_vec(),
                    cancel: target.cancel.child_token(),
                    ..RunContext::default()
                };
                target
                    .executor
                    .run(target.handle, action, ctx)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Checks every `interval` until one pass succeeds, or `timeout` (if any) runs out.
    pub async fn await_healthy(
        &self,
        target: &Target<'_>,
        interval: Duration,
        timeout: Option<Duration>,
    ) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        loop {
            let failure = match self.check_once(target).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if let Some(timeout) = timeout
                && started.elapsed() + interval > timeout
            {
                return Err(format!(
                    "Instance never healthy after {}: {failure}",
                    go_duration(timeout)
                ));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

fn millis_or_default(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_CHECK_TIMEOUT
    } else {
        Duration::from_millis(ms)
    }
}

fn port_u16(port: u32) -> Result<u16, String> {
    u16::try_from(port).map_err(|_| format!("invalid port {port}"))
}

async fn probe_tcp(ip: Option<&str>, port: u32, timeout: Duration) -> Result<(), String> {
    let fail = |why: String| format!("Failed to make TCP connection to port {port}: {why}");
    let ip = ip.ok_or_else(|| fail("the container has no network address".into()))?;
    let port16 = port_u16(port).map_err(fail)?;
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port16))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(fail(io_reason(&e))),
        Err(_) => Err(fail(format!("timed out after {}", go_duration(timeout)))),
    }
}

async fn probe_http(
    target: &Target<'_>,
    port: u32,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let fail =
        |why: String| format!("Failed to make HTTP request to '{path}' on port {port}: {why}");
    let ip = target
        .ip
        .as_deref()
        .ok_or_else(|| fail("the container has no network address".into()))?;
    let port16 = port_u16(port).map_err(fail)?;
    let response = target
        .http
        .get(format!("http://{ip}:{port16}{path}"))
        .timeout(timeout)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(fail(format!(
            "received status code {}",
            r.status().as_u16()
        ))),
        Err(e) if e.is_timeout() => Err(fail(format!("timed out after {}", go_duration(timeout)))),
        Err(e) if e.is_connect() => Err(fail(connect_reason(&e))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// "connection refused", as Go prints the common errno.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        _ => e.to_string(),
    }
}

fn connect_reason(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        source = s.source();
    }
    e.to_string()
}
