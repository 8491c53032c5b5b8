//! `diego policy list|get|set P|try P`: the operator's view of the auction policy, through the
//! active brain's API (found through its lock in the BBS, or `--brain-url`).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use diego_auctioneer::{PolicyChoice, PolicyListEntry, PolicyStatus, TryReport};
use diego_bbs_client::BbsClient;
use serde::de::DeserializeOwned;

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The brain to ask (default: the active one, from its lock in the BBS).
    #[arg(long, env = "DIEGO_BRAIN_URL", global = true)]
    brain_url: Option<String>,
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCommand {
    /// The built-in policies and the active one.
    List,
    /// The active policy, its fallbacks and faults.
    Get,
    /// Check, trial-run and activate a policy: a built-in's name or a `.wasm` component file.
    Set { policy: String },
    /// Place the pending work with a candidate policy and with the active one, print where
    /// each would put it, and change nothing.
    Try { policy: String },
}

/// A refused policy (bad component, failed canary): the documented exit code 4.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub async fn run(bbs: &BbsClient, args: PolicyArgs) -> anyhow::Result<()> {
    let brain = match args.brain_url {
        Some(url) => url,
        None => active_brain(bbs).await?,
    };
    let identity = crate::tls::command_identity();
    let brain = diego_tls::with_scheme(brain.trim_end_matches('/'), identity);
    let http = diego_tls::client_builder(identity)
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an HTTP client")?;
    match args.command {
        PolicyCommand::List => {
            let list: Vec<PolicyListEntry> = get(&http, &format!("{brain}/v1/policy/list")).await?;
            for p in list {
                println!(
                    "{mark} {name:<12} {kind:<10} {sha} {desc}",
                    mark = if p.active { "*" } else { " " },
                    name = p.name,
                    kind = if p.builtin { "built-in" } else { "component" },
                    sha = short(&p.sha256),
                    desc = p.description
                );
            }
        }
        PolicyCommand::Get => {
            let status: PolicyStatus = get(&http, &format!("{brain}/v1/policy")).await?;
            print_status(&status);
        }
        PolicyCommand::Set { policy } => {
            let choice = choice(&policy)?;
            let status: PolicyStatus =
                post(&http, &format!("{brain}/v1/policy/set"), &choice).await?;
            println!("policy set");
            print_status(&status);
        }
        PolicyCommand::Try { policy } => {
            let choice = choice(&policy)?;
            let report: TryReport =
                post(&http, &format!("{brain}/v1/policy/try",), &choice).await?;
            print_try(&report);
        }
    }
    Ok(())
}

/// The active brain's URL, from the `auctioneer` lock.
async fn active_brain(bbs: &BbsClient) -> anyhow::Result<String> {
    match bbs.fetch_lock("auctioneer").await {
        Ok(lock) if !lock.value.is_empty() => Ok(lock.value),
        Ok(_) => bail!("the auctioneer lock names no brain URL"),
        Err(e) if e.kind() == Some(diego_model::ErrorType::ResourceNotFound) => {
            bail!("no brain is active (is `diego brain` running?); or pass --brain-url")
        }
        Err(e) => Err(e).context("cannot find the active brain"),
    }
}

/// A built-in's name, or a component file.
fn choice(policy: &str) -> anyhow::Result<PolicyChoice> {
    let path = Path::new(policy);
    if path.is_file() {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(PolicyChoice::component(&bytes));
    }
    if policy.ends_with(".wasm") || policy.contains('/') {
        bail!("no such file: {policy}");
    }
    Ok(PolicyChoice::builtin(policy))
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn print_status(s: &PolicyStatus) {
    let kind = if s.builtin { "built-in" } else { "component" };
    println!(
        "policy:       {} ({kind}{})",
        s.name,
        if s.sha256.is_empty() {
            String::new()
        } else {
            format!(", sha256 {}", short(&s.sha256))
        }
    );
    println!("placing with: {}", s.placing_with);
    println!("fallbacks:    {}", s.fallbacks);
    if let Some(fault) = &s.last_fault {
        println!("last fault:   {fault}");
    }
    if let Some(d) = &s.degraded {
        println!("degraded:     {} switched off: {}", d.name, d.reason);
    }
    if let Some(note) = &s.note {
        println!("note:         {note}");
    }
}

fn print_try(r: &TryReport) {
    println!(
        "{} pending item(s) on {} cell(s): active {} vs candidate {}",
        r.items.len(),
        r.cells,
        r.active_policy,
        r.candidate_policy
    );
    for item in &r.items {
        let what = match (&item.process_guid, item.index, &item.task_guid) {
            (Some(guid), Some(index), _) => format!("lrp {guid}/{index}"),
            (_, _, Some(task)) => format!("task {task}"),
            _ => "?".to_string(),
        };
        let place = |p: &diego_auctioneer::TryPlacement| match (&p.cell_id, &p.error) {
            (Some(cell), _) => cell.clone(),
            (None, Some(e)) => format!("unplaced ({e})"),
            (None, None) => "unplaced".to_string(),
        };
        println!(
            "{mark} {what}: {} -> {}",
            place(&item.active),
            place(&item.candidate),
            mark = if item.differs { "≠" } else { "=" }
        );
    }
    println!(
        "{} differ; placed: active {}, candidate {}. Nothing was changed.",
        r.differing, r.placed_by_active, r.placed_by_candidate
    );
}

async fn get<T: DeserializeOwned>(http: &reqwest::Client, url: &str) -> anyhow::Result<T> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot reach the brain at {url}"))?;
    decode(url, response).await
}

async fn post<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    body: &PolicyChoice,
) -> anyhow::Result<T> {
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the brain at {url}"))?;
    decode(url, response).await
}

async fn decode<T: DeserializeOwned>(url: &str, response: reqwest::Response) -> anyhow::Result<T> {
    let status = response.status();
    let body = response
        .bytes()
        .await
        .context("the brain's answer broke off")?;
    if status.is_client_error() {
        let message = serde_json::from_slice::<diego_model::requests::ErrorResponse>(&body)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        return Err(Refused(message).into());
    }
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).with_context(|| format!("unexpected answer from {url}"))
}
