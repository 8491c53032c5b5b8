//! Watches: a replay of the change log, then the writer's live broadcast, with no gap between.
//!
//! A watcher keeps `last`: every change with a revision up to `last` has been delivered or
//! skipped. It subscribes to the broadcast *before* reading anything, so every revision committed
//! after its first read reaches it live; live revisions up to `last` are the ones the replay
//! already covered and are skipped. When the watcher falls so far behind that the broadcast drops
//! messages for it (`Lagged`), it goes back to reading the log from `last + 1`, which has
//! everything the broadcast dropped as long as the log has not been compacted past it.

use std::collections::VecDeque;
use std::sync::Arc;

use diego_store::{Revision, StoreError, WatchEvent, WatchStream};
use futures::StreamExt;
use tokio::sync::broadcast::{self, error::RecvError};
use tracing::debug;

use crate::writer::{Committed, Group};
use crate::{EmbeddedStoreError, Inner, blocking, schema};

pub(crate) async fn watch(
    inner: Arc<Inner>,
    prefix: String,
    from: Revision,
) -> Result<WatchStream, StoreError> {
    if from < 0 {
        return Err(StoreError::InvalidRequest(format!(
            "negative watch revision {from}"
        )));
    }
    let live = inner.subscribe()?;
    let db = inner.db()?;
    // Two lookups in the small, always-cached meta table: not worth a hop to the blocking pool.
    let (current, compacted) = schema::revisions(&db)?;
    let (last, catching_up) = if from == 0 {
        (current, false)
    } else if from <= compacted {
        return Err(StoreError::Compacted {
            requested: from,
            compact_revision: compacted + 1,
        });
    } else {
        (from - 1, from <= current)
    };
    let watcher = Watcher {
        inner,
        live,
        prefix,
        last,
        catching_up,
        pending: VecDeque::new(),
        done: false,
    };
    Ok(futures::stream::unfold(watcher, |mut w| async move {
        let item = w.next().await?;
        Some((item, w))
    })
    .boxed())
}

struct Watcher {
    inner: Arc<Inner>,
    live: broadcast::Receiver<Committed>,
    prefix: String,
    /// Every change up to this revision has been delivered or skipped.
    last: Revision,
    /// The next events come from the change log rather than the broadcast.
    catching_up: bool,
    /// Events read but not yet delivered.
    pending: VecDeque<WatchEvent>,
    done: bool,
}

impl Watcher {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                if let Err(e) = self.replay().await {
                    self.done = true;
                    // A closed store ends its watches quietly; anything else is reported once.
                    return match e {
                        EmbeddedStoreError::Closed => None,
                        e => Some(Err(e.into())),
                    };
                }
                continue;
            }
            match self.live.recv().await {
                Ok(committed) => {
                    let revisions = match committed.as_ref() {
                        Group::Events(revisions) => revisions,
                        Group::InLog { through } => {
                            self.catching_up = *through > self.last;
                            continue;
                        }
                    };
                    for rev in revisions {
                        if rev.revision <= self.last {
                            continue;
                        }
                        let events = rev
                            .events
                            .iter()
                            .filter(|e| e.kv.key.starts_with(&self.prefix));
                        self.pending.extend(events.cloned());
                        self.last = rev.revision;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    debug!(
                        missed,
                        last = self.last,
                        "watch fell behind; reading the change log"
                    );
                    self.catching_up = true;
                }
                Err(RecvError::Closed) => self.done = true,
            }
        }
    }

    /// Reads the next chunk of the change log after `last`.
    async fn replay(&mut self) -> Result<(), EmbeddedStoreError> {
        let db = self.inner.db()?;
        let (prefix, after) = (self.prefix.clone(), self.last);
        let chunk = blocking(move || schema::replay(&db, &prefix, after)).await?;
        self.pending.extend(chunk.events);
        self.last = chunk.through;
        self.catching_up = chunk.through < chunk.current;
        Ok(())
    }
}
