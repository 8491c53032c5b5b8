//! The long-running roles: `diego bbs` and `diego dev`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

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
    /// The embedded store refuses writes while its disk has less free space than this.
    #[arg(long, default_value_t = 512)]
    min_free_disk_mb: u64,
}

#[derive(Debug, clap::Args)]
pub struct BbsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// The auctioneer to send placement requests to (default: the active brain, found
    /// through its lock).
    #[arg(long, env = "DIEGO_AUCTIONEER_URL")]
    auctioneer_url: Option<String>,
    #[command(flatten)]
    tuning: BbsTuning,
}

/// How the BBS restarts crashed instances and bounds its work.
#[derive(Debug, clap::Args)]
pub struct BbsTuning {
    /// The first crash backoff step, doubled per crash after the third (Diego: 30 s).
    #[arg(long, default_value = "30s", value_parser = crate::cell::parse_duration)]
    crash_backoff_min: Duration,
    /// The most instances one LRP may desire.
    #[arg(long, default_value_t = diego_bbs::DEFAULT_MAX_INSTANCES_PER_LRP)]
    max_instances_per_lrp: i32,
    /// The most records one request may name.
    #[arg(long, default_value_t = diego_bbs::DEFAULT_MAX_RECORDS_PER_REQUEST)]
    max_records_per_request: usize,
    /// An event subscriber whose buffer stays full this long is cut off (it may resume).
    #[arg(long, default_value = "10s", value_parser = crate::cell::parse_duration)]
    subscriber_stall_timeout: Duration,
    /// Full listings built and sent at once (each holds its records until sent).
    #[arg(long, default_value_t = 4)]
    max_concurrent_listings: usize,
    /// After SIGTERM, how long requests in flight may take before the BBS stops anyway.
    #[arg(long, default_value = "3s", value_parser = crate::cell::parse_duration)]
    shutdown_grace: Duration,
}

impl BbsTuning {
    fn apply(&self, config: &mut diego_bbs::Config) {
        config.restart_policy.backoff_min = self.crash_backoff_min;
        config.max_instances_per_lrp = self.max_instances_per_lrp;
        config.max_records_per_request = self.max_records_per_request;
        config.subscriber_stall_timeout = self.subscriber_stall_timeout;
        config.shutdown_grace = self.shutdown_grace;
        config.max_concurrent_listings = self.max_concurrent_listings;
    }
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address the BBS API listens on.
    #[arg(long, default_value = "127.0.0.1:8889")]
    listen: SocketAddr,
    /// Use a throwaway data directory, deleted on stop (default: keep it in `.diego`).
    #[arg(long, conflicts_with = "data_dir")]
    ephemeral: bool,
    /// Kept for old scripts: the data is kept by default now.
    #[arg(long, hide = true)]
    persist: bool,
    /// How many cells to run (each needs root: containers).
    #[arg(long, default_value_t = 1)]
    cells: usize,
    /// Memory of each cell.
    #[arg(long, default_value_t = 4096)]
    cell_memory_mb: i32,
    /// Extra preloaded root filesystems, NAME=DIR (`cflinuxfs4` is made or found for you).
    #[arg(long = "rootfs", value_parser = crate::cell::parse_rootfs)]
    rootfs: Vec<(String, PathBuf)>,
    /// Address of the brain (default: the BBS's port + 1).
    #[arg(long)]
    brain_listen: Option<SocketAddr>,
    /// Address of the apps API, with the blob store and the log server.
    #[arg(long, default_value = "127.0.0.1:8891")]
    api_listen: SocketAddr,
    /// Address the router proxies apps on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    router_listen: SocketAddr,
    /// Address of the router's registration API.
    #[arg(long, default_value = "127.0.0.1:8892")]
    router_admin_listen: SocketAddr,
    /// Address of the ssh proxy (`diego ssh APP`, or `ssh` with a `diego ssh-code`).
    #[arg(long, default_value = "127.0.0.1:2222")]
    ssh_listen: SocketAddr,
    /// Address of the ssh proxy's HTTP API (one-time codes).
    #[arg(long, default_value = crate::ssh::DEFAULT_PROXY_API)]
    ssh_admin_listen: SocketAddr,
    /// Apps are at http://NAME.DOMAIN:ROUTER-PORT (`*.localhost` names loopback).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Mutual TLS between the parts, as in production: a CA and a certificate per role are
    /// made in DATA_DIR/tls (or --tls-dir) on the first start and kept. The router's proxy
    /// stays plain HTTP.
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    tuning: BbsTuning,
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
    let options = diego_store_redb::EmbeddedStoreOptions {
        min_free_bytes: args.min_free_disk_mb.saturating_mul(1 << 20),
        ..Default::default()
    };
    let store = diego_store_redb::EmbeddedStore::open_with(&path, options)
        .await
        .with_context(|| format!("cannot open the embedded store at {}", path.display()))?;
    tracing::info!(path = %path.display(), "store: embedded");
    Ok(store)
}

