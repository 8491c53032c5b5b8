//! Lifecycles operators add: checked before anything is stored (refusals say why), listed
//! beside the built-ins, recorded in the BBS and the blob store, used by the stagings of the
//! apps that name them, kept while apps use them, and versioned: a droplet launches with the
//! version it was staged with.

use diego_apps_api::{AppSettings, AppsClientError, ArchiveFormat, LifecycleKind};
use diego_plugin_artifacts as artifacts;

use crate::*;

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The status and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<T, AppsClientError>) -> (u16, String, String) {
    match r {
        Err(AppsClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn names(entries: &[diego_apps_api::LifecycleEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

#[tokio::test]
async fn an_added_lifecycle_is_listed_recorded_and_stored() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let listed = p.client.lifecycles().await?;
    assert_eq!(names(&listed), ["buildpack", "docker"]);
    assert!(listed.iter().all(|e| e.builtin && e.versions.len() == 1));

    let bytes = wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE);
    let added = p.client.add_lifecycle("static-site", bytes.clone()).await?;
    assert!(!added.builtin);
    assert!(added.warnings.is_empty(), "{:?}", added.warnings);
    let v = &added.versions[0];
    assert_eq!(
        (
            v.version.as_str(),
            v.component_name.as_str(),
            v.lifecycle_type.as_str()
        ),
        ("0.1.0", "static-site", "static")
    );
    assert_eq!(v.export, "diego:lifecycle/plugin@0.1.0");
    assert_eq!(v.size_bytes, bytes.len() as u64);

    // in the blob store by digest, in the BBS by name
    let info = p
        .blobs
        .info(&format!("lifecycles/{}.wasm", v.sha256))
        .await?;
    assert_eq!(info.sha256, v.sha256);
    let record = p.bbs().lifecycle("static-site").await?;
    assert_eq!(
        record.current().map(|c| c.sha256.as_str()),
        Some(v.sha256.as_str())
    );
    assert_eq!(
        names(&p.client.lifecycles().await?),
        ["buildpack", "docker", "static-site"]
    );
    assert_eq!(p.client.lifecycle("static-site").await?.versions.len(), 1);

    // adding the same bytes again changes nothing
    let again = p.client.add_lifecycle("static-site", bytes).await?;
    assert_eq!(again.versions, added.versions);
    Ok(())
}

#[tokio::test]
async fn bad_components_are_refused_saying_why_and_nothing_is_stored() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let cases: [(&str, Vec<u8>, u16, &[&str]); 6] = [
        ("empty", Vec::new(), 400, &["empty"]),
        (
            "garbage",
            b"\0asm not really".to_vec(),
            422,
            &["not a valid component"],
        ),
        (
            "a-policy",
            wasm(artifacts::CLASSIC),
            422,
            &["does not export diego:lifecycle/plugin"],
        ),
        (
            "major9",
            wasm(artifacts::TEST_LIFECYCLE_MAJOR9),
            422,
            &[
                "diego:lifecycle/plugin@9.0.0",
                "supports diego:lifecycle/plugin@0.1.x",
            ],
        ),
        (
            "faulty",
            wasm(artifacts::TEST_LIFECYCLE_FAULTY),
            422,
            &["trial stage", "deadline"],
        ),
        (
            "docker",
            wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE),
            422,
            &["built-in"],
        ),
    ];
    for (name, bytes, status, says) in cases {
        let (got, code, message) = refused(p.client.add_lifecycle(name, bytes).await);
        assert_eq!(got, status, "{name}: {code} {message}");
        for part in says {
            assert!(message.contains(part), "{name}: {message:?} says {part:?}");
        }
    }
    let (status, _, message) = refused(
        p.client
            .add_lifecycle("Not_A_Label", wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE))
            .await,
    );
    assert_eq!(status, 422, "{message}");

    assert_eq!(
        names(&p.client.lifecycles().await?),
        ["buildpack", "docker"]
    );
    assert!(p.bbs().lifecycles().await?.is_empty());
    let stored = p.blobs.list("lifecycles/").await?;
    assert!(
        stored.len() <= 2,
        "only the built-ins may be in the blob store: {stored:?}"
    );
    Ok(())
}

