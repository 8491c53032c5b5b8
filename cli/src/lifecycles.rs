//! `diego lifecycles list|add NAME FILE.wasm|remove NAME`: the lifecycles apps can be pushed
//! with, on the running platform, through the apps API. `add` checks the component (the
//! API's host loads it and makes trial calls) and makes it the lifecycle's current version;
//! a refused one exits 4 with the reason.

use std::path::PathBuf;

use crate::apps::Output;
use anyhow::Context;
use diego_apps_api::LifecycleEntry;

#[derive(Debug, clap::Args)]
pub struct LifecyclesArgs {
    #[command(subcommand)]
    command: LifecyclesCommand,
    /// text or json.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

#[derive(Debug, clap::Subcommand)]
enum LifecyclesCommand {
    /// The built-in lifecycles and the added ones, with their versions and the apps using them.
    List,
    /// Add a lifecycle component (a `.wasm` file built for wasm32-wasip2), or a new version of
    /// one: it is checked, stored and used by the next staging of apps that name it.
    Add { name: String, file: PathBuf },
    /// Remove an added lifecycle no app uses.
    Remove { name: String },
}

pub async fn run(api_url: &str, args: LifecyclesArgs) -> anyhow::Result<()> {
    let api = crate::apps::client(api_url);
    match args.command {
        LifecyclesCommand::List => {
            let list = api.lifecycles().await?;
            print(args.output, &list, |list| {
                let mut out = format!(
                    "{:<16} {:<10} {:<10} {:<13} {:<12} {}",
                    "name", "kind", "version", "sha256", "component", "apps"
                );
                for e in list {
                    out.push('\n');
                    out.push_str(&row(e));
                }
                out
            })
        }
        LifecyclesCommand::Add { name, file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            eprintln!(
                "Checking {} ({} KiB) as lifecycle {name}...",
                file.display(),
                bytes.len().div_ceil(1024)
            );
            let entry = api.add_lifecycle(&name, bytes).await?;
            for w in &entry.warnings {
                eprintln!("warning: {w}");
            }
            print(args.output, &entry, |e| {
                let current = e.versions.last();
                format!(
                    "lifecycle {} is now {} ({} versions); restage apps to use it\n{}",
                    e.name,
                    current.map_or("?", |v| v.version.as_str()),
                    e.versions.len(),
                    row(e)
                )
            })
        }
        LifecyclesCommand::Remove { name } => {
            let entry = api.remove_lifecycle(&name).await?;
            print(args.output, &entry, |e| {
                format!("lifecycle {} removed", e.name)
            })
        }
    }
}

fn row(e: &LifecycleEntry) -> String {
    let current = e.versions.last();
    let older: Vec<&str> = e
        .versions
        .iter()
        .rev()
        .skip(1)
        .map(|v| v.version.as_str())
        .collect();
    let mut version = current.map_or("-".to_owned(), |v| v.version.clone());
    if !older.is_empty() {
        version.push_str(&format!(" (also {})", older.join(", ")));
    }
    format!(
        "{:<16} {:<10} {:<10} {:<13} {:<12} {}",
        e.name,
        if e.builtin { "built-in" } else { "added" },
        version,
        current.map_or("-", |v| v.sha256.get(..12).unwrap_or(&v.sha256)),
        current.map_or("-", |v| v.component_name.as_str()),
        if e.apps.is_empty() {
            "-".to_owned()
        } else {
            e.apps.join(", ")
        }
    )
}

fn print<T: serde::Serialize>(
    output: Output,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let rendered = match output {
        Output::Json => serde_json::to_string_pretty(&serde_json::to_value(value)?)?,
        Output::Text => text(value),
    };
    crate::commands::print_line(&rendered)
}
