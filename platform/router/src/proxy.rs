//! The proxy: picks an endpoint for the request's Host in turn, forwards the request with
//! gorouter's headers, retries another endpoint when one cannot take it, streams the answer
//! back and writes one access-log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as HttpBody;

use crate::Shared;
use crate::access_log::{AccessLogEntry, RequestRecord, unix_nanos};
use crate::body::{Observed, REPLAY_LIMIT, RequestBody};
use crate::routes::{Endpoint, request_host};
use crate::table::Pool;

/// The header naming why the router itself answered (gorouter's `X-Cf-Routererror`).
pub const ROUTER_ERROR_HEADER: &str = "x-diego-router-error";

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    shared.counters.request();
    let response = proxy(&shared, request).await;
    shared.counters.response(response.status().as_u16());
    response
}

/// An answer the router makes itself.
fn router_error(status: StatusCode, kind: &'static str, message: String) -> Response {
    let mut response = (status, message + "\n").into_response();
    response
        .headers_mut()
        .insert(ROUTER_ERROR_HEADER, HeaderValue::from_static(kind));
    response
}

/// What is known about a request before any endpoint is tried.
struct Incoming {
    host: String,
    started: SystemTime,
    clock: Instant,
    method: Method,
    path_and_query: String,
    version: Version,
    client: Option<SocketAddr>,
    headers: HeaderMap,
}

async fn proxy(shared: &Arc<Shared>, request: Request) -> Response {
    let started = SystemTime::now();
    let clock = Instant::now();
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let raw_host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(raw_host) = raw_host else {
        return (StatusCode::BAD_REQUEST, "the request has no Host header\n").into_response();
    };
    let host = request_host(&raw_host);
    let Some(pool) = shared.table.lookup(&host) else {
        return router_error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("unknown route: {host}"),
        );
    };
    if pool.endpoints.is_empty() {
        return router_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_endpoints",
            format!("no instance of {host} is running"),
        );
    }

    let (parts, body) = request.into_parts();
    let incoming = Incoming {
        host,
        started,
        clock,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        method: parts.method,
        version: parts.version,
        client,
        headers: forwarded_headers(&parts.headers, client, started),
    };
    let idempotent = matches!(
        incoming.method,
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // Only an idempotent request with a small body is kept for a resend after a failed send;
    // every other body streams through and can only move on to another endpoint unread.
    let fits = body.size_hint().upper().is_some_and(|n| n <= REPLAY_LIMIT);
    let (replay, stream) = if idempotent && fits {
        match Limited::new(body, REPLAY_LIMIT as usize).collect().await {
            Ok(collected) => (Some(collected.to_bytes()), None),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}\n"),
                )
                    .into_response();
            }
        }
    } else {
        (None, Some(RequestBody::new(body)))
    };
    forward(shared, &pool, incoming, replay, stream, idempotent).await
}

/// The request's headers as sent on: hop-by-hop ones dropped, gorouter's added.
fn forwarded_headers(
    original: &HeaderMap,
    client: Option<SocketAddr>,
    started: SystemTime,
) -> HeaderMap {
    let mut headers = original.clone();
    let named_in_connection: Vec<String> = original
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .map(|s| s.to_string())
        .chain(named_in_connection)
    {
        headers.remove(name.as_str());
    }
    if let Some(client) = client {
        let ip = client.ip().to_string();
        let xff = match original
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
            _ => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    let start_ms = unix_nanos(started) / 1_000_000;
    headers.insert("x-request-start", HeaderValue::from(start_ms));
    let keep_id = headers
        .get("x-vcap-request-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.is_empty() && v.len() <= 128);
    if !keep_id && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-vcap-request-id", v);
    }
    headers
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn forward(
    shared: &Arc<Shared>,
    pool: &Arc<Pool>,
    incoming: Incoming,
    replay: Option<Bytes>,
    stream: Option<RequestBody>,
    idempotent: bool,
) -> Response {
    let cfg = &shared.cfg;
    let host = incoming.host.clone();
    let mut tried: Vec<usize> = Vec::new();
    let mut last_failure = String::from("no endpoint could be tried");
    while tried.len() < cfg.max_attempts.max(1) {
        let Some(i) = pool.pick(&tried, |e| shared.table.is_bad(e)) else {
            break;
        };
        let body = match (&replay, &stream) {
            (Some(bytes), _) => Body::from(bytes.clone()),
            (None, Some(stream)) => match stream.attempt() {
                Some(body) => body,
                None => break,
            },
            (None, None) => Body::empty(),
        };
        if !tried.is_empty() {
            shared.counters.retry();
        }
        tried.push(i);
        let endpoint = &pool.endpoints[i];
        let authority = endpoint.authority();
        let uri = match Uri::try_from(format!("http://{authority}{}", incoming.path_and_query)) {
            Ok(uri) => uri,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("bad request target: {e}\n"),
                )
                    .into_response();
            }
        };
        let mut upstream = hyper::Request::new(body);
        *upstream.method_mut() = incoming.method.clone();
        *upstream.uri_mut() = uri;
        *upstream.headers_mut() = incoming.headers.clone();

        let sent = tokio::time::timeout(cfg.response_timeout, shared.client.request(upstream));
        match sent.await {
            Ok(Ok(response)) => {
                return respond(shared, &incoming, endpoint, response, &stream, &replay);
            }
            Ok(Err(e)) => {
                let connect = e.is_connect();
                last_failure = format!("{authority}: {}", diego_tls::error_chain(&e));
                tracing::debug!(%host, endpoint = %authority, connect, error = %last_failure, "endpoint failed");
                shared.table.mark_bad(endpoint);
                shared.counters.bad_endpoint();
                // A failed connect sent nothing: any request may move on. After a send only an
                // idempotent request whose body was kept may be sent again.
                let may_resend = connect || (idempotent && replay.is_some());
                if !may_resend {
                    break;
                }
            }
            Err(_) => {
                tracing::debug!(%host, endpoint = %authority, "no response head in time");
                let response = router_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "endpoint_timeout",
                    format!(
                        "{authority} for {host} sent no response within {:?}",
                        cfg.response_timeout
                    ),
                );
                log_access(
                    shared,
                    &incoming,
                    endpoint,
                    504,
                    received(&stream, &replay),
                    0,
                );
                return response;
            }
        }
    }
    if let Some(&i) = tried.last() {
        log_access(
            shared,
            &incoming,
            &pool.endpoints[i],
            502,
            received(&stream, &replay),
            0,
        );
    }
    router_error(
        StatusCode::BAD_GATEWAY,
        "endpoint_failure",
        format!("all instances of {host} failed: {last_failure}"),
    )
}

