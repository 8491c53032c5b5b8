//! The event stream: store changes turned into Diego's events.
//!
//! Events are derived from the store's watch, not from the request that made the change, so
//! every BBS process over one store streams the same events with the same ids, and the stream
//! survives BBS restarts. An event's id is `<store revision>-<position in that revision>`; a client
//! that reconnects with `Last-Event-ID` (or `?last_event_id=`) gets every event after it.

use std::fmt;
use std::str::FromStr;

use diego_model::events::EventFamily;
use diego_model::{ActualLrp, BbsError, CellPresence, DesiredLrp, ErrorType, Event, Task};
use diego_store::{EventKind, Revision, Store, StoreError, WatchEvent};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::keys::{self, Family};

/// Where an event stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId {
    pub revision: Revision,
    pub position: u32,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.revision, self.position)
    }
}

impl FromStr for EventId {
    type Err = BbsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            BbsError::invalid_request(format!(
                "event id {s:?} is not of the form REVISION-POSITION"
            ))
        };
        let (revision, position) = s.split_once('-').ok_or_else(bad)?;
        Ok(EventId {
            revision: revision.parse().map_err(|_| bad())?,
            position: position.parse().map_err(|_| bad())?,
        })
    }
}

/// Which events a subscriber wants.
#[derive(Debug, Clone)]
pub struct Filter {
    pub families: Vec<EventFamily>,
    /// Only events concerning this cell, if set.
    pub cell_id: Option<String>,
}

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        self.families.contains(&event.family())
            && self
                .cell_id
                .as_deref()
                .is_none_or(|c| event.concerns_cell(c))
    }
}

fn decode<T: DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(%key, error = %e, "cannot decode a watched record; skipping its event");
            None
        }
    }
}

/// The events one store change means, in a fixed order.
pub fn translate(change: &WatchEvent) -> Vec<Event> {
    let key = change.kv.key.as_str();
    let prev = change.prev.as_ref().map(|p| p.value.as_slice());
    let now = (change.kind == EventKind::Put).then_some(change.kv.value.as_slice());
    match keys::family(key) {
        Some(Family::Desired) => {
            let (before, after) = (
                prev.and_then(|v| decode::<DesiredLrp>(key, v)),
                now.and_then(|v| decode(key, v)),
            );
            match (before, after) {
                (None, Some(desired_lrp)) => vec![Event::DesiredLrpCreated { desired_lrp }],
                (Some(before), Some(after)) => vec![Event::DesiredLrpChanged { before, after }],
                (Some(desired_lrp), None) => vec![Event::DesiredLrpRemoved { desired_lrp }],
                (None, None) => vec![],
            }
        }
        Some(Family::Actual) => {
            let (before, after) = (
                prev.and_then(|v| decode::<ActualLrp>(key, v)),
                now.and_then(|v| decode::<ActualLrp>(key, v)),
            );
            match (before, after) {
                (None, Some(actual_lrp)) => vec![Event::ActualLrpInstanceCreated { actual_lrp }],
                (Some(before), Some(after)) => {
                    // A crash bumps the count, or resets it to 1 after five minutes running; then
                    // the record leaves its cell with a fresh reason. (A reset from 1 to 1 with the
                    // very same reason and an immediate restart looks like an unclaim; the
                    // instance_changed event still tells of it.)
                    use diego_model::ActualLrpState::*;
                    let left_cell = matches!(before.state, Claimed | Running)
                        && matches!(after.state, Crashed | Unclaimed);
                    let crashed = after.crash_count != before.crash_count
                        || (left_cell
                            && (after.state == Crashed
                                || after.crash_reason != before.crash_reason));
                    let crash = crashed.then(|| Event::ActualLrpCrashed {
                        process_guid: after.process_guid.clone(),
                        index: after.index,
                        domain: after.domain.clone(),
                        instance_guid: before.instance_guid.clone(),
                        cell_id: before.cell_id.clone(),
                        crash_count: after.crash_count,
                        crash_reason: after.crash_reason.clone(),
                        since: after.since,
                    });
                    let mut events = vec![Event::ActualLrpInstanceChanged { before, after }];
                    events.extend(crash);
                    events
                }
                (Some(actual_lrp), None) => vec![Event::ActualLrpInstanceRemoved { actual_lrp }],
                (None, None) => vec![],
            }
        }
        Some(Family::Task) => {
            let (before, after) = (
                prev.and_then(|v| decode::<Task>(key, v)),
                now.and_then(|v| decode(key, v)),
            );
            match (before, after) {
                (None, Some(task)) => vec![Event::TaskCreated { task }],
                (Some(before), Some(after)) => vec![Event::TaskChanged { before, after }],
                (Some(task), None) => vec![Event::TaskRemoved { task }],
                (None, None) => vec![],
            }
        }
        Some(Family::Presence) => {
            let cell = |kv: &diego_store::KeyValue| {
                diego_store::lock::decode(kv)
                    .ok()
                    .and_then(|lock| decode::<CellPresence>(key, &lock.value))
            };
            match (change.kind, change.prev.as_ref()) {
                (EventKind::Put, None) => cell(&change.kv)
                    .map(|cell| Event::CellPresenceCreated { cell })
                    .into_iter()
                    .collect(),
                (EventKind::Delete, Some(prev)) => cell(prev)
                    .map(|cell| Event::CellPresenceRemoved { cell })
                    .into_iter()
                    .collect(),
                _ => vec![],
            }
        }
        Some(Family::Domain | Family::Lock) | None => vec![],
    }
}

