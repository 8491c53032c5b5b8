//! Records, validation and uploads: no staging involved.

use diego_apps_api::{AppSettings, ArchiveFormat, DesiredState, LifecycleKind};

use crate::{Platform, app_files, buildpack_files, tgz_of, zip_of};

#[tokio::test]
async fn apps_are_created_listed_updated_and_deleted() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let info = p.client.info().await?;
    assert_eq!(info.api_url, p.url);
    assert_eq!(info.domain, "apps.internal");

    let created = p.client.put_app("web", &AppSettings::default()).await?;
    assert_eq!(created.name, "web");
    assert_eq!(created.state, DesiredState::Stopped);
    assert_eq!(created.settings.instances, 1);
    assert_eq!(created.settings.memory_mb, 256);
    assert_eq!(created.settings.disk_mb, 1024);
    assert_eq!(created.settings.stack, "cflinuxfs4");
    assert_eq!(created.urls, vec!["http://web.apps.internal".to_owned()]);
    assert_eq!(created.lifecycle.kind, LifecycleKind::Buildpack);

    let updated = p
        .client
        .put_app(
            "web",
            &AppSettings {
                instances: Some(3),
                memory_mb: Some(512),
                command: Some("./run".into()),
                routes: Some(vec!["www.example.test".into()]),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(updated.guid, created.guid, "an update keeps the app");
    assert_eq!(updated.settings.instances, 3);
    assert_eq!(updated.settings.memory_mb, 512);
    assert_eq!(
        updated.settings.disk_mb, 1024,
        "unset fields keep their value"
    );
    assert_eq!(updated.settings.command.as_deref(), Some("./run"));
    assert_eq!(updated.urls, vec!["http://www.example.test".to_owned()]);

    let docker = p
        .client
        .put_app(
            "img",
            &AppSettings {
                docker_image: Some("busybox:latest".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(docker.lifecycle.kind, LifecycleKind::Docker);

    let list = p.client.apps().await?;
    let names: Vec<_> = list.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["img", "web"]);
    let web = list.iter().find(|a| a.name == "web").unwrap();
    assert_eq!((web.instances, web.running, web.memory_mb), (3, 0, 512));

    let env = p
        .client
        .set_env(
            "web",
            &[
                ("A".to_owned(), Some("1".to_owned())),
                ("B".to_owned(), Some("2".to_owned())),
            ]
            .into(),
        )
        .await?;
    assert_eq!(env.settings.env.len(), 2);
    let env = p
        .client
        .set_env("web", &[("A".to_owned(), None)].into())
        .await?;
    assert_eq!(env.settings.env, [("B".to_owned(), "2".to_owned())].into());

    p.client.delete_app("web").await?;
    let gone = p.client.app("web").await.unwrap_err();
    assert_eq!(gone.status(), Some(404));
    assert_eq!(gone.code(), Some("app_not_found"));
    assert_eq!(p.client.apps().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_rule() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    for bad in ["my app", "Web", "-x", "a_b"] {
        let e = p
            .client
            .put_app(bad, &AppSettings::default())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{bad}: {e}");
        assert_eq!(e.code(), Some("invalid_name"));
        assert!(
            e.to_string().contains("[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"),
            "{e}"
        );
    }
    let e = p
        .client
        .put_app(
            "ok",
            &AppSettings {
                memory_mb: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    let e = p
        .client
        .set_env("ok", &[("1BAD".to_owned(), Some("x".to_owned()))].into())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");

    // Malformed JSON: a 400 with the JSON error body, not axum's plain text.
    let r = reqwest::Client::new()
        .put(format!("{}/v1/apps/ok", p.url))
        .header("content-type", "application/json")
        .body("{\"instances\": \"many\"}")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["code"], "invalid_json");
    assert!(
        body["error"].as_str().unwrap().contains("instances"),
        "{body}"
    );

    let e = p.client.start("nope").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("app_not_found")));
    Ok(())
}

#[tokio::test]
async fn bits_are_checked_and_stored_as_a_zip() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let app = p.client.put_app("bits", &AppSettings::default()).await?;
    for (body, format) in [
        (zip_of(&[]), ArchiveFormat::Zip),
        (tgz_of(&[]), ArchiveFormat::TarGz),
    ] {
        let e = p
            .client
            .upload_bits("bits", body, format)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(422), "{e}");
        assert_eq!(e.code(), Some("empty_bits"));
        assert!(e.to_string().contains("the app directory is empty"), "{e}");
    }
    let e = p
        .client
        .upload_bits("bits", b"not an archive".to_vec(), ArchiveFormat::Zip)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(422), Some("invalid_archive")),
        "{e}"
    );
    let e = p
        .client
        .upload_bits("bits", tgz_of(&[("../escape", "x")]), ArchiveFormat::TarGz)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");

    let view = p
        .client
        .upload_bits("bits", app_files(), ArchiveFormat::TarGz)
        .await?;
    let bits = view.bits.expect("bits recorded");
    assert_eq!(
        bits.key,
        format!("apps/{}/bits/{}.zip", app.guid, bits.sha256)
    );
    let stored = p.blobs.get_bytes(&bits.key).await?;
    assert_eq!(&stored[..2], b"PK", "a tgz is stored as a zip");

    // New bits replace the old blob.
    let again = p
        .client
        .upload_bits("bits", zip_of(&[("index.html", "hi")]), ArchiveFormat::Zip)
        .await?;
    let keys: Vec<_> = p
        .blobs
        .list(&format!("apps/{}/", app.guid))
        .await?
        .into_iter()
        .map(|b| b.key)
        .collect();
    assert_eq!(keys, vec![again.bits.unwrap().key]);
    Ok(())
}

