//! The log server over real HTTP on 127.0.0.1: ingest, recent lines, live streams, limits, and
//! a sender that keeps working when nobody listens.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diego_logs::{LogClient, LogEnvelope, LogLimits, LogSender, LogServer, LogStream};
use futures::StreamExt;

async fn start(limits: LogLimits) -> Result<(String, LogServer)> {
    let server = LogServer::new(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = server.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, server))
}

fn line(guid: &str, n: usize) -> LogEnvelope {
    LogEnvelope::new(
        guid,
        "APP/PROC/WEB",
        "0",
        LogStream::Stdout,
        format!("line {n}"),
    )
}

fn messages(lines: &[LogEnvelope]) -> Vec<String> {
    lines.iter().map(|l| l.message.clone()).collect()
}

#[tokio::test]
async fn sent_lines_are_recent_in_order() -> Result<()> {
    let (url, _server) = start(LogLimits::default()).await?;
    let sender = LogSender::spawn(&url);
    for n in 0..5 {
        sender.send(line("app-1", n));
    }
    sender.send(LogEnvelope::new(
        "app-2",
        "STG",
        "0",
        LogStream::Stderr,
        "other\n",
    ));
    sender.flush().await;
    let client = LogClient::new(&url);
    let recent = client.recent("app-1").await?;
    assert_eq!(
        messages(&recent),
        (0..5).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );
    let other = client.recent("app-2").await?;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].message, "other");
    assert_eq!(other[0].tag(), "[STG/0]");
    assert_eq!(other[0].stream, LogStream::Stderr);
    assert!(client.recent("nobody").await?.is_empty());
    assert_eq!(sender.dropped(), 0);
    Ok(())
}

#[tokio::test]
async fn a_stream_sees_later_lines_in_order_after_the_recent_ones() -> Result<()> {
    let (url, server) = start(LogLimits::default()).await?;
    let sender = LogSender::spawn(&url);
    sender.send(line("app", 0));
    sender.flush().await;

    let client = LogClient::new(&url);
    let live = client.stream("app", false).await?;
    let with_recent = client.stream("app", true).await?;
    // Both streams are registered once their response headers arrive.
    assert_eq!(server.stream_count(), 2);
    for n in 1..=2_500 {
        sender.send(line("app", n));
        sender.send(line("someone-else", n));
    }
    sender.flush().await;

    let live: Vec<LogEnvelope> = tokio::time::timeout(
        Duration::from_secs(10),
        live.take(2_500)
            .map(|l| l.map_err(anyhow::Error::from))
            .collect::<Vec<_>>(),
    )
    .await
    .context("the live stream stalled")?
    .into_iter()
    .collect::<Result<_>>()?;
    assert_eq!(
        messages(&live),
        (1..=2_500).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );

    let with_recent: Vec<LogEnvelope> = tokio::time::timeout(
        Duration::from_secs(10),
        with_recent
            .take(2_501)
            .map(|l| l.map_err(anyhow::Error::from))
            .collect::<Vec<_>>(),
    )
    .await
    .context("the stream with recent lines stalled")?
    .into_iter()
    .collect::<Result<_>>()?;
    assert_eq!(
        messages(&with_recent),
        (0..=2_500).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );

    // Both readers are gone (their streams were dropped): the next line unregisters them.
    sender.send(line("app", 2_501));
    sender.flush().await;
    assert_eq!(server.stream_count(), 0);
    Ok(())
}

#[tokio::test]
async fn the_recent_cap_drops_the_oldest_and_long_messages_are_truncated() -> Result<()> {
    let limits = LogLimits {
        recent_per_guid: 10,
        max_message_bytes: 1_000,
        ..LogLimits::default()
    };
    let (url, _server) = start(limits).await?;
    let batch: Vec<LogEnvelope> = (0..25).map(|n| line("capped", n)).collect();
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/logs"))
        .json(&batch)
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let recent = LogClient::new(&url).recent("capped").await?;
    assert_eq!(
        messages(&recent),
        (15..25).map(|n| format!("line {n}")).collect::<Vec<_>>()
    );

    let long = LogEnvelope::new(
        "long",
        "APP/PROC/WEB",
        "0",
        LogStream::Stdout,
        "x".repeat(5_000),
    );
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/logs"))
        .json(&[long])
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    let recent = LogClient::new(&url).recent("long").await?;
    assert_eq!(
        recent[0].message,
        format!("{} [truncated 4000 bytes]", "x".repeat(1_000))
    );
    Ok(())
}

