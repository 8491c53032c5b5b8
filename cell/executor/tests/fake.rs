//! The executor's semantics against diego-garden's in-memory fake backend (no root): its
//! processes print their argv and exit 0, or N for `exit N`; stream_in stores the archive and
//! stream_out returns it. Long-running steps are downloads from a server that never answers.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use diego_executor::{Executor, StepError};
use diego_garden::fake::FakeBackend;
use diego_garden::{Backend, ContainerSpec};
use diego_model::Action;
use support::*;

async fn setup() -> (Executor, Arc<FakeBackend>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::default());
    let handle = fake.create(ContainerSpec::from_dir("/")).await.unwrap();
    let exec = executor(fake.clone(), dir.path());
    (exec, fake, handle, dir)
}

fn action(json: &str) -> Action {
    serde_json::from_str(json).unwrap()
}

async fn processes(fake: &FakeBackend, handle: &str) -> usize {
    fake.info(handle).await.unwrap().process_ids.len()
}

#[tokio::test]
async fn run_output_is_tagged_and_a_nonzero_exit_fails() {
    let (exec, fake, h, _dir) = setup().await;
    let mut logs = exec.subscribe();
    exec.run(&h, &Action::run("echo", &["hi"]), ctx("APP/PROC/WEB", "3"))
        .await
        .unwrap();
    let err = exec
        .run(&h, &Action::run("exit", &["3"]), ctx("APP/PROC/WEB", "3"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 3");
    assert_eq!(
        render(&drain(&mut logs)),
        vec![
            "APP/PROC/WEB 3 out: echo hi",
            "APP/PROC/WEB 3 out: Exit status 0",
            "APP/PROC/WEB 3 out: exit 3",
            "APP/PROC/WEB 3 out: Exit status 3",
        ]
    );
    assert_eq!(processes(&fake, &h).await, 2);

    let quiet = action(r#"{"run":{"path":"echo","args":["secret"],"suppress_log_output":true}}"#);
    exec.run(&h, &quiet, ctx("APP", "0")).await.unwrap();
    assert!(drain(&mut logs).is_empty());
}

#[tokio::test]
async fn serial_stops_at_the_first_failure() {
    let (exec, fake, h, _dir) = setup().await;
    let mut logs = exec.subscribe();
    let a = action(
        r#"{"serial":{"actions":[
            {"run":{"path":"echo","args":["one"]}},
            {"run":{"path":"exit","args":["4"]}},
            {"run":{"path":"echo","args":["never"]}}]}}"#,
    );
    let err = exec.run(&h, &a, ctx("STG", "0")).await.unwrap_err();
    assert_eq!(
        err,
        StepError::Exited {
            status: 4,
            out_of_memory: false
        }
    );
    assert_eq!(processes(&fake, &h).await, 2);
    assert!(
        !render(&drain(&mut logs))
            .iter()
            .any(|l| l.contains("never"))
    );
}

#[tokio::test]
async fn parallel_runs_all_and_aggregates_failures() {
    let (exec, fake, h, _dir) = setup().await;
    let a = action(
        r#"{"parallel":{"actions":[
            {"run":{"path":"exit","args":["1"]}},
            {"run":{"path":"echo","args":["fine"]}},
            {"run":{"path":"exit","args":["2"]}}]}}"#,
    );
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Exited with status 1; Exited with status 2"
    );
    assert_eq!(processes(&fake, &h).await, 3);
}

#[tokio::test]
async fn parallel_waits_for_all_before_failing() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    server.files.put("slow.tgz", tgz(&[("x", b"x")]));
    // one fails at once; the other (a slow download) still completes before the result
    let a = action(&format!(
        r#"{{"parallel":{{"actions":[
            {{"run":{{"path":"exit","args":["1"]}}}},
            {{"download":{{"from":"{}/slow/slow.tgz","to":"/x"}}}}]}}}}"#,
        server.url
    ));
    let started = Instant::now();
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 1");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.files.hits("slow.tgz"), 1);
    assert_eq!(processes(&fake, &h).await, 1);
    assert!(!fake.stream_out_bytes(&h, "/x").await.unwrap().is_empty());
}