/// A token cancelled on SIGTERM or ctrl-c.
pub fn shutdown_on_signal() -> CancellationToken {
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

pub async fn bbs(args: BbsArgs, tls: Option<diego_tls::Tls>) -> anyhow::Result<()> {
    let data_dir = args
        .store
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/diego/bbs"));
    let store = open_store(&args.store, &data_dir).await?;
    let mut config = diego_bbs::Config {
        listen: args.listen,
        auctioneer_url: args
            .auctioneer_url
            .map(|url| diego_tls::with_scheme(&url, tls.as_ref())),
        tls,
        ..Default::default()
    };
    args.tuning.apply(&mut config);
    diego_bbs::run(store, config, shutdown_on_signal())
        .await
        .context("the BBS stopped")
}

pub async fn dev(args: DevArgs, tls: &crate::tls::TlsArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match (&args.store.data_dir, args.ephemeral) {
        (Some(dir), _) => dir.clone(),
        (None, false) => PathBuf::from(".diego"),
        (None, true) => {
            temp = tempfile::Builder::new()
                .prefix("diego-dev-")
                .tempdir()
                .context("cannot create a temporary data dir")?;
            temp.path().to_path_buf()
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let cells = if root { args.cells } else { 0 };
    if args.cells > 0 && !root {
        eprintln!(
            "warning: cells run containers and need root; running the BBS and the brain only"
        );
    }
    // The stack rootfs `preloaded:cflinuxfs4` names: made on the first run (debootstrap, a few
    // minutes, progress below), cached after.
    let mut rootfs = args.rootfs.clone();
    if cells > 0 && !rootfs.iter().any(|(name, _)| name == "cflinuxfs4") {
        eprintln!(
            "preparing the stack rootfs for preloaded:cflinuxfs4 (cached after the first run)"
        );
        rootfs.push(("cflinuxfs4".into(), crate::cell::stack_rootfs().await?));
    }

    let (tls, tls_dir) = dev_tls(&args, tls, &data_dir, cells)?;
    let identity = |name: &str| tls.load(name);
    let bbs_tls = identity("bbs")?;
    let scheme = diego_tls::scheme(bbs_tls.as_ref());

    let store = open_store(&args.store, &data_dir.join("bbs")).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another `diego dev` running?)",
                args.listen
            )
        })?;
    let bbs_addr = listener.local_addr()?;
    let url = format!("{scheme}://{bbs_addr}");
    let shutdown = shutdown_on_signal();
    let mut bbs_config = diego_bbs::Config {
        listen: bbs_addr,
        tls: bbs_tls,
        ..Default::default()
    };
    args.tuning.apply(&mut bbs_config);
    // The BBS stops last: cells hand back their work and release their presences through it.
    let bbs_shutdown = CancellationToken::new();
    let bbs = tokio::spawn(diego_bbs::serve(
        listener,
        store,
        bbs_config,
        bbs_shutdown.clone(),
    ));

    // The brain on the next port, with dev-sized intervals.
    let brain_addr = args
        .brain_listen
        .unwrap_or_else(|| std::net::SocketAddr::new(bbs_addr.ip(), bbs_addr.port() + 1));
    let brain_args = brain_args(&[
        "--listen",
        &brain_addr.to_string(),
        "--lock-ttl",
        "5s",
        "--convergence-interval",
        "5s",
    ])?;
    let brain_url = url.clone();
    let brain_tls = identity("brain")?;
    let brain =
        tokio::spawn(async move { crate::brain::run(&brain_url, brain_args, brain_tls).await });

    // The apps API (with the blob store and the log server) and the router with its emitter.
    let api_listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the apps API", args.api_listen))?;
    let router_listener = tokio::net::TcpListener::bind(args.router_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the router", args.router_listen))?;
    let router_admin_listener = tokio::net::TcpListener::bind(args.router_admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the router's registration API",
                args.router_admin_listen
            )
        })?;
    let api_url = format!("{scheme}://{}", api_listener.local_addr()?);
    let router_addr = router_listener.local_addr()?;
    let api_args = crate::platform::ApiArgs {
        listen: args.api_listen,
        public_url: None,
        data_dir: data_dir.join("api"),
        domain: args.domain.clone(),
        router_port: router_addr.port(),
        sync_interval: Duration::from_secs(10),
    };
    let router_args = crate::platform::RouterArgs {
        listen: router_addr,
        admin_listen: args.router_admin_listen,
        index: 0,
        logs_url: Some(api_url.clone()),
        sync_interval: Duration::from_secs(10),
    };
    // Cells stop first (their instances go), then the API and the router, then the BBS.
    let platform_shutdown = CancellationToken::new();
    let api = {
        let (url, token) = (url.clone(), platform_shutdown.clone());
        let tls = identity("api")?;
        tokio::spawn(async move {
            crate::platform::serve_api(api_listener, &url, &api_args, tls, token).await
        })
    };
    let router = {
        let (url, token) = (url.clone(), platform_shutdown.clone());
        let tls = identity("router")?;
        tokio::spawn(async move {
            crate::platform::serve_router(
                router_listener,
                router_admin_listener,
                &url,
                &router_args,
                tls,
                token,
            )
            .await
        })
    };
    // The ssh proxy, and the secret it shares with the cells (made afresh on every start).
    let ssh_secret = crate::ssh::dev_secret();
    let ssh_listener = tokio::net::TcpListener::bind(args.ssh_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the ssh proxy", args.ssh_listen))?;
    let ssh_admin_listener = tokio::net::TcpListener::bind(args.ssh_admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the ssh proxy's API",
                args.ssh_admin_listen
            )
        })?;
    let ssh_addr = ssh_listener.local_addr()?;
    let ssh_args = crate::ssh::SshProxyArgs {
        listen: ssh_addr,
        admin_listen: ssh_admin_listener.local_addr()?,
        data_dir: data_dir.join("ssh-proxy"),
        ssh_secret: ssh_secret.clone(),
        public_endpoint: None,
    };
    let ssh_proxy = {
        let (url, token) = (url.clone(), platform_shutdown.clone());
        let tls = identity("client")?;
        tokio::spawn(async move {
            crate::ssh::serve_proxy(
                ssh_listener,
                ssh_admin_listener,
                &url,
                &ssh_args,
                tls,
                token,
            )
            .await
        })
    };

    let mut cell_tasks = Vec::new();
    for i in 0..cells {
        let cell = crate::cell::CellArgs {
            cell_id: format!("cell-{i}"),
            listen: std::net::SocketAddr::from(([127, 0, 0, 10 + i as u8], 0)),
            zone: "z1".into(),
            data_dir: data_dir.join(format!("cell-{i}")),
            memory_mb: args.cell_memory_mb,
            disk_mb: 16384,
            max_containers: 250,
            rootfs: rootfs.clone(),
            placement_tags: Vec::new(),
            optional_placement_tags: Vec::new(),
            presence_ttl: Duration::from_secs(5),
            sync_interval: Duration::from_secs(10),
            liveness_interval: Duration::from_secs(5),
            // Every dev cell stops at once, so there is nowhere to hand work to: don't wait.
            evacuation_timeout: Duration::from_secs(2),
            cleanup: false,
            logs_url: Some(api_url.clone()),
            ssh_secret: Some(ssh_secret.clone()),
        };
        let config = cell.rep_config(&url, identity(&format!("cell-{i}"))?)?;
        let token = shutdown.clone();
        cell_tasks.push(tokio::spawn(
            async move { diego_rep::run(config, token).await },
        ));
    }
    eprintln!(
        "\ndiego dev {version}\n  BBS      {url}   (OpenAPI: {url}/v1/openapi.json)\n  brain    {scheme}://{brain_addr}\n  apps API {api_url}   (blob store, logs)\n  router   http://{router_addr}   (apps at http://NAME.{domain}:{router_port})\n  ssh      {ssh_addr}   (diego ssh APP; or ssh -p {ssh_port} PROCESS-GUID/0@{ssh_host} with a `diego ssh-code APP`)\n  cells    {cells}{rootfs_note}\n  store    {store}{tls_note}\n\nTry:\n  diego create-buildpack python lifecycles/buildpacks/python\n  diego push hello -p lifecycles/test-apps/python-web\n  curl http://hello.{domain}:{router_port}/\n  diego ssh hello\n  diego app hello; diego logs hello --recent\n  diego desire-lrp examples/lrp.json; diego actual-lrps; diego policy get\n",
        domain = args.domain,
        router_port = router_addr.port(),
        ssh_port = ssh_addr.port(),
        ssh_host = ssh_addr.ip(),
        version = env!("CARGO_PKG_VERSION"),
        tls_note = match &tls_dir {
            Some(dir) => format!(
                "\n  tls      mutual TLS, certificates in {dir} (the router's proxy is plain HTTP)\n\nFirst, where you type the commands below:\n  export DIEGO_TLS_DIR={dir}",
                dir = dir.display()
            ),
            None => String::new(),
        },
        rootfs_note = if cells > 0 {
            format!(
                " (rootfs: {})",
                rootfs
                    .iter()
                    .map(|(n, _)| format!("preloaded:{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            " (not root: no containers)".into()
        },
        store = if args.store.etcd.is_empty() {
            format!(
                "embedded, {} ({})",
                data_dir.join("bbs").display(),
                if args.ephemeral {
                    "deleted on stop"
                } else {
                    "kept; --ephemeral for a throwaway one"
                }
            )
        } else {
            format!("etcd {}", args.store.etcd.join(","))
        },
    );
    shutdown.cancelled().await;
    // Cells evacuate (briefly: there is nowhere to go) and destroy their containers; a stuck
    // one does not hold the stop up for long.
    let cells_done = async {
        for task in cell_tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "a cell stopped"),
                Err(e) => tracing::error!(error = %e, "a cell panicked"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), cells_done)
        .await
        .is_err()
    {
        tracing::warn!("cells did not stop within 5 s; stopping anyway");
    }
    platform_shutdown.cancel();
    for (what, task) in [
        ("the apps API", api),
        ("the router", router),
        ("the ssh proxy", ssh_proxy),
    ] {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %format!("{e:#}"), "{what} stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "{what} panicked"),
            Err(_) => tracing::warn!("{what} did not stop within 5 s"),
        }
    }
    brain.abort();
    bbs_shutdown.cancel();
    bbs.await
        .context("the BBS task failed")?
        .context("the BBS stopped")
}

