//! How the auctioneer talks to cells: a trait, so the same auction runs against reps over HTTP
//! and against simulated cells in the benchmark.

use std::sync::Arc;
use std::time::Duration;

use diego_model::CellPresence;
use diego_rep_client::{CellState, RepClient, RepClientError, Work};

/// One cell, as the auction needs it (Diego's `AuctionCellClient`).
#[async_trait::async_trait]
pub trait CellClient: Send + Sync + std::fmt::Debug {
    /// What the cell has and runs now.
    async fn state(&self) -> Result<CellState, RepClientError>;
    /// Offers `work`; answers the part the cell refused. An error means the outcome is unknown
    /// (the cell may have taken the work).
    async fn perform(&self, work: &Work) -> Result<Work, RepClientError>;
}

/// Makes the client for a cell the BBS lists.
pub trait CellClients: Send + Sync + std::fmt::Debug {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient>;
}

/// Reps over HTTP, sharing one connection pool.
#[derive(Debug, Clone)]
pub struct HttpCells {
    http: reqwest::Client,
}

impl HttpCells {
    /// `timeout` bounds every call to a rep (Diego's `cell_state_timeout`, 10 s).
    pub fn new(timeout: Duration) -> Self {
        Self::with_tls(timeout, None)
    }

    /// As [`HttpCells::new`], presenting `tls`'s identity to reps serving mutual TLS.
    pub fn with_tls(timeout: Duration, tls: Option<&diego_tls::Tls>) -> Self {
        let http = diego_tls::client_builder(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        HttpCells { http }
    }
}

impl CellClients for HttpCells {
    fn client(&self, cell: &CellPresence) -> Arc<dyn CellClient> {
        Arc::new(HttpCell(RepClient::with_http(
            self.http.clone(),
            &cell.rep_url,
        )))
    }
}

#[derive(Debug)]
struct HttpCell(RepClient);

#[async_trait::async_trait]
impl CellClient for HttpCell {
    async fn state(&self) -> Result<CellState, RepClientError> {
        self.0.state().await
    }

    async fn perform(&self, work: &Work) -> Result<Work, RepClientError> {
        self.0.perform(work).await
    }
}
