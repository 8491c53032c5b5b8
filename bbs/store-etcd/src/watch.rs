//! Watches: an etcd watch on a prefix, resumed on another member when its stream breaks.

use std::collections::VecDeque;
use std::time::Duration;

use diego_store::{EventKind, Revision, StoreError, WatchEvent, WatchStream};
use etcd_client::{EventType, WatchClient, WatchOptions};
use futures::StreamExt;

use crate::call::{self, Failure, Kind, NO_LEADER};
use crate::convert_kv;

/// An open etcd watch and the revision its first event will have at the earliest.
struct Opened {
    stream: etcd_client::WatchStream,
    /// The revision the watch started from: the requested one, or for "from now" the one after
    /// the revision the watch was created at.
    start: Revision,
}

/// Opens a watch on `prefix` from `from_revision` (0 = from now) and waits until etcd has created
/// it, so that every change after this returns is seen.
async fn open(
    client: &WatchClient,
    prefix: &str,
    from_revision: Revision,
    timeout: Duration,
) -> Result<Opened, StoreError> {
    call::run("watch", Kind::Read, timeout, || {
        let mut client = client.clone();
        async move {
            let mut options = WatchOptions::new().with_prefix().with_prev_key();
            if from_revision > 0 {
                options = options.with_start_revision(from_revision);
            }
            let mut stream = client
                .watch(prefix, Some(options))
                .await
                .map_err(Failure::from_etcd)?;
            // The first response confirms the creation; its header carries the revision the
            // watch was registered at.
            let created = stream
                .message()
                .await
                .map_err(Failure::from_etcd)?
                .ok_or_else(|| {
                    Failure::Transient("watch stream ended before it was created".into())
                })?;
            if created.canceled() {
                return Err(canceled(&created, from_revision));
            }
            if !created.created() {
                return Err(Failure::Final(StoreError::Backend(
                    "etcd answered a watch request without creating it".into(),
                )));
            }
            let start = if from_revision > 0 {
                from_revision
            } else {
                created
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision)
                    + 1
            };
            Ok(Opened { stream, start })
        }
    })
    .await
}

/// Why etcd cancelled a watch, as a failure.
fn canceled(response: &etcd_client::WatchResponse, requested: Revision) -> Failure {
    if response.compact_revision() > 0 {
        return Failure::Final(StoreError::Compacted {
            requested,
            compact_revision: response.compact_revision(),
        });
    }
    let reason = response.cancel_reason();
    if reason.is_empty() || reason.contains(NO_LEADER) {
        // Cancelled because the member lost its leader (require-leader): watch elsewhere.
        Failure::NotApplied(format!("watch cancelled: {reason}"))
    } else {
        Failure::Final(StoreError::Backend(format!(
            "etcd cancelled the watch: {reason}"
        )))
    }
}

/// The state behind a [`WatchStream`].
struct State {
    client: WatchClient,
    prefix: String,
    timeout: Duration,
    /// The open etcd watch, if any.
    stream: Option<etcd_client::WatchStream>,
    /// The revision to resume from: one past the last event delivered.
    next: Revision,
    /// Events received but not yet delivered.
    pending: VecDeque<WatchEvent>,
    /// The stream has ended (after an error).
    done: bool,
}

/// Opens the watch and returns the stream of its events.
pub(crate) async fn watch(
    client: WatchClient,
    prefix: &str,
    from_revision: Revision,
    timeout: Duration,
) -> Result<WatchStream, StoreError> {
    let opened = open(&client, prefix, from_revision, timeout).await?;
    let state = State {
        client,
        prefix: prefix.to_string(),
        timeout,
        stream: Some(opened.stream),
        next: opened.start,
        pending: VecDeque::new(),
        done: false,
    };
    Ok(futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
    .boxed())
}

impl State {
    /// The next event or error; `None` once the stream has ended.
    async fn next_item(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                match open(&self.client, &self.prefix, self.next, self.timeout).await {
                    Ok(opened) => {
                        tracing::debug!(prefix = %self.prefix, from = self.next, "watch resumed");
                        self.stream = Some(opened.stream);
                    }
                    Err(e) => {
                        tracing::warn!(prefix = %self.prefix, from = self.next, "watch could not resume: {e}");
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            let failure = match stream.message().await {
                Ok(Some(response)) => {
                    if response.canceled() || response.compact_revision() > 0 {
                        canceled(&response, self.next)
                    } else {
                        match self.take_events(&response) {
                            Ok(()) => continue,
                            Err(e) => Failure::Final(e),
                        }
                    }
                }
                Ok(None) => Failure::Transient("watch stream closed by etcd".into()),
                Err(e) => Failure::from_etcd(e),
            };
            match failure {
                Failure::Final(e) => {
                    self.stream = None;
                    self.done = true;
                    return Some(Err(e));
                }
                Failure::NotApplied(reason) | Failure::Transient(reason) => {
                    // Watching is idempotent: open it again from where we stopped.
                    tracing::debug!(prefix = %self.prefix, from = self.next, %reason, "watch broke; resuming");
                    self.stream = None;
                }
            }
        }
    }

    /// Queues the events of one response, those of one revision in key order.
    fn take_events(&mut self, response: &etcd_client::WatchResponse) -> Result<(), StoreError> {
        let mut events = Vec::with_capacity(response.events().len());
        for event in response.events() {
            let kv = event
                .kv()
                .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            };
            let prev = event.prev_kv().map(convert_kv).transpose()?;
            events.push(WatchEvent {
                kind,
                kv: convert_kv(kv)?,
                prev,
            });
        }
        // etcd sends a transaction's changes in the order of its operations.
        events.sort_by(|a, b| (a.kv.mod_revision, &a.kv.key).cmp(&(b.kv.mod_revision, &b.kv.key)));
        // Nothing older than where we resumed is delivered twice.
        let floor = self.next;
        for event in events.into_iter().filter(|e| e.kv.mod_revision >= floor) {
            self.next = self.next.max(event.kv.mod_revision + 1);
            self.pending.push_back(event);
        }
        Ok(())
    }
}
