//! The roles around the core: `diego api` (the apps API with the blob store and the log server
//! on one port) and `diego router` (the HTTP router with its route emitter). `diego dev` runs
//! both in its process through [`serve_api`] and [`serve_router`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Address the API (and the blob store and log server) listens on.
    #[arg(long, default_value = "127.0.0.1:8891")]
    pub listen: SocketAddr,
    /// This API's URL as cells and the BBS reach it (default: http://LISTEN, https:// with
    /// mutual TLS).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where apps' records, blobs and logs' spool live.
    #[arg(long, env = "DIEGO_API_DATA_DIR", default_value = "/var/lib/diego/api")]
    pub data_dir: PathBuf,
    /// Apps get `NAME.DOMAIN` as their route.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// The port apps' URLs name (the router's; default 8080).
    #[arg(long, default_value_t = 8080)]
    pub router_port: u16,
    /// How often apps and desired LRPs are compared (the CC-bridge's bulk pass).
    #[arg(long, default_value = "30s", value_parser = crate::cell::parse_duration)]
    pub sync_interval: Duration,
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// Address the router proxies on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the router's registration API (the route emitter's).
    #[arg(long, default_value = "127.0.0.1:8892")]
    pub admin_listen: SocketAddr,
    /// The N of `[RTR/N]` in access logs.
    #[arg(long, default_value_t = 0)]
    pub index: u32,
    /// Where access-log lines go (an apps API's URL); none: not sent.
    #[arg(long, env = "DIEGO_LOGS_URL")]
    pub logs_url: Option<String>,
    /// How often the emitter sends the whole routing table.
    #[arg(long, default_value = "20s", value_parser = crate::cell::parse_duration)]
    pub sync_interval: Duration,
}

pub async fn api(bbs_url: &str, args: ApiArgs, tls: Option<diego_tls::Tls>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = crate::roles::shutdown_on_signal();
    serve_api(listener, bbs_url, &args, tls, shutdown).await
}

/// Serves the apps API, the blob store and the log server on `listener` until `shutdown`;
/// with `tls`, over mutual TLS (cells download, upload and log with their certificates).
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    bbs_url: &str,
    args: &ApiArgs,
    tls: Option<diego_tls::Tls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = diego_tls::Listener::new(listener, tls.as_ref());
    let url = match &args.public_url {
        Some(url) => diego_tls::with_scheme(url, tls.as_ref()),
        None => listener.url()?,
    };
    let blobs = diego_blobstore::BlobStore::open(args.data_dir.join("blobs"))
        .with_context(|| format!("cannot open the blob store in {}", args.data_dir.display()))?;
    let logs = diego_logs::LogServer::new(Default::default());
    let mut config = diego_apps_api::ApiConfig::new(args.data_dir.join("apps"), bbs_url, &url);
    config.logs_url = Some(url.clone());
    config.domain = args.domain.clone();
    config.router_port = args.router_port;
    config.sync_interval = args.sync_interval;
    config.tls = tls;
    let apps = diego_apps_api::AppsApi::open(config).with_context(|| {
        format!(
            "cannot open the apps API's records in {}",
            args.data_dir.display()
        )
    })?;
    let app = diego_telemetry::instrument(
        apps.router().merge(blobs.router()).merge(logs.router()),
        "api",
    );
    let background = {
        let apps = apps.clone();
        let token = shutdown.clone();
        tokio::spawn(async move { apps.run(token).await })
    };
    tracing::info!(%url, "apps API, blob store and log server");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("the apps API stopped")?;
    background.abort();
    Ok(())
}

pub async fn router(
    bbs_url: &str,
    args: RouterArgs,
    tls: Option<diego_tls::Tls>,
) -> anyhow::Result<()> {
    let proxy = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.admin_listen))?;
    let shutdown = crate::roles::shutdown_on_signal();
    serve_router(proxy, admin, bbs_url, &args, tls, shutdown).await
}

/// Serves the router's proxy and admin API and runs its route emitter until `shutdown`. With
/// `tls` the admin API (internal) serves mutual TLS and the emitter and access logs present
/// it; the proxy stays plain HTTP, as Diego's gorouter front does.
pub async fn serve_router(
    proxy: tokio::net::TcpListener,
    admin: tokio::net::TcpListener,
    bbs_url: &str,
    args: &RouterArgs,
    tls: Option<diego_tls::Tls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin = diego_tls::Listener::new(admin, tls.as_ref());
    let admin_url = admin.url()?;
    let config = diego_router::RouterConfig {
        index: args.index,
        ..Default::default()
    };
    let router = match &args.logs_url {
        Some(url) => diego_router::Router::with_access_log(
            config,
            Arc::new(diego_logs::LogSender::spawn_with_tls(
                &diego_tls::with_scheme(url, tls.as_ref()),
                tls.as_ref(),
            )),
        ),
        None => diego_router::Router::new(config),
    };
    let emitter = diego_route_emitter::RouteEmitter::new(
        diego_bbs_client::BbsClient::with_tls(bbs_url, tls.as_ref()),
        vec![admin_url],
        diego_route_emitter::EmitterConfig {
            sync_interval: args.sync_interval,
            emitter_id: format!("route-emitter-{}", args.index),
            tls: tls.clone(),
            ..Default::default()
        },
    );
    let admin_task = tokio::spawn(router.clone().serve_admin(admin, shutdown.clone()));
    let emitter_task = tokio::spawn(emitter.run(shutdown.clone()));
    tracing::info!(proxy = %proxy.local_addr()?, "router");
    router
        .serve_proxy(proxy, shutdown.clone())
        .await
        .context("the router stopped")?;
    shutdown.cancel();
    let _ = admin_task.await;
    match emitter_task.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("the route emitter stopped"),
        Err(e) => Err(e).context("the route emitter panicked"),
    }
}
