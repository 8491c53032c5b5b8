//! One router as the emitter feeds it: a task of its own with a queue, so a router that is
//! slow or down delays no other. After a failed send it drops the differences queued behind it
//! and asks for the whole table instead, retrying until the router takes it.

use std::sync::Arc;
use std::time::Duration;

use diego_router::{RouteItem, RouterClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::table::RouteDiff;

#[derive(Debug, Clone)]
pub enum Update {
    /// The emitter's whole table (`PUT`).
    Full(Arc<Vec<RouteItem>>),
    /// A change to it (`unregister` then `register`).
    Diff(Arc<RouteDiff>),
}

/// The emitter's handle on one router's task.
#[derive(Debug)]
pub struct Link {
    updates: mpsc::UnboundedSender<Update>,
}

impl Link {
    /// Starts the task. It sends `index` on `repair` when it needs the whole table again.
    pub fn spawn(
        index: usize,
        client: RouterClient,
        repair: mpsc::UnboundedSender<usize>,
        retry_after: Duration,
        shutdown: CancellationToken,
    ) -> Link {
        let (updates, rx) = mpsc::unbounded_channel();
        tokio::spawn(feed(index, client, rx, repair, retry_after, shutdown));
        Link { updates }
    }

    pub fn send(&self, update: Update) {
        // The task ends only at shutdown, when nothing is sent any more.
        let _ = self.updates.send(update);
    }
}

async fn feed(
    index: usize,
    client: RouterClient,
    mut rx: mpsc::UnboundedReceiver<Update>,
    repair: mpsc::UnboundedSender<usize>,
    retry_after: Duration,
    shutdown: CancellationToken,
) {
    // Out of step with the router: differences mean nothing until it has the whole table.
    let mut stale = false;
    loop {
        let update = tokio::select! {
            _ = shutdown.cancelled() => return,
            update = rx.recv() => match update {
                Some(update) => update,
                None => return,
            },
        };
        let sent = match &update {
            Update::Full(items) => client.put_table(items.as_ref().clone()).await,
            Update::Diff(_) if stale => continue,
            Update::Diff(diff) => send_diff(&client, diff).await,
        };
        match sent {
            Ok(()) => {
                if stale {
                    tracing::info!(
                        router = client.base_url(),
                        "router has the routing table again"
                    );
                }
                stale = false;
            }
            Err(e) => {
                if !stale {
                    tracing::warn!(router = client.base_url(), error = %e, "cannot update the router; resending the whole table");
                }
                stale = true;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_after) => {}
                }
                let _ = repair.send(index);
            }
        }
    }
}

async fn send_diff(
    client: &RouterClient,
    diff: &RouteDiff,
) -> Result<(), diego_router::RouterClientError> {
    if !diff.unregister.is_empty() {
        client.unregister(diff.unregister.clone()).await?;
    }
    if !diff.register.is_empty() {
        client.register(diff.register.clone()).await?;
    }
    Ok(())
}