#[tokio::test]
async fn apps_stage_with_the_current_version_and_keep_the_lifecycle_in_use() -> anyhow::Result<()> {
    let p = Platform::start(true).await?;
    let site = wasm(artifacts::EXAMPLE_CUSTOM_LIFECYCLE);
    let newer = wasm(artifacts::TEST_LIFECYCLE_MISBEHAVING); // describes itself as 1.0.0

    // an app cannot name a lifecycle that does not exist
    let (status, code, message) = refused(
        p.client
            .put_app(
                "web",
                &AppSettings {
                    lifecycle: Some(LifecycleKind::Added("site".into())),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(
        (status, code.as_str()),
        (422, "unknown_lifecycle"),
        "{message}"
    );

    let v1 = p.client.add_lifecycle("site", site).await?.versions[0].clone();
    p.client
        .put_app(
            "web",
            &AppSettings {
                lifecycle: Some(LifecycleKind::Added("site".into())),
                ..Default::default()
            },
        )
        .await?;
    p.client
        .upload_bits(
            "web",
            tgz_of(&[("index.html", "hi\n")]),
            ArchiveFormat::TarGz,
        )
        .await?;
    let started = p.client.start("web").await?;
    assert_eq!(started.lifecycle.kind, LifecycleKind::Added("site".into()));
    assert_eq!(started.lifecycle.version, "0.1.0");
    assert_eq!(started.lifecycle.name, "static-site");

    // the staging task carries the added component, by digest, and no buildpacks
    let staging = started.staging.clone().expect("a staging");
    let task = p.bbs().task(&staging.task_guid).await?;
    let ls = task
        .task_definition
        .lifecycle_staging
        .expect("lifecycle_staging");
    assert_eq!(ls.lifecycle_sha256, v1.sha256);
    assert!(
        ls.lifecycle_url
            .ends_with(&format!("lifecycles/{}.wasm", v1.sha256))
    );
    assert!(ls.buildpacks.is_empty() && !ls.app_bits_url.is_empty());
    finish_staging(&p, &started).await?;
    let pg1 = eventually("the app's process", Duration::from_secs(20), || async {
        p.client.app("web").await.ok()?.process_guid
    })
    .await?;
    let lrp = p.bbs().desired_lrp(&pg1).await?;
    let setup = serde_json::to_string(&lrp.setup)?;
    assert!(
        setup.contains("droplets/"),
        "the launcher downloads the droplet: {setup}"
    );

    // a new version: the droplet keeps its version until the app is restaged
    let v2 = p.client.add_lifecycle("site", newer).await?;
    let versions: Vec<&str> = v2.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["0.1.0", "1.0.0"]);
    assert_eq!(v2.apps, ["web"]);
    let view = p.client.app("web").await?;
    assert_eq!(
        view.lifecycle.version, "0.1.0",
        "still the droplet's version"
    );
    // a restart launches the droplet with the version it was staged with
    p.client.restart("web").await?;
    let restaged = p.client.restage("web").await?;
    let staging = restaged.staging.clone().expect("a new staging");
    let task = p.bbs().task(&staging.task_guid).await?;
    let ls = task
        .task_definition
        .lifecycle_staging
        .expect("lifecycle_staging");
    assert_eq!(
        ls.lifecycle_sha256, v2.versions[1].sha256,
        "restaging picks the new version"
    );
    finish_staging(&p, &restaged).await?;
    eventually("the restaged droplet", Duration::from_secs(20), || async {
        let v = p.client.app("web").await.ok()?;
        (v.lifecycle.version == "1.0.0" && v.lifecycle.name == "misbehaving").then_some(())
    })
    .await?;

    // kept while an app uses it; built-ins are never removed
    let (status, code, message) = refused(p.client.remove_lifecycle("site").await);
    assert_eq!(
        (status, code.as_str()),
        (409, "lifecycle_in_use"),
        "{message}"
    );
    assert!(message.contains("web"), "{message}");
    let (status, _, _) = refused(p.client.remove_lifecycle("buildpack").await);
    assert_eq!(status, 400);
    let (status, _, _) = refused(p.client.remove_lifecycle("nothing").await);
    assert_eq!(status, 404);
    p.client.delete_app("web").await?;
    p.client.remove_lifecycle("site").await?;
    assert!(p.bbs().lifecycles().await?.is_empty());
    for v in &v2.versions {
        let gone = p.blobs.info(&format!("lifecycles/{}.wasm", v.sha256)).await;
        assert!(gone.is_err(), "{} is deleted with the lifecycle", v.version);
    }
    Ok(())
}
