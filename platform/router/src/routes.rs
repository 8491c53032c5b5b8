//! The registration API's wire types: endpoints, route items and the request body that carries
//! them, with the checks every item passes before it reaches the table.

use serde::{Deserialize, Serialize};

/// One running instance a hostname routes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// The cell's address (or the container's, for direct routes).
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub process_guid: String,
    #[serde(default)]
    pub index: i32,
    #[serde(default)]
    pub instance_guid: String,
    /// Where the access log lines of requests to this endpoint go.
    #[serde(default)]
    pub log_guid: String,
}

impl Endpoint {
    /// `address:port`, as dialled and as written in access logs.
    pub fn authority(&self) -> String {
        if self.address.contains(':') && !self.address.starts_with('[') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// A hostname and one of its endpoints. Without an endpoint the item only makes the hostname
/// known (a request for it then gets 503 rather than 404 while no instance runs); unregistering
/// such an item forgets the hostname and every endpoint the emitter gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteItem {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
}

impl RouteItem {
    pub fn host(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            endpoint: None,
        }
    }

    pub fn endpoint(hostname: impl Into<String>, endpoint: Endpoint) -> Self {
        Self {
            hostname: hostname.into(),
            endpoint: Some(endpoint),
        }
    }
}

/// The emitter id used when a request names none.
pub const DEFAULT_EMITTER: &str = "default";

/// The body of `PUT /v1/routes`, `POST /v1/routes/register` and `POST /v1/routes/unregister`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesRequest {
    /// Whose routes these are: each emitter's routes are kept apart, so one emitter's full
    /// table replaces only its own.
    #[serde(default)]
    pub emitter: String,
    #[serde(default)]
    pub routes: Vec<RouteItem>,
}

impl RoutesRequest {
    /// Parses and checks a body, normalising hostnames (lower case, no trailing dot). The error
    /// is the message for a 400 answer.
    pub fn parse(body: &[u8]) -> Result<RoutesRequest, String> {
        let mut request: RoutesRequest =
            serde_json::from_slice(body).map_err(|e| format!("invalid routes body: {e}"))?;
        if request.emitter.is_empty() {
            request.emitter = DEFAULT_EMITTER.to_string();
        }
        for (i, item) in request.routes.iter_mut().enumerate() {
            item.hostname = normalize_hostname(&item.hostname)
                .map_err(|e| format!("routes[{i}].hostname: {e}"))?;
            if let Some(endpoint) = &item.endpoint {
                check_endpoint(endpoint).map_err(|e| format!("routes[{i}].endpoint: {e}"))?;
            }
        }
        Ok(request)
    }
}

/// A hostname as the table keys it: lower case, without a port or a trailing dot.
pub fn normalize_hostname(raw: &str) -> Result<String, String> {
    let host = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err("is empty".into());
    }
    if host.len() > 253 {
        return Err(format!("is {} bytes, more than 253", host.len()));
    }
    if let Some(bad) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*')))
    {
        return Err(format!("{raw:?} has the character {bad:?}"));
    }
    Ok(host)
}

fn check_endpoint(endpoint: &Endpoint) -> Result<(), String> {
    if endpoint.address.is_empty() {
        return Err("address is empty".into());
    }
    if endpoint
        .address
        .chars()
        .any(|c| c.is_whitespace() || c == '/')
    {
        return Err(format!("address {:?} is not a host", endpoint.address));
    }
    if endpoint.port == 0 {
        return Err("port must be 1 to 65535".into());
    }
    Ok(())
}

/// The host a request names in its `Host` header: port stripped, lower case.
pub fn request_host(header: &str) -> String {
    let header = header.trim();
    let host = if let Some(rest) = header.strip_prefix('[') {
        // An IPv6 literal: keep what is inside the brackets.
        rest.split(']').next().unwrap_or_default()
    } else {
        header.split(':').next().unwrap_or_default()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hosts_lose_port_and_case() {
        assert_eq!(request_host("App.Dev.Local:8080"), "app.dev.local");
        assert_eq!(request_host("app.dev.local."), "app.dev.local");
        assert_eq!(request_host("[::1]:80"), "::1");
    }

    #[test]
    fn bodies_are_checked() {
        let ok = RoutesRequest::parse(
            br#"{"routes":[{"hostname":"A.b","endpoint":{"address":"10.0.0.1","port":80}}]}"#,
        )
        .unwrap();
        assert_eq!(ok.emitter, DEFAULT_EMITTER);
        assert_eq!(ok.routes[0].hostname, "a.b");
        assert!(RoutesRequest::parse(b"{").is_err());
        assert!(RoutesRequest::parse(br#"{"routes":[{"hostname":""}]}"#).is_err());
        let e = RoutesRequest::parse(
            br#"{"routes":[{"hostname":"a","endpoint":{"address":"x","port":0}}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("routes[0].endpoint: port"), "{e}");
        assert!(RoutesRequest::parse(br#"{"routes":[{"hostname":"a b"}]}"#).is_err());
    }
}
