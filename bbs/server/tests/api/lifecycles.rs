//! Lifecycle records: versions added in order, the same bytes again roll back, the same
//! version with other bytes is a conflict, bad input is refused with nothing stored, and
//! concurrent adds lose no version.

use diego_model::{ErrorType, LifecycleVersion};

use crate::*;

fn version(v: &str, seed: char) -> LifecycleVersion {
    LifecycleVersion {
        version: v.into(),
        sha256: seed.to_string().repeat(64),
        url: format!("http://127.0.0.1:8891/v1/blobs/lifecycles/{seed}.wasm"),
        component_name: "static-site".into(),
        lifecycle_type: "static".into(),
        export: "diego:lifecycle/plugin@0.1.0".into(),
        size_bytes: 1234,
        added_at: 0,
    }
}

#[tokio::test]
async fn versions_are_added_in_order_and_old_bytes_roll_back() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    assert!(c.lifecycles().await.unwrap().is_empty());
    let err = c.lifecycle("static-site").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceNotFound), "{err}");

    let r = c
        .add_lifecycle_version("static-site", &version("0.1.0", 'a'))
        .await
        .unwrap();
    assert_eq!(r.name, "static-site");
    assert!(
        r.versions[0].added_at > 0,
        "the BBS stamps when it was added"
    );
    let r = c
        .add_lifecycle_version("static-site", &version("0.2.0", 'b'))
        .await
        .unwrap();
    let versions: Vec<&str> = r.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["0.1.0", "0.2.0"]);
    assert_eq!(r.current().unwrap().sha256, "b".repeat(64));

    // the same version string with other bytes: refused, nothing changes
    let err = c
        .add_lifecycle_version("static-site", &version("0.2.0", 'c'))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceConflict), "{err}");
    assert!(err.to_string().contains("new version"), "{err}");

    // the old bytes again: that version is current again
    let r = c
        .add_lifecycle_version("static-site", &version("0.1.0", 'a'))
        .await
        .unwrap();
    let versions: Vec<&str> = r.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["0.2.0", "0.1.0"]);
    assert_eq!(c.lifecycle("static-site").await.unwrap(), r);
    assert_eq!(c.lifecycles().await.unwrap(), vec![r.clone()]);

    let removed = c.remove_lifecycle("static-site").await.unwrap();
    assert_eq!(removed, r);
    let err = c.remove_lifecycle("static-site").await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorType::ResourceNotFound), "{err}");
    assert!(c.lifecycles().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_lifecycles_are_refused_with_nothing_stored() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    for name in ["docker", "buildpack", "Has-Caps", "a/b", ""] {
        let err = c
            .add_lifecycle_version(name, &version("1.0.0", 'a'))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            Some(ErrorType::InvalidRequest),
            "{name:?}: {err}"
        );
    }
    let mut bad = version("", 'a');
    bad.sha256 = "not-a-digest".into();
    bad.url = "file:///etc/passwd".into();
    let err = c.add_lifecycle_version("ok", &bad).await.unwrap_err();
    let message = err.to_string();
    for part in ["version", "sha256", "url"] {
        assert!(message.contains(part), "names {part}: {message}");
    }
    assert!(c.lifecycles().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_adds_lose_no_version() {
    let bbs = start_bbs().await;
    let adds = "abcdef12".chars().map(|seed| {
        let c = bbs.client.clone();
        async move {
            c.add_lifecycle_version("busy", &version(&format!("1.0.{seed}"), seed))
                .await
        }
    });
    for r in futures::future::join_all(adds).await {
        r.unwrap();
    }
    let record = bbs.client.lifecycle("busy").await.unwrap();
    assert_eq!(record.versions.len(), 8, "{record:?}");
}
