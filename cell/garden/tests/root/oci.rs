use std::path::Path;

use diego_garden::{Backend, ContainerSpec, RootfsSpec};

use crate::common::*;

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let tmp = layout.join("blob.tmp");
    std::fs::write(&tmp, data).unwrap();
    let hex = sha256(&tmp);
    std::fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// An OCI image layout: busybox as a gzip layer, then a layer adding a file and whiting out
/// /linuxrc; both containers share the unpacked layers.
#[tokio::test]
async fn oci_layers_become_shared_overlay_lower_dirs() {
    if !root_or_skip("oci") {
        return;
    }
    let _host = HOST.read().await;
    let layout = Path::new("/tmp/diego-garden-test/oci-layout");
    let _ = std::fs::remove_dir_all(layout);
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut t = tar::Builder::new(&mut gz);
        t.follow_symlinks(false);
        t.append_dir_all(".", busybox_rootfs()).unwrap();
        t.finish().unwrap();
    }
    let layer1 = gz.finish().unwrap();
    let mut t = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("etc/motd", &b"from layer two\n"[..]),
        (".wh.linuxrc", &b""[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        t.append_data(&mut h, name, data).unwrap();
    }
    let layer2 = t.into_inner().unwrap();
    let (d1, s1) = put_blob(layout, &layer1);
    let (d2, s2) = put_blob(layout, &layer2);
    let (dc, sc) = put_blob(
        layout,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d1, "size": s1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d2, "size": s2},
        ]
    });
    let (dm, sm) = put_blob(layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": sm,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let _ = std::fs::remove_dir_all(config(8).depot.join("layers"));
    let b = backend(8).await;
    let spec = || ContainerSpec {
        rootfs: RootfsSpec::Oci {
            layout: layout.to_path_buf(),
            reference: Some("latest".into()),
        },
        ..busybox()
    };
    let h1 = b.create(spec()).await.unwrap();
    let h2 = b.create(spec()).await.unwrap();
    let out = run_sh(
        &b,
        &h1,
        "cat /etc/motd; ls /linuxrc 2>&1 | grep -c 'No such'; echo mine > /etc/motd",
    )
    .await;
    assert_eq!(
        out.stdout_str(),
        "from layer two\n1\n",
        "{}",
        out.stderr_str()
    );
    let out = run_sh(&b, &h2, "cat /etc/motd").await;
    assert_eq!(
        out.stdout_str(),
        "from layer two\n",
        "writes stay in each container's upper layer"
    );
    let layers = std::fs::read_dir(config(8).depot.join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 2);
    b.destroy(&h1).await.unwrap();
    b.destroy(&h2).await.unwrap();

    // a hostile image: /etc/hosts links to a host path (it is replaced inside the container,
    // never written through), and a whiteout goes through a link out of the layer (refused)
    let victim = Path::new("/tmp/diego-garden-test/oci-victim");
    let _ = std::fs::remove_dir_all(victim);
    std::fs::create_dir_all(victim).unwrap();
    let mut t = tar::Builder::new(Vec::new());
    let link = |t: &mut tar::Builder<Vec<u8>>, name: &str, target: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        t.append_link(&mut h, name, target).unwrap();
    };
    link(
        &mut t,
        "etc/hosts",
        "/tmp/diego-garden-test/oci-victim/hosts",
    );
    let hostile_hosts = t.into_inner().unwrap();
    let mut t = tar::Builder::new(Vec::new());
    link(&mut t, "out", "/tmp/diego-garden-test/oci-victim");
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    t.append_data(&mut h, "out/.wh.planted", &b""[..]).unwrap();
    let hostile_whiteout = t.into_inner().unwrap();
    for (i, layer) in [hostile_hosts, hostile_whiteout].into_iter().enumerate() {
        let (d1, s1) = put_blob(layout, &layer1);
        let (dl, sl) = put_blob(layout, &layer);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d1, "size": s1},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dl, "size": sl},
            ]
        });
        let (dm, sm) = put_blob(layout, manifest.to_string().as_bytes());
        let index =
            serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": dm, "size": sm}]});
        std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
        let spec = ContainerSpec {
            rootfs: RootfsSpec::Oci {
                layout: layout.to_path_buf(),
                reference: None,
            },
            ..busybox()
        };
        match i {
            0 => {
                let h = b.create(spec).await.unwrap();
                let out = run_sh(&b, &h, "cat /etc/hosts").await;
                assert!(
                    out.stdout_str().contains("localhost"),
                    "{}",
                    out.stdout_str()
                );
                b.destroy(&h).await.unwrap();
            }
            _ => {
                let err = b.create(spec).await.unwrap_err();
                assert!(err.to_string().contains("symlink"), "{err}");
            }
        }
    }
    assert_eq!(
        std::fs::read_dir(victim).unwrap().count(),
        0,
        "written outside the container"
    );
}
