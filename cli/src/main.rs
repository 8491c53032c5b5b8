//! `diego`: one binary for every role of the platform and for the commands people type.
//!
//! Exit codes: 0 ok (also when the reader of the output goes away, as in `diego actual-lrps |
//! head -1`) · 1 error · 2 usage · 3 not found · 4 refused (by a policy, by the BBS, the apps
//! API or the ssh proxy: invalid request, over a limit, conflict; a push whose staging or start
//! failed) · 12 BBS or apps API unreachable · 130 interrupted. `diego ssh` exits with the
//! remote command's status.
//!
//! Logs go to stderr, in colour only when stderr is a terminal and `NO_COLOR` is not set, or
//! as JSON lines with `--log-format json`. Every role serves Prometheus metrics at `/metrics`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod apps;
mod bits;
mod brain;
mod cell;
mod commands;
mod lifecycles;
mod manifest;
mod platform;
mod policy;
mod roles;
mod ssh;
mod tls;

#[derive(Debug, Parser)]
#[command(
    name = "diego",
    version,
    about = "Keep desired app instances and one-off tasks running on a fleet of cells"
)]
struct Cli {
    /// The BBS to talk to (without a scheme: http://, or https:// with mutual TLS).
    #[arg(
        long,
        global = true,
        env = "DIEGO_ADDR",
        default_value = "127.0.0.1:8889"
    )]
    bbs_url: String,
    /// The apps API to talk to (`diego api`, or the one `diego dev` runs).
    #[arg(
        long,
        global = true,
        env = "DIEGO_API",
        default_value = "127.0.0.1:8891"
    )]
    api_url: String,
    #[command(flatten)]
    tls: tls::TlsArgs,
    /// Log filter, e.g. `info` or `diego_bbs=debug` (also RUST_LOG).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
    /// Log lines as text, or as one JSON object per line (each with its spans' fields, such as
    /// the `request_id` that follows one placement through the BBS, the brain and a cell).
    #[arg(
        long,
        global = true,
        env = "DIEGO_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform on this machine with zero set-up (embedded store, loopback).
    Dev(roles::DevArgs),
    /// Run the BBS role.
    Bbs(roles::BbsArgs),
    /// Run a cell: the rep, the executor and the container backend (needs root).
    Cell(cell::CellArgs),
    /// Run the brain: the auctioneer and the converger (one active at a time, by lock).
    Brain(brain::BrainArgs),
    /// Run the apps API with the blob store and the log server (the CC-bridge's job).
    Api(platform::ApiArgs),
    /// Run the HTTP router and its route emitter.
    Router(platform::RouterArgs),
    /// Run the ssh proxy: SSH into app instances with one-time codes.
    SshProxy(ssh::SshProxyArgs),
    /// Make a CA and the roles' certificates for mutual TLS (again: new certificates from the
    /// same CA, for rotation).
    Certs(tls::CertsArgs),
    /// See and swap the auction policy at run time.
    Policy(policy::PolicyArgs),
    /// List, add and remove the lifecycles apps are staged and run with.
    Lifecycles(lifecycles::LifecyclesArgs),
    /// Push an app: upload its directory (or name a Docker image), stage it, run it.
    Push {
        #[command(flatten)]
        args: apps::PushArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List apps.
    Apps {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show an app: its settings, URL and every instance.
    App {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Change an app's instances, memory or disk.
    Scale {
        #[command(flatten)]
        args: apps::ScaleArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Start a stopped app.
    Start { name: String },
    /// Stop an app's instances.
    Stop { name: String },
    /// Replace an app's instances with fresh ones.
    Restart { name: String },
    /// Stage an app again (with its lifecycle's current version and the installed
    /// buildpacks) and roll the new droplet out.
    Restage {
        name: String,
        /// How long to wait for staging and the first instance.
        #[arg(long, default_value = "15m", value_parser = crate::cell::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Delete an app and everything it owns.
    Delete {
        name: String,
        /// Do not ask.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Stream an app's logs (staging, app, health, router, cell).
    Logs {
        name: String,
        /// Print the recent lines and stop.
        #[arg(long)]
        recent: bool,
    },
    /// An app's events: crashes, stagings, scaling.
    Events {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show an app's environment variables.
    Env {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Set an environment variable of an app (seen after a restart).
    SetEnv {
        name: String,
        key: String,
        value: String,
    },
    /// Open a shell in an app's instance, run a command there (exiting with its status), or
    /// forward local ports to it.
    Ssh(ssh::SshArgs),
    /// Print a one-time code to log in to an app's instance with a plain ssh client.
    SshCode(ssh::SshCodeArgs),
    /// Let users SSH into an app's instances.
    EnableSsh { name: String },
    /// Refuse SSH into an app's instances.
    DisableSsh { name: String },
    /// Run a one-off task on an app's droplet.
    RunTask {
        name: String,
        command: String,
        /// The task's name.
        #[arg(long)]
        task_name: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Install a buildpack from a directory (with bin/detect and bin/compile or
    /// bin/supply and bin/finalize).
    CreateBuildpack {
        name: String,
        dir: PathBuf,
        /// Its place in detection order (1 = first; default last).
        #[arg(long)]
        position: Option<u32>,
    },
    /// List the installed buildpacks, in detection order.
    Buildpacks {
        #[command(flatten)]
        output: OutputArg,
    },
    /// List desired LRPs (one JSON record per line).
    DesiredLrps {
        #[arg(long, default_value = "")]
        domain: String,
    },
    /// List actual LRPs (one JSON record per line).
    ActualLrps {
        #[arg(long, default_value = "")]
        domain: String,
        #[arg(long, default_value = "")]
        cell_id: String,
        #[arg(long, default_value = "")]
        process_guid: String,
    },
    /// Desire an LRP from Diego JSON (a file, or - for stdin).
    DesireLrp { file: PathBuf },
    /// Change the instance count of a desired LRP.
    ScaleLrp {
        process_guid: String,
        instances: i32,
    },
    /// Remove a desired LRP and retire its instances.
    RemoveLrp { process_guid: String },
    /// Desire a task from a `DesireTaskRequest` JSON (a file, or - for stdin).
    DesireTask { file: PathBuf },
    /// List tasks (one JSON record per line).
    Tasks {
        #[arg(long, default_value = "")]
        domain: String,
        #[arg(long, default_value = "")]
        cell_id: String,
    },
    /// List live cells (one JSON record per line).
    Cells,
    /// List fresh domains.
    Domains,
    /// List locks and presences.
    Locks,
    /// Stream the BBS's events (one JSON event per line), resuming after --after if given.
    BbsEvents {
        #[arg(long, value_enum, default_value = "all")]
        stream: commands::StreamArg,
        #[arg(long)]
        cell_id: Option<String>,
        #[arg(long)]
        after: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Show the store's members and whether it runs degraded.
    StoreHealth,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `-o text|json`.
#[derive(Debug, clap::Args)]
struct OutputArg {
    /// json for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: apps::Output,
}

fn main() -> ExitCode {
    // Containers are started by diego-garden's init helper. The cell links it to this binary
    // (see `cell::init_helper`), so one installed `diego` is the whole platform. It must run
    // before anything starts a thread: it unshares namespaces.
    if let Some(code) = cell::run_as_init_helper() {
        return code;
    }
    commands::quiet_on_closed_stdout();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().init(),
    }
    // Before any role counts anything: what is counted before the recorder exists is lost.
    diego_telemetry::install();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    // Do not wait on blocking work still running (a store read, a rep call) once the command
    // or role is done: what was acknowledged is durable, and a stop must be prompt.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<commands::OutputClosed>().is_some() => ExitCode::SUCCESS,
        // `diego ssh` exits as the remote command did; the command said why already
        Err(ref e) if let Some(ssh::RemoteExit(code)) = e.downcast_ref::<ssh::RemoteExit>() => {
            ExitCode::from(*code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(commands::exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Each role presents its own certificate; commands present `client`'s. `diego dev` picks
    // one per role itself, and `diego certs` needs none.
    let identity = match &cli.command {
        Command::Dev(_) | Command::Certs(_) => None,
        Command::Bbs(_) => cli.tls.load("bbs")?,
        Command::Cell(_) => cli.tls.load("cell")?,
        Command::Brain(_) => cli.tls.load("brain")?,
        Command::Api(_) => cli.tls.load("api")?,
        Command::Router(_) => cli.tls.load("router")?,
        _ => cli.tls.load("client")?,
    };
    tls::set_command_identity(identity.clone());
    let bbs_url = diego_tls::with_scheme(&cli.bbs_url, identity.as_ref());
    let api_url = diego_tls::with_scheme(&cli.api_url, identity.as_ref());
    let bbs = diego_bbs_client::BbsClient::with_tls(&bbs_url, identity.as_ref());
    let api = api_url.as_str();
    match cli.command {
        Command::Dev(args) => roles::dev(args, &cli.tls).await,
        Command::Certs(args) => tls::certs(args),
        Command::Bbs(args) => roles::bbs(args, identity).await,
        Command::Cell(args) => cell::run(&bbs_url, args, identity).await,
        Command::Brain(args) => brain::run(&bbs_url, args, identity).await,
        Command::Api(args) => platform::api(&bbs_url, args, identity).await,
        Command::Router(args) => platform::router(&bbs_url, args, identity).await,
        Command::SshProxy(args) => ssh::proxy(&bbs_url, args, identity).await,
        Command::Policy(args) => policy::run(&bbs, args).await,
        Command::Push { args, output } => apps::push(api, args, output.output).await,
        Command::Apps { output } => apps::apps(api, output.output).await,
        Command::App { name, output } => apps::app(api, &name, output.output).await,
        Command::Scale { args, output } => apps::scale(api, args, output.output).await,
        Command::Start { name } => apps::start(api, &name).await,
        Command::Stop { name } => apps::stop(api, &name).await,
        Command::Restart { name } => apps::restart(api, &name).await,
        Command::Restage { name, timeout } => apps::restage(api, &name, timeout).await,
        Command::Lifecycles(args) => lifecycles::run(api, args).await,
        Command::Delete { name, force } => apps::delete(api, &name, force).await,
        Command::Logs { name, recent } => apps::logs(api, &name, recent).await,
        Command::Events { name, output } => apps::events(api, &name, output.output).await,
        Command::Env { name, output } => apps::env(api, &name, output.output).await,
        Command::SetEnv { name, key, value } => apps::set_env(api, &name, &key, &value).await,
        Command::Ssh(args) => ssh::ssh(api, args).await,
        Command::SshCode(args) => ssh::ssh_code(api, args).await,
        Command::EnableSsh { name } => ssh::set_ssh(api, &name, true).await,
        Command::DisableSsh { name } => ssh::set_ssh(api, &name, false).await,
        Command::RunTask {
            name,
            command,
            task_name,
            output,
        } => apps::run_task(api, &name, &command, task_name, output.output).await,
        Command::CreateBuildpack {
            name,
            dir,
            position,
        } => apps::create_buildpack(api, &name, &dir, position).await,
        Command::Buildpacks { output } => apps::buildpacks(api, output.output).await,
        Command::DesiredLrps { domain } => commands::desired_lrps(&bbs, domain).await,
        Command::ActualLrps {
            domain,
            cell_id,
            process_guid,
        } => commands::actual_lrps(&bbs, domain, cell_id, process_guid).await,
        Command::DesireLrp { file } => commands::desire_lrp(&bbs, &file).await,
        Command::ScaleLrp {
            process_guid,
            instances,
        } => commands::scale(&bbs, process_guid, instances).await,
        Command::RemoveLrp { process_guid } => commands::remove_lrp(&bbs, &process_guid).await,
        Command::DesireTask { file } => commands::desire_task(&bbs, &file).await,
        Command::Tasks { domain, cell_id } => commands::tasks(&bbs, domain, cell_id).await,
        Command::Cells => commands::cells(&bbs).await,
        Command::Domains => commands::domains(&bbs).await,
        Command::Locks => commands::locks(&bbs).await,
        Command::BbsEvents {
            stream,
            cell_id,
            after,
            count,
        } => commands::events(&bbs, stream, cell_id, after, count).await,
        Command::StoreHealth => commands::store_health(&bbs).await,
    }
}