#[tokio::test]
async fn memory_stays_within_the_byte_budget_whatever_is_posted() -> Result<()> {
    let budget = 256 * 1024;
    let limits = LogLimits {
        max_total_bytes: budget,
        ..LogLimits::default()
    };
    let (url, server) = start(limits).await?;
    let http = reqwest::Client::new();
    // 40 apps × 50 lines of ~1 KiB: about 2 MiB posted, eight times the budget.
    for app in 0..40 {
        let batch: Vec<LogEnvelope> = (0..50)
            .map(|n| {
                LogEnvelope::new(
                    format!("app-{app}"),
                    "APP/PROC/WEB",
                    "0",
                    LogStream::Stdout,
                    format!("{n:04} {}", "y".repeat(1_000)),
                )
            })
            .collect();
        let response = http
            .post(format!("{url}/v1/logs"))
            .json(&batch)
            .send()
            .await?;
        assert_eq!(response.status(), 204);
        ensure!(
            server.recent_bytes() <= budget,
            "{} bytes kept after app {app}, over the {budget} budget",
            server.recent_bytes()
        );
    }
    ensure!(
        server.recent_bytes() > budget / 2,
        "the budget is used, not wasted"
    );
    // The most recently written app keeps its newest lines; the first apps are forgotten.
    let client = LogClient::new(&url);
    let newest = client.recent("app-39").await?;
    assert_eq!(newest.len(), 50);
    assert!(client.recent("app-0").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversized_batches_are_refused_with_a_message() -> Result<()> {
    let (url, _server) = start(LogLimits::default()).await?;
    let http = reqwest::Client::new();
    let post = |body: Vec<u8>| {
        http.post(format!("{url}/v1/logs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let response = post(b"{\"not\": \"an array\"}".to_vec()).await?;
    assert_eq!(response.status(), 400);
    let message = response.text().await?;
    assert!(
        message.contains("not a JSON array of log envelopes"),
        "{message}"
    );

    let response = post(br#"[{"log_guid": "a"}]"#.to_vec()).await?;
    assert_eq!(response.status(), 400);
    assert!(response.text().await?.contains("missing field"));

    let too_many: Vec<LogEnvelope> = (0..10_001).map(|n| line("a", n)).collect();
    let response = post(serde_json::to_vec(&too_many)?).await?;
    assert_eq!(response.status(), 413);
    let message = response.text().await?;
    assert!(message.contains("10001 envelopes"), "{message}");

    let huge = LogEnvelope::new(
        "a",
        "APP/PROC/WEB",
        "0",
        LogStream::Stdout,
        "y".repeat(9 << 20),
    );
    let response = post(serde_json::to_vec(&[huge])?).await?;
    assert_eq!(response.status(), 413);
    let message = response.text().await?;
    assert!(message.contains("larger than 8388608 bytes"), "{message}");

    // Nothing of the refused batches was kept.
    assert!(LogClient::new(&url).recent("a").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_stalled_stream_reader_is_cut_off_and_never_blocks_writers() -> Result<()> {
    let limits = LogLimits {
        stream_buffer: 100,
        ..LogLimits::default()
    };
    let (url, server) = start(limits).await?;
    // Opened and never read while the lines are posted.
    let stalled = LogClient::new(&url).stream("busy", false).await?;
    assert_eq!(server.stream_count(), 1);

    let http = reqwest::Client::new();
    let padding = "z".repeat(1_000);
    let total = 20 * 1_000;
    for batch in 0..20 {
        let lines: Vec<LogEnvelope> = (0..1_000)
            .map(|n| {
                let mut l = line("busy", batch * 1_000 + n);
                l.message.push_str(&padding);
                l
            })
            .collect();
        let started = Instant::now();
        let response = http
            .post(format!("{url}/v1/logs"))
            .json(&lines)
            .send()
            .await?;
        assert_eq!(response.status(), 204);
        ensure!(
            started.elapsed() < Duration::from_secs(3),
            "a post took {:?} with a stalled reader",
            started.elapsed()
        );
    }
    assert_eq!(
        server.stream_count(),
        0,
        "the stalled stream was not cut off"
    );

    // What the reader gets is a clean, in-order prefix, and then the end of the stream.
    let got: Vec<LogEnvelope> = tokio::time::timeout(
        Duration::from_secs(10),
        stalled
            .map(|l| l.map_err(anyhow::Error::from))
            .collect::<Vec<_>>(),
    )
    .await
    .context("the cut-off stream did not end")?
    .into_iter()
    .collect::<Result<_>>()?;
    ensure!(
        !got.is_empty() && got.len() < total,
        "got {} lines",
        got.len()
    );
    for (n, l) in got.iter().enumerate() {
        assert!(
            l.message.starts_with(&format!("line {n}z")),
            "line {n} is {}",
            &l.message[..20]
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_sender_with_no_server_drops_and_counts_without_blocking() -> Result<()> {
    // A port nobody listens on.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}", listener.local_addr()?)
    };
    let sender = LogSender::spawn(&url);
    let started = Instant::now();
    for n in 0..15_000 {
        sender.send(line("lost", n));
    }
    ensure!(
        started.elapsed() < Duration::from_secs(1),
        "sending took {:?}",
        started.elapsed()
    );
    // The queue holds 10,000; the rest were dropped at once.
    assert!(sender.dropped() >= 5_000, "dropped {}", sender.dropped());
    tokio::time::timeout(Duration::from_secs(15), sender.flush())
        .await
        .context("flush did not finish")?;
    assert_eq!(sender.dropped(), 15_000);

    // A disabled sender is inert: nothing is sent and nothing counts as dropped.
    let disabled = LogSender::disabled();
    disabled.send(line("nowhere", 0));
    disabled.flush().await;
    assert_eq!(disabled.dropped(), 0);
    Ok(())
}

#[tokio::test]
async fn client_errors_name_the_server_and_status() -> Result<()> {
    let (url, _server) = start(LogLimits::default()).await?;
    let client = LogClient::new(&format!("{url}/"));
    // Guids are percent-encoded as one path segment.
    assert!(client.recent("a/b c").await?.is_empty());
    let nowhere = LogClient::new("http://127.0.0.1:1");
    let error = nowhere
        .recent("x")
        .await
        .err()
        .context("expected an error")?;
    assert!(
        error.to_string().contains("cannot reach the log server"),
        "{error}"
    );
    Ok(())
}
