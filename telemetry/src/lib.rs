//! What every role shares to be observed.
//!
//! - **Metrics**: one process-wide Prometheus recorder behind the [`metrics`] facade. Code
//!   sets counters and gauges where things happen (`metrics::counter!(names::…)`), under
//!   Diego's metric names ([`names`]); every role serves them at `GET /metrics` in the text
//!   format 0.0.4 ([`instrument`] adds the route). Values that are cheaper to read than to
//!   track (a cell's capacity, the active policy) are refreshed at scrape time by hooks
//!   ([`on_scrape`]). One recorder per process means that in `diego dev`, where every role
//!   shares the process, each role's `/metrics` shows the whole process; the `server` and
//!   `cell_id` labels tell the roles and cells apart.
//! - **Request ids**: [`instrument`]'s middleware reads `X-Diego-Request-Id` (or makes one),
//!   answers with it, records it as the `request_id` field of a `request` span, and keeps it in
//!   a task-local while the request is handled. Clients send it on
//!   ([`PropagateRequestId::propagate_request_id`]) and work spawned for the request keeps it
//!   ([`propagate`]), so one placement — desire in the BBS, start request to the brain, `/work`
//!   on the rep, claim in the BBS — is followed by grepping one id through the roles' logs.
//!   It also counts `RequestCount` and times `RequestLatency` per route template.
//!
//! **Architecture invariant:** imports no diego crate.

mod http;
pub mod names;
mod recorder;
mod request_id;

pub use http::{REQUEST_ID_HEADER, instrument, metrics_response};
pub use recorder::{CONTENT_TYPE, install, on_scrape, render};
pub use request_id::{
    PropagateRequestId, current_request_id, join_request_ids, new_request_id, propagate,
    with_request_id,
};
