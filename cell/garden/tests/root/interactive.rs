//! Interactive processes: stdin kept open for the caller, a terminal the caller resizes, over
//! the shim's exec channel, the exec helper (an adopted container) and the HTTP API.

use std::time::Duration;

use diego_garden::{Backend, ProcessEvent, ProcessSpec, ProcessStream, TtySpec};
use futures::StreamExt;

use crate::common::*;

/// Output read until it contains `want`; then everything read so far.
async fn read_until(stream: &mut ProcessStream, out: &mut String, want: &str) {
    let wait = async {
        while !out.contains(want) {
            match stream.next().await {
                Some(Ok(ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b))) => {
                    out.push_str(&String::from_utf8_lossy(&b))
                }
                other => panic!("{want:?} never came: {other:?}; output so far: {out:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("{want:?} never came; output so far: {out:?}"));
}

async fn exit_of(stream: &mut ProcessStream) -> i32 {
    let wait = async {
        while let Some(ev) = stream.next().await {
            if let ProcessEvent::Exit(code) = ev.unwrap() {
                return code;
            }
        }
        panic!("the output ended without an exit");
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("the process did not exit")
}

/// A shell on a resizable terminal, then `cat` on open pipes, in container `h` of `b`.
async fn converse(b: &dyn Backend, h: &str) {
    let id = b
        .run(
            h,
            ProcessSpec {
                argv: vec!["sh".into()],
                tty: Some(TtySpec {
                    cols: 100,
                    rows: 30,
                }),
                interactive: true,
                user: Some("vcap".into()),
                env: vec!["PS1=$ ".into()],
                ..ProcessSpec::default()
            },
        )
        .await
        .unwrap();
    let mut stream = b.attach(h, &id).await.unwrap();
    let mut out = String::new();
    b.write_stdin(h, &id, "tty; stty size; stat -c owner=%u $(tty)\n".into())
        .await
        .unwrap();
    read_until(&mut stream, &mut out, "30 100").await;
    // the terminal is the user's, as a login's is
    read_until(&mut stream, &mut out, "owner=2000").await;
    assert!(out.contains("/dev/pts/"), "{out:?}");
    b.resize(
        h,
        &id,
        TtySpec {
            cols: 120,
            rows: 40,
        },
    )
    .await
    .unwrap();
    // job control works: the terminal is the shell's controlling one
    b.write_stdin(h, &id, "stty size; sleep 1 & jobs; wait\n".into())
        .await
        .unwrap();
    read_until(&mut stream, &mut out, "40 120").await;
    read_until(&mut stream, &mut out, "Running").await;
    b.write_stdin(h, &id, "exit 7\n".into()).await.unwrap();
    assert_eq!(exit_of(&mut stream).await, 7, "{out:?}");
    let err = b.write_stdin(h, &id, "late\n".into()).await.unwrap_err();
    assert!(err.to_string().contains("not open"), "{err}");

    // no terminal: stdin stays open until closed, stdout and stderr apart
    let id = b
        .run(
            h,
            ProcessSpec {
                interactive: true,
                stdin: Some("first\n".into()),
                ..sh("cat; echo done >&2")
            },
        )
        .await
        .unwrap();
    let mut stream = b.attach(h, &id).await.unwrap();
    let mut out = String::new();
    b.write_stdin(h, &id, "second\n".into()).await.unwrap();
    read_until(&mut stream, &mut out, "first\nsecond\n").await;
    let err = b
        .resize(h, &id, TtySpec::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no terminal"), "{err}");
    b.close_stdin(h, &id).await.unwrap();
    read_until(&mut stream, &mut out, "done").await;
    assert_eq!(exit_of(&mut stream).await, 0);

    // a process that is not interactive takes no input
    let id = b.run(h, sh("sleep 5")).await.unwrap();
    let err = b.write_stdin(h, &id, "x".into()).await.unwrap_err();
    assert!(err.to_string().contains("not open"), "{err}");
    b.signal(h, &id, libc::SIGKILL).await.unwrap();
}

#[tokio::test]
async fn interactive_processes_on_the_shim_the_helper_and_http() {
    if !root_or_skip("interactive") {
        return;
    }
    let _host = HOST.read().await;
    let b = backend(17).await;
    let mut spec = busybox();
    spec.handle = Some("interactive-1".into());
    let h = b.create(spec).await.unwrap();
    converse(&b, &h).await;

    // an adopted container has no exec channel: the exec helper starts the processes
    drop(b);
    let b = diego_garden::native::NativeBackend::new(config(17))
        .await
        .unwrap();
    assert!(b.lookup(&h).await.unwrap(), "the container was not adopted");
    converse(&b, &h).await;
    b.destroy(&h).await.unwrap();
}

#[tokio::test]
async fn interactive_processes_over_http() {
    if !root_or_skip("interactive over http") {
        return;
    }
    let _host = HOST.read().await;
    let server = Server::start(18);
    let client = diego_garden::client::Client::new(&server.url);
    let mut spec = busybox();
    spec.handle = Some("interactive-2".into());
    let h = client.create(spec).await.unwrap();
    converse(&client, &h).await;
    client.destroy(&h).await.unwrap();
}
