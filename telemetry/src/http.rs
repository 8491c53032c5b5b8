//! What every role's HTTP API gets: `GET /metrics`, and a middleware that gives each request
//! its id and span and counts and times it under its route template.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tracing::Instrument as _;

use crate::names;

/// The header carrying a request id between roles (lower case, as HTTP/2 wants it).
pub const REQUEST_ID_HEADER: &str = "x-diego-request-id";

/// The longest request id taken from a caller; a longer or odd one is replaced.
const MAX_REQUEST_ID_LEN: usize = 400;

/// The route label of a request no route matched (so unknown paths cannot grow the labels).
const UNMATCHED: &str = "unmatched";

/// `router` with `GET /metrics` and the request middleware on every route. `server` names the
/// role in the metrics' `server` label (`bbs`, `brain`, `rep`, `api`, `router`).
pub fn instrument<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    server: &'static str,
) -> Router<S> {
    crate::install();
    router
        .route("/metrics", get(|| async { metrics_response() }))
        .layer(axum::middleware::from_fn_with_state(server, track))
}

/// Every metric of this process as a `/metrics` answer.
pub fn metrics_response() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::CONTENT_TYPE),
        )],
        crate::render(),
    )
        .into_response()
}

fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:,".contains(&b))
}

async fn track(State(server): State<&'static str>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Applied with `Router::layer`, this runs once a route matched, so the template is known
    // (`/v1/lrps/{process_guid}/instances/{instance_guid}/stop`, never the ids themselves).
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(crate::new_request_id, str::to_owned);
    let span = tracing::info_span!("request", server, request_id = %id, method = %request.method(), route = %route);
    let mut response = crate::request_id::scoped(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(names::REQUEST_COUNT, "server" => server, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(names::REQUEST_LATENCY, "server" => server, "route" => route)
        .record(elapsed.as_secs_f64());
    tracing::debug!(parent: &span, status, elapsed_ms = elapsed.as_millis() as u64, "request answered");
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::post;
    use tower::ServiceExt as _;

    /// A router whose handlers answer the request id they see, as role `server`.
    fn app(server: &'static str) -> Router {
        async fn whoami() -> String {
            crate::current_request_id().unwrap_or_default()
        }
        async fn spawned() -> String {
            tokio::spawn(crate::propagate(async { crate::current_request_id() }))
                .await
                .unwrap()
                .unwrap_or_default()
        }
        instrument(
            Router::new()
                .route("/v1/apps/{name}", get(whoami))
                .route(
                    "/v1/apps/{name}/stop",
                    post(|| async { StatusCode::ACCEPTED }),
                )
                .route("/spawned", get(spawned)),
            server,
        )
    }

    async fn call(request: Request<Body>) -> (StatusCode, Option<String>, String) {
        call_on("unit", request).await
    }

    /// As [`call`], on a router labelled `server` (the recorder is the process's: a test that
    /// counts uses a server name no other test does).
    async fn call_on(
        server: &'static str,
        request: Request<Body>,
    ) -> (StatusCode, Option<String>, String) {
        let response = app(server).oneshot(request).await.unwrap();
        let status = response.status();
        let id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, id, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get_req(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    /// The scrape's text.
    async fn scrape() -> String {
        let (status, _, body) = call(get_req("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// The server label of the test that counts.
    const COUNTING: &str = "counting";

    /// The value of `RequestCount` for this test's server, `route` and `status` (the exact line
    /// the text format has for it; the platform tests read scrapes with Prometheus's own
    /// parser).
    fn count(scrape: &str, route: &str, status: &str) -> f64 {
        let series = format!(
            "{}{{server=\"{COUNTING}\",route=\"{route}\",status=\"{status}\"}} ",
            names::REQUEST_COUNT
        );
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_under_their_route_template_not_their_path() {
        let before = scrape().await;
        for name in ["web", "worker", "web"] {
            let (status, _, _) = call_on(COUNTING, get_req(&format!("/v1/apps/{name}"))).await;
            assert_eq!(status, StatusCode::OK);
        }
        let stop = Request::post("/v1/apps/web/stop")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call_on(COUNTING, stop).await.0, StatusCode::ACCEPTED);
        assert_eq!(
            call_on(COUNTING, get_req("/no/such/path/42")).await.0,
            StatusCode::NOT_FOUND
        );
        let after = scrape().await;

        let grew = |route: &str, status: &str| {
            count(&after, route, status) - count(&before, route, status)
        };
        assert_eq!(grew("/v1/apps/{name}", "200"), 3.0);
        assert_eq!(grew("/v1/apps/{name}/stop", "202"), 1.0);
        assert_eq!(grew(UNMATCHED, "404"), 1.0);
        // no label carries an id from a path (the labels only: a value may contain "42")
        for line in after
            .lines()
            .filter(|l| l.contains(&format!("server=\"{COUNTING}\"")))
        {
            let labels = line
                .split_once('{')
                .and_then(|(_, rest)| rest.rsplit_once('}'));
            let labels = labels.map_or(line, |(labels, _)| labels);
            assert!(
                !labels.contains("/web") && !labels.contains("42"),
                "a raw path leaked into a label: {line}"
            );
        }
        // the latency histogram has its buckets under the same labels
        assert!(after.contains(&format!(
            "RequestLatency_bucket{{server=\"{COUNTING}\",route=\"/v1/apps/{{name}}\",le=\"+Inf\"}}"
        )));
        // and the catalogue's help and type lines are there
        assert!(after.contains("# TYPE RequestCount counter"), "{after}");
        assert!(after.contains("# HELP RequestCount "), "{after}");
    }

    #[tokio::test]
    async fn a_request_gets_an_id_or_keeps_the_callers() {
        let (_, answered, seen) = call(get_req("/v1/apps/web")).await;
        let made = answered.unwrap();
        assert_eq!(
            made, seen,
            "the handler sees the id the caller is answered with"
        );
        assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");

        let given = Request::get("/v1/apps/web")
            .header(REQUEST_ID_HEADER, "bbs-7f3a,other-id")
            .body(Body::empty())
            .unwrap();
        let (_, answered, seen) = call(given).await;
        assert_eq!(answered.as_deref(), Some("bbs-7f3a,other-id"));
        assert_eq!(seen, "bbs-7f3a,other-id");

        // an id that could break a log line or a header is replaced
        let odd = Request::get("/v1/apps/web")
            .header(REQUEST_ID_HEADER, "a b\"c")
            .body(Body::empty())
            .unwrap();
        let (_, answered, _) = call(odd).await;
        assert_ne!(answered.as_deref(), Some("a b\"c"));
    }

    #[tokio::test]
    async fn spawned_work_keeps_the_request_id() {
        let given = Request::get("/spawned")
            .header(REQUEST_ID_HEADER, "spawn-me")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(given).await.2, "spawn-me");
    }

    #[tokio::test]
    async fn clients_send_the_current_id_on() {
        use crate::PropagateRequestId as _;
        let http = reqwest::Client::new();
        let outside = http
            .get("http://127.0.0.1:1/x")
            .propagate_request_id()
            .build()
            .unwrap();
        assert!(outside.headers().get(REQUEST_ID_HEADER).is_none());
        let inside = crate::with_request_id("pass-42".into(), async {
            http.get("http://127.0.0.1:1/x")
                .propagate_request_id()
                .build()
                .unwrap()
        })
        .await;
        assert_eq!(inside.headers().get(REQUEST_ID_HEADER).unwrap(), "pass-42");
    }

    #[test]
    fn several_ids_join_into_one_header() {
        assert_eq!(crate::join_request_ids([]), None);
        assert_eq!(
            crate::join_request_ids(["a", "b", "a", ""]).as_deref(),
            Some("a,b")
        );
        let many: Vec<String> = (0..20).map(|i| format!("id{i}")).collect();
        let joined = crate::join_request_ids(many.iter().map(String::as_str)).unwrap();
        assert_eq!(joined.split(',').count(), 8);
        assert!(acceptable(&joined));
    }
}
