//! The long-running roles: `diego bbs` and `diego dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use diego_store::Store;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Use this etcd cluster (comma-separated client URLs) instead of the embedded store.
    #[arg(long, env = "DIEGO_ETCD", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Where the embedded store keeps its file.
    #[arg(long, env = "DIEGO_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BbsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// The auctioneer to send placement requests to.
    #[arg(long, env = "DIEGO_AUCTIONEER_URL")]
    auctioneer_url: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address the BBS API listens on.
    #[arg(long, default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// Keep the data directory when stopping (default: a fresh temporary one each run).
    #[arg(long)]
    persist: bool,
}

/// Opens the store the flags name: etcd if given, else the embedded store in `data_dir`.
async fn open_store(
    args: &StoreArgs,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Store>> {
    if !args.etcd.is_empty() {
        let store = diego_store_etcd::EtcdStore::connect(&args.etcd, Default::default())
            .await
            .with_context(|| format!("cannot connect to etcd at {}", args.etcd.join(",")))?;
        tracing::info!(endpoints = %args.etcd.join(","), "store: etcd");
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("bbs.redb");
    let store = diego_store_redb::EmbeddedStore::open(&path)
        .await
        .with_context(|| format!("cannot open the embedded store at {}", path.display()))?;
    tracing::info!(path = %path.display(), "store: embedded");
    Ok(store)
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    trigger.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        trigger.cancel();
    });
    token
}

pub async fn bbs(args: BbsArgs) -> anyhow::Result<()> {
    let data_dir = args
        .store
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/diego/bbs"));
    let store = open_store(&args.store, &data_dir).await?;
    let config = diego_bbs::Config {
        listen: args.listen,
        auctioneer_url: args.auctioneer_url,
        ..Default::default()
    };
    diego_bbs::run(store, config, shutdown_on_signal())
        .await
        .context("the BBS stopped")
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match (&args.store.data_dir, args.persist) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from(".diego"),
        (None, false) => {
            temp = tempfile::Builder::new()
                .prefix("diego-dev-")
                .tempdir()
                .context("cannot create a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    let store = open_store(&args.store, &data_dir).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another `diego dev` running?)",
                args.listen
            )
        })?;
    let url = format!("http://{}", listener.local_addr()?);
    eprintln!(
        "\ndiego dev {version}\n  BBS      {url}   (OpenAPI: {url}/v1/openapi.json)\n  store    {store}\n\nTry:\n  diego desire-lrp examples/lrp.json\n  diego actual-lrps\n  diego events --stream lrps\n",
        version = env!("CARGO_PKG_VERSION"),
        store = if args.store.etcd.is_empty() {
            format!("embedded, {}", data_dir.display())
        } else {
            format!("etcd {}", args.store.etcd.join(","))
        },
    );
    diego_bbs::serve(
        listener,
        store,
        diego_bbs::Config {
            listen: args.listen,
            ..Default::default()
        },
        shutdown_on_signal(),
    )
    .await
    .context("the BBS stopped")
}
