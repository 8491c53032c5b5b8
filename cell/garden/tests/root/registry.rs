//! Images from a real OCI registry (Debian's `docker-registry` on loopback, images built with
//! umoci and pushed with skopeo by the testkit): config for the builder, layers pulled once into
//! the depot's cache and shared, digests verified, clear errors.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use diego_garden::image::{ExposedPort, ImageError, Protocol};
use diego_garden::{Backend, ContainerSpec, NetIn, NetworkSpec, ProcessSpec, RootfsSpec};
use diego_testkit::{
    ImageFile, ImageSpec, Registry, copy_as_docker_v2s2, push_test_image, registry_tools,
};

use crate::common::*;

/// True when root and the registry tools are there; panics under CI=true otherwise.
fn tools_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    match registry_tools() {
        Ok(()) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {e} (CI=true makes a missing prerequisite fatal)")
        }
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            false
        }
    }
}

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

async fn http_get_retry(addr: SocketAddr) -> String {
    for _ in 0..50 {
        if let Ok(body) = http_get(addr)
            && body.contains("200")
        {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no answer from {addr}");
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Cache entries other than unpacked layers (temp dirs or blobs left behind).
fn leftovers(layers: &Path) -> Vec<String> {
    std::fs::read_dir(layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn app_image() -> ImageSpec {
    ImageSpec {
        layers: vec![vec![
            ImageFile::new("app/www/index.html", "hello from the image\n"),
            ImageFile::executable(
                "app/start.sh",
                "#!/bin/sh\nexec httpd -f -p \"$PORT\" -h \"$1\"\n",
            ),
        ]],
        entrypoint: vec!["/app/start.sh".into()],
        cmd: vec!["/app/www".into()],
        env: vec!["PORT=8080".into(), "GREETING=hi from env".into()],
        user: Some("vcap".into()),
        workdir: Some("/app".into()),
        exposed_ports: vec!["8080/tcp".into()],
    }
}

/// inspect reads the config; two containers created together from `docker://…/app:v1` run
/// the image's command as its user, reachable through port mappings, on layers downloaded once;
/// a tampered blob is refused with nothing cached; a missing image is a clear error.
#[tokio::test]
async fn registry_images_are_pulled_once_shared_and_verified() {
    if !tools_or_skip("registry") {
        return;
    }
    let _host = HOST.read().await;
    let (registry, app) = tokio::task::spawn_blocking(|| {
        let registry = Registry::start().unwrap();
        let app = push_test_image(&registry, "app", "v1", &app_image()).unwrap();
        (registry, app)
    })
    .await
    .unwrap();
    assert_eq!(app.layers.len(), 2, "busybox and the app layer");
    assert_eq!(
        app.reference,
        format!("docker://127.0.0.1:{}/app:v1", registry.port())
    );

    // the builder's view
    let config = diego_garden::image::inspect(&app.reference).await.unwrap();
    assert_eq!(config.entrypoint, ["/app/start.sh"]);
    assert_eq!(config.cmd, ["/app/www"]);
    assert_eq!(config.env, ["PORT=8080", "GREETING=hi from env"]);
    assert_eq!(config.user.as_deref(), Some("vcap"));
    assert_eq!(config.working_dir.as_deref(), Some("/app"));
    assert_eq!(
        config.exposed_ports,
        [ExposedPort {
            port: 8080,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(config.layers, app.layers);
    assert_eq!(config.manifest_digest, app.manifest_digest);
    for layer in &app.layers {
        assert_eq!(registry.blob_gets(layer), 0, "inspect downloads no layer");
    }

    // two containers at once from the same image
    let layers_dir = config_of_test().depot.join("layers");
    let _ = std::fs::remove_dir_all(&layers_dir);
    let b = backend(TEST).await;
    let spec = || ContainerSpec {
        rootfs: RootfsSpec::Image(app.reference.clone()),
        network: Some(NetworkSpec {
            net_in: vec![NetIn {
                host_port: 0,
                container_port: 8080,
            }],
        }),
        ..busybox()
    };
    let (h1, h2) = tokio::join!(b.create(spec()), b.create(spec()));
    let (h1, h2) = (h1.unwrap(), h2.unwrap());
    for layer in &app.layers {
        assert_eq!(
            registry.blob_gets(layer),
            1,
            "layer {layer} downloaded once"
        );
        assert!(layers_dir.join(hex(layer)).is_dir());
    }
    assert_eq!(b.puller().counts(), (2, 2), "2 downloads, 2 cache hits");
    assert_eq!(leftovers(&layers_dir), Vec::<String>::new());

    for h in [&h1, &h2] {
        // the launcher's part: the image's command, env, user and working dir
        let process = ProcessSpec {
            argv: config.argv(None, None),
            env: config.env.clone(),
            dir: config.working_dir.clone(),
            user: config.user.clone(),
            ..ProcessSpec::default()
        };
        b.run(h, process).await.unwrap();
        let port = b.info(h).await.unwrap().mapped_ports[0].host_port;
        let body = http_get_retry(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
        assert!(body.contains("hello from the image"), "{body}");
        let out = b
            .run_and_wait(
                h,
                ProcessSpec {
                    env: config.env.clone(),
                    dir: config.working_dir.clone(),
                    user: config.user.clone(),
                    ..sh("echo \"$GREETING|$(id -un)|$(pwd)\"; ps -o user,args | grep -c '[h]ttpd -f'")
                },
            )
            .await
            .unwrap();
        assert_eq!(
            out.stdout_str(),
            "hi from env|vcap|/app\n1\n",
            "{}",
            out.stderr_str()
        );
    }
    // writes stay in each container
    run_sh(
        &b,
        &h1,
        "echo changed > /tmp/x && echo changed > /app/www/index.html",
    )
    .await;
    let out = run_sh(&b, &h2, "cat /app/www/index.html").await;
    assert_eq!(out.stdout_str(), "hello from the image\n");
    b.destroy(&h1).await.unwrap();
    b.destroy(&h2).await.unwrap();

    // a tampered layer blob in the registry's storage is refused; nothing of it is cached
    let bad_spec = ImageSpec {
        layers: vec![vec![ImageFile::new("bad/file", "to be tampered with\n")]],
        ..app_image()
    };
    let (registry, bad) = tokio::task::spawn_blocking(move || {
        let bad = push_test_image(&registry, "app", "tampered", &bad_spec).unwrap();
        (registry, bad)
    })
    .await
    .unwrap();
    let bad_layer = bad.layers[1].clone();
    let blob = registry.blob_path(&bad_layer).unwrap();
    let mut data = std::fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, data).unwrap();
    let err = b
        .create(ContainerSpec {
            rootfs: RootfsSpec::Image(bad.reference.clone()),
            ..busybox()
        })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert!(msg.contains(&bad_layer), "{msg}");
    assert!(!layers_dir.join(hex(&bad_layer)).exists());
    assert_eq!(leftovers(&layers_dir), Vec::<String>::new());
    assert!(
        layers_dir.join(hex(&bad.layers[0])).is_dir(),
        "busybox layer still shared"
    );
    assert_eq!(
        b.list(&Default::default()).await.unwrap(),
        Vec::<String>::new()
    );

    // the same image as Docker v2 schema 2, and behind an OCI index naming two platforms
    let (registry, docker_ref) = tokio::task::spawn_blocking(move || {
        let r = copy_as_docker_v2s2(&registry, "app", "v1", "docker").unwrap();
        (registry, r)
    })
    .await
    .unwrap();
    let docker = diego_garden::image::inspect(&docker_ref).await.unwrap();
    assert_ne!(docker.manifest_digest, config.manifest_digest);
    assert_eq!(
        (&docker.entrypoint, &docker.cmd, &docker.env, &docker.user),
        (&config.entrypoint, &config.cmd, &config.env, &config.user)
    );
    assert_eq!(docker.exposed_ports, config.exposed_ports);
    assert_eq!(docker.layers, app.layers, "same layer blobs");
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2/app/manifests", registry.host());
    let size = |digest: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            http.get(format!("{base}/{digest}"))
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len()
        }
    };
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": bad.manifest_digest,
             "size": size(bad.manifest_digest.clone()).await,
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": app.manifest_digest,
             "size": size(app.manifest_digest.clone()).await,
             "platform": {"os": "linux", "architecture": host_arch}},
        ]
    });
    let resp = http
        .put(format!("{base}/multi"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.to_string())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let multi = diego_garden::image::inspect(&format!("docker://{}/app:multi", registry.host()))
        .await
        .unwrap();
    assert_eq!(
        multi.manifest_digest, app.manifest_digest,
        "this host's platform picked"
    );
    assert_eq!(multi.layers, app.layers);

    // a missing image
    let missing = format!("docker://{}/nope:v1", registry.host());
    let err = b
        .create(ContainerSpec {
            rootfs: RootfsSpec::Image(missing.clone()),
            ..busybox()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "InvalidRequest", "{err}");
    assert!(err.to_string().contains("not found"), "{err}");
    match diego_garden::image::inspect(&missing).await {
        Err(ImageError::NotFound { image, .. }) => assert_eq!(image, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let missing_tag = format!("docker://{}/app:v2", registry.host());
    let err = diego_garden::image::inspect(&missing_tag)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    drop(registry);
}

const TEST: u8 = 13;

fn config_of_test() -> diego_garden::native::Config {
    config(TEST)
}