/// Streams the events `filter` admits, after `after` if given, else from now on.
pub async fn subscribe(
    store: &dyn Store,
    after: Option<EventId>,
    filter: Filter,
) -> Result<impl Stream<Item = Result<(EventId, Event), BbsError>> + Send + 'static, BbsError> {
    // Revision 0 asks the store for "from now on"; a resume point always replays from its own
    // revision (at least 1) and skips what the client already has.
    let from = after.map_or(0, |id| id.revision.max(1));
    let watch = store.watch(keys::ROOT, from).await.map_err(|e| match e {
        StoreError::Compacted { requested, compact_revision } => BbsError::new(
            ErrorType::ResourceNotFound,
            format!("events since revision {requested} are no longer kept (oldest: {compact_revision}); re-list and subscribe again"),
        ),
        other => crate::db::read_error(other),
    })?;
    let mut current: Option<Revision> = None;
    let mut position = 0u32;
    Ok(watch.flat_map(move |change| {
        let out: Vec<Result<(EventId, Event), BbsError>> = match change {
            Err(e) => vec![Err(crate::db::read_error(e))],
            Ok(change) => {
                let revision = change.revision();
                if current != Some(revision) {
                    current = Some(revision);
                    position = 0;
                }
                translate(&change)
                    .into_iter()
                    .filter_map(|event| {
                        let id = EventId { revision, position };
                        position += 1;
                        let replayed = after.is_some_and(|a| id <= a);
                        (!replayed && filter.admits(&event)).then_some(Ok((id, event)))
                    })
                    .collect()
            }
        };
        futures::stream::iter(out)
    }))
}

/// The event a stream ends with when its subscriber is cut off for falling behind. Its data is
/// `{"resume_after": "<event id>", "reason": "..."}`: reconnecting with that id as
/// `Last-Event-ID` misses nothing.
pub const CUT_OFF_EVENT: &str = "cut_off";

/// What one subscriber's stream yields.
// One at a time, moved straight into the SSE encoder: boxing the event would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Delivery {
    Event(EventId, Event),
    /// The watch broke (the store went away).
    Error(BbsError),
    /// The subscriber fell behind and is cut off; resume after this id.
    CutOff {
        resume_after: EventId,
        reason: String,
    },
}

/// Serves `events` to one subscriber with bounded memory. A task reads the watch into a
/// channel of `buffer` events; when the subscriber does not take a single event for `stall`
/// while the channel is full, it is cut off: the watch is dropped, the buffered events are
/// freed, and the stream ends with [`Delivery::CutOff`] naming the last event it delivered (or
/// `start`, where it began, when it delivered none). So a stalled client holds neither the
/// store's watch nor an unbounded queue. The task also ends when the subscriber goes away or
/// `shutdown` is cancelled; `permit` (its slot among the subscribers) is released with it.
pub fn bounded<S, P>(
    events: S,
    start: EventId,
    buffer: usize,
    stall: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    permit: P,
) -> impl Stream<Item = Delivery> + Send + 'static
where
    S: Stream<Item = Result<(EventId, Event), BbsError>> + Send + 'static,
    P: Send + 'static,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use tokio::sync::mpsc::{self, error::SendTimeoutError};

    type Item = Result<(EventId, Event), BbsError>;
    let (tx, rx) = mpsc::channel::<Item>(buffer.max(1));
    // Shared so that the reader can free the buffered events at cut-off; the lock is only ever
    // held for a poll or a drain, never across an await.
    let rx = Arc::new(Mutex::new(rx));
    let cut = Arc::new(AtomicBool::new(false));
    let (reader_rx, reader_cut) = (rx.clone(), cut.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let mut events = std::pin::pin!(events);
        loop {
            let item = tokio::select! {
                item = events.next() => item,
                () = tx.closed() => return,
                () = shutdown.cancelled() => return,
            };
            let Some(item) = item else { return };
            match tx.send_timeout(item, stall).await {
                Ok(()) => {}
                Err(SendTimeoutError::Closed(_)) => return,
                Err(SendTimeoutError::Timeout(_)) => {
                    reader_cut.store(true, Ordering::SeqCst);
                    let mut rx = reader_rx.lock().unwrap_or_else(PoisonError::into_inner);
                    rx.close();
                    while rx.try_recv().is_ok() {}
                    tracing::info!(?stall, buffer, "event subscriber fell behind; cut off");
                    return;
                }
            }
        }
    });
    let reason = format!(
        "the subscriber did not read for {stall:?} with {buffer} events waiting; resume after resume_after"
    );
    futures::stream::unfold((rx, cut, start, false), move |(rx, cut, last, done)| {
        let reason = reason.clone();
        async move {
            if done {
                return None;
            }
            let next = std::future::poll_fn(|cx| {
                rx.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .poll_recv(cx)
            })
            .await;
            let cut_off = || Delivery::CutOff {
                resume_after: last,
                reason: reason.clone(),
            };
            match next {
                _ if cut.load(Ordering::SeqCst) => Some((cut_off(), (rx, cut, last, true))),
                Some(Ok((id, event))) => Some((Delivery::Event(id, event), (rx, cut, id, false))),
                Some(Err(e)) => Some((Delivery::Error(e), (rx, cut, last, false))),
                None => None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_parse_and_order() {
        let id: EventId = "42-3".parse().unwrap();
        assert_eq!(
            id,
            EventId {
                revision: 42,
                position: 3
            }
        );
        assert_eq!(id.to_string(), "42-3");
        assert!(
            id < EventId {
                revision: 43,
                position: 0
            }
        );
        assert!("42".parse::<EventId>().is_err());
        assert!("a-b".parse::<EventId>().is_err());
    }
}
