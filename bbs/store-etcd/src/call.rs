//! Running one request against etcd: the deadline, the retries, and the mapping of failures to
//! [`StoreError`] with the outcome-unknown rule (see the crate docs).

use std::future::Future;
use std::time::Duration;

use diego_store::StoreError;
use tokio::time::Instant;
use tonic::Code;

/// How a request may be retried, which decides what its failures mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Changes nothing: retried on any transient failure until the deadline; a final failure is
    /// [`StoreError::Unavailable`].
    Read,
    /// Changes something but repeating it is harmless (lease grant, keep-alive):
    /// retried on any transient failure; a final failure after a request may have been applied is
    /// [`StoreError::OutcomeUnknown`].
    Idempotent,
    /// Changes something and must not be repeated blindly (a transaction, a revoke): retried only
    /// when the request certainly was not applied; any failure after it may have been applied
    /// returns [`StoreError::OutcomeUnknown`] at once.
    Write,
}

/// What one failed attempt tells us.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request certainly was not applied (no connection, refused before processing); it can
    /// be sent again, to any member.
    NotApplied(String),
    /// The request may or may not have been applied (a broken connection, an etcd timeout, a
    /// leader change while it was in flight).
    Transient(String),
    /// A definite answer: the request was refused, or the error is not worth retrying.
    Final(StoreError),
}

impl Failure {
    /// Maps an etcd-client error.
    pub(crate) fn from_etcd(err: etcd_client::Error) -> Failure {
        use etcd_client::Error as E;
        match err {
            E::GRpcStatus(status) => Self::from_status(&status),
            // Building a channel failed: nothing was sent.
            E::TransportError(e) => Failure::NotApplied(format!("transport: {e}")),
            E::InvalidArgs(m) => Failure::Final(StoreError::InvalidRequest(m)),
            E::InvalidUri(e) => Failure::Final(StoreError::InvalidRequest(e.to_string())),
            // A stream (watch, keep-alive) broke after its request was sent.
            E::IoError(e) => Failure::Transient(format!("i/o: {e}")),
            E::WatchError(m) => Failure::Transient(format!("watch: {m}")),
            E::LeaseKeepAliveError(m) => Failure::Transient(format!("keep-alive: {m}")),
            other => Failure::Final(StoreError::Backend(format!("etcd: {other}"))),
        }
    }

    /// Maps a gRPC status, from etcd or from the client's transport.
    pub(crate) fn from_status(status: &tonic::Status) -> Failure {
        if never_connected(status) {
            return Failure::NotApplied(format!("cannot connect: {}", describe_status(status)));
        }
        let message = status.message();
        match status.code() {
            // etcd checked the request and refused it.
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::AlreadyExists => {
                Failure::Final(StoreError::InvalidRequest(format!("etcd: {message}")))
            }
            // "etcdserver: too many requests" is refused before it is proposed.
            Code::ResourceExhausted if message.contains("too many requests") => {
                Failure::NotApplied(format!("etcd: {message}"))
            }
            // Otherwise the message was over the gRPC size limit.
            Code::ResourceExhausted => {
                Failure::Final(StoreError::InvalidRequest(format!("etcd: {message}")))
            }
            Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented => {
                Failure::Final(StoreError::Backend(format!("etcd: {message}")))
            }
            // With require-leader set, a member without a leader refuses requests up front.
            Code::Unavailable if message == NO_LEADER || message.contains("not capable") => {
                Failure::NotApplied(format!("etcd: {message}"))
            }
            // Unavailable (etcd timeouts, leader changes, broken connections), DeadlineExceeded,
            // Cancelled, Unknown, Internal, Aborted...: the request may have been applied.
            _ => Failure::Transient(describe_status(status)),
        }
    }
}

/// The message etcd sends with `Unavailable` when the member has no leader (and the request asked
/// for one), or when it cancels a watch for the same reason.
pub(crate) const NO_LEADER: &str = "etcdserver: no leader";

/// A status in one line: its code, its message, and the root cause if there is one, e.g.
/// `Unavailable: tcp connect error: Connection refused (os error 111)`.
pub(crate) fn describe_status(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut root = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        root = Some(err);
        source = err.source();
    }
    if let Some(root) = root.map(ToString::to_string)
        && !text.contains(&root)
    {
        text.push_str(": ");
        text.push_str(&root);
    }
    text
}

/// An etcd-client error in one line.
pub(crate) fn describe(err: &etcd_client::Error) -> String {
    match err {
        etcd_client::Error::GRpcStatus(status) => describe_status(status),
        other => other.to_string(),
    }
}