/// The TLS flags `diego dev`'s roles run with, and the directory it keeps certificates in.
/// With `--tls` (or `--tls-dir`), a CA and one certificate per role and per cell are made in
/// DATA_DIR/tls (or `--tls-dir`) on the first start and kept; explicit `--tls-ca`,
/// `--tls-cert` and `--tls-key` are used as they are, by every role.
fn dev_tls(
    args: &DevArgs,
    given: &crate::tls::TlsArgs,
    data_dir: &std::path::Path,
    cells: usize,
) -> anyhow::Result<(crate::tls::TlsArgs, Option<PathBuf>)> {
    if !args.tls && !given.enabled() {
        return Ok((given.clone(), None));
    }
    if given.tls_dir.is_none() && given.enabled() {
        return Ok((given.clone(), None));
    }
    let dir = given
        .tls_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("tls"));
    let mut hosts: Vec<String> = vec!["127.0.0.1".into(), "localhost".into(), "::1".into()];
    let listens = [
        Some(args.listen),
        args.brain_listen,
        Some(args.api_listen),
        Some(args.router_admin_listen),
    ];
    for addr in listens.into_iter().flatten() {
        if !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
    }
    // Dev cells listen on 127.0.0.(10+i).
    let cell_ips: Vec<String> = (0..cells).map(|i| format!("127.0.0.{}", 10 + i)).collect();
    crate::tls::dev_certs(&dir, hosts, &cell_ips)?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let tls = crate::tls::TlsArgs {
        tls_dir: Some(dir.clone()),
        ..given.clone()
    };
    Ok((tls, Some(dir)))
}

/// The brain's flags as `diego brain` would parse them.
fn brain_args(flags: &[&str]) -> anyhow::Result<crate::brain::BrainArgs> {
    use clap::Parser as _;
    #[derive(Debug, clap::Parser)]
    struct Brain {
        #[command(flatten)]
        brain: crate::brain::BrainArgs,
    }
    let parsed = Brain::try_parse_from(std::iter::once("brain").chain(flags.iter().copied()))
        .context("bad brain settings")?;
    Ok(parsed.brain)
}
