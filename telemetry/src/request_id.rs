//! The request id of the work in hand: a task-local set while a request is handled (or by
//! [`with_request_id`] for work that starts on its own, like a convergence pass), sent on by
//! clients and kept by spawned work.

use std::future::Future;

use tracing::Instrument as _;

use crate::http::REQUEST_ID_HEADER;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The most ids [`join_request_ids`] puts in one header.
const MAX_JOINED: usize = 8;

/// The request id of the request this task is handling, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A fresh id (a v4 uuid).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs `work` as the handling of request `id`: inside a `request` span recording it, with
/// clients sending it on.
pub async fn with_request_id<F: Future>(id: String, work: F) -> F::Output {
    let span = tracing::info_span!("request", request_id = %id);
    REQUEST_ID.scope(id, work.instrument(span)).await
}

/// `work` as the handling of request `id`, without a span of its own (the middleware makes
/// one with more fields).
pub(crate) async fn scoped<F: Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// `work` with the current request id and span, for `tokio::spawn`: spawned work is not
/// inside the request's task, so without this it would lose both.
pub fn propagate<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let id = current_request_id();
    let work = work.in_current_span();
    async move {
        match id {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}

/// One header value for a call made on behalf of several requests (an auction batch sent to
/// one cell): the distinct ids comma-separated, at most eight, so a grep for any of them finds
/// the call. `None` when there is none.
pub fn join_request_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut distinct: Vec<&str> = Vec::new();
    for id in ids {
        if !id.is_empty() && !distinct.contains(&id) {
            distinct.push(id);
            if distinct.len() == MAX_JOINED {
                break;
            }
        }
    }
    (!distinct.is_empty()).then(|| distinct.join(","))
}

/// Sends the current request id on with an outgoing request.
pub trait PropagateRequestId {
    /// Adds `X-Diego-Request-Id` when this task handles a request.
    fn propagate_request_id(self) -> Self;
}

impl PropagateRequestId for reqwest::RequestBuilder {
    fn propagate_request_id(self) -> Self {
        match current_request_id() {
            Some(id) => self.header(REQUEST_ID_HEADER, id),
            None => self,
        }
    }
}
