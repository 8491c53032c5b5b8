//! The commands people type: cfdot-style reads printing one JSON record per line (for `jq`),
//! and a few writes.

use std::path::Path;

use anyhow::Context;
use diego_bbs_client::{BbsClient, ClientError, EventStream};
use diego_model::requests::{
    ActualLrpsRequest, DesireTaskRequest, DesiredLrpsRequest, TasksRequest, UpdateDesiredLrpRequest,
};
use diego_model::{DesiredLrp, DesiredLrpUpdate, ErrorType};
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
    if error.downcast_ref::<crate::policy::Refused>().is_some() {
        return 4;
    }
    match error.downcast_ref::<ClientError>() {
        Some(ClientError::Transport { .. }) => 12,
        Some(e) if e.kind() == Some(ErrorType::ResourceNotFound) => 3,
        _ => 1,
    }
}

fn print_lines<T: Serialize>(records: &[T]) -> anyhow::Result<()> {
    for record in records {
        println!("{}", serde_json::to_string(record)?);
    }
    Ok(())
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
        println!("{}", serde_json::json!({"id": id, "event": event}));
        seen += 1;
    }
    Ok(())
}

pub async fn store_health(bbs: &BbsClient) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&bbs.store_health().await?)?
    );
    Ok(())
}