/// Whether the status comes from failing to connect: the request never left this process.
fn never_connected(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The least time left for another attempt to be worth starting.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// Runs `attempt` until it succeeds, fails for good, or `timeout` has passed, as `kind` allows.
pub(crate) async fn run<T, F, Fut>(
    what: &str,
    kind: Kind,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    let mut maybe_applied = false;
    let mut last: String;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Final(e))) => return Err(e),
            Ok(Err(Failure::NotApplied(reason))) => {
                tracing::debug!(what, %reason, "etcd request not applied; retrying");
                last = reason;
            }
            Ok(Err(Failure::Transient(reason))) => {
                if kind == Kind::Write {
                    tracing::warn!(what, %reason, "etcd request failed after it was sent: outcome unknown");
                    return Err(StoreError::OutcomeUnknown(format!("{what}: {reason}")));
                }
                tracing::debug!(what, %reason, "etcd request failed; retrying");
                maybe_applied = true;
                last = reason;
            }
            Err(_) => {
                // A request still in flight may yet be applied.
                maybe_applied = true;
                last = format!("no answer within {timeout:?}");
                break;
            }
        }
        // Do not start an attempt that could hardly finish: a write cut off by the deadline would
        // have to be reported as of unknown outcome.
        if deadline.saturating_duration_since(Instant::now()) < backoff + MIN_ATTEMPT {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
    let message = format!("{what}: {last}");
    Err(match kind {
        Kind::Read => StoreError::Unavailable(message),
        Kind::Idempotent | Kind::Write if maybe_applied => {
            tracing::warn!(what, reason = %last, "etcd request timed out: outcome unknown");
            StoreError::OutcomeUnknown(message)
        }
        Kind::Idempotent | Kind::Write => StoreError::Unavailable(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(code: Code, message: &str) -> Failure {
        Failure::from_status(&tonic::Status::new(code, message))
    }

    #[test]
    fn refusals_are_final() {
        assert!(matches!(
            classify(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            ),
            Failure::Final(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            classify(
                Code::ResourceExhausted,
                "grpc: received message larger than max"
            ),
            Failure::Final(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            classify(Code::NotFound, "etcdserver: requested lease not found"),
            Failure::Final(StoreError::Backend(_))
        ));
    }

    #[test]
    fn refused_up_front_is_not_applied() {
        assert!(matches!(
            classify(Code::Unavailable, NO_LEADER),
            Failure::NotApplied(_)
        ));
        assert!(matches!(
            classify(Code::ResourceExhausted, "etcdserver: too many requests"),
            Failure::NotApplied(_)
        ));
    }

    #[test]
    fn anything_in_flight_may_have_been_applied() {
        for (code, message) in [
            (Code::Unavailable, "etcdserver: request timed out"),
            (Code::Unavailable, "etcdserver: leader changed"),
            (
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            (
                Code::Unknown,
                "h2 protocol error: error reading a body from connection",
            ),
            (Code::Cancelled, "Timeout expired"),
            (Code::DeadlineExceeded, "context deadline exceeded"),
            (Code::Internal, "stream error"),
        ] {
            assert!(
                matches!(classify(code, message), Failure::Transient(_)),
                "{code:?} {message}"
            );
        }
    }

    #[tokio::test]
    async fn writes_stop_at_the_first_failure_that_may_have_applied() {
        let mut attempts = 0;
        let result: Result<(), _> = run("txn", Kind::Write, Duration::from_secs(5), || {
            attempts += 1;
            let failure = if attempts == 1 {
                Failure::NotApplied("cannot connect".into())
            } else {
                Failure::Transient("Unavailable: etcdserver: request timed out".into())
            };
            async move { Err(failure) }
        })
        .await;
        assert_eq!(attempts, 2, "retried once when not applied, then stopped");
        assert!(matches!(result, Err(StoreError::OutcomeUnknown(_))));
    }

    #[tokio::test]
    async fn reads_retry_and_end_unavailable() {
        let mut attempts = 0;
        let result: Result<(), _> = run("get", Kind::Read, Duration::from_millis(400), || {
            attempts += 1;
            async {
                Err(Failure::Transient(
                    "Unavailable: etcdserver: leader changed".into(),
                ))
            }
        })
        .await;
        assert!(attempts > 1);
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn writes_never_sent_end_unavailable() {
        let result: Result<(), _> = run("txn", Kind::Write, Duration::from_millis(400), || async {
            Err(Failure::NotApplied("cannot connect".into()))
        })
        .await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_write_without_an_answer_is_outcome_unknown() {
        let result: Result<(), _> = run("txn", Kind::Write, Duration::from_millis(200), || {
            std::future::pending::<Result<(), Failure>>()
        })
        .await;
        assert!(matches!(result, Err(StoreError::OutcomeUnknown(_))));
    }
}