fn received(stream: &Option<RequestBody>, replay: &Option<Bytes>) -> u64 {
    match (stream, replay) {
        (Some(stream), _) => stream.received(),
        (None, Some(bytes)) => bytes.len() as u64,
        (None, None) => 0,
    }
}

/// The endpoint's answer on its way back: hop-by-hop headers dropped, the body streamed and
/// the access-log line written when it ends.
fn respond(
    shared: &Arc<Shared>,
    incoming: &Incoming,
    endpoint: &Endpoint,
    response: hyper::Response<hyper::body::Incoming>,
    stream: &Option<RequestBody>,
    replay: &Option<Bytes>,
) -> Response {
    let (mut parts, body) = response.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    let status = parts.status.as_u16();
    let received = received(stream, replay);
    let (shared, incoming_record, endpoint) = (
        shared.clone(),
        record_base(incoming, endpoint),
        endpoint.clone(),
    );
    let clock = incoming.clock;
    let observed = Observed::new(
        body,
        Box::new(move |sent| {
            let mut record = incoming_record;
            record.status = status;
            record.bytes_received = received;
            record.bytes_sent = sent;
            record.response_time = clock.elapsed();
            emit(&shared, &endpoint, record);
        }),
    );
    Response::from_parts(parts, Body::new(observed))
}

fn record_base(incoming: &Incoming, endpoint: &Endpoint) -> RequestRecord {
    RequestRecord {
        host: incoming.host.clone(),
        started: incoming.started,
        method: incoming.method.to_string(),
        path_and_query: incoming.path_and_query.clone(),
        version: format!("{:?}", incoming.version),
        status: 0,
        bytes_received: 0,
        bytes_sent: 0,
        referer: header_str(&incoming.headers, header::REFERER),
        user_agent: header_str(&incoming.headers, header::USER_AGENT),
        client: incoming.client.map(|c| c.to_string()).unwrap_or_default(),
        endpoint: endpoint.authority(),
        x_forwarded_for: header_str(&incoming.headers, "x-forwarded-for"),
        x_forwarded_proto: header_str(&incoming.headers, "x-forwarded-proto"),
        vcap_request_id: header_str(&incoming.headers, "x-vcap-request-id"),
        response_time: incoming.clock.elapsed(),
        app_id: endpoint.process_guid.clone(),
        app_index: endpoint.index.to_string(),
        instance_id: endpoint.instance_guid.clone(),
    }
}

fn log_access(
    shared: &Arc<Shared>,
    incoming: &Incoming,
    endpoint: &Endpoint,
    status: u16,
    received: u64,
    sent: u64,
) {
    let mut record = record_base(incoming, endpoint);
    record.status = status;
    record.bytes_received = received;
    record.bytes_sent = sent;
    emit(shared, endpoint, record);
}

fn emit(shared: &Shared, endpoint: &Endpoint, record: RequestRecord) {
    let Some(sink) = &shared.access_log else {
        return;
    };
    if endpoint.log_guid.is_empty() {
        return;
    }
    sink.record(AccessLogEntry {
        log_guid: endpoint.log_guid.clone(),
        router_index: shared.cfg.index,
        timestamp_ns: unix_nanos(record.started),
        message: record.line(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::HeaderName;

    #[test]
    fn hop_by_hop_names_are_valid_headers() {
        for name in HOP_BY_HOP {
            assert!(HeaderName::from_static(name).as_str() == name);
        }
    }

    #[test]
    fn forwarded_headers_follow_gorouter() {
        let mut original = HeaderMap::new();
        original.insert("connection", HeaderValue::from_static("close, x-secret"));
        original.insert("x-secret", HeaderValue::from_static("1"));
        original.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let client: SocketAddr = "127.0.0.9:4000".parse().unwrap_or_else(|_| unreachable!());
        let headers = forwarded_headers(&original, Some(client), SystemTime::now());
        assert!(!headers.contains_key("connection") && !headers.contains_key("x-secret"));
        assert_eq!(headers["x-forwarded-for"], "1.2.3.4, 127.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(headers.contains_key("x-request-start"));
        assert_eq!(headers["x-vcap-request-id"].len(), 36);
    }
}
