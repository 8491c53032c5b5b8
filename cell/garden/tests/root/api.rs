use std::collections::BTreeMap;

use diego_garden::client::Client;
use diego_garden::{Backend, ContainerSpec, Error, ProcessEvent, ProcessSpec};
use futures::StreamExt;

use crate::common::*;

/// A separate server process driven only through the HTTP client.
#[tokio::test]
async fn http_server_and_client_drive_a_container_end_to_end() {
    if !root_or_skip("api") {
        return;
    }
    let _host = HOST.read().await;
    let server = Server::start(4);
    let c = Client::new(server.url.clone());
    c.ping().await.unwrap();
    for old in c.list(&BTreeMap::new()).await.unwrap() {
        c.destroy(&old).await.unwrap();
    }

    let mut props = BTreeMap::new();
    props.insert("app".to_string(), "web".to_string());
    let h1 = c
        .create(ContainerSpec {
            properties: props.clone(),
            env: vec!["A=1".into()],
            ..busybox()
        })
        .await
        .unwrap();
    let mut other = BTreeMap::new();
    other.insert("app".to_string(), "worker".to_string());
    let h2 = c
        .create(ContainerSpec {
            properties: other,
            ..busybox()
        })
        .await
        .unwrap();

    // properties filter
    assert_eq!(c.list(&props).await.unwrap(), vec![h1.clone()]);
    let mut all = c.list(&BTreeMap::new()).await.unwrap();
    all.sort();
    let mut want = vec![h1.clone(), h2.clone()];
    want.sort();
    assert_eq!(all, want);
    c.set_property(&h2, "app", "web").await.unwrap();
    c.set_property(&h2, "zone", "z1").await.unwrap();
    assert_eq!(c.list(&props).await.unwrap().len(), 2);
    assert_eq!(c.property(&h2, "zone").await.unwrap(), "z1");
    c.remove_property(&h2, "zone").await.unwrap();
    assert!(
        matches!(c.property(&h2, "zone").await, Err(Error::Remote { kind, .. }) if kind == "ResourceNotFound")
    );
    assert_eq!(c.properties(&h1).await.unwrap(), props);

    // run with streamed output, binary-safe
    let id = c
        .run(&h1, sh("echo $A; printf '\\001\\377' >&2; exit 7"))
        .await
        .unwrap();
    let events: Vec<ProcessEvent> = c
        .attach(&h1, &id)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(
        events.contains(&ProcessEvent::Stdout("1\n".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&ProcessEvent::Stderr(vec![1u8, 255].into())),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&ProcessEvent::Exit(7)));

    // attach to a running process from a second client, then signal it
    let id = c
        .run(
            &h1,
            sh("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"),
        )
        .await
        .unwrap();
    let c2 = Client::new(server.url.clone());
    let mut s = c2.attach(&h1, &id).await.unwrap();
    assert!(matches!(s.next().await, Some(Ok(ProcessEvent::Stdout(_)))));
    c.signal(&h1, &id, libc::SIGKILL).await.unwrap();
    let mut last = None;
    while let Some(ev) = s.next().await {
        last = Some(ev.unwrap());
    }
    assert_eq!(last, Some(ProcessEvent::Exit(128 + libc::SIGKILL)));

    // tar through HTTP
    let mut t = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(5);
    hd.set_mode(0o644);
    t.append_data(&mut hd, "hello.txt", &b"hello"[..]).unwrap();
    c.stream_in_bytes(&h1, "/home/vcap", t.into_inner().unwrap().into())
        .await
        .unwrap();
    let out = c
        .run_and_wait(
            &h1,
            ProcessSpec {
                argv: vec!["cat".into(), "/home/vcap/hello.txt".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "hello");
    let back = c
        .stream_out_bytes(&h1, "/home/vcap/hello.txt")
        .await
        .unwrap();
    let mut a = tar::Archive::new(back.as_ref());
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
    assert_eq!(s, "hello");
    // a hard link out of the destination is refused with the PathEscape kind
    let mut evil = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(tar::EntryType::Link);
    hd.set_size(0);
    evil.append_link(&mut hd, "etc-link", "../etc/passwd")
        .unwrap();
    match c
        .stream_in_bytes(&h1, "/home", evil.into_inner().unwrap().into())
        .await
    {
        Err(Error::Remote { kind, message }) => {
            assert_eq!(kind, "PathEscape");
            assert!(message.contains("../etc/passwd"), "{message}");
        }
        other => panic!("expected PathEscape, got {other:?}"),
    }
    // an absolute symlink is the container's path, as in Garden
    let mut link = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(tar::EntryType::Symlink);
    hd.set_size(0);
    link.append_link(&mut hd, "etc-link", "/etc").unwrap();
    c.stream_in_bytes(&h1, "/", link.into_inner().unwrap().into())
        .await
        .unwrap();
    let out = c.run_and_wait(&h1, sh("readlink /etc-link")).await.unwrap();
    assert_eq!(out.stdout_str(), "/etc\n");

    // a 24 MiB file streams in and out through HTTP in chunks
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut t = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    hd.set_size(big.len() as u64);
    hd.set_mode(0o644);
    t.append_data(&mut hd, "big.bin", big.as_slice()).unwrap();
    let archive = bytes::Bytes::from(t.into_inner().unwrap());
    let chunks: Vec<diego_garden::Result<bytes::Bytes>> = archive
        .chunks(1 << 20)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    c.stream_in(&h1, "/home/vcap", Box::pin(futures::stream::iter(chunks)))
        .await
        .unwrap();
    let mut out = c.stream_out(&h1, "/home/vcap/big.bin").await.unwrap();
    let mut received = Vec::new();
    let mut pieces = 0;
    while let Some(chunk) = out.next().await {
        received.extend_from_slice(&chunk.unwrap());
        pieces += 1;
    }
    assert!(pieces > 1, "stream_out arrived in one piece");
    let mut a = tar::Archive::new(received.as_slice());
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut back).unwrap();
    assert!(back == big, "big file differs after the round trip");
    assert!(matches!(
        c.stream_out(&h1, "/no/such/file").await,
        Err(Error::Remote { .. })
    ));

    // info, metrics, errors
    let info = c.info(&h1).await.unwrap();
    assert_eq!(info.state, "active");
    assert_eq!(info.process_ids.len(), 4);
    let m = c.metrics(&h1).await.unwrap();
    assert!(m.memory_bytes > 0 && m.cpu_usage_ns > 0, "{m:?}");
    assert!(
        matches!(c.info("nope").await, Err(Error::Remote { kind, .. }) if kind == "ResourceNotFound")
    );
    assert!(!c.lookup("nope").await.unwrap());
    assert!(matches!(
        c.create(ContainerSpec { handle: Some(h1.clone()), ..busybox() }).await,
        Err(Error::Remote { kind, .. }) if kind == "ResourceExists"
    ));
    assert!(matches!(
        c.create(ContainerSpec { handle: Some("../bad".into()), ..busybox() }).await,
        Err(Error::Remote { kind, .. }) if kind == "InvalidRequest"
    ));

    c.destroy(&h1).await.unwrap();
    c.destroy(&h2).await.unwrap();
    assert!(c.list(&BTreeMap::new()).await.unwrap().is_empty());
    assert!(
        matches!(c.destroy(&h1).await, Err(Error::Remote { kind, .. }) if kind == "ResourceNotFound")
    );
}
