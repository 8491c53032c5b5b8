//! A BBS served in this process over a fresh embedded store, for tests and benches of the
//! crates that talk to a BBS (rep, auctioneer, converger). Unlike the rest of testkit this is
//! async: call it from the test's runtime. The BBS stops and its data is deleted on drop.

use anyhow::Context;
use diego_bbs_client::BbsClient;
use tokio_util::sync::CancellationToken;

use crate::Result;

#[derive(Debug)]
pub struct TestBbs {
    pub client: BbsClient,
    pub url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestBbs {
    /// With Diego's defaults (and no auctioneer URL: start requests go to whoever holds the
    /// `auctioneer` lock, if anyone).
    pub async fn start() -> Result<TestBbs> {
        Self::start_with(diego_bbs::Config::default()).await
    }

    /// With `config`; its `listen` is ignored (a free 127.0.0.1 port is used).
    pub async fn start_with(config: diego_bbs::Config) -> Result<TestBbs> {
        let dir = tempfile::tempdir().context("a temp dir for the BBS")?;
        let store = diego_store_redb::EmbeddedStore::open(dir.path().join("bbs.redb"))
            .await
            .context("open the embedded store")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let shutdown = CancellationToken::new();
        let config = diego_bbs::Config {
            listen: addr,
            ..config
        };
        tokio::spawn(diego_bbs::serve(listener, store, config, shutdown.clone()));
        Ok(TestBbs {
            client: BbsClient::new(&url),
            url,
            shutdown,
            _dir: dir,
        })
    }
}

impl Drop for TestBbs {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
