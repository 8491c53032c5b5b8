use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use diego_garden::{Backend, ContainerSpec, NetIn, NetworkSpec, ProcessSpec};

use crate::common::*;

/// The stack rootfs (debootstrap, a few minutes the first time) when it is cached or
/// `DIEGO_TEST_STACK=1` asks for it to be built.
fn stack_rootfs() -> Option<PathBuf> {
    let cache =
        std::env::var("DIEGO_ROOTFS_CACHE").unwrap_or_else(|_| "/var/cache/diego/rootfs".into());
    let cached = PathBuf::from(cache)
        .join("stack-bookworm/.diego-rootfs-ok")
        .exists();
    if !cached && std::env::var("DIEGO_TEST_STACK").as_deref() != Ok("1") {
        eprintln!(
            "skipping stack test: stack rootfs not cached; run cell/garden/scripts/make-stack-rootfs.sh or set DIEGO_TEST_STACK=1"
        );
        return None;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-stack-rootfs.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make-stack-rootfs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .trim(),
    ))
}

/// A buildpack-style app on the stack: python3 serving $PORT as vcap, reached from the host.
#[tokio::test]
async fn stack_rootfs_runs_a_python_app_on_port() {
    if !root_or_skip("stack") {
        return;
    }
    let Some(rootfs) = stack_rootfs() else { return };
    let _host = HOST.read().await;
    let b = backend(9).await;
    let h = b
        .create(ContainerSpec {
            network: Some(NetworkSpec {
                net_in: vec![NetIn {
                    host_port: 0,
                    container_port: 8080,
                }],
            }),
            env: vec!["PORT=8080".into()],
            ..ContainerSpec::from_dir(rootfs)
        })
        .await
        .unwrap();
    let out = run_sh(&b, &h, "bash --version | head -1; curl --version | head -1 | cut -d' ' -f1; python3 -c 'print(6*7)'; test -s /etc/ssl/certs/ca-certificates.crt && echo certs; ldd --version | head -1 | cut -d' ' -f1").await;
    let s = out.stdout_str();
    assert!(
        s.contains("GNU bash") && s.contains("curl\n42\ncerts\nldd"),
        "{s} {}",
        out.stderr_str()
    );

    b.run(
        &h,
        ProcessSpec {
            argv: vec![
                "bash".into(),
                "-c".into(),
                "cd /home/vcap && echo stack-app > index.html && exec python3 -m http.server $PORT"
                    .into(),
            ],
            user: Some("vcap".into()),
            ..ProcessSpec::default()
        },
    )
    .await
    .unwrap();
    let port = b.info(&h).await.unwrap().mapped_ports[0].host_port;
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
            body.clear();
            let _ = s.read_to_string(&mut body);
            if body.contains("stack-app") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(body.contains("stack-app"), "{body}");
    // curl inside the container toward its own app
    let out = run_sh(&b, &h, "curl -s http://127.0.0.1:8080/index.html").await;
    assert_eq!(out.stdout_str(), "stack-app\n");
    b.destroy(&h).await.unwrap();
    b.teardown_host_network().await.unwrap();
}
