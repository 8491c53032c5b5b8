//! Root-only tests: the executor against real containers (diego-garden's NativeBackend, a
//! busybox rootfs) and a local HTTP server.
//!
//! Run as root: `cargo test -p diego-executor --test root`. Without root they fail under
//! `CI=true` and are skipped (with a message) otherwise.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use common::*;
use diego_executor::{Executor, StepError};
use diego_model::Action;
use support::*;

fn action(json: &str) -> Action {
    serde_json::from_str(json).unwrap()
}

fn setup(c: &Container) -> (Executor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(c.backend.clone(), dir.path());
    (exec, dir)
}

#[tokio::test]
async fn run_streams_tagged_lines_and_reports_exit_status() {
    if !root_or_skip("run_streams_tagged_lines_and_reports_exit_status") {
        return;
    }
    let c = Container::new(1).await;
    let (exec, _dir) = setup(&c);
    let mut logs = exec.subscribe();

    let a = action(
        r#"{"run":{"path":"sh","args":["-c","echo hello; printf 'part'; sleep 0.1; echo ial; echo oops >&2"]}}"#,
    );
    exec.run(&c.handle, &a, ctx("APP/PROC/WEB", "0"))
        .await
        .unwrap();
    let mut lines = render(&drain(&mut logs));
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "APP/PROC/WEB 0 err: oops",
            "APP/PROC/WEB 0 out: Exit status 0",
            "APP/PROC/WEB 0 out: hello",
            "APP/PROC/WEB 0 out: partial",
        ]
    );

    let fail = action(r#"{"run":{"path":"sh","args":["-c","exit 3"],"log_source":"STG"}}"#);
    let err = exec
        .run(&c.handle, &fail, ctx("APP/PROC/WEB", "0"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 3");
    assert_eq!(render(&drain(&mut logs)), vec!["STG 0 out: Exit status 3"]);

    // env (context, then the action's), dir, user and nofile reach the process
    let mut context = ctx("APP", "guid-1");
    context.env = vec![
        diego_model::desired_lrp::EnvironmentVariable::new("FROM_CTX", "ctx"),
        diego_model::desired_lrp::EnvironmentVariable::new("FOO", "ctx"),
    ];
    let a = action(
        r#"{"run":{"path":"sh","args":["-c","echo $FROM_CTX $FOO $(pwd) $(id -u) $(ulimit -n)"],
            "env":[{"name":"FOO","value":"bar"}],"dir":"/tmp","user":"vcap",
            "resource_limits":{"nofile":512}}}"#,
    );
    exec.run(&c.handle, &a, context).await.unwrap();
    assert_eq!(
        render(&drain(&mut logs)),
        vec![
            "APP guid-1 out: ctx bar /tmp 2000 512",
            "APP guid-1 out: Exit status 0"
        ]
    );

    let missing = Action::run("/no/such/program", &[]);
    let err = exec
        .run(&c.handle, &missing, ctx("APP", "0"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("failed to run /no/such/program"),
        "{err}"
    );
    c.destroy().await;
}

#[tokio::test]
async fn download_streams_a_tgz_in_uses_the_cache_and_refuses_bad_checksums() {
    if !root_or_skip("download_streams_a_tgz_in_uses_the_cache_and_refuses_bad_checksums") {
        return;
    }
    let c = Container::new(2).await;
    let (exec, _dir) = setup(&c);
    let server = Server::start().await;
    let archive = tgz(&[("app/", b""), ("app/start.sh", b"echo started\n")]);
    server.files.put("app.tgz", archive.clone());
    let download = |to: &str, algorithm: &str, value: &str| {
        action(&format!(
            r#"{{"download":{{"artifact":"app","from":"{}","to":"{to}","cache_key":"app-v1",
                "checksum_algorithm":"{algorithm}","checksum_value":"{value}"}}}}"#,
            server.file_url("app.tgz")
        ))
    };
    let sha = sha256_hex(&archive);
    exec.run(
        &c.handle,
        &download("/home/vcap", "sha256", &sha),
        ctx("STG", "0"),
    )
    .await
    .unwrap();
    assert_eq!(
        c.output(&["cat", "/home/vcap/app/start.sh"]).await,
        "echo started\n"
    );
    // the second download comes from the cache
    exec.run(
        &c.handle,
        &download("/second", "sha256", &sha),
        ctx("STG", "0"),
    )
    .await
    .unwrap();
    assert_eq!(
        c.output(&["cat", "/second/app/start.sh"]).await,
        "echo started\n"
    );
    assert_eq!(server.files.hits("app.tgz"), 1);

    // a wrong checksum is refused and nothing reaches the container
    let err = exec
        .run(
            &c.handle,
            &download("/third", "sha256", &"0".repeat(64)),
            ctx("STG", "0"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Downloading app failed: checksum mismatch"),
        "{err}"
    );
    assert_eq!(
        c.output(&["ls", "/"])
            .await
            .lines()
            .filter(|l| *l == "third")
            .count(),
        0
    );
    c.destroy().await;
}

