//! The server's memory: the recent lines of each app and the live streams following it.
//!
//! One mutex guards both, so a stream that asks for the recent lines and then follows new ones
//! sees every line exactly once. Everything is bounded: lines per app, apps (the least recently
//! written is forgotten), the bytes of all recent lines together (the oldest lines of the least
//! recently written app go first), and each stream's queue — a stream that does not keep up is cut off
//! rather than allowed to hold memory or slow down writers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::envelope::LogEnvelope;

/// How much the hub keeps; see [`crate::LogLimits`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HubLimits {
    pub recent_per_guid: usize,
    pub max_guids: usize,
    pub max_total_bytes: usize,
    pub stream_buffer: usize,
    pub max_streams: usize,
}

/// A live stream's end of the fan-out.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub recent: Vec<Arc<LogEnvelope>>,
    pub lines: mpsc::Receiver<Arc<LogEnvelope>>,
    /// Unregisters the stream when the reader goes away.
    pub guard: SubscriptionGuard,
}

/// Removes its stream from the hub when dropped (the client went away or the body ended).
#[derive(Debug)]
pub(crate) struct SubscriptionGuard {
    hub: Arc<Hub>,
    guid: String,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.guid, self.id);
    }
}

#[derive(Debug)]
pub(crate) struct Hub {
    limits: HubLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    recent: HashMap<String, Recent>,
    /// Write sequence -> guid: the first entry is the least recently written app.
    by_last_write: BTreeMap<u64, String>,
    next_seq: u64,
    /// What every recent line counts for together (see [`line_bytes`]).
    total_bytes: usize,
    streams: HashMap<String, Vec<Stream>>,
    stream_count: usize,
    next_stream_id: u64,
}

#[derive(Debug, Default)]
struct Recent {
    lines: VecDeque<Arc<LogEnvelope>>,
    /// This app's key in `State::by_last_write`.
    last_write: Option<u64>,
}