#[tokio::test]
async fn buildpacks_are_validated_ordered_and_named_ones_must_exist() -> anyhow::Result<()> {
    let p = Platform::start(false).await?;
    let e = p
        .client
        .put_buildpack(
            "broken",
            None,
            zip_of(&[("bin/compile", "x")]),
            ArchiveFormat::Zip,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("bin/detect"), "{e}");
    let e = p
        .client
        .put_buildpack(
            "broken",
            None,
            tgz_of(&[("bin/detect", "x")]),
            ArchiveFormat::TarGz,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert!(e.to_string().contains("bin/compile"), "{e}");
    assert!(p.client.buildpacks().await?.is_empty());

    let python = p
        .client
        .put_buildpack("python", None, buildpack_files(), ArchiveFormat::Zip)
        .await?;
    assert_eq!(python.position, 1);
    assert!(p.blobs.info(&python.key).await.is_ok());
    let supply = zip_of(&[
        ("bin/detect", "x"),
        ("bin/supply", "x"),
        ("bin/finalize", "x"),
    ]);
    p.client
        .put_buildpack("binary", Some(1), supply, ArchiveFormat::Zip)
        .await?;
    let order: Vec<_> = p
        .client
        .buildpacks()
        .await?
        .into_iter()
        .map(|b| (b.name, b.position))
        .collect();
    assert_eq!(order, [("binary".to_owned(), 1), ("python".to_owned(), 2)]);

    let e = p
        .client
        .put_app(
            "a",
            &AppSettings {
                buildpacks: Some(vec!["nope".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(422), Some("unknown_buildpack"))
    );
    assert!(e.to_string().contains("unknown buildpack nope"), "{e}");
    p.client
        .put_app(
            "a",
            &AppSettings {
                buildpacks: Some(vec!["python".into()]),
                ..Default::default()
            },
        )
        .await?;

    p.client.delete_buildpack("binary").await?;
    let left = p.client.buildpacks().await?;
    assert_eq!((left[0].name.as_str(), left[0].position), ("python", 1));
    assert_eq!(
        p.client
            .delete_buildpack("binary")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    Ok(())
}