#[tokio::test]
async fn try_swallows_failures_but_not_cancellation() {
    let (exec, fake, h, _dir) = setup().await;
    let a = action(
        r#"{"serial":{"actions":[
            {"try":{"action":{"run":{"path":"exit","args":["9"]}}}},
            {"run":{"path":"echo","args":["after"]}}]}}"#,
    );
    exec.run(&h, &a, ctx("APP", "0")).await.unwrap();
    assert_eq!(processes(&fake, &h).await, 2);

    let server = Server::start().await;
    let hang = action(&format!(
        r#"{{"try":{{"action":{{"download":{{"from":"{}/hang","to":"/x"}}}}}}}}"#,
        server.url
    ));
    let c = ctx("APP", "0");
    let cancel = c.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    assert_eq!(
        exec.run(&h, &hang, c).await.unwrap_err(),
        StepError::Cancelled
    );
}

#[tokio::test]
async fn emit_progress_logs_start_success_and_failure() {
    let (exec, _fake, h, _dir) = setup().await;
    let mut logs = exec.subscribe();
    let a = action(
        r#"{"serial":{"actions":[
            {"emit_progress":{"start_message":"Starting","success_message":"Done","failure_message_prefix":"Nope",
              "action":{"run":{"path":"echo","args":["x"],"suppress_log_output":true}}}},
            {"emit_progress":{"start_message":"Again","success_message":"unseen","failure_message_prefix":"Failed","log_source":"CELL",
              "action":{"run":{"path":"exit","args":["2"],"suppress_log_output":true}}}}]}}"#,
    );
    let err = exec.run(&h, &a, ctx("APP", "1")).await.unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 2");
    assert_eq!(
        render(&drain(&mut logs)),
        vec![
            "APP 1 out: Starting",
            "APP 1 out: Done",
            "CELL 1 out: Again",
            "CELL 1 err: Failed: Exited with status 2",
        ]
    );
}

#[tokio::test]
async fn timeout_cancels_the_inner_step() {
    let (exec, _fake, h, _dir) = setup().await;
    let server = Server::start().await;
    let a = action(&format!(
        r#"{{"timeout":{{"timeout_ms":200,"action":{{"download":{{"from":"{}/hang","to":"/x"}}}}}}}}"#,
        server.url
    ));
    let started = Instant::now();
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 200ms");
    assert!(started.elapsed() < Duration::from_secs(3));
    // the request was abandoned, not left hanging
    wait_until(|| *server.files.hangs_dropped.lock().unwrap() == 1).await;

    let quick = action(r#"{"timeout":{"timeout_ms":5000,"action":{"run":{"path":"echo"}}}}"#);
    exec.run(&h, &quick, ctx("APP", "0")).await.unwrap();
}

#[tokio::test]
async fn codependent_cancels_the_rest_when_one_exits() {
    let (exec, _fake, h, _dir) = setup().await;
    let server = Server::start().await;
    let a = action(&format!(
        r#"{{"codependent":{{"actions":[
            {{"download":{{"from":"{}/hang","to":"/x"}}}},
            {{"run":{{"path":"echo","args":["bye"]}}}}]}}}}"#,
        server.url
    ));
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Codependent step exited: action 1 (run echo)"
    );
    // the download was abandoned (if its request got to the server at all)
    tokio::time::sleep(Duration::from_millis(100)).await;
    wait_until(|| *server.files.hangs_dropped.lock().unwrap() == server.files.hits("hang")).await;

    // a failure is reported as itself
    let a = action(&format!(
        r#"{{"codependent":{{"actions":[
            {{"download":{{"from":"{}/hang","to":"/x"}}}},
            {{"run":{{"path":"exit","args":["7"]}}}}]}}}}"#,
        server.url
    ));
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert_eq!(err.to_string(), "Exited with status 7");
}

#[tokio::test]
async fn cancelling_the_run_stops_everything_below_it() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    let a = action(&format!(
        r#"{{"serial":{{"actions":[
            {{"parallel":{{"actions":[
                {{"download":{{"from":"{0}/hang","to":"/x"}}}},
                {{"timeout":{{"timeout_ms":60000,"action":{{"download":{{"from":"{0}/hang","to":"/y"}}}}}}}}]}}}},
            {{"run":{{"path":"echo","args":["never"]}}}}]}}}}"#,
        server.url
    ));
    let c = ctx("APP", "0");
    let cancel = c.cancel.clone();
    let run = tokio::spawn({
        let exec = exec.clone();
        let h = h.clone();
        async move { exec.run(&h, &a, c).await }
    });
    wait_until(|| server.files.hits("hang") == 2).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("cancellation is prompt")
        .unwrap();
    assert_eq!(result, Err(StepError::Cancelled));
    wait_until(|| *server.files.hangs_dropped.lock().unwrap() == 2).await;
    assert_eq!(processes(&fake, &h).await, 0);

    // an already-cancelled context runs nothing
    let c = ctx("APP", "0");
    c.cancel.cancel();
    assert_eq!(
        exec.run(&h, &Action::run("echo", &[]), c).await,
        Err(StepError::Cancelled)
    );
    assert_eq!(processes(&fake, &h).await, 0);
}

