//! Log streaming: apps', staging's, cells' and routers' lines, kept recent and streamed per app.
//!
//! The job Loggregator does for Cloud Foundry, small: cells, routers and the API post
//! [`LogEnvelope`]s to a [`LogServer`] (usually through a batching [`LogSender`]); the server
//! keeps the recent lines of every app and fans new ones out to live streams, which a
//! [`LogClient`] reads.
//!
//! Routes (all JSON unless said otherwise):
//! - `POST /v1/logs` — a JSON array of envelopes; 204, 400 (malformed), 413 (too many or too big).
//! - `GET /v1/logs/{log_guid}/recent` — the recent envelopes, oldest first.
//! - `GET /v1/logs/{log_guid}/stream[?recent=true]` — `application/x-ndjson`, one envelope a line.

mod client;
mod envelope;
mod hub;
mod sender;
mod server;

pub use client::{LogClient, LogError};
pub use envelope::{LogEnvelope, LogStream, now_ns, truncate_message};
pub use sender::LogSender;
pub use server::{LogLimits, LogServer};