#[derive(Debug)]
struct Stream {
    id: u64,
    tx: mpsc::Sender<Arc<LogEnvelope>>,
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub(crate) struct TooManyStreams(pub usize);

impl Hub {
    pub fn new(limits: HubLimits) -> Self {
        Hub {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that
        // matters more than losing logs, so a poisoned lock is used as is.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `lines` to their apps' recent lines and hands them to the live streams.
    pub fn publish(&self, lines: Vec<LogEnvelope>) {
        let mut state = self.lock();
        for line in lines {
            let line = Arc::new(line);
            state.remember(&line, &self.limits);
            state.fan_out(&line);
        }
    }

    /// The recent lines of `guid`, oldest first.
    pub fn recent(&self, guid: &str) -> Vec<Arc<LogEnvelope>> {
        let state = self.lock();
        state
            .recent
            .get(guid)
            .map(|r| r.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Follows `guid` from now on; with `with_recent`, the recent lines come first, with no gap
    /// and no repeat between them and the live ones.
    pub fn subscribe(
        self: &Arc<Self>,
        guid: &str,
        with_recent: bool,
    ) -> Result<Subscription, TooManyStreams> {
        let mut state = self.lock();
        if state.stream_count >= self.limits.max_streams {
            return Err(TooManyStreams(self.limits.max_streams));
        }
        let (tx, rx) = mpsc::channel(self.limits.stream_buffer.max(1));
        let id = state.next_stream_id;
        state.next_stream_id += 1;
        state
            .streams
            .entry(guid.to_owned())
            .or_default()
            .push(Stream { id, tx });
        state.stream_count += 1;
        let recent = match (with_recent, state.recent.get(guid)) {
            (true, Some(r)) => r.lines.iter().cloned().collect(),
            _ => Vec::new(),
        };
        Ok(Subscription {
            recent,
            lines: rx,
            guard: SubscriptionGuard {
                hub: Arc::clone(self),
                guid: guid.to_owned(),
                id,
            },
        })
    }

    fn unsubscribe(&self, guid: &str, id: u64) {
        let mut state = self.lock();
        let State {
            streams,
            stream_count,
            ..
        } = &mut *state;
        if let Some(list) = streams.get_mut(guid) {
            let before = list.len();
            list.retain(|s| s.id != id);
            *stream_count -= before - list.len();
            if list.is_empty() {
                streams.remove(guid);
            }
        }
    }

    /// What the recent lines of every app count for together (see [`line_bytes`]).
    pub fn recent_bytes(&self) -> usize {
        self.lock().total_bytes
    }

    /// Live streams open now (for tests and metrics).
    pub fn stream_count(&self) -> usize {
        self.lock().stream_count
    }
}

/// What one recent line counts for: its strings and a fixed share for the envelope, its
/// `Arc` and its queue slot.
pub(crate) fn line_bytes(line: &LogEnvelope) -> usize {
    const OVERHEAD: usize = 128;
    OVERHEAD
        + line.log_guid.len()
        + line.source_type.len()
        + line.instance.len()
        + line.message.len()
}

impl State {
    fn remember(&mut self, line: &Arc<LogEnvelope>, limits: &HubLimits) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let recent = self.recent.entry(line.log_guid.clone()).or_default();
        if let Some(previous) = recent.last_write.replace(seq) {
            self.by_last_write.remove(&previous);
        }
        recent.lines.push_back(Arc::clone(line));
        self.total_bytes += line_bytes(line);
        while recent.lines.len() > limits.recent_per_guid {
            if let Some(dropped) = recent.lines.pop_front() {
                self.total_bytes -= line_bytes(&dropped);
            }
        }
        self.by_last_write.insert(seq, line.log_guid.clone());
        while self.recent.len() > limits.max_guids {
            let Some((_, oldest)) = self.by_last_write.pop_first() else {
                break;
            };
            debug!(log_guid = %oldest, "forgetting the recent lines of the least recently written app");
            self.forget(&oldest);
        }
        self.trim_to(limits.max_total_bytes);
    }

    /// Drops the oldest lines of the least recently written app until the recent lines fit in
    /// `max_bytes`; the line just written is kept even if it alone is over.
    fn trim_to(&mut self, max_bytes: usize) {
        while self.total_bytes > max_bytes {
            let Some((&seq, guid)) = self.by_last_write.first_key_value() else {
                break;
            };
            let guid = guid.clone();
            let Some(recent) = self.recent.get_mut(&guid) else {
                self.by_last_write.remove(&seq);
                continue;
            };
            let newest_app = seq + 1 == self.next_seq;
            if newest_app && recent.lines.len() <= 1 {
                break;
            }
            if let Some(dropped) = recent.lines.pop_front() {
                self.total_bytes -= line_bytes(&dropped);
            }
            if recent.lines.is_empty() {
                self.by_last_write.remove(&seq);
                self.recent.remove(&guid);
            }
        }
    }

    /// Forgets every recent line of `guid` (its `by_last_write` entry is the caller's).
    fn forget(&mut self, guid: &str) {
        if let Some(recent) = self.recent.remove(guid) {
            self.total_bytes -= recent.lines.iter().map(|l| line_bytes(l)).sum::<usize>();
        }
    }

    fn fan_out(&mut self, line: &Arc<LogEnvelope>) {
        let Some(list) = self.streams.get_mut(&line.log_guid) else {
            return;
        };
        let before = list.len();
        list.retain(|stream| match stream.tx.try_send(Arc::clone(line)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(log_guid = %line.log_guid, "a log stream reader is not keeping up; cutting it off");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.stream_count -= before - list.len();
        if list.is_empty() {
            self.streams.remove(&line.log_guid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::LogStream;

    fn limits() -> HubLimits {
        HubLimits {
            recent_per_guid: 3,
            max_guids: 2,
            max_total_bytes: usize::MAX,
            stream_buffer: 2,
            max_streams: 10,
        }
    }

    fn line(guid: &str, n: usize) -> LogEnvelope {
        LogEnvelope::new(guid, "APP/PROC/WEB", "0", LogStream::Stdout, n.to_string())
    }

    fn messages(lines: &[Arc<LogEnvelope>]) -> Vec<String> {
        lines.iter().map(|l| l.message.clone()).collect()
    }

    #[test]
    fn keeps_the_newest_lines_and_the_most_recently_written_apps() {
        let hub = Hub::new(limits());
        hub.publish((0..5).map(|n| line("a", n)).collect());
        assert_eq!(messages(&hub.recent("a")), ["2", "3", "4"]);
        hub.publish(vec![line("b", 0)]);
        hub.publish(vec![line("a", 5)]);
        hub.publish(vec![line("c", 0)]);
        // b was written least recently, so it is the one forgotten.
        assert!(hub.recent("b").is_empty());
        assert_eq!(messages(&hub.recent("a")), ["3", "4", "5"]);
        assert_eq!(messages(&hub.recent("c")), ["0"]);
    }

    #[test]
    fn a_full_stream_is_cut_off_and_a_dropped_one_unregistered() {
        let hub = Arc::new(Hub::new(limits()));
        let mut slow = hub.subscribe("a", false).unwrap();
        let gone = hub.subscribe("a", false).unwrap();
        assert_eq!(hub.stream_count(), 2);
        drop(gone);
        assert_eq!(hub.stream_count(), 1);
        hub.publish((0..3).map(|n| line("a", n)).collect());
        assert_eq!(hub.stream_count(), 0);
        assert_eq!(slow.lines.try_recv().unwrap().message, "0");
        assert_eq!(slow.lines.try_recv().unwrap().message, "1");
        assert!(slow.lines.try_recv().is_err());
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_lines_of_the_least_recently_written_app_first() {
        let one = line_bytes(&line("a", 0));
        let hub = Hub::new(HubLimits {
            recent_per_guid: 100,
            max_guids: 100,
            max_total_bytes: 4 * one,
            ..limits()
        });
        hub.publish((0..3).map(|n| line("a", n)).collect());
        hub.publish((0..2).map(|n| line("b", n)).collect());
        // a is the least recently written: its oldest line went.
        assert_eq!(messages(&hub.recent("a")), ["1", "2"]);
        assert_eq!(messages(&hub.recent("b")), ["0", "1"]);
        assert_eq!(hub.recent_bytes(), 4 * one);
        hub.publish((2..5).map(|n| line("b", n)).collect());
        // a is forgotten entirely before b loses anything more than it must.
        assert!(hub.recent("a").is_empty());
        assert_eq!(messages(&hub.recent("b")), ["1", "2", "3", "4"]);
        assert!(hub.recent_bytes() <= 4 * one);
    }
}