#[tokio::test]
async fn download_extracts_caches_and_verifies() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    let archive = tgz(&[("app/", b""), ("app/run.sh", b"echo hi\n")]);
    server.files.put("app.tgz", archive.clone());
    let mut logs = exec.subscribe();
    let a = action(&format!(
        r#"{{"download":{{"artifact":"app","from":"{}","to":"/home/vcap","cache_key":"app-1",
            "checksum_algorithm":"sha256","checksum_value":"{}"}}}}"#,
        server.file_url("app.tgz"),
        sha256_hex(&archive)
    ));
    exec.run(&h, &a, ctx("STG", "0")).await.unwrap();
    // the fake keeps what was streamed in: the tar, decompressed
    let tar = fake.stream_out_bytes(&h, "/home/vcap").await.unwrap();
    assert_eq!(
        untar(&tar),
        vec![("app/run.sh".to_string(), b"echo hi\n".to_vec())]
    );
    let lines = render(&drain(&mut logs));
    assert_eq!(lines[0], "STG 0 out: Downloading app...");
    assert!(
        lines[1].starts_with("STG 0 out: Downloaded app ("),
        "{lines:?}"
    );

    // cached: the second download does not reach the server
    exec.run(&h, &a, ctx("STG", "0")).await.unwrap();
    assert_eq!(server.files.hits("app.tgz"), 1);

    // a plain tar without a cache key is fetched each time
    server.files.put("plain.tar", support::tar(&[("f", b"1")]));
    let plain = action(&format!(
        r#"{{"download":{{"from":"{}","to":"/p"}}}}"#,
        server.file_url("plain.tar")
    ));
    exec.run(&h, &plain, ctx("STG", "0")).await.unwrap();
    exec.run(&h, &plain, ctx("STG", "0")).await.unwrap();
    assert_eq!(server.files.hits("plain.tar"), 2);
    assert_eq!(
        untar(&fake.stream_out_bytes(&h, "/p").await.unwrap()),
        vec![("f".to_string(), b"1".to_vec())]
    );
}

#[tokio::test]
async fn download_refuses_a_checksum_mismatch_and_missing_files() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    server.files.put("app.tgz", tgz(&[("a", b"a")]));
    let mut logs = exec.subscribe();
    let bad = action(&format!(
        r#"{{"download":{{"artifact":"app","from":"{}","to":"/a","cache_key":"k",
            "checksum_algorithm":"md5","checksum_value":"0123"}}}}"#,
        server.file_url("app.tgz")
    ));
    let err = exec.run(&h, &bad, ctx("STG", "0")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Downloading app failed: checksum mismatch: expected md5 0123, got "),
        "{err}"
    );
    assert!(
        fake.stream_out_bytes(&h, "/a").await.is_err(),
        "nothing streamed in"
    );
    // not cached: a retry fetches again
    let _ = exec.run(&h, &bad, ctx("STG", "0")).await;
    assert_eq!(server.files.hits("app.tgz"), 2);
    let lines = render(&drain(&mut logs));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("STG 0 err: Downloading app failed: checksum mismatch")),
        "{lines:?}"
    );

    let missing = action(&format!(
        r#"{{"download":{{"from":"{}","to":"/a"}}}}"#,
        server.file_url("nope.tgz")
    ));
    let err = exec.run(&h, &missing, ctx("STG", "0")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Downloading failed: HTTP status 404 Not Found"
    );

    server
        .files
        .put("bad.zip", b"PK\x03\x04 not really a zip".to_vec());
    let zip = action(&format!(
        r#"{{"download":{{"from":"{}","to":"/a"}}}}"#,
        server.file_url("bad.zip")
    ));
    let err = exec.run(&h, &zip, ctx("STG", "0")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Downloading failed: copying into the container failed:"),
        "{err}"
    );
}

