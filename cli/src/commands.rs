//! The commands people type: cfdot-style reads printing one JSON record per line (for `jq`),
//! and a few writes.

use std::path::Path;

use anyhow::Context;
use diego_bbs_client::{BbsClient, ClientError, EventStream};
use diego_model::requests::{
    ActualLrpsRequest, DesireTaskRequest, DesiredLrpsRequest, TasksRequest, UpdateDesiredLrpRequest,
};
use diego_model::{DesiredLrp, DesiredLrpUpdate};
use serde::Serialize;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StreamArg {
    Lrps,
    Tasks,
    Cells,
    All,
}

/// The documented exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<crate::policy::Refused>().is_some()
        || error.downcast_ref::<crate::apps::Failed>().is_some()
    {
        return 4;
    }
    if let Some(api) = error.downcast_ref::<diego_apps_api::AppsClientError>() {
        if matches!(api, diego_apps_api::AppsClientError::Transport { .. }) {
            return 12;
        }
        return match api.status() {
            None => 1,
            Some(404) => 3,
            Some(400..=499) => 4,
            Some(_) => 1,
        };
    }
    let Some(client) = error.downcast_ref::<ClientError>() else {
        return 1;
    };
    match client {
        ClientError::Transport { .. } => 12,
        ClientError::Bbs { error, .. } => match error.kind.http_status() {
            404 => 3,
            // The BBS refused the request as asked: bad input, over a limit, a conflict.
            400..=499 => 4,
            _ => 1,
        },
        ClientError::Decode { .. } => 1,
    }
}

/// The reader of standard output went away (`diego actual-lrps | head -1`): the command ends
/// quietly with status 0, as Unix tools do.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct OutputClosed;

fn output_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        OutputClosed.into()
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// Writes `text` and a newline to standard output.
pub fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(output_error)
}

/// Makes a `println!` that hits a closed pipe (anywhere in the binary) end the process quietly
/// with status 0 instead of panicking with a backtrace. Rust ignores SIGPIPE, so a closed pipe
/// is an `EPIPE` write error, which `println!` turns into a panic.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            #[allow(clippy::exit)] // the reader is gone: nothing is left to do or report
            std::process::exit(0);
        }
        default(info);
    }));
}

fn print_lines<T: Serialize>(records: &[T]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(|e| match e.io_error_kind() {
            Some(kind) => output_error(kind.into()),
            None => e.into(),
        })?;
        out.write_all(b"\n").map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path) -> anyhow::Result<T> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON for this command", file.display()))
}

pub async fn desired_lrps(bbs: &BbsClient, domain: String) -> anyhow::Result<()> {
    print_lines(
        &bbs.desired_lrps(&DesiredLrpsRequest {
            domain,
            ..Default::default()
        })
        .await?,
    )
}

pub async fn actual_lrps(
    bbs: &BbsClient,
    domain: String,
    cell_id: String,
    process_guid: String,
) -> anyhow::Result<()> {
    print_lines(
        &bbs.actual_lrps(&ActualLrpsRequest {
            domain,
            cell_id,
            process_guid,
            index: None,
        })
        .await?,
    )
}

pub async fn desire_lrp(bbs: &BbsClient, file: &Path) -> anyhow::Result<()> {
    let lrp: DesiredLrp = read_json(file)?;
    bbs.desire_lrp(&lrp).await?;
    eprintln!(
        "desired LRP {} with {} instance(s)",
        lrp.process_guid, lrp.instances
    );
    Ok(())
}

pub async fn scale(bbs: &BbsClient, process_guid: String, instances: i32) -> anyhow::Result<()> {
    let update = DesiredLrpUpdate {
        instances: Some(instances),
        ..Default::default()
    };
    bbs.update_desired_lrp(&UpdateDesiredLrpRequest {
        process_guid: process_guid.clone(),
        update,
        expected_modification_tag: None,
    })
    .await?;
    eprintln!("scaled {process_guid} to {instances}");
    Ok(())
}

pub async fn remove_lrp(bbs: &BbsClient, process_guid: &str) -> anyhow::Result<()> {
    bbs.remove_desired_lrp(process_guid).await?;
    eprintln!("removed {process_guid}");
    Ok(())
}

pub async fn desire_task(bbs: &BbsClient, file: &Path) -> anyhow::Result<()> {
    let request: DesireTaskRequest = read_json(file)?;
    bbs.desire_task(&request).await?;
    eprintln!("desired task {}", request.task_guid);
    Ok(())
}

pub async fn tasks(bbs: &BbsClient, domain: String, cell_id: String) -> anyhow::Result<()> {
    print_lines(&bbs.tasks(&TasksRequest { domain, cell_id }).await?)
}

pub async fn cells(bbs: &BbsClient) -> anyhow::Result<()> {
    print_lines(&bbs.cells().await?)
}

pub async fn domains(bbs: &BbsClient) -> anyhow::Result<()> {
    print_lines(&bbs.domains().await?)
}

pub async fn locks(bbs: &BbsClient) -> anyhow::Result<()> {
    let all: diego_model::requests::FetchAllLocksResponse = bbs
        .rpc("/v1/locks/fetch_all", &serde_json::json!({}))
        .await?;
    print_lines(&all.resources)
}

pub async fn events(
    bbs: &BbsClient,
    stream: StreamArg,
    cell_id: Option<String>,
    after: Option<String>,
    count: Option<usize>,
) -> anyhow::Result<()> {
    let stream = match stream {
        StreamArg::Lrps => EventStream::Lrps,
        StreamArg::Tasks => EventStream::Tasks,
        StreamArg::Cells => EventStream::Cells,
        StreamArg::All => EventStream::All,
    };
    let mut subscription = bbs.subscribe(stream, cell_id, after);
    let mut seen = 0;
    while count.is_none_or(|c| seen < c) {
        let (id, event) = subscription.next().await?;
        print_line(&serde_json::json!({"id": id, "event": event}).to_string())?;
        seen += 1;
    }
    Ok(())
}

pub async fn store_health(bbs: &BbsClient) -> anyhow::Result<()> {
    print_line(&serde_json::to_string_pretty(&bbs.store_health().await?)?)
}
