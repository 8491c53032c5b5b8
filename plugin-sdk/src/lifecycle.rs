//! Lifecycles: builder (stage / resume-staging), launcher (launch), healthcheck.
//!
//! Implement [`Guest`] and export it with [`crate::export_lifecycle!`]. Calls you do not
//! support return `PluginError::Unsupported` (and `describe` says which kinds you implement).

pub use crate::__lifecycle_bindings::diego::lifecycle::host::LogLevel;
pub use crate::__lifecycle_bindings::exports::diego::lifecycle::plugin::*;

/// Logs through the host (bounded by the host; shown with the staging or app logs).
pub fn log(level: LogLevel, message: &str) {
    crate::__lifecycle_bindings::diego::lifecycle::host::log(level, message);
}

/// A `RunSpec` with Diego's defaults: no env, no dir, no limits, logs shown, no capture.
pub fn run_spec(path: &str, args: &[&str], user: &str) -> RunSpec {
    RunSpec {
        path: path.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: Vec::new(),
        dir: None,
        user: user.to_owned(),
        resource_limits: ResourceLimits { nofile: None },
        log_source: None,
        suppress_log_output: false,
        capture_stdout: None,
    }
}

/// `name=value` environment pairs.
pub fn env(pairs: &[(&str, &str)]) -> Vec<EnvVar> {
    pairs
        .iter()
        .map(|(n, v)| EnvVar {
            name: (*n).to_owned(),
            value: (*v).to_owned(),
        })
        .collect()
}

/// The status of `node` in an observation, if the host reported one.
pub fn status_of(seen: &Observation, node: u32) -> Option<&NodeStatus> {
    seen.statuses.iter().find(|s| s.node == node)
}

/// The contents of a captured file, if it existed.
pub fn file_of<'a>(seen: &'a Observation, path: &str) -> Option<&'a [u8]> {
    seen.files
        .iter()
        .find(|f| f.path == path)
        .and_then(|f| f.contents.as_deref())
}

/// The check plan Diego's health-check types mean, on the app's `port`: `port` is a TCP connect,
/// `http` a GET of the endpoint (default `/`), `process` "still running", `none` nothing; the
/// readiness check likewise. Defaults: 1 s invocation timeout, liveness every 30 s, readiness
/// every 5 s, 60 s to start. A port or http check (liveness or readiness) with no port known is
/// an invalid request.
pub fn check_plan(request: &CheckRequest, port: Option<u16>) -> Result<CheckPlan, PluginError> {
    let needs_port =
        |k: HealthCheckType| matches!(k, HealthCheckType::Port | HealthCheckType::Http);
    let any_needs_port = needs_port(request.health_check_type)
        || request
            .readiness
            .as_ref()
            .is_some_and(|r| needs_port(r.health_check_type));
    let port = match port {
        Some(p) => p,
        None if any_needs_port => {
            return Err(PluginError::InvalidRequest(
                "a port or http health check needs a port, and none is known".to_owned(),
            ));
        }
        None => 0,
    };
    let timeout = request.invocation_timeout_ms.unwrap_or(1000);
    let checks = probe(
        request.health_check_type,
        port,
        request.http_endpoint.as_deref(),
        timeout,
        request.interval_ms.unwrap_or(30_000),
    )
    .into_iter()
    .collect();
    let readiness_checks = request
        .readiness
        .as_ref()
        .and_then(|r| {
            probe(
                r.health_check_type,
                port,
                r.http_endpoint.as_deref(),
                r.invocation_timeout_ms.unwrap_or(timeout),
                r.interval_ms.unwrap_or(5_000),
            )
        })
        .into_iter()
        .collect();
    Ok(CheckPlan {
        checks,
        readiness_checks,
        start_timeout_ms: request.start_timeout_ms.unwrap_or(60_000),
    })
}

fn probe(
    kind: HealthCheckType,
    port: u16,
    endpoint: Option<&str>,
    timeout_ms: u64,
    interval_ms: u64,
) -> Option<Probe> {
    match kind {
        HealthCheckType::Port => Some(Probe::Tcp(TcpProbe {
            port,
            connect_timeout_ms: timeout_ms,
            interval_ms,
        })),
        HealthCheckType::Http => Some(Probe::Http(HttpProbe {
            port,
            path: endpoint.filter(|e| !e.is_empty()).unwrap_or("/").to_owned(),
            request_timeout_ms: timeout_ms,
            interval_ms,
        })),
        HealthCheckType::Process => Some(Probe::ProcessAlive),
        HealthCheckType::None => None,
    }
}

/// Continuation state: a few byte fields, length-prefixed. Enough for most lifecycles (a
/// URL, a chosen buildpack, a phase number) without pulling a serialization crate into
/// every guest.
pub mod state {
    /// Encodes fields as `u32 little-endian length + bytes` each.
    pub fn encode(fields: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 4).sum());
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// The fields of [`encode`]; `None` if `bytes` is not such an encoding.
    pub fn decode(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_at_checked(4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (field, rest) = rest.split_at_checked(len)?;
            fields.push(field);
            bytes = rest;
        }
        Some(fields)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips() {
            let bytes = super::encode(&[b"phase-2", b"", b"https://x/y"]);
            let fields = super::decode(&bytes).expect("decodes");
            assert_eq!(fields, vec![&b"phase-2"[..], b"", b"https://x/y"]);
            assert_eq!(super::decode(&bytes[..bytes.len() - 1]), None);
        }
    }
}