#[tokio::test]
async fn download_repacks_a_zip_as_tar() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    server.files.put(
        "buildpack.zip",
        zip(&[("bin/", b""), ("bin/detect", b"#!/bin/sh\n")]),
    );
    let a = action(&format!(
        r#"{{"download":{{"from":"{}","to":"/buildpacks/x","cache_key":"bp"}}}}"#,
        server.file_url("buildpack.zip")
    ));
    exec.run(&h, &a, ctx("STG", "0")).await.unwrap();
    assert_eq!(
        untar(&fake.stream_out_bytes(&h, "/buildpacks/x").await.unwrap()),
        vec![("bin/detect".to_string(), b"#!/bin/sh\n".to_vec())]
    );
}

#[tokio::test]
async fn downloads_are_limited_in_number() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::default());
    let h = fake.create(ContainerSpec::from_dir("/")).await.unwrap();
    let exec = Executor::new(
        fake.clone(),
        diego_executor::Config {
            cache_dir: dir.path().join("cache"),
            temp_dir: dir.path().join("tmp"),
            max_concurrent_downloads: 2,
            ..diego_executor::Config::default()
        },
    )
    .unwrap();
    let server = Server::start().await;
    let hang = format!(
        r#"{{"download":{{"from":"{}/hang","to":"/x"}}}}"#,
        server.url
    );
    let a = action(&format!(
        r#"{{"parallel":{{"actions":[{hang},{hang},{hang},{hang}]}}}}"#
    ));
    let c = ctx("APP", "0");
    let cancel = c.cancel.clone();
    let run = tokio::spawn(async move { exec.run(&h, &a, c).await });
    wait_until(|| server.files.hits("hang") == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.files.hits("hang"), 2, "only two downloads at once");
    cancel.cancel();
    assert_eq!(run.await.unwrap(), Err(StepError::Cancelled));
}

#[tokio::test]
async fn upload_posts_a_file_as_its_contents_and_a_directory_as_tar() {
    let (exec, fake, h, _dir) = setup().await;
    let server = Server::start().await;
    let mut logs = exec.subscribe();
    // the fake's stream_out returns what was streamed in at that path
    fake.stream_in_bytes(
        &h,
        "/droplet.tgz",
        tar(&[("droplet.tgz", b"DROPLET")]).into(),
    )
    .await
    .unwrap();
    let dir_tar = tar(&[("out/", b""), ("out/a", b"1"), ("out/b", b"2")]);
    fake.stream_in_bytes(&h, "/out", dir_tar.clone().into())
        .await
        .unwrap();
    let a = action(&format!(
        r#"{{"serial":{{"actions":[
            {{"upload":{{"artifact":"droplet","from":"/droplet.tgz","to":"{0}/upload/droplet"}}}},
            {{"upload":{{"from":"/out","to":"{0}/upload/dir"}}}}]}}}}"#,
        server.url
    ));
    exec.run(&h, &a, ctx("STG", "0")).await.unwrap();
    let uploads = server.files.uploads();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0].name, "droplet");
    assert_eq!(&uploads[0].body[..], b"DROPLET");
    // base64 of md5("DROPLET")
    assert!(uploads[0].content_md5.is_some());
    assert_eq!(uploads[1].name, "dir");
    assert_eq!(
        untar(&uploads[1].body),
        vec![
            ("out/a".to_string(), b"1".to_vec()),
            ("out/b".to_string(), b"2".to_vec())
        ]
    );
    assert_eq!(
        render(&drain(&mut logs)),
        vec![
            "STG 0 out: Uploading droplet...",
            "STG 0 out: Uploaded droplet (7B)"
        ]
    );

    let bad = action(&format!(
        r#"{{"upload":{{"from":"/missing","to":"{}/upload/x"}}}}"#,
        server.url
    ));
    let err = exec.run(&h, &bad, ctx("STG", "0")).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Uploading failed: failed to establish stream from container"),
        "{err}"
    );
}

#[tokio::test]
async fn invalid_trees_are_refused_before_anything_runs() {
    let (exec, fake, h, _dir) = setup().await;
    let a = action(r#"{"serial":{"actions":[{"run":{"path":"echo"}},{"run":{"path":""}}]}}"#);
    let err = exec.run(&h, &a, ctx("APP", "0")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("action.serial[1].run.path is required"),
        "{err}"
    );
    assert_eq!(processes(&fake, &h).await, 0);
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met in 5s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