#[tokio::test]
async fn upload_posts_a_directory_and_a_file() {
    if !root_or_skip("upload_posts_a_directory_and_a_file") {
        return;
    }
    let c = Container::new(3).await;
    let (exec, _dir) = setup(&c);
    let server = Server::start().await;
    let a = action(&format!(
        r#"{{"serial":{{"actions":[
            {{"run":{{"path":"sh","args":["-c","mkdir -p /out/sub && echo one > /out/a && echo two > /out/sub/b && echo drop > /droplet"]}}}},
            {{"upload":{{"from":"/out","to":"{0}/upload/dir"}}}},
            {{"upload":{{"artifact":"droplet","from":"/droplet","to":"{0}/upload/droplet"}}}}]}}}}"#,
        server.url
    ));
    exec.run(&c.handle, &a, ctx("STG", "0")).await.unwrap();
    let uploads = server.files.uploads();
    assert_eq!(uploads.len(), 2);
    let mut files = untar(&uploads[0].body);
    files.sort();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("a")) && names.iter().any(|n| n.ends_with("sub/b")),
        "{names:?}"
    );
    assert!(files.iter().any(|(_, d)| d == b"one\n"));
    assert_eq!(&uploads[1].body[..], b"drop\n");
    c.destroy().await;
}

#[tokio::test]
async fn timeout_kills_a_sleeping_process() {
    if !root_or_skip("timeout_kills_a_sleeping_process") {
        return;
    }
    let c = Container::new(4).await;
    let (exec, _dir) = setup(&c);
    let mut logs = exec.subscribe();
    let a = action(
        r#"{"timeout":{"timeout_ms":300,"action":{"run":{"path":"sleep","args":["100"]}}}}"#,
    );
    let started = Instant::now();
    let err = exec.run(&c.handle, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 300ms");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // SIGTERM: 128 + 15
    assert_eq!(
        render(&drain(&mut logs)),
        vec!["APP 0 out: Exit status 143"]
    );
    assert_eq!(c.processes().await, Vec::<String>::new());

    // A shell's children go too: the signal reaches the whole process group.
    let a = action(
        r#"{"timeout":{"timeout_ms":300,"action":{"run":{"path":"sh","args":["-c","sleep 100; true"]}}}}"#,
    );
    let err = exec.run(&c.handle, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 300ms");
    assert_eq!(c.processes().await, Vec::<String>::new());
    c.destroy().await;
}

#[tokio::test]
async fn codependent_exit_cancels_the_sleeper() {
    if !root_or_skip("codependent_exit_cancels_the_sleeper") {
        return;
    }
    let c = Container::new(5).await;
    let (exec, _dir) = setup(&c);
    let a = action(
        r#"{"codependent":{"actions":[
            {"run":{"path":"sleep","args":["100"]}},
            {"run":{"path":"sh","args":["-c","sleep 0.2; exit 0"]}}]}}"#,
    );
    let started = Instant::now();
    let err = exec.run(&c.handle, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Codependent step exited: action 1 (run sh)"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(c.processes().await, Vec::<String>::new());
    c.destroy().await;
}

#[tokio::test]
async fn cancelling_a_tree_leaves_no_process_behind() {
    if !root_or_skip("cancelling_a_tree_leaves_no_process_behind") {
        return;
    }
    let c = Container::new(6).await;
    let (exec, _dir) = setup(&c);
    let mut logs = exec.subscribe();
    // one process ignores SIGTERM: it gets SIGKILL after the (500 ms) grace period
    let a = action(
        r#"{"serial":{"actions":[
            {"parallel":{"actions":[
                {"run":{"path":"sleep","args":["100"]}},
                {"timeout":{"timeout_ms":60000,"action":{"run":{"path":"sh","args":["-c","trap '' TERM; echo ready; while :; do :; done"]}}}},
                {"try":{"action":{"run":{"path":"sleep","args":["101"]}}}}]}},
            {"run":{"path":"echo","args":["never"]}}]}}"#,
    );
    let context = ctx("APP", "0");
    let cancel = context.cancel.clone();
    let handle = c.handle.clone();
    let run = tokio::spawn({
        let exec = exec.clone();
        async move { exec.run(&handle, &a, context).await }
    });
    // wait until all three run (the trap is set once "ready" is printed)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        seen.extend(render(&drain(&mut logs)));
        let ps = c.processes().await;
        if seen.iter().any(|l| l.ends_with("out: ready")) && ps.len() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "processes did not start: {ps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("cancellation is prompt")
        .unwrap();
    assert_eq!(result, Err(StepError::Cancelled));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited for the grace period"
    );
    assert_eq!(c.processes().await, Vec::<String>::new());
    seen.extend(render(&drain(&mut logs)));
    assert!(
        seen.iter()
            .any(|l| l == "APP 0 out: Exit status 137 (exceeded 500ms graceful shutdown interval)"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("never")), "{seen:?}");
    c.destroy().await;
}

#[tokio::test]
async fn an_abandoned_run_kills_its_process() {
    if !root_or_skip("an_abandoned_run_kills_its_process") {
        return;
    }
    let c = Container::new(7).await;
    let (exec, _dir) = setup(&c);
    let handle = c.handle.clone();
    let run = tokio::spawn(async move {
        exec.run(&handle, &Action::run("sleep", &["100"]), ctx("APP", "0"))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.processes().await.is_empty() {
        assert!(Instant::now() < deadline, "sleep did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // dropped without cancelling its token
    run.abort();
    let _ = run.await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ps = c.processes().await;
        if ps.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {ps:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.destroy().await;
}
